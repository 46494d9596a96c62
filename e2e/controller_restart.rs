//! A controller restart mid-rollout: `weir run` is SIGKILLed while the release waits for a
//! promote and again in the middle of a timed pause; each time a new `weir run` picks the release
//! up from the Rollout's status, it completes, and no step's Event is recorded twice.

use serde_json::json;

use crate::harness::{Env, HTTP_ROUTE, V1, V2, rollout, services};

fn strategy() -> serde_json::Value {
    json!({"canary": {"stableService": "web-stable", "canaryService": "web-canary",
        "scaleDownDelaySeconds": 1,
        "trafficRouting": {"gatewayAPI": {"httpRoutes": [{"name": "web"}]}},
        "steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"pause": {"duration": "3s"}}, {"setWeight": 100}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_restart() {
    let env = Env::start("restart").await;
    let weir = env.weir_run();
    env.apply(&services(&["web-stable", "web-canary"])).await;
    env.apply(HTTP_ROUTE).await;
    env.apply(&rollout(V1, strategy())).await;
    env.wait_status("the first revision Healthy", |s| s["phase"] == "Healthy")
        .await;

    env.apply(&rollout(V2, strategy())).await;
    let paused = env
        .wait_status("the release waiting for promote at 20%", |s| {
            s["phase"] == "Paused" && s["currentStepIndex"] == 1
        })
        .await;
    let new = paused["currentPodHash"]
        .as_str()
        .expect("currentPodHash")
        .to_owned();
    weir.kill().await;
    // The promote lands while no controller runs; the next one must act on it.
    env.kubectl_weir_ok(&["promote", "web"]).await;
    let weir = env.weir_run();
    env.wait_status("the timed pause reached after the restart", |s| {
        s["currentStepIndex"] == 3
    })
    .await;
    assert_eq!(env.http_route_weights().await, (50, 50));
    weir.kill().await;
    let _weir = env.weir_run();
    env.wait_status("Healthy on the new revision", |s| {
        s["phase"] == "Healthy" && s["stableRS"] == new.as_str()
    })
    .await;
    assert_eq!(env.http_route_weights().await, (100, 0));
    let reasons = env.rollout_event_reasons().await;
    let count = |r: &str| reasons.iter().filter(|x| *x == r).count();
    assert_eq!(count("RolloutStepCompleted"), 5, "{reasons:?}");
    assert_eq!(count("RolloutPaused"), 2, "{reasons:?}");
    assert_eq!(count("RolloutPromoted"), 1, "{reasons:?}");
    assert_eq!(
        count("RolloutCompleted"),
        2,
        "first deploy and release: {reasons:?}"
    );
}
