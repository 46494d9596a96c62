//! kube-runtime against the emulator: a Controller on a weir CRD, and a watcher that survives dropped
//! connections without missing an event.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use support::{Cluster, repo_root, wait_for};
use weir::api::Rollout;

async fn install_crds(c: &Cluster) {
    c.kubectl_ok(&["apply", "-f", repo_root().join("crds").to_str().unwrap()])
        .await;
}

fn rollout(name: &str, replicas: i32) -> Rollout {
    serde_json::from_value(json!({
        "apiVersion": "weir.io/v1alpha1", "kind": "Rollout", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "app", "image": "app:1"}]}},
            "strategy": {"canary": {"steps": [{"setWeight": 50}]}}}
    }))
    .expect("valid rollout")
}

#[derive(Debug, thiserror::Error)]
#[error("reconcile failed: {0}")]
struct ReconcileError(#[source] kube::Error);

#[tokio::test(flavor = "multi_thread")]
async fn controller_reconciles_rollouts_created_through_the_emulator() {
    let c = Cluster::start("controller").await;
    install_crds(&c).await;
    let client = c.client();
    let api: Api<Rollout> = Api::default_namespaced(client.clone());

    // The reconciler records the generation it saw through the status subresource.
    async fn reconcile(ro: Arc<Rollout>, api: Arc<Api<Rollout>>) -> Result<Action, ReconcileError> {
        let name = ro.metadata.name.clone().unwrap_or_default();
        let generation = ro.metadata.generation.unwrap_or_default();
        let status = json!({"status": {"observedGeneration": generation, "message": format!("reconciled {name}")}});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .map_err(ReconcileError)?;
        Ok(Action::await_change())
    }
    fn error_policy(_: Arc<Rollout>, _: &ReconcileError, _: Arc<Api<Rollout>>) -> Action {
        Action::requeue(Duration::from_millis(100))
    }
    let controller = tokio::spawn(
        Controller::new(api.clone(), watcher::Config::default())
            .run(reconcile, error_policy, Arc::new(api.clone()))
            .for_each(|_| async {}),
    );

    for name in ["a", "b", "c"] {
        api.create(&PostParams::default(), &rollout(name, 1))
            .await
            .expect("create rollout");
    }
    api.patch(
        "b",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 4}})),
    )
    .await
    .unwrap();
    let want = BTreeMap::from([
        ("a".to_string(), 1),
        ("b".to_string(), 2),
        ("c".to_string(), 1),
    ]);
    wait_for(
        "every rollout reconciled at its latest generation",
        Duration::from_secs(30),
        || async {
            let list = api.list(&Default::default()).await.ok()?;
            let seen: BTreeMap<String, i64> = list
                .items
                .iter()
                .filter_map(|r| {
                    Some((
                        r.metadata.name.clone()?,
                        r.status.as_ref()?.observed_generation?,
                    ))
                })
                .collect();
            (seen == want).then_some(())
        },
    )
    .await;
    let b = api.get("b").await.unwrap();
    assert_eq!(b.status.unwrap().message.as_deref(), Some("reconciled b"));
    controller.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn watcher_resumes_after_dropped_connections_and_misses_nothing() {
    let c = Cluster::start("watcher").await;
    let cms: Api<ConfigMap> = Api::default_namespaced(c.client());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watch = tokio::spawn({
        let cms = cms.clone();
        async move {
            let mut stream = watcher::watcher(cms, watcher::Config::default()).boxed();
            while let Some(ev) = stream.next().await {
                if let Ok(ev) = ev
                    && tx.send(ev).is_err()
                {
                    break;
                }
            }
        }
    });
    // Wait for the initial list to finish so that every write below is a watch event.
    let mut inits = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("initial list")
            .unwrap()
        {
            Event::Init => inits += 1,
            Event::InitDone => break,
            _ => {}
        }
    }
    let total = 300;
    for i in 0..total {
        let cm: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": format!("cm{i}")}, "data": {"v": "1"}}),
        )
        .unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
        cms.patch(
            &format!("cm{i}"),
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"v": "2"}})),
        )
        .await
        .unwrap();
        if i % 50 == 25 {
            let dropped = c.raw("POST", "/emulator/drop-watches", None, "").await;
            assert_eq!(dropped.status, 200);
        }
        if i % 100 == 99 {
            cms.delete(&format!("cm{}", i - 1), &Default::default())
                .await
                .unwrap();
        }
    }
    let mut latest: BTreeMap<String, String> = BTreeMap::new();
    let mut versions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut deleted = BTreeSet::new();
    let expected_deleted: BTreeSet<String> = (0..total)
        .filter(|i| i % 100 == 98)
        .map(|i| format!("cm{i}"))
        .collect();
    tokio::time::timeout(Duration::from_secs(30), async {
        while latest.values().filter(|v| *v == "2").count() < total || deleted != expected_deleted {
            match rx.recv().await.expect("watcher ended") {
                Event::Apply(cm) | Event::InitApply(cm) => {
                    let name = cm.metadata.name.clone().unwrap();
                    let v = cm
                        .data
                        .unwrap_or_default()
                        .get("v")
                        .cloned()
                        .unwrap_or_default();
                    versions.entry(name.clone()).or_default().push(v.clone());
                    latest.insert(name, v);
                }
                Event::Delete(cm) => {
                    deleted.insert(cm.metadata.name.unwrap());
                }
                Event::Init => inits += 1,
                Event::InitDone => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "missing events: saw {} final versions, deletes {deleted:?}",
            latest.values().filter(|v| *v == "2").count()
        )
    });
    assert_eq!(
        inits, 1,
        "the watcher resumed from its resourceVersion instead of relisting"
    );
    for (name, seen) in &versions {
        assert_eq!(
            seen,
            &vec!["1".to_string(), "2".to_string()],
            "{name}: every change seen once, in order"
        );
    }
    assert_eq!(deleted, expected_deleted);
    watch.abort();
}
