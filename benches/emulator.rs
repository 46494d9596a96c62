//! Benchmark of the Kubernetes API emulator at the scale of issue A: 60,000 ConfigMaps and 1,000 watches.
//!
//! `cargo bench --bench emulator` measures, in the release build and over HTTP on loopback:
//! - list latency: a full list of every object, one page of `limit=500` while walking all pages, and a
//!   label-selected list; timed from sending the request to having the whole body, without parsing it;
//! - watch fan-out: with 1,000 cluster-wide watches open, how many events per second reach the watchers,
//!   and the delay from a write's acknowledgement (its response arriving at the writer) to each delivery.
//!
//! Every figure is the median over several runs. The client runs in the same process as the emulator,
//! so both share the machine's cores, as they do in the integration tests.
//!
//! Without `--bench` (as `cargo test --all-targets` runs it) it does a small smoke run and exits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{AsyncBufReadExt, StreamExt};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::json;
use weir::emulator::EmulatorConfig;

/// How big a run is.
struct Scale {
    objects: usize,
    namespaces: usize,
    watchers: usize,
    /// Repetitions of each measurement; figures are medians over them.
    runs: usize,
    /// Requests per run for the full and label-selected list.
    list_samples: usize,
    /// Writes per saturated fan-out run.
    fanout_writes: usize,
    /// Concurrent writers in the saturated fan-out runs.
    writers: usize,
    /// Length of each paced fan-out run.
    paced_run: Duration,
}

const FULL: Scale = Scale {
    objects: 60_000,
    namespaces: 20,
    watchers: 1_000,
    runs: 5,
    list_samples: 10,
    fanout_writes: 500,
    writers: 8,
    paced_run: Duration::from_secs(3),
};

const SMOKE: Scale = Scale {
    objects: 600,
    namespaces: 3,
    watchers: 10,
    runs: 1,
    list_samples: 3,
    fanout_writes: 40,
    writers: 2,
    paced_run: Duration::from_millis(300),
};

const LOAD_CONCURRENCY: usize = 32;
const TIERS: [&str; 4] = ["a", "b", "c", "d"];
const PAGE: usize = 500;

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let scale = if bench { FULL } else { SMOKE };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    let report = runtime.block_on(run(&scale));
    println!("{report}");
    eprintln!("bench finished in {:.1?}", started.elapsed());
}

struct Http {
    client: kube::Client,
}

impl Http {
    /// Sends a request and returns the status, the whole body, and how long until the body was complete.
    async fn call(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, bytes::Bytes, Duration) {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type)
            .body(kube::client::Body::from(body))
            .expect("request");
        let started = Instant::now();
        let resp = self.client.send(req).await.expect("send");
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        (status, bytes, started.elapsed())
    }

    async fn get(&self, path: &str) -> (bytes::Bytes, Duration) {
        let (status, body, took) = self.call("GET", path, "application/json", Vec::new()).await;
        assert_eq!(
            status,
            200,
            "GET {path}: {}",
            String::from_utf8_lossy(&body)
        );
        (body, took)
    }
}

#[derive(Deserialize)]
struct ListMeta {
    #[serde(rename = "resourceVersion")]
    resource_version: String,
    #[serde(rename = "continue")]
    continue_token: Option<String>,
    #[serde(rename = "remainingItemCount")]
    remaining_item_count: Option<u64>,
}

/// A list response with its items counted but not decoded.
#[derive(Deserialize)]
struct ListHead {
    metadata: ListMeta,
    items: Vec<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct ObjectMeta {
    #[serde(rename = "resourceVersion")]
    resource_version: String,
}

#[derive(Deserialize)]
struct ObjectHead {
    metadata: ObjectMeta,
}

fn ns_name(n: usize) -> String {
    format!("bench-{n:02}")
}

fn object_key(i: usize, namespaces: usize) -> (String, String) {
    (ns_name(i % namespaces), format!("cm-{i:05}"))
}

/// Nearest-rank percentile of an unsorted sample.
fn percentile(sample: &mut [Duration], q: f64) -> Duration {
    if sample.is_empty() {
        return Duration::ZERO;
    }
    sample.sort_unstable();
    let rank = ((q * sample.len() as f64).ceil() as usize).clamp(1, sample.len());
    sample[rank - 1]
}

fn median_duration(mut runs: Vec<Duration>) -> Duration {
    percentile(&mut runs, 0.5)
}

fn median_f64(mut runs: Vec<f64>) -> f64 {
    runs.sort_by(f64::total_cmp);
    runs.get(runs.len() / 2).copied().unwrap_or(0.0)
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

/// The one-minute load average, to show whether something else was running.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(String::from))
        .unwrap_or_else(|| "?".into())
}

fn rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

async fn run(scale: &Scale) -> String {
    let emulator = weir::emulator::start(EmulatorConfig::default())
        .await
        .expect("start emulator");
    let http = Arc::new(Http {
        client: kube::Client::try_from(emulator.kube_config()).expect("kube client"),
    });
    let mut out = String::new();
    let load_before = load_average();

    // Load over HTTP with bounded concurrency.
    for n in 0..scale.namespaces {
        let body =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns_name(n)}});
        let (status, _, _) = http
            .call(
                "POST",
                "/api/v1/namespaces",
                "application/json",
                body.to_string().into_bytes(),
            )
            .await;
        assert_eq!(status, 201);
    }
    let started = Instant::now();
    let namespaces = scale.namespaces;
    futures::stream::iter(0..scale.objects)
        .map(|i| {
            let http = http.clone();
            async move {
                let (ns, name) = object_key(i, namespaces);
                let body = json!({
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": name, "labels": {"shard": ((i / namespaces) % 10).to_string(), "tier": TIERS[(i / 200) % 4]}},
                    "data": {"k": format!("v{i}"), "payload": "p".repeat(64)},
                });
                let (status, body, _) = http
                    .call(
                        "POST",
                        &format!("/api/v1/namespaces/{ns}/configmaps"),
                        "application/json",
                        body.to_string().into_bytes(),
                    )
                    .await;
                assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
            }
        })
        .buffer_unordered(LOAD_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    let load_time = started.elapsed();
    let loaded_rss = rss_mib();
    eprintln!("loaded {} objects in {load_time:.1?}", scale.objects);

    // List latency.
    let (full_p50, full_p99, full_bytes) =
        list_latency(&http, scale, "/api/v1/configmaps", scale.objects).await;
    let selected_expected = scale.objects / 10;
    let (sel_p50, sel_p99, sel_bytes) = list_latency(
        &http,
        scale,
        "/api/v1/configmaps?labelSelector=shard%3D3",
        selected_expected,
    )
    .await;
    let walk = page_walk(&http, scale, "", scale.objects).await;
    let selected_walk =
        page_walk(&http, scale, "&labelSelector=shard%3D3", selected_expected).await;
    eprintln!("lists measured");

    out.push_str(&format!(
        "List latency, {} ConfigMaps in {} namespaces; from sending the request to having the whole body; \
         median of {} runs ({} requests per run for the whole lists, one walk over all pages per run for the pages):\n\n",
        scale.objects, scale.namespaces, scale.runs, scale.list_samples
    ));
    out.push_str("| List | Items | Body | p50 | p99 |\n| --- | ---: | ---: | ---: | ---: |\n");
    out.push_str(&format!(
        "| everything | {} | {:.1} MiB | {} | {} |\n",
        scale.objects,
        full_bytes as f64 / 1_048_576.0,
        ms(full_p50),
        ms(full_p99)
    ));
    out.push_str(&format!(
        "| `labelSelector=shard=3` | {} | {:.1} MiB | {} | {} |\n",
        selected_expected,
        sel_bytes as f64 / 1_048_576.0,
        ms(sel_p50),
        ms(sel_p99)
    ));
    for (name, w, items) in [
        ("", &walk, scale.objects),
        (
            ", `labelSelector=shard=3`",
            &selected_walk,
            selected_expected,
        ),
    ] {
        out.push_str(&format!(
            "| one page, `limit={PAGE}`{name} | {PAGE} | | {} | {} |\n",
            ms(w.page_p50),
            ms(w.page_p99)
        ));
        out.push_str(&format!(
            "| all {} pages, `limit={PAGE}`{name}, one after the other | {items} | | {} (whole walk) | |\n",
            w.pages,
            ms(w.walk)
        ));
    }
    out.push('\n');

    // Watch fan-out.
    let fanout = FanOut::open(&http, scale).await;
    eprintln!("{} watches open", scale.watchers);
    let mut saturated = Vec::new();
    for r in 0..scale.runs {
        saturated.push(fanout.saturated_run(&http, scale, r).await);
    }
    let sat = RunSummary::median(&saturated);
    eprintln!("saturated runs done: {:.0} writes/s", sat.writes_per_s);
    // Paced at half the saturated write rate, so that the delay is not queueing behind a backlog.
    let rate = (sat.writes_per_s / 2.0).max(1.0);
    let mut paced = Vec::new();
    for r in 0..scale.runs {
        paced.push(fanout.paced_run(&http, scale, r, rate).await);
    }
    let pac = RunSummary::median(&paced);
    let mismatched: u64 = saturated.iter().chain(&paced).map(|s| s.mismatched).sum();
    let expected: u64 = saturated.iter().chain(&paced).map(|s| s.expected).sum();

    out.push_str(&format!(
        "Watch fan-out, {} cluster-wide ConfigMap watches open; each write is a merge patch of one object, \
         so every write is delivered to every watcher; delay is from the write's response reaching the writer \
         to the event reaching a watcher (events that arrived first count as 0); median of {} runs:\n\n",
        scale.watchers, scale.runs
    ));
    out.push_str("| Writers | Writes/s | Events delivered/s | Delay p50 | Delay p99 |\n| --- | ---: | ---: | ---: | ---: |\n");
    out.push_str(&format!(
        "| {} concurrent, as fast as they can ({} writes per run) | {:.0} | {:.0} | {} | {} |\n",
        scale.writers,
        scale.fanout_writes,
        sat.writes_per_s,
        sat.events_per_s,
        ms(sat.delay_p50),
        ms(sat.delay_p99)
    ));
    out.push_str(&format!(
        "| paced at {rate:.0} writes/s for {:.0?} | {:.0} | {:.0} | {} | {} |\n\n",
        scale.paced_run,
        pac.writes_per_s,
        pac.events_per_s,
        ms(pac.delay_p50),
        ms(pac.delay_p99)
    ));
    out.push_str(&format!(
        "Deliveries missing or extra: {mismatched} of {expected} expected. Loading the {} objects over HTTP ({LOAD_CONCURRENCY} requests in flight) took {:.1} s ({:.0} creates/s); resident memory of the process (emulator and client) afterwards: {} MiB, and {} MiB at the end.\n",
        scale.objects,
        load_time.as_secs_f64(),
        scale.objects as f64 / load_time.as_secs_f64(),
        loaded_rss.map_or_else(|| "?".to_string(), |m| m.to_string()),
        rss_mib().map_or_else(|| "?".to_string(), |m| m.to_string()),
    ));
    out.push_str(&format!(
        "One-minute load average on {} CPUs: {load_before} at the start, {} at the end.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    ));
    assert_eq!(mismatched, 0, "the emulator lost or repeated watch events");
    emulator.shutdown();
    out
}

/// p50, p99 and body size of a list, over `runs` × `list_samples` requests.
async fn list_latency(
    http: &Http,
    scale: &Scale,
    path: &str,
    expected: usize,
) -> (Duration, Duration, usize) {
    let (body, _) = http.get(path).await;
    let head: ListHead = serde_json::from_slice(&body).expect("list");
    assert_eq!(head.items.len(), expected, "{path}");
    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    for _ in 0..scale.runs {
        let mut sample = Vec::new();
        for _ in 0..scale.list_samples {
            sample.push(http.get(path).await.1);
        }
        p50.push(percentile(&mut sample, 0.5));
        p99.push(percentile(&mut sample, 0.99));
    }
    (median_duration(p50), median_duration(p99), body.len())
}

/// A walk over all pages of `query` (`limit=500` plus `selector`): page latency p50/p99 and the time
/// of the whole walk, each the median over `runs` walks.
struct Walk {
    page_p50: Duration,
    page_p99: Duration,
    walk: Duration,
    pages: usize,
}

async fn page_walk(http: &Http, scale: &Scale, selector: &str, expected: usize) -> Walk {
    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    let mut walks = Vec::new();
    let mut pages = 0;
    for _ in 0..scale.runs {
        let mut sample = Vec::new();
        let mut items = 0;
        let mut token: Option<String> = None;
        let started = Instant::now();
        loop {
            let mut path = format!("/api/v1/configmaps?limit={PAGE}{selector}");
            if let Some(t) = &token {
                path.push_str("&continue=");
                path.push_str(t);
            }
            let (body, took) = http.get(&path).await;
            sample.push(took);
            let head: ListHead = serde_json::from_slice(&body).expect("page");
            if token.is_none() {
                // Like the apiserver: a count of what is left only when no selector narrows the list.
                let want =
                    (selector.is_empty() && expected > PAGE).then(|| (expected - PAGE) as u64);
                assert_eq!(head.metadata.remaining_item_count, want, "{path}");
            }
            items += head.items.len();
            token = head.metadata.continue_token.filter(|t| !t.is_empty());
            if token.is_none() {
                break;
            }
        }
        walks.push(started.elapsed());
        assert_eq!(items, expected, "a walk over all pages sees every object");
        pages = sample.len();
        p50.push(percentile(&mut sample, 0.5));
        p99.push(percentile(&mut sample, 0.99));
    }
    Walk {
        page_p50: median_duration(p50),
        page_p99: median_duration(p99),
        walk: median_duration(walks),
        pages,
    }
}

/// What one watcher has received: (resourceVersion, arrival) per event.
struct Sink {
    deliveries: Mutex<Vec<(u64, Instant)>>,
    last_rv: AtomicU64,
}

struct FanOut {
    sinks: Vec<Arc<Sink>>,
}

/// One fan-out run.
struct RunSummary {
    writes_per_s: f64,
    events_per_s: f64,
    delay_p50: Duration,
    delay_p99: Duration,
    /// Deliveries the run should have produced: writes × watchers.
    expected: u64,
    /// How far the deliveries that carried a write of this run are from `expected`.
    mismatched: u64,
}

impl RunSummary {
    fn median(runs: &[RunSummary]) -> RunSummary {
        RunSummary {
            writes_per_s: median_f64(runs.iter().map(|r| r.writes_per_s).collect()),
            events_per_s: median_f64(runs.iter().map(|r| r.events_per_s).collect()),
            delay_p50: median_duration(runs.iter().map(|r| r.delay_p50).collect()),
            delay_p99: median_duration(runs.iter().map(|r| r.delay_p99).collect()),
            expected: runs.iter().map(|r| r.expected).sum(),
            mismatched: runs.iter().map(|r| r.mismatched).sum(),
        }
    }
}

/// A write as the writer saw it: the resourceVersion it produced, when it was sent and acknowledged.
struct Write {
    rv: u64,
    sent: Instant,
    acked: Instant,
}

/// The resourceVersion of a watch line, found without decoding the object.
fn rv_of_line(line: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(line).ok()?;
    let key = "\"resourceVersion\":\"";
    let at = text.rfind(key)? + key.len();
    let rest = text.get(at..)?;
    rest.get(..rest.find('"')?)?.parse().ok()
}

impl FanOut {
    async fn open(http: &Arc<Http>, scale: &Scale) -> FanOut {
        let (body, _) = http.get("/api/v1/configmaps?limit=1").await;
        let head: ListHead = serde_json::from_slice(&body).expect("list");
        let rv = head.metadata.resource_version;
        let path = format!("/api/v1/configmaps?watch=true&resourceVersion={rv}");
        let streams: Vec<_> = futures::stream::iter(0..scale.watchers)
            .map(|_| {
                let req = http::Request::builder()
                    .uri(path.clone())
                    .body(Vec::new())
                    .expect("request");
                http.client.request_stream(req)
            })
            .buffer_unordered(64)
            .collect()
            .await;
        let mut sinks = Vec::new();
        for stream in streams {
            let mut stream = stream.expect("open watch");
            let sink = Arc::new(Sink {
                deliveries: Mutex::new(Vec::new()),
                last_rv: AtomicU64::new(0),
            });
            sinks.push(sink.clone());
            tokio::spawn(async move {
                let mut line = Vec::with_capacity(4096);
                loop {
                    line.clear();
                    match stream.read_until(b'\n', &mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let now = Instant::now();
                    if let Some(rv) = rv_of_line(&line) {
                        if let Ok(mut d) = sink.deliveries.lock() {
                            d.push((rv, now));
                        }
                        sink.last_rv.store(rv, Ordering::Release);
                    }
                }
            });
        }
        FanOut { sinks }
    }

    /// Waits until every watcher has seen `rv`, then takes what each received since the last call.
    async fn collect(&self, rv: u64) -> Vec<(u64, Instant)> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self
            .sinks
            .iter()
            .any(|s| s.last_rv.load(Ordering::Acquire) < rv)
        {
            assert!(
                Instant::now() < deadline,
                "watchers did not catch up within 120 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut all = Vec::new();
        for s in &self.sinks {
            if let Ok(mut d) = s.deliveries.lock() {
                all.append(&mut d);
            }
        }
        all
    }

    fn summarize(&self, writes: &[Write], deliveries: &[(u64, Instant)]) -> RunSummary {
        let by_rv: HashMap<u64, &Write> = writes.iter().map(|w| (w.rv, w)).collect();
        let mut delays = Vec::with_capacity(deliveries.len());
        let mut last = None::<Instant>;
        for (rv, at) in deliveries {
            if let Some(w) = by_rv.get(rv) {
                delays.push(at.saturating_duration_since(w.acked));
                last = Some(last.map_or(*at, |l| l.max(*at)));
            }
        }
        let first_sent = writes.iter().map(|w| w.sent).min();
        let last_acked = writes.iter().map(|w| w.acked).max();
        let (Some(first_sent), Some(last_acked), Some(last)) = (first_sent, last_acked, last)
        else {
            panic!("a fan-out run without writes or deliveries");
        };
        let expected = (writes.len() * self.sinks.len()) as u64;
        let delivered = delays.len() as u64;
        let write_span = last_acked.duration_since(first_sent).as_secs_f64();
        let delivery_span = last.duration_since(first_sent).as_secs_f64();
        RunSummary {
            writes_per_s: writes.len() as f64 / write_span,
            events_per_s: delivered as f64 / delivery_span,
            delay_p50: percentile(&mut delays, 0.5),
            delay_p99: percentile(&mut delays, 0.99),
            expected,
            mismatched: expected.abs_diff(delivered),
        }
    }

    /// `writers` tasks each patch their own objects back to back; throughput is every delivery over the
    /// time from the first write sent to the last delivery.
    async fn saturated_run(&self, http: &Arc<Http>, scale: &Scale, run: usize) -> RunSummary {
        let per_writer = scale.fanout_writes / scale.writers;
        let tasks: Vec<_> = (0..scale.writers)
            .map(|w| {
                let http = http.clone();
                let namespaces = scale.namespaces;
                tokio::spawn(async move {
                    let mut writes = Vec::new();
                    for j in 0..per_writer {
                        let i = w * per_writer + j;
                        writes.push(patch(&http, i, namespaces, &format!("s{run}-{j}")).await);
                    }
                    writes
                })
            })
            .collect();
        let mut writes = Vec::new();
        for t in tasks {
            writes.extend(t.await.expect("writer"));
        }
        let max_rv = writes.iter().map(|w| w.rv).max().unwrap_or(0);
        let deliveries = self.collect(max_rv).await;
        self.summarize(&writes, &deliveries)
    }

    /// Writes at a fixed rate, each on its own task so that a slow acknowledgement does not hold back
    /// the schedule.
    async fn paced_run(
        &self,
        http: &Arc<Http>,
        scale: &Scale,
        run: usize,
        rate: f64,
    ) -> RunSummary {
        let count = ((rate * scale.paced_run.as_secs_f64()) as usize).max(1);
        let period = Duration::from_secs_f64(1.0 / rate);
        let start = tokio::time::Instant::now();
        let mut tasks = Vec::new();
        for j in 0..count {
            tokio::time::sleep_until(start + period * j as u32).await;
            let http = http.clone();
            let namespaces = scale.namespaces;
            let i = j % scale.objects;
            tasks.push(tokio::spawn(async move {
                patch(&http, i, namespaces, &format!("p{run}-{j}")).await
            }));
        }
        let mut writes = Vec::new();
        for t in tasks {
            writes.push(t.await.expect("writer"));
        }
        let max_rv = writes.iter().map(|w| w.rv).max().unwrap_or(0);
        let deliveries = self.collect(max_rv).await;
        let mut summary = self.summarize(&writes, &deliveries);
        // The achieved rate is the schedule's, not the span of the acknowledgements.
        summary.writes_per_s = count as f64 / (period * count as u32).as_secs_f64();
        summary
    }
}

async fn patch(http: &Http, i: usize, namespaces: usize, value: &str) -> Write {
    let (ns, name) = object_key(i, namespaces);
    let body = json!({"data": {"k": value}}).to_string().into_bytes();
    let sent = Instant::now();
    let (status, resp, _) = http
        .call(
            "PATCH",
            &format!("/api/v1/namespaces/{ns}/configmaps/{name}"),
            "application/merge-patch+json",
            body,
        )
        .await;
    let acked = Instant::now();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    let obj: ObjectHead = serde_json::from_slice(&resp).expect("patched object");
    Write {
        rv: obj
            .metadata
            .resource_version
            .parse()
            .expect("resourceVersion"),
        sent,
        acked,
    }
}
