//! Shared harness for integration tests: an in-process emulator, temp dirs, kubectl, and condition waits.
#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use weir::emulator::{EmulatorConfig, RunningEmulator};

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("weir-test-{tag}-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An emulator on a free loopback port with a kubeconfig in a temp dir.
pub struct Cluster {
    pub emulator: RunningEmulator,
    pub dir: TempDir,
    pub kubeconfig: PathBuf,
}

impl Cluster {
    pub async fn start(tag: &str) -> Self {
        Self::start_with(tag, EmulatorConfig::default()).await
    }

    pub async fn start_with(tag: &str, mut config: EmulatorConfig) -> Self {
        let dir = TempDir::new(tag);
        let kubeconfig = dir.path().join("kubeconfig");
        config.kubeconfig = Some(kubeconfig.clone());
        let emulator = weir::emulator::start(config).await.expect("start emulator");
        Cluster { emulator, dir, kubeconfig }
    }

    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.emulator.kube_config()).expect("kube client")
    }

    /// Runs the real kubectl against this emulator, with its own discovery cache.
    pub async fn kubectl(&self, args: &[&str]) -> Output {
        let mut cmd = tokio::process::Command::new(kubectl_path());
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("kube-cache"))
            .args(args)
            .kill_on_drop(true);
        tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} timed out"))
            .unwrap_or_else(|e| panic!("running kubectl: {e}; install kubectl v1.32 or set WEIR_KUBECTL"))
    }

    /// Runs kubectl and asserts success; returns stdout.
    pub async fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args).await;
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A raw HTTP client call against the emulator, for wire-level assertions.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.emulator.url())
    }
}

/// The kubectl to drive: $WEIR_KUBECTL, else kubectl v1.32 from the Cloud SDK layout, else `kubectl`.
pub fn kubectl_path() -> PathBuf {
    if let Ok(p) = std::env::var("WEIR_KUBECTL") {
        return PathBuf::from(p);
    }
    let pinned = PathBuf::from("/usr/lib/google-cloud-sdk/bin/kubectl.1.32");
    if pinned.exists() {
        return pinned;
    }
    PathBuf::from("kubectl")
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Polls `check` until it yields Some, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
