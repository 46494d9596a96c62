//! Blue-green: a new revision goes to the preview Service first while the active Service keeps
//! serving the old one; `kubectl weir promote` switches the active Service to it.

use serde_json::json;

use crate::harness::{Env, V1, V2, WAIT, rollout, services};
use crate::support::wait_for;

fn strategy() -> serde_json::Value {
    json!({"blueGreen": {"activeService": "web-active", "previewService": "web-preview",
        "autoPromotionEnabled": false, "scaleDownDelaySeconds": 1}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green() {
    let env = Env::start("blue-green").await;
    let _weir = env.weir_run();
    env.apply(&services(&["web-active", "web-preview"])).await;
    env.apply(&rollout(V1, strategy())).await;
    let first = env
        .wait_status("the first revision Healthy", |s| s["phase"] == "Healthy")
        .await;
    let old = first["stableRS"].as_str().expect("stableRS").to_owned();
    assert_eq!(
        env.selected_hash("web-active").await.as_deref(),
        Some(old.as_str())
    );

    env.apply(&rollout(V2, strategy())).await;
    let paused = env
        .wait_status("the preview ready and waiting for promote", |s| {
            s["phase"] == "Paused" && s["currentPodHash"] != old.as_str()
        })
        .await;
    let new = paused["currentPodHash"]
        .as_str()
        .expect("currentPodHash")
        .to_owned();
    assert_eq!(
        env.selected_hash("web-preview").await.as_deref(),
        Some(new.as_str())
    );
    assert_eq!(
        env.selected_hash("web-active").await.as_deref(),
        Some(old.as_str()),
        "production traffic stays on the old revision until promoted"
    );
    let pending = env.kubectl_weir(&["status", "web"]).await;
    assert_eq!(pending.status.code(), Some(2), "{pending:?}");

    env.kubectl_weir_ok(&["promote", "web"]).await;
    let done = env
        .wait_status("Healthy on the new revision", |s| {
            s["phase"] == "Healthy" && s["stableRS"] == new.as_str()
        })
        .await;
    assert_eq!(
        env.selected_hash("web-active").await.as_deref(),
        Some(new.as_str())
    );
    assert_eq!(done["blueGreen"]["activeSelector"], new.as_str());
    let status = env.kubectl_weir(&["status", "web"]).await;
    assert_eq!(status.status.code(), Some(0), "{status:?}");
    // The old revision is scaled away once the delay has passed.
    let sets = env.api("apps", "v1", "ReplicaSet", "replicasets");
    wait_for("the old revision scaled to zero", WAIT, || async {
        let old_set = env.get(&sets, &format!("web-{old}")).await?;
        (old_set["spec"]["replicas"] == 0).then_some(())
    })
    .await;
}
