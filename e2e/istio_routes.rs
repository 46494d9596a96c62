//! Istio routes: a canary through a VirtualService's named HTTP routes; both named routes carry
//! the step weights, an unnamed route is left alone, and the release ends with everything on the
//! new stable revision.

use serde_json::{Value, json};

use crate::harness::{Env, V1, V2, WAIT, rollout, services};
use crate::support::wait_for;

fn destinations(stable: i64, canary: i64) -> Value {
    json!([{"destination": {"host": "web-stable"}, "weight": stable},
           {"destination": {"host": "web-canary"}, "weight": canary}])
}

fn virtual_service() -> String {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "web"},
        "spec": {"hosts": ["web"], "http": [
            {"name": "primary", "route": destinations(100, 0)},
            {"name": "beta", "match": [{"headers": {"x-beta": {"exact": "1"}}}], "route": destinations(100, 0)},
            {"name": "legacy", "route": [{"destination": {"host": "legacy"}, "weight": 100}]}]}})
    .to_string()
}

fn strategy() -> Value {
    json!({"canary": {"stableService": "web-stable", "canaryService": "web-canary",
        "scaleDownDelaySeconds": 1,
        "trafficRouting": {"istio": {"virtualServices": [{"name": "web", "routes": ["primary", "beta"]}]}},
        "steps": [{"setWeight": 30}, {"pause": {}}, {"setWeight": 60}, {"pause": {"duration": "2s"}}, {"setWeight": 100}]}})
}

/// The `route` of each HTTP route of VirtualService `web`, by position.
async fn routes(env: &Env) -> Vec<Value> {
    let api = env.api(
        "networking.istio.io",
        "v1",
        "VirtualService",
        "virtualservices",
    );
    let vs = env.get(&api, "web").await.expect("VirtualService web");
    vs["spec"]["http"]
        .as_array()
        .expect("http routes")
        .iter()
        .map(|r| r["route"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_routes() {
    let env = Env::start("istio-routes").await;
    let _weir = env.weir_run();
    env.apply(&services(&["web-stable", "web-canary"])).await;
    env.apply(&virtual_service()).await;
    let legacy = routes(&env).await[2].clone();
    env.apply(&rollout(V1, strategy())).await;
    env.wait_status("the first revision Healthy", |s| s["phase"] == "Healthy")
        .await;

    env.apply(&rollout(V2, strategy())).await;
    env.wait_status("the release paused at 30%", |s| {
        s["phase"] == "Paused" && s["currentStepIndex"] == 1
    })
    .await;
    let paused = routes(&env).await;
    assert_eq!(paused[0], destinations(70, 30));
    assert_eq!(paused[1], destinations(70, 30));
    assert_eq!(
        paused[2], legacy,
        "a route the Rollout does not name is untouched"
    );

    env.kubectl_weir_ok(&["promote", "web"]).await;
    wait_for("both named routes at 60%", WAIT, || async {
        let r = routes(&env).await;
        (r[0] == destinations(40, 60) && r[1] == destinations(40, 60)).then_some(())
    })
    .await;
    let done = env
        .wait_status("Healthy on the new revision", |s| {
            s["phase"] == "Healthy" && s["stableRS"] == s["currentPodHash"]
        })
        .await;
    assert_eq!(done["weights"]["canary"], 0);
    let end = routes(&env).await;
    assert_eq!(end[0], destinations(100, 0));
    assert_eq!(end[1], destinations(100, 0));
    assert_eq!(end[2], legacy);
}
