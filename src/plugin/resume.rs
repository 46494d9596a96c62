//! `kubectl weir resume NAME`: let a Rollout paused by `pause` continue (`spec.paused=false`).

use serde_json::json;

use crate::api::Rollout;

use super::PluginError;
use super::intent::{Intent, NameArg, apply, display_name, status_of};
use super::kubeconfig::ClusterArgs;

/// Flags of `resume`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  kubectl weir resume web")]
pub struct ResumeArgs {
    #[command(flatten)]
    target: NameArg,
}

/// What `resume` writes for this Rollout, or why it refuses.
pub fn decide(rollout: &Rollout) -> Result<Intent, PluginError> {
    let name = display_name(rollout);
    if !rollout.spec.paused {
        let hint = if status_of(rollout).pause_conditions.is_empty() {
            ""
        } else {
            " (it waits at a pause step: use `kubectl weir promote`)"
        };
        return Err(PluginError::Refused(format!(
            "rollout {name} is not paused by spec.paused{hint}"
        )));
    }
    Ok(Intent {
        status: None,
        spec: Some(json!({"spec": {"paused": false}})),
        summary: format!("rollout {name} resumed (spec.paused=false)"),
    })
}

/// Runs `resume`.
pub async fn run(cluster: &ClusterArgs, args: ResumeArgs) -> Result<u8, PluginError> {
    apply(cluster, &args.target.name, decide).await
}
