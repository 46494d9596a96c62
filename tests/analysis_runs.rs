//! AnalysisRuns driven end to end: the AnalysisRun controller runs in process against the
//! emulator, a real `prometheus` serving deterministic data built by `promtool`, an
//! authenticating proxy in front of it, and a local JSON endpoint. Each test creates runs
//! directly (no Rollout) and checks what a user reads in the run's status: the verdict, the
//! message that explains it, and every measurement with its value, phase and timestamps.

#[path = "support/prometheus.rs"]
mod prometheus;
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::runtime::watcher;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use prometheus::{Prometheus, unix_now};
use support::{Cluster, repo_root, wait_for};
use weir::api::analysis::AnalysisRun;

const NAMESPACE: &str = "default";
/// The bearer token the proxy in front of Prometheus demands, kept in a Secret.
const TOKEN: &str = "pr0m-t0ken-9d2e41";
/// A label value read from a Secret through an argument; it must never be stored in a run.
const TENANT: &str = "t3nant-5ecret-7f3a";
/// Longest any run in this file may take to reach a verdict.
const VERDICT_TIMEOUT: Duration = Duration::from_secs(30);

/// Gauges 90s and 30s before now, so that an instant query at now sees the later sample.
fn openmetrics() -> String {
    let now = unix_now();
    let (early, late) = (now - 90, now - 30);
    format!(
        "# HELP weir_error_ratio Share of requests that failed.\n\
         # TYPE weir_error_ratio gauge\n\
         weir_error_ratio{{service=\"checkout\"}} 0.2 {early}\n\
         weir_error_ratio{{service=\"checkout\"}} 0.01 {late}\n\
         weir_error_ratio{{service=\"billing\"}} 0.05 {late}\n\
         # HELP weir_tenant_error_ratio Share of a tenant's requests that failed.\n\
         # TYPE weir_tenant_error_ratio gauge\n\
         weir_tenant_error_ratio{{tenant=\"{TENANT}\"}} 0.02 {late}\n\
         # HELP weir_requests_per_second Request rate.\n\
         # TYPE weir_requests_per_second gauge\n\
         weir_requests_per_second{{service=\"idle\"}} 0 {late}\n\
         # HELP weir_errors_per_second Error rate.\n\
         # TYPE weir_errors_per_second gauge\n\
         weir_errors_per_second{{service=\"idle\"}} 0 {late}\n\
         # EOF\n"
    )
}

/// An emulator with the CRDs installed and the AnalysisRun controller running against it.
struct Harness {
    cluster: Cluster,
    runs: Api<DynamicObject>,
    controller: JoinHandle<()>,
}

impl Harness {
    async fn start(tag: &str) -> Self {
        let cluster = Cluster::start(tag).await;
        let crds = repo_root().join("crds");
        cluster
            .kubectl_ok(&["apply", "-f", crds.to_str().unwrap()])
            .await;
        let controller = tokio::spawn(weir::analysis::controller::run(cluster.client()));
        let runs = Api::namespaced_with(
            cluster.client(),
            NAMESPACE,
            &ApiResource::erase::<AnalysisRun>(&()),
        );
        Harness {
            cluster,
            runs,
            controller,
        }
    }

    async fn secret(&self, name: &str, data: &[(&str, &str)]) {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            data: Some(
                data.iter()
                    .map(|(key, value)| (key.to_string(), ByteString(value.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        };
        Api::<Secret>::namespaced(self.cluster.client(), NAMESPACE)
            .create(&PostParams::default(), &secret)
            .await
            .unwrap_or_else(|e| panic!("create Secret {name}: {e}"));
    }

    async fn create_run(&self, name: &str, spec: Value) {
        let run: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "weir.io/v1alpha1",
            "kind": "AnalysisRun",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": spec,
        }))
        .unwrap();
        self.runs
            .create(&PostParams::default(), &run)
            .await
            .unwrap_or_else(|e| panic!("create AnalysisRun {name}: {e}"));
    }

    /// The run as the API serves it, once `check` accepts its status.
    async fn run_when(&self, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        wait_for(
            &format!("AnalysisRun {name}: {what}"),
            VERDICT_TIMEOUT,
            || async {
                let run = self.runs.get(name).await.ok()?;
                let run = serde_json::to_value(run).unwrap();
                check(&run["status"]).then_some(run)
            },
        )
        .await
    }

    /// The run as the API serves it, once it has a verdict.
    async fn verdict(&self, name: &str) -> Value {
        self.run_when(name, "a verdict", |status| {
            matches!(
                status["phase"].as_str(),
                Some("Successful" | "Failed" | "Error" | "Inconclusive")
            )
        })
        .await
    }

    /// Every status the run is written with, from before it exists until it has a verdict.
    /// Returns once the watch is established, so a run created afterwards is seen from the start.
    async fn watch_statuses(&self, name: &str) -> JoinHandle<Vec<Value>> {
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut events = watcher(self.runs.clone(), config).boxed();
        let (ready, established) = tokio::sync::oneshot::channel();
        let collect = tokio::spawn(async move {
            let mut ready = Some(ready);
            let mut statuses: Vec<Value> = Vec::new();
            while let Some(event) = events.next().await {
                let run = match event.expect("watch AnalysisRuns") {
                    watcher::Event::InitDone => {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(());
                        }
                        continue;
                    }
                    watcher::Event::Apply(run) | watcher::Event::InitApply(run) => run,
                    watcher::Event::Init | watcher::Event::Delete(_) => continue,
                };
                let status = serde_json::to_value(&run).unwrap()["status"].clone();
                let done = status["phase"]
                    .as_str()
                    .is_some_and(|p| !matches!(p, "Pending" | "Running"));
                if !status.is_null() {
                    statuses.push(status);
                }
                if done {
                    break;
                }
            }
            statuses
        });
        established.await.expect("watch established");
        collect
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.controller.abort();
    }
}

fn timestamp(text: &Value, what: &str) -> jiff::Timestamp {
    text.as_str()
        .unwrap_or_else(|| panic!("{what} is missing"))
        .parse()
        .unwrap_or_else(|e| panic!("{what} {text}: {e}"))
}

/// What a user needs to see why the run decided: every measurement has a phase, a value (or,
/// for an error, a message) and its start and finish times, in order, at least `interval`
/// apart.
fn assert_measurements_explain(case: &str, result: &Value, interval: Option<Duration>) {
    let measurements = result["measurements"]
        .as_array()
        .unwrap_or_else(|| panic!("{case}: no measurements in {result}"));
    let mut previous_finish: Option<jiff::Timestamp> = None;
    for (index, m) in measurements.iter().enumerate() {
        let what = format!("{case}: measurement {index} {m}");
        let phase = m["phase"].as_str().unwrap_or_else(|| panic!("{what}"));
        if phase == "Error" {
            assert!(m["message"].is_string(), "{what} has no message");
        } else {
            assert!(m["value"].is_string(), "{what} has no value");
        }
        let started = timestamp(&m["startedAt"], &format!("{what} startedAt"));
        let finished = timestamp(&m["finishedAt"], &format!("{what} finishedAt"));
        assert!(started <= finished, "{what}");
        if let (Some(previous), Some(interval)) = (previous_finish, interval) {
            let gap = previous.duration_until(started);
            assert!(
                gap >= jiff::SignedDuration::try_from(interval).unwrap(),
                "{what}: only {gap:?} after the previous one"
            );
        }
        previous_finish = Some(finished);
    }
}

fn phases(result: &Value) -> Vec<&str> {
    result["measurements"]
        .as_array()
        .map(|ms| ms.iter().filter_map(|m| m["phase"].as_str()).collect())
        .unwrap_or_default()
}

fn contains_all(case: &str, what: &str, text: &Value, fragments: &[&str]) {
    let text = text
        .as_str()
        .unwrap_or_else(|| panic!("{case}: {what} missing"));
    for fragment in fragments {
        assert!(
            text.contains(fragment),
            "{case}: {what} {text:?} lacks {fragment:?}"
        );
    }
}

/// Adds `fields` to a JSON object.
fn with(mut base: Value, fields: Value) -> Value {
    if let (Some(target), Value::Object(extra)) = (base.as_object_mut(), fields) {
        target.extend(extra);
    }
    base
}

fn prometheus_metric(address: &str, query: &str) -> Value {
    json!({
        "name": "error-rate",
        "provider": {"prometheus": {"address": address, "query": query, "timeout": "5s"}},
    })
}

/// Forwards to Prometheus only requests that carry `Authorization: Bearer TOKEN`.
async fn bearer_proxy(
    State(upstream): State<Arc<(String, reqwest::Client)>>,
    request: Request,
) -> Response {
    let (prometheus, client) = upstream.as_ref();
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if authorization != Some(format!("Bearer {TOKEN}").as_str()) {
        return (StatusCode::UNAUTHORIZED, "unauthorized\n").into_response();
    }
    let method = request.method().clone();
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let content_type = request.headers().get(header::CONTENT_TYPE).cloned();
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .expect("request body");
    let mut forward = client
        .request(method, format!("{prometheus}{path}"))
        .body(body);
    if let Some(content_type) = content_type {
        forward = forward.header(header::CONTENT_TYPE, content_type);
    }
    let answer = forward.send().await.expect("forward to prometheus");
    let status = answer.status();
    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
    let bytes = answer.bytes().await.expect("prometheus body");
    let mut response = (status, bytes).into_response();
    if let Some(content_type) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    response
}

async fn serve(router: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{address}")
}

/// One run against the deterministic Prometheus and what its status must show.
struct Case {
    name: &'static str,
    spec: Value,
    phase: &'static str,
    /// Phases of the measurements, oldest first.
    measurements: &'static [&'static str],
    /// The value every non-error measurement shows.
    value: Option<&'static str>,
    /// Fragments of the run's message (which is the deciding metric's).
    message: Vec<String>,
    interval: Option<Duration>,
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_runs_end_with_the_verdict_their_measurements_explain() {
    let server = Prometheus::start(&openmetrics()).await;
    // The proxy's own client needs a process crypto provider, as weir's does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let proxy = serve(
        Router::new()
            .fallback(any(bearer_proxy))
            .with_state(Arc::new((server.url(), reqwest::Client::new()))),
    )
    .await;
    let h = Harness::start("analysis-runs").await;
    h.secret(
        "prometheus",
        &[("token", &format!("{TOKEN}\n")), ("tenant", TENANT)],
    )
    .await;

    let prom = server.url();
    let checkout = r#"weir_error_ratio{service="checkout"}"#;
    let billing = r#"weir_error_ratio{service="billing"}"#;
    let below = json!({"successCondition": "result[0] < 0.05"});
    let every_second = |count: i64| json!({"interval": "1s", "count": count});
    let bearer = json!({"bearer": {"secretRef": {"name": "prometheus", "key": "token"}}});
    let one_second = Some(Duration::from_secs(1));
    let cases = [
        Case {
            name: "success",
            spec: json!({"metrics": [with(
                with(prometheus_metric(&prom, checkout), below.clone()),
                every_second(3),
            )]}),
            phase: "Successful",
            measurements: &["Successful"; 3],
            value: Some("[0.01]"),
            message: vec![r#"error-rate: [0.01] passed "result[0] < 0.05" (3 of 3 successful)"#.into()],
            interval: one_second,
        },
        Case {
            name: "failure-at-the-limit",
            spec: json!({"metrics": [with(
                with(prometheus_metric(&prom, billing), below.clone()),
                with(every_second(5), json!({"failureLimit": 1})),
            )]}),
            phase: "Failed",
            measurements: &["Failed", "Failed"],
            value: Some("[0.05]"),
            message: vec![
                r#"error-rate: [0.05] failed "result[0] < 0.05" (failed 2 > failureLimit 1)"#.into(),
            ],
            interval: one_second,
        },
        Case {
            name: "inconclusive",
            spec: json!({"metrics": [with(prometheus_metric(&prom, billing), json!({
                "successCondition": "result[0] < 0.01",
                "failureCondition": "result[0] > 0.1",
            }))]}),
            phase: "Inconclusive",
            measurements: &["Inconclusive"],
            value: Some("[0.05]"),
            message: vec![
                r#"error-rate: [0.05] met neither successCondition "result[0] < 0.01" nor failureCondition "result[0] > 0.1""#.into(),
                "(inconclusive 1 > inconclusiveLimit 0)".into(),
            ],
            interval: None,
        },
        Case {
            name: "empty-vector",
            spec: json!({"metrics": [with(
                prometheus_metric(&prom, r#"weir_error_ratio{service="missing"}"#),
                below.clone(),
            )]}),
            phase: "Inconclusive",
            measurements: &["Inconclusive"],
            value: Some("[]"),
            message: vec!["error-rate: query returned no data".into()],
            interval: None,
        },
        Case {
            name: "nan",
            spec: json!({"metrics": [with(
                prometheus_metric(
                    &prom,
                    r#"weir_errors_per_second{service="idle"} / weir_requests_per_second{service="idle"}"#,
                ),
                below.clone(),
            )]}),
            phase: "Inconclusive",
            measurements: &["Inconclusive"],
            value: Some("[NaN]"),
            message: vec!["error-rate: result is NaN".into()],
            interval: None,
        },
        Case {
            name: "syntax-error",
            spec: json!({"metrics": [with(
                with(prometheus_metric(&prom, "sum(weir_error_ratio"), below.clone()),
                with(every_second(3), json!({"consecutiveErrorLimit": 1})),
            )]}),
            phase: "Error",
            measurements: &["Error", "Error"],
            value: None,
            message: vec![
                "error-rate: Prometheus rejected the query: bad_data:".into(),
                "unclosed left parenthesis".into(),
                "(consecutiveError 2 > consecutiveErrorLimit 1)".into(),
            ],
            interval: one_second,
        },
        Case {
            name: "bearer-through-proxy",
            spec: json!({"metrics": [with(prometheus_metric(&proxy, checkout), json!({
                "successCondition": "result[0] < 0.05",
                "provider": {"prometheus": {
                    "address": proxy, "query": checkout, "timeout": "5s", "authentication": bearer,
                }},
            }))]}),
            phase: "Successful",
            measurements: &["Successful"],
            value: Some("[0.01]"),
            message: vec![r#"error-rate: [0.01] passed "result[0] < 0.05" (1 of 1 successful)"#.into()],
            interval: None,
        },
        Case {
            name: "proxy-without-credentials",
            spec: json!({"metrics": [with(
                with(prometheus_metric(&proxy, checkout), below.clone()),
                json!({"consecutiveErrorLimit": 0}),
            )]}),
            phase: "Error",
            measurements: &["Error"],
            value: None,
            message: vec![format!(
                "error-rate: Prometheus at {proxy}/ answered HTTP 401 Unauthorized"
            )],
            interval: None,
        },
        Case {
            name: "secret-argument",
            spec: json!({
                "args": [{"name": "tenant", "valueFrom": {"secretKeyRef": {"name": "prometheus", "key": "tenant"}}}],
                "metrics": [with(
                    prometheus_metric(&prom, r#"weir_tenant_error_ratio{tenant="{{args.tenant}}"}"#),
                    below.clone(),
                )],
            }),
            phase: "Successful",
            measurements: &["Successful"],
            value: Some("[0.02]"),
            message: vec![r#"error-rate: [0.02] passed "result[0] < 0.05""#.into()],
            interval: None,
        },
    ];

    // The failure-at-the-limit run is watched from before it exists, to see every status it
    // was written with; the others are only read once they have a verdict.
    let history = h.watch_statuses("failure-at-the-limit").await;
    for case in &cases {
        h.create_run(case.name, case.spec.clone()).await;
    }
    let runs = futures::future::join_all(cases.iter().map(|case| h.verdict(case.name))).await;

    for (case, run) in cases.iter().zip(&runs) {
        let name = case.name;
        let status = &run["status"];
        let text = run.to_string();
        assert_eq!(status["phase"], case.phase, "{name}: {status:#}");
        let fragments: Vec<&str> = case.message.iter().map(String::as_str).collect();
        contains_all(name, "run message", &status["message"], &fragments);
        timestamp(&status["startedAt"], &format!("{name}: run startedAt"));
        let result = &status["metricResults"][0];
        assert_eq!(result["name"], "error-rate", "{name}");
        assert_eq!(result["phase"], case.phase, "{name}: metric phase");
        assert_eq!(result["message"], status["message"], "{name}");
        assert_eq!(phases(result), case.measurements, "{name}: {result:#}");
        let errors = case.measurements.iter().filter(|p| **p == "Error").count();
        assert_eq!(
            result["count"],
            case.measurements.len() - errors,
            "{name}: errors do not count"
        );
        assert_eq!(result["error"], errors, "{name}");
        if let Some(value) = case.value {
            for m in result["measurements"].as_array().unwrap() {
                assert_eq!(m["value"], value, "{name}: {m}");
            }
        }
        assert_measurements_explain(name, result, case.interval);
        let summary = &status["runSummary"];
        assert_eq!(summary["count"], 1, "{name}: {summary}");
        for secret in [TOKEN, TENANT] {
            assert!(
                !text.contains(secret),
                "{name}: a secret is in the run: {text}"
            );
        }
    }

    // The run failed when the second failed measurement was recorded, not at the first.
    let history = tokio::time::timeout(VERDICT_TIMEOUT, history)
        .await
        .expect("watch ends with the verdict")
        .expect("watch task");
    let seen: Vec<(i64, &str)> = history
        .iter()
        .filter_map(|s| {
            let failed = s["metricResults"][0]["failed"].as_i64()?;
            Some((failed, s["phase"].as_str()?))
        })
        .collect();
    assert!(
        seen.contains(&(1, "Running")),
        "one failed measurement is within failureLimit 1: {seen:?}"
    );
    assert!(
        seen.iter()
            .all(|(failed, phase)| (*failed >= 2) == (*phase == "Failed")),
        "Failed exactly from the second failed measurement: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prometheus_stopped_mid_run_ends_the_run_in_error_keeping_what_was_measured() {
    let mut server = Prometheus::start(&openmetrics()).await;
    let h = Harness::start("analysis-runs-down").await;
    let metric = with(
        prometheus_metric(&server.url(), r#"weir_error_ratio{service="checkout"}"#),
        json!({"successCondition": "result[0] < 0.05", "interval": "1s", "count": 10,
               "consecutiveErrorLimit": 2}),
    );
    h.create_run("down", json!({"metrics": [metric]})).await;
    h.run_when("down", "a successful measurement", |status| {
        status["metricResults"][0]["successful"].as_i64() >= Some(1)
    })
    .await;
    server.stop().await;

    let run = h.verdict("down").await;
    let status = &run["status"];
    assert_eq!(status["phase"], "Error", "{status:#}");
    contains_all(
        "down",
        "run message",
        &status["message"],
        &[
            &format!("error-rate: Prometheus at {}/ is unreachable", server.url()),
            "(consecutiveError 3 > consecutiveErrorLimit 2)",
        ],
    );
    let result = &status["metricResults"][0];
    let successful = result["successful"].as_u64().unwrap();
    assert!(successful >= 1, "{result:#}");
    assert_eq!(result["count"], successful, "errors do not use up count");
    assert_eq!(result["error"], 3);
    assert_eq!(result["consecutiveError"], 3);
    let mut expected = vec!["Successful"; usize::try_from(successful).unwrap()];
    expected.extend(["Error"; 3]);
    assert_eq!(phases(result), expected, "{result:#}");
    assert_eq!(result["measurements"][0]["value"], "[0.01]");
    for m in &result["measurements"].as_array().unwrap()[expected.len() - 3..] {
        // Only the last error is sure to be a refused connection: one in flight while the server
        // was killed may have been cut off instead.
        let target = format!("error-rate: Prometheus at {}/", server.url());
        contains_all("down", "error measurement", &m["message"], &[&target]);
        assert!(m.get("value").is_none(), "an error has no value: {m}");
    }
    assert_measurements_explain("down", result, Some(Duration::from_secs(1)));
}

/// A JSON endpoint with an error rate under the threshold and a latency over it.
fn health_endpoint() -> Router {
    Router::new().route(
        "/api/health",
        get(|| async {
            (
                [(header::CONTENT_TYPE, "application/json")],
                json!({"data": {"errorRate": 0.02, "p99": 180}}).to_string(),
            )
        }),
    )
}

fn web_metric(name: &str, url: &str, json_path: &str, condition: &str) -> Value {
    json!({
        "name": name,
        "successCondition": condition,
        "provider": {"web": {"url": url, "jsonPath": json_path, "timeoutSeconds": 5}},
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn web_runs_succeed_and_a_failing_dry_run_metric_does_not_fail_them() {
    let base = serve(health_endpoint()).await;
    let url = format!("{base}/api/health");
    let h = Harness::start("analysis-runs-web").await;
    let error_rate = web_metric("error-rate", &url, "{$.data.errorRate}", "result < 0.05");
    let latency = web_metric("latency", &url, "{$.data.p99}", "result < 100");
    let dry_run = json!([{"metricName": "latency"}]);
    // The dry-run metric is measured in the same reconcile as the deciding one, before or after it.
    let cases = [
        ("web", json!({"metrics": [error_rate.clone()]})),
        (
            "dry-run-first",
            json!({"metrics": [latency.clone(), error_rate.clone()], "dryRun": dry_run.clone()}),
        ),
        (
            "dry-run-last",
            json!({"metrics": [error_rate.clone(), latency.clone()], "dryRun": dry_run}),
        ),
    ];
    for (name, spec) in &cases {
        h.create_run(name, spec.clone()).await;
    }
    for (name, spec) in &cases {
        let run = h.verdict(name).await;
        let status = &run["status"];
        assert_eq!(status["phase"], "Successful", "{name}: {status:#}");
        let results: BTreeMap<&str, &Value> = status["metricResults"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["name"].as_str().unwrap(), r))
            .collect();
        let error_rate = results["error-rate"];
        assert_eq!(error_rate["phase"], "Successful", "{name}");
        assert_eq!(phases(error_rate), ["Successful"], "{name}");
        assert_eq!(error_rate["measurements"][0]["value"], "0.02", "{name}");
        contains_all(
            name,
            "run message",
            &status["message"],
            &[r#"error-rate: 0.02 passed "result < 0.05" (1 of 1 successful)"#],
        );
        assert_measurements_explain(name, error_rate, None);
        assert_eq!(
            status["runSummary"]["count"], 1,
            "dry-run metrics do not count"
        );
        if spec["dryRun"].is_null() {
            continue;
        }
        let latency = results["latency"];
        assert_eq!(latency["dryRun"], true, "{name}");
        assert_eq!(latency["phase"], "Failed", "{name}: {latency:#}");
        assert_eq!(phases(latency), ["Failed"], "{name}");
        assert_eq!(latency["measurements"][0]["value"], "180", "{name}");
        assert_measurements_explain(name, latency, None);
        contains_all(
            name,
            "run message",
            &status["message"],
            &[r#"dry-run Failed: latency: 180 failed "result < 100""#],
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_without_count_measures_until_terminated_and_ends_successful() {
    let base = serve(health_endpoint()).await;
    let h = Harness::start("analysis-runs-terminate").await;
    let metric = with(
        web_metric(
            "error-rate",
            &format!("{base}/api/health"),
            "{$.data.errorRate}",
            "result < 0.05",
        ),
        json!({"interval": "1s"}),
    );
    h.create_run("background", json!({"metrics": [metric]}))
        .await;
    let running = h
        .run_when("background", "two measurements", |status| {
            status["metricResults"][0]["count"].as_i64() >= Some(2)
        })
        .await;
    assert_eq!(running["status"]["phase"], "Running");

    h.runs
        .patch(
            "background",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"terminate": true}})),
        )
        .await
        .expect("terminate the run");
    let run = h.verdict("background").await;
    let status = &run["status"];
    assert_eq!(status["phase"], "Successful", "{status:#}");
    let result = &status["metricResults"][0];
    let count = result["count"].as_u64().unwrap();
    assert!(count >= 2, "{result:#}");
    assert_eq!(
        status["message"],
        format!("error-rate: terminated after {count} measurements")
    );
    assert_eq!(
        phases(result),
        vec!["Successful"; usize::try_from(count).unwrap()]
    );
    assert_measurements_explain("background", result, Some(Duration::from_secs(1)));
}
