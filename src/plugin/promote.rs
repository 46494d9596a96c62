//! `kubectl weir promote NAME [--full]`: clear the pause that holds a release (`status.pauseConditions`,
//! and `spec.paused`), or with `--full` ask for the remaining steps to be skipped (`status.promoteFull`).
//!
//! `status.controllerPause` is left as it is on purpose: the controller reads "no pause condition while
//! `controllerPause` is true" as "a person promoted", and moves past the step.

use serde_json::json;

use crate::api::Rollout;

use super::PluginError;
use super::intent::{Intent, NameArg, apply, display_name, is_settled, status_of};
use super::kubeconfig::ClusterArgs;

/// Flags of `promote`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  # Continue a canary waiting at a pause step\n  kubectl weir promote web\n  # Skip every remaining step and analysis\n  kubectl weir promote web --full"
)]
pub struct PromoteArgs {
    #[command(flatten)]
    target: NameArg,
    /// Skip the remaining steps and analyses and go to 100% (status.promoteFull=true).
    #[arg(long)]
    pub full: bool,
}

/// What `promote` writes for this Rollout, or why it refuses.
pub fn decide(rollout: &Rollout, full: bool) -> Result<Intent, PluginError> {
    let name = display_name(rollout);
    let status = status_of(rollout);
    if is_settled(rollout) {
        return Err(PluginError::Refused(format!(
            "rollout {name} is Healthy: there is no release to promote"
        )));
    }
    if status.abort {
        return Err(PluginError::Refused(format!(
            "rollout {name} is aborted: use `kubectl weir retry` to start the release again"
        )));
    }
    let paused_by_user = rollout.spec.paused;
    let reasons: Vec<String> = status
        .pause_conditions
        .iter()
        .map(|c| format!("{:?}", c.reason))
        .collect();
    let spec = paused_by_user.then(|| json!({"spec": {"paused": false}}));
    if full {
        if status.promote_full {
            return Err(PluginError::Refused(format!(
                "rollout {name} is already being fully promoted"
            )));
        }
        return Ok(Intent {
            status: Some(json!({"status": {"promoteFull": true, "pauseConditions": null}})),
            spec,
            summary: format!(
                "rollout {name} fully promoted: the remaining steps are skipped (status.promoteFull=true{})",
                if paused_by_user {
                    ", spec.paused=false"
                } else {
                    ""
                }
            ),
        });
    }
    if reasons.is_empty() && !paused_by_user {
        let phase = status
            .phase
            .map_or_else(|| "not yet reconciled".to_string(), |p| p.to_string());
        let message = status.message.as_deref().unwrap_or("");
        return Err(PluginError::Refused(format!(
            "rollout {name} has no pause to clear ({phase}{}{message}): nothing to promote; use --full to skip the remaining steps",
            if message.is_empty() { "" } else { ": " }
        )));
    }
    let mut changed = Vec::new();
    if !reasons.is_empty() {
        changed.push(format!("cleared pause {}", reasons.join(", ")));
    }
    if paused_by_user {
        changed.push("spec.paused=false".to_string());
    }
    Ok(Intent {
        status: (!reasons.is_empty()).then(|| json!({"status": {"pauseConditions": null}})),
        spec,
        summary: format!("rollout {name} promoted: {}", changed.join("; ")),
    })
}

/// Runs `promote`.
pub async fn run(cluster: &ClusterArgs, args: PromoteArgs) -> Result<u8, PluginError> {
    let full = args.full;
    apply(cluster, &args.target.name, |ro| decide(ro, full)).await
}
