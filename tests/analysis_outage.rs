//! Metrics that stop coming never promote a release: a Prometheus that goes away mid-analysis, or
//! one that answers slower than the query timeout, ends the analysis in Error after
//! `consecutiveErrorLimit`, and the Rollout goes back to stable.

#[path = "support/prometheus.rs"]
mod prometheus;
mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Cluster, api, apply, apply_web_network, wait_for, wait_web_status, web_route_rules};

const WAIT: Duration = Duration::from_secs(90);

fn rollout(image: &str) -> Value {
    json!({
        "apiVersion": "weir.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": image}]}},
            "strategy": {"canary": {"stableService": "web-stable", "canaryService": "web-canary", "abortScaleDownDelaySeconds": 1, "scaleDownDelaySeconds": 1,
                "trafficRouting": {"gatewayAPI": {"httpRoutes": [{"name": "web"}]}},
                "steps": [{"setWeight": 50},
                          {"analysis": {"templates": [{"templateName": "error-rate"}], "args": [{"name": "version", "value": "good"}]}},
                          {"setWeight": 100}]}}}
    })
}

/// A cluster with weir's controllers, the Services and route, and an error-rate template that
/// asks `address` every second, 30 times, tolerating two errors in a row.
async fn world(tag: &str, address: &str) -> (Cluster, Vec<tokio::task::JoinHandle<()>>) {
    let c = Cluster::start(tag).await;
    c.install_crds().await;
    let tasks = vec![
        tokio::spawn(weir::rollout::controller::run(c.client())),
        tokio::spawn(weir::analysis::controller::run(c.client())),
    ];
    apply_web_network(&c, None).await;
    let query = prometheus::error_rate_query("5s");
    apply(&api(&c, "weir.io", "v1alpha1", "AnalysisTemplate", "analysistemplates"), json!({"apiVersion": "weir.io/v1alpha1", "kind": "AnalysisTemplate",
        "metadata": {"name": "error-rate"},
        "spec": {"args": [{"name": "version"}],
            "metrics": [{"name": "error-rate", "interval": "1s", "count": 30, "consecutiveErrorLimit": 2,
                "successCondition": "result[0] < 0.05",
                "provider": {"prometheus": {"address": address, "query": query, "timeout": "1s"}}}]}})).await;
    (c, tasks)
}

async fn run_phase(c: &Cluster) -> Option<String> {
    let runs = api(c, "weir.io", "v1alpha1", "AnalysisRun", "analysisruns");
    let list = runs.list(&Default::default()).await.ok()?;
    list.items
        .first()
        .and_then(|r| r.data["status"]["phase"].as_str().map(str::to_string))
}

/// Aborted on an Error run, traffic on stable, and the stable revision still the old one.
async fn assert_back_on_stable(c: &Cluster, stable: &str) {
    let s = wait_web_status(c, "aborted by the analysis error", WAIT, |s| {
        s["abort"] == true && s["phase"] == "Degraded"
    })
    .await;
    assert_eq!(run_phase(c).await.as_deref(), Some("Error"));
    assert_eq!(s["stableRS"], stable, "never promoted");
    assert_eq!(s["weights"]["canary"], 0);
    let canary = web_route_rules(c).await[0]["backendRefs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "web-canary")
        .map(|r| r["weight"].clone());
    assert_eq!(canary, Some(json!(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_going_away_mid_analysis_aborts_and_never_promotes() {
    let (target, _app) = prometheus::two_version_app().await;
    let mut prom = prometheus::Prometheus::scraping(&target).await;
    prom.wait_for_scrapes().await;
    let (c, _tasks) = world("outage-prom", &prom.url()).await;
    let ro = api(&c, "weir.io", "v1alpha1", "Rollout", "rollouts");
    apply(&ro, rollout("web:1")).await;
    let first = wait_web_status(&c, "web:1 Healthy", WAIT, |s| s["phase"] == "Healthy").await;
    let stable = first["stableRS"].as_str().unwrap().to_string();

    apply(&ro, rollout("web:2")).await;
    // The analysis is under way and passing when Prometheus goes away.
    wait_for("a successful measurement", WAIT, || async {
        let runs = api(&c, "weir.io", "v1alpha1", "AnalysisRun", "analysisruns");
        let list = runs.list(&Default::default()).await.ok()?;
        let ok = list.items.iter().any(|r| {
            r.data["status"]["metricResults"][0]["successful"]
                .as_i64()
                .unwrap_or(0)
                >= 1
        });
        ok.then_some(())
    })
    .await;
    prom.stop().await;
    assert_back_on_stable(&c, &stable).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_slower_than_the_timeout_aborts_and_never_promotes() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let _silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let (c, _tasks) = world("outage-slow", &address).await;
    let ro = api(&c, "weir.io", "v1alpha1", "Rollout", "rollouts");
    apply(&ro, rollout("web:1")).await;
    let first = wait_web_status(&c, "web:1 Healthy", WAIT, |s| s["phase"] == "Healthy").await;
    let stable = first["stableRS"].as_str().unwrap().to_string();
    apply(&ro, rollout("web:2")).await;
    assert_back_on_stable(&c, &stable).await;
    let runs = api(&c, "weir.io", "v1alpha1", "AnalysisRun", "analysisruns");
    let run = runs
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .remove(0);
    let message = run.data["status"]["metricResults"][0]["measurements"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        !message.is_empty(),
        "the error says why: {}",
        run.data["status"]
    );
}
