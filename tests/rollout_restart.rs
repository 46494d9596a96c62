//! Issue B acceptance: the Rollout controller survives being killed. `weir run` runs as a child process
//! against the in-process emulator and is SIGKILLed and started again at every step boundary of a canary
//! release (and at a few random moments in between); the release still completes, traffic ends on the new
//! stable revision, and every Event of the Rollout exists exactly once.
//!
//! The random kill points come from a seed printed at the start; set `WEIR_RESTART_SEED` to replay one.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use support::{Cluster, repo_root, wait_for};
use tokio::process::{Child, Command};

const NS: &str = "default";
/// How long any one state of the release may take to reach the next.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// Index of the `pause: {}` step, which waits for a promote.
const INDEFINITE_PAUSE_STEP: i64 = 3;
/// At most this many kills at random moments during the first deploy and during the release, on top of
/// the step-boundary kills.
const RANDOM_KILLS_FIRST_DEPLOY: usize = 1;
const RANDOM_KILLS_RELEASE: usize = 4;

fn api(c: &Cluster, group: &str, version: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::namespaced_with(c.client(), NS, &ar)
}

fn rollouts(c: &Cluster) -> Api<DynamicObject> {
    api(c, "weir.io", "v1alpha1", "Rollout", "rollouts")
}

fn http_routes(c: &Cluster) -> Api<DynamicObject> {
    api(
        c,
        "gateway.networking.k8s.io",
        "v1",
        "HTTPRoute",
        "httproutes",
    )
}

async fn apply(a: &Api<DynamicObject>, obj: Value) {
    let name = obj["metadata"]["name"].as_str().unwrap().to_string();
    a.patch(
        &name,
        &PatchParams::apply("test").force(),
        &Patch::Apply(&obj),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {name}: {e}"));
}

fn rollout(image: &str) -> Value {
    json!({
        "apiVersion": "weir.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": image}]}},
            "strategy": {"canary": {"stableService": "web-stable", "canaryService": "web-canary",
                "scaleDownDelaySeconds": 1, "abortScaleDownDelaySeconds": 1,
                "trafficRouting": {"gatewayAPI": {"httpRoutes": [{"name": "web"}]}},
                "steps": [{"setWeight": 20}, {"pause": {"duration": "1s"}}, {"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]}}}
    })
}

async fn status(c: &Cluster) -> Value {
    rollouts(c)
        .get("web")
        .await
        .map(|r| r.data["status"].clone())
        .unwrap_or(Value::Null)
}

/// What counts as a step boundary: the step index or the phase changed.
fn boundary_key(s: &Value) -> (Value, Value) {
    (s["currentStepIndex"].clone(), s["phase"].clone())
}

fn waiting_for_promote(s: &Value) -> bool {
    s["phase"] == "Paused"
        && s["currentStepIndex"] == INDEFINITE_PAUSE_STEP
        && s["pauseConditions"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
}

/// What `kubectl weir promote` does: clear the pause conditions.
async fn promote(c: &Cluster) {
    rollouts(c)
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"pauseConditions": null}})),
        )
        .await
        .unwrap();
}

fn backend_weights(route: &DynamicObject) -> Vec<(String, i64)> {
    route.data["spec"]["rules"][0]["backendRefs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap().to_string(),
                b["weight"].as_i64().unwrap_or(1),
            )
        })
        .collect()
}

async fn replica_sets(c: &Cluster) -> Vec<(String, i64)> {
    let rs = api(c, "apps", "v1", "ReplicaSet", "replicasets");
    let mut out: Vec<(String, i64)> = rs
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|r| {
            (
                r.metadata
                    .labels
                    .clone()
                    .unwrap_or_default()
                    .get("weir.io/pod-template-hash")
                    .cloned()
                    .unwrap_or_default(),
                r.data["spec"]["replicas"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    out.sort();
    out
}

/// The core/v1 Events about the Rollout `web`, as (reason, message, count).
async fn rollout_events(c: &Cluster) -> Vec<(String, String, i64)> {
    api(c, "", "v1", "Event", "events")
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|e| {
            e.data["involvedObject"]["kind"] == "Rollout"
                && e.data["involvedObject"]["name"] == "web"
        })
        .map(|e| {
            (
                e.data["reason"].as_str().unwrap_or_default().to_string(),
                e.data["message"].as_str().unwrap_or_default().to_string(),
                e.data["count"].as_i64().unwrap_or(1),
            )
        })
        .collect()
}

fn reason_counts(events: &[(String, String, i64)]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (reason, _, _) in events {
        *counts.entry(reason.clone()).or_insert(0) += 1;
    }
    counts
}

fn expected(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(r, n)| (r.to_string(), *n)).collect()
}

/// `weir run` as a child process, killed with SIGKILL and started again on demand.
struct ControllerProcess {
    kubeconfig: PathBuf,
    child: Child,
    boundary_kills: usize,
    random_kills: usize,
    /// Where each kill happened, for the test output.
    log: Vec<String>,
}

fn spawn_controller(kubeconfig: &Path) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir"));
    cmd.arg("run")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    // Keep the test output readable; RUST_LOG from the environment still wins for debugging.
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "error");
    }
    cmd.spawn().expect("spawn weir run")
}

impl ControllerProcess {
    fn start(kubeconfig: &Path) -> Self {
        ControllerProcess {
            kubeconfig: kubeconfig.to_path_buf(),
            child: spawn_controller(kubeconfig),
            boundary_kills: 0,
            random_kills: 0,
            log: Vec::new(),
        }
    }

    /// SIGKILLs the running process, reaps it, and starts a fresh one.
    async fn kill_and_restart(&mut self) {
        if let Some(exit) = self.child.try_wait().expect("poll weir run") {
            panic!("weir run exited on its own with {exit}");
        }
        self.stop().await;
        self.child = spawn_controller(&self.kubeconfig);
    }

    /// SIGKILLs the running process and reaps it.
    async fn stop(&mut self) {
        self.child.start_kill().expect("SIGKILL weir run");
        self.child.wait().await.expect("reap weir run");
    }
}

/// Runs the release from the state `last` (read before the change that starts it) until `done` holds,
/// killing the controller at every boundary and, up to `random_kills` times, at a random moment before
/// the next boundary. Promotes at the indefinite pause.
async fn drive(
    c: &Cluster,
    ctl: &mut ControllerProcess,
    rng: &mut fastrand::Rng,
    mut last: (Value, Value),
    random_kills: usize,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let mut random_left = random_kills;
    loop {
        let random_kill =
            (random_left > 0 && rng.bool()).then(|| Duration::from_millis(rng.u64(0..300)));
        let next = wait_for("the next step boundary", STEP_TIMEOUT, || async {
            let s = status(c).await;
            (boundary_key(&s) != last || done(&s)).then_some(s)
        });
        let reached = match random_kill {
            // The timer only picks the kill moment (fault injection); nothing waits on it for progress.
            Some(after) => tokio::select! {
                s = next => Some(s),
                () = tokio::time::sleep(after) => None,
            },
            None => Some(next.await),
        };
        let Some(s) = reached else {
            ctl.kill_and_restart().await;
            ctl.random_kills += 1;
            random_left -= 1;
            ctl.log.push(format!("random kill after {last:?}"));
            continue;
        };
        ctl.kill_and_restart().await;
        ctl.boundary_kills += 1;
        ctl.log
            .push(format!("boundary kill at {:?}", boundary_key(&s)));
        if done(&s) {
            return s;
        }
        last = boundary_key(&s);
        if waiting_for_promote(&s) {
            promote(c).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_controller_at_every_step_boundary_completes_the_rollout_with_each_event_once()
{
    let seed = std::env::var("WEIR_RESTART_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("random kill seed: {seed} (replay with WEIR_RESTART_SEED={seed})");
    let mut rng = fastrand::Rng::with_seed(seed);

    let c = Cluster::start("restart").await;
    c.kubectl_ok(&["apply", "-f", repo_root().join("crds").to_str().unwrap()])
        .await;
    c.kubectl_ok(&[
        "apply",
        "-f",
        repo_root().join("e2e/crds").to_str().unwrap(),
    ])
    .await;
    let svc = api(&c, "", "v1", "Service", "services");
    for n in ["web-stable", "web-canary"] {
        apply(&svc, json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": n}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})).await;
    }
    apply(&http_routes(&c), json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "web"},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [
            {"backendRefs": [{"name": "web-stable", "port": 80, "weight": 100}, {"name": "web-canary", "port": 80, "weight": 0}]}]}})).await;

    let mut ctl = ControllerProcess::start(&c.kubeconfig);

    // First deploy: no steps, straight to Healthy.
    let before = boundary_key(&status(&c).await);
    apply(&rollouts(&c), rollout("web:1")).await;
    let first = drive(
        &c,
        &mut ctl,
        &mut rng,
        before,
        RANDOM_KILLS_FIRST_DEPLOY,
        |s| s["phase"] == "Healthy" && s["stableRS"].is_string(),
    )
    .await;
    let v1 = first["stableRS"].as_str().unwrap().to_string();
    assert_eq!(
        reason_counts(&rollout_events(&c).await),
        expected(&[("RolloutCompleted", 1)]),
        "first deploy"
    );

    // The release of v2 through all five steps.
    let before = boundary_key(&status(&c).await);
    apply(&rollouts(&c), rollout("web:2")).await;
    let done = drive(&c, &mut ctl, &mut rng, before, RANDOM_KILLS_RELEASE, |s| {
        s["phase"] == "Healthy"
            && s["stableRS"].is_string()
            && s["stableRS"] != v1.as_str()
            && s["stableRS"] == s["currentPodHash"]
    })
    .await;
    let v2 = done["stableRS"].as_str().unwrap().to_string();
    println!(
        "killed weir run {} times at step boundaries and {} times at random moments",
        ctl.boundary_kills, ctl.random_kills
    );
    for line in &ctl.log {
        println!("  {line}");
    }
    assert_eq!(done["currentStepIndex"], 5);
    assert_eq!(done["weights"], json!({"canary": 0, "stable": 100}));
    let route = http_routes(&c).get("web").await.unwrap();
    assert_eq!(
        backend_weights(&route),
        vec![("web-stable".into(), 100), ("web-canary".into(), 0)]
    );
    let stable_selector =
        svc.get("web-stable").await.unwrap().data["spec"]["selector"]["weir.io/pod-template-hash"]
            .clone();
    assert_eq!(stable_selector, v2.as_str());

    // The process started at Healthy makes its first pass from the finished status (where a restart would
    // record an Event again) before the pass that scales the old ReplicaSet away after
    // scaleDownDelaySeconds; stopping it then leaves nothing in flight when the Events are listed.
    wait_for("old ReplicaSet scaled to 0", STEP_TIMEOUT, || async {
        let rs = replica_sets(&c).await;
        (rs.contains(&(v1.clone(), 0)) && rs.contains(&(v2.clone(), 4))).then_some(())
    })
    .await;
    ctl.stop().await;

    let events = rollout_events(&c).await;
    assert_eq!(
        reason_counts(&events),
        expected(&[
            ("RolloutCompleted", 2),
            ("RolloutPaused", 2),
            ("RolloutPromoted", 1),
            ("RolloutStepCompleted", 5),
            ("TrafficWeightUpdated", 4),
        ]),
        "seed {seed}: {events:#?}"
    );
    let mut seen = BTreeMap::new();
    for (reason, message, count) in &events {
        assert_eq!(
            *count, 1,
            "seed {seed}: {reason} {message:?} counted {count}"
        );
        *seen.entry((reason, message)).or_insert(0) += 1;
    }
    let duplicated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "seed {seed}: {duplicated:?}");
    let completed: Vec<&String> = events
        .iter()
        .filter(|(r, _, _)| r == "RolloutCompleted")
        .map(|(_, m, _)| m)
        .collect();
    assert!(
        completed.iter().any(|m| m.contains(&v1)) && completed.iter().any(|m| m.contains(&v2)),
        "one RolloutCompleted per revision: {completed:?}"
    );
}
