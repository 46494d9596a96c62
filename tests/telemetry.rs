//! `weir run` serves its own metrics and health: ready once connected, reconciles counted per
//! controller, and each Rollout's phase and weight as a scrape sees them.

mod support;

use std::process::Stdio;
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;
use support::{Cluster, repo_root, wait_for};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_follow_what_weir_does() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = Cluster::start("telemetry").await;
    c.kubectl_ok(&["apply", "-f", repo_root().join("crds").to_str().unwrap()])
        .await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _weir = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "--kubeconfig"])
        .arg(&c.kubeconfig)
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .arg("--cache-dir")
        .arg(c.dir.path().join("cache"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start weir run");
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_for("/readyz 200", WAIT, || async {
        let r = http.get(format!("{base}/readyz")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    let healthz = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert!(healthz.status().is_success());

    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("weir.io", "v1alpha1", "Rollout"),
        "rollouts",
    );
    let rollouts: Api<DynamicObject> = Api::namespaced_with(c.client(), "default", &ar);
    let ro = json!({"apiVersion": "weir.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "web:1"}]}},
            "strategy": {"canary": {"steps": [{"setWeight": 50}]}}}});
    rollouts
        .patch(
            "web",
            &PatchParams::apply("test").force(),
            &Patch::Apply(&ro),
        )
        .await
        .unwrap();
    let text = wait_for("the Rollout Healthy in /metrics", WAIT, || async {
        let text = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.contains(r#"weir_rollout_phase{namespace="default",name="web",phase="Healthy"} 1"#)
            .then_some(text)
    })
    .await;
    assert!(
        text.contains(r#"weir_reconciles_total{controller="rollout"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"weir_rollout_canary_weight_percent{namespace="default",name="web"} 0"#),
        "{text}"
    );
    assert!(text.contains("# EOF"), "OpenMetrics text ends with # EOF");

    // A deleted Rollout leaves no series behind.
    rollouts.delete("web", &Default::default()).await.unwrap();
    wait_for("the Rollout's series gone", WAIT, || async {
        let text = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (!text.contains(r#"name="web""#)).then_some(())
    })
    .await;
}
