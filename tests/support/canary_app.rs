//! A canary app as the release tests keep it in Git — its Rollout, Services, HTTPRoute and
//! `error-rate` AnalysisTemplate as YAML — and the loopback endpoint that reports its error rate.
//!
//! Include it with `#[path = "support/canary_app.rs"] mod canary_app;`.
#![allow(dead_code)]

use axum::extract::Path as UrlPath;
use axum::response::IntoResponse;
use serde_json::json;

/// The shape of one app's canary Rollout; its Services are `<name>-stable` and `<name>-canary`,
/// selecting `app: <name>`, and its HTTPRoute is `<name>`.
pub struct Canary<'a> {
    /// The Rollout, HTTPRoute and `app` label.
    pub name: &'a str,
    /// The pod template's one container.
    pub container: &'a str,
    pub replicas: u32,
    /// Both `scaleDownDelaySeconds` and `abortScaleDownDelaySeconds`.
    pub scale_down_delay_seconds: u32,
    /// Whether a `setWeight: 100` step follows the analysis.
    pub full_weight_step: bool,
}

/// App `web`: two replicas, scaled down a second after a release or an abort, and a last step to
/// 100% once the analysis passes.
pub const WEB: Canary<'static> = Canary {
    name: "web",
    container: "web",
    replicas: 2,
    scale_down_delay_seconds: 1,
    full_weight_step: true,
};

impl Canary<'_> {
    /// The Rollout running `image`: canary 50%, then the `error-rate` analysis judging `version`.
    pub fn rollout_yaml(&self, image: &str, version: &str) -> String {
        let Canary {
            name,
            container,
            replicas,
            scale_down_delay_seconds: delay,
            full_weight_step,
        } = self;
        let last = if *full_weight_step {
            "      - setWeight: 100\n"
        } else {
            ""
        };
        format!(
            r#"apiVersion: weir.io/v1alpha1
kind: Rollout
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: {container}
        image: {image}
  strategy:
    canary:
      stableService: {name}-stable
      canaryService: {name}-canary
      scaleDownDelaySeconds: {delay}
      abortScaleDownDelaySeconds: {delay}
      trafficRouting:
        gatewayAPI:
          httpRoutes:
          - name: {name}
      steps:
      - setWeight: 50
      - analysis:
          templates:
          - templateName: error-rate
          args:
          - name: version
            value: "{version}"
{last}"#
        )
    }

    /// The stable and canary Services, as one multi-document file.
    pub fn services_yaml(&self) -> String {
        let name = self.name;
        ["stable", "canary"]
            .map(|role| {
                format!(
                    "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}-{role}\nspec:\n  selector:\n    app: {name}\n  ports:\n  - port: 80\n"
                )
            })
            .join("---\n")
    }

    /// The HTTPRoute, all traffic on stable.
    pub fn route_yaml(&self) -> String {
        let name = self.name;
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: {name}\nspec:\n  rules:\n  - backendRefs:\n    - name: {name}-stable\n      port: 80\n      weight: 100\n    - name: {name}-canary\n      port: 80\n      weight: 0\n"
        )
    }
}

/// Template `error-rate`: `count` measurements a second apart of the error rate that
/// [`error_rate_server`] at `base` reports for `args.version`, failing on the first above 5%.
/// With `bearer_from_secret`, each request carries `Authorization: Bearer` with the token from
/// the Secret `metrics-token`, key `token`.
pub fn web_template(base: &str, count: u32, bearer_from_secret: bool) -> String {
    let (token_arg, headers) = if bearer_from_secret {
        (
            "  - name: token\n    valueFrom:\n      secretKeyRef:\n        name: metrics-token\n        key: token\n",
            "        headers:\n        - key: Authorization\n          value: \"Bearer {{args.token}}\"\n",
        )
    } else {
        ("", "")
    };
    format!(
        "apiVersion: weir.io/v1alpha1\nkind: AnalysisTemplate\nmetadata:\n  name: error-rate\nspec:\n  args:\n  - name: version\n{token_arg}  metrics:\n  - name: error-rate\n    interval: 1s\n    count: {count}\n    failureLimit: 0\n    successCondition: \"result < 0.05\"\n    provider:\n      web:\n        url: {base}/rate/{{{{args.version}}}}\n{headers}        jsonPath: \"{{$.errorRate}}\"\n"
    )
}

/// Serves `GET /rate/{version}` on a free loopback port: `{"errorRate": 0.5}` for version `bad`,
/// 0 for every other. With `token`, a request without `Authorization: Bearer <token>` gets 401.
/// Returns the base URL and the server's task.
pub async fn error_rate_server(
    token: Option<&'static str>,
) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = axum::Router::new().route(
        "/rate/{version}",
        axum::routing::get(
            move |UrlPath(version): UrlPath<String>, headers: axum::http::HeaderMap| async move {
                let authorized = token.is_none_or(|token| {
                    headers
                        .get(axum::http::header::AUTHORIZATION)
                        .is_some_and(|v| *v == format!("Bearer {token}"))
                });
                if !authorized {
                    return (axum::http::StatusCode::UNAUTHORIZED, String::new()).into_response();
                }
                let rate = if version == "bad" { 0.5 } else { 0.0 };
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    json!({"errorRate": rate}).to_string(),
                )
                    .into_response()
            },
        ),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (base, task)
}
