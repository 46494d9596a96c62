//! A Kubernetes API emulator that speaks the REST wire protocol over HTTP on loopback.
//!
//! It exists because no kube-apiserver can be installed where weir is developed and tested. kube-rs
//! clients, kube-runtime watchers and the real `kubectl` work against it unchanged, so the same code and
//! the same e2e suite run against a real cluster.

pub mod api_error;
pub mod discovery;
pub mod faults;
pub mod http;
pub mod kubeconfig;
pub mod merge;
pub mod object_rules;
pub mod openapi;
pub mod resources;
pub mod selectors;
pub mod store;
pub mod table;
pub mod validation;
pub mod workload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::task::JoinHandle;

pub use faults::FaultConfig;
pub use http::App;
pub use store::{Store, StoreConfig};

/// How to run the emulator.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Where to listen; port 0 picks a free one.
    pub addr: SocketAddr,
    /// Where to write a kubeconfig for clients, if anywhere.
    pub kubeconfig: Option<PathBuf>,
    /// How long simulated ReplicaSets take to reflect their spec in status.
    pub workload_delay: Duration,
    /// Events kept per collection for watch resumption; older resourceVersions get 410 Gone.
    pub watch_history: usize,
    /// Interval between watch bookmarks for clients that ask for them.
    pub bookmark_interval: Duration,
    /// Faults active from the start.
    pub faults: FaultConfig,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            kubeconfig: None,
            workload_delay: Duration::from_millis(200),
            watch_history: StoreConfig::default().watch_history,
            bookmark_interval: Duration::from_secs(5),
            faults: FaultConfig::default(),
        }
    }
}

/// Errors starting the emulator.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The kubeconfig could not be written.
    #[error("cannot write kubeconfig {path}")]
    Kubeconfig {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A running emulator. Dropping it does not stop it; call [`RunningEmulator::shutdown`].
pub struct RunningEmulator {
    /// The bound address.
    pub addr: SocketAddr,
    /// The shared state, for in-process tests.
    pub app: Arc<App>,
    server: JoinHandle<()>,
    workloads: JoinHandle<()>,
}

impl RunningEmulator {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client configuration for this emulator.
    pub fn kube_config(&self) -> kube::Config {
        let uri = self.url().parse().unwrap_or_default();
        let mut cfg = kube::Config::new(uri);
        cfg.default_namespace = "default".into();
        cfg
    }

    /// Stops serving and ends the simulated controllers.
    pub fn shutdown(self) {
        self.server.abort();
        self.workloads.abort();
    }

    /// Waits until the server task ends (it only ends when aborted or on a fatal error).
    pub async fn wait(self) {
        let _ = self.server.await;
        self.workloads.abort();
    }
}

/// Starts the emulator on its own tasks and returns once it accepts connections.
pub async fn start(config: EmulatorConfig) -> Result<RunningEmulator, EmulatorError> {
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|source| EmulatorError::Bind {
            addr: config.addr,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| EmulatorError::Bind {
            addr: config.addr,
            source,
        })?;
    let store = Store::new(StoreConfig {
        watch_history: config.watch_history,
    });
    let app = Arc::new(App {
        store,
        faults: RwLock::new(config.faults.clone()),
        fault_dice: std::sync::Mutex::new(faults::FaultDice::default()),
        drop_watches: tokio::sync::watch::channel(0).0,
        stats: http::Stats::default(),
        server_address: addr.to_string(),
        bookmark_interval: config.bookmark_interval,
    });
    if let Some(path) = &config.kubeconfig {
        kubeconfig::write(path, &format!("http://{addr}")).map_err(|source| {
            EmulatorError::Kubeconfig {
                path: path.clone(),
                source,
            }
        })?;
    }
    let router = http::router(app.clone());
    // Like a real apiserver: without TCP_NODELAY, small watch events wait on delayed ACKs (~40 ms).
    let listener = axum::serve::ListenerExt::tap_io(listener, |s| {
        let _ = s.set_nodelay(true);
    });
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "emulator server stopped");
        }
    });
    let workloads = tokio::spawn(workload::run(app.clone(), config.workload_delay));
    Ok(RunningEmulator {
        addr,
        app,
        server,
        workloads,
    })
}
