//! The Rollout controller against the emulator, as a user sees it: canary through HTTPRoute and
//! VirtualService, abort, blue-green, and invalid specs.

mod support;

use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use support::{Cluster, repo_root, wait_for, web_route_rules};

const NS: &str = "default";

struct Env {
    c: Cluster,
    controller: tokio::task::JoinHandle<()>,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.controller.abort();
    }
}

async fn env(tag: &str) -> Env {
    let c = Cluster::start(tag).await;
    c.kubectl_ok(&["apply", "-f", repo_root().join("crds").to_str().unwrap()])
        .await;
    c.kubectl_ok(&[
        "apply",
        "-f",
        repo_root().join("e2e/crds").to_str().unwrap(),
    ])
    .await;
    let controller = tokio::spawn(weir::rollout::controller::run(c.client()));
    Env { c, controller }
}

fn api(c: &Cluster, group: &str, version: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::namespaced_with(c.client(), NS, &ar)
}

fn rollouts(c: &Cluster) -> Api<DynamicObject> {
    api(c, "weir.io", "v1alpha1", "Rollout", "rollouts")
}

async fn apply(c: &Cluster, a: &Api<DynamicObject>, obj: Value) {
    let name = obj["metadata"]["name"].as_str().unwrap().to_string();
    a.patch(
        &name,
        &PatchParams::apply("test").force(),
        &Patch::Apply(&obj),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {name}: {e}"));
    let _ = c;
}

async fn services(c: &Cluster, names: &[&str]) {
    let svc = api(c, "", "v1", "Service", "services");
    for n in names {
        apply(c, &svc, json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": n}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})).await;
    }
}

fn rollout(image: &str, strategy: Value) -> Value {
    json!({
        "apiVersion": "weir.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": image}]}},
            "strategy": strategy}
    })
}

fn canary(routing: Value) -> Value {
    json!({"canary": {"stableService": "web-stable", "canaryService": "web-canary", "scaleDownDelaySeconds": 1, "abortScaleDownDelaySeconds": 1,
        "trafficRouting": routing,
        "steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"pause": {"duration": "2s"}}, {"setWeight": 100}]}})
}

async fn status(c: &Cluster) -> Value {
    rollouts(c)
        .get("web")
        .await
        .map(|r| r.data["status"].clone())
        .unwrap_or(Value::Null)
}

async fn wait_status(c: &Cluster, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    wait_for(what, Duration::from_secs(60), || async {
        let s = status(c).await;
        f(&s).then_some(s)
    })
    .await
}

async fn replica_sets(c: &Cluster) -> Vec<(String, i64)> {
    let rs = api(c, "apps", "v1", "ReplicaSet", "replicasets");
    let mut out: Vec<(String, i64)> = rs
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|r| {
            (
                r.metadata
                    .labels
                    .clone()
                    .unwrap_or_default()
                    .get("weir.io/pod-template-hash")
                    .cloned()
                    .unwrap_or_default(),
                r.data["spec"]["replicas"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    out.sort();
    out
}

async fn promote(c: &Cluster) {
    rollouts(c)
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"pauseConditions": null}})),
        )
        .await
        .unwrap();
}

const ADMIN_RULE: &str = r#"{"matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}], "backendRefs": [{"name": "admin", "port": 8080}]}"#;

async fn gateway_env(tag: &str) -> Env {
    let e = env(tag).await;
    services(&e.c, &["web-stable", "web-canary", "admin"]).await;
    let admin: Value = serde_json::from_str(ADMIN_RULE).unwrap();
    let route = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "web"},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [
            {"backendRefs": [{"name": "web-stable", "port": 80, "weight": 100}, {"name": "web-canary", "port": 80, "weight": 0}]},
            admin]}});
    apply(
        &e.c,
        &api(
            &e.c,
            "gateway.networking.k8s.io",
            "v1",
            "HTTPRoute",
            "httproutes",
        ),
        route,
    )
    .await;
    e
}

/// The unrelated rule as stored (with the CRD's defaults), before any rollout.
async fn admin_rule(c: &Cluster) -> Value {
    web_route_rules(c).await[1].clone()
}

fn backend_weights(rules: &Value) -> Vec<(String, i64)> {
    rules[0]["backendRefs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap().to_string(),
                b["weight"].as_i64().unwrap_or(1),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn canary_through_httproute_pauses_promotes_and_completes() {
    let e = gateway_env("canary-gw").await;
    let c = &e.c;
    let strategy = canary(json!({"gatewayAPI": {"httpRoutes": [{"name": "web"}]}}));
    let admin = admin_rule(c).await;
    assert_eq!(admin["backendRefs"][0]["name"], "admin");
    apply(c, &rollouts(c), rollout("web:1", strategy.clone())).await;
    let first = wait_status(c, "first revision Healthy", |s| s["phase"] == "Healthy").await;
    let stable_hash = first["stableRS"].as_str().unwrap().to_string();

    apply(c, &rollouts(c), rollout("web:2", strategy)).await;
    let paused = wait_status(c, "paused at weight 20", |s| {
        s["phase"] == "Paused" && s["currentStepIndex"] == 1
    })
    .await;
    let canary_hash = paused["currentPodHash"].as_str().unwrap().to_string();
    assert_ne!(canary_hash, stable_hash);
    assert_eq!(paused["weights"], json!({"canary": 20, "stable": 80}));
    assert_eq!(paused["stableRS"], stable_hash.as_str());
    let rules = web_route_rules(c).await;
    assert_eq!(
        backend_weights(&rules),
        vec![("web-stable".into(), 80), ("web-canary".into(), 20)]
    );
    assert_eq!(rules[1], admin, "the unrelated rule is untouched");
    let rs = replica_sets(c).await;
    assert!(
        rs.contains(&(canary_hash.clone(), 1)),
        "canary sized to 20% of 4 pods: {rs:?}"
    );
    assert!(rs.contains(&(stable_hash.clone(), 4)), "{rs:?}");
    // Services are pinned to their revisions.
    let svc = api(c, "", "v1", "Service", "services");
    assert_eq!(
        svc.get("web-stable").await.unwrap().data["spec"]["selector"]["weir.io/pod-template-hash"],
        stable_hash.as_str()
    );
    assert_eq!(
        svc.get("web-canary").await.unwrap().data["spec"]["selector"]["weir.io/pod-template-hash"],
        canary_hash.as_str()
    );

    promote(c).await;
    let done = wait_status(c, "Healthy on the new revision", |s| {
        s["phase"] == "Healthy" && s["stableRS"] == canary_hash.as_str()
    })
    .await;
    assert_eq!(done["weights"], json!({"canary": 0, "stable": 100}));
    let rules = web_route_rules(c).await;
    assert_eq!(
        backend_weights(&rules),
        vec![("web-stable".into(), 100), ("web-canary".into(), 0)]
    );
    assert_eq!(rules[1], admin);
    assert_eq!(
        svc.get("web-stable").await.unwrap().data["spec"]["selector"]["weir.io/pod-template-hash"],
        canary_hash.as_str()
    );
    wait_for(
        "old ReplicaSet scaled to 0 after the delay",
        Duration::from_secs(30),
        || async {
            let rs = replica_sets(c).await;
            (rs.contains(&(stable_hash.clone(), 0)) && rs.contains(&(canary_hash.clone(), 4)))
                .then_some(())
        },
    )
    .await;
    // Every step was recorded once.
    let events = api(c, "", "v1", "Event", "events")
        .list(&Default::default())
        .await
        .unwrap();
    let reasons: Vec<String> = events
        .items
        .iter()
        .map(|e| e.data["reason"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        reasons
            .iter()
            .filter(|r| *r == "RolloutStepCompleted")
            .count(),
        5,
        "{reasons:?}"
    );
    assert_eq!(
        reasons.iter().filter(|r| *r == "RolloutPaused").count(),
        2,
        "{reasons:?}"
    );
    assert_eq!(
        reasons.iter().filter(|r| *r == "RolloutPromoted").count(),
        1,
        "{reasons:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn canary_through_virtualservice_with_two_named_routes() {
    let e = env("canary-vs").await;
    let c = &e.c;
    services(c, &["web-stable", "web-canary"]).await;
    let dest = |w1: i64, w2: i64| json!([{"destination": {"host": "web-stable"}, "weight": w1}, {"destination": {"host": "web-canary"}, "weight": w2}]);
    let vs = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "web"},
        "spec": {"hosts": ["web"], "http": [
            {"name": "primary", "route": dest(100, 0)},
            {"name": "secondary", "match": [{"headers": {"x-beta": {"exact": "1"}}}], "route": dest(100, 0)},
            {"name": "other", "route": [{"destination": {"host": "legacy"}, "weight": 100}]}]}});
    let vs_api = api(
        c,
        "networking.istio.io",
        "v1",
        "VirtualService",
        "virtualservices",
    );
    apply(c, &vs_api, vs).await;
    let strategy = canary(
        json!({"istio": {"virtualServices": [{"name": "web", "routes": ["primary", "secondary"]}]}}),
    );
    apply(c, &rollouts(c), rollout("web:1", strategy.clone())).await;
    wait_status(c, "Healthy", |s| s["phase"] == "Healthy").await;
    apply(c, &rollouts(c), rollout("web:2", strategy)).await;
    wait_status(c, "paused at 20", |s| {
        s["phase"] == "Paused" && s["currentStepIndex"] == 1
    })
    .await;
    let http = vs_api.get("web").await.unwrap().data["spec"]["http"].clone();
    for i in 0..2 {
        assert_eq!(http[i]["route"], dest(80, 20), "route {i}");
    }
    assert_eq!(
        http[2]["route"][0]["weight"], 100,
        "unnamed route untouched"
    );
    promote(c).await;
    let done = wait_status(c, "Healthy on the new revision", |s| {
        s["phase"] == "Healthy" && s["stableRS"] == s["currentPodHash"]
    })
    .await;
    assert_eq!(done["weights"]["canary"], 0);
    let http = vs_api.get("web").await.unwrap().data["spec"]["http"].clone();
    for i in 0..2 {
        assert_eq!(http[i]["route"], dest(100, 0), "route {i}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn abort_sends_all_traffic_to_stable_and_degrades() {
    let e = gateway_env("abort").await;
    let c = &e.c;
    let strategy = canary(json!({"gatewayAPI": {"httpRoutes": [{"name": "web"}]}}));
    apply(c, &rollouts(c), rollout("web:1", strategy.clone())).await;
    let first = wait_status(c, "Healthy", |s| s["phase"] == "Healthy").await;
    let stable = first["stableRS"].as_str().unwrap().to_string();
    apply(c, &rollouts(c), rollout("web:2", strategy)).await;
    let paused = wait_status(c, "paused at 20", |s| {
        s["phase"] == "Paused" && s["currentStepIndex"] == 1
    })
    .await;
    let canary_hash = paused["currentPodHash"].as_str().unwrap().to_string();
    rollouts(c)
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"abort": true}})),
        )
        .await
        .unwrap();
    let degraded = wait_status(c, "Degraded after abort", |s| s["phase"] == "Degraded").await;
    assert_eq!(degraded["weights"], json!({"canary": 0, "stable": 100}));
    assert_eq!(
        backend_weights(&web_route_rules(c).await),
        vec![("web-stable".into(), 100), ("web-canary".into(), 0)]
    );
    assert_eq!(degraded["stableRS"], stable.as_str());
    assert!(degraded["abortedAt"].is_string());
    wait_for(
        "canary scaled down after the abort delay",
        Duration::from_secs(30),
        || async {
            let rs = replica_sets(c).await;
            (rs.contains(&(canary_hash.clone(), 0)) && rs.contains(&(stable.clone(), 4)))
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn blue_green_switches_preview_then_active() {
    let e = env("bluegreen").await;
    let c = &e.c;
    services(c, &["web-active", "web-preview"]).await;
    let strategy = json!({"blueGreen": {"activeService": "web-active", "previewService": "web-preview", "autoPromotionSeconds": 1, "scaleDownDelaySeconds": 1}});
    apply(c, &rollouts(c), rollout("web:1", strategy.clone())).await;
    let first = wait_status(c, "Healthy", |s| s["phase"] == "Healthy").await;
    let old = first["stableRS"].as_str().unwrap().to_string();
    // Record every selector change of both Services, in order.
    let svc = api(c, "", "v1", "Service", "services");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = tokio::spawn({
        let svc = svc.clone();
        async move {
            use futures::StreamExt;
            let mut s = kube::runtime::watcher(svc, Default::default()).boxed();
            while let Some(Ok(ev)) = s.next().await {
                if let kube::runtime::watcher::Event::Apply(o) = ev {
                    let _ = tx.send((
                        o.metadata.name.clone().unwrap_or_default(),
                        o.data["spec"]["selector"]["weir.io/pod-template-hash"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    ));
                }
            }
        }
    });
    apply(c, &rollouts(c), rollout("web:2", strategy)).await;
    let done = wait_status(c, "Healthy on the new revision", |s| {
        s["phase"] == "Healthy" && s["stableRS"] != old.as_str()
    })
    .await;
    let new = done["stableRS"].as_str().unwrap().to_string();
    let mut changes = Vec::new();
    while let Ok(ch) = rx.try_recv() {
        changes.push(ch);
    }
    watcher.abort();
    let preview_at = changes
        .iter()
        .position(|(n, h)| n == "web-preview" && *h == new)
        .expect("preview moved to the new revision");
    let active_at = changes
        .iter()
        .position(|(n, h)| n == "web-active" && *h == new)
        .expect("active moved to the new revision");
    assert!(
        preview_at < active_at,
        "preview switches before active: {changes:?}"
    );
    assert_eq!(done["blueGreen"]["activeSelector"], new.as_str());
    wait_for(
        "old revision scaled down",
        Duration::from_secs(30),
        || async {
            replica_sets(c)
                .await
                .contains(&(old.clone(), 0))
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_specs_get_an_invalid_spec_condition_naming_the_field() {
    let e = gateway_env("invalid").await;
    let c = &e.c;
    let cases = [
        (
            "missing-svc",
            json!({"canary": {"stableService": "nope", "canaryService": "web-canary", "steps": [{"setWeight": 10}]}}),
            "spec.strategy.canary.stableService: Service \"nope\" not found",
        ),
        (
            "missing-route",
            json!({"canary": {"stableService": "web-stable", "canaryService": "web-canary", "trafficRouting": {"gatewayAPI": {"httpRoutes": [{"name": "ghost"}]}}}}),
            "ghost",
        ),
        (
            "no-canary-svc",
            json!({"canary": {"stableService": "web-stable", "trafficRouting": {"gatewayAPI": {"httpRoutes": [{"name": "web"}]}}}}),
            "spec.strategy.canary.canaryService: Required value",
        ),
        (
            "same-svc",
            json!({"canary": {"stableService": "web-stable", "canaryService": "web-stable"}}),
            "must differ from stableService",
        ),
        (
            "bg-missing",
            json!({"blueGreen": {"activeService": "absent"}}),
            "spec.strategy.blueGreen.activeService: Service \"absent\" not found",
        ),
    ];
    let route = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "nostable"},
        "spec": {"rules": [{"backendRefs": [{"name": "admin", "port": 80}]}]}});
    apply(
        c,
        &api(
            c,
            "gateway.networking.k8s.io",
            "v1",
            "HTTPRoute",
            "httproutes",
        ),
        route,
    )
    .await;
    let mut all = cases.to_vec();
    all.push(("route-no-stable", json!({"canary": {"stableService": "web-stable", "canaryService": "web-canary", "trafficRouting": {"gatewayAPI": {"httpRoutes": [{"name": "nostable"}]}}}}), "no rule with a backendRef to the stable Service"));
    for (name, strategy, _) in &all {
        let mut ro = rollout("web:1", strategy.clone());
        ro["metadata"]["name"] = json!(name);
        apply(c, &rollouts(c), ro).await;
    }
    for (name, _, want) in &all {
        let s = wait_for(
            &format!("InvalidSpec on {name}"),
            Duration::from_secs(30),
            || async {
                let s = rollouts(c).get(name).await.ok()?.data["status"].clone();
                (s["phase"] == "Degraded").then_some(s)
            },
        )
        .await;
        let cond = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "InvalidSpec")
            .expect("InvalidSpec condition")
            .clone();
        assert_eq!(cond["status"], "True");
        assert!(
            cond["message"].as_str().unwrap().contains(want),
            "{name}: {cond}"
        );
    }
    // Nothing was created or re-weighted for an invalid Rollout.
    assert!(replica_sets(c).await.is_empty());
    assert_eq!(
        backend_weights(&web_route_rules(c).await),
        vec![("web-stable".into(), 100), ("web-canary".into(), 0)]
    );
    // A step with an unknown field never reaches the controller: the API refuses it.
    let bad = rollouts(c).create(&Default::default(), &serde_json::from_value(json!({"apiVersion": "weir.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "typo"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "w", "image": "w"}]}},
            "strategy": {"canary": {"steps": [{"setWeigth": 20}]}}}})).unwrap()).await;
    let err = bad.expect_err("a step with an unknown field is rejected");
    assert!(err.to_string().contains("steps[0]"), "{err}");
}
