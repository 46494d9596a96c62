//! Canary rollback with Git revert: a GitSync applies the app from a `git daemon` remote; the app
//! runs as two `weir demo-app` processes (a healthy 3.9, a 3.10 failing half its requests) under
//! load from `weir demo-load`, split by the live HTTPRoute, and Prometheus scrapes them. The bad
//! release fails its analysis on real metrics: traffic goes back to stable, weir pushes exactly one
//! revert commit naming the bad commit, the Rollout ends Healthy on stable, and
//! `kubectl weir get rollout` shows the revert.

use std::process::Stdio;

use serde_json::Value;
use tokio::process::{Child, Command};

use crate::canary_app::WEB;
use crate::git_remote::{Daemon, Fixture};
use crate::harness::{Env, HTTP_ROUTE, V1, V2, WAIT, announced_line, services};
use crate::prometheus::{Prometheus, error_rate_template};
use crate::support::wait_for;

/// The app version each image runs: its tag, which is how `weir demo-load` finds the process.
const GOOD: &str = "3.9";
const BAD: &str = "3.10";

/// `weir demo-app` for one version; returns the process and the address it serves on.
async fn app(version: &str, error_rate: f64) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["demo-app", "--version", version, "--error-rate"])
        .arg(error_rate.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start weir demo-app");
    let line = announced_line(&mut child, "weir demo-app").await;
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line from weir demo-app: {line}"))
        .to_owned();
    (child, addr)
}

/// The app in Git: Rollout `web` running `image`, whose analysis asks `prometheus` about `version`.
fn files(image: &str, version: &str, prometheus: &str) -> Vec<(&'static str, String)> {
    vec![
        ("apps/web/rollout.yaml", WEB.rollout_yaml(image, version)),
        (
            "apps/web/services.yaml",
            services(&["web-stable", "web-canary"]),
        ),
        ("apps/web/route.yaml", HTTP_ROUTE.to_owned()),
        (
            "apps/web/analysis.yaml",
            error_rate_template(prometheus, "10s", "5s"),
        ),
    ]
}

/// The value of a one-element instant vector, or None while Prometheus has no answer.
async fn query(prometheus: &Prometheus, promql: &str) -> Option<f64> {
    let body: Value = reqwest::Client::new()
        .get(format!("{}/api/v1/query", prometheus.url()))
        .query(&[("query", promql)])
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

fn progressing_reason(s: &Value) -> Option<&str> {
    s["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Progressing")?["reason"]
        .as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_rollback_with_git_revert() {
    let env = Env::start("rollback").await;
    let (_good_app, good_addr) = app(GOOD, 0.0).await;
    let (_bad_app, bad_addr) = app(BAD, 0.5).await;
    let prometheus = Prometheus::scraping_all(&[&good_addr, &bad_addr]).await;
    prometheus.wait_for_scrapes().await;
    let _load = Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("demo-load")
        .arg("--kubeconfig")
        .arg(&env.kubeconfig)
        .args(["--namespace", &env.ns, "--rate", "40"])
        .arg("--app")
        .arg(format!("{GOOD}={good_addr}"))
        .arg("--app")
        .arg(format!("{BAD}={bad_addr}"))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start weir demo-load");

    let fx = Fixture::new("e2e-rollback");
    let daemon = Daemon::start(&fx.served).await;
    let good = fx.commit_owned("web 3.9", &files(V1, GOOD, &prometheus.url()));
    env.apply(&format!(
        "apiVersion: weir.io/v1alpha1\nkind: GitSync\nmetadata:\n  name: apps\nspec:\n  url: {}\n  ref: {{branch: main}}\n  path: apps\n  interval: 1s\n  prune: true\n  revert:\n    author: {{name: weir bot, email: bot@weir.example}}\n",
        daemon.url("apps.git")
    ))
    .await;
    let _weir = env.weir_run();
    let stable = env
        .wait_status("web 3.9 Healthy from Git", |s| {
            s["phase"] == "Healthy" && s["stableCommit"] == good.as_str()
        })
        .await;
    let stable_hash = stable["stableRS"].as_str().expect("stableRS").to_owned();

    let bad = fx.commit_owned("web 3.10", &files(V2, BAD, &prometheus.url()));
    let aborted = env
        .wait_status("the release aborted by its failed analysis", |s| {
            s["abort"] == true && progressing_reason(s) == Some("AnalysisRunFailed")
        })
        .await;
    assert_ne!(aborted["currentPodHash"], stable_hash.as_str());
    // The analysis judged real traffic: about half of the canary's requests failed.
    let runs = env.api("weir.io", "v1alpha1", "AnalysisRun", "analysisruns");
    let failed: Vec<Value> = runs
        .list(&Default::default())
        .await
        .expect("list AnalysisRuns")
        .items
        .into_iter()
        .filter_map(|r| serde_json::to_value(r).ok())
        .filter(|r| r["status"]["phase"] == "Failed")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    let measured = failed[0]["status"]["metricResults"][0]["measurements"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["value"].as_str())
        .unwrap_or_default()
        .trim_matches(|c| c == '[' || c == ']')
        .parse::<f64>()
        .unwrap_or(f64::NAN);
    assert!(
        (0.2..0.8).contains(&measured),
        "error rate measured from the app's /metrics: {measured} in {}",
        failed[0]
    );
    wait_for("traffic back on stable", WAIT, || async {
        (env.http_route_weights().await == (100, 0)).then_some(())
    })
    .await;
    // What the users feel: the bad version stops getting requests, the good one serves them all.
    wait_for("the bad version's requests stopping", WAIT, || async {
        let bad = query(
            &prometheus,
            &format!("sum(increase(http_requests_total{{version=\"{BAD}\"}}[3s]))"),
        )
        .await?;
        let good = query(
            &prometheus,
            &format!("sum(increase(http_requests_total{{version=\"{GOOD}\"}}[3s]))"),
        )
        .await?;
        (bad == 0.0 && good > 0.0).then_some(())
    })
    .await;

    let reverts = wait_for("weir's revert commit on the remote", WAIT, || async {
        let after = fx.commits_after(&bad);
        (!after.is_empty()).then_some(after)
    })
    .await;
    let end = env
        .wait_status("Healthy on stable after the revert", |s| {
            s["phase"] == "Healthy"
                && s["currentPodHash"] == stable_hash.as_str()
                && s["gitRevert"]["state"] == "Pushed"
        })
        .await;
    let reverts_now = fx.commits_after(&bad);
    assert_eq!(reverts_now, reverts, "exactly one revert commit");
    let [(revert, message)] = reverts_now.as_slice() else {
        panic!("expected one revert commit after {bad}, found {reverts_now:?}");
    };
    assert!(
        message.contains(&format!("This reverts commit {bad}")),
        "{message}"
    );
    assert_eq!(end["gitRevert"]["revertCommit"], revert.as_str());
    let image = fx.remote_git(&["show", "main:apps/web/rollout.yaml"]);
    assert!(
        image.contains(V1),
        "Git declares the stable image again: {image}"
    );
    let rollout = env.get(&env.rollouts(), "web").await.expect("Rollout web");
    assert_eq!(
        rollout["spec"]["template"]["spec"]["containers"][0]["image"],
        V1
    );
    assert_eq!(env.http_route_weights().await, (100, 0));

    let tree = env.kubectl_weir_ok(&["get", "rollout", "web"]).await;
    let revert_line = tree
        .lines()
        .find(|l| l.starts_with("GitRevert:"))
        .unwrap_or_else(|| panic!("no GitRevert line in:\n{tree}"));
    assert!(revert_line.contains("Pushed"), "{tree}");
    assert!(
        tree.contains(&bad[..12]) && tree.contains(&revert[..12]),
        "{tree}"
    );
    assert!(tree.contains("Healthy"), "{tree}");
}
