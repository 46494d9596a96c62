//! `kubectl weir` as people run it: the built binary, both directly and through the real kubectl's
//! plugin mechanism, against the emulator with the Rollout controller running in-process.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use support::{Cluster, apply_web_network, kubectl_path, wait_for, web_route_rules};

const NS: &str = "default";

struct Env {
    c: Cluster,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Env {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn plugin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kubectl-weir"))
}

/// The result of one invocation.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn finish(out: Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn output(mut cmd: tokio::process::Command, what: &str) -> Run {
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what} timed out"))
        .unwrap_or_else(|e| panic!("running {what}: {e}"));
    finish(out)
}

/// `kubectl-weir ARGS --kubeconfig K`, the binary run directly.
async fn weir(kubeconfig: &Path, args: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(plugin());
    cmd.args(args).arg("--kubeconfig").arg(kubeconfig);
    output(cmd, &format!("kubectl-weir {args:?}")).await
}

/// `kubectl weir ARGS --kubeconfig K`, through kubectl with the binary's directory first on PATH.
async fn kubectl_weir(kubeconfig: &Path, args: &[&str]) -> Run {
    let dir = plugin().parent().unwrap().to_path_buf();
    let path = std::env::join_paths(std::iter::once(dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let mut cmd = tokio::process::Command::new(kubectl_path());
    cmd.arg("weir")
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env("PATH", path);
    output(cmd, &format!("kubectl weir {args:?}")).await
}

#[track_caller]
fn ok(run: &Run) -> &str {
    assert_eq!(
        run.code, 0,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    &run.stdout
}

/// A refusal or an error: exit 1, one line on stderr that contains `fragment`, no panic.
#[track_caller]
fn refused(run: &Run, fragment: &str) {
    assert_eq!(
        run.code, 1,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {:?}", run.stderr);
    assert!(lines[0].starts_with("error: "), "{:?}", run.stderr);
    assert!(
        lines[0].contains(fragment),
        "{:?} lacks {fragment:?}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked") && !run.stderr.contains("backtrace"));
}

fn api(c: &Cluster, group: &str, version: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::namespaced_with(c.client(), NS, &ar)
}

fn rollouts(c: &Cluster) -> Api<DynamicObject> {
    api(c, "weir.io", "v1alpha1", "Rollout", "rollouts")
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

const STEPS: &str =
    r#"[{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}, {"pause": {}}, {"setWeight": 100}]"#;

fn rollout(image: &str, commit: &str, steps: Value) -> Value {
    json!({
        "apiVersion": "weir.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "web", "annotations": {"weir.io/template-commit": commit}},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": image}]}},
            "strategy": {"canary": {"stableService": "web-stable", "canaryService": "web-canary",
                "scaleDownDelaySeconds": 1, "abortScaleDownDelaySeconds": 1,
                "trafficRouting": {"gatewayAPI": {"httpRoutes": [{"name": "web"}]}},
                "steps": steps}}}
    })
}

async fn env(tag: &str) -> Env {
    let c = Cluster::start(tag).await;
    c.install_crds().await;
    let tasks = vec![tokio::spawn(weir::rollout::controller::run(c.client()))];
    apply_web_network(&c, Some(100)).await;
    Env { c, tasks }
}

async fn status(c: &Cluster) -> Value {
    rollouts(c)
        .get("web")
        .await
        .map(|r| r.data["status"].clone())
        .unwrap_or(Value::Null)
}

async fn spec(c: &Cluster) -> Value {
    rollouts(c).get("web").await.unwrap().data["spec"].clone()
}

async fn wait_status(c: &Cluster, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    wait_for(what, Duration::from_secs(60), || async {
        let s = status(c).await;
        f(&s).then_some(s)
    })
    .await
}

/// The canary weight on the HTTPRoute.
async fn route_canary_weight(c: &Cluster) -> i64 {
    web_route_rules(c).await[0]["backendRefs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "web-canary")
        .map_or(0, |b| b["weight"].as_i64().unwrap_or(1))
}

async fn wait_route(c: &Cluster, canary: i64) {
    wait_for(
        &format!("route canary weight {canary}"),
        Duration::from_secs(60),
        || async { (route_canary_weight(c).await == canary).then_some(()) },
    )
    .await;
}

/// v1 Healthy, then v2 released and paused at step 2 (20%).
async fn paused_canary(c: &Cluster) -> (String, String) {
    let steps: Value = serde_json::from_str(STEPS).unwrap();
    apply(&rollouts(c), rollout("web:1", "c0ffee1", steps.clone())).await;
    let first = wait_status(c, "v1 Healthy", |s| s["phase"] == "Healthy").await;
    apply(&rollouts(c), rollout("web:2", "beef002", steps)).await;
    let paused = wait_status(c, "paused at step 2", |s| {
        s["phase"] == "Paused" && s["currentStepIndex"] == 1 && s["weights"]["canary"] == 20
    })
    .await;
    wait_route(c, 20).await;
    (
        first["stableRS"].as_str().unwrap().to_string(),
        paused["currentPodHash"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn promote_continues_a_paused_canary_and_status_reports_each_outcome() {
    let e = env("plugin-promote").await;
    let c = &e.c;
    let kc = c.kubeconfig.clone();
    let (_, canary) = paused_canary(c).await;

    // In progress: one look exits 2, and so does a wait that times out.
    let run = kubectl_weir(&kc, &["status", "web"]).await;
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout,
        "rollout default/web: Paused: Paused at step 2/5: waiting for promote\n"
    );
    let run = weir(&kc, &["status", "web", "--timeout", "1s"]).await;
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("timed out after 1s"), "{}", run.stdout);

    // Promote through kubectl: the canary continues to the next pause at 60%.
    let run = kubectl_weir(&kc, &["promote", "web"]).await;
    assert_eq!(
        ok(&run),
        "rollout default/web promoted: cleared pause CanaryPauseStep\n"
    );
    wait_status(c, "paused at step 4", |s| {
        s["phase"] == "Paused" && s["currentStepIndex"] == 3 && s["weights"]["canary"] == 60
    })
    .await;
    wait_route(c, 60).await;

    // promote --full skips the rest; status --watch waits for Healthy and exits 0.
    let run = weir(&kc, &["promote", "web", "--full"]).await;
    assert!(ok(&run).contains("fully promoted"), "{}", run.stdout);
    let run = kubectl_weir(&kc, &["status", "web", "--watch", "--timeout", "60s"]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .trim_end()
            .ends_with(&format!("Healthy: Revision {canary} is stable")),
        "{}",
        run.stdout
    );
    wait_route(c, 0).await;

    // Nothing left to promote.
    refused(
        &weir(&kc, &["promote", "web"]).await,
        "is Healthy: there is no release to promote",
    );
    refused(
        &kubectl_weir(&kc, &["abort", "web"]).await,
        "is Healthy: there is no release to abort",
    );
}

fn history_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn abort_sends_traffic_to_stable_and_retry_starts_again() {
    let e = env("plugin-abort").await;
    let c = &e.c;
    let kc = c.kubeconfig.clone();
    let (stable, canary) = paused_canary(c).await;

    let run = kubectl_weir(&kc, &["abort", "web"]).await;
    assert_eq!(
        ok(&run),
        "rollout default/web aborted: traffic goes back to stable (status.abort=true)\n"
    );
    wait_route(c, 0).await;
    let s = wait_status(c, "Degraded", |s| s["phase"] == "Degraded").await;
    assert_eq!(s["weights"], json!({"canary": 0, "stable": 100}));
    assert_eq!(s["stableRS"], stable.as_str());

    // Degraded: status exits 1, both ways.
    for run in [
        weir(&kc, &["status", "web"]).await,
        kubectl_weir(&kc, &["status", "web", "--watch"]).await,
    ] {
        assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
        assert!(
            run.stdout
                .contains("rollout default/web: Degraded: aborted"),
            "{}",
            run.stdout
        );
    }
    refused(&weir(&kc, &["abort", "web"]).await, "is already aborted");
    // history records the abort against the canary's revision.
    let history = kubectl_weir(&kc, &["history", "web"]).await;
    let rows = history_rows(ok(&history));
    assert_eq!(
        &rows[1][..5],
        ["2", canary.as_str(), "web:2", "beef002", "aborted"].as_slice(),
        "{}",
        history.stdout
    );
    assert!(
        rows[1][7].ends_with('Z'),
        "aborted at a time: {:?}",
        rows[1]
    );
    assert_eq!(
        &rows[2][..5],
        ["1", stable.as_str(), "web:1", "c0ffee1", "stable"].as_slice()
    );
    refused(
        &weir(&kc, &["promote", "web"]).await,
        "is aborted: use `kubectl weir retry`",
    );
    // --revert needs a GitSync behind the Rollout.
    refused(
        &weir(&kc, &["abort", "web", "--revert"]).await,
        "was not applied by a GitSync",
    );

    // Retry: the release starts again and pauses at 20% once more.
    let run = weir(&kc, &["retry", "web"]).await;
    assert!(
        ok(&run).starts_with("rollout default/web retried"),
        "{}",
        run.stdout
    );
    wait_status(c, "paused at step 2 again", |s| {
        s["phase"] == "Paused"
            && s["currentStepIndex"] == 1
            && !s["abort"].as_bool().unwrap_or(false)
    })
    .await;
    wait_route(c, 20).await;
    refused(
        &kubectl_weir(&kc, &["retry", "web"]).await,
        "is not aborted: there is nothing to retry",
    );

    // abort --revert on a Rollout applied by a GitSync asks for the Git revert of the current revision.
    rollouts(c)
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"weir.io/gitsync-name": "apps", "weir.io/gitsync-namespace": "default"}}})),
        )
        .await
        .unwrap();
    let run = kubectl_weir(&kc, &["abort", "web", "--revert"]).await;
    assert!(
        ok(&run).contains(&format!("status.gitRevert requested for revision {canary}")),
        "{}",
        run.stdout
    );
    let s = wait_status(c, "aborted with a revert request", |s| {
        s["phase"] == "Degraded"
    })
    .await;
    assert_eq!(s["gitRevert"]["podHash"], canary.as_str());
    assert_eq!(s["gitRevert"]["state"], "Requested");
    assert!(s["gitRevert"].get("revertCommit").is_none(), "{s}");
    wait_route(c, 0).await;
    refused(
        &weir(&kc, &["abort", "web", "--revert"]).await,
        "already aborted and its Git revert requested",
    );
    let rows = history_rows(ok(&weir(&kc, &["history", "web"]).await));
    assert_eq!(rows[1][4], "reverted");
    assert_eq!(rows[1][8], "Requested");
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_holds_and_resume_releases_a_rollout() {
    let e = env("plugin-pause").await;
    let c = &e.c;
    let kc = c.kubeconfig.clone();
    paused_canary(c).await;
    // Every write conflicting: the verb re-reads and decides again a few times, then gives up with
    // one line, having changed nothing.
    let faults = |rate: f64| json!({"errorRate": rate, "errorCodes": [409]}).to_string();
    assert_eq!(
        c.raw(
            "PUT",
            "/emulator/faults",
            Some("application/json"),
            faults(1.0)
        )
        .await
        .status,
        200
    );
    refused(
        &weir(&kc, &["pause", "web"]).await,
        "rollout default/web kept changing while being updated",
    );
    assert_eq!(
        c.raw(
            "PUT",
            "/emulator/faults",
            Some("application/json"),
            faults(0.0)
        )
        .await
        .status,
        200
    );
    assert!(spec(c).await.get("paused").is_none_or(|p| p == false));
    // Promote past the pause step, but hold the Rollout first: it must stay where it is.
    let run = kubectl_weir(&kc, &["pause", "web"]).await;
    assert_eq!(ok(&run), "rollout default/web paused (spec.paused=true)\n");
    assert_eq!(spec(c).await["paused"], true);
    refused(&weir(&kc, &["pause", "web"]).await, "is already paused");
    wait_status(c, "paused by the user", |s| {
        s["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Paused by user")
    })
    .await;

    let run = weir(&kc, &["resume", "web"]).await;
    assert_eq!(
        ok(&run),
        "rollout default/web resumed (spec.paused=false)\n"
    );
    assert!(spec(c).await.get("paused").is_none_or(|p| p == false));
    let run = kubectl_weir(&kc, &["resume", "web"]).await;
    refused(
        &run,
        "is not paused by spec.paused (it waits at a pause step: use `kubectl weir promote`)",
    );

    // promote on a Rollout paused by the user also unpauses it.
    ok(&weir(&kc, &["pause", "web"]).await);
    let run = weir(&kc, &["promote", "web"]).await;
    assert!(ok(&run).contains("spec.paused=false"), "{}", run.stdout);
    wait_status(c, "paused at step 4", |s| {
        s["currentStepIndex"] == 3 && s["phase"] == "Paused"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn list_history_and_watch_show_the_release() {
    let e = env("plugin-list").await;
    let c = &e.c;
    let kc = c.kubeconfig.clone();
    let (stable, canary) = paused_canary(c).await;

    // The same table directly and through kubectl.
    let direct = weir(&kc, &["list", "rollouts"]).await;
    let through = kubectl_weir(&kc, &["list", "rollouts"]).await;
    assert_eq!(ok(&direct).lines().next(), ok(&through).lines().next());
    let lines: Vec<&str> = direct.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", direct.stdout);
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        &cells[..10],
        [
            "web", "Canary", "Paused", "2/5", "20", "20", "4", "5", "1", "5"
        ]
        .as_slice(),
        "{}",
        direct.stdout
    );
    let all = kubectl_weir(&kc, &["list", "rollouts", "-A"]).await;
    assert!(ok(&all).starts_with("NAMESPACE"), "{}", all.stdout);
    assert!(
        all.stdout.lines().nth(1).unwrap().starts_with("default "),
        "{}",
        all.stdout
    );
    let as_json: Value =
        serde_json::from_str(ok(&weir(&kc, &["list", "rollouts", "-o", "json"]).await)).unwrap();
    assert_eq!(as_json["kind"], "List");
    assert_eq!(
        as_json["items"][0]["status"]["currentPodHash"],
        canary.as_str()
    );
    let as_yaml = weir(&kc, &["list", "rollouts", "-o", "yaml"]).await;
    let parsed: Value = serde_saphyr::from_str(ok(&as_yaml)).unwrap();
    assert_eq!(parsed, as_json);

    // get --watch redraws when the Rollout moves on after a promote.
    let mut watch = tokio::process::Command::new(plugin());
    watch
        .args(["get", "rollout", "web", "--watch", "--kubeconfig"])
        .arg(&kc)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = watch.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut until = async |fragment: &str, seen: &mut Vec<String>| {
        tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = rx.recv().await {
                let hit = line.contains(fragment);
                seen.push(line);
                if hit {
                    return;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("get --watch never showed {fragment:?}: {seen:?}"));
    };
    until("  Step:         2/5", &mut seen).await;
    ok(&weir(&kc, &["promote", "web", "--full"]).await);
    until(&format!("  Stable:       {canary}"), &mut seen).await;
    child.kill().await.unwrap();

    // history: both revisions, their images and commits, which is stable and since when.
    wait_status(c, "Healthy on v2", |s| s["phase"] == "Healthy").await;
    let direct = weir(&kc, &["history", "web"]).await;
    let through = kubectl_weir(&kc, &["history", "web"]).await;
    assert_eq!(ok(&direct), ok(&through));
    let rows: Vec<Vec<&str>> = direct
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "REVISION",
            "HASH",
            "IMAGES",
            "COMMIT",
            "STATE",
            "CREATED",
            "STABLE-SINCE",
            "ABORTED",
            "GIT-REVERT"
        ]
    );
    assert_eq!(
        &rows[1][..5],
        ["2", canary.as_str(), "web:2", "beef002", "stable"].as_slice()
    );
    assert_eq!(
        &rows[2][..5],
        ["1", stable.as_str(), "web:1", "c0ffee1", "old"].as_slice()
    );
    for row in &rows[1..] {
        assert!(
            row[6].ends_with('Z'),
            "became stable at a recorded time: {row:?}"
        );
        assert_eq!(&row[7..], ["-", "-"]);
    }
    let as_json: Value =
        serde_json::from_str(ok(&weir(&kc, &["history", "web", "-o", "json"]).await)).unwrap();
    assert_eq!(as_json["items"][1]["commit"], "beef002");
    assert_eq!(as_json["items"][1]["state"], "stable");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gives_one_line_and_a_non_zero_exit() {
    let e = env("plugin-bad").await;
    let c = &e.c;
    let kc = c.kubeconfig.clone();
    for run in [
        weir(&kc, &["get", "rollout", "nope"]).await,
        kubectl_weir(&kc, &["get", "rollout", "nope"]).await,
    ] {
        refused(&run, "rollout default/nope not found");
    }
    for verb in [
        "status", "promote", "abort", "retry", "pause", "resume", "history",
    ] {
        refused(
            &weir(&kc, &[verb, "nope", "-n", "shop"]).await,
            "rollout shop/nope not found",
        );
    }
    refused(
        &kubectl_weir(&kc, &["get", "deployment", "web"]).await,
        "unknown kind \"deployment\"",
    );
    refused(
        &weir(&kc, &["list", "services"]).await,
        "unknown kind \"services\"",
    );

    // A kubeconfig without a current context, through --kubeconfig and through $KUBECONFIG.
    let no_context = c.dir.path().join("no-context.kubeconfig");
    let text = std::fs::read_to_string(&kc).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("current-context"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&no_context, text).unwrap();
    refused(
        &weir(&no_context, &["get", "rollout", "web"]).await,
        "has no current context; pass --context NAME",
    );
    let mut cmd = tokio::process::Command::new(plugin());
    cmd.args(["list", "rollouts"])
        .env("KUBECONFIG", &no_context);
    refused(
        &output(cmd, "list with $KUBECONFIG").await,
        "has no current context",
    );
    // ... which --context fixes.
    let run = weir(
        &no_context,
        &["list", "rollouts", "--context", "weir-emulator"],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    refused(
        &weir(&kc, &["list", "rollouts", "--context", "elsewhere"]).await,
        "elsewhere",
    );
    refused(
        &weir(&c.dir.path().join("missing"), &["list"]).await,
        "cannot read kubeconfig",
    );

    // No kubeconfig at all: kubectl's own fallbacks, ~/.kube/config and then a pod's service account.
    let home = c.dir.path().join("empty-home");
    std::fs::create_dir_all(&home).unwrap();
    let mut cmd = tokio::process::Command::new(plugin());
    cmd.args(["list", "rollouts"])
        .env_remove("KUBECONFIG")
        .env("HOME", &home);
    refused(
        &output(cmd, "list without a kubeconfig").await,
        "cannot read kubeconfig",
    );
    if !Path::new("/var/run/secrets/kubernetes.io/serviceaccount").exists() {
        let mut cmd = tokio::process::Command::new(plugin());
        cmd.args(["list", "rollouts"])
            .env_remove("KUBECONFIG")
            .env("HOME", &home)
            .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
            .env("KUBERNETES_SERVICE_PORT", "1");
        refused(
            &output(cmd, "list in a pod without a service account").await,
            "no kubeconfig, and the in-cluster configuration cannot be used",
        );
    }

    // A cluster without weir's CRDs.
    let bare = Cluster::start("plugin-bare").await;
    refused(
        &weir(&bare.kubeconfig, &["get", "rollout", "web"]).await,
        "does not serve rollouts.weir.io/v1alpha1",
    );

    // clap's own usage errors are one line too and exit non-zero, without a backtrace.
    let run = weir(&kc, &["promote"]).await;
    assert_ne!(run.code, 0);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

#[tokio::test]
async fn version_completion_and_help_through_kubectl() {
    let c = Cluster::start("plugin-version").await;
    let kc = c.kubeconfig.clone();
    let run = kubectl_weir(&kc, &["version"]).await;
    assert_eq!(
        ok(&run),
        format!(
            "kubectl-weir {} (API weir.io/v1alpha1)\n",
            env!("CARGO_PKG_VERSION")
        )
    );
    for shell in ["bash", "zsh", "fish"] {
        let run = weir(&kc, &["completion", shell]).await;
        let script = ok(&run);
        assert!(
            script.contains("kubectl-weir") && script.contains("promote"),
            "{shell}: {script}"
        );
    }
    refused(
        &weir(&kc, &["completion", "tcsh"]).await.into_clap(),
        "tcsh",
    );
    for verb in [
        "get",
        "list",
        "status",
        "promote",
        "abort",
        "retry",
        "pause",
        "resume",
        "lint",
        "analyze",
        "history",
        "version",
        "completion",
    ] {
        let run = kubectl_weir(&kc, &[verb, "--help"]).await;
        assert!(
            ok(&run).contains("Examples:"),
            "{verb} --help has examples: {}",
            run.stdout
        );
    }
}

trait IntoClap {
    /// clap reports usage errors with exit 2 and several lines; normalise to what `refused` checks.
    fn into_clap(self) -> Run;
}

impl IntoClap for Run {
    fn into_clap(self) -> Run {
        assert_eq!(self.code, 2, "clap usage error: {}", self.stderr);
        let first = self.stderr.lines().next().unwrap_or_default().to_string();
        Run {
            code: 1,
            stdout: self.stdout,
            stderr: format!("{first}\n"),
        }
    }
}

/// Runs the plugin on a pseudo-terminal (util-linux `script`), as a person at a shell would.
async fn on_terminal(kubeconfig: &Path, args: &str, env: &[(&str, &str)]) -> String {
    let command = format!(
        "'{}' {args} --kubeconfig '{}'",
        plugin().display(),
        kubeconfig.display()
    );
    let mut cmd = tokio::process::Command::new("script");
    cmd.args(["-qec", &command, "/dev/null"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let run = output(cmd, &format!("script -c {command:?}")).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    run.stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn colour_on_a_terminal_only_and_never_with_no_color() {
    let e = env("plugin-colour").await;
    let c = &e.c;
    let kc = c.kubeconfig.clone();
    let steps: Value = serde_json::from_str(STEPS).unwrap();
    apply(&rollouts(c), rollout("web:1", "c0ffee1", steps)).await;
    wait_status(c, "v1 Healthy", |s| s["phase"] == "Healthy").await;

    let coloured = on_terminal(&kc, "status web", &[]).await;
    assert!(coloured.contains("\x1b[32mHealthy\x1b[0m"), "{coloured:?}");
    let tree = on_terminal(&kc, "get rollout web", &[]).await;
    assert!(tree.contains("\x1b[32mHealthy\x1b[0m"), "{tree:?}");
    for (args, env) in [
        ("status web --no-color", &[][..]),
        ("get rollout web --no-color", &[][..]),
        ("get rollout web", &[("NO_COLOR", "1")][..]),
    ] {
        let plain = on_terminal(&kc, args, env).await;
        assert!(
            plain.contains("Healthy") && !plain.contains('\x1b'),
            "{args}: {plain:?}"
        );
    }
    // Piped, as in a CI log: plain.
    let piped = weir(&kc, &["status", "web"]).await;
    assert!(
        ok(&piped).starts_with("rollout default/web: Healthy: ") && !piped.stdout.contains('\x1b')
    );
}
