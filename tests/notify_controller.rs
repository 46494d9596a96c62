//! The alert controller on the emulator, fed Rollout Events directly: which providers hear an
//! event, and what happens when an alert cannot be delivered.

#[path = "support/receiver.rs"]
mod receiver;
mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Event as CoreEvent;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use receiver::{Answer, Receiver};
use serde_json::{Value, json};
use support::{Cluster, repo_root, wait_for};
use weir::notify::controller::NotifyConfig;
use weir::notify::delivery::DeliveryPolicy;

const WAIT: Duration = Duration::from_secs(30);

fn api(c: &Cluster, group: &str, version: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::namespaced_with(c.client(), "default", &ar)
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

async fn cluster(tag: &str) -> (Cluster, tokio::task::JoinHandle<()>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = Cluster::start(tag).await;
    c.kubectl_ok(&["apply", "-f", repo_root().join("crds").to_str().unwrap()])
        .await;
    let notify = tokio::spawn(weir::notify::controller::run_with(
        c.client(),
        NotifyConfig {
            cluster_name: "test".into(),
            policy: DeliveryPolicy {
                max_attempts: 2,
                first_backoff: Duration::from_millis(10),
                ..DeliveryPolicy::default()
            },
        },
    ));
    (c, notify)
}

async fn provider(c: &Cluster, name: &str, spec: Value) {
    apply(
        &api(c, "weir.io", "v1alpha1", "AlertProvider", "alertproviders"),
        json!({"apiVersion": "weir.io/v1alpha1", "kind": "AlertProvider", "metadata": {"name": name}, "spec": spec}),
    )
    .await;
}

async fn rollout(c: &Cluster, name: &str, alerts: Value) {
    apply(&api(c, "weir.io", "v1alpha1", "Rollout", "rollouts"), json!({
        "apiVersion": "weir.io/v1alpha1", "kind": "Rollout", "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}}, "alerts": alerts,
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "app", "image": "app:1"}]}},
            "strategy": {"canary": {}}}})).await;
}

async fn abort_event(c: &Cluster, rollout: &str, event: &str) {
    let now = jiff::Timestamp::now().to_string();
    let ev: CoreEvent = serde_json::from_value(json!({
        "metadata": {"name": event, "namespace": "default"},
        "involvedObject": {"apiVersion": "weir.io/v1alpha1", "kind": "Rollout", "name": rollout, "namespace": "default"},
        "reason": "RolloutAborted", "type": "Warning",
        "message": "Rollout aborted: traffic moved back to stable revision 5b6c4d",
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        "reportingComponent": "test",
    }))
    .unwrap();
    Api::<CoreEvent>::namespaced(c.client(), "default")
        .create(&PostParams::default(), &ev)
        .await
        .unwrap();
}

async fn sent(c: &Cluster, provider: &str) -> Vec<Value> {
    api(c, "weir.io", "v1alpha1", "AlertProvider", "alertproviders")
        .get(provider)
        .await
        .ok()
        .and_then(|p| p.data["status"]["sentAlerts"].as_array().cloned())
        .unwrap_or_default()
}

async fn ready(c: &Cluster, provider: &str) -> (String, String) {
    let p = api(c, "weir.io", "v1alpha1", "AlertProvider", "alertproviders")
        .get(provider)
        .await
        .unwrap();
    let cond = p.data["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready").cloned())
        .unwrap_or(Value::Null);
    (
        cond["status"].as_str().unwrap_or("").to_owned(),
        cond["reason"].as_str().unwrap_or("").to_owned(),
    )
}

async fn provider_events(c: &Cluster, provider: &str) -> Vec<CoreEvent> {
    Api::<CoreEvent>::namespaced(c.client(), "default")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.involved_object.kind.as_deref() == Some("AlertProvider")
                && e.involved_object.name.as_deref() == Some(provider)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn named_providers_replace_the_defaults_and_filters_apply() {
    let (c, notify) = cluster("notify-routing").await;
    let default = Receiver::start().await;
    let named = Receiver::start().await;
    let filtered = Receiver::start().await;
    provider(
        &c,
        "default",
        json!({"type": "webhook", "address": default.url("/d"), "default": true}),
    )
    .await;
    provider(
        &c,
        "named",
        json!({"type": "discord", "address": named.url("/n")}),
    )
    .await;
    provider(&c, "only-rollbacks", json!({"type": "slack", "address": filtered.url("/f"), "default": true, "events": ["RolledBack"]})).await;
    rollout(&c, "plain", json!([])).await;
    rollout(&c, "picky", json!([{"name": "named"}])).await;
    // Let the controller's provider cache see all three before the Events arrive.
    wait_for("providers created", WAIT, || async {
        let list = api(&c, "weir.io", "v1alpha1", "AlertProvider", "alertproviders")
            .list(&ListParams::default())
            .await
            .ok()?;
        (list.items.len() == 3).then_some(())
    })
    .await;
    abort_event(&c, "plain", "plain.1.0-aaaa").await;
    abort_event(&c, "picky", "picky.1.0-bbbb").await;

    let d = default.wait_accepted(1, WAIT).await;
    let body = d[0].json();
    assert_eq!(
        body["event"], "Aborted",
        "a person's abort is not a rollback"
    );
    assert_eq!(body["rollout"]["name"], "plain");
    let cmds: Vec<&str> = body["nextSteps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["command"].as_str().unwrap())
        .collect();
    assert!(
        cmds.contains(&"kubectl weir retry plain -n default"),
        "{cmds:?}"
    );
    let n = named.wait_accepted(1, WAIT).await;
    assert!(
        n[0].json()["embeds"][0]["title"]
            .as_str()
            .unwrap()
            .contains("default/picky")
    );
    wait_for("both alerts recorded", WAIT, || async {
        (sent(&c, "default").await.len() == 1 && sent(&c, "named").await.len() == 1).then_some(())
    })
    .await;
    assert_eq!(
        ready(&c, "default").await,
        ("True".into(), "AlertDelivered".into())
    );
    assert_eq!(
        default.accepted().len(),
        1,
        "the default provider does not hear a Rollout that names others"
    );
    assert!(
        filtered.requests().is_empty(),
        "a provider that wants only RolledBack hears no Aborted"
    );
    notify.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undeliverable_alert_becomes_an_event_on_the_provider_once() {
    let (c, notify) = cluster("notify-failure").await;
    let broken = Receiver::scripted(vec![Answer::Status(500); 10]).await;
    provider(
        &c,
        "broken",
        json!({"type": "webhook", "address": broken.url("/hooks/SECRET-TOKEN"), "default": true}),
    )
    .await;
    provider(
        &c,
        "no-secret",
        json!({"type": "slack", "secretRef": {"name": "missing"}, "default": true}),
    )
    .await;
    rollout(&c, "web", json!([])).await;
    wait_for("providers created", WAIT, || async {
        let list = api(&c, "weir.io", "v1alpha1", "AlertProvider", "alertproviders")
            .list(&ListParams::default())
            .await
            .ok()?;
        (list.items.len() == 2).then_some(())
    })
    .await;
    abort_event(&c, "web", "web.1.0-cccc").await;

    let failed = wait_for("a failure Event on the broken provider", WAIT, || async {
        provider_events(&c, "broken").await.into_iter().next()
    })
    .await;
    assert_eq!(failed.reason.as_deref(), Some("AlertDeliveryFailed"));
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    let message = failed.message.unwrap();
    assert!(
        message.contains("HTTP 500") && message.contains("2 attempts"),
        "{message}"
    );
    assert!(
        !message.contains("SECRET-TOKEN") && !message.contains("127.0.0.1"),
        "{message}"
    );
    assert_eq!(
        broken.requests().len(),
        2,
        "retried up to the attempt limit, then given up"
    );

    let missing = wait_for(
        "a failure Event on the provider without its Secret",
        WAIT,
        || async { provider_events(&c, "no-secret").await.into_iter().next() },
    )
    .await;
    assert!(
        missing
            .message
            .unwrap()
            .contains("Secret default/missing not found")
    );

    wait_for("both outcomes recorded", WAIT, || async {
        let (a, b) = (sent(&c, "broken").await, sent(&c, "no-secret").await);
        (a.len() == 1 && b.len() == 1).then_some((a, b))
    })
    .await;
    assert_eq!(
        ready(&c, "broken").await,
        ("False".into(), "AlertDeliveryFailed".into())
    );
    assert_eq!(
        ready(&c, "no-secret").await,
        ("False".into(), "SecretNotFound".into())
    );
    for p in ["broken", "no-secret"] {
        let s = sent(&c, p).await;
        assert_eq!(s[0]["outcome"], "Failed");
        assert_eq!(s[0]["key"], "default/web.1.0-cccc");
        assert_eq!(s[0]["event"], "Aborted");
    }
    let status = api(&c, "weir.io", "v1alpha1", "AlertProvider", "alertproviders")
        .get("broken")
        .await
        .unwrap();
    assert!(
        !status.data["status"].to_string().contains("SECRET-TOKEN"),
        "the status never holds the address"
    );
    assert_eq!(
        provider_events(&c, "broken").await.len(),
        1,
        "one Event, not an error loop"
    );
    notify.abort();
}
