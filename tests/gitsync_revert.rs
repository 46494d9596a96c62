//! The loop weir closes: a release whose analysis fails goes back to stable in traffic, then in Git
//! (one revert commit pushed to a real remote), then in the cluster, and ends Healthy on stable. Also:
//! a controller killed mid-push, a commit that touched another app, and a remote that moved.

#[path = "support/canary_app.rs"]
mod canary_app;
#[path = "support/git_remote.rs"]
mod git_remote;
#[path = "support/prometheus.rs"]
mod prometheus;
#[path = "support/receiver.rs"]
mod receiver;
mod support;

use std::process::Stdio;
use std::time::Duration;

use canary_app::{WEB, error_rate_server};
use git_remote::{Fixture, HttpRemote};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use support::{Cluster, api, apply, kubectl_path, wait_for, weir_run_command};
use weir::api::conditions;
use weir::api::rollout::{GitRevertState, Rollout, RolloutPhase, RolloutStatus};
use weir::gitsync::controller::Settings;
use weir::gitsync::render::KustomizeCommand;

const NS: &str = "default";
const WAIT: Duration = Duration::from_secs(90);

/// The app's files in Git: a Rollout whose analysis judges `version`, its Services and route, the
/// analysis template, and another team's app next to it.
fn app_files(version: &str, template: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "apps/web/rollout.yaml",
            WEB.rollout_yaml(&format!("web:{version}"), version),
        ),
        ("apps/web/services.yaml", WEB.services_yaml()),
        ("apps/web/route.yaml", WEB.route_yaml()),
        ("apps/web/analysis.yaml", template.to_string()),
        (
            "apps/shop/config.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shop\ndata:\n  mode: calm\n"
                .to_string(),
        ),
    ]
}

/// A template reading the error rate from a small JSON endpoint (for the tests about Git, not
/// metrics).
fn web_template(base: &str) -> String {
    canary_app::web_template(base, 2, false)
}

struct World {
    c: Cluster,
    fx: Fixture,
    remote: HttpRemote,
}

impl World {
    async fn new(tag: &str) -> World {
        let c = Cluster::start(tag).await;
        c.install_crds().await;
        let fx = Fixture::new(tag);
        let remote = HttpRemote::open(&fx.served).await;
        World { c, fx, remote }
    }

    async fn gitsync(&self) {
        let gs = json!({"apiVersion": "weir.io/v1alpha1", "kind": "GitSync", "metadata": {"name": "apps", "namespace": NS},
            "spec": {"url": self.remote.url("apps.git"), "ref": {"branch": "main"}, "path": "apps", "interval": "1s", "prune": true,
                     "revert": {"author": {"name": "weir bot", "email": "bot@weir.example"}}}});
        apply(
            &api(&self.c, "weir.io", "v1alpha1", "GitSync", "gitsyncs"),
            gs,
        )
        .await;
    }

    fn settings(&self) -> Settings {
        Settings {
            cache_dir: self.fx.dir.path().join("cache"),
            kustomize: KustomizeCommand::Kubectl(kubectl_path()),
        }
    }

    /// All three controllers in this process.
    fn controllers(&self) -> Vec<tokio::task::JoinHandle<()>> {
        vec![
            tokio::spawn(weir::rollout::controller::run(self.c.client())),
            tokio::spawn(weir::analysis::controller::run(self.c.client())),
            tokio::spawn(weir::gitsync::controller::run(
                self.c.client(),
                self.settings(),
            )),
        ]
    }

    /// `weir run` as a separate process, as it runs in a cluster.
    fn weir_run(&self) -> tokio::process::Child {
        weir_run_command(&self.c.kubeconfig, &self.fx.dir.path().join("cache"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start weir run")
    }

    async fn rollout(&self) -> Option<Rollout> {
        Api::<Rollout>::namespaced(self.c.client(), NS)
            .get_opt("web")
            .await
            .ok()
            .flatten()
    }

    async fn status_where(
        &self,
        what: &str,
        check: impl Fn(&RolloutStatus) -> bool,
    ) -> RolloutStatus {
        wait_for(what, WAIT, || async {
            let s = self.rollout().await?.status?;
            check(&s).then_some(s)
        })
        .await
    }

    /// Waits until the Rollout's revert record is in `state`.
    async fn revert_state(&self, what: &str, state: GitRevertState) -> RolloutStatus {
        self.status_where(what, |s| {
            s.git_revert.as_ref().is_some_and(|r| r.state == state)
        })
        .await
    }

    async fn route_weights(&self) -> Vec<i64> {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
            "httproutes",
        );
        let api: Api<DynamicObject> = Api::namespaced_with(self.c.client(), NS, &ar);
        let route = serde_json::to_value(api.get("web").await.unwrap()).unwrap();
        route["spec"]["rules"][0]["backendRefs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["name"] == "web-canary")
            .map(|r| r["weight"].as_i64().unwrap_or(1))
            .collect()
    }

    fn main_tip(&self) -> String {
        self.fx.remote_git(&["rev-parse", "main"])
    }
}

/// The web app Healthy on `web:good`, synced from the remote and run by in-process controllers,
/// its analysis judged by a local error-rate endpoint.
struct Web {
    world: World,
    template: String,
    controllers: Vec<tokio::task::JoinHandle<()>>,
    _rates: tokio::task::JoinHandle<()>,
}

impl Web {
    async fn healthy(tag: &str) -> Web {
        let (base, rates) = error_rate_server(None).await;
        let world = World::new(tag).await;
        let template = web_template(&base);
        world
            .fx
            .commit_owned("web good", &app_files("good", &template));
        world.gitsync().await;
        let controllers = world.controllers();
        world
            .status_where("web:good Healthy", |s| {
                healthy(s) && s.stable_commit.is_some()
            })
            .await;
        Web {
            world,
            template,
            controllers,
            _rates: rates,
        }
    }
}

fn healthy(s: &RolloutStatus) -> bool {
    s.phase == Some(RolloutPhase::Healthy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_release_is_reverted_in_git_once_even_when_the_controller_dies_mid_push() {
    let (target, _app) = prometheus::two_version_app().await;
    let prom = prometheus::Prometheus::scraping(&target).await;
    prom.wait_for_scrapes().await;
    let world = World::new("revert-loop").await;
    let template = prometheus::error_rate_template(&prom.url(), "5s", "3s");
    let good = world
        .fx
        .commit_owned("web good", &app_files("good", &template));
    world.gitsync().await;
    // The team's webhook hears every rollback of the namespace.
    let team = receiver::Receiver::start().await;
    let providers: Api<DynamicObject> = Api::namespaced_with(
        world.c.client(),
        NS,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("weir.io", "v1alpha1", "AlertProvider"),
            "alertproviders",
        ),
    );
    let provider = json!({"apiVersion": "weir.io/v1alpha1", "kind": "AlertProvider", "metadata": {"name": "team"},
        "spec": {"type": "webhook", "address": team.url("/weir"), "default": true,
                 "events": ["RolledBack", "Aborted", "GitReverted", "GitRevertBlocked"]}});
    providers
        .patch(
            "team",
            &PatchParams::apply("test").force(),
            &Patch::Apply(&provider),
        )
        .await
        .unwrap();
    let mut weir = world.weir_run();
    let stable = world
        .status_where("web:good Healthy", |s| {
            healthy(s) && s.stable_commit.is_some()
        })
        .await;
    let stable_hash = stable.stable_rs.clone().unwrap();
    assert_eq!(stable.stable_commit.as_deref(), Some(good.as_str()));

    // The bad release: its push will reach the remote and hang there while weir is killed.
    world.remote.hold_pushes(true);
    let bad = world
        .fx
        .commit_owned("web bad", &app_files("bad", &template));
    // 1. analysis fails; 2. traffic is back on stable before anything is pushed.
    let aborted = world
        .status_where("the release aborted by failed analysis", |s| {
            s.abort
                && conditions::find(&s.conditions, "Progressing")
                    .is_some_and(|c| c.reason == "AnalysisRunFailed")
        })
        .await;
    let bad_hash = aborted.current_pod_hash.clone().unwrap();
    assert_ne!(bad_hash, stable_hash);
    wait_for("traffic back on stable", WAIT, || async {
        (world.route_weights().await == [0]).then_some(())
    })
    .await;
    let pending = world
        .status_where("the revert recorded before the push", |s| {
            s.git_revert
                .as_ref()
                .is_some_and(|r| r.state == GitRevertState::Pending && r.revert_commit.is_some())
        })
        .await;
    assert_eq!(
        pending.git_revert.unwrap().reverted_commits,
        std::slice::from_ref(&bad)
    );
    wait_for("the push to reach the remote", WAIT, || async {
        (world.remote.push_count() >= 1).then_some(())
    })
    .await;

    // The rollback alert is delivered and recorded first: a kill between the receiver's 2xx and
    // that record is the one documented window in which an alert is sent twice.
    wait_for("the rollback alert recorded as sent", WAIT, || async {
        let p = providers.get("team").await.ok()?;
        let sent = p.data["status"]["sentAlerts"].as_array()?.clone();
        sent.iter()
            .any(|a| a["event"] == "RolledBack")
            .then_some(())
    })
    .await;
    // Killed between abort and push; the push it had in flight fails.
    weir.kill().await.unwrap();
    world.remote.hold_pushes(false);
    assert_eq!(world.main_tip(), bad, "nothing landed while weir was down");

    let mut weir = world.weir_run();
    // 3. exactly one revert commit, naming the bad commit.
    let reverts = wait_for("the revert commit on the remote", WAIT, || async {
        let after = world.fx.commits_after(&bad);
        (!after.is_empty()).then_some(after)
    })
    .await;
    assert_eq!(reverts.len(), 1, "{reverts:?}");
    let (revert_sha, message) = &reverts[0];
    assert!(
        message.contains(&format!("This reverts commit {bad}")),
        "{message}"
    );
    assert!(
        message.contains("web") && message.contains("error-rate"),
        "{message}"
    );
    // 4. the sync applies it; 5. the Rollout is Healthy on the stable hash, with GitReverted.
    let end = world
        .status_where("Healthy on stable after the revert", |s| {
            healthy(s) && s.current_pod_hash.as_deref() == Some(stable_hash.as_str())
        })
        .await;
    let revert = end.git_revert.clone().unwrap();
    assert_eq!(revert.state, GitRevertState::Pushed);
    assert_eq!(revert.revert_commit.as_deref(), Some(revert_sha.as_str()));
    let reverted = conditions::find(&end.conditions, "GitReverted").expect("GitReverted");
    assert_eq!(reverted.status, "True");
    assert!(reverted.message.contains(&bad[..12]) && reverted.message.contains(&revert_sha[..12]));
    let gs: weir::api::GitSync = Api::namespaced(world.c.client(), NS)
        .get("apps")
        .await
        .unwrap();
    assert_eq!(
        gs.status.unwrap().last_applied_revision.as_deref(),
        Some(revert_sha.as_str())
    );
    assert_eq!(world.route_weights().await, [0]);

    // Nothing more is pushed later.
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(world.c.client(), NS);
    let reverted_events = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("GitReverted"))
        .count();
    assert_eq!(reverted_events, 1);
    assert_eq!(world.fx.commits_after(&bad).len(), 1);

    // The alerts: one rollback, one revert, each once although weir restarted in between.
    let alerts: Vec<Value> = team
        .wait_accepted(2, WAIT)
        .await
        .iter()
        .map(receiver::Recorded::json)
        .collect();
    let of =
        |event: &str| -> Vec<&Value> { alerts.iter().filter(|a| a["event"] == event).collect() };
    assert_eq!(of("RolledBack").len(), 1, "{alerts:?}");
    assert_eq!(of("GitReverted").len(), 1, "{alerts:?}");
    let rolled_back = of("RolledBack")[0];
    assert_eq!(rolled_back["analysis"]["metric"], "error-rate");
    assert!(
        rolled_back["analysis"]["value"]
            .as_str()
            .unwrap_or_default()
            .contains("0.5")
    );
    assert_eq!(rolled_back["images"]["canary"], json!(["web=web:bad"]));
    assert_eq!(rolled_back["images"]["stable"], json!(["web=web:good"]));
    assert_eq!(rolled_back["weight"], 50);
    let git = &of("GitReverted")[0]["git"];
    assert_eq!(git["revertCommit"], revert_sha.as_str());
    assert_eq!(git["revertedCommits"], json!([bad]));
    weir.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_commit_that_touched_another_app_is_not_reverted() {
    let Web {
        world,
        template,
        controllers: _controllers,
        _rates,
    } = Web::healthy("revert-blocked").await;

    let mut files = app_files("bad", &template);
    files.push((
        "apps/shop/config.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shop\ndata:\n  mode: busy\n".into(),
    ));
    let bad = world.fx.commit_owned("web bad, and shop busy", &files);
    let blocked = world
        .status_where("GitRevertBlocked", |s| {
            conditions::is_true(&s.conditions, "GitRevertBlocked")
        })
        .await;
    let condition = conditions::find(&blocked.conditions, "GitRevertBlocked").unwrap();
    assert_eq!(condition.reason, "CommitTouchesOtherFiles");
    assert!(
        condition.message.contains("apps/shop/config.yaml"),
        "{}",
        condition.message
    );
    assert_eq!(blocked.git_revert.unwrap().state, GitRevertState::Blocked);
    assert_eq!(world.route_weights().await, [0], "traffic stays on stable");
    assert_eq!(world.main_tip(), bad, "nothing pushed");
    assert_eq!(world.remote.push_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revert_lands_on_top_of_a_remote_that_moved() {
    let Web {
        world,
        template,
        controllers: _controllers,
        _rates,
    } = Web::healthy("revert-moved").await;

    world.remote.hold_pushes(true);
    let bad = world
        .fx
        .commit_owned("web bad", &app_files("bad", &template));
    wait_for("weir's push to reach the remote", WAIT, || async {
        (world.remote.push_count() >= 1).then_some(())
    })
    .await;
    // Someone else pushes while weir's push is in flight.
    let theirs = world.fx.commit(
        "shop: busy",
        &[(
            "apps/shop/config.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shop\ndata:\n  mode: busy\n",
        )],
    );
    world.remote.hold_pushes(false);

    let end = world
        .revert_state("the revert pushed", GitRevertState::Pushed)
        .await;
    let after = world.fx.commits_after(&theirs);
    assert_eq!(
        after.len(),
        1,
        "one revert, on top of their commit: {after:?}"
    );
    assert_eq!(
        end.git_revert.unwrap().revert_commit.as_deref(),
        Some(after[0].0.as_str())
    );
    assert!(after[0].1.contains(&format!("This reverts commit {bad}")));
    // Their change is still there, and the revert undid only web's.
    let shop = world.fx.remote_git(&["show", "main:apps/shop/config.yaml"]);
    assert!(shop.contains("busy"), "{shop}");
    let web = world.fx.remote_git(&["show", "main:apps/web/rollout.yaml"]);
    assert!(web.contains("web:good"), "{web}");
    world
        .status_where("Healthy on stable", |s| {
            healthy(s)
                && s.current_pod_hash == s.stable_rs
                && s.stable_commit.as_deref() != Some(bad.as_str())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_that_is_down_gets_the_revert_once_it_is_back() {
    let Web {
        world,
        template,
        controllers: _controllers,
        _rates,
    } = Web::healthy("revert-down").await;

    world.remote.refuse_pushes(true);
    let bad = world
        .fx
        .commit_owned("web bad", &app_files("bad", &template));
    // The failure is explained on the Rollout, and traffic is already on stable.
    let failing = world
        .status_where("GitReverted=False PushFailed", |s| {
            conditions::find(&s.conditions, "GitReverted")
                .is_some_and(|c| c.status == "False" && c.reason == "PushFailed")
        })
        .await;
    let why = &conditions::find(&failing.conditions, "GitReverted")
        .unwrap()
        .message;
    assert!(why.contains("503") || why.contains("failed"), "{why}");
    assert_eq!(failing.git_revert.unwrap().state, GitRevertState::Pending);
    assert_eq!(world.route_weights().await, [0]);
    // Retried, not given up.
    wait_for("a second push attempt", WAIT, || async {
        (world.remote.push_count() >= 2).then_some(())
    })
    .await;
    assert_eq!(world.main_tip(), bad);

    world.remote.refuse_pushes(false);
    let end = world
        .status_where("the revert pushed once the remote is back", |s| {
            conditions::is_true(&s.conditions, "GitReverted")
        })
        .await;
    let after = world.fx.commits_after(&bad);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(
        end.git_revert.unwrap().revert_commit.as_deref(),
        Some(after[0].0.as_str())
    );
}

/// A crash (or a conflict) between the push and the `Pushed` write, after the sync has already
/// applied the revert: the Rollout is back on stable with its abort cleared, and the record still
/// says `Pending`. weir finds the commit on the remote and records it as pushed, without pushing
/// or announcing it again. A recorded revert commit that never reached the remote is not pushed
/// once the Rollout has left the release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revert_applied_before_its_pushed_state_was_written_is_settled_not_pushed_again() {
    let Web {
        world,
        template,
        controllers,
        _rates,
    } = Web::healthy("revert-settle").await;
    let bad = world
        .fx
        .commit_owned("web bad", &app_files("bad", &template));
    let end = world
        .status_where("reverted and Healthy on stable", |s| {
            healthy(s)
                && s.current_pod_hash == s.stable_rs
                && s.git_revert
                    .as_ref()
                    .is_some_and(|r| r.state == GitRevertState::Pushed)
        })
        .await;
    let revert_sha = end.git_revert.unwrap().revert_commit.unwrap();
    for c in &controllers {
        c.abort();
    }
    let rollouts: Api<Rollout> = Api::namespaced(world.c.client(), NS);
    let set_record = |state: &str, commit: &str| {
        let patch = json!({"status": {"gitRevert": {"state": state, "revertCommit": commit}}});
        let rollouts = rollouts.clone();
        async move {
            rollouts
                .patch_status("web", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("patch the revert record");
        }
    };

    // The Pushed write lost: weir settles it from the remote.
    set_record("Pending", &revert_sha).await;
    let pushes = world.remote.push_count();
    let controllers = world.controllers();
    let settled = world
        .revert_state("the revert settled as pushed", GitRevertState::Pushed)
        .await;
    assert_eq!(
        settled
            .git_revert
            .as_ref()
            .unwrap()
            .revert_commit
            .as_deref(),
        Some(revert_sha.as_str())
    );
    assert!(healthy(&settled));
    assert_eq!(world.remote.push_count(), pushes, "nothing pushed again");
    assert_eq!(world.fx.commits_after(&bad).len(), 1);
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(world.c.client(), NS);
    let reverted_events = || async {
        events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("GitReverted"))
            .map(|e| e.count.unwrap_or(1))
            .sum::<i32>()
    };
    assert_eq!(reverted_events().await, 1, "the GitReverted Event once");

    // A recorded revert commit the remote never got: not pushed, recorded as failed.
    let never_pushed = "0123456789abcdef0123456789abcdef01234567";
    set_record("Pending", never_pushed).await;
    let failed = world
        .revert_state("the unpushed revert given up", GitRevertState::Failed)
        .await;
    let record = failed.git_revert.clone().unwrap();
    assert!(
        record
            .message
            .as_deref()
            .is_some_and(|m| m.contains("not pushed")),
        "{record:?}"
    );
    assert_eq!(world.remote.push_count(), pushes, "nothing pushed");
    assert_eq!(world.fx.commits_after(&bad).len(), 1);
    assert!(healthy(&failed));
    for c in controllers {
        c.abort();
    }
}
