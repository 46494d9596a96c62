//! A real Prometheus for tests: TSDB blocks built by `promtool` from an OpenMetrics text, served
//! by `prometheus` on a free loopback port, killed when dropped.
//!
//! Include it next to `mod support;` with `#[path = "support/prometheus.rs"] mod prometheus;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::support::{TempDir, wait_for};

/// How to get the binaries on Debian and Ubuntu; `scripts/test.sh` runs it when they are missing.
pub const INSTALL_HINT: &str = "apt-get install -y prometheus";

/// The share of `args.version`'s requests that were 5xx over `window`, by the `http_requests_total`
/// the test apps export (0 while there were requests and no errors).
pub fn error_rate_query(window: &str) -> String {
    format!(
        r#"(sum(rate(http_requests_total{{version="{{{{args.version}}}}",code=~"5.."}}[{window}])) or vector(0)) / sum(rate(http_requests_total{{version="{{{{args.version}}}}"}}[{window}]))"#
    )
}

/// Template `error-rate` as YAML: three measurements a second apart, after `initial_delay`, of
/// [`error_rate_query`] over `window` asked of the Prometheus at `address`, failing on the first
/// above 5%.
pub fn error_rate_template(address: &str, window: &str, initial_delay: &str) -> String {
    let query = error_rate_query(window);
    format!(
        "apiVersion: weir.io/v1alpha1\nkind: AnalysisTemplate\nmetadata:\n  name: error-rate\nspec:\n  args:\n  - name: version\n  metrics:\n  - name: error-rate\n    interval: 1s\n    count: 3\n    initialDelay: {initial_delay}\n    failureLimit: 0\n    successCondition: \"result[0] < 0.05\"\n    provider:\n      prometheus:\n        address: {address}\n        query: '{query}'\n"
    )
}

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `prometheus` serving a fixed TSDB.
pub struct Prometheus {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    dir: TempDir,
}

impl Prometheus {
    /// Builds a TSDB from `openmetrics` (which must end in `# EOF`) and serves it, returning
    /// once `/-/ready` answers 200.
    pub async fn start(openmetrics: &str) -> Self {
        let prometheus = binary("prometheus");
        let promtool = binary("promtool");
        let dir = TempDir::new("prometheus");
        let data = dir.path().join("data.om");
        let tsdb = dir.path().join("tsdb");
        std::fs::write(&data, openmetrics).expect("write OpenMetrics data");
        let created = tokio::time::timeout(
            Duration::from_secs(60),
            Command::new(&promtool)
                .args(["tsdb", "create-blocks-from", "openmetrics"])
                .arg(&data)
                .arg(&tsdb)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("promtool timed out")
        .expect("run promtool");
        assert!(
            created.status.success(),
            "promtool tsdb create-blocks-from openmetrics failed: {}{}",
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr)
        );
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, "global:\n  evaluation_interval: 1m\n").expect("write config");
        Self::serve(dir, config, tsdb, &prometheus).await
    }

    /// Serves an empty TSDB and scrapes `target` (`host:port`, path `/metrics`) every second.
    pub async fn scraping(target: &str) -> Self {
        Self::scraping_all(&[target]).await
    }

    /// Serves an empty TSDB and scrapes every one of `targets` every second.
    pub async fn scraping_all(targets: &[&str]) -> Self {
        let prometheus = binary("prometheus");
        let dir = TempDir::new("prometheus-scrape");
        let tsdb = dir.path().join("tsdb");
        let config = dir.path().join("prometheus.yml");
        let list = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let yaml = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1m\nscrape_configs:\n- job_name: app\n  scrape_interval: 1s\n  static_configs:\n  - targets: [{list}]\n"
        );
        std::fs::write(&config, yaml).expect("write config");
        Self::serve(dir, config, tsdb, &prometheus).await
    }

    async fn serve(dir: TempDir, config: PathBuf, tsdb: PathBuf, prometheus: &Path) -> Self {
        // A freed port can be taken by someone else before prometheus binds it; try another.
        for attempt in 1..=3 {
            let port = free_port();
            let log = dir.path().join(format!("prometheus-{attempt}.log"));
            let mut child = spawn(prometheus, &config, &tsdb, port, &log);
            let outcome = wait_for("prometheus /-/ready", READY_TIMEOUT, || {
                let exited = child.try_wait().ok().flatten();
                async move {
                    if let Some(status) = exited {
                        return Some(Err::<(), ExitStatus>(status));
                    }
                    (http_status(port, "/-/ready").await == Some(200)).then_some(Ok(()))
                }
            })
            .await;
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            match outcome {
                Ok(()) => {
                    return Prometheus {
                        child: Some(child),
                        port,
                        log,
                        dir,
                    };
                }
                Err(_) if text.contains("address already in use") && attempt < 3 => continue,
                Err(status) => {
                    panic!("prometheus exited with {status} before it was ready:\n{text}")
                }
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    /// Waits until every series has three samples in the last 10s, so that rates are real data
    /// and an analysis does not start on an empty result.
    pub async fn wait_for_scrapes(&self) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        let url = format!(
            "{}/api/v1/query?query=min(count_over_time(http_requests_total%5B10s%5D))%20%3E%3D%203",
            self.url()
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let body: Option<serde_json::Value> = match http.get(&url).send().await {
                Ok(r) => r.json().await.ok(),
                Err(_) => None,
            };
            if body.is_some_and(|b| {
                b["data"]["result"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty())
            }) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "Prometheus did not scrape the app three times in 60s:\n{}",
                self.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server and waits until it is gone, so that its port refuses connections.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill prometheus");
        }
    }

    /// What the server logged so far, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Seconds since the Unix epoch; samples are placed just before now so that an instant query
/// (evaluated at now, looking back 5 minutes) finds them.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The path of `name`: `$WEIR_PROMETHEUS` / `$WEIR_PROMTOOL`, else the first match on `PATH`.
/// Panics with the install command when it is missing: a test that needs Prometheus must never
/// pass without it.
pub fn binary(name: &str) -> PathBuf {
    let variable = format!("WEIR_{}", name.to_uppercase());
    if let Some(path) = std::env::var_os(&variable) {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed; install it with: {INSTALL_HINT} \
                 (scripts/test.sh does this), or set {variable}"
            )
        })
}

fn spawn(prometheus: &Path, config: &Path, tsdb: &Path, port: u16, log: &Path) -> Child {
    let out = std::fs::File::create(log).expect("create prometheus log");
    let err = out.try_clone().expect("clone log handle");
    Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", tsdb.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start prometheus: {e}; install it with: {INSTALL_HINT}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// The status of `GET path` on loopback, or None when nothing answers yet. Plain HTTP/1.0 over
/// TCP keeps the harness free of the HTTP client under test.
async fn http_status(port: u16, path: &str) -> Option<u16> {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        String::from_utf8_lossy(&answer)
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

/// A simulated app with two versions: `good` answers 200s, `bad` answers half 500s. Counters grow with
/// time, as real ones do under steady load.
pub async fn two_version_app() -> (String, tokio::task::JoinHandle<()>) {
    let started = std::time::Instant::now();
    let metrics = move || async move {
        let t = started.elapsed().as_secs_f64();
        let mut out = String::from("# TYPE http_requests_total counter\n");
        for (version, ok, err) in [("good", 100.0 * t, 0.0), ("bad", 50.0 * t, 50.0 * t)] {
            out.push_str(&format!(
                "http_requests_total{{version=\"{version}\",code=\"200\"}} {ok}\n"
            ));
            out.push_str(&format!(
                "http_requests_total{{version=\"{version}\",code=\"500\"}} {err}\n"
            ));
        }
        out
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            axum::Router::new().route("/metrics", axum::routing::get(metrics)),
        )
        .await;
    });
    (addr, server)
}
