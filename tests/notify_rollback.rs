//! End to end on the emulator: a canary fails its analysis against a real Prometheus, and the
//! team's webhook gets exactly one RolledBack alert with the whole story; a Git revert (recorded
//! here as the revert writer records it) gets exactly one GitReverted alert; a restarted alert
//! controller sends neither again.

#[path = "support/prometheus.rs"]
mod prometheus;
#[path = "support/receiver.rs"]
mod receiver;
mod support;

use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use receiver::{Receiver, Recorded};
use serde_json::{Value, json};
use support::{Cluster, api, apply, apply_web_network, wait_for, wait_web_status};
use weir::notify::controller::NotifyConfig;

const SIGNING_KEY: &str = "e2e-shared-key";
const WAIT: Duration = Duration::from_secs(90);

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

fn ro_api(c: &Cluster) -> Api<DynamicObject> {
    api(c, "weir.io", "v1alpha1", "Rollout", "rollouts")
}

async fn sent_alerts(c: &Cluster) -> Vec<Value> {
    api(c, "weir.io", "v1alpha1", "AlertProvider", "alertproviders")
        .get("team-webhook")
        .await
        .ok()
        .and_then(|p| p.data["status"]["sentAlerts"].as_array().cloned())
        .unwrap_or_default()
}

fn verify_signature(req: &Recorded) {
    assert!(
        req.signature_valid(SIGNING_KEY.as_bytes(), &req.body),
        "the signature verifies with the key from the Secret"
    );
}

fn count(reqs: &[Recorded], event: &str) -> usize {
    reqs.iter().filter(|r| r.json()["event"] == event).count()
}

fn commands(alert: &Value) -> Vec<String> {
    alert["nextSteps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["command"].as_str().unwrap().to_owned())
        .collect()
}

/// Records an Event on the Rollout the way weir's controllers do.
async fn record_rollout_event(c: &Cluster, name: &str, reason: &str, type_: &str, message: &str) {
    let ro = ro_api(c).get("web").await.unwrap();
    let now = jiff::Timestamp::now().to_string();
    let ev: k8s_openapi::api::core::v1::Event = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "involvedObject": {"apiVersion": "weir.io/v1alpha1", "kind": "Rollout", "name": "web", "namespace": "default", "uid": ro.metadata.uid},
        "reason": reason, "message": message, "type": type_,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        "source": {"component": "weir-gitsync"},
        "reportingComponent": "weir.io/gitsync-controller", "reportingInstance": "weir",
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Event>::namespaced(c.client(), "default")
        .create(&PostParams::default(), &ev)
        .await
        .unwrap();
}

fn start_notify(c: &Cluster) -> tokio::task::JoinHandle<()> {
    tokio::spawn(weir::notify::controller::run_with(
        c.client(),
        NotifyConfig {
            cluster_name: "e2e-cluster".into(),
            ..NotifyConfig::default()
        },
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_canary_sends_one_rollback_and_one_git_revert_alert() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (target, app) = prometheus::two_version_app().await;
    let prom = prometheus::Prometheus::scraping(&target).await;
    prom.wait_for_scrapes().await;
    let c = Cluster::start("notify-rollback").await;
    c.install_crds().await;

    let team = Receiver::start().await;
    let bystander = Receiver::start().await;
    apply(
        &api(&c, "", "v1", "Secret", "secrets"),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "team-webhook"},
        "stringData": {"address": team.url("/weir"), "signingKey": SIGNING_KEY}}),
    )
    .await;
    let providers = api(&c, "weir.io", "v1alpha1", "AlertProvider", "alertproviders");
    apply(&providers, json!({"apiVersion": "weir.io/v1alpha1", "kind": "AlertProvider", "metadata": {"name": "team-webhook"},
        "spec": {"type": "webhook", "secretRef": {"name": "team-webhook"}, "signingSecretRef": {"name": "team-webhook", "key": "signingKey"},
                 "default": true, "events": ["RolledBack", "GitReverted", "GitRevertBlocked"]}})).await;
    // Not a default and not named by the Rollout: it must hear nothing.
    apply(&providers, json!({"apiVersion": "weir.io/v1alpha1", "kind": "AlertProvider", "metadata": {"name": "other-team"},
        "spec": {"type": "slack", "address": bystander.url("/slack")}})).await;

    let mut tasks = vec![
        app,
        tokio::spawn(weir::rollout::controller::run(c.client())),
        tokio::spawn(weir::analysis::controller::run(c.client())),
    ];
    let mut notify = start_notify(&c);
    apply_web_network(&c, None).await;
    let query = prometheus::error_rate_query("5s");
    apply(&api(&c, "weir.io", "v1alpha1", "AnalysisTemplate", "analysistemplates"), json!({"apiVersion": "weir.io/v1alpha1", "kind": "AnalysisTemplate",
        "metadata": {"name": "error-rate"},
        "spec": {"args": [{"name": "version"}],
            "metrics": [{"name": "error-rate", "interval": "1s", "count": 3, "initialDelay": "3s", "failureLimit": 0,
                "successCondition": "result[0] < 0.05",
                "provider": {"prometheus": {"address": prom.url(), "query": query}}}]}})).await;

    apply(&ro_api(&c), rollout("good")).await;
    wait_web_status(&c, "first revision Healthy", WAIT, |s| {
        s["phase"] == "Healthy"
    })
    .await;
    apply(&ro_api(&c), rollout("bad")).await;
    let degraded = wait_web_status(&c, "aborted by analysis", WAIT, |s| {
        s["phase"] == "Degraded"
    })
    .await;

    // 1. The rollback alert.
    let got = team.wait_accepted(1, WAIT).await;
    let req = &got[0];
    assert_eq!(req.method, "POST");
    assert_eq!(
        req.header("content-type").as_deref(),
        Some("application/json")
    );
    verify_signature(req);
    let a = req.json();
    assert_eq!(a["event"], "RolledBack", "{a}");
    assert_eq!(a["cluster"], "e2e-cluster");
    assert_eq!(a["rollout"], json!({"namespace": "default", "name": "web"}));
    assert_eq!(
        a["reason"], "AnalysisRunFailed",
        "{}",
        degraded["conditions"]
    );
    assert_eq!(a["analysis"]["metric"], "error-rate");
    let value = a["analysis"]["value"].as_str().unwrap();
    assert!(value.contains("0.5"), "measured value {value}");
    assert_eq!(
        a["analysis"]["condition"],
        "successCondition: result[0] < 0.05"
    );
    assert_eq!(a["analysis"]["failures"], 1);
    assert_eq!(a["analysis"]["limit"], 0);
    assert_eq!(
        a["analysis"]["run"],
        degraded["canary"]["currentStepAnalysisRunStatus"]["name"]
    );
    assert_eq!(a["images"]["canary"], json!(["web=web:bad"]));
    assert_eq!(a["images"]["stable"], json!(["web=web:good"]));
    assert_eq!(a["weight"], 50, "it failed at the 50% step");
    let cmds = commands(&a);
    assert!(
        cmds.contains(&"kubectl weir retry web -n default".to_owned()),
        "{cmds:?}"
    );
    assert!(
        cmds.contains(&"kubectl weir get rollout web -n default".to_owned()),
        "{cmds:?}"
    );

    // 2. The Git revert, recorded as the revert writer records it.
    let pod_hash = degraded["currentPodHash"].as_str().unwrap().to_owned();
    let patch = json!({"status": {"gitRevert": {"podHash": pod_hash, "gitSync": {"name": "apps", "namespace": "default"},
        "revertedCommits": ["c0ffee1234"], "revertCommit": "bead5e7890", "state": "Pushed"}}});
    ro_api(&c)
        .patch_status("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_web_status(&c, "gitRevert recorded", WAIT, |s| {
        s["gitRevert"]["revertCommit"] == "bead5e7890"
    })
    .await;
    record_rollout_event(
        &c,
        "web.gitrevert-1",
        "GitReverted",
        "Normal",
        "Reverted c0ffee1234 in bead5e7890 (pushed to main)",
    )
    .await;
    let got = team.wait_accepted(2, WAIT).await;
    let g = got
        .iter()
        .map(Recorded::json)
        .find(|v| v["event"] == "GitReverted")
        .expect("a GitReverted alert");
    verify_signature(&got[1]);
    assert_eq!(g["cluster"], "e2e-cluster");
    assert_eq!(g["git"]["revertCommit"], "bead5e7890");
    assert_eq!(g["git"]["revertedCommits"], json!(["c0ffee1234"]));
    assert_eq!(g["git"]["state"], "Pushed");
    assert_eq!(g["analysis"]["metric"], "error-rate");
    assert!(g["analysis"]["value"].as_str().unwrap().contains("0.5"));
    assert_eq!(g["images"]["canary"], json!(["web=web:bad"]));
    assert_eq!(g["images"]["stable"], json!(["web=web:good"]));
    assert_eq!(g["weight"], 50);
    assert!(
        !commands(&g).iter().any(|c| c.contains("retry")),
        "retrying a release that Git no longer has is not a next step"
    );

    wait_for(
        "both alerts recorded in the provider's status",
        WAIT,
        || async { (sent_alerts(&c).await.len() >= 2).then_some(()) },
    )
    .await;

    // 3. A restart sends nothing twice. The marker alert comes after the restarted controller
    // has listed every earlier Event.
    notify.abort();
    let _ = notify.await;
    notify = start_notify(&c);
    record_rollout_event(
        &c,
        "web.gitrevert-blocked-1",
        "GitRevertBlocked",
        "Warning",
        "commit c0ffee1234 touched files outside the Rollout's sources",
    )
    .await;
    wait_for("the marker alert recorded", WAIT, || async {
        let sent = sent_alerts(&c).await;
        sent.iter()
            .any(|a| a["event"] == "GitRevertBlocked")
            .then_some(())
    })
    .await;
    let all = team.accepted();
    assert_eq!(count(&all, "RolledBack"), 1, "exactly one RolledBack alert");
    assert_eq!(
        count(&all, "GitReverted"),
        1,
        "exactly one GitReverted alert"
    );
    assert_eq!(count(&all, "GitRevertBlocked"), 1);
    assert_eq!(all.len(), 3, "nothing else was sent");
    let sent = sent_alerts(&c).await;
    assert!(sent.iter().all(|a| a["outcome"] == "Delivered"), "{sent:?}");
    assert!(
        bystander.requests().is_empty(),
        "a provider nobody chose hears nothing"
    );

    tasks.push(notify);
    for t in tasks {
        t.abort();
    }
}
