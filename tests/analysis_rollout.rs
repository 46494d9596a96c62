//! A canary judged by a real Prometheus scraping a real `/metrics` endpoint: a version whose error rate
//! is over the threshold aborts at the analysis step; a healthy one completes.

#[path = "support/prometheus.rs"]
mod prometheus;
mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Cluster, api, apply, apply_web_network, web_route_rules, web_status};

fn rollout(version: &str) -> Value {
    json!({
        "apiVersion": "weir.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": format!("web:{version}")}]}},
            "strategy": {"canary": {"stableService": "web-stable", "canaryService": "web-canary", "abortScaleDownDelaySeconds": 1, "scaleDownDelaySeconds": 1,
                "trafficRouting": {"gatewayAPI": {"httpRoutes": [{"name": "web"}]}},
                "steps": [{"setWeight": 50},
                          {"analysis": {"templates": [{"templateName": "error-rate"}], "args": [{"name": "version", "value": version}]}},
                          {"setWeight": 100}]}}}
    })
}

async fn setup(
    tag: &str,
) -> (
    Cluster,
    prometheus::Prometheus,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let (target, app) = prometheus::two_version_app().await;
    let prom = prometheus::Prometheus::scraping(&target).await;
    prom.wait_for_scrapes().await;
    let c = Cluster::start(tag).await;
    c.install_crds().await;
    let tasks = vec![
        app,
        tokio::spawn(weir::rollout::controller::run(c.client())),
        tokio::spawn(weir::analysis::controller::run(c.client())),
    ];
    apply_web_network(&c, None).await;
    let query = prometheus::error_rate_query("5s");
    apply(&api(&c, "weir.io", "v1alpha1", "AnalysisTemplate", "analysistemplates"), json!({"apiVersion": "weir.io/v1alpha1", "kind": "AnalysisTemplate",
        "metadata": {"name": "error-rate"},
        "spec": {"args": [{"name": "version"}],
            "metrics": [{"name": "error-rate", "interval": "1s", "count": 3, "initialDelay": "3s", "failureLimit": 0,
                "successCondition": "result[0] < 0.05",
                "provider": {"prometheus": {"address": prom.url(), "query": query}}}]}})).await;
    (c, prom, tasks)
}

async fn wait_phase(c: &Cluster, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let s = web_status(c).await;
        if f(&s) {
            return s;
        }
        if Instant::now() > deadline {
            let runs = api(c, "weir.io", "v1alpha1", "AnalysisRun", "analysisruns")
                .list(&Default::default())
                .await
                .unwrap();
            let runs: Vec<Value> = runs
                .items
                .iter()
                .map(|r| json!({"name": r.metadata.name, "status": r.data["status"]}))
                .collect();
            panic!("timed out waiting for {what}; status: {s}; runs: {runs:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run_of(c: &Cluster, s: &Value) -> Value {
    let name = s["canary"]["currentStepAnalysisRunStatus"]["name"]
        .as_str()
        .expect("step analysis run recorded")
        .to_string();
    let run = api(c, "weir.io", "v1alpha1", "AnalysisRun", "analysisruns")
        .get(&name)
        .await
        .unwrap();
    run.data["status"].clone()
}

fn assert_measurements_explain_the_decision(run: &Value, want_phase: &str) {
    let m = &run["metricResults"][0];
    assert_eq!(m["name"], "error-rate");
    let measurements = m["measurements"].as_array().expect("measurements");
    assert!(!measurements.is_empty());
    for x in measurements {
        for field in ["value", "phase", "startedAt", "finishedAt"] {
            assert!(
                x.get(field).is_some_and(|v| !v.is_null()),
                "measurement lacks {field}: {x}"
            );
        }
    }
    assert_eq!(measurements.last().unwrap()["phase"], want_phase, "{run}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_with_a_high_error_rate_aborts_at_the_analysis_step() {
    let (c, _prom, tasks) = setup("analysis-bad").await;
    let ro = api(&c, "weir.io", "v1alpha1", "Rollout", "rollouts");
    apply(&ro, rollout("good")).await;
    wait_phase(&c, "first revision Healthy", |s| s["phase"] == "Healthy").await;
    apply(&ro, rollout("bad")).await;
    let s = wait_phase(&c, "aborted by analysis", |s| s["phase"] == "Degraded").await;
    assert_eq!(s["currentStepIndex"], 1, "stopped at the analysis step");
    assert_eq!(s["weights"], json!({"canary": 0, "stable": 100}));
    assert!(
        s["message"].as_str().unwrap().contains("error-rate"),
        "the message names the metric: {s}"
    );
    let run = run_of(&c, &s).await;
    assert_eq!(run["phase"], "Failed");
    assert!(
        run["message"].as_str().unwrap().contains("0.5"),
        "the run message has the measured value: {run}"
    );
    assert_measurements_explain_the_decision(&run, "Failed");
    let rules = web_route_rules(&c).await;
    assert_eq!(
        rules[0]["backendRefs"][1]["weight"], 0,
        "route back on stable"
    );
    for t in tasks {
        t.abort();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_canary_passes_analysis_and_completes() {
    let (c, _prom, tasks) = setup("analysis-good").await;
    let ro = api(&c, "weir.io", "v1alpha1", "Rollout", "rollouts");
    let mut first = rollout("good");
    first["spec"]["template"]["spec"]["containers"][0]["image"] = json!("web:good-old");
    apply(&ro, first).await;
    let s0 = wait_phase(&c, "first revision Healthy", |s| s["phase"] == "Healthy").await;
    apply(&ro, rollout("good")).await;
    let s = wait_phase(&c, "completed on the new revision", |s| {
        s["phase"] == "Healthy" && s["stableRS"] != s0["stableRS"]
    })
    .await;
    assert_eq!(s["weights"]["canary"], 0);
    let run = run_of(&c, &s).await;
    assert_eq!(run["phase"], "Successful", "{run}");
    assert_eq!(run["metricResults"][0]["count"], 3);
    assert_measurements_explain_the_decision(&run, "Successful");
    for t in tasks {
        t.abort();
    }
}
