//! What every scenario stands on: a cluster (a `weir emulator` process, or the one `KUBECONFIG`
//! names), a namespace of its own, the real kubectl and `kubectl weir`, and `weir run` as a
//! separate process. The cluster is only ever read through the API; every write goes through
//! kubectl, `kubectl weir`, Git or weir itself.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

use crate::support::{TempDir, kubectl_path, repo_root, wait_for};

/// How long any one user-visible state may take to reach the next.
pub const WAIT: Duration = Duration::from_secs(90);

/// The images the scenarios release. On the emulator only their tags matter (they name the
/// simulated app's versions); on a real cluster they must run, and `pause` runs anywhere.
pub const V1: &str = "registry.k8s.io/pause:3.9";
pub const V2: &str = "registry.k8s.io/pause:3.10";

/// The cluster a scenario runs against, its namespace and its scratch directory.
pub struct Env {
    pub dir: TempDir,
    pub kubeconfig: PathBuf,
    pub ns: String,
    emulator: Option<Child>,
    client: kube::Client,
}

impl Env {
    /// A fresh emulator process (or the `KUBECONFIG` cluster), weir's CRDs, and a new namespace.
    pub async fn start(scenario: &str) -> Env {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = TempDir::new(&format!("e2e-{scenario}"));
        let (kubeconfig, emulator) = match std::env::var_os("KUBECONFIG") {
            Some(k) if !k.is_empty() => (PathBuf::from(k), None),
            _ => {
                let (kubeconfig, child) = start_emulator(dir.path()).await;
                (kubeconfig, Some(child))
            }
        };
        let client = client(&kubeconfig).await;
        wait_for("the API server to answer", WAIT, || async {
            client.apiserver_version().await.ok()
        })
        .await;
        let ns = format!("e2e-{scenario}-{:04x}", fastrand::u16(..));
        let env = Env {
            dir,
            kubeconfig,
            ns,
            emulator,
            client,
        };
        env.kubectl_ok(&["apply", "-f", path_str(&repo_root().join("crds"))])
            .await;
        if env.on_emulator() {
            // A real cluster brings its own Gateway API and Istio CRDs (see e2e/README.md).
            env.kubectl_ok(&["apply", "-f", path_str(&repo_root().join("e2e/crds"))])
                .await;
        } else {
            eprintln!(
                "e2e {scenario}: KUBECONFIG is set, so this runs against {} in namespace {}",
                env.kubeconfig.display(),
                env.ns
            );
            for crd in [
                "httproutes.gateway.networking.k8s.io",
                "virtualservices.networking.istio.io",
            ] {
                let found = env.kubectl(&["get", "crd", crd]).await;
                assert!(
                    found.status.success(),
                    "the cluster has no CRD {crd}; install the Gateway API standard CRDs and \
                     Istio's VirtualService CRD as e2e/README.md shows"
                );
            }
            env.kubectl_ok(&[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/rollouts.weir.io",
                "crd/gitsyncs.weir.io",
                "crd/analysisruns.weir.io",
                "crd/analysistemplates.weir.io",
            ])
            .await;
        }
        env.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {}\n",
            env.ns
        ))
        .await;
        env
    }

    /// Whether this scenario runs on its own emulator (rather than the `KUBECONFIG` cluster).
    pub fn on_emulator(&self) -> bool {
        self.emulator.is_some()
    }

    fn kubectl_command(&self) -> Command {
        let mut cmd = Command::new(kubectl_path());
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("kube-cache"))
            .arg("--namespace")
            .arg(&self.ns)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// kubectl in the scenario's namespace.
    pub async fn kubectl(&self, args: &[&str]) -> Output {
        let mut cmd = self.kubectl_command();
        cmd.args(args);
        run(cmd, &format!("kubectl {args:?}")).await
    }

    /// kubectl that must succeed; returns stdout.
    pub async fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args).await;
        succeeded(&out, &format!("kubectl {args:?}"))
    }

    /// `kubectl apply -f -` of one or more YAML (or JSON) documents.
    pub async fn apply(&self, manifest: &str) -> String {
        let mut cmd = self.kubectl_command();
        cmd.args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("running kubectl: {e}; {KUBECTL_HINT}"));
        let mut stdin = child.stdin.take().expect("kubectl stdin");
        stdin
            .write_all(manifest.as_bytes())
            .await
            .expect("write to kubectl");
        drop(stdin);
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("kubectl apply timed out")
            .expect("kubectl apply");
        succeeded(&out, &format!("kubectl apply of\n{manifest}"))
    }

    /// `kubectl weir ARGS` through the real kubectl's plugin mechanism, with the built
    /// `kubectl-weir` first on PATH and the cluster flags after the plugin name, as the README says.
    pub async fn kubectl_weir(&self, args: &[&str]) -> Output {
        let plugin = PathBuf::from(env!("CARGO_BIN_EXE_kubectl-weir"));
        let dir = plugin.parent().expect("plugin directory").to_path_buf();
        let path = std::env::join_paths(std::iter::once(dir).chain(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        )))
        .expect("PATH");
        let mut cmd = Command::new(kubectl_path());
        cmd.arg("weir")
            .args(args)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--namespace")
            .arg(&self.ns)
            .arg("--no-color")
            .env("PATH", path)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        run(cmd, &format!("kubectl weir {args:?}")).await
    }

    /// `kubectl weir ARGS` that must exit 0; returns stdout.
    pub async fn kubectl_weir_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl_weir(args).await;
        succeeded(&out, &format!("kubectl weir {args:?}"))
    }

    /// `weir run` against this cluster as its own process; its Git mirrors live in the
    /// scenario's directory, so that a restarted controller finds them again.
    pub fn weir_run(&self) -> Controller {
        let child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .arg("run")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("gitsync-cache"))
            .arg("--kubectl")
            .arg(kubectl_path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start weir run");
        Controller(child)
    }

    /// A namespaced API of any kind, for reading.
    pub fn api(&self, group: &str, version: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
        let ar =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        Api::namespaced_with(self.client.clone(), &self.ns, &ar)
    }

    /// An object as JSON, or None when it does not exist.
    pub async fn get(&self, api: &Api<DynamicObject>, name: &str) -> Option<Value> {
        let obj = api.get_opt(name).await.ok().flatten()?;
        serde_json::to_value(obj).ok()
    }

    pub fn rollouts(&self) -> Api<DynamicObject> {
        self.api("weir.io", "v1alpha1", "Rollout", "rollouts")
    }

    pub fn services(&self) -> Api<DynamicObject> {
        self.api("", "v1", "Service", "services")
    }

    /// The status of Rollout `web`.
    pub async fn status(&self) -> Value {
        self.get(&self.rollouts(), "web")
            .await
            .map(|r| r["status"].clone())
            .unwrap_or(Value::Null)
    }

    /// Waits until Rollout `web`'s status satisfies `check`, and returns it.
    pub async fn wait_status(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        wait_for(what, WAIT, || async {
            let s = self.status().await;
            check(&s).then_some(s)
        })
        .await
    }

    /// The pod-template hash Service `name` selects.
    pub async fn selected_hash(&self, name: &str) -> Option<String> {
        let svc = self.get(&self.services(), name).await?;
        svc["spec"]["selector"]["weir.io/pod-template-hash"]
            .as_str()
            .map(str::to_owned)
    }

    /// (stable, canary) weights of the first rule of HTTPRoute `web`; a backend without a weight
    /// counts 1, as Gateway API says.
    pub async fn http_route_weights(&self) -> (i64, i64) {
        let routes = self.api("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes");
        let route = self.get(&routes, "web").await.expect("HTTPRoute web");
        let weight_of = |name: &str| {
            route["spec"]["rules"][0]["backendRefs"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|b| b["name"] == name)
                .map(|b| b["weight"].as_i64().unwrap_or(1))
                .unwrap_or(0)
        };
        (weight_of("web-stable"), weight_of("web-canary"))
    }

    /// Reasons of the Events about Rollout `web`, oldest first.
    pub async fn rollout_event_reasons(&self) -> Vec<String> {
        let events = self.api("", "v1", "Event", "events");
        let mut list: Vec<Value> = events
            .list(&ListParams::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter_map(|e| serde_json::to_value(e).ok())
            .filter(|e| {
                e["involvedObject"]["kind"] == "Rollout" && e["involvedObject"]["name"] == "web"
            })
            .collect();
        list.sort_by_key(|e| {
            e["metadata"]["creationTimestamp"]
                .as_str()
                .map(str::to_owned)
        });
        list.iter()
            .flat_map(|e| {
                // An Event repeated through `count` is the same step recorded again.
                let count = e["count"].as_u64().unwrap_or(1).max(1) as usize;
                std::iter::repeat_n(e["reason"].as_str().unwrap_or_default().to_owned(), count)
            })
            .collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if !self.on_emulator() {
            // Best effort: a real cluster keeps nothing of a scenario but a namespace being deleted.
            let _ = std::process::Command::new(kubectl_path())
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args(["delete", "namespace", &self.ns, "--wait=false"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A `weir run` process; SIGKILLed when dropped.
pub struct Controller(Child);

impl Controller {
    /// SIGKILL, as a node loss or an OOM kill would: no chance to finish anything in flight.
    pub async fn kill(mut self) {
        self.0.kill().await.expect("kill weir run");
    }
}

const KUBECTL_HINT: &str = "install kubectl v1.32 (the 'kubectl' package) or set WEIR_KUBECTL";

/// The first stdout line of a process that announces where it listens.
pub async fn announced_line(child: &mut Child, what: &str) -> String {
    use tokio::io::AsyncBufReadExt;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("{what} announced nothing within {WAIT:?}"))
        .expect("read stdout")
        .unwrap_or_else(|| panic!("{what} exited before announcing itself"))
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

async fn run(mut cmd: Command, what: &str) -> Output {
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what} timed out"))
        .unwrap_or_else(|e| panic!("running {what}: {e}; {KUBECTL_HINT}"))
}

#[track_caller]
fn succeeded(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn client(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .unwrap_or_else(|e| panic!("reading kubeconfig {}: {e}", kubeconfig.display()));
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("kubeconfig");
    kube::Client::try_from(config).expect("kube client")
}

/// `weir emulator` on a free port; it writes the kubeconfig (with the port it bound) once it
/// serves, so the file appearing is the signal that it is up.
async fn start_emulator(dir: &Path) -> (PathBuf, Child) {
    let kubeconfig = dir.join("kubeconfig");
    let log = std::fs::File::create(dir.join("emulator.log")).expect("emulator log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["emulator", "--addr", "127.0.0.1:0", "--kubeconfig"])
        .arg(&kubeconfig)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start weir emulator");
    wait_for("weir emulator's kubeconfig", WAIT, || {
        let exited = child.try_wait().ok().flatten();
        let text = std::fs::read_to_string(&kubeconfig).unwrap_or_default();
        async move {
            if let Some(status) = exited {
                let log = std::fs::read_to_string(dir.join("emulator.log")).unwrap_or_default();
                panic!("weir emulator exited with {status}:\n{log}");
            }
            text.contains("current-context").then_some(())
        }
    })
    .await;
    (kubeconfig, child)
}

/// Services `names`, each selecting the app's pods (weir pins them to a revision).
pub fn services(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {n}\nspec:\n  selector:\n    app: web\n  ports:\n  - port: 80\n"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Rollout `web`: four replicas of `image` released with `strategy`.
pub fn rollout(image: &str, strategy: Value) -> String {
    serde_json::json!({
        "apiVersion": "weir.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": image}]}},
            "strategy": strategy}
    })
    .to_string()
}

/// HTTPRoute `web`, all traffic on `web-stable`.
pub const HTTP_ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
spec:
  rules:
  - backendRefs:
    - name: web-stable
      port: 80
      weight: 100
    - name: web-canary
      port: 80
      weight: 0
";
