//! Canary promote: a release through an HTTPRoute stops at its `pause: {}` step with 20% of the
//! traffic, `kubectl weir promote` lets it go on through 50%, and it ends Healthy on the new
//! revision with all traffic on it.

use serde_json::json;

use crate::harness::{Env, HTTP_ROUTE, V1, V2, WAIT, rollout, services};
use crate::support::wait_for;

fn strategy() -> serde_json::Value {
    json!({"canary": {"stableService": "web-stable", "canaryService": "web-canary",
        "scaleDownDelaySeconds": 1,
        "trafficRouting": {"gatewayAPI": {"httpRoutes": [{"name": "web"}]}},
        "steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"pause": {"duration": "2s"}}, {"setWeight": 100}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_promote() {
    let env = Env::start("canary-promote").await;
    let _weir = env.weir_run();
    env.apply(&services(&["web-stable", "web-canary"])).await;
    env.apply(HTTP_ROUTE).await;
    env.apply(&rollout(V1, strategy())).await;
    let first = env
        .wait_status("the first revision Healthy", |s| s["phase"] == "Healthy")
        .await;
    let old = first["stableRS"].as_str().expect("stableRS").to_owned();

    env.apply(&rollout(V2, strategy())).await;
    let paused = env
        .wait_status("the release paused at 20%", |s| {
            s["phase"] == "Paused" && s["currentStepIndex"] == 1
        })
        .await;
    let new = paused["currentPodHash"]
        .as_str()
        .expect("currentPodHash")
        .to_owned();
    assert_ne!(new, old);
    assert_eq!(env.http_route_weights().await, (80, 20));
    assert_eq!(
        env.selected_hash("web-stable").await.as_deref(),
        Some(old.as_str())
    );
    assert_eq!(
        env.selected_hash("web-canary").await.as_deref(),
        Some(new.as_str())
    );
    let tree = env.kubectl_weir_ok(&["get", "rollout", "web"]).await;
    assert!(tree.contains("Paused"), "{tree}");
    // While paused, `status` says "still in progress".
    let pending = env.kubectl_weir(&["status", "web"]).await;
    assert_eq!(pending.status.code(), Some(2), "{pending:?}");

    env.kubectl_weir_ok(&["promote", "web"]).await;
    // Every weight the route carries from here on, in order.
    let seen = std::cell::RefCell::new(vec![20]);
    wait_for("Healthy on the new revision", WAIT, || async {
        let (_, canary) = env.http_route_weights().await;
        let s = env.status().await;
        let mut seen = seen.borrow_mut();
        if seen.last() != Some(&canary) {
            seen.push(canary);
        }
        (s["phase"] == "Healthy" && s["stableRS"] == new.as_str()).then_some(())
    })
    .await;
    let seen = seen.into_inner();
    assert!(seen.contains(&50), "the route went through 50%: {seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] < w[1] || w[1] == 0),
        "weights only grow until all traffic is on the new stable: {seen:?}"
    );
    assert_eq!(env.http_route_weights().await, (100, 0));
    assert_eq!(
        env.selected_hash("web-stable").await.as_deref(),
        Some(new.as_str())
    );
    let done = env.kubectl_weir(&["status", "web"]).await;
    assert_eq!(done.status.code(), Some(0), "{done:?}");
    let reasons = env.rollout_event_reasons().await;
    let count = |r: &str| reasons.iter().filter(|x| *x == r).count();
    assert_eq!(count("RolloutPromoted"), 1, "{reasons:?}");
    assert_eq!(count("RolloutStepCompleted"), 5, "{reasons:?}");
}
