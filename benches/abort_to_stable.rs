//! How fast an abort takes traffic off the canary.
//!
//! `cargo bench --bench abort_to_stable` runs the Rollout controller in-process
//! (`weir::rollout::controller::run`) against the in-process Kubernetes API emulator, with one canary
//! Rollout that weights four routes: three Gateway API HTTPRoutes and one Istio VirtualService. The
//! Rollout is paused mid-canary (20% on every route); the bench then sets `status.abort=true`, as
//! `kubectl weir abort` does, and times, from just before sending that patch:
//! - until a watch on the routes has seen the first route at 100/0 stable/canary;
//! - until it has seen every route at 100/0 (the figure that matters: no request meets the canary);
//! - until a watch on the Rollout has seen it Degraded (the controller wrote its status).
//!
//! Then it clears `status.abort` (a retry, as `kubectl weir retry` does), waits until the Rollout is
//! paused at 20% again, and repeats. The canary pods are kept across aborts
//! (`abortScaleDownDelaySeconds` is long), so a retry reaches the pause at once.
//!
//! Without `--bench` (as `cargo test --all-targets` runs it) it does a two-run smoke test and exits.

mod crds;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crds::TestCrds;
use futures::StreamExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::watcher;
use serde_json::{Value, json};
use tokio::sync::watch;
use weir::emulator::EmulatorConfig;

const NS: &str = "default";
const HTTP_ROUTES: [&str; 3] = ["web-a", "web-b", "web-c"];
const VIRTUAL_SERVICE: &str = "web-vs";
const STABLE: &str = "web-stable";
const CANARY: &str = "web-canary";
/// The canary weight of the paused step.
const PAUSED_WEIGHT: i64 = 20;
/// The longest any one wait may take before the bench gives up.
const WAIT: Duration = Duration::from_secs(60);

/// (stable, canary) weight of each route, by route name, as last seen by the route watches.
type RouteWeights = BTreeMap<String, (i64, i64)>;

/// The timings of one abort.
struct Sample {
    first_route: Duration,
    all_routes: Duration,
    degraded: Duration,
}

/// Picks one timing out of a sample, for a row of the report.
type SampleField = fn(&Sample) -> Duration;

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let runs = if bench { 30 } else { 2 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    let samples = runtime.block_on(run(runs));
    println!("{}", report(&samples));
    let in_order: Vec<String> = samples.iter().map(|s| ms(s.all_routes)).collect();
    eprintln!("all routes at 100/0, in run order: {}", in_order.join(", "));
    eprintln!("bench finished in {:.1?}", started.elapsed());
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn http_routes() -> ApiResource {
    resource("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes")
}

fn virtual_services() -> ApiResource {
    resource(
        "networking.istio.io",
        "v1",
        "VirtualService",
        "virtualservices",
    )
}

fn rollouts() -> ApiResource {
    resource("weir.io", "v1alpha1", "Rollout", "rollouts")
}

async fn apply(api: &Api<DynamicObject>, obj: Value) {
    let name = obj["metadata"]["name"].as_str().expect("name").to_string();
    api.patch(
        &name,
        &PatchParams::apply("bench").force(),
        &Patch::Apply(&obj),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {name}: {e}"));
}

fn rollout(image: &str) -> Value {
    let routes: Vec<Value> = HTTP_ROUTES.iter().map(|r| json!({"name": r})).collect();
    json!({
        "apiVersion": "weir.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": image}]}},
            "strategy": {"canary": {"stableService": STABLE, "canaryService": CANARY,
                "abortScaleDownDelaySeconds": 3600,
                "trafficRouting": {
                    "gatewayAPI": {"httpRoutes": routes},
                    "istio": {"virtualServices": [{"name": VIRTUAL_SERVICE, "routes": ["primary"]}]}},
                "steps": [{"setWeight": PAUSED_WEIGHT}, {"pause": {}}]}}}
    })
}

async fn create_routes(client: &kube::Client) {
    let svc: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        NS,
        &resource("", "v1", "Service", "services"),
    );
    for name in [STABLE, CANARY] {
        apply(
            &svc,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
        )
        .await;
    }
    let routes: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &http_routes());
    for name in HTTP_ROUTES {
        apply(&routes, json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": name},
            "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [
                {"name": STABLE, "port": 80, "weight": 100}, {"name": CANARY, "port": 80, "weight": 0}]}]}}))
        .await;
    }
    let vs: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &virtual_services());
    apply(&vs, json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": VIRTUAL_SERVICE},
        "spec": {"hosts": ["web"], "http": [{"name": "primary", "route": [
            {"destination": {"host": STABLE}, "weight": 100}, {"destination": {"host": CANARY}, "weight": 0}]}]}}))
    .await;
}

/// (stable, canary) of an HTTPRoute: the weights of the rule that names the stable Service.
fn http_route_weights(route: &DynamicObject) -> Option<(i64, i64)> {
    let rule = route.data["spec"]["rules"].as_array()?.iter().find(|r| {
        r["backendRefs"]
            .as_array()
            .is_some_and(|b| b.iter().any(|b| b["name"] == STABLE))
    })?;
    let weight = |service: &str| {
        rule["backendRefs"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["name"] == service))
            // A backendRef without a weight gets 1; a missing canary backend gets nothing.
            .map_or(0, |b| b["weight"].as_i64().unwrap_or(1))
    };
    Some((weight(STABLE), weight(CANARY)))
}

/// (stable, canary) of the VirtualService's `primary` route.
fn virtual_service_weights(vs: &DynamicObject) -> Option<(i64, i64)> {
    let http = vs.data["spec"]["http"]
        .as_array()?
        .iter()
        .find(|h| h["name"] == "primary")?;
    let weight = |host: &str| {
        http["route"]
            .as_array()
            .and_then(|r| r.iter().find(|d| d["destination"]["host"] == host))
            .map_or(0, |d| d["weight"].as_i64().unwrap_or(0))
    };
    Some((weight(STABLE), weight(CANARY)))
}

/// Keeps `weights` up to date from a watch on one kind of route.
fn watch_routes(
    client: &kube::Client,
    ar: ApiResource,
    read: fn(&DynamicObject) -> Option<(i64, i64)>,
    weights: watch::Sender<RouteWeights>,
) {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &ar);
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default()).boxed();
        while let Some(event) = events.next().await {
            let (watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) =
                event.expect("route watch")
            else {
                continue;
            };
            let name = obj.metadata.name.clone().unwrap_or_default();
            if let Some(w) = read(&obj) {
                weights.send_if_modified(|m| m.insert(name, w) != Some(w));
            }
        }
    });
}

/// Keeps `status` at the Rollout's latest status from a watch.
fn watch_rollout(client: &kube::Client, status: watch::Sender<Value>) {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &rollouts());
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default()).boxed();
        while let Some(event) = events.next().await {
            if let watcher::Event::Apply(obj) | watcher::Event::InitApply(obj) =
                event.expect("rollout watch")
            {
                status.send_replace(obj.data["status"].clone());
            }
        }
    });
}

fn all_at(weights: &RouteWeights, want: (i64, i64)) -> bool {
    weights.len() == HTTP_ROUTES.len() + 1 && weights.values().all(|w| *w == want)
}

async fn wait_until<T>(what: &str, rx: &mut watch::Receiver<T>, f: impl FnMut(&T) -> bool) {
    tokio::time::timeout(WAIT, rx.wait_for(f))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap_or_else(|_| panic!("watch ended while waiting for {what}"));
}

async fn set_abort(api: &Api<DynamicObject>, abort: bool) {
    api.patch_status(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"abort": abort}})),
    )
    .await
    .unwrap_or_else(|e| panic!("set status.abort={abort}: {e}"));
}

fn paused_mid_canary(s: &Value) -> bool {
    s["phase"] == "Paused" && s["currentStepIndex"] == 1
}

async fn run(runs: usize) -> Vec<Sample> {
    let emulator = weir::emulator::start(EmulatorConfig {
        // Pods do not matter here; quick ones keep each retry short.
        workload_delay: Duration::from_millis(20),
        ..Default::default()
    })
    .await
    .expect("start emulator");
    let client = kube::Client::try_from(emulator.kube_config()).expect("client");
    crds::install(&client, TestCrds::Included).await;
    create_routes(&client).await;

    let (weights_tx, mut weights) = watch::channel(RouteWeights::new());
    watch_routes(
        &client,
        http_routes(),
        http_route_weights,
        weights_tx.clone(),
    );
    watch_routes(
        &client,
        virtual_services(),
        virtual_service_weights,
        weights_tx,
    );
    let (status_tx, mut status) = watch::channel(Value::Null);
    watch_rollout(&client, status_tx);
    let controller = tokio::spawn(weir::rollout::controller::run(client.clone()));

    let ro: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &rollouts());
    apply(&ro, rollout("web:1")).await;
    wait_until("the first revision Healthy", &mut status, |s| {
        s["phase"] == "Healthy"
    })
    .await;
    apply(&ro, rollout("web:2")).await;

    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        wait_until(
            "the Rollout paused mid-canary",
            &mut status,
            paused_mid_canary,
        )
        .await;
        wait_until("every route at 80/20", &mut weights, |w| {
            all_at(w, (100 - PAUSED_WEIGHT, PAUSED_WEIGHT))
        })
        .await;
        weights.mark_unchanged();
        status.mark_unchanged();

        let started = Instant::now();
        set_abort(&ro, true).await;
        let routes = async {
            let mut first = None;
            loop {
                {
                    let w = weights.borrow_and_update();
                    if first.is_none() && w.values().any(|w| *w == (100, 0)) {
                        first = Some(started.elapsed());
                    }
                    if all_at(&w, (100, 0)) {
                        break;
                    }
                }
                weights.changed().await.expect("route watch ended");
            }
            (first.unwrap_or_default(), started.elapsed())
        };
        let degraded = async {
            wait_until("the Rollout Degraded", &mut status, |s| {
                s["phase"] == "Degraded" && s["abortedAt"].is_string()
            })
            .await;
            started.elapsed()
        };
        let ((first_route, all_routes), degraded) =
            tokio::time::timeout(WAIT, futures::future::join(routes, degraded))
                .await
                .expect("timed out waiting for the abort to reach every route");
        samples.push(Sample {
            first_route,
            all_routes,
            degraded,
        });

        // Retry: the release starts again from the first step and pauses at 20% again.
        set_abort(&ro, false).await;
    }
    controller.abort();
    emulator.shutdown();
    samples
}

/// The nearest-rank percentile `p` (0–100) of sorted `xs`.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted.get(rank - 1).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn report(samples: &[Sample]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| From setting `status.abort=true` until ({} aborts) | p50 | p99 | min | max |",
        samples.len()
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
    let rows: [(&str, SampleField); 3] = [
        ("a route watch sees the first route at 100/0", |s| {
            s.first_route
        }),
        ("a route watch sees **all 4 routes** at 100/0", |s| {
            s.all_routes
        }),
        ("a Rollout watch sees phase Degraded", |s| s.degraded),
    ];
    for (what, pick) in rows {
        let mut xs: Vec<Duration> = samples.iter().map(pick).collect();
        xs.sort();
        let _ = writeln!(
            out,
            "| {what} | {} | {} | {} | {} |",
            ms(percentile(&xs, 50)),
            ms(percentile(&xs, 99)),
            ms(xs.first().copied().unwrap_or_default()),
            ms(xs.last().copied().unwrap_or_default()),
        );
    }
    out
}
