//! The chaos test: 100 Rollouts, applied from Git by one GitSync, release at once — some healthy, some
//! failing their analysis — while `weir run` (a separate process) is SIGKILLed at random moments at least
//! 20 times and the emulator answers 10% of API requests with 409, 500 or 503 and drops every watch now
//! and then. Once the faults stop and everything settles, the test asserts:
//!
//! - **every Rollout ends in the right state**: a healthy release is Healthy on its new revision, with
//!   its commit (or the later revision the sync applied it at) as `stableCommit`, never aborted and
//!   never reverted; a failing release was aborted, reverted in Git (`gitRevert.state: Pushed`, naming
//!   exactly its commit), and is Healthy again on the revision it started from; and no `weir run`
//!   ever panicked;
//! - **no step Event is duplicated**: the Rollout controller names each transition it records
//!   (`RolloutStepCompleted "Step 1/2 completed"`, `TrafficWeightUpdated "… 50% canary …"`,
//!   `RolloutAborted`, `RolloutCompleted "… revision H is stable"`, …) and the revert writer records
//!   `GitReverted`. A duplicate is a second Event with the same reason and message about the same
//!   Rollout while its spec had the same `metadata.generation` (one generation is one release: the
//!   first revision, the new one, and — after a revert — the old one again), or any Event whose
//!   `count` went above 1. The transitions every release must make are also required to be there
//!   once (a lost Event is a bug too);
//! - **no route ever carries canary weight after an abort was recorded**: the test watches every write
//!   to every HTTPRoute and every Rollout in the emulator's store (in-process, so the injected faults
//!   do not touch the observer); from the first Rollout version with `status.abort: true` on, its
//!   route's canary weight is 0 in every version;
//! - **every failing Rollout has exactly one revert commit on the remote** ("This reverts commit
//!   <its commit>." appears once in the remote's history), and **nothing healthy was reverted**.
//!
//! The seeds in [`SEEDS`] run one after the other (about 2 minutes each in the debug build);
//! `WEIR_CHAOS_SEED=<n> cargo test --test chaos` runs just one (a failure prints its seed, in decimal). The seed decides which releases fail, the order of the commits, when weir is killed and
//! when watches are dropped (and seeds the emulator's fault dice); the processes' interleaving is not
//! deterministic, so a seed reproduces the schedule, not every byte.

#[path = "support/canary_app.rs"]
mod canary_app;
#[path = "support/git_remote.rs"]
mod git_remote;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use canary_app::{Canary, error_rate_server, web_template};
use git_remote::{Fixture, HttpRemote};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use support::{Cluster, api, apply, repo_root, wait_for, weir_run_command};
use tokio::io::AsyncBufReadExt;
use weir::emulator::resources::ResourceKey;
use weir::emulator::{EmulatorConfig, FaultConfig, Store};

/// The seeds CI runs.
const SEEDS: [u64; 3] = [0x5eed_0001, 0x5eed_0002, 0x5eed_0003];
/// Rollouts released at once.
const APPS: usize = 100;
/// SIGKILLs per run, at least.
const KILLS: usize = 20;
/// Fraction of API requests answered with an injected error while the chaos lasts.
const ERROR_RATE: f64 = 0.1;
const NS: &str = "default";
/// The longest any phase may take to settle.
const SETTLE: Duration = Duration::from_secs(240);

fn app_name(i: usize) -> String {
    format!("app-{i:02}")
}

/// App `name`'s canary: 50%, then an analysis judging the version; one replica, scaled down at once.
fn canary(name: &str) -> Canary<'_> {
    Canary {
        name,
        container: "app",
        replicas: 1,
        scale_down_delay_seconds: 0,
        full_weight_step: false,
    }
}

/// The Rollout of app `name` at image tag `version`.
fn rollout_yaml(name: &str, version: &str) -> String {
    canary(name).rollout_yaml(&format!("{name}:{version}"), version)
}

/// The Services and the HTTPRoute of app `name`; they do not change between releases.
fn network_yaml(name: &str) -> String {
    let app = canary(name);
    format!("{}---\n{}", app.services_yaml(), app.route_yaml())
}

/// One change the store committed, as the observer saw it.
#[derive(Clone)]
struct Seen {
    rv: u64,
    kind: &'static str,
    object: Arc<Value>,
}

/// Follows the store's change logs of Rollouts, HTTPRoutes and Events in-process, unaffected by the
/// injected faults and the dropped watches.
struct Observer {
    store: Arc<Store>,
    log: Arc<Mutex<ObserverLog>>,
    task: tokio::task::JoinHandle<()>,
}

/// What the observer saw, and where it is in each kind's log.
#[derive(Default)]
struct ObserverLog {
    seen: Vec<Seen>,
    cursors: [u64; 3],
}

const OBSERVED: [(&str, &str, &str); 3] = [
    ("Rollout", "weir.io", "rollouts"),
    ("HTTPRoute", "gateway.networking.k8s.io", "httproutes"),
    ("Event", "", "events"),
];

impl ObserverLog {
    /// Takes in every change committed since the last pull.
    fn pull(&mut self, store: &Store) {
        for (i, (kind, group, plural)) in OBSERVED.iter().enumerate() {
            let events = store
                .events_since(&key(group, plural), self.cursors[i], usize::MAX)
                .unwrap_or_else(|e| panic!("the observer fell behind the {kind} log: {e:?}"));
            for e in events {
                self.cursors[i] = e.rv;
                self.seen.push(Seen {
                    rv: e.rv,
                    kind,
                    object: Arc::clone(&e.object),
                });
            }
        }
    }
}

impl Observer {
    fn start(store: Arc<Store>) -> Observer {
        let log = Arc::new(Mutex::new(ObserverLog::default()));
        let (sink, source) = (Arc::clone(&log), Arc::clone(&store));
        let task = tokio::spawn(async move {
            let mut receivers: Vec<_> = OBSERVED
                .iter()
                .map(|(_, group, plural)| source.subscribe(&key(group, plural)))
                .collect();
            loop {
                sink.lock().unwrap().pull(&source);
                let changed = receivers.iter_mut().map(|r| Box::pin(r.changed()));
                let _ = futures::future::select_all(changed).await;
            }
        });
        Observer { store, log, task }
    }

    /// Everything committed so far, in resourceVersion order: the task may not have woken for the
    /// newest changes yet, so they are pulled here.
    fn snapshot(&self) -> Vec<Seen> {
        let mut log = self.log.lock().unwrap();
        log.pull(&self.store);
        let mut all = log.seen.clone();
        all.sort_by_key(|s| s.rv);
        all
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn key(group: &str, plural: &str) -> ResourceKey {
    ResourceKey {
        group: group.into(),
        plural: plural.into(),
    }
}

/// `weir run` as a separate process that the test SIGKILLs.
struct Weir {
    child: tokio::process::Child,
    starts: usize,
    kubeconfig: std::path::PathBuf,
    cache: std::path::PathBuf,
    logs: std::path::PathBuf,
}

impl Weir {
    async fn start(kubeconfig: &std::path::Path, dir: &std::path::Path) -> Weir {
        let logs = dir.join("weir-logs");
        std::fs::create_dir_all(&logs).unwrap();
        let child = Self::spawn(kubeconfig, &dir.join("cache"), &logs, 0).await;
        Weir {
            child,
            starts: 1,
            kubeconfig: kubeconfig.to_path_buf(),
            cache: dir.join("cache"),
            logs,
        }
    }

    /// Starts `weir run` and waits until its /readyz answers 200.
    async fn spawn(
        kubeconfig: &std::path::Path,
        cache: &std::path::Path,
        logs: &std::path::Path,
        n: usize,
    ) -> tokio::process::Child {
        let stderr = std::fs::File::create(logs.join(format!("weir-{n}.log"))).unwrap();
        let mut cmd = weir_run_command(kubeconfig, cache);
        cmd.arg("--metrics-addr")
            .arg("127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        // Warnings include a reconcile that fails over and over, which a stuck run needs explained.
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        let mut child = cmd.spawn().expect("start weir run");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        // weir prints where it serves /readyz; the rest of its stdout is drained so it never blocks.
        let base = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.strip_prefix("metrics and health on ") {
                    return rest
                        .trim_end_matches("/metrics, /healthz, /readyz")
                        .to_string();
                }
            }
            panic!(
                "weir run ended before serving /readyz; see {}",
                logs.display()
            );
        })
        .await
        .expect("weir run serving /readyz");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let http = reqwest::Client::new();
        wait_for("weir run /readyz", Duration::from_secs(60), || async {
            let r = http.get(format!("{base}/readyz")).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        child
    }

    /// The last `n` lines of the running process's log, for a failure message.
    fn log_tail(&self, n: usize) -> String {
        let path = self.logs.join(format!("weir-{}.log", self.starts - 1));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        // The test's directory goes with the test; the whole log stays for a look afterwards.
        let kept = std::env::temp_dir().join("weir-chaos-last.log");
        if std::fs::write(&kept, &text).is_ok() {
            eprintln!("the running weir's whole log is kept at {}", kept.display());
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// SIGKILLs the running process (which must still be running), reaps it, and starts a new one.
    async fn kill_and_restart(&mut self) {
        if let Some(exit) = self.child.try_wait().expect("poll weir run") {
            panic!(
                "weir run exited on its own with {exit}; see {}",
                self.logs.display()
            );
        }
        self.kill().await;
        self.child = Self::spawn(&self.kubeconfig, &self.cache, &self.logs, self.starts).await;
        self.starts += 1;
    }

    async fn kill(&mut self) {
        self.child.start_kill().expect("SIGKILL weir run");
        self.child.wait().await.expect("reap weir run");
    }

    /// Lines of every run's stderr that report a panic.
    fn panics(&self) -> Vec<String> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&self.logs).unwrap().flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            found.extend(
                text.lines()
                    .filter(|l| l.contains("panicked"))
                    .map(|l| format!("{}: {l}", entry.file_name().to_string_lossy())),
            );
        }
        found
    }
}

/// What one app is released as in the chaos.
struct Release {
    name: String,
    fails: bool,
    /// The commit that changed its Rollout.
    commit: String,
    /// Its first revision's pod-template hash.
    first_hash: String,
}

fn rollout_of(store: &Store, name: &str) -> Option<Value> {
    let rt = store.resource("weir.io", "v1alpha1", "rollouts")?;
    store.get(&rt, NS, name).ok().map(|v| (*v).clone())
}

fn status_str<'a>(ro: &'a Value, field: &str) -> Option<&'a str> {
    ro["status"][field].as_str()
}

/// The canary weight a route carries for app `name` (0 when weir's canary backend is absent).
fn canary_weight(route: &Value, name: &str) -> i64 {
    route["spec"]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["backendRefs"].as_array().into_iter().flatten())
        .filter(|b| b["name"] == format!("{name}-canary").as_str())
        .map(|b| b["weight"].as_i64().unwrap_or(1))
        .max()
        .unwrap_or(0)
}

/// Revert commits on the remote's main: each reverted sha → how many commits revert it.
fn reverts_on_remote(fx: &Fixture) -> BTreeMap<String, usize> {
    let log = fx.remote_git(&["log", "--format=%B%x1e", "main"]);
    let mut counts = BTreeMap::new();
    for message in log.split('\u{1e}') {
        for line in message.lines() {
            if let Some(rest) = line.trim().strip_prefix("This reverts commit ") {
                // "This reverts commit <sha> (<subject>)." or "This reverts commit <sha>."
                let sha = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .trim_end_matches('.')
                    .to_string();
                *counts.entry(sha).or_insert(0) += 1;
            }
        }
    }
    counts
}

/// Whether release `r` has reached the state it must end in.
///
/// A healthy release's `stableCommit` is the revision the GitSync applied its template at: its own
/// commit, or a later one when several commits reached the sync together (`history` is main's
/// first-parent history, newest first).
fn settled(store: &Store, r: &Release, history: &[String]) -> bool {
    let Some(ro) = rollout_of(store, &r.name) else {
        return false;
    };
    let healthy = status_str(&ro, "phase") == Some("Healthy")
        && ro["status"]["observedGeneration"] == ro["metadata"]["generation"];
    if r.fails {
        healthy
            && ro["status"]["gitRevert"]["state"] == "Pushed"
            && status_str(&ro, "stableRS") == Some(r.first_hash.as_str())
            && status_str(&ro, "currentPodHash") == Some(r.first_hash.as_str())
    } else {
        let at = |sha: Option<&str>| history.iter().position(|h| Some(h.as_str()) == sha);
        healthy
            && status_str(&ro, "currentPodHash") == status_str(&ro, "stableRS")
            && at(status_str(&ro, "stableCommit"))
                .is_some_and(|s| at(Some(&r.commit)).is_some_and(|c| s <= c))
    }
}

/// The remote's main, newest first.
fn main_history(fx: &Fixture) -> Vec<String> {
    fx.remote_git(&["rev-list", "--first-parent", "main"])
        .lines()
        .map(str::to_string)
        .collect()
}

/// Prints the seed and how to rerun it when the run panics.
struct SeedReport(u64);

impl Drop for SeedReport {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "chaos run with seed {} failed; rerun it with WEIR_CHAOS_SEED={} cargo test --test chaos",
                self.0, self.0
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_rollouts_survive_kills_faults_and_dropped_watches() {
    let seeds: Vec<u64> = match std::env::var("WEIR_CHAOS_SEED") {
        Ok(s) => vec![s.parse().expect("WEIR_CHAOS_SEED is a number")],
        Err(_) => SEEDS.to_vec(),
    };
    for seed in seeds {
        let _report = SeedReport(seed);
        chaos(seed).await;
    }
}

async fn chaos(seed: u64) {
    let started = Instant::now();
    let mut rng = fastrand::Rng::with_seed(seed);
    let c = Cluster::start_with(
        "chaos",
        EmulatorConfig {
            workload_delay: Duration::from_millis(50),
            watch_history: 1_000_000,
            ..EmulatorConfig::default()
        },
    )
    .await;
    c.install_crds().await;
    let store = Arc::clone(&c.emulator.app.store);
    let observer = Observer::start(Arc::clone(&store));
    let (base, _rates) = error_rate_server(None).await;
    let fx = Fixture::new("chaos");
    let remote = HttpRemote::open(&fx.served).await;

    // Every app's first revision, in one commit.
    let names: Vec<String> = (0..APPS).map(app_name).collect();
    let mut files: Vec<(String, String)> =
        vec![("apps/template.yaml".into(), web_template(&base, 1, false))];
    for name in &names {
        files.push((
            format!("apps/{name}/rollout.yaml"),
            rollout_yaml(name, "v1"),
        ));
        files.push((format!("apps/{name}/network.yaml"), network_yaml(name)));
    }
    let first = fx.commit_owned("100 apps at v1", &files);
    let gs = json!({"apiVersion": "weir.io/v1alpha1", "kind": "GitSync", "metadata": {"name": "apps", "namespace": NS},
        "spec": {"url": remote.url("apps.git"), "ref": {"branch": "main"}, "path": "apps", "interval": "2s", "prune": true,
                 "revert": {"author": {"name": "weir bot", "email": "bot@weir.example"}}}});
    apply(&api(&c, "weir.io", "v1alpha1", "GitSync", "gitsyncs"), gs).await;
    let mut weir = Weir::start(&c.kubeconfig, fx.dir.path()).await;
    let first_hashes: BTreeMap<String, String> =
        wait_for("all 100 apps Healthy at v1", SETTLE, || async {
            let mut hashes = BTreeMap::new();
            for name in &names {
                let ro = rollout_of(&store, name)?;
                (status_str(&ro, "phase") == Some("Healthy")
                    && status_str(&ro, "stableCommit") == Some(first.as_str()))
                .then_some(())?;
                hashes.insert(name.clone(), status_str(&ro, "stableRS")?.to_string());
            }
            Some(hashes)
        })
        .await;
    let setup = started.elapsed();

    // The chaos: faults on, then every app's release as its own commit, in a seeded order, pushed at once.
    *c.emulator.app.faults.write().unwrap() = FaultConfig {
        error_rate: ERROR_RATE,
        error_codes: vec![409, 500, 503],
        never_ready_selector: None,
        seed: Some(seed),
    };
    let mut order: Vec<usize> = (0..APPS).collect();
    rng.shuffle(&mut order);
    // About a third fail; at least one of each kind.
    let failing: BTreeSet<usize> = order
        .iter()
        .copied()
        .enumerate()
        .filter(|(pos, _)| *pos == 0 || (*pos != 1 && rng.u8(..3) == 0))
        .map(|(_, i)| i)
        .collect();
    let mut releases = Vec::new();
    for &i in &order {
        let name = &names[i];
        let fails = failing.contains(&i);
        let version = if fails { "bad" } else { "v2" };
        let path = fx.work.join(format!("apps/{name}/rollout.yaml"));
        std::fs::write(&path, rollout_yaml(name, version)).unwrap();
        fx.work_git(&["add", "-A"]);
        fx.work_git(&["commit", "-q", "-m", &format!("{name}: {version}")]);
        releases.push(Release {
            name: name.clone(),
            fails,
            commit: fx.work_git(&["rev-parse", "HEAD"]),
            first_hash: first_hashes[name].clone(),
        });
    }
    fx.work_git(&["push", "-q", "origin", "HEAD"]);

    // Watches are dropped on their own seeded schedule while weir is killed on another.
    let dropper = {
        let app = Arc::clone(&c.emulator.app);
        let mut rng = fastrand::Rng::with_seed(seed ^ 0xd0d0);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(rng.u64(300..3000))).await;
                app.drop_all_watches();
            }
        })
    };
    let mut kill_delays = Vec::new();
    for _ in 0..KILLS {
        // A random delay is the fault schedule here, not synchronization.
        let delay = rng.u64(200..2500);
        kill_delays.push(delay);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        weir.kill_and_restart().await;
    }
    let chaos_time = started.elapsed() - setup;
    dropper.abort();
    *c.emulator.app.faults.write().unwrap() = FaultConfig::default();

    // Everything settles once the faults stop.
    eprintln!("seed {seed}: setup {setup:?}, {KILLS} kills over {chaos_time:?}; waiting to settle");
    let deadline = Instant::now() + SETTLE;
    loop {
        // A weir that is gone would look like one that stands still.
        if let Some(exit) = weir.child.try_wait().expect("poll weir run") {
            panic!(
                "seed {seed}: weir run exited on its own with {exit} while the releases settled; see {}",
                weir.logs.display()
            );
        }
        let history = main_history(&fx);
        let mut pending: Vec<&Release> = releases
            .iter()
            .filter(|r| !settled(&store, r, &history))
            .collect();
        // Failing releases first: they have more to do.
        pending.sort_by_key(|r| !r.fails);
        let unsettled: Vec<String> = pending
            .into_iter()
            .map(|r| {
                let ro = rollout_of(&store, &r.name).unwrap_or_default();
                format!(
                    "{} fails={} commit={} first={} gen={} status={}",
                    r.name,
                    r.fails,
                    &r.commit[..8],
                    r.first_hash,
                    ro["metadata"]["generation"],
                    ro["status"]
                )
            })
            .collect();
        if unsettled.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let gs = store
                .resource("weir.io", "v1alpha1", "gitsyncs")
                .and_then(|rt| store.get(&rt, NS, "apps").ok())
                .map(|g| g["status"].clone())
                .unwrap_or_default();
            // The story of the first one: each version of its Rollout the observer saw.
            let first_name = unsettled[0]
                .split(' ')
                .next()
                .unwrap_or_default()
                .to_string();
            let story: Vec<String> = observer
                .snapshot()
                .iter()
                .filter(|s| s.kind == "Rollout" && s.object["metadata"]["name"] == first_name.as_str())
                .map(|s| {
                    let o = &s.object;
                    format!(
                        "rv {} gen {} image {} commit {} | phase {} abort {} current {} stable {} stableCommit {} revert {}",
                        s.rv,
                        o["metadata"]["generation"],
                        o["spec"]["template"]["spec"]["containers"][0]["image"],
                        o["metadata"]["annotations"]["weir.io/template-commit"],
                        o["status"]["phase"],
                        o["status"]["abort"],
                        o["status"]["currentPodHash"],
                        o["status"]["stableRS"],
                        o["status"]["stableCommit"],
                        o["status"]["gitRevert"]
                    )
                })
                .collect();
            let runs: Vec<String> = store
                .resource("weir.io", "v1alpha1", "analysisruns")
                .and_then(|rt| {
                    let page = store
                        .list(&rt, &weir::emulator::store::ListOptions::default())
                        .ok()?;
                    Some(
                        page.items
                            .iter()
                            .filter(|r| {
                                r["metadata"]["labels"]["weir.io/rollout"] == first_name.as_str()
                            })
                            .map(|r| format!("{} {}", r["metadata"]["name"], r["status"]))
                            .collect(),
                    )
                })
                .unwrap_or_default();
            eprintln!("AnalysisRuns of {first_name}: {runs:#?}");
            let log = fx.remote_git(&["log", "--format=%H %P %s", "-n", "60", "main"]);
            eprintln!(
                "last lines of the running weir's log:\n{}",
                weir.log_tail(60)
            );
            panic!(
                "seed {seed}: {} releases not settled after {SETTLE:?}:\n{}\nGitSync status: {gs}\n\n{first_name}:\n{}\n\nremote main:\n{log}",
                unsettled.len(),
                unsettled
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n"),
                story.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let settled = started.elapsed() - setup - chaos_time;
    eprintln!("seed {seed}: settled in {settled:?}");
    weir.kill().await;
    let seen = observer.snapshot();

    // weir never panicked.
    let panics = weir.panics();
    assert!(
        panics.is_empty(),
        "seed {seed}: weir panicked:\n{}",
        panics.join("\n")
    );

    // The right state, in detail.
    for r in &releases {
        let ro = rollout_of(&store, &r.name).unwrap();
        let image = ro["spec"]["template"]["spec"]["containers"][0]["image"].as_str();
        if r.fails {
            assert_eq!(
                image,
                Some(format!("{}:v1", r.name).as_str()),
                "seed {seed}: {} reverted in Git",
                r.name
            );
            assert_eq!(
                ro["status"]["gitRevert"]["revertedCommits"],
                json!([r.commit]),
                "seed {seed}: {} reverted exactly its release",
                r.name
            );
        } else {
            assert_eq!(
                image,
                Some(format!("{}:v2", r.name).as_str()),
                "seed {seed}: {}",
                r.name
            );
            assert!(
                ro["status"]["gitRevert"].is_null(),
                "seed {seed}: healthy {} has a revert: {}",
                r.name,
                ro["status"]["gitRevert"]
            );
        }
    }

    // One revert commit per failing release on the remote, none for a healthy one.
    let reverts = reverts_on_remote(&fx);
    for r in &releases {
        let n = reverts.get(&r.commit).copied().unwrap_or(0);
        let want = usize::from(r.fails);
        assert_eq!(
            n, want,
            "seed {seed}: {} (fails: {}) reverted {n} times",
            r.name, r.fails
        );
    }
    let failing_count = releases.iter().filter(|r| r.fails).count();
    assert_eq!(
        reverts.values().sum::<usize>(),
        failing_count,
        "seed {seed}: {reverts:?}"
    );

    // One pass over every change in commit order: the canary weight each route carries, the first
    // recorded abort of each Rollout, the generation each Rollout's spec is at, and each new Event.
    let mut aborted_at: BTreeMap<String, u64> = BTreeMap::new();
    let mut weight_of: BTreeMap<String, i64> = BTreeMap::new();
    let mut generation_of: BTreeMap<String, i64> = BTreeMap::new();
    let mut event_uids: BTreeSet<String> = BTreeSet::new();
    let mut recorded: BTreeMap<(String, i64, String, String), usize> = BTreeMap::new();
    for s in &seen {
        let name = s.object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match s.kind {
            "Rollout" => {
                let generation = s.object["metadata"]["generation"].as_i64().unwrap_or(0);
                generation_of.insert(name.clone(), generation);
                if s.object["status"]["abort"] == true && !aborted_at.contains_key(&name) {
                    // Routes are set before the status is written: at this point they are on stable.
                    let w = weight_of.get(&name).copied().unwrap_or(0);
                    assert_eq!(
                        w, 0,
                        "seed {seed}: route {name} carries canary weight {w} when its abort is recorded at rv {}",
                        s.rv
                    );
                    aborted_at.insert(name, s.rv);
                }
            }
            "HTTPRoute" => {
                let w = canary_weight(&s.object, &name);
                if let Some(abort) = aborted_at.get(&name) {
                    assert_eq!(
                        w, 0,
                        "seed {seed}: route {name} carries canary weight {w} at rv {} after the abort recorded at rv {abort}",
                        s.rv
                    );
                }
                weight_of.insert(name, w);
            }
            "Event" if s.object["involvedObject"]["kind"] == "Rollout" => {
                let count = s.object["count"].as_i64().unwrap_or(1);
                assert!(count <= 1, "seed {seed}: Event {name} counted {count}");
                let uid = s.object["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                // Only creations count; a later change to the same Event is not a new one.
                if !event_uids.insert(uid) {
                    continue;
                }
                let rollout = s.object["involvedObject"]["name"]
                    .as_str()
                    .unwrap_or_default();
                let generation = generation_of.get(rollout).copied().unwrap_or(0);
                *recorded
                    .entry((
                        rollout.to_string(),
                        generation,
                        s.object["reason"].as_str().unwrap_or_default().to_string(),
                        s.object["message"].as_str().unwrap_or_default().to_string(),
                    ))
                    .or_insert(0) += 1;
            }
            _ => {}
        }
    }
    for r in &releases {
        assert_eq!(
            aborted_at.contains_key(&r.name),
            r.fails,
            "seed {seed}: {} (fails: {}) aborted: {}",
            r.name,
            r.fails,
            aborted_at.contains_key(&r.name)
        );
    }

    // Each transition's Event once per release; none counted twice; the expected ones all there.
    let duplicates: Vec<_> = recorded.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicates.is_empty(),
        "seed {seed}: duplicated Events: {duplicates:#?}"
    );
    let reasons_of = |name: &str, reason: &str| -> usize {
        recorded
            .iter()
            .filter(|((n, _, r, _), _)| n == name && r == reason)
            .count()
    };
    for r in &releases {
        if r.fails {
            assert_eq!(
                reasons_of(&r.name, "RolloutAborted"),
                1,
                "seed {seed}: {} RolloutAborted",
                r.name
            );
            assert_eq!(
                reasons_of(&r.name, "GitReverted"),
                1,
                "seed {seed}: {} GitReverted",
                r.name
            );
        } else {
            let completed_v2 = recorded
                .keys()
                .any(|(n, g, reason, _)| n == &r.name && *g >= 2 && reason == "RolloutCompleted");
            assert!(
                completed_v2,
                "seed {seed}: {} has no RolloutCompleted for its release",
                r.name
            );
            assert_eq!(
                reasons_of(&r.name, "RolloutStepCompleted"),
                2,
                "seed {seed}: {} completes its two steps once each",
                r.name
            );
        }
    }

    eprintln!(
        "seed {seed}: {APPS} apps, {failing_count} failing; setup {setup:?}, {KILLS} kills over {chaos_time:?} (delays {kill_delays:?} ms), settled in {settled:?}; {} changes observed; {} pushes",
        seen.len(),
        remote.push_count()
    );
}

/// Found by the chaos test: a 409 that is not AlreadyExists (here an injected Conflict) on creating an
/// Event recorded nothing, and must be an error so the transition is recorded again, not taken for an
/// Event that is already there (the status written next would say it was recorded, and it never
/// would be).
#[tokio::test]
async fn a_conflict_creating_an_event_is_an_error_and_an_existing_event_is_not() {
    use k8s_openapi::api::core::v1::{Event, ObjectReference};
    use weir::events::{NewEvent, Reporter, record};
    let c = Cluster::start("chaos-event").await;
    let reporter = Reporter {
        field_manager: "weir-test",
        controller: "weir.io/test",
    };
    let involved = ObjectReference {
        kind: Some("ConfigMap".into()),
        name: Some("web".into()),
        namespace: Some(NS.into()),
        ..Default::default()
    };
    let event = || NewEvent {
        name: "web.step-1".into(),
        reason: "RolloutStepCompleted",
        message: "Step 1/2 completed",
        warning: false,
    };
    let now = jiff::Timestamp::now();
    *c.emulator.app.faults.write().unwrap() = FaultConfig {
        error_rate: 1.0,
        error_codes: vec![409],
        ..FaultConfig::default()
    };
    let refused = record(&c.client(), reporter, involved.clone(), event(), now).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "Conflict"),
        "{refused:?}"
    );
    *c.emulator.app.faults.write().unwrap() = FaultConfig::default();
    let events: Api<Event> = Api::namespaced(c.client(), NS);
    assert!(events.get_opt("web.step-1").await.unwrap().is_none());
    record(&c.client(), reporter, involved.clone(), event(), now)
        .await
        .expect("recorded");
    // Recording it again (a restart that makes the same transition) finds it there: no error, one Event.
    record(&c.client(), reporter, involved, event(), now)
        .await
        .expect("already recorded counts as recorded");
    let all = events.list(&Default::default()).await.unwrap().items;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].count, Some(1));
}

/// Found by the chaos test: with 10% of requests failing, a sync of 300 objects that stopped at the
/// first API error never got past the first few dozen, pass after pass. An error on one object now
/// leaves the others applied in the same pass, and the sync still fails with the first error.
#[tokio::test]
async fn an_api_error_on_one_object_does_not_stop_the_sync_of_the_others() {
    use weir::gitsync::apply::{Applier, ApplyError};
    use weir::gitsync::ownership::RolloutOwned;
    use weir::gitsync::render::RenderedObject;
    let c = Cluster::start("chaos-apply").await;
    let object = |name: &str, line: usize| RenderedObject {
        object: json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": NS}, "data": {"k": "v"}}),
        source: "apps/config.yaml".into(),
        line,
    };
    // The first name is not a valid object name: the API refuses it with 422, every time.
    let objects = [
        object("Not_Valid", 1),
        object("second", 5),
        object("third", 9),
    ];
    let applier = Applier::new(c.client());
    let err = applier
        .apply(&objects, &RolloutOwned::default(), "rev1")
        .await
        .expect_err("the refused object fails the sync");
    match &err {
        ApplyError::Api { action, .. } => {
            assert!(action.contains("apps/config.yaml#L1"), "{action}")
        }
        other => panic!("{other:?}"),
    }
    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(c.client(), NS);
    for name in ["second", "third"] {
        assert!(
            config_maps.get_opt(name).await.unwrap().is_some(),
            "{name} applied despite the error before it"
        );
    }
}

/// Found by the chaos test: an analysis controller whose status write met a 409 took the verdict as
/// written and waited for a change; an injected Conflict left the run Pending for good and its
/// Rollout stuck on the analysis step. The verdict is now measured and written again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analysis_verdict_refused_with_a_conflict_is_written_again() {
    let c = Cluster::start("chaos-analysis").await;
    c.kubectl_ok(&["apply", "-f", repo_root().join("crds").to_str().unwrap()])
        .await;
    let (base, _rates) = error_rate_server(None).await;
    let runs: Api<weir::api::analysis::AnalysisRun> = Api::namespaced(c.client(), NS);
    let run = json!({"apiVersion": "weir.io/v1alpha1", "kind": "AnalysisRun", "metadata": {"name": "web-1"},
        "spec": {"metrics": [{"name": "error-rate", "count": 1, "interval": "1s", "successCondition": "result < 0.05",
                              "provider": {"web": {"url": format!("{base}/rate/v2"), "jsonPath": "{$.errorRate}"}}}]}});
    runs.patch(
        "web-1",
        &PatchParams::apply("test").force(),
        &Patch::Apply(&run),
    )
    .await
    .expect("create AnalysisRun");
    *c.emulator.app.faults.write().unwrap() = FaultConfig {
        error_rate: 1.0,
        error_codes: vec![409],
        ..FaultConfig::default()
    };
    let controller = tokio::spawn(weir::analysis::controller::run(c.client()));
    let app = Arc::clone(&c.emulator.app);
    wait_for("a refused status write", Duration::from_secs(60), || {
        let stats = app.stats_json();
        async move {
            stats["requestsByResource"]
                .as_array()?
                .iter()
                .any(|r| r["resource"] == "analysisruns/status" && r["verb"] == "update")
                .then_some(())
        }
    })
    .await;
    *c.emulator.app.faults.write().unwrap() = FaultConfig::default();
    wait_for("the verdict stored", Duration::from_secs(30), || async {
        let run = runs.get("web-1").await.ok()?;
        let phase = serde_json::to_value(run.status?.phase).ok()?;
        (phase == "Successful").then_some(())
    })
    .await;
    controller.abort();
}
