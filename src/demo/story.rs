//! What the demo does and says: the repository it commits to, the chat receiver, the narration of
//! what weir does, and the three releases.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::extract::State;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use weir::api::analysis::AnalysisRun;
use weir::api::gitsync::GitSync;
use weir::api::rollout::{GitRevertState, Rollout, RolloutPhase};

/// Namespace of the demo app.
pub const NS: &str = "default";
/// Time limit of each act.
const ACT: Duration = Duration::from_secs(180);

/// Prints timestamped lines.
#[derive(Clone)]
pub struct Narrator {
    started: Instant,
}

impl Narrator {
    pub fn new(started: Instant) -> Narrator {
        Narrator { started }
    }

    pub fn line(&self, text: impl AsRef<str>) {
        let t = self.started.elapsed().as_secs_f64();
        for (i, l) in text.as_ref().lines().enumerate() {
            if i == 0 {
                println!("[{t:6.1}s] {l}");
            } else {
                println!("          {l}");
            }
        }
    }
}

/// Where analysis gets its numbers.
#[derive(Clone, Debug)]
pub enum Metrics {
    /// A Prometheus server at this URL.
    Prometheus(String),
    /// The app's `/stats` JSON, through the web provider.
    Web,
}

/// The alerts the receiver got, as JSON.
pub type Alerts = Arc<Mutex<Vec<Value>>>;

async fn receive(State((alerts, say)): State<(Alerts, Narrator)>, body: String) -> &'static str {
    if let Ok(alert) = serde_json::from_str::<Value>(&body) {
        let title = alert["title"].as_str().unwrap_or_default();
        let summary = alert["summary"].as_str().unwrap_or_default();
        let steps: Vec<String> = alert["nextSteps"]
            .as_array()
            .map(|s| {
                s.iter()
                    .filter_map(|c| c["command"].as_str().map(|c| format!("  $ {c}")))
                    .collect()
            })
            .unwrap_or_default();
        say.line(format!(
            "chat alert: {title}\n{summary}\n{}",
            steps.join("\n")
        ));
        if let Ok(mut all) = alerts.lock() {
            all.push(alert);
        }
    }
    "ok"
}

/// A local webhook receiver that prints each alert.
pub async fn chat_receiver(say: Narrator) -> anyhow::Result<(String, Alerts)> {
    let alerts: Alerts = Arc::default();
    let router = axum::Router::new()
        .route("/alerts", axum::routing::post(receive))
        .with_state((alerts.clone(), say));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/alerts", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok((url, alerts))
}

/// The demo's Git repository: bare, served by `git daemon`, and a clone a "person" commits from.
pub struct Repo {
    /// Directory `git daemon` serves.
    pub served: PathBuf,
    /// The person's clone.
    pub work: PathBuf,
    remote: PathBuf,
    home: PathBuf,
}

impl Repo {
    async fn git(&self, dir: &Path, args: &[&str]) -> anyhow::Result<String> {
        let out = tokio::process::Command::new("git")
            .current_dir(dir)
            .args(args)
            .env("HOME", &self.home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "Dana Developer")
            .env("GIT_AUTHOR_EMAIL", "dana@example.com")
            .env("GIT_COMMITTER_NAME", "Dana Developer")
            .env("GIT_COMMITTER_EMAIL", "dana@example.com")
            .output()
            .await
            .context("running git")?;
        if !out.status.success() {
            bail!(
                "git {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The `git-daemon` program, which the demo starts itself rather than through `git daemon`:
    /// that runs it as a child and waits, and killing `git` would leave the daemon serving on.
    pub async fn daemon_program(&self) -> anyhow::Result<PathBuf> {
        let exec_path = self.git(&self.served, &["--exec-path"]).await?;
        Ok(PathBuf::from(exec_path).join("git-daemon"))
    }

    /// A bare `apps.git` and a clone of it under `workdir`.
    pub async fn create(workdir: &Path) -> anyhow::Result<Repo> {
        let served = workdir.join("git");
        let work = workdir.join("work");
        let home = workdir.join("home");
        for d in [&served, &work, &home] {
            std::fs::create_dir_all(d)?;
        }
        let repo = Repo {
            remote: served.join("apps.git"),
            served,
            work,
            home,
        };
        repo.git(
            &repo.served,
            &["init", "-q", "--bare", "-b", "main", "apps.git"],
        )
        .await?;
        repo.git(&repo.work, &["init", "-q", "-b", "main"]).await?;
        let remote = repo.remote.to_string_lossy().to_string();
        repo.git(&repo.work, &["remote", "add", "origin", &remote])
            .await?;
        Ok(repo)
    }

    /// Writes `files`, commits and pushes; returns the commit.
    pub async fn commit(
        &self,
        message: &str,
        files: &[(String, String)],
    ) -> anyhow::Result<String> {
        // weir may have pushed a revert since: start from the remote's main.
        if self
            .git(&self.work, &["fetch", "-q", "origin"])
            .await
            .is_ok()
        {
            let _ = self
                .git(&self.work, &["reset", "-q", "--hard", "origin/main"])
                .await;
        }
        for (path, content) in files {
            let path = self.work.join(path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, content)?;
        }
        self.git(&self.work, &["add", "-A"]).await?;
        self.git(&self.work, &["commit", "-q", "-m", message])
            .await?;
        self.git(&self.work, &["push", "-q", "origin", "HEAD:main"])
            .await?;
        self.git(&self.work, &["rev-parse", "HEAD"]).await
    }

    /// Commits on the remote's main after `base`, oldest first: (sha, message).
    pub async fn after(&self, base: &str) -> anyhow::Result<Vec<(String, String)>> {
        let git_dir = format!("--git-dir={}", self.remote.display());
        let log = self
            .git(
                &self.served,
                &[
                    &git_dir,
                    "log",
                    "--reverse",
                    "--format=%H%x1f%B%x1e",
                    &format!("{base}..main"),
                ],
            )
            .await?;
        Ok(log
            .split('\u{1e}')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .filter_map(|e| e.split_once('\u{1f}'))
            .map(|(s, m)| (s.to_string(), m.trim().to_string()))
            .collect())
    }
}

/// Everything the story needs.
pub struct World {
    pub client: Client,
    pub repo: Repo,
    pub url: String,
    pub metrics: Metrics,
    pub apps: Vec<(String, String)>,
    pub receiver_url: String,
    pub alerts: Alerts,
    pub say: Narrator,
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(10)]
}

impl World {
    fn files(&self, version: &str) -> Vec<(String, String)> {
        let stats = self
            .apps
            .iter()
            .find(|(v, _)| v == version)
            .map(|(_, a)| format!("http://{a}/stats"))
            .unwrap_or_default();
        let (args, template) = match &self.metrics {
            Metrics::Prometheus(address) => (
                format!("          - name: version\n            value: \"{version}\"\n"),
                format!(
                    r#"apiVersion: weir.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: health
spec:
  args:
  - name: version
  metrics:
  - name: error-rate
    interval: 2s
    count: 3
    initialDelay: 4s
    inconclusiveLimit: 2
    successCondition: "result[0] < 0.05"
    provider:
      prometheus:
        address: {address}
        query: '(sum(rate(http_requests_total{{version="{{{{args.version}}}}",code=~"5.."}}[10s])) or vector(0)) / sum(rate(http_requests_total{{version="{{{{args.version}}}}"}}[10s]))'
  - name: p99-latency
    interval: 2s
    count: 3
    initialDelay: 4s
    inconclusiveLimit: 2
    successCondition: "result[0] < 0.25"
    provider:
      prometheus:
        address: {address}
        query: 'histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{{version="{{{{args.version}}}}"}}[10s])))'
"#
                ),
            ),
            Metrics::Web => (
                format!(
                    "          - name: version\n            value: \"{version}\"\n          - name: statsUrl\n            value: \"{stats}\"\n"
                ),
                r#"apiVersion: weir.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: health
spec:
  args:
  - name: version
  - name: statsUrl
  metrics:
  - name: error-rate
    interval: 2s
    count: 3
    initialDelay: 3s
    inconclusiveLimit: 2
    successCondition: "result < 0.05"
    provider:
      web:
        url: "{{args.statsUrl}}"
        jsonPath: "{$.errorRate}"
"#
                .to_string(),
            ),
        };
        let rollout = format!(
            r#"apiVersion: weir.io/v1alpha1
kind: Rollout
metadata:
  name: web
spec:
  replicas: 4
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: example.com/web:{version}
  strategy:
    canary:
      stableService: web-stable
      canaryService: web-canary
      scaleDownDelaySeconds: 2
      abortScaleDownDelaySeconds: 2
      trafficRouting:
        gatewayAPI:
          httpRoutes:
          - name: web
      steps:
      - setWeight: 25
      - analysis:
          templates:
          - templateName: health
          args:
{args}      - setWeight: 75
      - pause: {{duration: 2s}}
"#
        );
        let services = ["web-stable", "web-canary"]
            .map(|n| format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {n}\nspec:\n  selector:\n    app: web\n  ports:\n  - port: 80\n"))
            .join("---\n");
        let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: web\nspec:\n  rules:\n  - backendRefs:\n    - name: web-stable\n      port: 80\n      weight: 100\n    - name: web-canary\n      port: 80\n      weight: 0\n".to_string();
        let alerts = format!(
            "apiVersion: weir.io/v1alpha1\nkind: AlertProvider\nmetadata:\n  name: team-chat\nspec:\n  type: webhook\n  address: {}\n  default: true\n  events: [RolledBack, GitReverted, GitRevertBlocked, Completed]\n",
            self.receiver_url
        );
        vec![
            ("apps/web/rollout.yaml".into(), rollout),
            ("apps/web/services.yaml".into(), services),
            ("apps/web/route.yaml".into(), route),
            ("apps/web/analysis.yaml".into(), template),
            ("apps/web/alerts.yaml".into(), alerts),
        ]
    }

    async fn rollout(&self) -> Option<Rollout> {
        Api::<Rollout>::namespaced(self.client.clone(), NS)
            .get_opt("web")
            .await
            .ok()
            .flatten()
    }

    async fn image(&self) -> Option<String> {
        let ro = self.rollout().await?;
        ro.spec.template.spec?.containers.first()?.image.clone()
    }

    async fn until<F, Fut>(&self, what: &str, mut check: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + ACT;
        while !check().await {
            if Instant::now() > deadline {
                bail!("{what} did not happen within {ACT:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    async fn stable_on(&self, commit: &str) -> bool {
        self.rollout()
            .await
            .and_then(|r| r.status)
            .is_some_and(|s| {
                s.phase == Some(RolloutPhase::Healthy) && s.stable_commit.as_deref() == Some(commit)
            })
    }

    /// The three acts.
    pub async fn tell(&self) -> anyhow::Result<()> {
        let narration = tokio::spawn(narrate(self.client.clone(), self.say.clone()));
        let result = self.acts().await;
        narration.abort();
        result
    }

    async fn acts(&self) -> anyhow::Result<()> {
        self.say
            .line("act 1: commit web 1.0 and point a GitSync at the repository");
        let c1 = self.repo.commit("web 1.0", &self.files("1.0")).await?;
        let gs = json!({"apiVersion": "weir.io/v1alpha1", "kind": "GitSync", "metadata": {"name": "apps", "namespace": NS},
            "spec": {"url": self.url, "ref": {"branch": "main"}, "path": "apps", "interval": "2s", "prune": true,
                     "revert": {"author": {"name": "weir", "email": "weir@demo.local"}}}});
        Api::<GitSync>::namespaced(self.client.clone(), NS)
            .patch(
                "apps",
                &PatchParams::apply("weir-demo").force(),
                &Patch::Apply(&gs),
            )
            .await
            .context("creating the GitSync")?;
        self.until("web 1.0 Healthy", || self.stable_on(&c1))
            .await?;

        self.say
            .line("act 2: commit web 2.0, a good release: canary 25%, analysis, 75%, then 100%");
        let c2 = self.repo.commit("web 2.0", &self.files("2.0")).await?;
        self.until("web 2.0 promoted to 100%", || self.stable_on(&c2))
            .await?;

        self.say
            .line("act 3: commit web 3.0, a bad release that fails half its requests");
        let c3 = self.repo.commit("web 3.0", &self.files("3.0")).await?;
        self.until("the revert of web 3.0 pushed", || async {
            self.rollout()
                .await
                .and_then(|r| r.status?.git_revert)
                .is_some_and(|g| g.state == GitRevertState::Pushed)
        })
        .await?;
        let reverts = self.repo.after(&c3).await?;
        let [(revert, message)] = reverts.as_slice() else {
            bail!("expected exactly one revert commit after web 3.0, found {reverts:?}");
        };
        if !message.contains(&c3) {
            bail!("the revert commit does not name {c3}: {message}");
        }
        self.say.line(format!(
            "git: weir pushed revert commit {}:\n{message}",
            short(revert)
        ));
        self.until("web back on 2.0, Healthy", || async {
            self.stable_on(revert).await && self.image().await.is_some_and(|i| i.ends_with(":2.0"))
        })
        .await?;
        self.until("the rollback and revert alerts", || async {
            let alerts = self.alerts.lock().map(|a| a.clone()).unwrap_or_default();
            let seen: BTreeSet<String> = alerts
                .iter()
                .filter_map(|a| a["event"].as_str().map(str::to_string))
                .collect();
            seen.contains("RolledBack") && seen.contains("GitReverted")
        })
        .await?;
        self.say.line(format!(
            "done: Git ({}), the cluster (web 2.0) and traffic (100% stable) agree again",
            short(revert)
        ));
        Ok(())
    }
}

/// Prints what changes: the Rollout's phase and weights, each analysis measurement, each sync.
async fn narrate(client: Client, say: Narrator) {
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), NS);
    let runs: Api<AnalysisRun> = Api::namespaced(client.clone(), NS);
    let syncs: Api<GitSync> = Api::namespaced(client.clone(), NS);
    let mut last_phase = String::new();
    let mut last_weight = None;
    let mut last_sync = None;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        if let Ok(Some(ro)) = rollouts.get_opt("web").await
            && let Some(s) = ro.status
        {
            let phase = format!(
                "{} — {}",
                s.phase.map(|p| p.as_str()).unwrap_or("-"),
                s.message.unwrap_or_default()
            );
            if phase != last_phase {
                say.line(format!("rollout: {phase}"));
                last_phase = phase;
            }
            let weight = s.weights.map(|w| w.canary);
            if weight != last_weight {
                if let Some(w) = weight {
                    say.line(format!("traffic: {w}% canary, {}% stable", 100 - w));
                }
                last_weight = weight;
            }
        }
        if let Ok(list) = runs.list(&Default::default()).await {
            for run in list.items {
                let name = run.metadata.name.clone().unwrap_or_default();
                let Some(status) = run.status else { continue };
                for m in status.metric_results {
                    let key = format!("{name}/{}", m.name);
                    let shown = seen.entry(key).or_default();
                    for meas in m.measurements.iter().skip(*shown) {
                        say.line(format!(
                            "analysis {}: {} = {} ({:?})",
                            name,
                            m.name,
                            meas.value.as_deref().unwrap_or("-"),
                            meas.phase
                        ));
                    }
                    *shown = (*shown).max(m.measurements.len());
                }
            }
        }
        if let Ok(Some(gs)) = syncs.get_opt("apps").await {
            let applied = gs.status.and_then(|s| s.last_applied_revision);
            if applied != last_sync {
                if let Some(rev) = &applied {
                    say.line(format!("gitsync: applied main@{}", short(rev)));
                }
                last_sync = applied;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
