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
        let dir = std::env::temp_dir().join(format!(
            "weir-test-{tag}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
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
        Cluster {
            emulator,
            dir,
            kubeconfig,
        }
    }

    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.emulator.kube_config()).expect("kube client")
    }

    /// A client without kube's retry on 503/429, so wire-level tests see every response as sent.
    pub fn raw_client(&self) -> kube::Client {
        let mut cfg = self.emulator.kube_config();
        cfg.default_retry = false;
        kube::Client::try_from(cfg).expect("kube client")
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
            .unwrap_or_else(|e| {
                panic!("running kubectl: {e}; install kubectl v1.32 or set WEIR_KUBECTL")
            })
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

    /// Applies weir's CRDs and the test CRDs for HTTPRoute and VirtualService (`e2e/crds`) with
    /// kubectl.
    pub async fn install_crds(&self) {
        for dir in ["crds", "e2e/crds"] {
            self.kubectl_ok(&["apply", "-f", repo_root().join(dir).to_str().unwrap()])
                .await;
        }
    }
}

/// `weir run` against the cluster `kubeconfig` names, as a separate process killed on drop, with
/// its Git cache in `cache_dir` and the test's kubectl; callers add flags, environment and stdio.
pub fn weir_run_command(kubeconfig: &Path, cache_dir: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"));
    cmd.arg("run")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache_dir)
        .arg("--kubectl")
        .arg(kubectl_path())
        .kill_on_drop(true);
    cmd
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
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A raw HTTP response from the emulator.
pub struct Raw {
    pub status: u16,
    pub body: serde_json::Value,
    pub text: String,
    pub headers: http::HeaderMap,
}

impl Cluster {
    /// Sends a raw request and returns status, parsed body and headers; never fails on HTTP errors.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Vec<u8>>,
    ) -> Raw {
        use http_body_util::BodyExt;
        let mut req = http::Request::builder().method(method).uri(path);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let req = req
            .body(kube::client::Body::from(body.into()))
            .expect("request");
        let resp = self.raw_client().send(req).await.expect("send");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Raw {
            status,
            body,
            text,
            headers,
        }
    }

    /// Reads a watch stream until `done` says stop or `timeout` passes; returns the events seen.
    pub async fn watch_events(
        &self,
        path: &str,
        timeout: Duration,
        mut done: impl FnMut(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        use futures::{AsyncBufReadExt, StreamExt};
        let req = http::Request::builder()
            .uri(path)
            .body(Vec::new())
            .expect("request");
        let stream = self.raw_client().request_stream(req).await.expect("watch");
        let mut lines = stream.lines();
        let mut events = Vec::new();
        let _ = tokio::time::timeout(timeout, async {
            while let Some(Ok(line)) = lines.next().await {
                if let Ok(v) = serde_json::from_str(&line) {
                    events.push(v);
                }
                if done(&events) {
                    break;
                }
            }
        })
        .await;
        events
    }
}

/// Objects of a kind in the `default` namespace, through the dynamic API.
pub fn api(
    c: &Cluster,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) -> kube::Api<kube::api::DynamicObject> {
    let ar = kube::core::ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk(group, version, kind),
        plural,
    );
    kube::Api::namespaced_with(c.client(), "default", &ar)
}

/// Server-side applies `obj` as the test's own field manager; panics with the API's answer.
pub async fn apply(a: &kube::Api<kube::api::DynamicObject>, obj: serde_json::Value) {
    let name = obj["metadata"]["name"].as_str().unwrap().to_string();
    a.patch(
        &name,
        &kube::api::PatchParams::apply("test").force(),
        &kube::api::Patch::Apply(&obj),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {name}: {e}"));
}

/// Applies Services `web-stable` and `web-canary` (both selecting `app: web`) and HTTPRoute `web`
/// sending everything to stable; with `stable_weight` None the stable backend's weight is left
/// unset.
pub async fn apply_web_network(c: &Cluster, stable_weight: Option<i64>) {
    let svc = api(c, "", "v1", "Service", "services");
    for n in ["web-stable", "web-canary"] {
        apply(&svc, serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": n}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})).await;
    }
    let mut stable = serde_json::json!({"name": "web-stable", "port": 80});
    if let Some(weight) = stable_weight {
        stable["weight"] = weight.into();
    }
    apply(&api(c, "gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes"), serde_json::json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web"}, "spec": {"rules": [{"backendRefs": [stable, {"name": "web-canary", "port": 80, "weight": 0}]}]}})).await;
}

/// The `spec.rules` of HTTPRoute `web` in `default`; panics when there is none.
pub async fn web_route_rules(c: &Cluster) -> serde_json::Value {
    api(
        c,
        "gateway.networking.k8s.io",
        "v1",
        "HTTPRoute",
        "httproutes",
    )
    .get("web")
    .await
    .unwrap()
    .data["spec"]["rules"]
        .clone()
}

/// The status of Rollout `web` in `default` (Null while there is none).
pub async fn web_status(c: &Cluster) -> serde_json::Value {
    api(c, "weir.io", "v1alpha1", "Rollout", "rollouts")
        .get("web")
        .await
        .map(|r| r.data["status"].clone())
        .unwrap_or(serde_json::Value::Null)
}

/// Waits up to `timeout` until Rollout `web`'s status satisfies `f`; returns that status.
pub async fn wait_web_status(
    c: &Cluster,
    what: &str,
    timeout: Duration,
    f: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_for(what, timeout, || async {
        let s = web_status(c).await;
        f(&s).then_some(s)
    })
    .await
}
