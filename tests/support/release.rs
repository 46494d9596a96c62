//! One app in Git and the service that judges it, for the tests that take `weir run` through a
//! whole release (the RBAC coverage and the secret-leak tests).
//!
//! Include it with `#[path = "support/release.rs"] mod release;` next to
//! `#[path = "support/canary_app.rs"] mod canary_app;`.
#![allow(dead_code)]

use kube::api::Api;
use serde_json::{Value, json};
use weir::api::rollout::{GitRevertState, Rollout, RolloutStatus};

use crate::canary_app::{WEB, web_template};
use crate::support::{Cluster, api, apply, wait_for};

/// The token the error-rate service wants (`Authorization: Bearer <token>`); the app's analysis
/// reads it from the Secret `metrics-token`, key `token`.
pub const METRICS_TOKEN: &str = "metrics-secret-4b1d9e";

/// The app in Git: a canary Rollout behind an HTTPRoute whose analysis reads a Secret-held token, its
/// Services, and (while `with_config`) a ConfigMap that a later commit removes, for prune.
pub fn app_files(version: &str, base: &str, with_config: bool) -> Vec<(&'static str, String)> {
    let mut files = vec![
        (
            "apps/web/rollout.yaml",
            WEB.rollout_yaml(&format!("web:{version}"), version),
        ),
        ("apps/web/services.yaml", WEB.services_yaml()),
        ("apps/web/route.yaml", WEB.route_yaml()),
        ("apps/web/analysis.yaml", web_template(base, 2, true)),
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
    crate::canary_app::error_rate_server(Some(METRICS_TOKEN)).await
}

/// How long the release may take to reach each state.
const WAIT: std::time::Duration = std::time::Duration::from_secs(90);

/// Applies Secret `name` in `default` with `data` as its `stringData`.
pub async fn secret(c: &Cluster, name: &str, data: Value) {
    apply(
        &api(c, "", "v1", "Secret", "secrets"),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}),
    )
    .await;
}

/// Rollout `name` in `default`, once it exists.
pub async fn named_rollout(c: &Cluster, name: &str) -> Option<Rollout> {
    Api::<Rollout>::namespaced(c.client(), "default")
        .get_opt(name)
        .await
        .ok()
        .flatten()
}

/// Rollout `web`, once it exists.
pub async fn rollout(c: &Cluster) -> Option<Rollout> {
    named_rollout(c, "web").await
}

/// Waits until `web` runs a revision from Git all on stable; returns its status.
pub async fn wait_healthy_from_git(c: &Cluster) -> RolloutStatus {
    wait_for("web:good Healthy from Git", WAIT, || async {
        let s = rollout(c).await?.status?;
        (s.stable_commit.is_some() && s.current_pod_hash == s.stable_rs).then_some(s)
    })
    .await
}

/// Waits until the release committed as `bad` is rolled back to `stable`'s revision and its revert
/// is pushed to Git.
pub async fn wait_reverted(c: &Cluster, bad: &str, stable: &RolloutStatus) {
    wait_for(
        "the bad release rolled back and reverted in Git",
        WAIT,
        || async {
            let s = rollout(c).await?.status?;
            let pushed = s
                .git_revert
                .as_ref()
                .is_some_and(|r| r.state == GitRevertState::Pushed && r.reverted_commits == [bad]);
            (pushed && s.current_pod_hash == stable.stable_rs).then_some(())
        },
    )
    .await;
}
