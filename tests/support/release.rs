//! One app in Git and the service that judges it, for the tests that take `weir run` through a
//! whole release (the RBAC coverage and the secret-leak tests).
//!
//! Include it with `#[path = "support/release.rs"] mod release;` next to
//! `#[path = "support/git_remote.rs"] mod git_remote;`.
#![allow(dead_code)]

use axum::extract::Path as UrlPath;
use serde_json::json;

use crate::git_remote::Fixture;

/// The token the error-rate service wants (`Authorization: Bearer <token>`); the app's analysis
/// reads it from the Secret `metrics-token`, key `token`.
pub const METRICS_TOKEN: &str = "metrics-secret-4b1d9e";

/// The app in Git: a canary Rollout behind an HTTPRoute whose analysis reads a Secret-held token, its
/// Services, and (while `with_config`) a ConfigMap that a later commit removes, for prune.
pub fn app_files(version: &str, base: &str, with_config: bool) -> Vec<(&'static str, String)> {
    let rollout = format!(
        "apiVersion: weir.io/v1alpha1\nkind: Rollout\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n      - name: web\n        image: web:{version}\n  strategy:\n    canary:\n      stableService: web-stable\n      canaryService: web-canary\n      scaleDownDelaySeconds: 1\n      abortScaleDownDelaySeconds: 1\n      trafficRouting:\n        gatewayAPI:\n          httpRoutes:\n          - name: web\n      steps:\n      - setWeight: 50\n      - analysis:\n          templates:\n          - templateName: error-rate\n          args:\n          - name: version\n            value: \"{version}\"\n      - setWeight: 100\n"
    );
    let services = ["web-stable", "web-canary"]
        .map(|n| format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {n}\nspec:\n  selector:\n    app: web\n  ports:\n  - port: 80\n"))
        .join("---\n");
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: web\nspec:\n  rules:\n  - backendRefs:\n    - name: web-stable\n      port: 80\n      weight: 100\n    - name: web-canary\n      port: 80\n      weight: 0\n";
    let template = format!(
        "apiVersion: weir.io/v1alpha1\nkind: AnalysisTemplate\nmetadata:\n  name: error-rate\nspec:\n  args:\n  - name: version\n  - name: token\n    valueFrom:\n      secretKeyRef:\n        name: metrics-token\n        key: token\n  metrics:\n  - name: error-rate\n    interval: 1s\n    count: 2\n    failureLimit: 0\n    successCondition: \"result < 0.05\"\n    provider:\n      web:\n        url: {base}/rate/{{{{args.version}}}}\n        headers:\n        - key: Authorization\n          value: \"Bearer {{{{args.token}}}}\"\n        jsonPath: \"{{$.errorRate}}\"\n"
    );
    let mut files = vec![
        ("apps/web/rollout.yaml", rollout),
        ("apps/web/services.yaml", services),
        ("apps/web/route.yaml", route.to_string()),
        ("apps/web/analysis.yaml", template),
    ];
    if with_config {
        files.push((
            "apps/web/config.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-config\ndata:\n  mode: calm\n"
                .into(),
        ));
    }
    files
}

/// Error rates by version (bad fails), answered only with the token from the Secret.
pub async fn error_rate_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = axum::Router::new().route(
        "/rate/{version}",
        axum::routing::get(
            |UrlPath(version): UrlPath<String>, headers: axum::http::HeaderMap| async move {
                let authorized = headers
                    .get(axum::http::header::AUTHORIZATION)
                    .is_some_and(|v| *v == format!("Bearer {METRICS_TOKEN}"));
                if !authorized {
                    return (axum::http::StatusCode::UNAUTHORIZED, String::new());
                }
                let rate = if version == "bad" { 0.5 } else { 0.0 };
                (
                    axum::http::StatusCode::OK,
                    json!({"errorRate": rate}).to_string(),
                )
            },
        ),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (base, task)
}

/// Commits `files` (path, content) to the fixture's work tree and pushes; returns the commit.
pub fn commit(fx: &Fixture, message: &str, files: &[(&'static str, String)]) -> String {
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    fx.commit(message, &refs)
}
