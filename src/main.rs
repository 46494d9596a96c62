#![forbid(unsafe_code)]
//! The `weir` binary: the controller, the embedded Kubernetes API emulator, and CRD output.

/// mimalloc: glibc's malloc and free were a fifth of weir's CPU while 1,000 canaries stepped.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

#[cfg(feature = "emulator")]
mod demo;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Progressive delivery for Kubernetes that reverts failed releases in Git"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole loop in one process: an emulated cluster, a Git remote, a simulated app under
    /// load, Prometheus (when installed), a chat receiver and weir. Releases a good and a bad
    /// version, narrates, and exits 0 when the good one was promoted and the bad one rolled back
    /// and reverted in Git.
    #[cfg(feature = "emulator")]
    Demo {
        /// Leave everything running at the end, for kubectl and `kubectl weir`.
        #[arg(long)]
        keep: bool,
        /// Directory for the repository, kubeconfig and caches (default: a temp dir, removed at
        /// the end unless --keep).
        #[arg(long)]
        workdir: Option<PathBuf>,
    },
    /// One version of the demo's simulated app as a process (for the e2e suite).
    #[cfg(feature = "emulator")]
    #[command(hide = true)]
    DemoApp(demo::app::AppArgs),
    /// The demo's load generator as a process, split by the live route (for the e2e suite).
    #[cfg(feature = "emulator")]
    #[command(hide = true)]
    DemoLoad(demo::app::LoadArgs),
    /// Run weir's controllers against a cluster, or against an embedded emulator with --embedded.
    Run(Box<RunArgs>),
    /// Serve the Kubernetes API emulator until stopped.
    #[cfg(feature = "emulator")]
    Emulator(EmulatorArgs),
    /// Print weir's CustomResourceDefinitions as YAML, or write one file per CRD into --out.
    Crds {
        /// Directory to write `<plural>.<group>.yaml` files into.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Start the local Kubernetes API emulator in this process and run against it.
    #[arg(long)]
    embedded: bool,
    /// Kubeconfig to use (defaults to $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, conflicts_with = "embedded")]
    kubeconfig: Option<PathBuf>,
    /// With --embedded: where to write the emulator's kubeconfig.
    #[arg(long, default_value = "weir-emulator.kubeconfig")]
    emulator_kubeconfig: PathBuf,
    /// With --embedded: listen address of the emulator.
    #[arg(long, default_value = "127.0.0.1:0")]
    emulator_addr: SocketAddr,
    /// Where GitSync keeps its Git mirrors (kept across restarts, so a pending revert is pushed,
    /// not made again).
    #[arg(long, env = "WEIR_CACHE_DIR", default_value_os_t = std::env::temp_dir().join("weir-gitsync"))]
    cache_dir: PathBuf,
    /// kubectl used to build kustomizations (`kubectl kustomize`).
    #[arg(long, env = "WEIR_KUBECTL", default_value = "kubectl")]
    kubectl: PathBuf,
    /// Where to serve /metrics, /healthz and /readyz ("off" to serve nothing). A port already in
    /// use is reported and the controllers run anyway.
    #[arg(long, env = "WEIR_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: String,
    /// Run only while holding a coordination Lease, so that one of several replicas acts.
    #[arg(long, env = "WEIR_LEADER_ELECT")]
    leader_elect: bool,
    /// Name of the leader Lease.
    #[arg(long, env = "WEIR_LEASE_NAME", default_value = "weir")]
    lease_name: String,
    /// Namespace of the leader Lease.
    #[arg(long, env = "WEIR_LEASE_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// How long the Lease holds without renewal (a failover takes about this long).
    #[arg(long, env = "WEIR_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    lease_duration: Duration,
    /// How long the leader tries to renew before it stops leading (and exits).
    #[arg(long, env = "WEIR_LEASE_RENEW_DEADLINE", default_value = "10s", value_parser = parse_duration)]
    renew_deadline: Duration,
    /// How often the leader renews and followers try to take over.
    #[arg(long, env = "WEIR_LEASE_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    retry_period: Duration,
    /// This replica's identity in the Lease (default: the host name and process id).
    #[arg(long, env = "WEIR_LEADER_IDENTITY")]
    leader_identity: Option<String>,
    /// The cluster's name as people know it; every chat alert names it.
    #[arg(long, env = "WEIR_CLUSTER_NAME")]
    cluster_name: Option<String>,
    /// Threads running the controllers (default 1; with --embedded, one per core, as the emulator
    /// runs in the same process).
    #[arg(long, env = "WEIR_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=256))]
    worker_threads: Option<u16>,
}

/// Threads of `weir run` when not told otherwise. The controllers mostly wait on the API: one
/// thread kept up with 1,000 canaries stepping at once, and two spent 15–20% more CPU per step
/// transition waking each other (`cargo bench --bench scale`, README "Performance at scale").
const RUN_WORKER_THREADS: u16 = 1;

#[cfg(feature = "emulator")]
#[derive(clap::Args)]
struct EmulatorArgs {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:6443")]
    addr: SocketAddr,
    /// Where to write a kubeconfig for clients.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Delay before simulated ReplicaSets report their pods (e.g. 200ms, 2s).
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    workload_delay: Duration,
    /// Events kept per resource for watch resumption; older resourceVersions get 410 Gone.
    #[arg(long, default_value_t = 10_000)]
    watch_history: usize,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("invalid duration {s:?}: use ms, s or m")),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Command::Run(args) = &cli.command
        && (args.worker_threads.is_some() || !args.embedded)
    {
        runtime.worker_threads(usize::from(
            args.worker_threads.unwrap_or(RUN_WORKER_THREADS),
        ));
    }
    runtime
        .build()
        .context("starting the async runtime")?
        .block_on(run_command(cli))
}

async fn run_command(cli: Cli) -> anyhow::Result<()> {
    // kube and reqwest share rustls; with no process-wide provider, building a client panics.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The demo narrates on stdout; the controllers' own info lines would drown it.
    #[cfg(feature = "emulator")]
    let default_level = if matches!(cli.command, Command::Demo { .. }) {
        "warn"
    } else {
        "info"
    };
    #[cfg(not(feature = "emulator"))]
    let default_level = "info";
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_level.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Crds { out } => crds(out),
        #[cfg(feature = "emulator")]
        Command::Demo { keep, workdir } => demo::run(demo::DemoOptions { keep, workdir }).await,
        #[cfg(feature = "emulator")]
        Command::DemoApp(args) => demo::app::serve_app(args).await,
        #[cfg(feature = "emulator")]
        Command::DemoLoad(args) => demo::app::run_load(args).await,
        #[cfg(feature = "emulator")]
        Command::Emulator(args) => emulator(args).await,
        Command::Run(args) => run(*args).await,
    }
}

fn crds(out: Option<PathBuf>) -> anyhow::Result<()> {
    match out {
        None => {
            print!("{}", weir::api::crds::to_yaml()?);
            Ok(())
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for path in weir::api::crds::write_dir(&dir)? {
                println!("wrote {}", path.display());
            }
            Ok(())
        }
    }
}

#[cfg(feature = "emulator")]
async fn emulator(args: EmulatorArgs) -> anyhow::Result<()> {
    let running = weir::emulator::start(weir::emulator::EmulatorConfig {
        addr: args.addr,
        kubeconfig: args.kubeconfig.clone(),
        workload_delay: args.workload_delay,
        watch_history: args.watch_history,
        ..Default::default()
    })
    .await?;
    eprintln!(
        "weir emulator serving the Kubernetes API at {}",
        running.url()
    );
    if let Some(k) = &args.kubeconfig {
        eprintln!("kubeconfig written to {}", k.display());
    }
    shutdown_signal().await;
    running.shutdown();
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let (_emulator, client) = if args.embedded {
        #[cfg(feature = "emulator")]
        {
            let running = weir::emulator::start(weir::emulator::EmulatorConfig {
                addr: args.emulator_addr,
                kubeconfig: Some(args.emulator_kubeconfig.clone()),
                ..Default::default()
            })
            .await?;
            let client = kube::Client::try_from(identified(running.kube_config()))?;
            install_crds(&client).await?;
            let path = std::fs::canonicalize(&args.emulator_kubeconfig)
                .unwrap_or(args.emulator_kubeconfig.clone());
            println!(
                "weir is running against an embedded Kubernetes API emulator at {}",
                running.url()
            );
            println!("kubeconfig: {}", path.display());
            println!(
                "try:\n  export KUBECONFIG={}\n  kubectl get crds\n  kubectl apply -f e2e/crds/ && kubectl apply -f examples/canary-gateway.yaml",
                path.display()
            );
            (Some(running), client)
        }
        #[cfg(not(feature = "emulator"))]
        anyhow::bail!("this build has no emulator; rebuild with the `emulator` feature")
    } else {
        let config = match &args.kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path)
                    .with_context(|| format!("reading kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
            }
            None => kube::Config::infer()
                .await
                .context("no kubeconfig or in-cluster configuration found")?,
        };
        (
            None::<()>.map(|_| unreachable!()),
            kube::Client::try_from(identified(config))?,
        )
    };
    let version = client
        .apiserver_version()
        .await
        .context("cannot reach the Kubernetes API")?;
    println!("connected to Kubernetes {}", version.git_version);
    if args.metrics_addr != "off" {
        match args.metrics_addr.parse::<SocketAddr>() {
            Ok(addr) => match weir::telemetry::serve(addr).await {
                Ok(bound) => {
                    println!("metrics and health on http://{bound}/metrics, /healthz, /readyz")
                }
                Err(e) => eprintln!(
                    "warning: cannot serve metrics on {addr}: {e}; running without /metrics"
                ),
            },
            Err(e) => anyhow::bail!("--metrics-addr {:?}: {e}", args.metrics_addr),
        }
    }
    weir::telemetry::global().set_ready(true);
    let cluster_name = args
        .cluster_name
        .clone()
        .or_else(|| {
            // Without a name, the kubeconfig context people already use for this cluster.
            let kubeconfig = match &args.kubeconfig {
                Some(path) => kube::config::Kubeconfig::read_from(path).ok(),
                None if args.embedded => None,
                None => kube::config::Kubeconfig::read().ok(),
            };
            kubeconfig.and_then(|k| k.current_context)
        })
        .unwrap_or_else(|| {
            if args.embedded {
                "emulator"
            } else {
                "kubernetes"
            }
            .to_owned()
        });
    let notify = weir::notify::controller::NotifyConfig {
        cluster_name,
        ..Default::default()
    };
    println!(
        "controllers: rollout, analysis, gitsync, alerts (cluster name {:?}); press Ctrl-C to stop",
        notify.cluster_name
    );
    let gitsync = weir::gitsync::controller::Settings {
        cache_dir: args.cache_dir.clone(),
        kustomize: weir::gitsync::render::KustomizeCommand::Kubectl(args.kubectl.clone()),
    };
    let elector = if args.leader_elect {
        let identity = args.leader_identity.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "weir".into());
            format!("{host}-{}", std::process::id())
        });
        let elector = weir::leader_election::Elector::new(
            client.clone(),
            weir::leader_election::LeaseSettings {
                name: args.lease_name.clone(),
                namespace: args.lease_namespace.clone(),
                identity: identity.clone(),
                lease_duration: args.lease_duration,
                renew_deadline: args.renew_deadline,
                retry_period: args.retry_period,
            },
        );
        println!(
            "waiting to lead as {identity:?} (Lease {}/{})",
            args.lease_namespace, args.lease_name
        );
        tokio::select! {
            acquired = elector.acquire() => acquired?,
            _ = shutdown_signal() => return Ok(()),
        }
        println!("leading as {identity:?}");
        Some(elector)
    } else {
        None
    };
    let lost = async {
        match &elector {
            Some(e) => e.hold().await,
            None => std::future::pending().await,
        }
    };
    // The Rollout controller and the revert writer read every Rollout: one watch serves both.
    let mut rollouts = weir::rollout::shared_watch::SharedRolloutWatch::new(client.clone());
    let (for_rollouts, for_gitsync) = (rollouts.subscribe(), rollouts.subscribe());
    tokio::select! {
        _ = rollouts.run() => {}
        _ = weir::rollout::controller::run_with(client.clone(), for_rollouts) => {}
        _ = weir::analysis::controller::run(client.clone()) => {}
        _ = weir::gitsync::controller::run_with(client.clone(), gitsync, for_gitsync) => {}
        _ = weir::notify::controller::run_with(client, notify) => {}
        e = lost => {
            // Two replicas must never act at once: stop now, and come back as a follower.
            anyhow::bail!("stopped leading: {e}");
        }
        _ = shutdown_signal() => {}
    }
    Ok(())
}

/// weir's requests carry its own `User-Agent`, so audit logs (and the RBAC coverage test) can tell them
/// from kubectl's.
fn identified(mut config: kube::Config) -> kube::Config {
    config.headers.push((
        reqwest::header::USER_AGENT,
        reqwest::header::HeaderValue::from_static(weir::rbac::USER_AGENT),
    ));
    config
}

#[cfg(feature = "emulator")]
async fn install_crds(client: &kube::Client) -> anyhow::Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, Patch, PatchParams};
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in weir::api::crds::all() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply("weir").force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| format!("installing CRD {name}"))?;
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
