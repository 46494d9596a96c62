//! `weir demo`: the whole loop in one process tree, narrated. An emulated cluster, a Git remote
//! (`git daemon`), a simulated app in three versions under real load split by the live route,
//! Prometheus when it is installed, a chat receiver, and weir's controllers. It releases a good
//! version (promoted to 100%) and a bad one (rolled back, reverted in Git), and exits 0 only when
//! that whole story happened.

pub mod app;
mod story;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};

use app::{AppServer, Behaviour};

/// Our HTTPRoute CRD (the one the tests use), so the demo needs nothing from the repository.
const HTTPROUTE_CRD: &str =
    include_str!("../../e2e/crds/gateway.networking.k8s.io_httproutes.yaml");

/// Options of `weir demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Leave everything running at the end, for kubectl and `kubectl weir`.
    pub keep: bool,
    /// Where to put the repository, kubeconfig and caches (default: a new temp dir).
    pub workdir: Option<PathBuf>,
}

/// A child process killed when dropped.
struct Child(tokio::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The first `name` on PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        if Instant::now() > deadline {
            bail!("{what} did not happen within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// `git daemon` serving the demo's repository on loopback, push included.
async fn git_daemon(repo: &story::Repo) -> anyhow::Result<(Child, String)> {
    let port = free_port()?;
    let base = &repo.served;
    let child = tokio::process::Command::new(repo.daemon_program().await?)
        .arg("--reuseaddr")
        .arg(format!("--base-path={}", base.display()))
        .arg("--export-all")
        .arg("--enable=receive-pack")
        .arg("--listen=127.0.0.1")
        .arg(format!("--port={port}"))
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting `git daemon` (install git: apt-get install -y git)")?;
    wait_until("git daemon listening", Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await?;
    Ok((Child(child), format!("git://127.0.0.1:{port}/apps.git")))
}

/// Prometheus scraping the app versions every second, when it is installed.
async fn prometheus(
    binary: &Path,
    dir: &Path,
    targets: &[String],
) -> anyhow::Result<(Child, String)> {
    let port = free_port()?;
    let config = dir.join("prometheus.yml");
    let list = targets
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n- job_name: web\n  static_configs:\n  - targets: [{list}]\n"
        ),
    )?;
    let child = tokio::process::Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting prometheus")?;
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    wait_until("Prometheus ready", Duration::from_secs(30), || async {
        http.get(format!("{url}/-/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await?;
    // Rates need two samples of every series; an analysis before that would find no data.
    let query = format!(
        "{url}/api/v1/query?query=count(count_over_time(http_requests_total%5B10s%5D)%20%3E%3D%202)%20%3E%3D%20{}",
        targets.len() * 2
    );
    wait_until(
        "Prometheus scraping the app",
        Duration::from_secs(30),
        || async {
            let body: Option<serde_json::Value> = match http.get(&query).send().await {
                Ok(r) => r.json().await.ok(),
                Err(_) => None,
            };
            body.is_some_and(|b| {
                b["data"]["result"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty())
            })
        },
    )
    .await?;
    Ok((Child(child), url))
}

async fn install_crds(client: &kube::Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let route: CustomResourceDefinition =
        serde_saphyr::from_str(HTTPROUTE_CRD).context("parsing the HTTPRoute CRD")?;
    for crd in weir::api::crds::all().into_iter().chain([route]) {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply("weir-demo").force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| format!("installing CRD {name}"))?;
    }
    Ok(())
}

/// Runs the demo; `Ok(())` when the whole story happened.
pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    if on_path("git").is_none() {
        bail!("the demo needs git (apt-get install -y git)");
    }
    let started = Instant::now();
    let workdir = match &opts.workdir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("weir-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&workdir).with_context(|| format!("creating {}", workdir.display()))?;
    let workdir = std::fs::canonicalize(&workdir)?;
    let say = story::Narrator::new(started);

    // The cluster.
    let kubeconfig = workdir.join("kubeconfig");
    let emulator = weir::emulator::start(weir::emulator::EmulatorConfig {
        kubeconfig: Some(kubeconfig.clone()),
        ..Default::default()
    })
    .await?;
    let client = kube::Client::try_from(emulator.kube_config())?;
    install_crds(&client).await?;
    say.line(format!(
        "cluster: Kubernetes API emulator at {}",
        emulator.url()
    ));

    // The app, in three versions: 1.0 and 2.0 healthy, 3.0 failing half its requests.
    let healthy = Behaviour {
        error_rate: 0.0,
        latency: Duration::from_millis(8),
    };
    let failing = Behaviour {
        error_rate: 0.5,
        latency: Duration::from_millis(20),
    };
    let mut apps = Vec::new();
    for (version, behaviour) in [("1.0", healthy), ("2.0", healthy), ("3.0", failing)] {
        apps.push(AppServer::start(version, behaviour).await?);
    }
    let addrs: Vec<(String, String)> = apps
        .iter()
        .map(|a| (a.name().to_string(), a.addr.clone()))
        .collect();
    say.line(format!(
        "app: versions {} serving real HTTP with /metrics",
        addrs
            .iter()
            .map(|(v, a)| format!("{v} at {a}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));

    // Metrics: Prometheus if installed, else the app's own JSON counters.
    let prom_dir = workdir.join("prometheus");
    std::fs::create_dir_all(&prom_dir)?;
    let targets: Vec<String> = addrs.iter().map(|(_, a)| a.clone()).collect();
    let (_prometheus, metrics) = match on_path("prometheus") {
        Some(binary) => {
            let (child, url) = prometheus(&binary, &prom_dir, &targets).await?;
            say.line(format!(
                "metrics: Prometheus at {url}, scraping every second"
            ));
            (Some(child), story::Metrics::Prometheus(url))
        }
        None => {
            say.line("metrics: Prometheus is not installed, so analysis reads the app's own /stats JSON (install it with `apt-get install -y prometheus` to see PromQL at work)");
            (None, story::Metrics::Web)
        }
    };

    // Chat alerts go to a local receiver that prints them.
    let (receiver_url, alerts) = story::chat_receiver(say.clone()).await?;
    say.line(format!("alerts: a webhook receiver at {receiver_url}"));

    // Git.
    let git = story::Repo::create(&workdir).await?;
    let (_daemon, url) = git_daemon(&git).await?;
    say.line(format!(
        "git: {url} (git daemon), a clone to commit from in {}",
        git.work.display()
    ));

    // weir.
    let settings = weir::gitsync::controller::Settings {
        cache_dir: workdir.join("cache"),
        kustomize: weir::gitsync::render::KustomizeCommand::default(),
    };
    let mut rollouts = weir::rollout::shared_watch::SharedRolloutWatch::new(client.clone());
    let (for_rollouts, for_gitsync) = (rollouts.subscribe(), rollouts.subscribe());
    let controllers = [
        tokio::spawn(rollouts.run()),
        tokio::spawn(weir::rollout::controller::run_with(
            client.clone(),
            for_rollouts,
        )),
        tokio::spawn(weir::analysis::controller::run(client.clone())),
        tokio::spawn(weir::gitsync::controller::run_with(
            client.clone(),
            settings,
            for_gitsync,
        )),
        tokio::spawn(weir::notify::controller::run_with(
            client.clone(),
            weir::notify::controller::NotifyConfig {
                cluster_name: "demo".into(),
                ..Default::default()
            },
        )),
    ];
    let load = app::load_generator(client.clone(), story::NS.into(), addrs.clone(), 40);
    let world = story::World {
        client: client.clone(),
        repo: git,
        url,
        metrics,
        apps: addrs,
        receiver_url,
        alerts,
        say: say.clone(),
    };
    let result = world.tell().await;
    match &result {
        Ok(()) => say.line("the whole story happened as expected"),
        Err(e) => say.line(format!("the story did not happen as expected: {e:#}")),
    }
    if opts.keep {
        say.line(format!(
            "--keep: everything stays up. Try:\n  export KUBECONFIG={}\n  kubectl get rollouts,gitsyncs,analysisruns\n  kubectl weir get rollout web\nPress Ctrl-C to stop.",
            kubeconfig.display()
        ));
        let _ = tokio::signal::ctrl_c().await;
    }
    // Everything that talks to the emulator stops before it does.
    load.abort();
    let _ = load.await;
    for c in controllers {
        c.abort();
        let _ = c.await;
    }
    emulator.shutdown();
    if opts.workdir.is_none() && !opts.keep {
        let _ = std::fs::remove_dir_all(&workdir);
    }
    result
}
