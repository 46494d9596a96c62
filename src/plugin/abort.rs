//! `kubectl weir abort NAME [--revert]`: send all traffic back to stable (`status.abort=true`), and with
//! `--revert` also ask the GitSync revert writer to revert the release in Git, as a failed analysis would
//! (`status.gitRevert = {podHash, state: Requested}`).

use serde_json::json;

use crate::api::Rollout;
use crate::api::rollout::GitRevertState;
use crate::gitsync::render::LABEL_GITSYNC_NAME;

use super::PluginError;
use super::intent::{Intent, NameArg, apply, display_name, is_settled, status_of};
use super::kubeconfig::ClusterArgs;

/// Flags of `abort`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  # Send all traffic back to the stable revision\n  kubectl weir abort web\n  # ... and revert the release's commits in Git\n  kubectl weir abort web --revert"
)]
pub struct AbortArgs {
    #[command(flatten)]
    target: NameArg,
    /// Also revert the release in Git (the Rollout must have been applied by a GitSync).
    #[arg(long)]
    pub revert: bool,
}

/// What `abort` writes for this Rollout, or why it refuses.
pub fn decide(rollout: &Rollout, revert: bool) -> Result<Intent, PluginError> {
    let name = display_name(rollout);
    let status = status_of(rollout);
    if is_settled(rollout) {
        return Err(PluginError::Refused(format!(
            "rollout {name} is Healthy: there is no release to abort"
        )));
    }
    let Some(pod_hash) = status.current_pod_hash.clone() else {
        return Err(PluginError::Refused(format!(
            "rollout {name} has not been reconciled yet: there is no release to abort"
        )));
    };
    let revert_requested = status
        .git_revert
        .as_ref()
        .is_some_and(|r| r.pod_hash == pod_hash);
    if revert {
        let from_git = rollout
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(LABEL_GITSYNC_NAME));
        if !from_git {
            return Err(PluginError::Refused(format!(
                "rollout {name} was not applied by a GitSync: there is no Git history to revert; run without --revert"
            )));
        }
    }
    if status.abort && (!revert || revert_requested) {
        return Err(PluginError::Refused(format!(
            "rollout {name} is already aborted{}",
            if revert_requested {
                " and its Git revert requested"
            } else {
                ""
            }
        )));
    }
    let mut patch = json!({"status": {"abort": true}});
    let mut changed = vec!["status.abort=true".to_string()];
    if revert && !revert_requested {
        // A merge patch merges into an existing object: the fields of an earlier revert (of another
        // revision) are cleared so the request does not inherit its commits or message.
        patch["status"]["gitRevert"] = json!({
            "podHash": pod_hash,
            "state": GitRevertState::Requested,
            "gitSync": null,
            "revertedCommits": null,
            "revertCommit": null,
            "message": null,
        });
        changed.push(format!(
            "status.gitRevert requested for revision {pod_hash}"
        ));
    }
    Ok(Intent {
        status: Some(patch),
        spec: None,
        summary: format!(
            "rollout {name} aborted: traffic goes back to stable ({})",
            changed.join(", ")
        ),
    })
}

/// Runs `abort`.
pub async fn run(cluster: &ClusterArgs, args: AbortArgs) -> Result<u8, PluginError> {
    let revert = args.revert;
    apply(cluster, &args.target.name, |ro| decide(ro, revert)).await
}
