//! Two `weir run` replicas: one leads through a coordination Lease, the other waits. Killing the
//! leader hands the Lease over once it expires, and the rollout in progress completes under the new
//! leader.

mod support;

use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use support::{Cluster, repo_root, wait_for};

const WAIT: Duration = Duration::from_secs(60);
/// Short, so the test is quick; the handover waits for it to expire.
const LEASE: &str = "2s";

fn replica(c: &Cluster, identity: &str) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "--kubeconfig"])
        .arg(&c.kubeconfig)
        .args([
            "--metrics-addr",
            "off",
            "--leader-elect",
            "--lease-namespace",
            "default",
        ])
        .args([
            "--lease-duration",
            LEASE,
            "--renew-deadline",
            "1500ms",
            "--retry-period",
            "200ms",
        ])
        .args(["--leader-identity", identity])
        .arg("--cache-dir")
        .arg(c.dir.path().join(format!("cache-{identity}")))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start weir run")
}

async fn holder(c: &Cluster) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(c.client(), "default");
    leases
        .get_opt("weir")
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
}

async fn rollout_status(rollouts: &Api<DynamicObject>) -> Value {
    rollouts
        .get("web")
        .await
        .map(|r| r.data["status"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_hands_over_and_the_rollout_completes() {
    let c = Cluster::start("leader").await;
    c.kubectl_ok(&["apply", "-f", repo_root().join("crds").to_str().unwrap()])
        .await;
    let mut a = replica(&c, "replica-a");
    let mut b = replica(&c, "replica-b");
    let first = wait_for("a leader", WAIT, || holder(&c)).await;

    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("weir.io", "v1alpha1", "Rollout"),
        "rollouts",
    );
    let rollouts: Api<DynamicObject> = Api::namespaced_with(c.client(), "default", &ar);
    let rollout = |image: &str| {
        json!({"apiVersion": "weir.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": image}]}},
                "strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]}}}})
    };
    let apply = |obj: Value| {
        let rollouts = rollouts.clone();
        async move {
            rollouts
                .patch(
                    "web",
                    &PatchParams::apply("test").force(),
                    &Patch::Apply(&obj),
                )
                .await
                .unwrap();
        }
    };
    apply(rollout("web:1")).await;
    wait_for("web:1 Healthy", WAIT, || async {
        (rollout_status(&rollouts).await["phase"] == "Healthy").then_some(())
    })
    .await;
    apply(rollout("web:2")).await;
    wait_for("web:2 paused at 50%", WAIT, || async {
        (rollout_status(&rollouts).await["phase"] == "Paused").then_some(())
    })
    .await;

    // The leader dies mid-rollout; the follower takes the Lease once it expires.
    let (leader, survivor) = if first == "replica-a" {
        (&mut a, "replica-b")
    } else {
        (&mut b, "replica-a")
    };
    leader.kill().await.unwrap();
    wait_for("the follower to lead", WAIT, || async {
        (holder(&c).await.as_deref() == Some(survivor)).then_some(())
    })
    .await;

    // A person promotes; the new leader finishes the release.
    rollouts
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"pauseConditions": null}})),
        )
        .await
        .unwrap();
    wait_for("web:2 Healthy under the new leader", WAIT, || async {
        let s = rollout_status(&rollouts).await;
        (s["phase"] == "Healthy" && s["stableRS"] == s["currentPodHash"]).then_some(())
    })
    .await;
    let leases: Api<Lease> = Api::namespaced(c.client(), "default");
    let lease = leases.get("weir").await.unwrap().spec.unwrap();
    assert_eq!(lease.holder_identity.as_deref(), Some(survivor));
    assert_eq!(
        lease.lease_transitions,
        Some(2),
        "one acquisition, one handover"
    );
}
