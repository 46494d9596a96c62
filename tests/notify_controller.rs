//! The alert controller on the emulator, fed Rollout Events directly: which providers hear an
//! event, what happens when an alert cannot be delivered, and how an alert raised while the
//! receiver is down reaches it once it is back, exactly once, across a restart of weir.

#[path = "support/receiver.rs"]
mod receiver;
mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Event as CoreEvent;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use receiver::{Answer, Receiver, unused_port};
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
    cluster_with(
        tag,
        DeliveryPolicy {
            max_attempts: 2,
            first_backoff: Duration::from_millis(10),
            ..DeliveryPolicy::default()
        },
    )
    .await
}

async fn cluster_with(tag: &str, policy: DeliveryPolicy) -> (Cluster, tokio::task::JoinHandle<()>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = Cluster::start(tag).await;
    c.kubectl_ok(&["apply", "-f", repo_root().join("crds").to_str().unwrap()])
        .await;
    let notify = start_notify(&c, policy);
    (c, notify)
}

/// The alert controller as `weir run` starts it; aborting the task stops it and everything it
/// was sending, as a killed process would.
fn start_notify(c: &Cluster, policy: DeliveryPolicy) -> tokio::task::JoinHandle<()> {
    tokio::spawn(weir::notify::controller::run_with(
        c.client(),
        NotifyConfig {
            cluster_name: "test".into(),
            policy,
        },
    ))
}

/// Retries without limit, quickly.
fn durable() -> DeliveryPolicy {
    DeliveryPolicy {
        first_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        ..DeliveryPolicy::default()
    }
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
    aborted(
        c,
        rollout,
        event,
        "Rollout aborted: traffic moved back to stable revision 5b6c4d",
    )
    .await;
}

/// The Event the Rollout controller records when a failed analysis rolls a release back.
async fn rollback_event(c: &Cluster, rollout: &str, event: &str) {
    aborted(c, rollout, event, ROLLBACK_MESSAGE).await;
}

const ROLLBACK_MESSAGE: &str = "Rollout aborted: AnalysisRun web-5b6c4d-step1-1 Failed: error-rate: [0.5] failed \"result[0] < 0.05\"";

async fn aborted(c: &Cluster, rollout: &str, event: &str, message: &str) {
    let now = jiff::Timestamp::now().to_string();
    let ev: CoreEvent = serde_json::from_value(json!({
        "metadata": {"name": event, "namespace": "default"},
        "involvedObject": {"apiVersion": "weir.io/v1alpha1", "kind": "Rollout", "name": rollout, "namespace": "default"},
        "reason": "RolloutAborted", "type": "Warning",
        "message": message,
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

async fn pending(c: &Cluster, provider: &str) -> Vec<Value> {
    api(c, "weir.io", "v1alpha1", "AlertProvider", "alertproviders")
        .get(provider)
        .await
        .ok()
        .and_then(|p| p.data["status"]["pendingAlerts"].as_array().cloned())
        .unwrap_or_default()
}

async fn wait_providers(c: &Cluster, n: usize) {
    wait_for("providers created", WAIT, || async {
        let list = api(c, "weir.io", "v1alpha1", "AlertProvider", "alertproviders")
            .list(&ListParams::default())
            .await
            .ok()?;
        (list.items.len() == n).then_some(())
    })
    .await;
}

/// Waits until the provider holds the alert as pending after at least `attempts` failed
/// requests, and returns the entry.
async fn wait_pending(c: &Cluster, provider: &str, key: &str, attempts: u64) -> Value {
    wait_for(
        &format!("{key} pending after {attempts} failed attempts"),
        WAIT,
        || async {
            pending(c, provider)
                .await
                .into_iter()
                .find(|a| a["key"] == key && a["attempts"].as_u64() >= Some(attempts))
        },
    )
    .await
}

/// Waits until the provider records the alert as delivered and no longer pending.
async fn wait_delivered(c: &Cluster, provider: &str, key: &str) {
    wait_for(&format!("{key} recorded as delivered"), WAIT, || async {
        let done = sent(c, provider)
            .await
            .iter()
            .any(|a| a["key"] == key && a["outcome"] == "Delivered");
        let waiting = pending(c, provider).await.iter().any(|a| a["key"] == key);
        (done && !waiting).then_some(())
    })
    .await;
}

fn with_id<'a>(reqs: &'a [receiver::Recorded], key: &str) -> Vec<&'a receiver::Recorded> {
    reqs.iter().filter(|r| r.json()["id"] == key).collect()
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

#[tokio::test(flavor = "multi_thread")]
async fn an_alert_raised_while_the_receiver_is_down_is_delivered_once_it_is_back() {
    let (c, notify) = cluster_with("notify-outage", durable()).await;
    let port = unused_port();
    provider(
        &c,
        "team",
        json!({"type": "webhook", "address": format!("http://127.0.0.1:{port}/hook"), "default": true}),
    )
    .await;
    rollout(&c, "web", json!([])).await;
    wait_providers(&c, 1).await;
    rollback_event(&c, "web", "web.1.0-dddd").await;

    // Connections are refused: the alert waits in the provider's status, saying why.
    let entry = wait_pending(&c, "team", "default/web.1.0-dddd", 2).await;
    assert_eq!(entry["event"], "RolledBack");
    assert_eq!(entry["alert"]["rollout"], "web");
    let error = entry["lastError"].as_str().unwrap();
    assert!(error.contains("request failed"), "{error}");
    assert!(!error.contains(&port.to_string()), "{error}");
    assert_eq!(
        ready(&c, "team").await,
        ("False".into(), "AlertDeliveryRetrying".into())
    );
    assert!(sent(&c, "team").await.is_empty());

    // The receiver comes back, first overloaded (503), then well.
    let rx = Receiver::scripted_at(port, vec![Answer::Status(503), Answer::Status(503)]).await;
    let got = rx.wait_accepted(1, WAIT).await;
    let body = got[0].json();
    assert_eq!(body["event"], "RolledBack");
    assert_eq!(body["id"], "default/web.1.0-dddd");
    assert_eq!(
        body["rollout"],
        json!({"namespace": "default", "name": "web"})
    );
    assert_eq!(body["reason"], "AnalysisRunFailed");
    assert_eq!(body["message"], ROLLBACK_MESSAGE);
    assert_eq!(body["cluster"], "test");
    wait_delivered(&c, "team", "default/web.1.0-dddd").await;
    assert_eq!(
        ready(&c, "team").await,
        ("True".into(), "AlertDelivered".into())
    );

    // Exactly once: a later alert arrives after it, and the first was not sent again.
    rollback_event(&c, "web", "web.1.1-eeee").await;
    let all = rx.wait_accepted(2, WAIT).await;
    assert_eq!(with_id(&all, "default/web.1.0-dddd").len(), 1);
    assert_eq!(with_id(&all, "default/web.1.1-eeee").len(), 1);
    assert_eq!(all.len(), 2);
    assert_eq!(
        rx.requests().len(),
        4,
        "two 503s and two deliveries, nothing else"
    );
    notify.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_weir_resumes_the_alert_and_delivers_it_exactly_once() {
    let (c, notify) = cluster_with("notify-outage-restart", durable()).await;
    let port = unused_port();
    let address = format!("http://127.0.0.1:{port}/services/T000/SECRET-PATH");
    apply(
        &api(&c, "", "v1", "Secret", "secrets"),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hook"}, "stringData": {"address": address}}),
    )
    .await;
    provider(
        &c,
        "team",
        json!({"type": "slack", "secretRef": {"name": "hook"}, "default": true}),
    )
    .await;
    rollout(&c, "web", json!([])).await;
    wait_providers(&c, 1).await;
    rollback_event(&c, "web", "web.1.0-ffff").await;
    wait_pending(&c, "team", "default/web.1.0-ffff", 1).await;

    // weir stops while the receiver is down; the receiver comes back while weir is stopped.
    notify.abort();
    let _ = notify.await;
    let rx = Receiver::scripted_at(port, Vec::new()).await;
    let entry = pending(&c, "team").await;
    assert_eq!(entry.len(), 1, "the alert is still pending: {entry:?}");
    assert!(
        !serde_json::to_string(&entry)
            .unwrap()
            .contains("SECRET-PATH"),
        "the status never holds the address"
    );

    let notify = start_notify(&c, durable());
    let got = rx.wait_accepted(1, WAIT).await;
    let body = got[0].json();
    let text = body["text"].as_str().unwrap();
    assert!(text.contains("Rolled back: default/web on test"), "{text}");
    wait_delivered(&c, "team", "default/web.1.0-ffff").await;

    // A later alert arrives after it, and the first was not sent again.
    rollback_event(&c, "web", "web.1.1-gggg").await;
    wait_delivered(&c, "team", "default/web.1.1-gggg").await;
    let all = rx.requests();
    assert_eq!(
        all.len(),
        2,
        "one request per alert: {:?}",
        all.iter()
            .map(|r| r.json()["text"].clone())
            .collect::<Vec<_>>()
    );
    assert!(all.iter().all(|r| r.answered == Some(200)));
    notify.abort();
}
