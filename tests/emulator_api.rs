//! Semantics of the emulator's API, asserted on the wire: what a client of a real kube-apiserver relies on.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Cluster, repo_root, wait_for};
use weir::emulator::EmulatorConfig;

const CM: &str = "/api/v1/namespaces/default/configmaps";
const RO: &str = "/apis/weir.io/v1alpha1/namespaces/default/rollouts";
const JSON: Option<&str> = Some("application/json");
const MERGE: Option<&str> = Some("application/merge-patch+json");
const APPLY: Option<&str> = Some("application/apply-patch+yaml");

fn cm(name: &str) -> Vec<u8> {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
        .to_string()
        .into_bytes()
}

fn rollout(name: &str, extra_spec: Value) -> Value {
    let mut spec = json!({
        "replicas": 2,
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "app", "image": "app:1"}]}},
        "strategy": {"canary": {"canaryService": "c", "stableService": "s", "steps": [{"setWeight": 20}, {"pause": {}}]}},
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra_spec.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "weir.io/v1alpha1", "kind": "Rollout", "metadata": {"name": name}, "spec": spec})
}

async fn with_crds(tag: &str) -> Cluster {
    let c = Cluster::start(tag).await;
    for entry in std::fs::read_dir(repo_root().join("crds")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let r = c
            .raw(
                "POST",
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                Some("application/yaml"),
                text,
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_resource_version_gets_409() {
    let c = Cluster::start("stale-rv").await;
    let created = c.raw("POST", CM, JSON, cm("a")).await;
    assert_eq!(created.status, 201);
    let mut first = created.body.clone();
    let mut second = created.body.clone();
    first["data"]["k"] = json!("first");
    let ok = c
        .raw("PUT", &format!("{CM}/a"), JSON, first.to_string())
        .await;
    assert_eq!(ok.status, 200);
    assert_ne!(
        ok.body["metadata"]["resourceVersion"],
        created.body["metadata"]["resourceVersion"]
    );
    second["data"]["k"] = json!("second");
    let stale = c
        .raw("PUT", &format!("{CM}/a"), JSON, second.to_string())
        .await;
    assert_eq!(stale.status, 409);
    assert_eq!(stale.body["kind"], "Status");
    assert_eq!(stale.body["reason"], "Conflict");
    assert_eq!(
        stale.body["message"],
        "Operation cannot be fulfilled on configmaps \"a\": the object has been modified; please apply your changes to the latest version and try again"
    );
    let now = c.raw("GET", &format!("{CM}/a"), None, "").await;
    assert_eq!(
        now.body["data"]["k"], "first",
        "the stale write changed nothing"
    );
    // A merge patch carrying a stale resourceVersion is a conflict too.
    let rv = created.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap();
    let p = c
        .raw(
            "PATCH",
            &format!("{CM}/a"),
            MERGE,
            json!({"metadata": {"resourceVersion": rv}, "data": {"k": "x"}}).to_string(),
        )
        .await;
    assert_eq!(p.status, 409);
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_from_compacted_version_is_410_gone_and_recent_versions_resume() {
    let c = Cluster::start_with(
        "gone",
        EmulatorConfig {
            watch_history: 10,
            ..Default::default()
        },
    )
    .await;
    let first = c.raw("POST", CM, JSON, cm("c0")).await;
    let first_rv: u64 = first.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    for i in 1..30 {
        assert_eq!(
            c.raw("POST", CM, JSON, cm(&format!("c{i}"))).await.status,
            201
        );
    }
    let events = c
        .watch_events(
            &format!("{CM}?watch=true&resourceVersion={first_rv}"),
            Duration::from_secs(10),
            |e| !e.is_empty(),
        )
        .await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "ERROR");
    assert_eq!(events[0]["object"]["code"], 410);
    assert_eq!(events[0]["object"]["reason"], "Expired");
    assert!(
        events[0]["object"]["message"]
            .as_str()
            .unwrap()
            .starts_with("too old resource version")
    );

    // Resuming from a retained version replays exactly what came after it, in order.
    let list = c.raw("GET", CM, None, "").await;
    let rv: u64 = list.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let names: Vec<String> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 30);
    let resume_from = rv - 5;
    let events = c
        .watch_events(
            &format!("{CM}?watch=true&resourceVersion={resume_from}"),
            Duration::from_secs(10),
            |e| e.len() >= 5,
        )
        .await;
    let got: Vec<&str> = events
        .iter()
        .map(|e| e["object"]["metadata"]["resourceVersion"].as_str().unwrap())
        .collect();
    let want: Vec<String> = (resume_from + 1..=rv).map(|v| v.to_string()).collect();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_sends_bookmarks_and_initial_events() {
    let c = Cluster::start_with(
        "bookmarks",
        EmulatorConfig {
            bookmark_interval: Duration::from_millis(100),
            ..Default::default()
        },
    )
    .await;
    c.raw("POST", CM, JSON, cm("x")).await;
    let events = c
        .watch_events(&format!("{CM}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"), Duration::from_secs(10), |e| {
            e.iter().filter(|e| e["type"] == "BOOKMARK").count() >= 2
        })
        .await;
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["metadata"]["name"], "x");
    assert_eq!(events[1]["type"], "BOOKMARK");
    assert_eq!(
        events[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert_eq!(events[2]["type"], "BOOKMARK", "periodic bookmark");
}

#[tokio::test(flavor = "multi_thread")]
async fn server_side_apply_conflicts_and_force() {
    let c = with_crds("ssa").await;
    let a = rollout("web", json!({}));
    let r = c
        .raw(
            "PATCH",
            &format!("{RO}/web?fieldManager=alice"),
            APPLY,
            a.to_string(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // Re-applying the same configuration changes nothing.
    let again = c
        .raw(
            "PATCH",
            &format!("{RO}/web?fieldManager=alice"),
            APPLY,
            a.to_string(),
        )
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(
        again.body["metadata"]["resourceVersion"],
        r.body["metadata"]["resourceVersion"]
    );

    let mut b = json!({"apiVersion": "weir.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"}, "spec": {"replicas": 5}});
    let conflict = c
        .raw(
            "PATCH",
            &format!("{RO}/web?fieldManager=bob"),
            APPLY,
            b.to_string(),
        )
        .await;
    assert_eq!(conflict.status, 409, "{}", conflict.text);
    assert_eq!(conflict.body["reason"], "Conflict");
    assert_eq!(
        conflict.body["message"],
        "Apply failed with 1 conflict: conflict with \"alice\": .spec.replicas"
    );
    assert_eq!(
        conflict.body["details"]["causes"][0]["field"],
        ".spec.replicas"
    );
    assert_eq!(
        conflict.body["details"]["causes"][0]["reason"],
        "FieldManagerConflict"
    );

    let forced = c
        .raw(
            "PATCH",
            &format!("{RO}/web?fieldManager=bob&force=true"),
            APPLY,
            b.to_string(),
        )
        .await;
    assert_eq!(forced.status, 200, "{}", forced.text);
    assert_eq!(forced.body["spec"]["replicas"], 5);
    let owners: Vec<(String, bool)> = forced.body["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["manager"].as_str().unwrap().to_string(),
                m["fieldsV1"]["f:spec"].get("f:replicas").is_some(),
            )
        })
        .collect();
    assert!(owners.contains(&("bob".into(), true)), "{owners:?}");
    assert!(
        owners.contains(&("alice".into(), false)),
        "alice lost .spec.replicas: {owners:?}"
    );

    // Same value, different manager: shared ownership, no conflict.
    b["spec"]["replicas"] = json!(5);
    let mut shared = a.clone();
    shared["spec"]["replicas"] = json!(5);
    let ok = c
        .raw(
            "PATCH",
            &format!("{RO}/web?fieldManager=alice"),
            APPLY,
            shared.to_string(),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);

    // An update by another manager takes ownership, so the next apply conflicts.
    let upd = c
        .raw(
            "PATCH",
            &format!("{RO}/web?fieldManager=kubectl-scale"),
            MERGE,
            json!({"spec": {"replicas": 7}}).to_string(),
        )
        .await;
    assert_eq!(upd.status, 200);
    let conflict = c
        .raw(
            "PATCH",
            &format!("{RO}/web?fieldManager=alice"),
            APPLY,
            shared.to_string(),
        )
        .await;
    assert_eq!(conflict.status, 409);
    assert!(
        conflict.body["message"]
            .as_str()
            .unwrap()
            .contains("conflict with \"kubectl-scale\""),
        "{}",
        conflict.text
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_collection_background_foreground_and_finalizers() {
    let c = Cluster::start("gc").await;
    let owner = c.raw("POST", CM, JSON, cm("owner")).await.body;
    let uid = owner["metadata"]["uid"].as_str().unwrap();
    let dep = |name: &str, finalizers: Value| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "finalizers": finalizers,
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid, "blockOwnerDeletion": true}]}})
        .to_string()
    };
    assert_eq!(
        c.raw("POST", CM, JSON, dep("free", json!([]))).await.status,
        201
    );
    assert_eq!(
        c.raw("POST", CM, JSON, dep("held", json!(["test.weir.io/hold"])))
            .await
            .status,
        201
    );

    // Foreground: the owner waits, marked, until its dependents are gone.
    let del = c
        .raw(
            "DELETE",
            &format!("{CM}/owner"),
            JSON,
            json!({"propagationPolicy": "Foreground"}).to_string(),
        )
        .await;
    assert!(del.status == 200 || del.status == 202, "{}", del.text);
    let owner_now = c.raw("GET", &format!("{CM}/owner"), None, "").await;
    assert_eq!(
        owner_now.status, 200,
        "owner still present while a dependent is held"
    );
    assert!(owner_now.body["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(
        owner_now.body["metadata"]["finalizers"],
        json!(["foregroundDeletion"])
    );
    assert_eq!(
        c.raw("GET", &format!("{CM}/free"), None, "").await.status,
        404,
        "free dependent deleted"
    );
    let held = c.raw("GET", &format!("{CM}/held"), None, "").await;
    assert!(
        held.body["metadata"]["deletionTimestamp"].is_string(),
        "held dependent is terminating"
    );

    // Removing the last finalizer lets the dependent go, and then the owner.
    let p = c
        .raw(
            "PATCH",
            &format!("{CM}/held"),
            MERGE,
            json!({"metadata": {"finalizers": null}}).to_string(),
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.text);
    assert_eq!(
        c.raw("GET", &format!("{CM}/held"), None, "").await.status,
        404
    );
    assert_eq!(
        c.raw("GET", &format!("{CM}/owner"), None, "").await.status,
        404,
        "owner finalized"
    );

    // Background through a ReplicaSet: the simulated pods are collected with it.
    let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "rs"}, "spec": {"replicas": 2,
        "selector": {"matchLabels": {"app": "x"}}, "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "x", "image": "x"}]}}}});
    assert_eq!(
        c.raw(
            "POST",
            "/apis/apps/v1/namespaces/default/replicasets",
            JSON,
            rs.to_string()
        )
        .await
        .status,
        201
    );
    wait_for("two pods", Duration::from_secs(10), || async {
        let pods = c
            .raw("GET", "/api/v1/namespaces/default/pods", None, "")
            .await;
        (pods.body["items"].as_array().map(Vec::len) == Some(2)).then_some(())
    })
    .await;
    let del = c
        .raw(
            "DELETE",
            "/apis/apps/v1/namespaces/default/replicasets/rs",
            None,
            "",
        )
        .await;
    assert_eq!(del.status, 200);
    let pods = c
        .raw("GET", "/api/v1/namespaces/default/pods", None, "")
        .await;
    assert_eq!(
        pods.body["items"].as_array().unwrap().len(),
        0,
        "pods collected with their ReplicaSet"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn generation_and_status_subresource_rules() {
    let c = with_crds("generation").await;
    let created = c
        .raw("POST", RO, JSON, rollout("g", json!({})).to_string())
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.body["metadata"]["generation"], 1);
    let label = c
        .raw(
            "PATCH",
            &format!("{RO}/g"),
            MERGE,
            json!({"metadata": {"labels": {"a": "b"}}}).to_string(),
        )
        .await;
    assert_eq!(
        label.body["metadata"]["generation"], 1,
        "metadata change keeps generation"
    );
    let status = c
        .raw(
            "PATCH",
            &format!("{RO}/g/status"),
            MERGE,
            json!({"status": {"phase": "Healthy"}}).to_string(),
        )
        .await;
    assert_eq!(status.status, 200, "{}", status.text);
    assert_eq!(status.body["status"]["phase"], "Healthy");
    assert_eq!(
        status.body["metadata"]["generation"], 1,
        "status change keeps generation"
    );
    // The main resource ignores status; the status subresource ignores spec.
    let both = c
        .raw(
            "PATCH",
            &format!("{RO}/g"),
            MERGE,
            json!({"spec": {"replicas": 4}, "status": {"phase": "Degraded"}}).to_string(),
        )
        .await;
    assert_eq!(both.body["metadata"]["generation"], 2);
    assert_eq!(both.body["status"]["phase"], "Healthy");
    let both = c
        .raw(
            "PATCH",
            &format!("{RO}/g/status"),
            MERGE,
            json!({"spec": {"replicas": 9}, "status": {"phase": "Progressing"}}).to_string(),
        )
        .await;
    assert_eq!(both.body["spec"]["replicas"], 4);
    assert_eq!(both.body["status"]["phase"], "Progressing");
    // Scale subresource reads and writes spec.replicas.
    let scale = c.raw("GET", &format!("{RO}/g/scale"), None, "").await;
    assert_eq!(scale.body["kind"], "Scale");
    assert_eq!(scale.body["spec"]["replicas"], 4);
    let scaled = c
        .raw(
            "PATCH",
            &format!("{RO}/g/scale"),
            MERGE,
            json!({"spec": {"replicas": 6}}).to_string(),
        )
        .await;
    assert_eq!(scaled.status, 200, "{}", scaled.text);
    let ro = c.raw("GET", &format!("{RO}/g"), None, "").await;
    assert_eq!(ro.body["spec"]["replicas"], 6);
    assert_eq!(ro.body["metadata"]["generation"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_resources_are_validated_and_pruned() {
    let c = with_crds("schema").await;
    let bad = rollout(
        "bad",
        json!({"replicas": -1, "strategy": {"canary": {"steps": [{"setWeight": 150}]}}}),
    );
    let r = c.raw("POST", RO, JSON, bad.to_string()).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["reason"], "Invalid");
    let fields: Vec<&str> = r.body["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"spec.replicas"), "{fields:?}");
    assert!(
        fields.contains(&"spec.strategy.canary.steps[0].setWeight"),
        "{fields:?}"
    );
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .starts_with("Rollout.weir.io \"bad\" is invalid: "),
        "{}",
        r.text
    );
    assert_eq!(
        c.raw("GET", &format!("{RO}/bad"), None, "").await.status,
        404,
        "nothing stored"
    );

    // Unknown fields are pruned with a warning, or rejected under Strict field validation.
    let extra = rollout("extra", json!({"surprise": true}));
    let r = c.raw("POST", RO, JSON, extra.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.body["spec"].get("surprise").is_none(), "pruned");
    let warning = r
        .headers
        .get("warning")
        .map(|w| w.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(
        warning.contains("unknown field \\\"spec.surprise\\\""),
        "{warning}"
    );
    let strict = c
        .raw(
            "POST",
            &format!("{RO}?fieldValidation=Strict"),
            JSON,
            rollout("strict", json!({"surprise": 1})).to_string(),
        )
        .await;
    assert_eq!(strict.status, 400, "{}", strict.text);
    assert!(
        strict.body["message"]
            .as_str()
            .unwrap()
            .contains("unknown field \"spec.surprise\"")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fault_injection_errors_unready_pods_and_dropped_watches() {
    let c = Cluster::start("faults").await;
    let set = c
        .raw(
            "PUT",
            "/emulator/faults",
            JSON,
            json!({"errorRate": 1.0, "errorCodes": [503]}).to_string(),
        )
        .await;
    assert_eq!(set.status, 200);
    let r = c.raw("GET", CM, None, "").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body["reason"], "ServiceUnavailable");
    // Discovery is not affected, so clients can still find the API.
    assert_eq!(c.raw("GET", "/api/v1", None, "").await.status, 200);
    c.raw(
        "PUT",
        "/emulator/faults",
        JSON,
        json!({"errorRate": 0.5, "errorCodes": [409, 500]}).to_string(),
    )
    .await;
    let mut codes = std::collections::BTreeMap::new();
    for i in 0..200 {
        let s = c.raw("POST", CM, JSON, cm(&format!("f{i}"))).await.status;
        *codes.entry(s).or_insert(0) += 1;
    }
    assert!(codes.get(&201).copied().unwrap_or(0) > 50, "{codes:?}");
    assert!(codes.get(&409).copied().unwrap_or(0) > 20, "{codes:?}");
    assert!(codes.get(&500).copied().unwrap_or(0) > 20, "{codes:?}");

    c.raw(
        "PUT",
        "/emulator/faults",
        JSON,
        json!({"neverReadySelector": "track=bad"}).to_string(),
    )
    .await;
    let rs = |name: &str, track: &str| {
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name}, "spec": {"replicas": 2,
            "selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name, "track": track}}, "spec": {"containers": [{"name": "x", "image": "x"}]}}}})
        .to_string()
    };
    let rs_path = "/apis/apps/v1/namespaces/default/replicasets";
    assert_eq!(
        c.raw("POST", rs_path, JSON, rs("good", "ok")).await.status,
        201
    );
    assert_eq!(
        c.raw("POST", rs_path, JSON, rs("bad", "bad")).await.status,
        201
    );
    wait_for(
        "both ReplicaSets observed",
        Duration::from_secs(10),
        || async {
            let good = c
                .raw("GET", &format!("{rs_path}/good"), None, "")
                .await
                .body;
            let bad = c.raw("GET", &format!("{rs_path}/bad"), None, "").await.body;
            (good["status"]["readyReplicas"] == 2 && bad["status"]["replicas"] == 2).then_some(())
        },
    )
    .await;
    let bad = c.raw("GET", &format!("{rs_path}/bad"), None, "").await.body;
    assert!(
        bad["status"].get("readyReplicas").is_none(),
        "pods of the bad ReplicaSet never get ready: {bad}"
    );

    // Dropping watches ends open streams.
    let watch_path = format!("{CM}?watch=true&resourceVersion=1");
    let watching = c.watch_events(&watch_path, Duration::from_secs(2), |_| false);
    let dropper = async {
        wait_for("watch open", Duration::from_secs(5), || async {
            (c.emulator.app.stats_json()["activeWatches"].as_u64() == Some(1)).then_some(())
        })
        .await;
        c.raw("POST", "/emulator/drop-watches", None, "").await
    };
    let (_, dropped) = tokio::join!(watching, dropper);
    assert_eq!(dropped.body["dropped"], 1);
    wait_for("watch closed", Duration::from_secs(5), || async {
        (c.emulator.app.stats_json()["activeWatches"].as_u64() == Some(0)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_real_status_codes() {
    let c = with_crds("bad-input").await;
    /// (method, path, content type, body, expected code, expected reason)
    type Case<'a> = (&'a str, String, Option<&'a str>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "POST",
            CM.into(),
            JSON,
            b"{not json".to_vec(),
            400,
            "BadRequest",
        ),
        (
            "POST",
            CM.into(),
            Some("application/yaml"),
            b"a: [unclosed".to_vec(),
            400,
            "BadRequest",
        ),
        (
            "POST",
            CM.into(),
            Some("text/plain"),
            cm("t"),
            415,
            "UnsupportedMediaType",
        ),
        (
            "POST",
            CM.into(),
            None,
            cm("t"),
            415,
            "UnsupportedMediaType",
        ),
        (
            "GET",
            "/apis/nope.io/v1/namespaces/default/things".into(),
            None,
            vec![],
            404,
            "NotFound",
        ),
        (
            "GET",
            "/api/v1/namespaces/default/widgets".into(),
            None,
            vec![],
            404,
            "NotFound",
        ),
        (
            "GET",
            format!("{CM}/missing"),
            None,
            vec![],
            404,
            "NotFound",
        ),
        (
            "PATCH",
            format!("{CM}/a"),
            Some("application/json-patch+json"),
            br#"[{"op":"remove","path":"/data/missing"}]"#.to_vec(),
            422,
            "Invalid",
        ),
        (
            "PATCH",
            format!("{CM}/a"),
            Some("application/json-patch+json"),
            br#"{"op":"oops"}"#.to_vec(),
            400,
            "BadRequest",
        ),
        (
            "PATCH",
            format!("{CM}/a"),
            Some("application/strategic-merge-patch+json"),
            br#"{"data":{"$patch":"explode"}}"#.to_vec(),
            422,
            "Invalid",
        ),
        (
            "PATCH",
            format!("{RO}/x"),
            Some("application/strategic-merge-patch+json"),
            b"{}".to_vec(),
            415,
            "UnsupportedMediaType",
        ),
        (
            "PATCH",
            format!("{CM}/a"),
            Some("application/x-unknown"),
            b"{}".to_vec(),
            415,
            "UnsupportedMediaType",
        ),
        (
            "POST",
            CM.into(),
            JSON,
            vec![b' '; 4 * 1024 * 1024],
            413,
            "RequestEntityTooLarge",
        ),
        (
            "POST",
            CM.into(),
            JSON,
            br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"}}"#.to_vec(),
            400,
            "BadRequest",
        ),
        (
            "POST",
            CM.into(),
            JSON,
            br#"[1,2]"#.to_vec(),
            400,
            "BadRequest",
        ),
        (
            "GET",
            format!("{CM}?labelSelector=a%20in%20b"),
            None,
            vec![],
            400,
            "BadRequest",
        ),
        (
            "GET",
            format!("{CM}?fieldSelector=spec.nope%3D1"),
            None,
            vec![],
            400,
            "BadRequest",
        ),
        (
            "GET",
            format!("{CM}?continue=garbage"),
            None,
            vec![],
            400,
            "BadRequest",
        ),
        (
            "POST",
            "/api/v1/namespaces/nowhere/configmaps".into(),
            JSON,
            cm("n"),
            404,
            "NotFound",
        ),
        (
            "DELETE",
            format!("{CM}/a"),
            JSON,
            br#"{"propagationPolicy":"Sideways"}"#.to_vec(),
            422,
            "Invalid",
        ),
    ];
    assert_eq!(c.raw("POST", CM, JSON, cm("a")).await.status, 201);
    assert_eq!(
        c.raw("POST", RO, JSON, rollout("x", json!({})).to_string())
            .await
            .status,
        201
    );
    for (method, path, ct, body, code, reason) in cases {
        let r = c.raw(method, &path, ct, body).await;
        assert_eq!(r.status, code, "{method} {path} {ct:?}: {}", r.text);
        assert_eq!(r.body["kind"], "Status", "{method} {path}: a Status body");
        assert_eq!(r.body["reason"], reason, "{method} {path}: {}", r.text);
        assert_eq!(r.body["code"], code);
    }
    // After all that, the emulator still serves and the objects are intact.
    let a = c.raw("GET", &format!("{CM}/a"), None, "").await;
    assert_eq!(a.body["data"]["k"], "v");
}

#[tokio::test(flavor = "multi_thread")]
async fn selectors_and_pagination() {
    let c = Cluster::start("paging").await;
    for i in 0..25 {
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("p{i:02}"), "labels": {"parity": if i % 2 == 0 { "even" } else { "odd" }}}});
        assert_eq!(c.raw("POST", CM, JSON, body.to_string()).await.status, 201);
    }
    let even = c
        .raw(
            "GET",
            &format!("{CM}?labelSelector=parity%3Deven"),
            None,
            "",
        )
        .await;
    assert_eq!(even.body["items"].as_array().unwrap().len(), 13);
    let one = c
        .raw(
            "GET",
            &format!("{CM}?fieldSelector=metadata.name%3Dp03"),
            None,
            "",
        )
        .await;
    assert_eq!(one.body["items"].as_array().unwrap().len(), 1);
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .raw("GET", &format!("{CM}?limit=10&continue={token}"), None, "")
            .await;
        assert_eq!(page.status, 200, "{}", page.text);
        names.extend(
            page.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_string()),
        );
        match page.body["metadata"]["continue"].as_str() {
            Some(t) => token = t.to_string(),
            None => break,
        }
    }
    let want: Vec<String> = (0..25).map(|i| format!("p{i:02}")).collect();
    assert_eq!(names, want);
    // Cluster-wide list of a namespaced kind works too.
    let all = c.raw("GET", "/api/v1/configmaps", None, "").await;
    assert_eq!(all.body["items"].as_array().unwrap().len(), 25);
}

#[tokio::test(flavor = "multi_thread")]
async fn namespace_deletion_removes_its_objects() {
    let c = Cluster::start("ns").await;
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}});
    assert_eq!(
        c.raw("POST", "/api/v1/namespaces", JSON, ns.to_string())
            .await
            .status,
        201
    );
    assert_eq!(
        c.raw("POST", "/api/v1/namespaces/team/configmaps", JSON, cm("x"))
            .await
            .status,
        201
    );
    let d = c.raw("DELETE", "/api/v1/namespaces/team", None, "").await;
    assert!(d.status == 200 || d.status == 202);
    assert_eq!(
        c.raw("GET", "/api/v1/namespaces/team", None, "")
            .await
            .status,
        404
    );
    assert_eq!(
        c.raw("GET", "/api/v1/namespaces/team/configmaps/x", None, "")
            .await
            .status,
        404
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_selected_watch_sees_objects_enter_and_leave_its_selector() {
    let c = Cluster::start("selector-watch").await;
    let rv = c.raw("GET", CM, None, "").await.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(c.raw("POST", CM, JSON, cm("w")).await.status, 201);
    let path_w = format!("{CM}/w");
    for labels in [
        json!({"tier": "web"}),
        json!({"tier": "web", "x": "1"}),
        json!({"tier": "db"}),
    ] {
        let r = c
            .raw(
                "PATCH",
                &path_w,
                MERGE,
                json!({"metadata": {"labels": labels}}).to_string(),
            )
            .await;
        assert_eq!(r.status, 200);
    }
    let path = format!("{CM}?watch=true&resourceVersion={rv}&labelSelector=tier%3Dweb");
    let events = c
        .watch_events(&path, Duration::from_secs(10), |e| e.len() >= 3)
        .await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["ADDED", "MODIFIED", "DELETED"], "{events:?}");
    assert_eq!(
        events[2]["object"]["metadata"]["labels"]["tier"], "db",
        "DELETED carries the object as it now is"
    );
}
