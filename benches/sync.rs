//! How fast a GitSync applies a large repository, how little it writes when nothing changed, and
//! how fast a failed release's revert commit reaches the remote.
//!
//! `cargo bench --bench sync` generates a repository of 10,000 objects (19 Namespaces, then
//! ConfigMaps, Services, Deployments, Secrets, ServiceAccounts, Roles and RoleBindings in 998
//! files of ten, and one Rollout), commits it to a bare repository served by `git daemon` on
//! loopback, and measures, each on a fresh in-process emulator, several runs:
//! - weir's initial sync: the GitSync controller (`weir::gitsync::controller::run`, in-process)
//!   from creating the GitSync until its status says the revision is applied (fetch, checkout,
//!   render, apply, status);
//! - baseline 1: `kubectl apply --server-side -R -f` of the same checkout;
//! - baseline 2, the API floor: a bare kube client making weir's writes: the GitSync status that
//!   announces the revision, the same server-side applies (the same bodies weir sends) at weir's
//!   apply concurrency in weir's order (Namespaces first), the final status with the inventory,
//!   and the `GitSynced` Event; the applies alone are reported too;
//! - a no-op resync (forced with `weir.io/requestedAt`): the writes it made, by field manager;
//! - a one-file change (a commit changing one ConfigMap in a file of ten objects): the objects
//!   whose resourceVersion changed, and the writes by field manager;
//! - abort → revert commit pushed: the Rollout's status is set the way the Rollout controller sets
//!   it when analysis fails, and the bench times until the remote's branch moves to weir's revert
//!   commit; the baseline is `git revert --no-edit BAD && git push` of the same change in a fresh
//!   clone of the same remote (the clone itself is not timed), in the same run.
//!
//! The emulator's simulated workload controllers are held off (a one-hour workload delay), so
//! Deployments get no ReplicaSets or Pods and the two cores go to the applies being measured.
//!
//! Without `--bench` (as `cargo test --all-targets` runs it) it does one small run and exits.

mod crds;
#[path = "../tests/support/git_remote.rs"]
mod git_remote;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use crds::TestCrds;
use futures::{StreamExt, TryStreamExt};
use git_remote::{Daemon, Fixture, run_git};
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::watcher;
use serde_json::{Value, json};
use support::{Cluster, TempDir, kubectl_path};
use tokio::sync::watch;
use weir::emulator::EmulatorConfig;
use weir::gitsync::apply::{APPLY_CONCURRENCY, desired, entry_of};
use weir::gitsync::controller::{REQUESTED_AT_ANNOTATION, Settings};
use weir::gitsync::ownership::RolloutOwned;
use weir::gitsync::render::{RenderOptions, render};

const NS: &str = "default";
const GITSYNC: &str = "apps";
const ROLLOUT_FILE: &str = "apps/team-00/web-rollout.yaml";
/// The longest any one wait may take before the bench gives up.
const WAIT: Duration = Duration::from_secs(300);

/// How big a repository and how many runs.
struct Scale {
    namespaces: usize,
    apps: usize,
    runs: usize,
}

impl Scale {
    fn objects(&self) -> usize {
        self.namespaces + self.apps * 10 + 1
    }
}

/// What one run measured.
#[derive(Default)]
struct Sample {
    weir_initial: Duration,
    kubectl: Duration,
    floor: Duration,
    floor_applies: Duration,
    noop: Duration,
    noop_writes: BTreeMap<String, u64>,
    noop_requests: BTreeMap<String, u64>,
    change: Duration,
    change_writes: BTreeMap<String, u64>,
    change_written: Vec<String>,
    initial_writes: BTreeMap<String, u64>,
    initial_requests: BTreeMap<String, u64>,
    revert: Duration,
    revert_baseline: Duration,
}

fn main() {
    // `WEIR_BENCH_LOG=weir=debug` shows where the in-process controller spends its time.
    if let Ok(filter) = std::env::var("WEIR_BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let bench = std::env::args().any(|a| a == "--bench");
    let scale = if bench {
        Scale {
            namespaces: 19,
            apps: 998,
            runs: 3,
        }
    } else {
        Scale {
            namespaces: 2,
            apps: 5,
            runs: 1,
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    let samples = runtime.block_on(run(&scale));
    println!("{}", report(&scale, &samples));
    eprintln!("bench finished in {:.1?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// The repository

fn namespace(i: usize) -> String {
    format!("team-{i:02}")
}

fn namespaces_file(scale: &Scale) -> String {
    (0..scale.namespaces)
        .map(|i| {
            format!(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {}\n  labels:\n    team: \"{i}\"\n",
                namespace(i)
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// One application's ten objects, in one multi-document file.
fn app_file(ns: &str, app: usize, revision: &str) -> String {
    let name = format!("app-{app:04}");
    let mut docs = Vec::new();
    for c in 0..4 {
        let value = if c == 0 { revision } else { "stable" };
        docs.push(format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}-config-{c}\n  namespace: {ns}\n  labels:\n    app: {name}\ndata:\n  revision: \"{value}\"\n  settings.yaml: |\n    log_level: info\n    pool_size: {c}\n    endpoint: http://{name}.{ns}.svc:8080/api/v{c}\n"
        ));
    }
    for (s, port) in [("http", 80), ("metrics", 9090)] {
        docs.push(format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}-{s}\n  namespace: {ns}\n  labels:\n    app: {name}\nspec:\n  selector:\n    app: {name}\n  ports:\n  - name: {s}\n    port: {port}\n    targetPort: {port}\n"
        ));
    }
    docs.push(format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n    app: {name}\nspec:\n  replicas: 2\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      serviceAccountName: {name}\n      containers:\n      - name: app\n        image: registry.example/{name}:1.0.0\n        ports:\n        - containerPort: 80\n        env:\n        - name: POOL_SIZE\n          value: \"4\"\n        resources:\n          requests:\n            cpu: 100m\n            memory: 128Mi\n"
    ));
    docs.push(format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}-tls\n  namespace: {ns}\ntype: Opaque\nstringData:\n  token: not-a-real-token-{app}\n"
    ));
    docs.push(format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n  namespace: {ns}\n"
    ));
    if app.is_multiple_of(2) {
        docs.push(format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: {name}\n  namespace: {ns}\nrules:\n- apiGroups: [\"\"]\n  resources: [configmaps]\n  verbs: [get, list, watch]\n"
        ));
    } else {
        docs.push(format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: {name}\n  namespace: {ns}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: app-{:04}\nsubjects:\n- kind: ServiceAccount\n  name: {name}\n  namespace: {ns}\n",
            app - 1
        ));
    }
    docs.join("---\n")
}

fn app_path(scale: &Scale, app: usize) -> String {
    format!(
        "apps/{}/app-{app:04}.yaml",
        namespace(app % scale.namespaces)
    )
}

fn rollout_file(image: &str) -> String {
    format!(
        "apiVersion: weir.io/v1alpha1\nkind: Rollout\nmetadata:\n  name: web\n  namespace: team-00\nspec:\n  replicas: 2\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n      - name: web\n        image: {image}\n  strategy:\n    canary:\n      steps:\n      - setWeight: 20\n      - pause: {{}}\n"
    )
}

/// Writes the whole repository into the human's clone and pushes it; returns the commit.
fn generate(fx: &Fixture, scale: &Scale) -> String {
    let mut files = vec![
        (
            "apps/00-namespaces.yaml".to_string(),
            namespaces_file(scale),
        ),
        (
            ROLLOUT_FILE.to_string(),
            rollout_file("registry.example/web:1.0.0"),
        ),
    ];
    for app in 0..scale.apps {
        let ns = namespace(app % scale.namespaces);
        files.push((app_path(scale, app), app_file(&ns, app, "r0")));
    }
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    fx.commit("10,000 objects", &refs)
}

/// Commits `files` on top of the remote's branch (weir's reverts land there too).
fn commit_on_tip(fx: &Fixture, message: &str, files: &[(&str, &str)]) -> String {
    run_git(&fx.work, &["pull", "-q", "--ff-only", "origin", "main"]);
    fx.commit(message, files)
}

// ---------------------------------------------------------------------------------------------
// Clusters

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

/// Every kind in the repository.
fn kinds() -> Vec<ApiResource> {
    vec![
        resource("", "v1", "Namespace", "namespaces"),
        resource("", "v1", "ConfigMap", "configmaps"),
        resource("", "v1", "Service", "services"),
        resource("apps", "v1", "Deployment", "deployments"),
        resource("", "v1", "Secret", "secrets"),
        resource("", "v1", "ServiceAccount", "serviceaccounts"),
        resource("rbac.authorization.k8s.io", "v1", "Role", "roles"),
        resource(
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
        ),
        resource("weir.io", "v1alpha1", "Rollout", "rollouts"),
    ]
}

async fn cluster(tag: &str) -> Cluster {
    let c = Cluster::start_with(
        tag,
        EmulatorConfig {
            workload_delay: Duration::from_secs(3600),
            ..Default::default()
        },
    )
    .await;
    crds::install(&c.client(), TestCrds::Excluded).await;
    c
}

async fn stats(c: &Cluster) -> Value {
    c.raw("GET", "/emulator/stats", None, Vec::new()).await.body
}

async fn reset_stats(c: &Cluster) {
    c.raw("POST", "/emulator/stats/reset", None, Vec::new())
        .await;
}

fn counts(v: &Value) -> BTreeMap<String, u64> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

/// Objects of the repository's kinds in the store: `kind ns/name` → resourceVersion.
fn versions(c: &Cluster) -> BTreeMap<String, String> {
    let store = &c.emulator.app.store;
    let mut out = BTreeMap::new();
    for ar in kinds() {
        let Some(rt) = store.resource(&ar.group, &ar.version, &ar.plural) else {
            continue;
        };
        let page = store
            .list(&rt, &Default::default())
            .expect("list the store");
        for o in page.items {
            let meta = &o["metadata"];
            let key = format!(
                "{} {}/{}",
                ar.kind,
                meta["namespace"].as_str().unwrap_or_default(),
                meta["name"].as_str().unwrap_or_default()
            );
            out.insert(
                key,
                meta["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
    }
    out
}

async fn wait_until<T>(what: &str, rx: &mut watch::Receiver<T>, f: impl FnMut(&T) -> bool) {
    tokio::time::timeout(WAIT, rx.wait_for(f))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap_or_else(|_| panic!("watch ended while waiting for {what}"));
}

/// Keeps the latest state of one object of `ar` in `NS`-independent `namespace`, from a watch.
fn watch_object(
    client: &kube::Client,
    ar: ApiResource,
    namespace: &str,
    tx: watch::Sender<Value>,
) -> tokio::task::JoinHandle<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ar);
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default()).boxed();
        while let Some(event) = events.next().await {
            if let Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) = event {
                tx.send_replace(serde_json::to_value(obj).unwrap_or(Value::Null));
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Baselines

async fn kubectl_apply(c: &Cluster, dir: &Path) -> Duration {
    let started = Instant::now();
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(kubectl_path())
            .arg("--kubeconfig")
            .arg(&c.kubeconfig)
            .arg("--cache-dir")
            .arg(c.dir.path().join("kube-cache"))
            .args(["apply", "--server-side", "-R", "-f"])
            .arg(dir)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("kubectl apply timed out")
    .expect("run kubectl");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "kubectl apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// The bodies weir sends on an initial sync, grouped into weir's apply phases.
async fn floor_bodies(checkout: &Path, revision: &str) -> Vec<Vec<(ApiResource, Value)>> {
    let objects = render(checkout, "apps", &RenderOptions::new(NS, GITSYNC))
        .await
        .expect("render");
    let by_kind: BTreeMap<String, ApiResource> = kinds()
        .into_iter()
        .map(|ar| (ar.kind.clone(), ar))
        .collect();
    let owned = RolloutOwned::default();
    let mut namespaces = Vec::new();
    let mut rest = Vec::new();
    for o in objects {
        let kind = o.object["kind"].as_str().unwrap_or_default().to_string();
        let ar = by_kind[&kind].clone();
        let mut body = desired(&o.object, None, &owned, revision);
        if kind == "Namespace" {
            if let Some(m) = body["metadata"].as_object_mut() {
                m.remove("namespace");
            }
            namespaces.push((ar, body));
        } else {
            rest.push((ar, body));
        }
    }
    vec![namespaces, rest]
}

/// What the floor measured: the applies alone, and the whole write sequence of a sync.
struct Floor {
    applies: Duration,
    writes: Duration,
}

/// weir's writes for an initial sync, from a bare client: the GitSync status announcing the
/// revision (`Reconciling`), the same server-side applies at weir's concurrency in weir's
/// order, the final status with the inventory of every object applied, and the `GitSynced`
/// Event. The inventory is what a later sync prunes from, so every sync has to write it.
async fn floor_sync(c: &Cluster, phases: &[Vec<(ApiResource, Value)>], revision: &str) -> Floor {
    let client = c.client();
    let gitsyncs = resource("weir.io", "v1alpha1", "GitSync", "gitsyncs");
    let gs_api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &gitsyncs);
    let mut gs = gs_api
        .patch(
            GITSYNC,
            &PatchParams::apply("floor").force(),
            &Patch::Apply(json!({"apiVersion": "weir.io/v1alpha1", "kind": "GitSync",
                "metadata": {"name": GITSYNC, "namespace": NS},
                "spec": {"url": "git://127.0.0.1/apps.git", "ref": {"branch": "main"}, "path": "apps"}})),
        )
        .await
        .expect("create the floor's GitSync");
    let now = "2026-01-01T00:00:00Z";
    let condition = |kind: &str, status: &str, reason: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": format!("revision main@{revision}"),
            "lastTransitionTime": now, "observedGeneration": 1})
    };
    let pp = kube::api::PostParams {
        field_manager: Some("floor-status".into()),
        ..Default::default()
    };
    let started = Instant::now();
    gs.data["status"] = json!({"observedGeneration": 1, "lastFetchedRevision": revision,
        "conditions": [condition("Reconciling", "True", "Progressing")]});
    let mut gs = gs_api
        .replace_status(GITSYNC, &pp, &gs)
        .await
        .expect("floor Reconciling status");
    let applies_started = Instant::now();
    let client = c.client();
    for phase in phases {
        futures::stream::iter(phase.iter().map(|(ar, body)| {
            let client = client.clone();
            async move {
                let name = body["metadata"]["name"].as_str().unwrap_or_default();
                let api: Api<DynamicObject> = match body["metadata"]["namespace"].as_str() {
                    Some(ns) => Api::namespaced_with(client, ns, ar),
                    None => Api::all_with(client, ar),
                };
                api.patch(
                    name,
                    &PatchParams::apply("floor").force(),
                    &Patch::Apply(body),
                )
                .await
                .map(drop)
            }
        }))
        .buffer_unordered(APPLY_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await
        .expect("floor apply");
    }
    let applies = applies_started.elapsed();
    let inventory: Vec<Value> = phases
        .iter()
        .flatten()
        .map(|(_, body)| {
            let mut entry =
                serde_json::to_value(entry_of(body).expect("an inventory entry")).expect("entry");
            entry["health"] = json!("Healthy");
            entry
        })
        .collect();
    gs.data["status"] = json!({"observedGeneration": 1, "lastFetchedRevision": revision,
        "lastAppliedRevision": revision, "inventory": inventory,
        "conditions": [condition("Ready", "True", "Succeeded"), condition("Reconciling", "False", "Succeeded")],
        "history": [{"revision": revision, "startedAt": now, "finishedAt": now, "result": "Succeeded"}]});
    gs_api
        .replace_status(GITSYNC, &pp, &gs)
        .await
        .expect("floor final status");
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client, NS);
    let event = serde_json::from_value(json!({
        "metadata": {"name": format!("{GITSYNC}.floor"), "namespace": NS},
        "involvedObject": {"apiVersion": "weir.io/v1alpha1", "kind": "GitSync", "name": GITSYNC, "namespace": NS},
        "reason": "GitSynced", "message": format!("Applied revision main@{revision}"), "type": "Normal",
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        "source": {"component": "weir-gitsync"}}))
    .expect("Event");
    events
        .create(&kube::api::PostParams::default(), &event)
        .await
        .expect("floor Event");
    Floor {
        applies,
        writes: started.elapsed(),
    }
}

/// `git revert --no-edit BAD && git push` in a fresh clone of the remote (the clone is not timed).
fn git_revert_baseline(url: &str, bad: &str, run: usize) -> Duration {
    let dir = TempDir::new("bench-revert-baseline");
    run_git(dir.path(), &["clone", "-q", url, "clone"]);
    let clone = dir.path().join("clone");
    let started = Instant::now();
    run_git(&clone, &["revert", "--no-edit", bad]);
    run_git(
        &clone,
        &[
            "push",
            "-q",
            "origin",
            &format!("HEAD:refs/heads/baseline-{run}"),
        ],
    );
    started.elapsed()
}

/// The commit the remote's `main` points at, read straight from the bare repository.
fn remote_main(remote: &Path) -> Option<String> {
    let loose = std::fs::read_to_string(remote.join("refs/heads/main")).ok();
    loose.map(|s| s.trim().to_string()).or_else(|| {
        let packed = std::fs::read_to_string(remote.join("packed-refs")).ok()?;
        packed
            .lines()
            .find_map(|l| l.strip_suffix(" refs/heads/main").map(str::to_string))
    })
}

// ---------------------------------------------------------------------------------------------
// The runs

async fn run(scale: &Scale) -> Vec<Sample> {
    let fx = Fixture::new("bench-sync");
    let daemon = Daemon::start(&fx.served).await;
    let url = daemon.url("apps.git");
    let first = generate(&fx, scale);
    eprintln!(
        "repository: {} objects, commit {}",
        scale.objects(),
        &first[..12]
    );
    let mut samples = Vec::new();
    for run in 0..scale.runs {
        let mut s = Sample::default();
        run_git(&fx.work, &["pull", "-q", "--ff-only", "origin", "main"]);
        let tip = run_git(&fx.work, &["rev-parse", "HEAD"]);

        // Baseline 1: kubectl.
        {
            let c = cluster("bench-kubectl").await;
            let base = versions(&c).len();
            s.kubectl = kubectl_apply(&c, &fx.work.join("apps")).await;
            let n = versions(&c).len() - base;
            assert_eq!(n, scale.objects(), "kubectl applied every object");
            c.emulator.shutdown();
        }
        // Baseline 2: the API floor.
        {
            let c = cluster("bench-floor").await;
            let base = versions(&c).len();
            let phases = floor_bodies(&fx.work, &tip).await;
            let floor = floor_sync(&c, &phases, &tip).await;
            s.floor = floor.writes;
            s.floor_applies = floor.applies;
            assert_eq!(
                versions(&c).len() - base,
                scale.objects(),
                "floor applied every object"
            );
            c.emulator.shutdown();
        }
        // weir.
        weir_run(scale, &fx, &url, run, &tip, &mut s).await;
        eprintln!(
            "run {run}: weir {:?}, kubectl {:?}, floor {:?} (applies {:?}), no-op {:?}, one file {:?}, revert {:?} (git {:?})",
            s.weir_initial,
            s.kubectl,
            s.floor,
            s.floor_applies,
            s.noop,
            s.change,
            s.revert,
            s.revert_baseline
        );
        samples.push(s);
    }
    samples
}

async fn weir_run(scale: &Scale, fx: &Fixture, url: &str, run: usize, tip: &str, s: &mut Sample) {
    let c = cluster("bench-weir").await;
    let base = versions(&c).len();
    let client = c.client();
    let cache = TempDir::new("bench-weir-cache");
    let settings = Settings {
        cache_dir: cache.path().to_path_buf(),
        ..Default::default()
    };
    let controller = tokio::spawn(weir::gitsync::controller::run(client.clone(), settings));
    let gitsyncs = resource("weir.io", "v1alpha1", "GitSync", "gitsyncs");
    let (gs_tx, mut gs) = watch::channel(Value::Null);
    let gs_watch = watch_object(&client, gitsyncs.clone(), NS, gs_tx);
    // The controller's watches (GitSyncs, Rollouts) and ours are open: it will see the GitSync.
    let deadline = Instant::now() + WAIT;
    while stats(&c).await["activeWatches"].as_u64().unwrap_or(0) < 3 {
        assert!(
            Instant::now() < deadline,
            "the controller's watches did not open"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    reset_stats(&c).await;
    let gs_api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &gitsyncs);

    // Initial sync.
    let started = Instant::now();
    gs_api
        .patch(
            GITSYNC,
            &PatchParams::apply("bench").force(),
            &Patch::Apply(json!({"apiVersion": "weir.io/v1alpha1", "kind": "GitSync",
                "metadata": {"name": GITSYNC, "namespace": NS},
                "spec": {"url": url, "ref": {"branch": "main"}, "path": "apps", "interval": "1h", "prune": true}})),
        )
        .await
        .expect("create GitSync");
    let applied = |rev: &str| {
        let rev = rev.to_string();
        move |g: &Value| {
            g["status"]["lastAppliedRevision"] == rev.as_str()
                && g["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
        }
    };
    wait_until("the initial sync", &mut gs, applied(tip)).await;
    s.weir_initial = started.elapsed();
    let st = stats(&c).await;
    s.initial_writes = counts(&st["writesByManager"]);
    s.initial_requests = counts(&st["requests"]);
    assert_eq!(
        versions(&c).len() - base,
        scale.objects(),
        "weir applied every object"
    );

    let request_sync = |value: String| {
        let api = gs_api.clone();
        async move {
            api.patch(
                GITSYNC,
                &PatchParams {
                    field_manager: Some("bench".into()),
                    ..Default::default()
                },
                &Patch::Merge(
                    json!({"metadata": {"annotations": {REQUESTED_AT_ANNOTATION: value}}}),
                ),
            )
            .await
            .expect("request a sync");
        }
    };

    // No-op resync.
    reset_stats(&c).await;
    let token = format!("noop-{run}");
    let started = Instant::now();
    request_sync(token.clone()).await;
    wait_until("the no-op resync", &mut gs, |g| {
        g["status"]["lastHandledReconcileAt"] == token.as_str()
    })
    .await;
    s.noop = started.elapsed();
    let st = stats(&c).await;
    s.noop_writes = counts(&st["writesByManager"]);
    s.noop_requests = counts(&st["requests"]);

    // One-file change: one ConfigMap of a file of ten objects.
    let app = run % scale.apps;
    let ns = namespace(app % scale.namespaces);
    let path = app_path(scale, app);
    let changed = commit_on_tip(
        fx,
        "one ConfigMap",
        &[(&path, &app_file(&ns, app, &format!("changed-{run}")))],
    );
    let before = versions(&c);
    reset_stats(&c).await;
    let started = Instant::now();
    request_sync(format!("change-{run}")).await;
    wait_until("the one-file change", &mut gs, applied(&changed)).await;
    s.change = started.elapsed();
    s.change_writes = counts(&stats(&c).await["writesByManager"]);
    let after = versions(&c);
    s.change_written = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect();

    // Abort → revert commit pushed.
    let rollouts: Api<weir::api::rollout::Rollout> = Api::namespaced(client.clone(), "team-00");
    let live = rollouts.get("web").await.expect("read the Rollout");
    let stable_hash = weir::rollout::pod_template_hash(&live.spec.template);
    let stable_commit = live
        .annotations()
        .get(weir::api::TEMPLATE_COMMIT_ANNOTATION)
        .cloned()
        .expect("template commit");
    let bad = commit_on_tip(
        fx,
        "web: a release that fails analysis",
        &[(
            ROLLOUT_FILE,
            &rollout_file(&format!("registry.example/web:bad-{run}")),
        )],
    );
    request_sync(format!("bad-{run}")).await;
    wait_until("the bad release synced", &mut gs, applied(&bad)).await;
    let live = rollouts.get("web").await.expect("read the Rollout");
    let bad_hash = weir::rollout::pod_template_hash(&live.spec.template);
    s.revert_baseline = git_revert_baseline(url, &bad, run);
    let (ro_tx, mut ro) = watch::channel(Value::Null);
    let ro_watch = watch_object(
        &client,
        resource("weir.io", "v1alpha1", "Rollout", "rollouts"),
        "team-00",
        ro_tx,
    );
    wait_until("the Rollout watch", &mut ro, |r| !r.is_null()).await;
    let now = jiff::Timestamp::now().to_string();
    let ro_api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "team-00",
        &resource("weir.io", "v1alpha1", "Rollout", "rollouts"),
    );
    let started = Instant::now();
    ro_api
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "phase": "Degraded", "abort": true, "abortedAt": now,
                "currentPodHash": bad_hash, "stableRS": stable_hash, "stableCommit": stable_commit,
                "conditions": [{"type": "Progressing", "status": "False", "reason": "AnalysisRunFailed",
                    "message": "AnalysisRun web-bad failed: error-rate 0.5 broke result[0] < 0.05",
                    "lastTransitionTime": now}]}})),
        )
        .await
        .expect("abort the Rollout");
    let deadline = Instant::now() + WAIT;
    loop {
        if remote_main(&fx.remote).is_some_and(|m| m != bad) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no revert commit reached the remote"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    s.revert = started.elapsed();
    wait_until("gitRevert Pushed", &mut ro, |r| {
        r["status"]["gitRevert"]["state"] == "Pushed"
    })
    .await;
    let reverted = remote_main(&fx.remote).unwrap_or_default();
    wait_until("the revert synced", &mut gs, applied(&reverted)).await;

    ro_watch.abort();
    gs_watch.abort();
    controller.abort();
    c.emulator.shutdown();
}

// ---------------------------------------------------------------------------------------------
// The report

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs.get(xs.len() / 2).copied().unwrap_or_default()
}

fn secs(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

fn report(scale: &Scale, samples: &[Sample]) -> String {
    let pick = |f: fn(&Sample) -> Duration| median(samples.iter().map(f).collect());
    let ratio = |f: fn(&Sample) -> f64| {
        let mut xs: Vec<f64> = samples.iter().map(f).collect();
        xs.sort_by(f64::total_cmp);
        xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Sync of {} objects, median of {} runs (ratios: the median of each run's ratio)\n",
        scale.objects(),
        samples.len()
    );
    let _ = writeln!(out, "| Measurement | weir | baseline | ratio | target |");
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | --- |");
    let _ = writeln!(
        out,
        "| initial sync vs `kubectl apply --server-side -R -f` | {} | {} | {:.1}× faster | ≥ 5× faster |",
        secs(pick(|s| s.weir_initial)),
        secs(pick(|s| s.kubectl)),
        ratio(|s| s.kubectl.as_secs_f64() / s.weir_initial.as_secs_f64()),
    );
    let _ = writeln!(
        out,
        "| initial sync vs the API floor (weir's writes from a bare client: status, {} concurrent applies, inventory status, Event) | {} | {} | {:.2}× | ≤ 1.3× |",
        APPLY_CONCURRENCY,
        secs(pick(|s| s.weir_initial)),
        secs(pick(|s| s.floor)),
        ratio(|s| s.weir_initial.as_secs_f64() / s.floor.as_secs_f64()),
    );
    let _ = writeln!(
        out,
        "| initial sync vs the applies alone (the floor without the GitSync's status and Event) | {} | {} | {:.2}× | |",
        secs(pick(|s| s.weir_initial)),
        secs(pick(|s| s.floor_applies)),
        ratio(|s| s.weir_initial.as_secs_f64() / s.floor_applies.as_secs_f64()),
    );
    let _ = writeln!(
        out,
        "| abort → revert commit on the remote vs `git revert && git push` | {} | {} | {:.2}× | ≤ 1.5× |",
        secs(pick(|s| s.revert)),
        secs(pick(|s| s.revert_baseline)),
        ratio(|s| s.revert.as_secs_f64() / s.revert_baseline.as_secs_f64()),
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| Resync | time (median) | writes by `weir` (objects) | writes by `weir-gitsync` (status, Events) | objects whose resourceVersion changed |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | --- |");
    let w = |m: &BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    let max = |f: &dyn Fn(&Sample) -> u64| samples.iter().map(f).max().unwrap_or(0);
    let _ = writeln!(
        out,
        "| no-op (`weir.io/requestedAt`) | {} | {} | {} | — |",
        secs(pick(|s| s.noop)),
        max(&|s| w(&s.noop_writes, "weir")),
        max(&|s| w(&s.noop_writes, "weir-gitsync")),
    );
    let written: Vec<String> = samples
        .iter()
        .map(|s| s.change_written.join(", "))
        .collect();
    let _ = writeln!(
        out,
        "| one ConfigMap changed in one file | {} | {} | {} | {} |",
        secs(pick(|s| s.change)),
        max(&|s| w(&s.change_writes, "weir")),
        max(&|s| w(&s.change_writes, "weir-gitsync")),
        written.join("; "),
    );
    for (i, s) in samples.iter().enumerate() {
        let _ = writeln!(
            out,
            "\nrun {i}: initial sync requests {:?}, writes {:?}; no-op requests {:?}, writes {:?}; one-file writes {:?}",
            s.initial_requests, s.initial_writes, s.noop_requests, s.noop_writes, s.change_writes
        );
    }
    out
}
