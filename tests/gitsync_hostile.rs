//! GitSync against hostile input, end to end: specs that try to smuggle options into git, and a
//! repository that tries to make weir read outside its checkout or exhaust it. The controller
//! runs against the emulator, with real git remotes on loopback.

#[path = "support/git_remote.rs"]
mod git_remote;
mod support;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::Duration;

use git_remote::{Fixture, HttpRemote, KEY};
use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use support::{Cluster, TempDir, kubectl_path, repo_root, wait_for};
use weir::api::conditions;
use weir::api::gitsync::GitSync;
use weir::gitsync::controller::Settings;
use weir::gitsync::git::{Git, GitAuth, GitError, GitRefSpec};
use weir::gitsync::render::KustomizeCommand;

const NS: &str = "default";
const WAIT: Duration = Duration::from_secs(60);

struct Env {
    c: Cluster,
    fx: Fixture,
    remote: HttpRemote,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Env {
    async fn start(tag: &str) -> Env {
        let c = Cluster::start(tag).await;
        c.kubectl_ok(&["apply", "-f", repo_root().join("crds").to_str().unwrap()])
            .await;
        let fx = Fixture::new(tag);
        let remote = HttpRemote::open(&fx.served).await;
        let settings = Settings {
            cache_dir: fx.dir.path().join("cache"),
            kustomize: KustomizeCommand::Kubectl(kubectl_path()),
        };
        let task = tokio::spawn(weir::gitsync::controller::run(c.client(), settings));
        Env {
            c,
            fx,
            remote,
            task,
        }
    }

    fn url(&self) -> String {
        self.remote.url("apps.git")
    }

    fn gitsyncs(&self) -> Api<GitSync> {
        Api::namespaced(self.c.client(), NS)
    }

    async fn create_gitsync(&self, name: &str, spec: Value) {
        let gs = json!({"apiVersion": "weir.io/v1alpha1", "kind": "GitSync",
                        "metadata": {"name": name, "namespace": NS}, "spec": spec});
        self.gitsyncs()
            .patch(
                name,
                &PatchParams::apply("test").force(),
                &Patch::Apply(&gs),
            )
            .await
            .unwrap_or_else(|e| panic!("create GitSync {name}: {e}"));
    }

    /// Waits until `name` is Ready=False with `reason` and a message containing `expected`;
    /// returns the message.
    async fn refused(&self, name: &str, reason: &str, expected: &str) -> String {
        let what = format!("GitSync {name} Ready=False {reason} with {expected:?}");
        wait_for(&what, WAIT, || async {
            let s = self.gitsyncs().get(name).await.ok()?.status?;
            let c = conditions::find(&s.conditions, "Ready")?;
            (c.status == "False" && c.reason == reason && c.message.contains(expected))
                .then(|| c.message.clone())
        })
        .await
    }

    /// Everything a user can read about the sync and the cluster, as text.
    async fn everything_visible(&self) -> String {
        let gitsyncs = self.gitsyncs().list(&Default::default()).await.unwrap();
        let maps: Api<ConfigMap> = Api::all(self.c.client());
        let events: Api<Event> = Api::all(self.c.client());
        format!(
            "{}\n{}\n{}",
            serde_json::to_string(&gitsyncs.items).unwrap(),
            serde_json::to_string(&maps.list(&Default::default()).await.unwrap().items).unwrap(),
            serde_json::to_string(&events.list(&Default::default()).await.unwrap().items).unwrap(),
        )
    }
}

/// An executable that leaves `marker` behind if anything ever runs it.
fn tripwire(dir: &Path, marker: &Path) -> PathBuf {
    let program = dir.join("pwn");
    std::fs::write(
        &program,
        format!("#!/bin/sh\ntouch '{}'\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    program
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn specs_that_smuggle_options_or_leave_the_repository_are_stalled_before_git_runs() {
    let env = Env::start("hostile-specs").await;
    env.fx.commit("one", &[("apps/web.yaml", "a: 1\n")]);
    let marker = env.fx.dir.path().join("pwned");
    let pwn = tripwire(env.fx.dir.path(), &marker);
    let url = env.url();
    let option = format!("--upload-pack={}", pwn.display());
    let cases = [
        (
            "branch",
            json!({"url": url, "ref": {"branch": option}}),
            "spec.ref:",
        ),
        (
            "tag",
            json!({"url": url, "ref": {"tag": option}}),
            "spec.ref:",
        ),
        (
            "dash-url",
            json!({"url": format!("-oProxyCommand={}", pwn.display())}),
            "spec.url:",
        ),
        (
            "ssh-host",
            json!({"url": format!("ssh://-oProxyCommand={}/apps.git", pwn.display())}),
            "spec.url:",
        ),
        (
            "ext",
            json!({"url": format!("ext::{}", pwn.display())}),
            "spec.url:",
        ),
        (
            "file",
            json!({"url": format!("file://{}", env.fx.remote.display())}),
            "spec.url:",
        ),
        (
            "local",
            json!({"url": env.fx.remote.display().to_string()}),
            "spec.url:",
        ),
        (
            "dotdot",
            json!({"url": url, "ref": {"branch": "main"}, "path": "apps/../../outside"}),
            "spec.path:",
        ),
        (
            "absolute",
            json!({"url": url, "ref": {"branch": "main"}, "path": "/etc"}),
            "spec.path:",
        ),
        (
            "push-branch",
            json!({"url": url, "ref": {"branch": "main"}, "revert": {"pushBranch": option}}),
            "spec.revert.pushBranch:",
        ),
    ];
    for (name, spec, _) in &cases {
        env.create_gitsync(name, spec.clone()).await;
    }
    for (name, _, field) in &cases {
        let message = env.refused(name, "InvalidSpec", field).await;
        assert!(message.starts_with(field), "{name}: {message}");
        let gs = env.gitsyncs().get(name).await.unwrap();
        let conditions = gs.status.unwrap().conditions;
        assert!(conditions::is_true(&conditions, "Stalled"), "{name}");
    }
    assert!(!marker.exists(), "an option smuggled through the spec ran");
    assert!(
        env.remote.seen.lock().unwrap().is_empty(),
        "git reached the remote for a refused spec"
    );
}

/// Commits the human's clone as it is after `change`, with everything but `apps/web.yaml` from
/// the previous case removed first.
fn commit_case(fx: &Fixture, message: &str, change: impl FnOnce(&Path)) -> String {
    let apps = fx.work.join("apps");
    for entry in std::fs::read_dir(&apps).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n != "web.yaml") {
            if path.is_dir() && !path.is_symlink() {
                std::fs::remove_dir_all(&path).unwrap();
            } else {
                std::fs::remove_file(&path).unwrap();
            }
        }
    }
    change(&apps);
    fx.commit(message, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_repository_is_refused_with_a_condition_and_nothing_outside_is_read() {
    let env = Env::start("hostile-repo").await;
    // A valid manifest outside the checkout: if weir ever read it, it would apply it.
    let secret = format!("TOP-SECRET-{}", fastrand::u64(..));
    let outside = TempDir::new("hostile-outside");
    let stolen = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: stolen}}\ndata: {{token: {secret}}}\n"
    );
    std::fs::create_dir_all(outside.path().join("dir")).unwrap();
    std::fs::write(outside.path().join("secret.yaml"), &stolen).unwrap();
    std::fs::write(outside.path().join("dir/secret.yaml"), &stolen).unwrap();
    let outside_file = outside.path().join("secret.yaml");

    let web = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\ndata: {v: good}\n";
    let good = env.fx.commit("good", &[("apps/web.yaml", web)]);
    env.create_gitsync(
        "apps",
        json!({"url": env.url(), "ref": {"branch": "main"}, "path": "apps", "interval": "1s"}),
    )
    .await;
    wait_for("the good revision applied", WAIT, || async {
        let s = env.gitsyncs().get("apps").await.ok()?.status?;
        (s.last_applied_revision.as_deref() == Some(good.as_str())).then_some(())
    })
    .await;

    let huge = format!("# {}\n", "x".repeat(1 << 20));
    let deep = "[".repeat(10_000);
    let absolute = outside_file.display().to_string();
    type Change = Box<dyn FnOnce(&Path)>;
    let cases: Vec<(&str, Change, String)> = vec![
        (
            "symlink to a file outside",
            Box::new({
                let target = outside_file.clone();
                move |apps: &Path| symlink(target, apps.join("secret.yaml")).unwrap()
            }),
            format!("apps/secret.yaml: symlink to {absolute} points outside the repository"),
        ),
        (
            "symlink to a directory outside",
            Box::new({
                let target = outside.path().join("dir");
                move |apps: &Path| symlink(target, apps.join("linked")).unwrap()
            }),
            "apps/linked: symlink to".to_owned(),
        ),
        (
            "relative symlink climbing out",
            Box::new(|apps: &Path| {
                symlink(
                    "../../../../../../../../etc/passwd",
                    apps.join("passwd.yaml"),
                )
                .unwrap()
            }),
            "apps/passwd.yaml: symlink to ../../../../../../../../etc/passwd points outside"
                .to_owned(),
        ),
        (
            "a file over the per-file limit",
            Box::new(move |apps: &Path| std::fs::write(apps.join("huge.yaml"), huge).unwrap()),
            format!(
                "apps/huge.yaml: {} bytes is over the limit of 1048576 bytes per file",
                (1 << 20) + 3
            ),
        ),
        (
            "nesting past the depth limit",
            Box::new(move |apps: &Path| std::fs::write(apps.join("deep.yaml"), deep).unwrap()),
            "apps/deep.yaml:1: nested deeper than 64 levels".to_owned(),
        ),
        (
            "a kustomization reaching out with ..",
            Box::new(|apps: &Path| {
                std::fs::write(
                    apps.join("kustomization.yaml"),
                    "resources:\n- web.yaml\n- ../../secret.yaml\n",
                )
                .unwrap()
            }),
            "apps/kustomization.yaml:3: \"../../secret.yaml\" resolves outside the repository"
                .to_owned(),
        ),
        (
            "a kustomization naming an absolute path",
            Box::new(move |apps: &Path| {
                std::fs::write(
                    apps.join("kustomization.yaml"),
                    format!("resources:\n- {absolute}\n"),
                )
                .unwrap()
            }),
            "apps/kustomization.yaml:2:".to_owned(),
        ),
    ];
    for (what, change, expected) in cases {
        let revision = commit_case(&env.fx, what, change);
        env.refused("apps", "RenderFailed", &expected).await;
        let status = env.gitsyncs().get("apps").await.unwrap().status.unwrap();
        assert_eq!(
            status.last_fetched_revision.as_deref(),
            Some(revision.as_str()),
            "{what}"
        );
        assert_eq!(
            status.last_applied_revision.as_deref(),
            Some(good.as_str()),
            "{what}"
        );
    }

    let maps: Api<ConfigMap> = Api::namespaced(env.c.client(), NS);
    assert!(maps.get_opt("stolen").await.unwrap().is_none());
    let web = maps.get("web").await.unwrap();
    assert_eq!(web.data.unwrap()["v"], "good");
    let visible = env.everything_visible().await;
    assert!(
        !visible.contains(&secret),
        "content from outside the checkout leaked"
    );
    assert!(!visible.contains("root:x:0:0"), "/etc/passwd leaked");
}

/// A wrapper in place of git that records who started it and each argument, then runs git.
fn recording_git(dir: &Path) -> (PathBuf, PathBuf) {
    let log = dir.join("git-calls.log");
    let wrapper = dir.join("git-wrapper");
    let script = format!(
        "#!/bin/sh\n{{ printf 'PARENT=%s\\n' \"$(cat /proc/$PPID/comm)\"; for a in \"$@\"; do printf 'ARG=%s\\n' \"$a\"; done; echo END; }} >> '{}'\nexec git \"$@\"\n",
        log.display()
    );
    std::fs::write(&wrapper, script).unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    (wrapper, log)
}

/// Each recorded call: the parent's name and the arguments.
fn calls(log: &Path) -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut calls = Vec::new();
    let (mut parent, mut args) = (String::new(), Vec::new());
    for line in text.lines() {
        if let Some(p) = line.strip_prefix("PARENT=") {
            parent = p.to_owned();
        } else if let Some(a) = line.strip_prefix("ARG=") {
            args.push(a.to_owned());
        } else if line == "END" {
            calls.push((std::mem::take(&mut parent), std::mem::take(&mut args)));
        }
    }
    calls
}

#[tokio::test]
async fn git_is_started_without_a_shell_and_a_hostile_ref_stays_one_argument() {
    let fx = Fixture::new("hostile-argv");
    let marker = fx.dir.path().join("pwned");
    let pwn = tripwire(fx.dir.path(), &marker);
    fx.commit("one", &[("apps/a.yaml", "a: 1\n")]);
    // A legal branch name that reads as an option once its prefix is gone.
    let branch = format!("x/--upload-pack={}", pwn.display());
    fx.work_git(&["branch", "--", &branch]);
    fx.work_git(&["push", "-q", "origin", &format!("refs/heads/{branch}")]);
    let remote = HttpRemote::open(&fx.served).await;
    let url = remote.url("apps.git");
    let (wrapper, log) = recording_git(fx.dir.path());
    let git = fx.cli().with_program(&wrapper);

    let refused = git
        .fetch(
            KEY,
            &url,
            &GitRefSpec::Branch(format!("--upload-pack={}", pwn.display())),
            &GitAuth::None,
        )
        .await;
    assert!(
        matches!(refused, Err(GitError::InvalidRef { .. })),
        "{refused:?}"
    );
    assert!(calls(&log).is_empty(), "git ran for a refused ref");

    let fetched = git
        .fetch(
            KEY,
            &url,
            &GitRefSpec::Branch(branch.clone()),
            &GitAuth::None,
        )
        .await
        .expect("a legal branch name fetches");
    assert_eq!(fetched.len(), 40);
    assert!(!marker.exists(), "the branch name ran as --upload-pack");

    let calls = calls(&log);
    assert!(!calls.is_empty());
    for (parent, args) in &calls {
        assert!(
            !["sh", "bash", "dash", "zsh"].contains(&parent.as_str()),
            "git was started by {parent}: {args:?}"
        );
        assert!(
            args.iter()
                .all(|a| !a.starts_with("--upload-pack") && !a.starts_with("-oProxy")),
            "{args:?}"
        );
    }
    let fetch = calls
        .iter()
        .map(|(_, args)| args)
        .find(|args| args.iter().any(|a| a == "fetch") && args.iter().any(|a| a.contains(&branch)))
        .expect("a fetch of the branch");
    let url_at = fetch
        .iter()
        .position(|a| *a == url)
        .expect("the URL as one argument");
    assert_eq!(fetch[url_at - 1], "--end-of-options", "{fetch:?}");
    assert!(
        fetch[url_at + 1..]
            .iter()
            .any(|a| a.starts_with(&format!("+refs/heads/{branch}:"))),
        "the branch is one refspec argument: {fetch:?}"
    );
}
