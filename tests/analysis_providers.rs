//! Metric providers against real servers: a real `prometheus` fed deterministic data by
//! `promtool`, an authenticating reverse proxy in front of it, and a local JSON endpoint.

#[path = "support/prometheus.rs"]
mod prometheus;
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use prometheus::{Prometheus, unix_now};
use weir::analysis::providers::{ProviderError, SecretSource, provider_for};
use weir::analysis::value::MetricValue;
use weir::api::analysis::MetricProvider as MetricSpec;

const NAMESPACE: &str = "demo";
const TOKEN: &str = "s3cr3t-token";
/// `weir:pa55` in base64, the credentials the proxy accepts for basic authentication.
const BASIC_CREDENTIALS: &str = "d2VpcjpwYTU1";

/// Secrets held in memory, keyed by (namespace, name, key).
#[derive(Default)]
struct FakeSecrets(HashMap<(String, String, String), String>);

impl FakeSecrets {
    fn with(mut self, name: &str, key: &str, value: &str) -> Self {
        self.0
            .insert((NAMESPACE.into(), name.into(), key.into()), value.into());
        self
    }
}

impl SecretSource for FakeSecrets {
    fn secret<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<String, ProviderError>> {
        let found = self
            .0
            .get(&(namespace.into(), name.into(), key.into()))
            .cloned()
            .ok_or_else(|| ProviderError::SecretKeyMissing {
                namespace: namespace.into(),
                name: name.into(),
                key: key.into(),
            });
        Box::pin(async move { found })
    }
}

fn spec(provider: Value) -> MetricSpec {
    serde_json::from_value(provider).expect("valid provider spec")
}

async fn measure(provider: Value, secrets: &FakeSecrets) -> Result<MetricValue, ProviderError> {
    provider_for(&spec(provider))
        .measure(secrets, NAMESPACE)
        .await
}

/// Gauges with samples 90s and 30s before now, so that an instant query at now sees the later one.
fn openmetrics() -> String {
    let now = unix_now();
    let (early, late) = (now - 90, now - 30);
    format!(
        "# HELP weir_error_ratio Share of requests that failed.\n\
         # TYPE weir_error_ratio gauge\n\
         weir_error_ratio{{service=\"checkout\",track=\"canary\"}} 0.004 {early}\n\
         weir_error_ratio{{service=\"checkout\",track=\"canary\"}} 0.01 {late}\n\
         weir_error_ratio{{service=\"checkout\",track=\"stable\"}} 0.002 {late}\n\
         weir_error_ratio{{service=\"billing\",track=\"canary\"}} 0.05 {late}\n\
         # HELP weir_requests_per_second Request rate.\n\
         # TYPE weir_requests_per_second gauge\n\
         weir_requests_per_second{{service=\"idle\"}} 0 {late}\n\
         weir_requests_per_second{{service=\"flaky\"}} 0 {late}\n\
         # HELP weir_errors_per_second Error rate.\n\
         # TYPE weir_errors_per_second gauge\n\
         weir_errors_per_second{{service=\"idle\"}} 0 {late}\n\
         weir_errors_per_second{{service=\"flaky\"}} 1 {late}\n\
         # EOF\n"
    )
}

enum Expect {
    Value(MetricValue),
    /// One sample, NaN (NaN never equals itself, so it cannot be a `Value`).
    NanSample,
    /// An error whose message contains every fragment.
    Error(&'static [&'static str]),
}

fn check(case: &str, got: Result<MetricValue, ProviderError>, expected: &Expect) {
    match (got, expected) {
        (Ok(value), Expect::Value(want)) => assert_eq!(&value, want, "{case}"),
        (Ok(MetricValue::Vector(samples)), Expect::NanSample) => {
            assert!(
                samples.len() == 1 && samples.iter().all(|s| s.is_nan()),
                "{case}: {samples:?}"
            );
        }
        (Err(error), Expect::Error(fragments)) => {
            let message = error.to_string();
            for fragment in *fragments {
                assert!(
                    message.contains(fragment),
                    "{case}: {message:?} lacks {fragment:?}"
                );
            }
        }
        (got, _) => panic!("{case}: unexpected {got:?}"),
    }
}

#[tokio::test]
async fn prometheus_provider_measures_deterministic_data() {
    let server = Prometheus::start(&openmetrics()).await;
    let secrets = FakeSecrets::default();
    let errors = "weir_errors_per_second";
    let requests = "weir_requests_per_second";
    let cases = [
        (
            "a vector, one sample per series in label order",
            r#"weir_error_ratio{service="checkout"}"#.to_owned(),
            Expect::Value(MetricValue::Vector(vec![0.01, 0.002])),
        ),
        (
            "a value exactly at a failure threshold comes back exactly",
            r#"weir_error_ratio{service="billing"}"#.to_owned(),
            Expect::Value(MetricValue::Vector(vec![0.05])),
        ),
        (
            "a scalar",
            r#"scalar(max(weir_error_ratio{service="checkout"}))"#.to_owned(),
            Expect::Value(MetricValue::Scalar(0.01)),
        ),
        (
            "a literal scalar",
            "0.25".to_owned(),
            Expect::Value(MetricValue::Scalar(0.25)),
        ),
        (
            "no series match: an empty vector, for the assessment to call inconclusive",
            r#"weir_error_ratio{service="missing"}"#.to_owned(),
            Expect::Value(MetricValue::Vector(vec![])),
        ),
        (
            "0/0 while the canary gets no traffic: NaN",
            format!(r#"{errors}{{service="idle"}} / {requests}{{service="idle"}}"#),
            Expect::NanSample,
        ),
        (
            "1/0: +Inf",
            format!(r#"{errors}{{service="flaky"}} / {requests}{{service="flaky"}}"#),
            Expect::Value(MetricValue::Vector(vec![f64::INFINITY])),
        ),
        (
            "a PromQL syntax error carries Prometheus's message",
            "sum(weir_error_ratio".to_owned(),
            Expect::Error(&[
                "Prometheus rejected the query",
                "bad_data",
                "parse error",
                "unclosed left parenthesis",
            ]),
        ),
        (
            "a range vector is refused",
            "weir_error_ratio[5m]".to_owned(),
            Expect::Error(&["range vectors are not supported; use an instant query"]),
        ),
    ];
    for (case, query, expected) in &cases {
        let got = measure(
            json!({"prometheus": {"address": server.url(), "query": query, "timeout": "10s"}}),
            &secrets,
        )
        .await;
        check(case, got, expected);
    }
}

#[tokio::test]
async fn prometheus_provider_reports_a_stopped_server_as_unreachable() {
    let mut server = Prometheus::start(&openmetrics()).await;
    let provider = json!({"prometheus": {
        "address": server.url(),
        "query": r#"weir_error_ratio{service="billing"}"#,
        "timeout": "5s",
    }});
    let secrets = FakeSecrets::default();
    let first = measure(provider.clone(), &secrets).await;
    assert_eq!(
        first.unwrap_or_else(|e| panic!("{e}\n{}", server.log())),
        MetricValue::Vector(vec![0.05])
    );

    server.stop().await;
    let started = Instant::now();
    let error = measure(provider, &secrets)
        .await
        .expect_err("server is stopped");
    assert!(
        matches!(error, ProviderError::Unreachable { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("unreachable"), "{message}");
    assert!(message.contains(&server.url()), "{message}");
    assert!(message.to_lowercase().contains("refused"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a refused connection fails fast"
    );
}

/// What the proxy in front of Prometheus requires, and where it forwards.
struct Proxy {
    upstream: String,
    client: reqwest::Client,
}

/// Forwards to Prometheus only requests that carry the expected credentials and tenant header.
async fn authenticating_proxy(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let headers = request.headers().clone();
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let accepted = [
        format!("Bearer {TOKEN}"),
        format!("Basic {BASIC_CREDENTIALS}"),
    ];
    if !authorization.is_some_and(|given| accepted.iter().any(|a| a == given)) {
        return (StatusCode::UNAUTHORIZED, "unauthorized\n").into_response();
    }
    if headers.get("x-scope-orgid").and_then(|v| v.to_str().ok()) != Some("demo") {
        return (StatusCode::FORBIDDEN, "no tenant\n").into_response();
    }
    let method = request.method().clone();
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .expect("request body");
    let mut forward = proxy
        .client
        .request(method, format!("{}{path}", proxy.upstream))
        .body(body);
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        forward = forward.header(header::CONTENT_TYPE, content_type.clone());
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

#[tokio::test]
async fn prometheus_provider_authenticates_to_a_proxy_in_front() {
    let server = Prometheus::start(&openmetrics()).await;
    // The proxy's own client needs a process crypto provider, as weir's does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let proxy = Arc::new(Proxy {
        upstream: server.url(),
        client: reqwest::Client::new(),
    });
    let proxy_url = serve(
        Router::new()
            .fallback(any(authenticating_proxy))
            .with_state(proxy),
    )
    .await;

    let query = r#"weir_error_ratio{service="billing"}"#;
    let tenant = json!([{"key": "X-Scope-OrgID", "value": "demo"}]);
    let bearer = json!({"bearer": {"secretRef": {"name": "prometheus", "key": "token"}}});
    let basic = json!({"basic": {"secretRef": {"name": "prometheus-basic"}}});
    let secrets = FakeSecrets::default()
        .with("prometheus", "token", &format!("{TOKEN}\n"))
        .with("prometheus", "stale", "0ld-t0ken")
        .with("prometheus-basic", "username", "weir")
        .with("prometheus-basic", "password", "pa55");
    let at_limit = || Expect::Value(MetricValue::Vector(vec![0.05]));
    let cases = [
        (
            "a bearer token from a Secret (trailing newline dropped) and a tenant header",
            json!({"headers": tenant, "authentication": bearer}),
            at_limit(),
        ),
        (
            "basic authentication from a Secret",
            json!({"headers": tenant, "authentication": basic}),
            at_limit(),
        ),
        (
            "without credentials the proxy's 401 is the error",
            json!({"headers": tenant}),
            Expect::Error(&["HTTP 401 Unauthorized", "Prometheus at http://127.0.0.1:"]),
        ),
        (
            "a wrong token is a 401 too",
            json!({"headers": tenant, "authentication":
                {"bearer": {"secretRef": {"name": "prometheus", "key": "stale"}}}}),
            Expect::Error(&["HTTP 401 Unauthorized"]),
        ),
        (
            "custom headers reach the server",
            json!({"authentication": bearer}),
            Expect::Error(&["HTTP 403 Forbidden"]),
        ),
        (
            "a missing Secret key is named",
            json!({"headers": tenant, "authentication":
                {"bearer": {"secretRef": {"name": "prometheus", "key": "absent"}}}}),
            Expect::Error(&["Secret demo/prometheus has no key \"absent\""]),
        ),
    ];
    for (case, fields, expected) in &cases {
        let mut provider = json!({"address": proxy_url, "query": query, "timeout": "10s"});
        if let (Some(target), Some(extra)) = (provider.as_object_mut(), fields.as_object()) {
            target.extend(extra.clone());
        }
        let got = measure(json!({ "prometheus": provider }), &secrets).await;
        if let Err(error) = &got {
            let message = format!("{error} {error:?}");
            for secret in [TOKEN, "0ld-t0ken", "pa55", BASIC_CREDENTIALS] {
                assert!(!message.contains(secret), "{case}: secret in {message}");
            }
        }
        check(case, got, expected);
    }
}

/// A JSON endpoint: GET needs an API key, POST echoes the window it was asked for, `/hang`
/// never answers.
fn json_endpoint() -> Router {
    async fn latency(headers: HeaderMap) -> Response {
        if headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some("k1") {
            return (StatusCode::UNAUTHORIZED, "missing api key").into_response();
        }
        json_response(json!({
            "data": {
                "errorRate": 0.02,
                "p99": 180,
                "buckets": [{"le": "0.1", "count": 7}, {"le": "+Inf", "count": 9}]
            }
        }))
    }
    async fn query(headers: HeaderMap, body: String) -> Response {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let Ok(request) = serde_json::from_str::<Value>(&body) else {
            return (StatusCode::BAD_REQUEST, "body is not JSON").into_response();
        };
        json_response(json!({
            "contentType": content_type,
            "tenant": headers.get("x-tenant").and_then(|v| v.to_str().ok()),
            "window": request.get("window"),
            "result": {"value": 0.5}
        }))
    }
    fn json_response(value: Value) -> Response {
        (
            [(header::CONTENT_TYPE, "application/json")],
            value.to_string(),
        )
            .into_response()
    }
    Router::new()
        .route("/api/latency", get(latency))
        .route("/api/query", post(query))
        .route("/text", get(|| async { "fine, thanks" }))
        .route("/hang", get(std::future::pending::<()>))
}

#[tokio::test]
async fn web_provider_selects_json_values() {
    let base = serve(json_endpoint()).await;
    let secrets = FakeSecrets::default();
    let key = json!([{"key": "X-Api-Key", "value": "k1"}]);
    let latency = format!("{base}/api/latency");
    let query = format!("{base}/api/query");
    let cases = [
        (
            "GET with a header, a number selected",
            json!({"url": latency, "headers": key, "jsonPath": "{$.data.errorRate}"}),
            Expect::Value(MetricValue::Json(json!(0.02))),
        ),
        (
            "an integer stays an integer",
            json!({"url": latency, "headers": key, "jsonPath": "{$.data.p99}"}),
            Expect::Value(MetricValue::Json(json!(180))),
        ),
        (
            "a nested path with an index",
            json!({"url": latency, "headers": key, "jsonPath": "{$.data.buckets[1].count}"}),
            Expect::Value(MetricValue::Json(json!(9))),
        ),
        (
            "no jsonPath: the whole document",
            json!({"url": latency, "headers": key}),
            Expect::Value(MetricValue::Json(json!({"data": {
                "errorRate": 0.02,
                "p99": 180,
                "buckets": [{"le": "0.1", "count": 7}, {"le": "+Inf", "count": 9}]
            }}))),
        ),
        (
            "a path to nothing selects null (no data)",
            json!({"url": latency, "headers": key, "jsonPath": "{$.data.p50}"}),
            Expect::Value(MetricValue::Json(Value::Null)),
        ),
        (
            "POST sends the body as JSON, with headers",
            json!({"url": query, "method": "POST", "body": r#"{"window": "1m"}"#,
                   "headers": [{"key": "X-Tenant", "value": "demo"}], "jsonPath": "{$}"}),
            Expect::Value(MetricValue::Json(json!({
                "contentType": "application/json",
                "tenant": "demo",
                "window": "1m",
                "result": {"value": 0.5}
            }))),
        ),
        (
            "POST, a number selected",
            json!({"url": query, "method": "POST", "body": "{}", "jsonPath": "{$.result.value}"}),
            Expect::Value(MetricValue::Json(json!(0.5))),
        ),
        (
            "a non-2xx answer is an error with its status",
            json!({"url": latency, "jsonPath": "{$.data.errorRate}"}),
            Expect::Error(&["answered HTTP 401 Unauthorized", "/api/latency"]),
        ),
        (
            "an unknown path is a 404",
            json!({"url": format!("{base}/nope")}),
            Expect::Error(&["HTTP 404 Not Found"]),
        ),
        (
            "a body that is not JSON",
            json!({"url": format!("{base}/text")}),
            Expect::Error(&["the body is not JSON"]),
        ),
        (
            "unsupported JSONPath syntax",
            json!({"url": latency, "headers": key, "jsonPath": "{$.data.buckets[*].count}"}),
            Expect::Error(&["unsupported syntax", "{$.data.buckets[*].count}"]),
        ),
        (
            "the query string never appears in messages",
            json!({"url": format!("{base}/nope?token=s3cret")}),
            Expect::Error(&["HTTP 404 Not Found"]),
        ),
    ];
    for (case, web, expected) in &cases {
        let got = measure(json!({ "web": web }), &secrets).await;
        if let Err(error) = &got {
            assert!(!error.to_string().contains("s3cret"), "{case}: {error}");
        }
        check(case, got, expected);
    }
}

#[tokio::test]
async fn web_provider_gives_up_after_its_timeout() {
    let base = serve(json_endpoint()).await;
    let started = Instant::now();
    let error = measure(
        json!({"web": {"url": format!("{base}/hang"), "timeoutSeconds": 1}}),
        &FakeSecrets::default(),
    )
    .await
    .expect_err("the handler never answers");
    let elapsed = started.elapsed();
    assert!(matches!(error, ProviderError::Timeout { .. }), "{error:?}");
    assert!(
        error.to_string().contains("did not answer within 1s"),
        "{error}"
    );
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn web_provider_reports_a_closed_port_as_unreachable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    let error = measure(
        json!({"web": {"url": format!("http://{address}/api"), "timeoutSeconds": 5}}),
        &FakeSecrets::default(),
    )
    .await
    .expect_err("nothing listens");
    assert!(
        matches!(error, ProviderError::Unreachable { .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains(&format!("http://{address}/api is unreachable")),
        "{error}"
    );
}
