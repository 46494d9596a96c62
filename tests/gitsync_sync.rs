//! The GitSync controller against the emulator and real Git remotes on loopback (`git
//! http-backend`): apply within an interval, no writes on an unchanged resync, prune, render
//! errors, token auth, and route weights that stay the Rollout's through syncs.

#[path = "support/git_remote.rs"]
mod git_remote;
mod support;

use std::time::Duration;

use git_remote::{Fixture, HttpRemote};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use support::{Cluster, kubectl_path, repo_root, wait_for};
use weir::api::conditions;
use weir::api::gitsync::GitSync;
use weir::gitsync::controller::{REQUESTED_AT_ANNOTATION, Settings};
use weir::gitsync::render::KustomizeCommand;

const NS: &str = "default";
const WAIT: Duration = Duration::from_secs(60);

struct Env {
    c: Cluster,
    fx: Fixture,
    remote: HttpRemote,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Env {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Env {
    async fn start(tag: &str, remote: Option<&[&str]>) -> Env {
        let c = Cluster::start(tag).await;
        for dir in ["crds", "e2e/crds"] {
            c.kubectl_ok(&["apply", "-f", repo_root().join(dir).to_str().unwrap()])
                .await;
        }
        let fx = Fixture::new(tag);
        let remote = match remote {
            Some(accepted) => HttpRemote::start(&fx.served, accepted).await,
            None => HttpRemote::open(&fx.served).await,
        };
        let settings = Settings {
            cache_dir: fx.dir.path().join("cache"),
            kustomize: KustomizeCommand::Kubectl(kubectl_path()),
        };
        let tasks = vec![tokio::spawn(weir::gitsync::controller::run(
            c.client(),
            settings,
        ))];
        Env {
            c,
            fx,
            remote,
            tasks,
        }
    }

    fn with_rollout_controller(mut self) -> Env {
        self.tasks.push(tokio::spawn(weir::rollout::controller::run(
            self.c.client(),
        )));
        self
    }

    fn gitsyncs(&self) -> Api<GitSync> {
        Api::namespaced(self.c.client(), NS)
    }

    async fn create_gitsync(&self, spec: Value) {
        let gs = json!({"apiVersion": "weir.io/v1alpha1", "kind": "GitSync", "metadata": {"name": "apps", "namespace": NS}, "spec": spec});
        self.gitsyncs()
            .patch(
                "apps",
                &PatchParams::apply("test").force(),
                &Patch::Apply(&gs),
            )
            .await
            .expect("create GitSync");
    }

    fn url(&self) -> String {
        self.remote.url("apps.git")
    }

    async fn gitsync(&self) -> GitSync {
        self.gitsyncs().get("apps").await.expect("read GitSync")
    }

    /// Waits until the GitSync is Ready on `revision`.
    async fn synced(&self, revision: &str) -> GitSync {
        wait_for(&format!("GitSync Ready on {revision}"), WAIT, || async {
            let gs = self.gitsync().await;
            let s = gs.status.clone()?;
            (s.last_applied_revision.as_deref() == Some(revision)
                && conditions::is_true(&s.conditions, "Ready"))
            .then_some(gs)
        })
        .await
    }

    /// Waits until Ready is False with `reason`; returns the condition's message.
    async fn failed(&self, reason: &str) -> String {
        wait_for(&format!("GitSync Ready=False {reason}"), WAIT, || async {
            let s = self.gitsync().await.status?;
            let c = conditions::find(&s.conditions, "Ready")?;
            (c.status == "False" && c.reason == reason).then(|| c.message.clone())
        })
        .await
    }

    async fn events(&self) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.c.client(), NS);
        api.list(&Default::default()).await.unwrap().items
    }

    async fn stats(&self) -> Value {
        self.c
            .raw("GET", "/emulator/stats", None, Vec::new())
            .await
            .body
    }
}

fn config_map(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  value: \"{value}\"\n"
    )
}

fn service(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  selector:\n    app: web\n  ports:\n  - port: 80\n"
    )
}

async fn config_value(c: &Cluster, name: &str) -> Option<String> {
    let api: Api<ConfigMap> = Api::namespaced(c.client(), NS);
    api.get_opt(name)
        .await
        .unwrap()
        .and_then(|cm| cm.data?.get("value").cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_applied_within_an_interval_and_an_unchanged_resync_writes_nothing() {
    let env = Env::start("gs-apply", None).await;
    let c1 = env.fx.commit(
        "app",
        &[
            ("apps/web/config.yaml", &config_map("web-config", "one")),
            ("apps/web/service.yaml", &service("web")),
            ("README.md", "not a manifest\n"),
        ],
    );
    env.create_gitsync(
        json!({"url": env.url(), "ref": {"branch": "main"}, "path": "apps", "interval": "1s"}),
    )
    .await;
    let gs = env.synced(&c1).await;
    let status = gs.status.unwrap();
    assert_eq!(status.last_fetched_revision.as_deref(), Some(c1.as_str()));
    let kinds: Vec<&str> = status.inventory.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["ConfigMap", "Service"]);
    assert_eq!(
        config_value(&env.c, "web-config").await.as_deref(),
        Some("one")
    );

    // Labelled and annotated with the GitSync and the file it came from.
    let cm: Api<ConfigMap> = Api::namespaced(env.c.client(), NS);
    let live = cm.get("web-config").await.unwrap();
    let labels = live.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("weir.io/gitsync-name").map(String::as_str),
        Some("apps")
    );
    let annotations = live.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations.get("weir.io/source").map(String::as_str),
        Some("apps/web/config.yaml#L1")
    );
    let managers: Vec<String> = live
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, ["weir"]);

    // Three more syncs of the same revision: each reads every object, none writes.
    env.c
        .raw("POST", "/emulator/stats/reset", None, Vec::new())
        .await;
    wait_for("three resyncs", WAIT, || async {
        let gets = env.stats().await["requests"]["get"].as_u64().unwrap_or(0);
        // Per sync: the GitSync itself and its two objects.
        (gets >= 9).then_some(())
    })
    .await;
    let stats = env.stats().await;
    assert_eq!(stats["writes"], 0, "an unchanged resync wrote: {stats}");

    // A change in Git is applied on the next interval.
    let c2 = env.fx.commit(
        "bump",
        &[("apps/web/config.yaml", &config_map("web-config", "two"))],
    );
    env.synced(&c2).await;
    assert_eq!(
        config_value(&env.c, "web-config").await.as_deref(),
        Some("two")
    );
    let stats = env.stats().await;
    assert_eq!(
        stats["writesByManager"]["weir"], 1,
        "only the changed object is written: {stats}"
    );

    // Drift is corrected on the next interval.
    cm.patch(
        "web-config",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"value": "edited by hand"}})),
    )
    .await
    .unwrap();
    wait_for("drift corrected", WAIT, || async {
        (config_value(&env.c, "web-config").await.as_deref() == Some("two")).then_some(())
    })
    .await;

    let synced: Vec<String> = env
        .events()
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("GitSynced"))
        .filter_map(|e| e.message)
        .collect();
    assert_eq!(synced.len(), 2, "{synced:?}");
    assert!(synced.iter().any(|m| m.contains(&c2[..12])), "{synced:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_manifests_are_pruned_only_when_prune_is_on() {
    let env = Env::start("gs-prune", None).await;
    let c1 = env.fx.commit(
        "three",
        &[
            ("apps/a.yaml", &config_map("a", "1")),
            ("apps/b.yaml", &config_map("b", "1")),
            ("apps/c.yaml", &config_map("c", "1")),
        ],
    );
    env.create_gitsync(json!({"url": env.url(), "ref": {"branch": "main"}, "path": "apps", "interval": "1s", "prune": true}))
        .await;
    env.synced(&c1).await;

    env.fx.work_git(&["rm", "-q", "apps/a.yaml"]);
    env.fx.work_git(&["commit", "-q", "-m", "drop a"]);
    env.fx.work_git(&["push", "-q", "origin", "HEAD"]);
    let c2 = env.fx.work_git(&["rev-parse", "HEAD"]);
    let gs = env.synced(&c2).await;
    assert_eq!(config_value(&env.c, "a").await, None, "pruned");
    assert_eq!(gs.status.unwrap().inventory.len(), 2);

    // Prune off: a removed manifest leaves its object in place, and out of the inventory.
    env.gitsyncs()
        .patch(
            "apps",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"prune": false}})),
        )
        .await
        .unwrap();
    env.fx.work_git(&["rm", "-q", "apps/b.yaml"]);
    env.fx.work_git(&["commit", "-q", "-m", "drop b"]);
    env.fx.work_git(&["push", "-q", "origin", "HEAD"]);
    let c3 = env.fx.work_git(&["rev-parse", "HEAD"]);
    let gs = env.synced(&c3).await;
    assert_eq!(
        config_value(&env.c, "b").await.as_deref(),
        Some("1"),
        "kept"
    );
    let names: Vec<String> = gs
        .status
        .unwrap()
        .inventory
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_render_error_keeps_the_last_good_revision_and_names_file_and_line() {
    let env = Env::start("gs-render", None).await;
    let c1 = env
        .fx
        .commit("good", &[("apps/web.yaml", &config_map("web", "good"))]);
    env.create_gitsync(
        json!({"url": env.url(), "ref": {"branch": "main"}, "path": "apps", "interval": "1s"}),
    )
    .await;
    env.synced(&c1).await;

    let broken = format!(
        "{}---\nkind: ConfigMap\nmetadata: [unclosed\n",
        config_map("web", "bad")
    );
    let c2 = env.fx.commit("broken", &[("apps/web.yaml", &broken)]);
    let message = env.failed("RenderFailed").await;
    assert!(message.contains("apps/web.yaml:"), "{message}");
    let gs = env.gitsync().await.status.unwrap();
    assert_eq!(gs.last_applied_revision.as_deref(), Some(c1.as_str()));
    assert_eq!(gs.last_fetched_revision.as_deref(), Some(c2.as_str()));
    assert_eq!(config_value(&env.c, "web").await.as_deref(), Some("good"));
    let failed: Vec<Event> = env
        .events()
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("GitSyncFailed"))
        .collect();
    assert_eq!(failed.len(), 1, "recorded once, not per interval");

    let c3 = env
        .fx
        .commit("fixed", &[("apps/web.yaml", &config_map("web", "fixed"))]);
    env.synced(&c3).await;
    assert_eq!(config_value(&env.c, "web").await.as_deref(), Some("fixed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_over_http_and_a_wrong_token_is_named_without_the_token() {
    const TOKEN: &str = "right-t0ken-4242";
    const WRONG: &str = "wrong-t0ken-1717";
    let env = Env::start("gs-token", Some(&[&format!("Bearer {TOKEN}")])).await;
    let c1 = env
        .fx
        .commit("app", &[("apps/web.yaml", &config_map("web", "one"))]);
    let secrets: Api<Secret> = Api::namespaced(env.c.client(), NS);
    let secret = |token: &str| {
        serde_json::from_value::<Secret>(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "git-token"}, "stringData": {"bearerToken": token}}))
            .unwrap()
    };
    secrets
        .create(&PostParams::default(), &secret(WRONG))
        .await
        .unwrap();
    env.create_gitsync(json!({"url": env.url(), "ref": {"branch": "main"}, "path": "apps", "interval": "1s", "secretRef": {"name": "git-token"}}))
        .await;
    let message = env.failed("FetchFailed").await;
    assert!(message.contains("authentication failed"), "{message}");
    assert!(!message.contains(WRONG), "{message}");
    for e in env.events().await {
        assert!(!format!("{e:?}").contains(WRONG));
    }

    secrets
        .replace("git-token", &PostParams::default(), &secret(TOKEN))
        .await
        .unwrap();
    env.synced(&c1).await;
    assert_eq!(config_value(&env.c, "web").await.as_deref(), Some("one"));
    let gs = serde_json::to_string(&env.gitsync().await).unwrap();
    assert!(!gs.contains(TOKEN) && !gs.contains(WRONG));
}

fn rollout_files(image: &str) -> Vec<(&'static str, String)> {
    let rollout = format!(
        r#"apiVersion: weir.io/v1alpha1
kind: Rollout
metadata:
  name: web
spec:
  replicas: 4
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: {image}
  strategy:
    canary:
      stableService: web-stable
      canaryService: web-canary
      trafficRouting:
        gatewayAPI:
          httpRoutes:
          - name: web
      steps:
      - setWeight: 20
      - pause: {{}}
"#
    );
    let route = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
spec:
  parentRefs:
  - name: gateway
  rules:
  - backendRefs:
    - name: web-stable
      port: 80
      weight: 100
    - name: web-canary
      port: 80
      weight: 0
"#;
    vec![
        ("apps/web/rollout.yaml", rollout),
        ("apps/web/route.yaml", route.to_string()),
        ("apps/web/stable.yaml", service("web-stable")),
        ("apps/web/canary.yaml", service("web-canary")),
    ]
}

fn commit_files(fx: &Fixture, message: &str, files: &[(&'static str, String)]) -> String {
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    fx.commit(message, &refs)
}

async fn route_weights(c: &Cluster) -> Vec<i64> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(c.client(), NS, &ar);
    let route = serde_json::to_value(api.get("web").await.unwrap()).unwrap();
    route["spec"]["rules"][0]["backendRefs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["weight"].as_i64().unwrap_or(1))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_weights_stay_the_rollouts_through_syncs_during_a_pause() {
    let env = Env::start("gs-weights", None)
        .await
        .with_rollout_controller();
    let c1 = commit_files(&env.fx, "web v1", &rollout_files("web:1"));
    env.create_gitsync(
        json!({"url": env.url(), "ref": {"branch": "main"}, "path": "apps", "interval": "1s"}),
    )
    .await;
    env.synced(&c1).await;
    let rollouts = Api::<weir::api::Rollout>::namespaced(env.c.client(), NS);
    wait_for("web:1 Healthy", WAIT, || async {
        let ro = rollouts.get("web").await.ok()?;
        (ro.status?.phase == Some(weir::api::RolloutPhase::Healthy)).then_some(())
    })
    .await;

    let c2 = commit_files(&env.fx, "web v2", &rollout_files("web:2"));
    env.synced(&c2).await;
    wait_for("canary paused at 20%", WAIT, || async {
        let ro = rollouts.get("web").await.ok()?;
        let s = ro.status?;
        (s.phase == Some(weir::api::RolloutPhase::Paused)).then_some(())
    })
    .await;
    assert_eq!(route_weights(&env.c).await, [80, 20]);

    // Three forced syncs while paused: Git says 100/0, the route keeps 80/20, and the sync
    // neither writes the route nor reports drift.
    env.c
        .raw("POST", "/emulator/stats/reset", None, Vec::new())
        .await;
    for i in 0..3 {
        let at = format!("2026-11-22T00:00:0{i}Z");
        env.gitsyncs()
            .patch(
                "apps",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {REQUESTED_AT_ANNOTATION: at}}})),
            )
            .await
            .unwrap();
        wait_for("sync now handled", WAIT, || async {
            let s = env.gitsync().await.status?;
            (s.last_handled_reconcile_at.as_deref() == Some(at.as_str())).then_some(())
        })
        .await;
        assert_eq!(route_weights(&env.c).await, [80, 20]);
        let s = env.gitsync().await.status.unwrap();
        assert!(conditions::is_true(&s.conditions, "Ready"));
    }
    let stats = env.stats().await;
    assert!(
        stats["writesByManager"].get("weir").is_none(),
        "the sync wrote objects: {stats}"
    );
    let ro = rollouts.get("web").await.unwrap();
    assert_eq!(
        ro.status.unwrap().phase,
        Some(weir::api::RolloutPhase::Paused)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crds_and_namespaces_are_applied_before_what_needs_them() {
    let env = Env::start("gs-order", None).await;
    let widget = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\n  namespace: team\nspec:\n  size: 3\n";
    let namespace = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n";
    let crd = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
"#;
    // File order puts the Widget first; apply order must not.
    let c1 = env.fx.commit(
        "widgets",
        &[
            ("apps/a-widget.yaml", widget),
            ("apps/b-namespace.yaml", namespace),
            ("apps/c-crd.yaml", crd),
        ],
    );
    env.create_gitsync(
        json!({"url": env.url(), "ref": {"branch": "main"}, "path": "apps", "interval": "1s"}),
    )
    .await;
    let gs = env.synced(&c1).await;
    let kinds: Vec<String> = gs
        .status
        .unwrap()
        .inventory
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["CustomResourceDefinition", "Namespace", "Widget"]);
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    );
    let widgets: Api<DynamicObject> = Api::namespaced_with(env.c.client(), "team", &ar);
    let w = widgets.get("w1").await.unwrap();
    assert_eq!(w.data["spec"]["size"], 3);
}
