//! The demo's simulated app: one small HTTP server per version, each counting its requests by status
//! code and latency on a real `/metrics` (and as JSON on `/stats`, for when Prometheus is not
//! installed), and a load generator that splits traffic by the weights on the live HTTPRoute.
//! `weir demo-app` and `weir demo-load` run each on its own, so that the e2e suite keeps the app
//! out of the test process.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::State;
use axum::routing::get;
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};

/// Latency histogram bounds, in seconds.
const BUCKETS: [f64; 6] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25];
/// How far back `/stats` looks.
const STATS_WINDOW: Duration = Duration::from_secs(5);

/// How a version behaves.
#[derive(Clone, Copy, Debug)]
pub struct Behaviour {
    /// Fraction of requests answered with 500.
    pub error_rate: f64,
    /// Typical latency.
    pub latency: Duration,
}

#[derive(Default)]
struct Counters {
    by_code: BTreeMap<u16, u64>,
    buckets: [u64; BUCKETS.len()],
    sum_seconds: f64,
    count: u64,
    /// (when, was an error) for `/stats`.
    recent: Vec<(Instant, bool)>,
}

struct Version {
    name: String,
    behaviour: Behaviour,
    counters: Mutex<Counters>,
}

/// A running version of the app.
pub struct AppServer {
    /// `host:port` it serves on.
    pub addr: String,
    version: Arc<Version>,
}

impl AppServer {
    /// Starts version `name` on a free loopback port.
    pub async fn start(name: &str, behaviour: Behaviour) -> anyhow::Result<AppServer> {
        Self::start_on(name, behaviour, "127.0.0.1:0").await
    }

    /// Starts version `name` listening on `listen` (`host:port`, port 0 for a free one).
    pub async fn start_on(
        name: &str,
        behaviour: Behaviour,
        listen: &str,
    ) -> anyhow::Result<AppServer> {
        let version = Arc::new(Version {
            name: name.to_string(),
            behaviour,
            counters: Mutex::new(Counters::default()),
        });
        let router = axum::Router::new()
            .route("/", get(serve))
            .route("/metrics", get(metrics))
            .route("/stats", get(stats))
            .with_state(version.clone());
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding the demo app to {listen}"))?;
        let addr = listener.local_addr()?.to_string();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(AppServer { addr, version })
    }

    /// The version's name (`1.0`, …).
    pub fn name(&self) -> &str {
        &self.version.name
    }
}

async fn serve(State(v): State<Arc<Version>>) -> (axum::http::StatusCode, &'static str) {
    let error = fastrand::f64() < v.behaviour.error_rate;
    // Latency varies around the typical value; the histogram needs a spread to be believable.
    let latency = v.behaviour.latency.mul_f64(0.5 + fastrand::f64());
    tokio::time::sleep(latency).await;
    let code = if error { 500 } else { 200 };
    if let Ok(mut c) = v.counters.lock() {
        *c.by_code.entry(code).or_default() += 1;
        let secs = latency.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                c.buckets[i] += 1;
            }
        }
        c.sum_seconds += secs;
        c.count += 1;
        let now = Instant::now();
        c.recent
            .retain(|(t, _)| now.duration_since(*t) < STATS_WINDOW);
        c.recent.push((now, error));
    }
    if error {
        (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "oops\n")
    } else {
        (axum::http::StatusCode::OK, "hello\n")
    }
}

async fn metrics(State(v): State<Arc<Version>>) -> String {
    let Ok(c) = v.counters.lock() else {
        return String::new();
    };
    let name = &v.name;
    let mut out = String::from(
        "# HELP http_requests_total Requests served, by status code.\n# TYPE http_requests_total counter\n",
    );
    for code in [200u16, 500] {
        let n = c.by_code.get(&code).copied().unwrap_or(0);
        out.push_str(&format!(
            "http_requests_total{{version=\"{name}\",code=\"{code}\"}} {n}\n"
        ));
    }
    out.push_str("# HELP http_request_duration_seconds Request latency.\n# TYPE http_request_duration_seconds histogram\n");
    for (i, bound) in BUCKETS.iter().enumerate() {
        out.push_str(&format!(
            "http_request_duration_seconds_bucket{{version=\"{name}\",le=\"{bound}\"}} {}\n",
            c.buckets[i]
        ));
    }
    out.push_str(&format!(
        "http_request_duration_seconds_bucket{{version=\"{name}\",le=\"+Inf\"}} {}\nhttp_request_duration_seconds_sum{{version=\"{name}\"}} {}\nhttp_request_duration_seconds_count{{version=\"{name}\"}} {}\n",
        c.count, c.sum_seconds, c.count
    ));
    out
}

/// The error rate over the last few seconds, as JSON: what the web provider reads when there is
/// no Prometheus. `null` with no traffic, so that no data never looks healthy.
async fn stats(
    State(v): State<Arc<Version>>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let body = match v.counters.lock() {
        Ok(mut c) => {
            let now = Instant::now();
            c.recent
                .retain(|(t, _)| now.duration_since(*t) < STATS_WINDOW);
            let total = c.recent.len();
            let errors = c.recent.iter().filter(|(_, e)| *e).count();
            let rate = (total > 0).then(|| errors as f64 / total as f64);
            serde_json::json!({"version": v.name, "requests": total, "errors": errors, "errorRate": rate})
                .to_string()
        }
        Err(_) => "{}".into(),
    };
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
}

/// Where traffic goes now: the stable and canary versions and the canary's percent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Split {
    /// Version the stable Service selects.
    pub stable: Option<String>,
    /// Version the canary Service selects.
    pub canary: Option<String>,
    /// Percent of requests to the canary.
    pub canary_weight: u32,
}

fn image_version(template: &serde_json::Value) -> Option<String> {
    template
        .pointer("/spec/containers/0/image")
        .and_then(|i| i.as_str())
        .and_then(|i| i.rsplit_once(':'))
        .map(|(_, tag)| tag.to_string())
}

/// Reads the live split: the route's canary weight, and the versions the stable and canary
/// ReplicaSets run (the Services select them by pod-template hash).
pub async fn observe_split(client: &Client, ns: &str) -> anyhow::Result<Split> {
    let route_ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    );
    let routes: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &route_ar);
    let mut split = Split::default();
    if let Some(route) = routes.get_opt("web").await? {
        let refs = route.data.pointer("/spec/rules/0/backendRefs").cloned();
        for r in refs.and_then(|r| r.as_array().cloned()).unwrap_or_default() {
            if r["name"] == "web-canary" {
                split.canary_weight = r["weight"].as_u64().unwrap_or(0).min(100) as u32;
            }
        }
    }
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client.clone(), ns);
    let sets: Api<k8s_openapi::api::apps::v1::ReplicaSet> = Api::namespaced(client.clone(), ns);
    let rs_list = sets.list(&Default::default()).await?.items;
    for (svc, slot) in [
        ("web-stable", &mut split.stable),
        ("web-canary", &mut split.canary),
    ] {
        let hash = services
            .get_opt(svc)
            .await?
            .and_then(|s| s.spec?.selector?.get(crate_hash_label()).cloned());
        *slot = hash.and_then(|h| {
            rs_list
                .iter()
                .find(|rs| {
                    rs.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(crate_hash_label()))
                        == Some(&h)
                })
                .and_then(|rs| serde_json::to_value(rs.spec.as_ref()?.template.as_ref()?).ok())
                .and_then(|t| image_version(&t))
        });
    }
    Ok(split)
}

fn crate_hash_label() -> &'static str {
    weir::rollout::POD_TEMPLATE_HASH_LABEL
}

/// Sends about `per_second` requests a second, split by the live route, until dropped.
pub fn load_generator(
    client: Client,
    ns: String,
    apps: Vec<(String, String)>,
    per_second: u32,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let addr_of = |version: &str| {
            apps.iter()
                .find(|(v, _)| v == version)
                .map(|(_, a)| a.clone())
        };
        let mut split = Split::default();
        let mut refreshed = Instant::now() - Duration::from_secs(1);
        let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second.max(1));
        loop {
            tick.tick().await;
            if refreshed.elapsed() >= Duration::from_millis(250) {
                if let Ok(s) = observe_split(&client, &ns).await {
                    split = s;
                }
                refreshed = Instant::now();
            }
            let to_canary = fastrand::u32(0..100) < split.canary_weight;
            let version = if to_canary {
                &split.canary
            } else {
                &split.stable
            };
            let Some(addr) = version.as_deref().and_then(addr_of) else {
                continue;
            };
            let http = http.clone();
            tokio::spawn(async move {
                let _ = http.get(format!("http://{addr}/")).send().await;
            });
        }
    })
}

/// `weir demo-app`: one version of the simulated app as its own process, for the e2e suite.
#[derive(clap::Args)]
pub struct AppArgs {
    /// The version it reports in its metrics (the image tag the Rollout runs for it).
    #[arg(long)]
    pub version: String,
    /// Fraction of requests answered with 500.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Typical latency in milliseconds.
    #[arg(long, default_value_t = 5)]
    pub latency_ms: u64,
    /// Listen address; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
}

/// Serves one version until the process is stopped. The first stdout line is `listening on
/// ADDR`, so that whoever started it with port 0 learns where it is.
pub async fn serve_app(args: AppArgs) -> anyhow::Result<()> {
    let behaviour = Behaviour {
        error_rate: args.error_rate,
        latency: Duration::from_millis(args.latency_ms),
    };
    let app = AppServer::start_on(&args.version, behaviour, &args.listen).await?;
    println!("listening on {}", app.addr);
    tokio::signal::ctrl_c().await?;
    Ok(())
}

/// `weir demo-load`: the load generator as its own process, for the e2e suite.
#[derive(clap::Args)]
pub struct LoadArgs {
    /// Kubeconfig of the cluster whose HTTPRoute `web` decides the split.
    #[arg(long)]
    pub kubeconfig: std::path::PathBuf,
    /// Namespace of the route and the `web-stable` / `web-canary` Services.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// `VERSION=HOST:PORT` of each app version, repeated.
    #[arg(long = "app", value_parser = parse_app, required = true)]
    pub apps: Vec<(String, String)>,
    /// Requests per second.
    #[arg(long, default_value_t = 40)]
    pub rate: u32,
}

fn parse_app(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(v, a)| (v.to_string(), a.to_string()))
        .ok_or_else(|| format!("expected VERSION=HOST:PORT, got {s:?}"))
}

/// Sends load split by the live route until the process is stopped.
pub async fn run_load(args: LoadArgs) -> anyhow::Result<()> {
    let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("reading kubeconfig {}", args.kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let client = Client::try_from(config)?;
    let load = load_generator(client, args.namespace, args.apps, args.rate);
    tokio::select! {
        _ = load => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
