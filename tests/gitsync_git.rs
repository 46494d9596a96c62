//! The Git layer against real remotes on loopback: `git daemon` for `git://` (fetch and push), and
//! `git http-backend` behind an axum server that checks `Authorization`, for HTTP credentials.

#[path = "support/git_remote.rs"]
mod git_remote;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use git_remote::{Daemon, Fixture, HttpRemote, KEY, run_git};
use support::TempDir;
use weir::gitsync::git::{Author, CommitInfo, Git, GitAuth, GitCli, GitError, GitRefSpec};
use weir::gitsync::render::{
    RenderOptions, plain_tree_files, render, render_files, tree_directory,
};

fn count_objects(mirror: &Path) -> u64 {
    let git_dir = format!("--git-dir={}", mirror.display());
    let out = run_git(mirror, &[&git_dir, "count-objects", "-v"]);
    out.lines()
        .filter_map(|line| line.split_once(": "))
        .filter(|(name, _)| *name == "count" || *name == "in-pack")
        .map(|(_, value)| value.parse::<u64>().unwrap())
        .sum()
}

fn bot() -> Author {
    Author {
        name: "Release Bot".into(),
        email: "bot@example.com".into(),
    }
}

fn main_branch() -> GitRefSpec {
    GitRefSpec::Branch("main".into())
}

#[tokio::test]
async fn the_first_fetch_clones_and_later_fetches_bring_only_new_objects() {
    let fx = Fixture::new("git-fetch");
    let c1 = fx.commit("first", &[("rollout.yaml", "image: v1\n")]);
    let daemon = Daemon::start(&fx.served).await;
    let git = fx.cli();
    let url = daemon.url("apps.git");

    let fetched = git.fetch(KEY, &url, &main_branch(), &GitAuth::None).await;
    assert_eq!(fetched.unwrap(), c1);
    let mirror = git.mirror_path(KEY).unwrap();
    std::fs::write(mirror.join("weir-test-marker"), "kept").unwrap();
    let before = count_objects(&mirror);

    let c2 = fx.commit("second", &[("rollout.yaml", "image: v2\n")]);
    let fetched = git.fetch(KEY, &url, &main_branch(), &GitAuth::None).await;
    assert_eq!(fetched.unwrap(), c2);
    assert!(
        mirror.join("weir-test-marker").exists(),
        "the mirror was made again instead of fetched into"
    );
    // The new commit, its tree and its one blob; nothing fetched twice.
    assert_eq!(count_objects(&mirror) - before, 3);

    let again = git.fetch(KEY, &url, &main_branch(), &GitAuth::None).await;
    assert_eq!(again.unwrap(), c2);
    assert_eq!(count_objects(&mirror) - before, 3);
}

#[tokio::test]
async fn branches_tags_and_commits_resolve_to_full_commit_ids() {
    let fx = Fixture::new("git-refs");
    let c1 = fx.commit("one", &[("app/a.yaml", "a: 1\n")]);
    fx.work_git(&["tag", "v1"]);
    fx.work_git(&["branch", "release/1.0"]);
    let c2 = fx.commit("two", &[("app/a.yaml", "a: 2\n")]);
    fx.work_git(&["tag", "-a", "v2", "-m", "release v2"]);
    let c3 = fx.commit("three", &[("app/a.yaml", "a: 3\n")]);
    fx.work_git(&["push", "-q", "origin", "--tags", "release/1.0"]);
    let daemon = Daemon::start(&fx.served).await;
    let url = daemon.url("apps.git");
    let git = fx.cli();

    let cases = [
        (GitRefSpec::Branch("main".into()), &c3),
        (GitRefSpec::Branch("release/1.0".into()), &c1),
        (GitRefSpec::Tag("v1".into()), &c1),
        (GitRefSpec::Tag("v2".into()), &c2),
        (GitRefSpec::Commit(c2.clone()), &c2),
        (GitRefSpec::Commit(c1[..10].to_owned()), &c1),
        (GitRefSpec::Commit(c2.to_uppercase()), &c2),
        (GitRefSpec::DefaultBranch, &c3),
    ];
    for (index, (git_ref, expected)) in cases.iter().enumerate() {
        // A fresh mirror each time, so every case goes to the remote.
        let key = format!("demo/refs-{index}");
        let resolved = git.fetch(&key, &url, git_ref, &GitAuth::None).await;
        assert_eq!(resolved.unwrap(), **expected, "{git_ref:?}");
    }

    let missing = [
        GitRefSpec::Branch("nope".into()),
        GitRefSpec::Tag("v9".into()),
        GitRefSpec::Commit("0123456789abcdef0123456789abcdef01234567".into()),
        GitRefSpec::Commit("0123456789".into()),
    ];
    for git_ref in missing {
        let error = git.fetch(KEY, &url, &git_ref, &GitAuth::None).await;
        assert!(
            matches!(error, Err(GitError::NotFound { .. })),
            "{git_ref:?}: {error:?}"
        );
    }
    let error = git
        .fetch(
            KEY,
            &daemon.url("missing.git"),
            &main_branch(),
            &GitAuth::None,
        )
        .await;
    assert!(matches!(error, Err(GitError::NotFound { .. })), "{error:?}");
}

#[tokio::test]
async fn hostile_refs_and_urls_are_refused_before_git_runs() {
    let fx = Fixture::new("git-hostile");
    let c1 = fx.commit("one", &[("app/a.yaml", "a: 1\n")]);
    let daemon = Daemon::start(&fx.served).await;
    let url = daemon.url("apps.git");
    let git = fx.cli();
    let marker = fx.dir.path().join("pwned");
    let payload = format!("--upload-pack=touch {}", marker.display());

    let refs = [
        GitRefSpec::Branch(payload.clone()),
        GitRefSpec::Tag(payload.clone()),
        GitRefSpec::Commit(payload.clone()),
        GitRefSpec::Branch("--upload-pack=/usr/bin/false".into()),
        GitRefSpec::Branch("-main".into()),
        GitRefSpec::Branch("main..other".into()),
        GitRefSpec::Branch("ma in".into()),
        GitRefSpec::Branch("main\n".into()),
        GitRefSpec::Branch(String::new()),
        GitRefSpec::Tag("v1^{}".into()),
        GitRefSpec::Commit("HEAD~1".into()),
    ];
    for git_ref in &refs {
        let error = git.fetch(KEY, &url, git_ref, &GitAuth::None).await;
        assert!(
            matches!(error, Err(GitError::InvalidRef { .. })),
            "{git_ref:?}: {error:?}"
        );
    }
    let error = git.push(KEY, &url, &c1, &payload, &GitAuth::None).await;
    assert!(
        matches!(error, Err(GitError::InvalidRef { .. })),
        "{error:?}"
    );

    let urls = [
        payload.clone(),
        format!("-oProxyCommand=touch {}", marker.display()),
        format!("ssh://-oProxyCommand=touch%20{}/apps.git", marker.display()),
        format!("git@-oProxyCommand=touch%20{}:apps.git", marker.display()),
        format!("ext::sh -c touch% {}", marker.display()),
        "ext::sh".to_owned(),
        format!("file://{}", fx.remote.display()),
        fx.remote.display().to_string(),
        "https://alice:pa55w0rd@127.0.0.1/apps.git".to_owned(),
        format!("{url}\n"),
    ];
    for bad in &urls {
        let error = git.fetch(KEY, bad, &main_branch(), &GitAuth::None).await;
        let Err(error @ GitError::InvalidUrl { .. }) = error else {
            panic!("{bad:?} was not refused: {error:?}");
        };
        assert!(!error.to_string().contains("pa55w0rd"), "{error}");
        let error = git.push(KEY, bad, &c1, "main", &GitAuth::None).await;
        assert!(
            matches!(error, Err(GitError::InvalidUrl { .. })),
            "{error:?}"
        );
    }

    assert!(
        !marker.exists(),
        "an option smuggled through a ref or URL ran"
    );
    assert!(
        !fx.cache().exists(),
        "git ran (the cache was created) for input that should have been refused"
    );
}

#[tokio::test]
async fn checkout_writes_the_tree_of_a_commit() {
    let fx = Fixture::new("git-checkout");
    std::fs::create_dir_all(fx.work.join("app")).unwrap();
    std::os::unix::fs::symlink("a.yaml", fx.work.join("app/link")).unwrap();
    let c1 = fx.commit("one", &[("app/a.yaml", "a: 1\n")]);
    let c2 = fx.commit("two", &[("app/b.yaml", "b: 2\n")]);
    let daemon = Daemon::start(&fx.served).await;
    let git = fx.cli();
    let tip = git
        .fetch(KEY, &daemon.url("apps.git"), &main_branch(), &GitAuth::None)
        .await
        .unwrap();
    assert_eq!(tip, c2);

    let first = fx.dir.path().join("checkout-c1");
    git.checkout(KEY, &c1, &first).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(first.join("app/a.yaml")).unwrap(),
        "a: 1\n"
    );
    let link = first.join("app/link");
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("a.yaml"));
    assert!(!first.join("app/b.yaml").exists());
    assert!(!first.join(".git").exists());

    // An existing empty directory is fine too.
    let second = fx.dir.path().join("checkout-c2");
    std::fs::create_dir(&second).unwrap();
    git.checkout(KEY, &c2[..12], &second).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(second.join("app/b.yaml")).unwrap(),
        "b: 2\n"
    );

    let error = git.checkout(KEY, &c1, &first).await;
    assert!(
        matches!(error, Err(GitError::InvalidArgument { .. })),
        "{error:?}"
    );
    let unknown = "0123456789abcdef0123456789abcdef01234567";
    let error = git.checkout(KEY, unknown, &fx.dir.path().join("x")).await;
    assert!(matches!(error, Err(GitError::NotFound { .. })), "{error:?}");
    let error = git
        .checkout("demo/never-fetched", &c1, &fx.dir.path().join("y"))
        .await;
    assert!(matches!(error, Err(GitError::NotFound { .. })), "{error:?}");
}

#[tokio::test]
async fn commits_touching_lists_first_parent_commits_with_every_file_they_changed() {
    let fx = Fixture::new("git-touching");
    let base = fx.commit("base", &[("README.md", "hello\n")]);
    let c1 = fx.commit("rollout v2", &[("app/rollout.yaml", "image: v2\n")]);
    let c2 = fx.commit("other x", &[("other/x.yaml", "x\n")]);
    let c3 = fx.commit(
        "rollout v3 and other y",
        &[("app/rollout.yaml", "image: v3\n"), ("other/y.yaml", "y\n")],
    );
    fx.work_git(&["checkout", "-q", "-b", "feature"]);
    fx.commit("service", &[("app/service.yaml", "port: 80\n")]);
    fx.work_git(&["checkout", "-q", "main"]);
    fx.work_git(&["merge", "-q", "--no-ff", "feature", "-m", "Merge feature"]);
    fx.work_git(&["push", "-q", "origin", "main"]);
    let merge = fx.work_git(&["rev-parse", "HEAD"]);
    let c5 = fx.commit("docs", &[("docs/guide.md", "read me\n")]);
    let daemon = Daemon::start(&fx.served).await;
    let git = fx.cli();
    let tip = git
        .fetch(KEY, &daemon.url("apps.git"), &main_branch(), &GitAuth::None)
        .await
        .unwrap();
    assert_eq!(tip, c5);

    let info = |sha: &str, subject: &str, files: &[&str]| CommitInfo {
        sha: sha.to_owned(),
        subject: subject.to_owned(),
        files: files.iter().map(|f| (*f).to_owned()).collect(),
    };
    let merge_info = info(&merge, "Merge feature", &["app/service.yaml"]);
    let c1_info = info(&c1, "rollout v2", &["app/rollout.yaml"]);
    let c2_info = info(&c2, "other x", &["other/x.yaml"]);
    let c3_info = info(
        &c3,
        "rollout v3 and other y",
        &["app/rollout.yaml", "other/y.yaml"],
    );
    let c5_info = info(&c5, "docs", &["docs/guide.md"]);
    let cases: Vec<(&str, Vec<&str>, Vec<CommitInfo>)> = vec![
        (
            &base,
            vec!["app"],
            vec![merge_info.clone(), c3_info.clone(), c1_info.clone()],
        ),
        (&base, vec!["other/x.yaml"], vec![c2_info.clone()]),
        (
            &base,
            vec!["app/rollout.yaml", "docs"],
            vec![c5_info.clone(), c3_info.clone(), c1_info.clone()],
        ),
        (&c3, vec!["app"], vec![merge_info.clone()]),
        // Pathspec magic is taken literally: no such path.
        (&base, vec![":(exclude)app"], vec![]),
        (&base, vec!["nothing/here"], vec![]),
        (
            &base,
            vec![],
            vec![c5_info, merge_info, c3_info, c2_info, c1_info],
        ),
    ];
    for (from, paths, expected) in cases {
        let paths: Vec<String> = paths.iter().map(|p| (*p).to_owned()).collect();
        let commits = git.commits_touching(KEY, from, &tip, &paths).await.unwrap();
        assert_eq!(commits, expected, "from {from} paths {paths:?}");
    }

    let unknown = "0123456789abcdef0123456789abcdef01234567".to_owned();
    let error = git.commits_touching(KEY, &unknown, &tip, &[]).await;
    assert!(matches!(error, Err(GitError::NotFound { .. })), "{error:?}");
    let error = git
        .commits_touching(KEY, &base, &tip, &["../outside".to_owned()])
        .await;
    assert!(
        matches!(error, Err(GitError::InvalidArgument { .. })),
        "{error:?}"
    );
}

#[tokio::test]
async fn revert_makes_one_commit_that_undoes_the_given_commits() {
    let fx = Fixture::new("git-revert");
    fx.commit(
        "rollout v1",
        &[
            ("app/rollout.yaml", "image: v1\n"),
            ("app/service.yaml", "port: 80\n"),
        ],
    );
    let c2 = fx.commit("rollout v2", &[("app/rollout.yaml", "image: v2\n")]);
    let c3 = fx.commit("service port", &[("app/service.yaml", "port: 8080\n")]);
    let daemon = Daemon::start(&fx.served).await;
    let url = daemon.url("apps.git");
    let git = fx.cli();
    let tip = git
        .fetch(KEY, &url, &main_branch(), &GitAuth::None)
        .await
        .unwrap();
    assert_eq!(tip, c3);

    let message = "Revert rollout v2\n\nAnalysis failed: error rate 7% > 1%.";
    let reverted = git
        .revert(KEY, &tip, std::slice::from_ref(&c2), &bot(), message)
        .await
        .unwrap();
    let identity = fx.mirror_git(
        &git,
        &["log", "-1", "--format=%an|%ae|%cn|%ce|%P", &reverted],
    );
    assert_eq!(
        identity,
        format!("Release Bot|bot@example.com|Release Bot|bot@example.com|{c3}")
    );
    let body = fx.mirror_git(&git, &["log", "-1", "--format=%B", &reverted]);
    assert_eq!(body, message);
    let show = |commit: &str, path: &str| {
        fx.mirror_git(&git, &["cat-file", "-p", &format!("{commit}:{path}")])
    };
    assert_eq!(show(&reverted, "app/rollout.yaml"), "image: v1");
    assert_eq!(show(&reverted, "app/service.yaml"), "port: 8080");

    // Two commits, newest first, in one revert commit.
    let c4 = fx.commit("rollout v3", &[("app/rollout.yaml", "image: v3\n")]);
    let tip = git
        .fetch(KEY, &url, &main_branch(), &GitAuth::None)
        .await
        .unwrap();
    assert_eq!(tip, c4);
    let both = git
        .revert(
            KEY,
            &tip,
            &[c4.clone(), c2.clone()],
            &bot(),
            "Revert v2 and v3",
        )
        .await
        .unwrap();
    assert_eq!(fx.mirror_git(&git, &["rev-parse", &format!("{both}^")]), c4);
    assert_eq!(
        fx.mirror_git(&git, &["rev-list", "--count", &format!("{c4}..{both}")]),
        "1"
    );
    assert_eq!(show(&both, "app/rollout.yaml"), "image: v1");
    assert_eq!(show(&both, "app/service.yaml"), "port: 8080");
    let changed = fx.mirror_git(&git, &["diff", "--name-only", &tip, &both]);
    assert_eq!(changed, "app/rollout.yaml");
}

#[tokio::test]
async fn reverts_that_do_not_apply_conflict_and_reverts_already_made_change_nothing() {
    let fx = Fixture::new("git-conflict");
    fx.commit("rollout v1", &[("app/rollout.yaml", "image: v1\n")]);
    let c2 = fx.commit("rollout v2", &[("app/rollout.yaml", "image: v2\n")]);
    let c3 = fx.commit("rollout v3", &[("app/rollout.yaml", "image: v3\n")]);
    let daemon = Daemon::start(&fx.served).await;
    let git = fx.cli();
    let tip = git
        .fetch(KEY, &daemon.url("apps.git"), &main_branch(), &GitAuth::None)
        .await
        .unwrap();

    // v3 changed the line v2 set, so taking v2 back out does not apply.
    let error = git
        .revert(KEY, &tip, std::slice::from_ref(&c2), &bot(), "Revert v2")
        .await;
    match error {
        Err(GitError::Conflict {
            operation,
            commit,
            files,
        }) => {
            assert_eq!(operation, "revert");
            assert_eq!(commit, c2);
            assert_eq!(files, vec!["app/rollout.yaml".to_owned()]);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }

    let reverted = git
        .revert(KEY, &tip, std::slice::from_ref(&c3), &bot(), "Revert v3")
        .await
        .unwrap();
    let again = git
        .revert(
            KEY,
            &reverted,
            std::slice::from_ref(&c3),
            &bot(),
            "Revert v3",
        )
        .await;
    assert!(
        matches!(again, Err(GitError::NothingToCommit { .. })),
        "{again:?}"
    );

    // Re-applying the revert onto a tip that rewrote the same line conflicts too.
    let c4 = fx.commit("rollout v4", &[("app/rollout.yaml", "image: v4\n")]);
    let error = git.rebase(KEY, &reverted, &c4, &bot()).await;
    assert!(
        matches!(error, Err(GitError::NotFound { .. })),
        "c4 is not fetched yet: {error:?}"
    );
    git.fetch(KEY, &daemon.url("apps.git"), &main_branch(), &GitAuth::None)
        .await
        .unwrap();
    let error = git.rebase(KEY, &reverted, &c4, &bot()).await;
    assert!(
        matches!(
            error,
            Err(GitError::Conflict {
                operation: "cherry-pick",
                ..
            })
        ),
        "{error:?}"
    );
}

/// A ConfigMap manifest named `name`.
fn config_map(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  k: v\n")
}

#[tokio::test]
async fn a_plain_directory_renders_from_the_object_database_as_from_a_checkout() {
    let fx = Fixture::new("git-tree-render");
    // Enough files for the parallel parse; names whose order differs between git's tree order
    // (`a-b` before `a/`) and a path's component order (`a` before `a-b`); files and directories
    // a checkout's walk skips; a symlink outside the rendered directory.
    let mut files: Vec<(String, String)> = (0..70)
        .map(|i| {
            (
                format!("apps/team/cm-{i:02}.yaml"),
                config_map(&format!("cm-{i:02}")),
            )
        })
        .collect();
    files.extend([
        ("apps/a/x.yaml".into(), config_map("in-a")),
        ("apps/a-b/x.yaml".into(), config_map("in-a-b")),
        ("apps/list.json".into(), r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"from-json"}}]}"#.into()),
        ("apps/README.md".into(), "not a manifest\n".into()),
        ("apps/.hidden/skip.yaml".into(), "not: [valid\n".into()),
        ("apps/.skip.yaml".into(), "not: [valid\n".into()),
        ("other/ignored.yaml".into(), config_map("elsewhere")),
    ]);
    std::fs::create_dir_all(fx.work.join("other")).unwrap();
    std::os::unix::fs::symlink("ignored.yaml", fx.work.join("other/link.yaml")).unwrap();
    let plain = fx.commit_owned("plain", &files);
    let daemon = Daemon::start(&fx.served).await;
    let git = fx.cli();
    git.fetch(KEY, &daemon.url("apps.git"), &main_branch(), &GitAuth::None)
        .await
        .unwrap();
    let opts = RenderOptions::new("default", "apps");

    let from_objects = |commit: String, path: &'static str| {
        let git = &git;
        let opts = &opts;
        async move {
            let directory = tree_directory(path).unwrap();
            let listed = git.list_tree(KEY, &commit, &directory).await.unwrap();
            let files = plain_tree_files(&listed, path, opts)?;
            let ids: Vec<String> = files.iter().map(|f| f.id.clone()).collect();
            let blobs = git.read_blobs(KEY, &ids).await.unwrap();
            let files = files.iter().map(|f| f.path.clone()).zip(blobs).collect();
            Some(render_files(files, opts).await.unwrap())
        }
    };
    let checkout = fx.dir.path().join("checkout-plain");
    git.checkout(KEY, &plain, &checkout).await.unwrap();
    for path in ["apps", "./apps/"] {
        let expected = render(&checkout, path, &opts).await.unwrap();
        let rendered = from_objects(plain.clone(), path).await;
        assert_eq!(rendered.as_ref(), Some(&expected), "path {path:?}");
    }
    let rendered = from_objects(plain.clone(), "apps").await.unwrap();
    assert_eq!(rendered.len(), 73);
    assert_eq!(rendered[0].source, "apps/a/x.yaml");
    assert_eq!(rendered[1].source, "apps/a-b/x.yaml");

    // What only a checkout renders (or reports) the same way: not a directory, a symlink, a
    // kustomization, a file over the limit.
    assert_eq!(from_objects(plain.clone(), "apps/a/x.yaml").await, None);
    assert_eq!(from_objects(plain.clone(), "missing").await, None);
    assert_eq!(from_objects(plain.clone(), "other").await, None);
    assert_eq!(from_objects(plain.clone(), "").await, None);
    let kustomized = fx.commit(
        "kustomize",
        &[("apps/a/kustomization.yaml", "resources: [x.yaml]\n")],
    );
    git.fetch(KEY, &daemon.url("apps.git"), &main_branch(), &GitAuth::None)
        .await
        .unwrap();
    assert_eq!(from_objects(kustomized.clone(), "apps").await, None);
    let listed = git.list_tree(KEY, &plain, "apps").await.unwrap();
    let small = RenderOptions {
        max_file_bytes: 10,
        ..RenderOptions::new("default", "apps")
    };
    assert_eq!(plain_tree_files(&listed, "apps", &small), None);
}

#[tokio::test]
async fn push_sends_the_revert_to_the_tracked_branch_or_another() {
    let fx = Fixture::new("git-push");
    fx.commit("rollout v1", &[("app/rollout.yaml", "image: v1\n")]);
    let c2 = fx.commit("rollout v2", &[("app/rollout.yaml", "image: v2\n")]);
    let daemon = Daemon::start(&fx.served).await;
    let url = daemon.url("apps.git");
    let git = fx.cli();
    let tip = git
        .fetch(KEY, &url, &main_branch(), &GitAuth::None)
        .await
        .unwrap();
    let reverted = git
        .revert(KEY, &tip, std::slice::from_ref(&c2), &bot(), "Revert v2")
        .await
        .unwrap();

    git.push(KEY, &url, &reverted, "main", &GitAuth::None)
        .await
        .unwrap();
    assert_eq!(fx.remote_git(&["rev-parse", "refs/heads/main"]), reverted);
    git.push(KEY, &url, &reverted, "weir/reverts", &GitAuth::None)
        .await
        .unwrap();
    assert_eq!(
        fx.remote_git(&["rev-parse", "refs/heads/weir/reverts"]),
        reverted
    );
    // Pushing what the remote already has is fine.
    git.push(KEY, &url, &reverted, "main", &GitAuth::None)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_push_after_the_remote_moved_is_rejected_then_rebased_and_pushed() {
    let fx = Fixture::new("git-nonff");
    fx.commit(
        "rollout v1",
        &[
            ("app/rollout.yaml", "image: v1\n"),
            ("app/hpa.yaml", "max: 3\n"),
        ],
    );
    let c2 = fx.commit("rollout v2", &[("app/rollout.yaml", "image: v2\n")]);
    let daemon = Daemon::start(&fx.served).await;
    let url = daemon.url("apps.git");
    let git = fx.cli();
    let tip = git
        .fetch(KEY, &url, &main_branch(), &GitAuth::None)
        .await
        .unwrap();
    let message = "Revert rollout v2\n\nweir: analysis failed.";
    let reverted = git
        .revert(KEY, &tip, std::slice::from_ref(&c2), &bot(), message)
        .await
        .unwrap();

    // Someone pushes in between.
    let theirs = fx.commit("more replicas", &[("app/hpa.yaml", "max: 5\n")]);
    let error = git.push(KEY, &url, &reverted, "main", &GitAuth::None).await;
    assert!(
        matches!(error, Err(GitError::NonFastForward { ref branch, .. }) if branch == "main"),
        "{error:?}"
    );
    assert_eq!(fx.remote_git(&["rev-parse", "main"]), theirs);

    let new_tip = git
        .fetch(KEY, &url, &main_branch(), &GitAuth::None)
        .await
        .unwrap();
    assert_eq!(new_tip, theirs);
    let rebased = git.rebase(KEY, &reverted, &new_tip, &bot()).await.unwrap();
    git.push(KEY, &url, &rebased, "main", &GitAuth::None)
        .await
        .unwrap();

    assert_eq!(fx.remote_git(&["rev-parse", "main"]), rebased);
    assert_eq!(fx.remote_git(&["rev-parse", "main^"]), theirs);
    assert_eq!(
        fx.remote_git(&["log", "-1", "--format=%B", "main"]),
        message
    );
    assert_eq!(
        fx.remote_git(&["log", "-1", "--format=%an <%ae>", "main"]),
        "Release Bot <bot@example.com>"
    );
    assert_eq!(
        fx.remote_git(&["cat-file", "-p", "main:app/rollout.yaml"]),
        "image: v1"
    );
    assert_eq!(
        fx.remote_git(&["cat-file", "-p", "main:app/hpa.yaml"]),
        "max: 5"
    );

    // A human already reverted the same change: re-applying changes nothing.
    let again = git.rebase(KEY, &reverted, &rebased, &bot()).await;
    assert!(
        matches!(again, Err(GitError::NothingToCommit { .. })),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_credentials_travel_only_in_the_authorization_header() {
    const TOKEN: &str = "tok-s3cret-value";
    const PASSWORD: &str = "pa55word-xyz";
    // base64("alice:pa55word-xyz")
    const BASIC: &str = "YWxpY2U6cGE1NXdvcmQteHl6";
    let fx = Fixture::new("git-http");
    let c1 = fx.commit("one", &[("app/a.yaml", "a: 1\n")]);
    let server = HttpRemote::start(
        &fx.served,
        &[&format!("Bearer {TOKEN}"), &format!("Basic {BASIC}")],
    )
    .await;
    let url = server.url("apps.git");
    let git = fx.cli();

    let good = [
        GitAuth::Token(TOKEN.into()),
        GitAuth::Basic {
            username: "alice".into(),
            password: PASSWORD.into(),
        },
    ];
    for (index, auth) in good.iter().enumerate() {
        let key = format!("demo/good-{index}");
        let fetched = git.fetch(&key, &url, &main_branch(), auth).await;
        assert_eq!(fetched.unwrap(), c1, "{auth:?}");
    }

    let bad = [
        (
            GitAuth::Token("wrong-t0ken-value".into()),
            "wrong-t0ken-value",
        ),
        (
            GitAuth::Basic {
                username: "alice".into(),
                password: "wr0ng-passw0rd".into(),
            },
            "wr0ng-passw0rd",
        ),
        (GitAuth::None, ""),
    ];
    for (index, (auth, secret)) in bad.iter().enumerate() {
        let key = format!("demo/bad-{index}");
        let error = git.fetch(&key, &url, &main_branch(), auth).await;
        let Err(error @ GitError::AuthFailed { .. }) = error else {
            panic!("{auth:?}: expected AuthFailed, got {error:?}");
        };
        let shown = format!("{error} {error:?}");
        assert!(secret.is_empty() || !shown.contains(secret), "{shown}");
    }

    let seen = server.seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    for uri in &seen {
        for secret in [
            TOKEN,
            PASSWORD,
            BASIC,
            "wrong-t0ken-value",
            "wr0ng-passw0rd",
        ] {
            assert!(!uri.contains(secret), "{uri}");
        }
    }
}

#[tokio::test]
async fn a_remote_that_never_answers_times_out() {
    let dir = TempDir::new("git-timeout");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts connections and holds them open without a word.
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let git = GitCli::new(dir.path().join("cache")).with_timeout(Duration::from_secs(1));
    let started = Instant::now();
    let error = git
        .fetch(
            KEY,
            &format!("git://127.0.0.1:{port}/apps.git"),
            &main_branch(),
            &GitAuth::None,
        )
        .await;
    assert!(matches!(error, Err(GitError::Timeout { .. })), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(20));
    silent.abort();
}
