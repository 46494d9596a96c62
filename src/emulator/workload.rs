//! Simulated workload controllers: ReplicaSet and Deployment status follow their spec after a delay, and
//! Pods appear for ReplicaSets, the way kube-controller-manager and the kubelet would make them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::http::App;
use super::object_rules::{self, DeleteOptions, WriteContext};
use super::resources::ResourceType;
use super::selectors::LabelSelector;
use super::store::{ListOptions, ObjKey, Store};

/// Label that makes a ReplicaSet's pods never become ready, whatever the fault configuration says.
pub const NEVER_READY_LABEL: &str = "emulator.weir.io/never-ready";

const MANAGER: &str = "kube-controller-manager";

/// Runs the simulated controllers until the task is dropped.
pub async fn run(app: Arc<App>, delay: Duration) {
    let store = app.store.clone();
    let (Some(rs_type), Some(deploy_type), Some(pod_type)) = (
        store.resource("apps", "v1", "replicasets"),
        store.resource("apps", "v1", "deployments"),
        store.resource("", "v1", "pods"),
    ) else {
        return;
    };
    let kinds = [rs_type.clone(), deploy_type.clone()];
    let mut cursors: Vec<u64> = vec![0; kinds.len()];
    let mut receivers: Vec<_> = kinds.iter().map(|k| store.subscribe(&k.key())).collect();
    let mut pending: HashMap<(usize, ObjKey), Instant> = HashMap::new();
    loop {
        for (i, k) in kinds.iter().enumerate() {
            receivers[i].mark_unchanged();
            match store.events_since(&k.key(), cursors[i], 4096) {
                Ok(events) => {
                    for e in events {
                        cursors[i] = e.rv;
                        let ns = e
                            .object
                            .pointer("/metadata/namespace")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        let key = (ns.to_string(), object_rules::name_of(&e.object).to_string());
                        pending
                            .entry((i, key))
                            .or_insert_with(|| Instant::now() + delay);
                    }
                }
                Err(_) => {
                    // Fell behind the history: re-examine everything.
                    cursors[i] = store.current_rv();
                    if let Ok(page) = store.list(k, &ListOptions::default()) {
                        for o in page.items {
                            let ns = o
                                .pointer("/metadata/namespace")
                                .and_then(Value::as_str)
                                .unwrap_or_default();
                            pending.insert(
                                (i, (ns.into(), object_rules::name_of(&o).into())),
                                Instant::now() + delay,
                            );
                        }
                    }
                }
            }
        }
        let now = Instant::now();
        let due: Vec<(usize, ObjKey)> = pending
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &due {
            pending.remove(k);
            let (i, (ns, name)) = k;
            if *i == 0 {
                reconcile_replica_set(&app, &rs_type, &pod_type, ns, name);
            } else {
                reconcile_deployment(&store, &deploy_type, ns, name);
            }
            // A release makes a thousand ReplicaSets due at once: between them, let the requests
            // waiting on this worker thread be served, as kube-controller-manager would not hold
            // up the API server.
            tokio::task::yield_now().await;
        }
        let next = pending.values().min().copied();
        let (a, b) = receivers.split_at_mut(1);
        tokio::select! {
            _ = a[0].changed() => {}
            _ = b[0].changed() => {}
            _ = async { match next { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {}
        }
    }
}

fn replicas(obj: &Value) -> i64 {
    obj.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(0)
}

fn never_ready(app: &App, rs: &Value) -> bool {
    let template = json!({"metadata": {"labels": rs.pointer("/spec/template/metadata/labels").cloned().unwrap_or_default()}});
    if template
        .pointer(&format!(
            "/metadata/labels/{}",
            NEVER_READY_LABEL.replace('/', "~1")
        ))
        .and_then(Value::as_str)
        == Some("true")
    {
        return true;
    }
    app.fault_config()
        .never_ready_selector
        .and_then(|s| LabelSelector::parse(&s).ok())
        .is_some_and(|sel| !sel.is_empty() && sel.matches(&template))
}

fn reconcile_replica_set(
    app: &App,
    rs_type: &ResourceType,
    pod_type: &ResourceType,
    ns: &str,
    name: &str,
) {
    let store = &app.store;
    let Ok(rs) = store.get(rs_type, ns, name) else {
        return;
    };
    if rs.pointer("/metadata/deletionTimestamp").is_some() {
        return;
    }
    let uid = object_rules::uid_of(&rs).to_string();
    let want = replicas(&rs);
    let unready = never_ready(app, &rs);
    let pods = store.dependents(pod_type, ns, &uid);
    let ctx = WriteContext::internal(MANAGER);
    let have = pods.len() as i64;
    for _ in have..want {
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": format!("{name}-"),
                "namespace": ns,
                "labels": rs.pointer("/spec/template/metadata/labels").cloned().unwrap_or(json!({})),
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}],
            },
            "spec": rs.pointer("/spec/template/spec").cloned().unwrap_or(json!({})),
        });
        let _ = store.create(pod_type, ns, pod, &ctx).map(|created| {
            let status_ctx = WriteContext {
                subresource: Some("status".into()),
                ..WriteContext::internal("kubelet")
            };
            let ready = if unready { "False" } else { "True" };
            let now = object_rules::now_rfc3339();
            let pod_name = object_rules::name_of(&created).to_string();
            store.modify(pod_type, ns, &pod_name, &status_ctx, false, |cur| {
                let mut p = cur.cloned().unwrap_or_default();
                p["status"] = json!({
                    "phase": "Running",
                    "podIP": format!("10.244.{}.{}", fastrand::u8(1..255), fastrand::u8(1..255)),
                    "startTime": now,
                    "conditions": [
                        {"type": "Ready", "status": ready, "lastTransitionTime": now},
                        {"type": "ContainersReady", "status": ready, "lastTransitionTime": now},
                    ],
                });
                Ok(p)
            })
        });
    }
    // Scale down newest first, as the ReplicaSet controller prefers younger pods.
    let mut sorted: Vec<&Arc<Value>> = pods.iter().collect();
    sorted.sort_by_key(|p| {
        std::cmp::Reverse(
            p.pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        )
    });
    for pod in sorted.into_iter().take((have - want).max(0) as usize) {
        let _ = store.delete(
            pod_type,
            ns,
            object_rules::name_of(pod),
            &DeleteOptions::default(),
            &ctx,
        );
    }
    let ready = if unready { 0 } else { want };
    let generation = rs
        .pointer("/metadata/generation")
        .cloned()
        .unwrap_or(json!(1));
    let mut status = json!({"replicas": want, "observedGeneration": generation});
    if let Some(m) = status.as_object_mut() {
        for (k, v) in [
            ("fullyLabeledReplicas", want),
            ("readyReplicas", ready),
            ("availableReplicas", ready),
        ] {
            if v > 0 {
                m.insert(k.into(), json!(v));
            }
        }
    }
    if rs.get("status") == Some(&status) {
        return;
    }
    let status_ctx = WriteContext {
        subresource: Some("status".into()),
        ..WriteContext::internal(MANAGER)
    };
    let _ = store.modify(rs_type, ns, name, &status_ctx, false, |cur| {
        let mut o = cur.cloned().unwrap_or_default();
        o["status"] = status.clone();
        Ok(o)
    });
}

fn reconcile_deployment(store: &Store, deploy_type: &ResourceType, ns: &str, name: &str) {
    let Ok(d) = store.get(deploy_type, ns, name) else {
        return;
    };
    let want = replicas(&d);
    let generation = d
        .pointer("/metadata/generation")
        .cloned()
        .unwrap_or(json!(1));
    let conditions = |now: &str| {
        json!([
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability.", "lastTransitionTime": now, "lastUpdateTime": now},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable", "message": format!("ReplicaSet \"{name}\" has successfully progressed."), "lastTransitionTime": now, "lastUpdateTime": now},
        ])
    };
    let counts = json!({"replicas": want, "updatedReplicas": want, "readyReplicas": want, "availableReplicas": want, "observedGeneration": generation});
    let current = d.get("status").cloned().unwrap_or_default();
    let same = [
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
        "observedGeneration",
    ]
    .iter()
    .all(|k| current.get(*k) == counts.get(*k));
    if same && current.get("conditions").is_some() {
        return;
    }
    let now = object_rules::now_rfc3339();
    let mut status = counts;
    status["conditions"] = conditions(&now);
    let ctx = WriteContext {
        subresource: Some("status".into()),
        ..WriteContext::internal(MANAGER)
    };
    let _ = store.modify(deploy_type, ns, name, &ctx, false, |cur| {
        let mut o = cur.cloned().unwrap_or_default();
        o["status"] = status.clone();
        Ok(o)
    });
}
