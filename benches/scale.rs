//! weir at scale, measured as a separate `weir run` process against the in-process emulator.
//!
//! `cargo bench --bench scale` builds the release `weir` binary with the bench and runs four parts:
//! - **Scale**: N Rollouts (each with a stable and a canary Service and an HTTPRoute) brought to
//!   Healthy by weir, then weir is restarted and timed until it has reconciled every one of them
//!   again (a full resync); then its RSS and CPU are read from `/proc` over a steady window, and
//!   the emulator's request counters say how many writes weir made (there should be none).
//! - **Stepping**: 1,000 canaries released at once through 4 steps (`setWeight`, `pause: 0s`,
//!   twice). The floor replays the writes weir made (same kinds, counts and objects) with a bare
//!   kube client, one sequence per Rollout, as many Rollouts at a time as weir reconciles at once.
//! - **Reaction**: a web metric (a local HTTP endpoint answering an error rate of 1) fails an
//!   analysis step; from the emulator committing the AnalysisRun status that records the failed
//!   measurement until a route watch sees every route of that Rollout at 100/0. The floor is the
//!   time from the emulator committing a route write until the same route watch sees it.
//! - **Idle**: weir's RSS against an emulator with nothing in it.
//!
//! Without `--bench` (as `cargo test --all-targets` runs it) every part runs once, tiny, against
//! the debug `weir` binary, and the table is printed all the same.

mod crds;

/// The emulator (this process) allocates and frees a JSON tree for every write it serves. Under
/// glibc's malloc its heap fragments run after run (`_int_malloc` and `malloc_consolidate` grew
/// to a quarter of its CPU, and each stepping run served the same work slower than the last), and
/// the emulator is the stand-in for the API server, not what is measured. weir runs as its own
/// process, with the allocator it ships with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crds::TestCrds;
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::watcher;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;
use weir::emulator::store::{EventType, ListOptions, ObjKey, Store};
use weir::emulator::{EmulatorConfig, RunningEmulator};

/// Rollouts are spread over this many namespaces.
const NAMESPACES: usize = 10;
/// The longest any one wait may take before the bench gives up.
const WAIT: Duration = Duration::from_secs(900);
/// Requests the loader keeps in flight.
const LOAD_CONCURRENCY: usize = 64;

/// How much of everything to run.
struct Plan {
    /// (N, restarts) for the scale part.
    scale: Vec<(usize, usize)>,
    /// How long weir is watched at steady state after each resync.
    steady_window: Duration,
    stepping_rollouts: usize,
    stepping_runs: usize,
    reactions: usize,
    idle_runs: usize,
    idle_settle: Duration,
}

impl Plan {
    fn bench() -> Self {
        Self {
            // Sized so that this bench and the sync bench finish within 30 minutes from a clean
            // clone on two cores (the first convergence of 10,000 Rollouts alone takes 5 minutes).
            scale: vec![(1_000, 3), (5_000, 2), (10_000, 2)],
            steady_window: Duration::from_secs(10),
            stepping_rollouts: 1_000,
            stepping_runs: 5,
            reactions: 30,
            idle_runs: 3,
            idle_settle: Duration::from_secs(5),
        }
    }

    fn smoke() -> Self {
        Self {
            scale: vec![(20, 1)],
            steady_window: Duration::from_secs(1),
            stepping_rollouts: 10,
            stepping_runs: 1,
            reactions: 2,
            idle_runs: 1,
            idle_settle: Duration::from_secs(1),
        }
    }
}

fn main() {
    // Without `--bench` (as `cargo test --all-targets` runs it), a small smoke run.
    let bench = std::env::args().any(|a| a == "--bench");
    let plan = if bench { Plan::bench() } else { Plan::smoke() };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    let report = runtime.block_on(run_all(&plan));
    println!("{report}");
    eprintln!("bench finished in {:.1?}", started.elapsed());
}

async fn run_all(plan: &Plan) -> String {
    // `WEIR_BENCH_PARTS=stepping,reaction` runs only those parts (scale, stepping, reaction, idle).
    let parts = std::env::var("WEIR_BENCH_PARTS").unwrap_or_default();
    let part = |name: &str| parts.is_empty() || parts.split(',').any(|p| p.trim() == name);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| Figure | Median | Baseline (same run) | Ratio | Target |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | --- |");
    if part("scale") {
        for &(n, restarts) in &plan.scale {
            let s = scale(n, restarts, plan.steady_window).await;
            eprintln!("scale {n}: {s:?}");
            s.rows(n, restarts, &mut out);
        }
    }
    if part("stepping") {
        let s = stepping(plan.stepping_rollouts, plan.stepping_runs).await;
        eprintln!("stepping: {s:?}");
        s.rows(plan.stepping_rollouts, plan.stepping_runs, &mut out);
    }
    if part("reaction") {
        let r = reaction(plan.reactions).await;
        eprintln!("reaction: {r:?}");
        r.rows(&mut out);
    }
    if part("idle") {
        let idle = idle(plan.idle_runs, plan.idle_settle).await;
        let _ = writeln!(
            out,
            "| Idle RSS (empty cluster, {} runs) | {:.1} MiB | | | ≤ 20 MB |",
            plan.idle_runs,
            median_f(&idle)
        );
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The weir process.

/// A `weir run` child process and its metrics endpoint.
struct Weir {
    child: tokio::process::Child,
    pid: u32,
    metrics: String,
    started: Instant,
}

impl Weir {
    async fn start(dir: &Path) -> Weir {
        let started = Instant::now();
        let log = std::fs::File::create(dir.join("weir.log")).expect("weir log");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .arg("run")
            .arg("--kubeconfig")
            .arg(dir.join("kubeconfig"))
            .arg("--metrics-addr")
            .arg("127.0.0.1:0")
            .arg("--cache-dir")
            .arg(dir.join("cache"))
            .env(
                "RUST_LOG",
                std::env::var("WEIR_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start weir run");
        let pid = child.id().expect("weir pid");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let metrics = loop {
            let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
                .await
                .expect("weir run printed no metrics address within 60 s")
                .expect("read weir stdout")
                .expect("weir run exited before serving metrics");
            if let Some(rest) = line.strip_prefix("metrics and health on http://") {
                break rest.split('/').next().unwrap_or_default().to_string();
            }
        };
        // Keep reading, so weir never blocks on a full pipe; its log goes to stdout.
        let mut stdout_log =
            std::fs::File::create(dir.join("weir.stdout")).expect("weir stdout log");
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                use std::io::Write as _;
                let _ = writeln!(stdout_log, "{line}");
            }
        });
        Weir {
            child,
            pid,
            metrics,
            started,
        }
    }

    /// (VmRSS, VmHWM) in KiB.
    fn rss_kib(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// CPU time (user + system) so far.
    fn cpu(&self) -> Duration {
        process_cpu(&self.pid.to_string())
    }

    /// `weir_reconciles_total{controller="rollout"}`.
    async fn rollout_reconciles(&self) -> u64 {
        let body = http_get(&self.metrics, "/metrics").await;
        body.lines()
            .filter(|l| l.starts_with("weir_reconciles_total{") && l.contains("\"rollout\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum()
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// CPU time (user + system) of process `pid` (or `self`) so far.
fn process_cpu(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3; utime and stime
    // are fields 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
    let fields: Vec<u64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64)
}

fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// A plain HTTP/1.0 GET, so the bench needs no HTTP client of its own.
async fn http_get(addr: &str, path: &str) -> String {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return String::new();
    };
    // HTTP/1.0: the server answers unchunked and closes, so reading to the end is the body.
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body).await;
    body
}

// ---------------------------------------------------------------------------------------------
// The emulator and what is in it.

struct Cluster {
    emulator: RunningEmulator,
    client: kube::Client,
    dir: PathBuf,
}

impl Cluster {
    async fn start(name: &str) -> Cluster {
        let dir =
            std::env::temp_dir().join(format!("weir-bench-scale-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("bench dir");
        let emulator = weir::emulator::start(EmulatorConfig {
            kubeconfig: Some(dir.join("kubeconfig")),
            workload_delay: Duration::from_millis(10),
            ..Default::default()
        })
        .await
        .expect("start emulator");
        let client = kube::Client::try_from(emulator.kube_config()).expect("client");
        crds::install(&client, TestCrds::Included).await;
        for k in 0..NAMESPACES {
            let api: Api<DynamicObject> = Api::all_with(
                client.clone(),
                &resource("", "v1", "Namespace", "namespaces"),
            );
            let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace(k)}});
            api.create(
                &PostParams::default(),
                &serde_json::from_value(ns).expect("ns"),
            )
            .await
            .expect("create namespace");
        }
        Cluster {
            emulator,
            client,
            dir,
        }
    }

    fn store(&self) -> Arc<Store> {
        self.emulator.app.store.clone()
    }

    fn stats(&self) -> Value {
        self.emulator.app.stats_json()
    }

    fn reset_stats(&self) {
        self.emulator.app.stats.reset();
    }

    fn stop(self) {
        self.emulator.shutdown();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn namespace(k: usize) -> String {
    format!("scale-{k}")
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn rollouts() -> ApiResource {
    resource("weir.io", "v1alpha1", "Rollout", "rollouts")
}

fn http_routes() -> ApiResource {
    resource("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes")
}

fn services() -> ApiResource {
    resource("", "v1", "Service", "services")
}

/// The canary steps every scale Rollout walks: two weights, each followed by a 0-second pause.
fn four_steps() -> Value {
    json!([{"setWeight": 25}, {"pause": {"duration": "0s"}}, {"setWeight": 75}, {"pause": {"duration": "0s"}}])
}

/// Rollout `i`: its namespace, name, and the objects it needs (two Services, an HTTPRoute, itself).
fn app_objects(i: usize, steps: &Value, routes: &[String]) -> (String, Vec<(ApiResource, Value)>) {
    let ns = namespace(i % NAMESPACES);
    let name = format!("app-{i}");
    let stable = format!("{name}-stable");
    let canary = format!("{name}-canary");
    let mut objs = Vec::new();
    for svc in [&stable, &canary] {
        objs.push((
            services(),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": svc},
            "spec": {"selector": {"app": &name}, "ports": [{"port": 80}]}}),
        ));
    }
    for route in routes {
        objs.push((http_routes(), json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": route},
            "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [
                {"name": &stable, "port": 80, "weight": 100}, {"name": &canary, "port": 80, "weight": 0}]}]}})));
    }
    let refs: Vec<Value> = routes.iter().map(|r| json!({"name": r})).collect();
    objs.push((rollouts(), json!({"apiVersion": "weir.io/v1alpha1", "kind": "Rollout", "metadata": {"name": &name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": &name}},
            "template": {"metadata": {"labels": {"app": &name}}, "spec": {"containers": [{"name": "app", "image": "app:1"}]}},
            "strategy": {"canary": {"stableService": &stable, "canaryService": &canary,
                "scaleDownDelaySeconds": 0,
                "trafficRouting": {"gatewayAPI": {"httpRoutes": refs}},
                "steps": steps}}}})));
    (ns, objs)
}

/// Creates every object over HTTP, `LOAD_CONCURRENCY` requests in flight.
async fn load(client: &kube::Client, objects: Vec<(String, ApiResource, Value)>) {
    futures::stream::iter(objects)
        .for_each_concurrent(LOAD_CONCURRENCY, |(ns, ar, obj)| {
            let client = client.clone();
            async move {
                let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &ar);
                let obj: DynamicObject = serde_json::from_value(obj).expect("object");
                api.create(&PostParams::default(), &obj)
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "create {ns}/{}: {e}",
                            obj.metadata.name.clone().unwrap_or_default()
                        )
                    });
            }
        })
        .await;
}

async fn load_apps(client: &kube::Client, n: usize, steps: &Value) {
    let mut objects = Vec::new();
    for i in 0..n {
        let (ns, objs) = app_objects(i, steps, &[format!("app-{i}")]);
        objects.extend(objs.into_iter().map(|(ar, o)| (ns.clone(), ar, o)));
    }
    load(client, objects).await;
}

// ---------------------------------------------------------------------------------------------
// Following the store in-process: the moment the emulator commits a change, not when a client
// hears of it.

/// An object's (namespace, name).
fn object_key(o: &Value) -> (String, String) {
    let at = |field: &str| {
        o["metadata"][field]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    (at("namespace"), at("name"))
}

/// What [`follow`] reports.
enum Change<'a> {
    /// The follower fell further behind than the store's history reaches: what it knew is void,
    /// and every object there is now arrives as [`Change::Applied`].
    Reset,
    /// An object as it is now (created, listed or changed).
    Applied(&'a Arc<Value>),
    /// An object removed.
    Deleted(&'a Arc<Value>),
}

/// Calls `f` with every object of a collection, then with each change as soon as the store
/// commits it. Like a reflector: it lists, follows the history from the list's version, and lists
/// again if it falls behind the history (the emulator keeps its default 10,000 changes per
/// collection, so memory stays flat however long the bench runs).
fn follow(
    store: Arc<Store>,
    group: &str,
    version: &str,
    plural: &str,
    mut f: impl FnMut(Change<'_>) + Send + 'static,
) {
    let rt = store
        .resource(group, version, plural)
        .expect("resource type");
    tokio::spawn(async move {
        let key = rt.key();
        let mut rx = store.subscribe(&key);
        let mut cursor = None;
        loop {
            rx.mark_unchanged();
            let events = match cursor {
                Some(rv) => store.events_since(&key, rv, usize::MAX).ok(),
                None => None,
            };
            match events {
                Some(events) => {
                    for e in &events {
                        cursor = Some(e.rv);
                        match e.kind {
                            EventType::Deleted => f(Change::Deleted(&e.object)),
                            _ => f(Change::Applied(&e.object)),
                        }
                    }
                }
                None => {
                    let page = store
                        .list(&rt, &ListOptions::default())
                        .expect("list to follow");
                    if cursor.is_some() {
                        f(Change::Reset);
                    }
                    for obj in &page.items {
                        f(Change::Applied(obj));
                    }
                    cursor = Some(page.rv);
                    continue;
                }
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
}

/// The latest version of every object of a collection, and a signal on each change.
#[derive(Clone)]
struct Tracker {
    state: Arc<Mutex<Tracked>>,
    changed: watch::Receiver<u64>,
}

/// The objects a [`Tracker`] follows, and which of them changed since the last look: a wait
/// judges only those, so it costs the emulator's CPU no more per event at 10,000 objects than at 10.
#[derive(Default)]
struct Tracked {
    objects: HashMap<ObjKey, Arc<Value>>,
    dirty: HashSet<ObjKey>,
}

impl Tracker {
    fn new(store: Arc<Store>, group: &str, version: &str, plural: &str) -> Tracker {
        let state: Arc<Mutex<Tracked>> = Arc::default();
        let (tx, changed) = watch::channel(0);
        let shared = state.clone();
        follow(store, group, version, plural, move |change| {
            let mut t = shared.lock().expect("tracker");
            let t = &mut *t;
            let key = object_key;
            match change {
                Change::Reset => {
                    t.dirty.extend(t.objects.drain().map(|(k, _)| k));
                }
                Change::Applied(o) => {
                    let k = key(o);
                    t.objects.insert(k.clone(), o.clone());
                    t.dirty.insert(k);
                }
                Change::Deleted(o) => {
                    let k = key(o);
                    t.objects.remove(&k);
                    t.dirty.insert(k);
                }
            }
            tx.send_modify(|n| *n += 1);
        });
        Tracker { state, changed }
    }

    async fn wait_count(&mut self, what: &str, n: usize, pred: impl Fn(&Value) -> bool) {
        let mut matching: HashSet<ObjKey> = HashSet::new();
        {
            // A new wait has judged nothing yet: every object counts as changed.
            let mut t = self.state.lock().expect("tracker");
            let t = &mut *t;
            t.dirty.extend(t.objects.keys().cloned());
        }
        let wait = async {
            loop {
                self.changed.mark_unchanged();
                {
                    let mut t = self.state.lock().expect("tracker");
                    let t = &mut *t;
                    let keys: Vec<ObjKey> = t.dirty.drain().collect();
                    for key in keys {
                        match t.objects.get(&key) {
                            Some(o) if pred(o) => matching.insert(key),
                            _ => matching.remove(&key),
                        };
                    }
                }
                if matching.len() >= n {
                    return;
                }
                self.changed.changed().await.expect("tracker ended");
            }
        };
        tokio::time::timeout(WAIT, wait)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
    }
}

/// A Rollout weir has finished with: Healthy at its current generation, on `image`.
fn healthy_on(image: &str) -> impl Fn(&Value) -> bool + '_ {
    move |ro| {
        ro["status"]["phase"] == "Healthy"
            && ro["status"]["observedGeneration"] == ro["metadata"]["generation"]
            && ro["spec"]["template"]["spec"]["containers"][0]["image"] == image
    }
}

/// Writes made by weir's own client (its `User-Agent` is `weir/<version>`), by (verb, resource).
fn weir_writes(stats: &Value) -> BTreeMap<(String, String, String), u64> {
    let mut out = BTreeMap::new();
    for r in stats["requestsByResource"].as_array().into_iter().flatten() {
        let ua = r["userAgent"].as_str().unwrap_or_default();
        let verb = r["verb"].as_str().unwrap_or_default();
        if ua.starts_with("weir/")
            && ["create", "update", "patch", "delete", "deletecollection"].contains(&verb)
        {
            let key = (
                verb.to_string(),
                r["group"].as_str().unwrap_or_default().to_string(),
                r["resource"].as_str().unwrap_or_default().to_string(),
            );
            *out.entry(key).or_default() += r["count"].as_u64().unwrap_or(0);
        }
    }
    out
}

/// Requests (any verb) made by weir's client.
/// weir's requests by verb and resource, reads included.
fn weir_requests_by(stats: &Value) -> BTreeMap<(String, String), u64> {
    let mut by = BTreeMap::new();
    for r in stats["requestsByResource"].as_array().into_iter().flatten() {
        if r["userAgent"]
            .as_str()
            .unwrap_or_default()
            .starts_with("weir/")
        {
            let key = (
                r["verb"].as_str().unwrap_or_default().to_string(),
                r["resource"].as_str().unwrap_or_default().to_string(),
            );
            *by.entry(key).or_default() += r["count"].as_u64().unwrap_or(0);
        }
    }
    by
}

fn weir_requests(stats: &Value) -> u64 {
    stats["requestsByResource"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| {
            r["userAgent"]
                .as_str()
                .unwrap_or_default()
                .starts_with("weir/")
        })
        .map(|r| r["count"].as_u64().unwrap_or(0))
        .sum()
}

/// Serialized bytes of every object of these kinds in the store.
fn stored_bytes(store: &Store, kinds: &[(&str, &str, &str)]) -> u64 {
    kinds
        .iter()
        .filter_map(|(g, v, p)| store.resource(g, v, p))
        .filter_map(|rt| store.list(&rt, &ListOptions::default()).ok())
        .flat_map(|page| page.items)
        .map(|o| serde_json::to_vec(&*o).map_or(0, |b| b.len() as u64))
        .sum()
}

// ---------------------------------------------------------------------------------------------
// Scale.

#[derive(Debug, Default)]
struct ScaleRuns {
    load: Duration,
    converge: Duration,
    resync: Vec<Duration>,
    peak_rss_kib: Vec<u64>,
    steady_rss_kib: Vec<u64>,
    cpu_per_min: Vec<Duration>,
    resync_cpu: Vec<Duration>,
    writes: Vec<u64>,
    requests_per_min: Vec<f64>,
    cached_bytes: u64,
}

impl ScaleRuns {
    fn rows(&self, n: usize, restarts: usize, out: &mut String) {
        let peak = median_u(&self.peak_rss_kib) as f64 / 1024.0;
        let steady = median_u(&self.steady_rss_kib) as f64 / 1024.0;
        let cached = self.cached_bytes as f64 / 1024.0 / 1024.0;
        let runs = format!(
            "{n} Rollouts, {restarts} restart{}",
            if restarts == 1 { "" } else { "s" }
        );
        let _ = writeln!(
            out,
            "| Scale {runs}: peak RSS | {peak:.0} MiB | {cached:.1} MiB of Rollouts+ReplicaSets in the API | {:.1}× ({:.1} KiB per Rollout) | ≤ 300 MB at 10,000 |",
            peak / cached,
            peak * 1024.0 / n as f64
        );
        let _ = writeln!(
            out,
            "| Scale {runs}: steady RSS | {steady:.0} MiB | {cached:.1} MiB | {:.1}× ({:.1} KiB per Rollout) | ≤ 300 MB at 10,000 |",
            steady / cached,
            steady * 1024.0 / n as f64
        );
        let _ = writeln!(
            out,
            "| Scale {runs}: full resync after a restart | {} | {} for the first convergence | {:.2}× | |",
            secs(median_d(&self.resync)),
            secs(self.converge),
            median_d(&self.resync).as_secs_f64() / self.converge.as_secs_f64().max(1e-9)
        );
        let _ = writeln!(
            out,
            "| Scale {runs}: CPU per minute at steady state | {} | {} CPU for the resync | | |",
            secs(median_d(&self.cpu_per_min)),
            secs(median_d(&self.resync_cpu)),
        );
        let _ = writeln!(
            out,
            "| Scale {runs}: writes during resync + steady state | {} | {:.0} requests/min at steady state | | 0 |",
            median_u(&self.writes),
            median_f(&self.requests_per_min)
        );
    }
}

async fn scale(n: usize, restarts: usize, window: Duration) -> ScaleRuns {
    let cluster = Cluster::start(&format!("scale{n}")).await;
    let mut runs = ScaleRuns::default();
    let started = Instant::now();
    load_apps(&cluster.client, n, &four_steps()).await;
    runs.load = started.elapsed();
    let mut tracker = Tracker::new(cluster.store(), "weir.io", "v1alpha1", "rollouts");

    let started = Instant::now();
    let weir = Weir::start(&cluster.dir).await;
    tracker
        .wait_count("every Rollout Healthy", n, healthy_on("app:1"))
        .await;
    runs.converge = started.elapsed();
    weir.stop().await;
    runs.cached_bytes = stored_bytes(
        &cluster.store(),
        &[
            ("weir.io", "v1alpha1", "rollouts"),
            ("apps", "v1", "replicasets"),
        ],
    );

    for _ in 0..restarts {
        cluster.reset_stats();
        let weir = Weir::start(&cluster.dir).await;
        let resync = tokio::time::timeout(WAIT, async {
            loop {
                if weir.rollout_reconciles().await >= n as u64 {
                    return weir.started.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("resync within the wait");
        runs.resync.push(resync);
        runs.resync_cpu.push(weir.cpu());
        // Reconciles still in flight finish; then the steady window.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let requests_before = weir_requests(&cluster.stats());
        let cpu_before = weir.cpu();
        tokio::time::sleep(window).await;
        let cpu = weir.cpu().saturating_sub(cpu_before);
        let stats = cluster.stats();
        let requests = weir_requests(&stats) - requests_before;
        runs.cpu_per_min
            .push(cpu.mul_f64(60.0 / window.as_secs_f64()));
        runs.requests_per_min
            .push(requests as f64 * 60.0 / window.as_secs_f64());
        let (rss, hwm) = weir.rss_kib();
        runs.steady_rss_kib.push(rss);
        runs.peak_rss_kib.push(hwm);
        let writes = weir_writes(&stats);
        if !writes.is_empty() {
            eprintln!("scale {n}: weir wrote at steady state: {writes:?}");
        }
        runs.writes.push(writes.values().sum());
        weir.stop().await;
    }
    cluster.stop();
    runs
}

// ---------------------------------------------------------------------------------------------
// Stepping.

#[derive(Debug, Default)]
struct SteppingRuns {
    total: Vec<Duration>,
    floor: Vec<Duration>,
    cpu: Vec<Duration>,
    /// The emulator's and the bench's CPU while weir's run was timed.
    emulator_cpu: Vec<Duration>,
    /// The emulator's and the bare client's CPU while the floor was timed.
    floor_cpu: Vec<Duration>,
    /// Writes the emulator committed while weir's run was timed: weir's, the release's, and those
    /// of the emulator's own ReplicaSet controller (pods and statuses).
    committed: Vec<u64>,
    /// Writes the emulator committed while the floor was timed.
    floor_committed: Vec<u64>,
    writes: Vec<u64>,
    /// Every request weir made, reads included (the floor makes only the writes).
    requests: Vec<u64>,
    kinds: BTreeMap<(String, String, String), u64>,
}

impl SteppingRuns {
    fn rows(&self, n: usize, runs: usize, out: &mut String) {
        let total = median_d(&self.total);
        let floor = median_d(&self.floor);
        let transitions = (n * 4) as f64;
        // Each run's ratio to the floor taken right after it, then their median: the machine's
        // speed drifts between runs, and the floor of the same run sees the same machine.
        let ratio = |a: &[Duration], b: &[Duration]| {
            let per_run: Vec<f64> = a
                .iter()
                .zip(b)
                .map(|(a, b)| a.as_secs_f64() / b.as_secs_f64().max(1e-9))
                .collect();
            median_f(&per_run)
        };
        let _ = writeln!(
            out,
            "| Stepping {n} canaries × 4 steps ({runs} runs): all Healthy on the new revision | {} | {} bare-client floor ({} writes) | {:.2}× (median of per-run ratios) | ≤ 1.3× the floor |",
            secs(total),
            secs(floor),
            median_u(&self.writes),
            ratio(&self.total, &self.floor)
        );
        let both: Vec<Duration> = self
            .cpu
            .iter()
            .zip(&self.emulator_cpu)
            .map(|(w, e)| *w + *e)
            .collect();
        let _ = writeln!(
            out,
            "| Stepping: CPU of weir and the emulator (2 cores) while timed | {} (weir {}, emulator and bench {}) | {} (emulator and bare client) | {:.2}× | |",
            secs(median_d(&both)),
            secs(median_d(&self.cpu)),
            secs(median_d(&self.emulator_cpu)),
            secs(median_d(&self.floor_cpu)),
            ratio(&both, &self.floor_cpu)
        );
        let (committed, floor_committed) =
            (median_u(&self.committed), median_u(&self.floor_committed));
        let _ = writeln!(
            out,
            "| Stepping: writes the emulator committed while timed (weir's, the release's, its ReplicaSet controller's) | {committed} | {floor_committed} | {:.2}× | |",
            committed as f64 / (floor_committed as f64).max(1.0)
        );
        let _ = writeln!(
            out,
            "| Stepping: weir CPU per step transition | {:.2} ms | {:.2} writes, {:.2} requests in all per transition | | |",
            median_d(&self.cpu).as_secs_f64() * 1000.0 / transitions,
            median_u(&self.writes) as f64 / transitions,
            median_u(&self.requests) as f64 / transitions
        );
    }
}

async fn stepping(n: usize, runs: usize) -> SteppingRuns {
    let cluster = Cluster::start("stepping").await;
    load_apps(&cluster.client, n, &four_steps()).await;
    let mut tracker = Tracker::new(cluster.store(), "weir.io", "v1alpha1", "rollouts");
    let weir = Weir::start(&cluster.dir).await;
    tracker
        .wait_count("every Rollout Healthy", n, healthy_on("app:1"))
        .await;
    let mut out = SteppingRuns::default();
    let mut weir = Some(weir);
    for run in 0..runs {
        let w = match weir.take() {
            Some(w) => w,
            None => Weir::start(&cluster.dir).await,
        };
        // Let the restarted weir's resync pass before timing.
        tokio::time::timeout(WAIT, async {
            while w.rollout_reconciles().await < n as u64 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("resync");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let image = format!("app:{}", run + 2);
        cluster.reset_stats();
        let cpu_before = w.cpu();
        let reconciles_before = w.rollout_reconciles().await;
        let emulator_cpu_before = process_cpu("self");
        let started = Instant::now();
        let rv_before = cluster.store().current_rv();
        release(&cluster.client, n, &image).await;
        tracker
            .wait_count(
                "every canary Healthy on the new revision",
                n,
                healthy_on(&image),
            )
            .await;
        out.total.push(started.elapsed());
        out.cpu.push(w.cpu().saturating_sub(cpu_before));
        out.emulator_cpu
            .push(process_cpu("self").saturating_sub(emulator_cpu_before));
        out.committed
            .push(cluster.store().current_rv().saturating_sub(rv_before));
        let stats = cluster.stats();
        let kinds = weir_writes(&stats);
        out.writes.push(kinds.values().sum());
        out.requests.push(weir_requests(&stats));
        eprintln!(
            "stepping run {run}: {:.2?}, weir CPU {:.2?}, emulator and bench CPU {:.2?}, {} writes committed, {} objects in the store, {} watches, {} Rollout reconciles; weir's requests: {:?}; watch events sent: {}",
            out.total[run],
            out.cpu[run],
            out.emulator_cpu[run],
            out.committed[run],
            cluster.store().object_count(),
            stats["activeWatches"],
            w.rollout_reconciles()
                .await
                .saturating_sub(reconciles_before),
            weir_requests_by(&stats),
            stats["watchEvents"]
        );
        w.stop().await;
        let floor = replay_floor(&cluster, n, run, &kinds).await;
        eprintln!(
            "stepping run {run}: floor {:.2?}, emulator and bench CPU {:.2?}, {} writes committed",
            floor.time, floor.cpu, floor.committed
        );
        out.floor.push(floor.time);
        out.floor_cpu.push(floor.cpu);
        out.floor_committed.push(floor.committed);
        expire_events(&cluster.client).await;
        out.kinds = kinds;
    }
    eprintln!("stepping: weir's writes by kind: {:?}", out.kinds);
    cluster.stop();
    out
}

/// Deletes every Event, as the API server's one-hour Event TTL would between releases hours apart.
/// Without it each run leaves 20,000 (weir's and the floor's), and a restarted weir lists and
/// watches all of them: by the fifth run 80,000, which is no cost of stepping.
async fn expire_events(client: &kube::Client) {
    let events = resource("", "v1", "Event", "events");
    for k in 0..NAMESPACES {
        Api::<DynamicObject>::namespaced_with(client.clone(), &namespace(k), &events)
            .delete_collection(&Default::default(), &Default::default())
            .await
            .expect("delete Events");
    }
}

/// Sets a new image on every Rollout, all at once.
async fn release(client: &kube::Client, n: usize, image: &str) {
    futures::stream::iter(0..n)
        .for_each_concurrent(LOAD_CONCURRENCY, |i| {
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace(i % NAMESPACES), &rollouts());
            async move {
                let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}});
                api.patch(&format!("app-{i}"), &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .expect("release");
            }
        })
        .await;
}

/// The same writes weir made, by a bare client: for each Rollout, its share of each kind of
/// write, one after another (as weir writes for one Rollout), every Rollout at once (weir's
/// controller reconciles different Rollouts concurrently, without a bound).
async fn replay_floor(
    cluster: &Cluster,
    n: usize,
    run: usize,
    kinds: &BTreeMap<(String, String, String), u64>,
) -> FloorRun {
    let store = cluster.store();
    // Each Rollout's newest ReplicaSet, the one weir scaled most, and the newest one weir scaled to 0.
    let mut replica_sets: HashMap<String, Arc<Value>> = HashMap::new();
    let mut scaled_down: HashMap<String, Arc<Value>> = HashMap::new();
    let keep_newest = |map: &mut HashMap<String, Arc<Value>>, owner: &str, rs: &Arc<Value>| {
        let created = |o: &Value| {
            o["metadata"]["creationTimestamp"]
                .as_str()
                .map(str::to_string)
        };
        if map.get(owner).is_none_or(|old| created(old) <= created(rs)) {
            map.insert(owner.to_string(), Arc::clone(rs));
        }
    };
    let rs_type = store
        .resource("apps", "v1", "replicasets")
        .expect("replicasets");
    for rs in store
        .list(&rs_type, &ListOptions::default())
        .expect("list")
        .items
    {
        let owner = rs["metadata"]["labels"]["weir.io/rollout"]
            .as_str()
            .unwrap_or_default();
        keep_newest(&mut replica_sets, owner, &rs);
        if rs["spec"]["replicas"] == 0 {
            keep_newest(&mut scaled_down, owner, &rs);
        }
    }
    let ro_type = store
        .resource("weir.io", "v1alpha1", "rollouts")
        .expect("rollouts");
    let mut ro_objects: HashMap<String, Value> = HashMap::new();
    for ro in store
        .list(&ro_type, &ListOptions::default())
        .expect("list")
        .items
    {
        ro_objects.insert(
            ro["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            (*ro).clone(),
        );
    }
    let objects = Arc::new(FloorObjects {
        replica_sets,
        scaled_down,
        rollouts: ro_objects,
    });
    let before = BeforeFloor::take(&store);
    let cpu_before = process_cpu("self");
    let rv_before = store.current_rv();
    let started = Instant::now();
    let tasks = (0..n).map(|i| {
        let client = cluster.client.clone();
        let objects = objects.clone();
        let mut writes: Vec<(String, String, String)> = Vec::new();
        for ((verb, group, res), count) in kinds {
            let share = count / n as u64 + u64::from((i as u64) < count % n as u64);
            writes.extend((0..share).map(|_| (verb.clone(), group.clone(), res.clone())));
        }
        tokio::spawn(async move {
            let ns = namespace(i % NAMESPACES);
            let name = format!("app-{i}");
            let last_rs_patch = writes
                .iter()
                .rposition(|(verb, _, res)| verb == "patch" && res == "replicasets");
            for (k, (verb, group, res)) in writes.into_iter().enumerate() {
                floor_write(
                    &client,
                    &ns,
                    &name,
                    (run, k, last_rs_patch == Some(k)),
                    (&verb, &group, &res),
                    &objects,
                )
                .await;
            }
        })
    });
    // As many Rollouts' writes at once as weir reconciles Rollouts at once.
    futures::stream::iter(tasks)
        .buffer_unordered(usize::from(
            weir::rollout::controller::RECONCILE_CONCURRENCY,
        ))
        .for_each(|_| async {})
        .await;
    let run = FloorRun {
        time: started.elapsed(),
        cpu: process_cpu("self").saturating_sub(cpu_before),
        committed: store.current_rv().saturating_sub(rv_before),
    };
    undo_floor(&store, &before);
    run
}

/// The objects whose writes the floor replays, as weir left them.
struct FloorObjects {
    /// Each Rollout's newest ReplicaSet.
    replica_sets: HashMap<String, Arc<Value>>,
    /// Each Rollout's newest ReplicaSet at 0 replicas (the stable weir replaced).
    scaled_down: HashMap<String, Arc<Value>>,
    /// The Rollouts, by name.
    rollouts: HashMap<String, Value>,
}

/// One timed floor replay.
struct FloorRun {
    time: Duration,
    /// The emulator's and the bare client's CPU (this process) while timed.
    cpu: Duration,
    /// Writes the emulator committed while timed, its own ReplicaSet controller's included.
    committed: u64,
}

/// Every object the floor writes, as it was before the floor: Services, HTTPRoutes, ReplicaSets
/// and Rollouts.
struct BeforeFloor(
    Vec<(
        Arc<weir::emulator::resources::ResourceType>,
        Vec<Arc<Value>>,
    )>,
);

impl BeforeFloor {
    fn take(store: &Store) -> BeforeFloor {
        let kinds = [
            ("", "v1", "services"),
            ("gateway.networking.k8s.io", "v1", "httproutes"),
            ("apps", "v1", "replicasets"),
            ("weir.io", "v1alpha1", "rollouts"),
        ];
        BeforeFloor(
            kinds
                .iter()
                .map(|(g, v, p)| {
                    let rt = store.resource(g, v, p).expect("a served kind");
                    let items = store
                        .list(&rt, &ListOptions::default())
                        .expect("list")
                        .items;
                    (rt, items)
                })
                .collect(),
        )
    }
}

/// Puts the cluster back as it was before the floor replay: its ReplicaSets (and their pods) gone,
/// and the specs, annotations and statuses it changed restored. Without this every run leaves
/// 1,000 more ReplicaSets behind, and each later weir run works against a bigger cluster than the
/// one before it.
fn undo_floor(store: &Store, before: &BeforeFloor) {
    use weir::emulator::object_rules::{DeleteOptions, WriteContext};
    let ctx = WriteContext::internal("bench");
    let status = WriteContext {
        subresource: Some("status".into()),
        ..WriteContext::internal("bench")
    };
    for (rt, items) in &before.0 {
        let kept: HashSet<(String, String)> = items.iter().map(|o| object_key(o)).collect();
        for now in store.list(rt, &ListOptions::default()).expect("list").items {
            let key = object_key(&now);
            if !kept.contains(&key) {
                store
                    .delete(rt, &key.0, &key.1, &DeleteOptions::default(), &ctx)
                    .expect("delete a floor object");
            }
        }
        for was in items {
            let (ns, name) = object_key(was);
            let restore = |field: &str, ctx: &WriteContext| {
                store
                    .modify(rt, &ns, &name, ctx, false, |cur| {
                        let mut o = cur.cloned().unwrap_or_default();
                        let (into, from) = if field == "annotations" {
                            (&mut o["metadata"], &was["metadata"])
                        } else {
                            (&mut o, &**was)
                        };
                        match (into.as_object_mut(), from.get(field)) {
                            (Some(into), Some(v)) => into.insert(field.into(), v.clone()),
                            (Some(into), None) => into.remove(field),
                            (None, _) => None,
                        };
                        Ok(o)
                    })
                    .expect("restore an object the floor wrote");
            };
            restore("spec", &ctx);
            restore("annotations", &ctx);
            if rt.plural == "rollouts" {
                restore("status", &status);
            }
        }
    }
}

/// One write of the given kind on Rollout `name`'s objects, shaped like the one weir makes.
async fn floor_write(
    client: &kube::Client,
    ns: &str,
    name: &str,
    // The floor run, the write's index in it (names created in one run are new in the next), and
    // whether it is the Rollout's last ReplicaSet patch.
    (run, k, last_rs_patch): (usize, usize, bool),
    (verb, group, res): (&str, &str, &str),
    objects: &FloorObjects,
) {
    let pp = PatchParams {
        field_manager: Some("floor".into()),
        ..Default::default()
    };
    let post = PostParams {
        field_manager: Some("floor".into()),
        ..Default::default()
    };
    let dynamic = |ar: ApiResource| Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar);
    let result = match (verb, res) {
        // weir's ReplicaSet patches end a release (scaleDownDelaySeconds 0) by scaling the old
        // stable to 0, so the emulator's ReplicaSet controller deletes its pod and writes its
        // status. The floor's last one scales that same ReplicaSet back to 1 (its pod is made and
        // its status written: the same work for the cluster); the others set an annotation on the
        // newest ReplicaSet, at its size. The floor puts both back afterwards, outside the timing.
        ("patch", "replicasets") => {
            let rs = &objects.replica_sets[name];
            let (target, patch) = match objects.scaled_down.get(name) {
                Some(old) if last_rs_patch => (
                    old["metadata"]["name"].as_str().unwrap_or_default(),
                    json!({"metadata": {"annotations": {"floor": k.to_string()}}, "spec": {"replicas": 1}}),
                ),
                _ => (
                    rs["metadata"]["name"].as_str().unwrap_or_default(),
                    json!({"metadata": {"annotations": {"weir.io/scale-down-at": null, "floor": k.to_string()}}, "spec": {"replicas": rs["spec"]["replicas"].clone()}}),
                ),
            };
            dynamic(resource("apps", "v1", "ReplicaSet", "replicasets"))
                .patch(target, &pp, &Patch::Merge(&patch))
                .await
                .map(drop)
        }
        ("create", "replicasets") => {
            let mut rs = (*objects.replica_sets[name]).clone();
            // One name a run, as weir's one ReplicaSet per revision: a second create of it is
            // refused as AlreadyExists, as weir's retried creates were.
            rs["metadata"] = json!({"name": format!("{name}-floor{run}"), "labels": rs["metadata"]["labels"].clone()});
            rs.as_object_mut().map(|o| o.remove("status"));
            match dynamic(resource("apps", "v1", "ReplicaSet", "replicasets"))
                .create(&post, &serde_json::from_value(rs).expect("rs"))
                .await
            {
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                other => other.map(drop),
            }
        }
        ("delete", "replicasets") => Ok(()),
        ("patch", "services") => {
            let patch =
                json!({"spec": {"selector": {"weir.io/pod-template-hash": format!("floor{k}")}}});
            dynamic(services())
                .patch(&format!("{name}-stable"), &pp, &Patch::Merge(&patch))
                .await
                .map(drop)
        }
        ("patch", "httproutes") => {
            let w = if k.is_multiple_of(2) { 25 } else { 75 };
            let patch = json!({"spec": {"rules": [{"backendRefs": [
                {"name": format!("{name}-stable"), "port": 80, "weight": 100 - w},
                {"name": format!("{name}-canary"), "port": 80, "weight": w}]}]}});
            dynamic(http_routes())
                .patch(name, &pp, &Patch::Merge(&patch))
                .await
                .map(drop)
        }
        ("update", "rollouts/status") => {
            let api = dynamic(rollouts());
            let mut ro = objects.rollouts[name].clone();
            ro["status"]["message"] = json!(format!("floor {k}"));
            // A stale resourceVersion would make this a 409; weir writes from a fresh read.
            ro["metadata"]
                .as_object_mut()
                .map(|m| m.remove("resourceVersion"));
            let ro: DynamicObject = serde_json::from_value(ro).expect("ro");
            api.replace_status(name, &post, &ro).await.map(drop)
        }
        ("create", "events") => {
            let ev = json!({"apiVersion": "v1", "kind": "Event",
                "metadata": {"name": format!("{name}.floor{run}.{k}")},
                "involvedObject": {"apiVersion": "weir.io/v1alpha1", "kind": "Rollout", "name": name, "namespace": ns},
                "reason": "RolloutStepCompleted", "message": format!("Rollout step {k} completed (setWeight 25)"),
                "type": "Normal", "source": {"component": "weir.io/rollout-controller"},
                "reportingComponent": "weir.io/rollout-controller", "reportingInstance": "weir"});
            let ar = if group.is_empty() {
                resource("", "v1", "Event", "events")
            } else {
                resource("events.k8s.io", "v1", "Event", "events")
            };
            dynamic(ar)
                .create(&post, &serde_json::from_value(ev).expect("event"))
                .await
                .map(drop)
        }
        _ => {
            eprintln!("floor: no replay for {verb} {group}/{res}");
            Ok(())
        }
    };
    if let Err(e) = result {
        eprintln!("floor write {verb} {res} for {ns}/{name}: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Reaction.

#[derive(Debug, Default)]
struct Reactions {
    reaction: Vec<Duration>,
    floor: Vec<Duration>,
}

impl Reactions {
    fn rows(&self, out: &mut String) {
        let mut r = self.reaction.clone();
        r.sort();
        let mut f = self.floor.clone();
        f.sort();
        let _ = writeln!(
            out,
            "| Reaction ({} failures): failed measurement committed → every route at 100/0, p50 | {} | {} route write → watcher | {:.1}× | |",
            r.len(),
            ms(percentile(&r, 50)),
            ms(percentile(&f, 50)),
            percentile(&r, 50).as_secs_f64() / percentile(&f, 50).as_secs_f64().max(1e-9)
        );
        let _ = writeln!(
            out,
            "| Reaction: p99 | {} | {} | {:.1}× | ≤ 50 ms |",
            ms(percentile(&r, 99)),
            ms(percentile(&f, 99)),
            percentile(&r, 99).as_secs_f64() / percentile(&f, 99).as_secs_f64().max(1e-9)
        );
    }
}

/// Each route's (stable, canary) weights as a watch sees them, by route name.
type RouteWeights = HashMap<String, SeenWeights>;

/// What a route watch saw of one route.
#[derive(Debug, Clone, Copy)]
struct SeenWeights {
    weights: (i64, i64),
    /// When the weights last changed.
    since: Instant,
    /// Whether the canary ever had weight: a release can go to 80/20 and back between two looks at
    /// a `watch` channel, which only keeps the latest value.
    had_canary: bool,
}

fn route_weights(route: &Value) -> Option<(i64, i64)> {
    let refs = route["spec"]["rules"][0]["backendRefs"].as_array()?;
    let weight = |suffix: &str| {
        refs.iter()
            .find(|b| b["name"].as_str().is_some_and(|n| n.ends_with(suffix)))
            .map_or(0, |b| b["weight"].as_i64().unwrap_or(1))
    };
    Some((weight("-stable"), weight("-canary")))
}

async fn reaction(samples: usize) -> Reactions {
    let cluster = Cluster::start("reaction").await;
    // The metric: a local endpoint that always answers an error rate of 1.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let metric_addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|| async { r#"{"errorRate": 1.0}"# }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let ns = namespace(0);
    let template: Api<DynamicObject> = Api::namespaced_with(
        cluster.client.clone(),
        &ns,
        &resource(
            "weir.io",
            "v1alpha1",
            "AnalysisTemplate",
            "analysistemplates",
        ),
    );
    let t = json!({"apiVersion": "weir.io/v1alpha1", "kind": "AnalysisTemplate", "metadata": {"name": "error-rate"},
        "spec": {"metrics": [{"name": "error-rate", "successCondition": "result < 0.05",
            "provider": {"web": {"url": format!("http://{metric_addr}/"), "jsonPath": "{$.errorRate}"}}}]}});
    template
        .create(
            &PostParams::default(),
            &serde_json::from_value(t).expect("template"),
        )
        .await
        .expect("template");

    // Rollouts 0, 10, 20, … all live in namespace 0; each is released once and fails once.
    let steps = json!([{"setWeight": 20}, {"analysis": {"templates": [{"templateName": "error-rate"}]}}, {"pause": {}}]);
    let apps: Vec<usize> = (0..samples).map(|s| s * NAMESPACES).collect();
    let mut objects = Vec::new();
    let routes_of = |i: usize| -> Vec<String> { (0..3).map(|r| format!("app-{i}-r{r}")).collect() };
    for &i in &apps {
        let (ns, objs) = app_objects(i, &steps, &routes_of(i));
        objects.extend(objs.into_iter().map(|(ar, o)| (ns.clone(), ar, o)));
    }
    // A route of no Rollout, for the floor.
    objects.push((
        ns.clone(),
        http_routes(),
        app_objects(999_999, &steps, &["floor".to_string()]).1[2]
            .1
            .clone(),
    ));
    load(&cluster.client, objects).await;

    // When the emulator committed the first failed measurement of each Rollout's run.
    let failed_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let failed = failed_at.clone();
    follow(
        cluster.store(),
        "weir.io",
        "v1alpha1",
        "analysisruns",
        move |change| {
            let Change::Applied(obj) = change else {
                return;
            };
            let seen = Instant::now();
            let measurements = obj["status"]["metricResults"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|m| m["measurements"].as_array().into_iter().flatten());
            if measurements.into_iter().any(|m| m["phase"] == "Failed") {
                let ro = obj["metadata"]["labels"]["weir.io/rollout"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                failed.lock().expect("failed").entry(ro).or_insert(seen);
            }
        },
    );
    // When the emulator committed each route write (for the floor).
    let committed: Arc<Mutex<HashMap<(String, i64), Instant>>> = Arc::default();
    let commits = committed.clone();
    follow(
        cluster.store(),
        "gateway.networking.k8s.io",
        "v1",
        "httproutes",
        move |change| {
            let Change::Applied(obj) = change else {
                return;
            };
            let seen = Instant::now();
            let name = obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if let Some((_, canary)) = route_weights(obj) {
                commits
                    .lock()
                    .expect("commits")
                    .entry((name, canary))
                    .or_insert(seen);
            }
        },
    );
    // What a route watch over HTTP sees, as a data plane would.
    let (weights_tx, mut weights) = watch::channel(RouteWeights::new());
    let api: Api<DynamicObject> = Api::namespaced_with(cluster.client.clone(), &ns, &http_routes());
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default()).boxed();
        while let Ok(Some(event)) = events.try_next().await {
            let (watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) = event else {
                continue;
            };
            let seen = Instant::now();
            let name = obj.metadata.name.clone().unwrap_or_default();
            if let Some(w) = route_weights(&obj.data) {
                weights_tx.send_if_modified(|m| {
                    let had_canary = m.get(&name).is_some_and(|s| s.had_canary) || w.1 > 0;
                    match m.get(&name) {
                        Some(s) if s.weights == w => false,
                        _ => {
                            m.insert(
                                name,
                                SeenWeights {
                                    weights: w,
                                    since: seen,
                                    had_canary,
                                },
                            );
                            true
                        }
                    }
                });
            }
        }
    });

    let mut tracker = Tracker::new(cluster.store(), "weir.io", "v1alpha1", "rollouts");
    let weir = Weir::start(&cluster.dir).await;
    tracker
        .wait_count("every Rollout Healthy", apps.len(), healthy_on("app:1"))
        .await;
    let ro_api: Api<DynamicObject> = Api::namespaced_with(cluster.client.clone(), &ns, &rollouts());
    let mut out = Reactions::default();
    for &i in &apps {
        let name = format!("app-{i}");
        let routes = routes_of(i);
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:2"}]}}}});
        ro_api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("release");
        let back_at_stable = |m: &RouteWeights| {
            routes.iter().all(|r| {
                m.get(r)
                    .is_some_and(|s| s.had_canary && s.weights == (100, 0))
            })
        };
        let last = tokio::time::timeout(WAIT, weights.wait_for(back_at_stable))
            .await
            .expect("routes at 80/20, then back at 100/0")
            .expect("route watch")
            .iter()
            .filter(|(r, _)| routes.contains(r))
            .map(|(_, s)| s.since)
            .max()
            .expect("route times");
        let failed = followed(&failed_at, &name, "a failed measurement was committed").await;
        out.reaction.push(last.saturating_duration_since(failed));
    }
    weir.stop().await;

    // The floor: the same route watch, hearing of a route write the emulator committed.
    let route_api: Api<DynamicObject> =
        Api::namespaced_with(cluster.client.clone(), &ns, &http_routes());
    for s in 0..samples {
        let canary = 1 + (s as i64 % 98);
        let patch = json!({"spec": {"rules": [{"backendRefs": [
            {"name": "app-999999-stable", "port": 80, "weight": 100 - canary},
            {"name": "app-999999-canary", "port": 80, "weight": canary}]}]}});
        route_api
            .patch("floor", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("floor write");
        let seen = tokio::time::timeout(
            WAIT,
            weights.wait_for(|m| m.get("floor").is_some_and(|s| s.weights.1 == canary)),
        )
        .await
        .expect("floor write seen")
        .expect("route watch")["floor"]
            .since;
        let key = ("floor".to_string(), canary);
        let at = followed(&committed, &key, "the floor's route write was committed").await;
        out.floor.push(seen.saturating_duration_since(at));
        // The next write must be a change.
        committed
            .lock()
            .expect("commits")
            .remove(&("floor".to_string(), canary));
    }
    cluster.stop();
    out
}

/// When the in-process follower saw `key` committed. A client over HTTP can hear of a write
/// before the follower task has run, so this waits for it.
async fn followed<K: std::hash::Hash + Eq>(
    seen: &Mutex<HashMap<K, Instant>>,
    key: &K,
    what: &str,
) -> Instant {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(at) = seen.lock().expect("followed").get(key).copied() {
                break at;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}"))
}

// ---------------------------------------------------------------------------------------------
// Idle.

async fn idle(runs: usize, settle: Duration) -> Vec<f64> {
    let cluster = Cluster::start("idle").await;
    let mut out = Vec::new();
    for _ in 0..runs {
        let weir = Weir::start(&cluster.dir).await;
        tokio::time::timeout(WAIT, async {
            // The status line: "HTTP/1.0 200 OK" (the server answers in the request's version).
            while http_get(&weir.metrics, "/readyz").await.split(' ').nth(1) != Some("200") {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("weir ready");
        // Measured once weir has started every controller and listed everything (nothing).
        tokio::time::sleep(settle).await;
        out.push(weir.rss_kib().0 as f64 / 1024.0);
        weir.stop().await;
    }
    cluster.stop();
    out
}

// ---------------------------------------------------------------------------------------------
// Figures.

/// The nearest-rank percentile `p` (0–100) of sorted `xs`.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted.get(rank - 1).copied().unwrap_or_default()
}

fn median_d(xs: &[Duration]) -> Duration {
    let mut v = xs.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn median_u(xs: &[u64]) -> u64 {
    let mut v = xs.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn median_f(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}
