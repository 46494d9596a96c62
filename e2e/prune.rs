//! Prune: two GitSyncs apply two directories of one repository served by `git daemon`. When a
//! manifest leaves Git, the GitSync with `prune: true` deletes its object; the one with
//! `prune: false` leaves it in the cluster.

use crate::git_remote::{Daemon, Fixture};
use crate::harness::{Env, WAIT};
use crate::support::wait_for;

fn config_map(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  owner: git\n")
}

fn git_sync(name: &str, url: &str, path: &str, prune: bool) -> String {
    format!(
        "apiVersion: weir.io/v1alpha1\nkind: GitSync\nmetadata:\n  name: {name}\nspec:\n  url: {url}\n  ref: {{branch: main}}\n  path: {path}\n  interval: 1s\n  prune: {prune}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune() {
    let env = Env::start("prune").await;
    let fx = Fixture::new("e2e-prune");
    let daemon = Daemon::start(&fx.served).await;
    let _weir = env.weir_run();
    let (pa, pb, ka, kb) = (
        config_map("pruned-a"),
        config_map("pruned-b"),
        config_map("kept-a"),
        config_map("kept-b"),
    );
    let first = fx.commit(
        "four config maps",
        &[
            ("pruned/a.yaml", &pa),
            ("pruned/b.yaml", &pb),
            ("kept/a.yaml", &ka),
            ("kept/b.yaml", &kb),
        ],
    );
    let url = daemon.url("apps.git");
    env.apply(&git_sync("pruning", &url, "pruned", true)).await;
    env.apply(&git_sync("keeping", &url, "kept", false)).await;
    let syncs = env.api("weir.io", "v1alpha1", "GitSync", "gitsyncs");
    let applied = |revision: String| {
        let syncs = syncs.clone();
        let env = &env;
        async move {
            for name in ["pruning", "keeping"] {
                let gs = env.get(&syncs, name).await?;
                if gs["status"]["lastAppliedRevision"] != revision.as_str() {
                    return None;
                }
            }
            Some(())
        }
    };
    wait_for("both GitSyncs applied the first commit", WAIT, || {
        applied(first.clone())
    })
    .await;
    let maps = env.api("", "v1", "ConfigMap", "configmaps");
    for name in ["pruned-a", "pruned-b", "kept-a", "kept-b"] {
        let cm = env.get(&maps, name).await;
        assert!(cm.is_some(), "{name} applied from Git");
    }

    fx.work_git(&["rm", "-q", "pruned/b.yaml", "kept/b.yaml"]);
    fx.work_git(&["commit", "-q", "-m", "drop the b config maps"]);
    fx.work_git(&["push", "-q", "origin", "HEAD"]);
    let second = fx.work_git(&["rev-parse", "HEAD"]);
    wait_for("both GitSyncs applied the second commit", WAIT, || {
        applied(second.clone())
    })
    .await;
    wait_for("pruned-b deleted", WAIT, || async {
        env.get(&maps, "pruned-b").await.is_none().then_some(())
    })
    .await;
    assert!(env.get(&maps, "pruned-a").await.is_some());
    assert!(
        env.get(&maps, "kept-b").await.is_some(),
        "prune: false leaves an object that left Git in the cluster"
    );
    assert!(env.get(&maps, "kept-a").await.is_some());
    let keeping = env.get(&syncs, "keeping").await.expect("GitSync keeping");
    let inventory = keeping["status"]["inventory"].to_string();
    assert!(
        !inventory.contains("kept-b"),
        "kept-b left the inventory: {inventory}"
    );
}
