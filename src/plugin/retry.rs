//! `kubectl weir retry NAME`: start an aborted release again from its first step (`status.abort=false`).

use serde_json::json;

use crate::api::Rollout;

use super::PluginError;
use super::intent::{Intent, NameArg, apply, display_name, status_of};
use super::kubeconfig::ClusterArgs;

/// Flags of `retry`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  kubectl weir retry web")]
pub struct RetryArgs {
    #[command(flatten)]
    target: NameArg,
}

/// What `retry` writes for this Rollout, or why it refuses.
pub fn decide(rollout: &Rollout) -> Result<Intent, PluginError> {
    let name = display_name(rollout);
    if !status_of(rollout).abort {
        return Err(PluginError::Refused(format!(
            "rollout {name} is not aborted: there is nothing to retry"
        )));
    }
    Ok(Intent {
        status: Some(json!({"status": {"abort": false}})),
        spec: None,
        summary: format!(
            "rollout {name} retried: the release starts again from the first step (status.abort=false)"
        ),
    })
}

/// Runs `retry`.
pub async fn run(cluster: &ClusterArgs, args: RetryArgs) -> Result<u8, PluginError> {
    apply(cluster, &args.target.name, decide).await
}
