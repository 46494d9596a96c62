//! Scale: the emulator holds 60,000 objects and 1,000 concurrent watches without losing, duplicating or
//! reordering a single event, while several writers create, update and delete concurrently.
//!
//! Writes, lists and watches go through the HTTP API, as a client of a real kube-apiserver drives them. The timed
//! figures (list latency, watch fan-out throughput) live in `benches/emulator.rs`; this test only asserts
//! correctness at scale.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::AsyncBufReadExt;
use serde::Deserialize;
use serde_json::{Value, json};
use support::{Cluster, wait_for};
use weir::emulator::object_rules::WriteContext;

const NAMESPACES: usize = 20;
const LOADED: usize = 60_000;
const WRITERS: usize = 8;
/// Rounds per writer; each round issues two to four writes.
const ROUNDS: usize = 80;
/// Name of the object created last in every namespace; every watcher's filter matches it, so a watcher
/// that has seen all sentinels in its scope has seen everything written before them.
const SENTINEL: &str = "zz-end";

fn ns_name(n: usize) -> String {
    format!("ns-{n:02}")
}

/// Labels of a loaded object, chosen so that namespace, shard and tier vary independently.
fn loaded_labels(i: usize) -> (String, String) {
    (((i / 20) % 10).to_string(), tier((i / 200) % 4))
}

fn tier(t: usize) -> String {
    ["a", "b", "c", "d"][t % 4].to_string()
}

fn loaded_key(i: usize) -> (String, String) {
    (ns_name(i % NAMESPACES), format!("cm-{i:05}"))
}

fn config_map(ns: &str, name: &str, shard: &str, tier: &str, value: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "labels": {"shard": shard, "tier": tier}},
        "data": {"k": value, "payload": "p".repeat(64)},
    })
}

struct Http {
    client: kube::Client,
}

impl Http {
    async fn call(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, Value) {
        use http_body_util::BodyExt;
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type)
            .body(kube::client::Body::from(body))
            .unwrap();
        let resp = self.client.send(req).await.expect("send");
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Lists every ConfigMap, reading only names and resourceVersions (a full parse of 60,000 objects
    /// into JSON trees takes seconds in the unoptimized test build).
    async fn list(&self) -> ObjectList {
        use http_body_util::BodyExt;
        let req = http::Request::builder()
            .uri("/api/v1/configmaps")
            .body(kube::client::Body::from(Vec::new()))
            .unwrap();
        let resp = self.client.send(req).await.expect("send");
        assert_eq!(resp.status().as_u16(), 200);
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        serde_json::from_slice(&bytes).expect("a list")
    }

    async fn create(&self, ns: &str, body: &Value) -> Value {
        let (status, resp) = self
            .call(
                "POST",
                &format!("/api/v1/namespaces/{ns}/configmaps"),
                "application/json",
                body.to_string().into_bytes(),
            )
            .await;
        assert_eq!(status, 201, "create in {ns}: {resp}");
        resp
    }
}

fn rv_of(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no resourceVersion in {obj}"))
}

/// One event as a watcher saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    kind: String,
    ns: String,
    name: String,
    rv: u64,
}

/// The part of a watch line the test looks at; the rest is skipped without building a tree.
#[derive(Deserialize)]
struct WatchLine {
    #[serde(rename = "type")]
    kind: String,
    object: WatchObject,
}

#[derive(Deserialize)]
struct WatchObject {
    metadata: WatchMeta,
}

#[derive(Deserialize)]
struct WatchMeta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default, rename = "resourceVersion")]
    resource_version: String,
}

/// A list response, reduced to what the test checks.
#[derive(Deserialize)]
struct ObjectList {
    metadata: WatchMeta,
    items: Vec<WatchObject>,
}

/// What a watcher asks for.
#[derive(Debug, Clone)]
struct Filter {
    ns: Option<String>,
    /// The labelSelector as sent, and the same requirement as a predicate over (shard, tier).
    selector: Option<(String, Selector)>,
}

#[derive(Debug, Clone)]
enum Selector {
    Shards(Vec<String>),
    TiersExcept(Vec<String>),
    Tiers(Vec<String>),
}

impl Filter {
    fn path(&self, rv: u64) -> String {
        let base = match &self.ns {
            Some(ns) => format!("/api/v1/namespaces/{ns}/configmaps"),
            None => "/api/v1/configmaps".to_string(),
        };
        let mut path = format!("{base}?watch=true&resourceVersion={rv}");
        if let Some((s, _)) = &self.selector {
            path.push_str("&labelSelector=");
            path.push_str(&s.replace(' ', "%20").replace(',', "%2C"));
        }
        path
    }

    fn matches(&self, ns: &str, labels: &(String, String)) -> bool {
        if self.ns.as_deref().is_some_and(|n| n != ns) {
            return false;
        }
        let (shard, tier) = labels;
        match &self.selector {
            None => true,
            Some((_, Selector::Shards(v))) => v.contains(shard),
            Some((_, Selector::Tiers(v))) => v.contains(tier),
            Some((_, Selector::TiersExcept(v))) => !v.contains(tier),
        }
    }

    fn sentinels_in_scope(&self) -> usize {
        if self.ns.is_some() { 1 } else { NAMESPACES }
    }
}

/// The 1,000 watchers: cluster-wide, per namespace, and with set-based label selectors, each of which
/// also matches the sentinels (labelled `shard=end,tier=end`).
fn watch_filters() -> Vec<Filter> {
    let mut out = Vec::new();
    for _ in 0..20 {
        out.push(Filter {
            ns: None,
            selector: None,
        });
    }
    for i in 0..640 {
        out.push(Filter {
            ns: Some(ns_name(i % NAMESPACES)),
            selector: None,
        });
    }
    for i in 0..120 {
        let k = (i % 10).to_string();
        out.push(Filter {
            ns: None,
            selector: Some((
                format!("shard in ({k},end)"),
                Selector::Shards(vec![k, "end".into()]),
            )),
        });
    }
    for _ in 0..20 {
        out.push(Filter {
            ns: None,
            selector: Some((
                "tier notin (a,b,c)".into(),
                Selector::TiersExcept(vec!["a".into(), "b".into(), "c".into()]),
            )),
        });
    }
    for i in 0..200 {
        let t = tier(i / NAMESPACES);
        out.push(Filter {
            ns: Some(ns_name(i % NAMESPACES)),
            selector: Some((
                format!("tier in ({t},end)"),
                Selector::Tiers(vec![t, "end".into()]),
            )),
        });
    }
    assert_eq!(out.len(), 1000);
    out
}

/// A write as its writer had it acknowledged.
#[derive(Debug, Clone)]
struct Acked {
    kind: &'static str,
    ns: String,
    name: String,
    /// The resourceVersion of the written object; a delete's response carries the object as it was
    /// before, so the deletion's own resourceVersion is not known to the writer.
    rv: Option<u64>,
}

/// Asserts two maps are equal, naming the first key that is missing, unexpected or different.
fn assert_same<K: Ord + Debug, V: PartialEq + Debug>(
    what: &str,
    got: &BTreeMap<K, V>,
    want: &BTreeMap<K, V>,
) {
    if got == want {
        return;
    }
    let missing = want.keys().find(|k| !got.contains_key(k));
    let unexpected = got.keys().find(|k| !want.contains_key(k));
    let different = want
        .iter()
        .find_map(|(k, w)| got.get(k).filter(|g| *g != w).map(|g| (k, g, w)));
    panic!(
        "{what}: {} seen, {} expected; first missing {missing:?}, first unexpected {unexpected:?}, first different (key, seen, expected) {different:?}",
        got.len(),
        want.len()
    );
}

/// Runs one writer's script over objects no other writer touches, so each object's event order is known.
async fn writer(http: Arc<Http>, w: usize) -> Vec<Acked> {
    let mut acked = Vec::new();
    for j in 0..ROUNDS {
        // A new object.
        let ns = ns_name((w * ROUNDS + j) % NAMESPACES);
        let name = format!("new-w{w}-{j:03}");
        let (shard, t) = new_labels(w, j);
        let created = http
            .create(&ns, &config_map(&ns, &name, &shard, &t, "v0"))
            .await;
        acked.push(Acked {
            kind: "ADDED",
            ns: ns.clone(),
            name: name.clone(),
            rv: Some(rv_of(&created)),
        });
        // A merge patch of a loaded object.
        let (lns, lname) = loaded_key(w + WRITERS * j);
        let (status, patched) = http
            .call(
                "PATCH",
                &format!("/api/v1/namespaces/{lns}/configmaps/{lname}"),
                "application/merge-patch+json",
                json!({"data": {"k": format!("patched-{j}")}})
                    .to_string()
                    .into_bytes(),
            )
            .await;
        assert_eq!(status, 200, "patch {lns}/{lname}: {patched}");
        acked.push(Acked {
            kind: "MODIFIED",
            ns: lns,
            name: lname,
            rv: Some(rv_of(&patched)),
        });
        if j % 2 == 0 {
            // A full replacement of the new object.
            let (status, updated) = http
                .call(
                    "PUT",
                    &format!("/api/v1/namespaces/{ns}/configmaps/{name}"),
                    "application/json",
                    config_map(&ns, &name, &shard, &t, "v1")
                        .to_string()
                        .into_bytes(),
                )
                .await;
            assert_eq!(status, 200, "update {ns}/{name}: {updated}");
            acked.push(Acked {
                kind: "MODIFIED",
                ns: ns.clone(),
                name: name.clone(),
                rv: Some(rv_of(&updated)),
            });
        } else {
            // A delete of a loaded object.
            let (dns, dname) = loaded_key(w + WRITERS * (ROUNDS + j));
            let (status, deleted) = http
                .call(
                    "DELETE",
                    &format!("/api/v1/namespaces/{dns}/configmaps/{dname}"),
                    "application/json",
                    Vec::new(),
                )
                .await;
            assert_eq!(status, 200, "delete {dns}/{dname}: {deleted}");
            acked.push(Acked {
                kind: "DELETED",
                ns: dns,
                name: dname,
                rv: None,
            });
        }
        if j % 3 == 0 {
            let (status, deleted) = http
                .call(
                    "DELETE",
                    &format!("/api/v1/namespaces/{ns}/configmaps/{name}"),
                    "application/json",
                    Vec::new(),
                )
                .await;
            assert_eq!(status, 200, "delete {ns}/{name}: {deleted}");
            acked.push(Acked {
                kind: "DELETED",
                ns,
                name,
                rv: None,
            });
        }
    }
    acked
}

fn new_labels(w: usize, j: usize) -> (String, String) {
    ((j % 10).to_string(), tier(w + j / 10))
}

/// Reads one watch until it has seen every sentinel in its scope (or the stream ends).
async fn watch(http: Arc<Http>, filter: Filter, rv: u64) -> (Filter, Vec<Seen>) {
    let req = http::Request::builder()
        .uri(filter.path(rv))
        .body(Vec::new())
        .unwrap();
    let mut stream = http.client.request_stream(req).await.expect("open watch");
    let mut seen = Vec::new();
    let mut sentinels = 0;
    let mut line = Vec::new();
    while sentinels < filter.sentinels_in_scope() {
        line.clear();
        if stream
            .read_until(b'\n', &mut line)
            .await
            .expect("watch stream")
            == 0
        {
            break;
        }
        let parsed: WatchLine = serde_json::from_slice(&line)
            .unwrap_or_else(|e| panic!("bad watch line {:?}: {e}", String::from_utf8_lossy(&line)));
        assert!(
            matches!(parsed.kind.as_str(), "ADDED" | "MODIFIED" | "DELETED"),
            "unexpected watch event for {filter:?}: {}",
            String::from_utf8_lossy(&line)
        );
        let m = parsed.object.metadata;
        if m.name == SENTINEL {
            sentinels += 1;
        }
        seen.push(Seen {
            kind: parsed.kind,
            ns: m.namespace,
            name: m.name,
            rv: m.resource_version.parse().unwrap_or(0),
        });
    }
    (filter, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_thousand_objects_and_a_thousand_watches_lose_no_event() {
    let c = Cluster::start("scale").await;
    let http = Arc::new(Http { client: c.client() });

    // 20 namespaces and 60,000 ConfigMaps, created over HTTP with bounded concurrency.
    for n in 0..NAMESPACES {
        let (status, body) = http
            .call(
                "POST",
                "/api/v1/namespaces",
                "application/json",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns_name(n)}})
                    .to_string()
                    .into_bytes(),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    // The 60,000 objects go straight into the store: over HTTP they take ~35 s in the unoptimized test
    // build on two cores, which would crowd out what this test is about (the writes and the watches,
    // which all go over HTTP). `benches/emulator.rs` loads the same volume over HTTP.
    let started = std::time::Instant::now();
    let store = c.emulator.app.store.clone();
    tokio::task::spawn_blocking(move || {
        let rt = store.resource("", "v1", "configmaps").unwrap();
        let ctx = WriteContext::internal("scale-loader");
        for i in 0..LOADED {
            let (ns, name) = loaded_key(i);
            let (shard, t) = loaded_labels(i);
            store
                .create(
                    &rt,
                    &ns,
                    config_map(&ns, &name, &shard, &t, &format!("v{i}")),
                    &ctx,
                )
                .unwrap();
        }
    })
    .await
    .unwrap();
    eprintln!("loaded {LOADED} objects in {:?}", started.elapsed());

    // The list every watcher starts from.
    let started = std::time::Instant::now();
    let list = http.list().await;
    assert_eq!(list.items.len(), LOADED);
    let list_rv: u64 = list.metadata.resource_version.parse().unwrap();
    drop(list);
    eprintln!("listed in {:?}", started.elapsed());

    // 1,000 concurrent watches from the list's resourceVersion.
    let started = std::time::Instant::now();
    let filters = watch_filters();
    let watchers: Vec<_> = filters
        .iter()
        .map(|f| tokio::spawn(watch(http.clone(), f.clone(), list_rv)))
        .collect();
    let stats_http = http.clone();
    wait_for("1,000 open watches", Duration::from_secs(60), || {
        let http = stats_http.clone();
        async move {
            let (_, stats) = http
                .call("GET", "/emulator/stats", "application/json", Vec::new())
                .await;
            (stats["activeWatches"].as_u64() == Some(1000)).then_some(())
        }
    })
    .await;
    eprintln!("opened 1000 watches in {:?}", started.elapsed());

    // Concurrent writers, then one sentinel per namespace.
    let started = std::time::Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(http.clone(), w)))
        .collect();
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    for n in 0..NAMESPACES {
        let ns = ns_name(n);
        let created = http
            .create(&ns, &config_map(&ns, SENTINEL, "end", "end", "end"))
            .await;
        acked.push(Acked {
            kind: "ADDED",
            ns,
            name: SENTINEL.into(),
            rv: Some(rv_of(&created)),
        });
    }
    eprintln!("{} writes in {:?}", acked.len(), started.elapsed());

    let started = std::time::Instant::now();
    let results = tokio::time::timeout(
        Duration::from_secs(120),
        futures::future::join_all(watchers),
    )
    .await
    .expect("every watcher sees its sentinels within 120 s");
    let results: Vec<(Filter, Vec<Seen>)> = results.into_iter().map(|r| r.unwrap()).collect();
    eprintln!(
        "watchers drained in {:?}; {} events delivered",
        started.elapsed(),
        results.iter().map(|(_, s)| s.len()).sum::<usize>()
    );

    let started = std::time::Instant::now();
    // Labels of every object written, from the test's own plan rather than from the events.
    let mut labels: HashMap<(String, String), (String, String)> = HashMap::new();
    for i in 0..LOADED {
        labels.insert(loaded_key(i), loaded_labels(i));
    }
    for w in 0..WRITERS {
        for j in 0..ROUNDS {
            let ns = ns_name((w * ROUNDS + j) % NAMESPACES);
            labels.insert((ns, format!("new-w{w}-{j:03}")), new_labels(w, j));
        }
    }
    for n in 0..NAMESPACES {
        labels.insert((ns_name(n), SENTINEL.into()), ("end".into(), "end".into()));
    }

    // The stream of the first cluster-wide watcher is checked against what the writers were told.
    let canonical = &results[0].1;
    assert!(results[0].0.ns.is_none() && results[0].0.selector.is_none());
    assert!(
        canonical.windows(2).all(|p| p[0].rv < p[1].rv),
        "events are in strictly increasing resourceVersion order"
    );
    assert!(canonical.iter().all(|e| e.rv > list_rv));
    assert_eq!(
        canonical.len(),
        acked.len(),
        "one event per acknowledged write"
    );
    let acked_by_rv: BTreeMap<u64, (&str, &str, &str)> = acked
        .iter()
        .filter_map(|a| {
            a.rv.map(|rv| (rv, (a.kind, a.ns.as_str(), a.name.as_str())))
        })
        .collect();
    let seen_by_rv: BTreeMap<u64, (&str, &str, &str)> = canonical
        .iter()
        .filter(|e| e.kind != "DELETED")
        .map(|e| (e.rv, (e.kind.as_str(), e.ns.as_str(), e.name.as_str())))
        .collect();
    assert_same(
        "added and modified events carry the acknowledged resourceVersions",
        &seen_by_rv,
        &acked_by_rv,
    );
    let mut acked_per_object: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for a in &acked {
        acked_per_object
            .entry((a.ns.as_str(), a.name.as_str()))
            .or_default()
            .push(a.kind);
    }
    let mut seen_per_object: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for e in canonical {
        seen_per_object
            .entry((e.ns.as_str(), e.name.as_str()))
            .or_default()
            .push(e.kind.as_str());
    }
    assert_same(
        "each object's events (deletes included) come in the order its writer wrote them",
        &seen_per_object,
        &acked_per_object,
    );

    // Every watcher sees exactly the canonical stream projected through its filter.
    let canonical_labels: Vec<&(String, String)> = canonical
        .iter()
        .map(|e| &labels[&(e.ns.clone(), e.name.clone())])
        .collect();
    for (i, (filter, seen)) in results.iter().enumerate() {
        let want: Vec<&Seen> = canonical
            .iter()
            .zip(&canonical_labels)
            .filter(|(e, l)| filter.matches(&e.ns, l))
            .map(|(e, _)| e)
            .collect();
        let got: Vec<&Seen> = seen.iter().collect();
        if got != want {
            let first_diff = got
                .iter()
                .zip(&want)
                .position(|(g, w)| g != w)
                .unwrap_or(got.len().min(want.len()));
            panic!(
                "watcher {i} {filter:?}: got {} events, want {}; first difference at {first_diff}: got {:?}, want {:?}",
                got.len(),
                want.len(),
                got.get(first_diff),
                want.get(first_diff),
            );
        }
    }

    eprintln!("checked streams in {:?}", started.elapsed());
    let started = std::time::Instant::now();
    // The final list holds exactly the objects that were not deleted.
    let mut expected: BTreeSet<(String, String)> = (0..LOADED).map(loaded_key).collect();
    for a in &acked {
        match a.kind {
            "DELETED" => expected.remove(&(a.ns.clone(), a.name.clone())),
            _ => expected.insert((a.ns.clone(), a.name.clone())),
        };
    }
    let list = http.list().await;
    let listed: BTreeSet<(String, String)> = list
        .items
        .iter()
        .map(|o| (o.metadata.namespace.clone(), o.metadata.name.clone()))
        .collect();
    assert_eq!(list.items.len(), listed.len(), "no object is listed twice");
    assert_eq!(listed.len(), expected.len());
    assert!(listed == expected, "the final list holds every live object");
    eprintln!("checked final list in {:?}", started.elapsed());
    c.emulator.shutdown();
}
