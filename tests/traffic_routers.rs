//! The traffic routers against the in-process emulator: weights on the stored HTTPRoutes and
//! VirtualServices, no write when nothing changes, routes in another namespace, and bounded retries.

mod support;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};
use support::{Cluster, repo_root};
use weir::api::rollout::{
    GatewayApiTrafficRouting, HttpRouteRef, IstioTrafficRouting, TrafficRouting, VirtualServiceRef,
};
use weir::emulator::FaultConfig;
use weir::traffic::gateway_api::{ADDED_CANARY_REFS_ANNOTATION, desired_route};
use weir::traffic::{
    Backends, FIELD_MANAGER, MAX_WRITE_ATTEMPTS, TrafficError, Weights, routers_for,
};

fn http_routes() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    )
}

fn virtual_services() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService"),
        "virtualservices",
    )
}

fn backends() -> Backends {
    Backends {
        stable_service: "web-stable".into(),
        canary_service: "web-canary".into(),
        rollout_namespace: "default".into(),
    }
}

async fn cluster(tag: &str) -> Cluster {
    let c = Cluster::start(tag).await;
    let crds = repo_root().join("e2e/crds");
    c.kubectl_ok(&["apply", "-f", crds.to_str().unwrap()]).await;
    let namespaces: Api<Namespace> = Api::all(c.client());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "gateways"}})).unwrap(),
        )
        .await
        .unwrap();
    c
}

async fn create(c: &Cluster, resource: &ApiResource, namespace: &str, object: Value) {
    let api: Api<DynamicObject> = Api::namespaced_with(c.client(), namespace, resource);
    let object: DynamicObject = serde_json::from_value(object).unwrap();
    api.create(&PostParams::default(), &object).await.unwrap();
}

async fn stored(c: &Cluster, resource: &ApiResource, namespace: &str, name: &str) -> Value {
    let api: Api<DynamicObject> = Api::namespaced_with(c.client(), namespace, resource);
    serde_json::to_value(api.get(name).await.unwrap()).unwrap()
}

fn weir_writes(c: &Cluster) -> u64 {
    c.emulator.app.stats_json()["writesByManager"][FIELD_MANAGER]
        .as_u64()
        .unwrap_or(0)
}

/// The weights of the backendRefs of one rule, by Service name.
fn rule_weights(route: &Value, rule: usize) -> Vec<(String, i64)> {
    route["spec"]["rules"][rule]["backendRefs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["weight"].as_i64().unwrap_or(1),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, i64)]) -> Vec<(String, i64)> {
    list.iter().map(|(n, w)| (n.to_string(), *w)).collect()
}

fn admin_rule() -> Value {
    json!({
        "matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
        "backendRefs": [{"name": "admin", "port": 8080, "weight": 7}]
    })
}

fn gateway_routing(routes: &[(&str, Option<&str>)]) -> TrafficRouting {
    TrafficRouting {
        gateway_api: Some(GatewayApiTrafficRouting {
            http_routes: routes
                .iter()
                .map(|(name, namespace)| HttpRouteRef {
                    name: name.to_string(),
                    namespace: namespace.map(str::to_string),
                })
                .collect(),
        }),
        istio: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn http_routes_in_two_namespaces_are_weighted_and_left_alone_when_unchanged() {
    let c = cluster("traffic-gateway").await;
    let client = c.client();
    create(
        &c,
        &http_routes(),
        "default",
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "parentRefs": [{"name": "public"}],
                "hostnames": ["web.example.com"],
                "rules": [
                    admin_rule(),
                    {"backendRefs": [
                        {"name": "web-stable", "port": 80, "weight": 100},
                        {"name": "web-canary", "port": 80, "weight": 0}
                    ]}
                ]
            }
        }),
    )
    .await;
    // The shared gateway's route lives elsewhere and routes only to stable.
    create(
        &c,
        &http_routes(),
        "gateways",
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "edge", "namespace": "gateways"},
            "spec": {
                "parentRefs": [{"name": "edge"}],
                "rules": [{"backendRefs": [{"name": "web-stable", "namespace": "default", "port": 8080}]}]
            }
        }),
    )
    .await;
    let admin_before =
        stored(&c, &http_routes(), "default", "web").await["spec"]["rules"][0].clone();

    let routers = routers_for(
        &gateway_routing(&[("web", None), ("edge", Some("gateways"))]),
        "default",
    );
    let names: Vec<String> = routers.iter().map(|r| r.describe()).collect();
    assert_eq!(names, ["HTTPRoute default/web", "HTTPRoute gateways/edge"]);
    for router in &routers {
        assert_eq!(
            router.observe(&client, &backends()).await.unwrap(),
            Weights::ALL_STABLE
        );
    }
    assert_eq!(weir_writes(&c), 0, "observe never writes");

    // Steady state before a release: nothing to write anywhere.
    for router in &routers {
        router
            .set_weights(&client, &backends(), Weights::ALL_STABLE, false)
            .await
            .unwrap();
    }
    assert_eq!(weir_writes(&c), 0);

    let twenty = Weights::canary(20).unwrap();
    for router in &routers {
        router
            .set_weights(&client, &backends(), twenty, false)
            .await
            .unwrap();
    }
    assert_eq!(weir_writes(&c), 2, "one write per route");
    let web = stored(&c, &http_routes(), "default", "web").await;
    assert_eq!(
        rule_weights(&web, 1),
        pairs(&[("web-stable", 80), ("web-canary", 20)])
    );
    assert_eq!(
        web["spec"]["rules"][0], admin_before,
        "the unrelated rule is untouched"
    );
    assert_eq!(web["spec"]["hostnames"], json!(["web.example.com"]));
    let edge = stored(&c, &http_routes(), "gateways", "edge").await;
    assert_eq!(
        rule_weights(&edge, 0),
        pairs(&[("web-stable", 80), ("web-canary", 20)])
    );
    let added = &edge["spec"]["rules"][0]["backendRefs"][1];
    assert_eq!(added["port"], 8080);
    assert_eq!(added["namespace"], "default");
    assert_eq!(
        edge["metadata"]["annotations"][ADDED_CANARY_REFS_ANNOTATION],
        "[0]"
    );
    for router in &routers {
        assert_eq!(router.observe(&client, &backends()).await.unwrap(), twenty);
    }

    // The same weights again: no write.
    for router in &routers {
        router
            .set_weights(&client, &backends(), twenty, false)
            .await
            .unwrap();
    }
    assert_eq!(weir_writes(&c), 2, "unchanged weights issue no write");

    // The release completes: all traffic on stable, and the backendRef weir added is gone.
    for router in &routers {
        router
            .set_weights(&client, &backends(), Weights::ALL_STABLE, true)
            .await
            .unwrap();
    }
    assert_eq!(weir_writes(&c), 4);
    let web = stored(&c, &http_routes(), "default", "web").await;
    assert_eq!(
        rule_weights(&web, 1),
        pairs(&[("web-stable", 100), ("web-canary", 0)]),
        "the user's canary ref stays"
    );
    assert_eq!(web["spec"]["rules"][0], admin_before);
    let edge = stored(&c, &http_routes(), "gateways", "edge").await;
    assert_eq!(rule_weights(&edge, 0), pairs(&[("web-stable", 100)]));
    assert!(
        edge["metadata"]["annotations"]
            .get(ADDED_CANARY_REFS_ANNOTATION)
            .is_none()
    );
    assert!(
        edge["metadata"]["managedFields"]
            .as_array()
            .is_some_and(|m| m.iter().any(|f| f["manager"] == FIELD_MANAGER)),
        "writes are recorded under {FIELD_MANAGER}: {}",
        edge["metadata"]["managedFields"]
    );
    for router in &routers {
        router
            .set_weights(&client, &backends(), Weights::ALL_STABLE, true)
            .await
            .unwrap();
    }
    assert_eq!(weir_writes(&c), 4, "completing twice writes once");
}

#[tokio::test(flavor = "multi_thread")]
async fn virtual_service_named_routes_are_weighted() {
    let c = cluster("traffic-istio").await;
    let client = c.client();
    let route = |name: &str, stable_host: &str, canary_host: &str| {
        json!({
            "name": name,
            "match": [{"uri": {"prefix": format!("/{name}")}}],
            "route": [
                {"destination": {"host": stable_host, "port": {"number": 80}}, "weight": 100},
                {"destination": {"host": canary_host, "port": {"number": 80}}, "weight": 0}
            ]
        })
    };
    create(
        &c,
        &virtual_services(),
        "default",
        json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "hosts": ["web.example.com"],
                "gateways": ["public"],
                "http": [
                    route("primary", "web-stable", "web-canary"),
                    route("internal", "web-stable.default.svc.cluster.local", "web-canary.default.svc"),
                    route("untouched", "web-stable", "web-canary")
                ]
            }
        }),
    )
    .await;
    let routing = TrafficRouting {
        gateway_api: None,
        istio: Some(IstioTrafficRouting {
            virtual_services: vec![VirtualServiceRef {
                name: "web".into(),
                routes: vec!["primary".into(), "internal".into()],
            }],
        }),
    };
    let routers = routers_for(&routing, "default");
    let [router] = routers.as_slice() else {
        panic!("one router");
    };
    assert_eq!(router.describe(), "VirtualService default/web");
    let before = stored(&c, &virtual_services(), "default", "web").await;

    let forty = Weights::canary(40).unwrap();
    router
        .set_weights(&client, &backends(), forty, false)
        .await
        .unwrap();
    assert_eq!(weir_writes(&c), 1);
    let vs = stored(&c, &virtual_services(), "default", "web").await;
    for index in [0, 1] {
        let r = &vs["spec"]["http"][index]["route"];
        assert_eq!(
            (r[0]["weight"].clone(), r[1]["weight"].clone()),
            (json!(60), json!(40)),
            "http[{index}]"
        );
    }
    assert_eq!(
        vs["spec"]["http"][2], before["spec"]["http"][2],
        "unnamed route untouched"
    );
    assert_eq!(vs["spec"]["hosts"], before["spec"]["hosts"]);
    assert_eq!(router.observe(&client, &backends()).await.unwrap(), forty);

    router
        .set_weights(&client, &backends(), forty, false)
        .await
        .unwrap();
    assert_eq!(weir_writes(&c), 1, "unchanged weights issue no write");

    router
        .set_weights(&client, &backends(), Weights::ALL_STABLE, true)
        .await
        .unwrap();
    let vs = stored(&c, &virtual_services(), "default", "web").await;
    assert_eq!(vs["spec"]["http"][0]["route"][1]["weight"], 0);
    assert_eq!(vs["spec"]["http"][0]["route"][0]["weight"], 100);
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_and_unmanageable_routes_are_invalid_spec() {
    let c = cluster("traffic-invalid").await;
    let client = c.client();
    create(
        &c,
        &http_routes(),
        "default",
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"rules": [admin_rule()]}
        }),
    )
    .await;
    let twenty = Weights::canary(20).unwrap();
    let routers = routers_for(
        &gateway_routing(&[("web", None), ("gone", None)]),
        "default",
    );
    let [web, gone] = routers.as_slice() else {
        panic!("two routers");
    };
    let err = web
        .set_weights(&client, &backends(), twenty, false)
        .await
        .unwrap_err();
    assert!(err.is_invalid_spec());
    assert_eq!(
        err.to_string(),
        "HTTPRoute default/web has no rule with a backendRef to the stable Service web-stable"
    );
    let err = gone.observe(&client, &backends()).await.unwrap_err();
    assert!(matches!(err, TrafficError::NotFound { .. }), "{err:?}");
    assert!(err.is_invalid_spec());
    assert_eq!(weir_writes(&c), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn conflicts_are_retried_a_bounded_number_of_times() {
    let c = cluster("traffic-conflict").await;
    let client = c.client();
    create(
        &c,
        &http_routes(),
        "default",
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"rules": [{"backendRefs": [
                {"name": "web-stable", "port": 80, "weight": 100},
                {"name": "web-canary", "port": 80, "weight": 0}
            ]}]}
        }),
    )
    .await;
    *c.emulator.app.faults.write().unwrap() = FaultConfig {
        error_rate: 1.0,
        error_codes: vec![409],
        ..FaultConfig::default()
    };
    let routers = routers_for(&gateway_routing(&[("web", None)]), "default");
    let [router] = routers.as_slice() else {
        panic!("one router");
    };
    let twenty = Weights::canary(20).unwrap();
    let err = router
        .set_weights(&client, &backends(), twenty, false)
        .await
        .unwrap_err();
    assert!(
        matches!(err, TrafficError::Conflict { attempts, .. } if attempts == MAX_WRITE_ATTEMPTS),
        "{err:?}"
    );
    assert!(!err.is_invalid_spec());
    assert_eq!(weir_writes(&c), MAX_WRITE_ATTEMPTS as u64);

    // Once the conflicts stop, the next call goes through.
    *c.emulator.app.faults.write().unwrap() = FaultConfig::default();
    router
        .set_weights(&client, &backends(), twenty, false)
        .await
        .unwrap();
    let web = stored(&c, &http_routes(), "default", "web").await;
    assert_eq!(
        rule_weights(&web, 0),
        pairs(&[("web-stable", 80), ("web-canary", 20)])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_patch_is_refused_when_the_route_changed_since_it_was_read() {
    let c = cluster("traffic-guard").await;
    create(
        &c,
        &http_routes(),
        "default",
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"rules": [{"backendRefs": [{"name": "web-stable", "port": 80}]}]}
        }),
    )
    .await;
    let read = stored(&c, &http_routes(), "default", "web").await;
    let change = desired_route(&read, &backends(), Weights::canary(10).unwrap(), false)
        .unwrap()
        .unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(c.client(), "default", &http_routes());
    // Someone else writes in between.
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "web"}}})),
    )
    .await
    .unwrap();
    let err = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(change.merge_patch(&read)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.is_conflict()),
        "{err:?}"
    );
    let now = stored(&c, &http_routes(), "default", "web").await;
    assert_eq!(
        rule_weights(&now, 0),
        pairs(&[("web-stable", 1)]),
        "the stale write changed nothing"
    );
}
