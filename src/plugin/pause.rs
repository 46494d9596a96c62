//! `kubectl weir pause NAME`: hold a Rollout where it is (`spec.paused=true`).

use serde_json::json;

use crate::api::Rollout;

use super::PluginError;
use super::intent::{Intent, NameArg, apply, display_name};
use super::kubeconfig::ClusterArgs;

/// Flags of `pause`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  kubectl weir pause web\n  kubectl weir resume web")]
pub struct PauseArgs {
    #[command(flatten)]
    target: NameArg,
}

/// What `pause` writes for this Rollout, or why it refuses.
pub fn decide(rollout: &Rollout) -> Result<Intent, PluginError> {
    let name = display_name(rollout);
    if rollout.spec.paused {
        return Err(PluginError::Refused(format!(
            "rollout {name} is already paused"
        )));
    }
    Ok(Intent {
        status: None,
        spec: Some(json!({"spec": {"paused": true}})),
        summary: format!("rollout {name} paused (spec.paused=true)"),
    })
}

/// Runs `pause`.
pub async fn run(cluster: &ClusterArgs, args: PauseArgs) -> Result<u8, PluginError> {
    apply(cluster, &args.target.name, decide).await
}
