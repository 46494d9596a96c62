//! `kubectl weir status NAME [--watch] [--timeout D]`, for CI pipelines: exit 0 when the Rollout is
//! Healthy, 1 when it is Degraded or aborted, 2 when it is neither once the wait is over (at once
//! without `--watch` or `--timeout`). Waiting is a Kubernetes watch on the Rollout.

use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};

use crate::api::duration::DurationString;
use crate::api::{Rollout, RolloutPhase};

use super::error::PluginError;
use super::intent::{display_name, status_of};
use super::kubeconfig::ClusterArgs;
use super::output::print;
use super::snapshot::get_rollout;
use super::style::Style;
use super::{EXIT_FAILED, EXIT_OK, EXIT_TIMEOUT};

/// Flags of `status`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Exit codes: 0 Healthy, 1 Degraded or aborted, 2 still in progress when the wait ended.\n\nExamples:\n  # Wait up to 10 minutes for a release to finish\n  kubectl weir status web --watch --timeout 10m\n  # One look, no waiting\n  kubectl weir status web"
)]
pub struct StatusArgs {
    /// Name of the Rollout.
    pub name: String,
    /// Wait until the Rollout is Healthy or Degraded.
    #[arg(short, long)]
    pub watch: bool,
    /// Give up waiting after this long (e.g. 30s, 10m); implies --watch.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    DurationString::new(text)
        .to_duration()
        .map_err(|e| e.to_string())
}

/// What a Rollout's state means for a pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Released and Healthy.
    Healthy(String),
    /// Degraded or aborted.
    Degraded(String),
    /// Still on its way, or not yet seen by the controller.
    InProgress(String),
}

impl Verdict {
    /// The exit code of this verdict.
    pub fn exit_code(&self) -> u8 {
        match self {
            Verdict::Healthy(_) => EXIT_OK,
            Verdict::Degraded(_) => EXIT_FAILED,
            Verdict::InProgress(_) => EXIT_TIMEOUT,
        }
    }

    fn line(&self, name: &str, style: Style) -> String {
        let (word, message) = match self {
            Verdict::Healthy(m) => (style.good("Healthy"), m.as_str()),
            Verdict::Degraded(m) => (style.bad("Degraded"), m.as_str()),
            // The message starts with the phase (Paused, Progressing, Pending).
            Verdict::InProgress(m) => match m.split_once(": ") {
                Some((phase, rest)) => (style.phase(phase), rest),
                None => (style.busy("Progressing"), m.as_str()),
            },
        };
        format!("rollout {name}: {word}: {message}\n")
    }
}

/// The verdict for a Rollout as read. A status that describes an older generation is in progress: the
/// controller has not yet seen the latest change, so an old Healthy must not pass a pipeline.
pub fn verdict(rollout: &Rollout) -> Verdict {
    let status = status_of(rollout);
    let message = status.message.clone().unwrap_or_default();
    if rollout.status.is_none() {
        return Verdict::InProgress("Pending: not yet reconciled by weir".into());
    }
    if status.observed_generation != rollout.metadata.generation {
        return Verdict::InProgress(format!(
            "Progressing: waiting for weir to observe generation {}",
            rollout.metadata.generation.unwrap_or_default()
        ));
    }
    if status.abort {
        return Verdict::Degraded(if message.is_empty() {
            "aborted".into()
        } else {
            format!("aborted: {message}")
        });
    }
    match status.phase {
        Some(RolloutPhase::Degraded) => Verdict::Degraded(message),
        Some(RolloutPhase::Healthy)
            if status.current_pod_hash.is_some() && status.current_pod_hash == status.stable_rs =>
        {
            Verdict::Healthy(message)
        }
        Some(phase) => Verdict::InProgress(format!("{phase}: {message}")),
        None => Verdict::InProgress("Pending: not yet reconciled by weir".into()),
    }
}

/// Runs `status`.
pub async fn run(cluster: &ClusterArgs, args: StatusArgs, style: Style) -> Result<u8, PluginError> {
    let conn = cluster.connect().await?;
    let rollout = get_rollout(&conn, &args.name).await?;
    let name = display_name(&rollout);
    let first = verdict(&rollout);
    print(&first.line(&name, style))?;
    let waiting = args.watch || args.timeout.is_some();
    if !waiting || !matches!(first, Verdict::InProgress(_)) {
        return Ok(first.exit_code());
    }
    let api: Api<Rollout> = Api::namespaced(conn.client.clone(), &conn.namespace);
    let mut stream = watcher(
        api,
        watcher::Config::default().fields(&format!("metadata.name={}", args.name)),
    )
    .default_backoff()
    .applied_objects()
    .boxed();
    let mut last = first;
    let wait = async {
        while let Some(event) = stream.next().await {
            let Ok(rollout) = event else { continue };
            let now = verdict(&rollout);
            if now != last {
                print(&now.line(&name, style))?;
                last = now.clone();
            }
            if !matches!(now, Verdict::InProgress(_)) {
                return Ok(now.exit_code());
            }
        }
        Ok::<u8, PluginError>(EXIT_TIMEOUT)
    };
    match args.timeout {
        None => wait.await,
        Some(limit) => match tokio::time::timeout(limit, wait).await {
            Ok(code) => code,
            Err(_) => {
                print(&format!(
                    "rollout {name}: timed out after {}s without becoming Healthy or Degraded\n",
                    limit.as_secs_f64()
                ))?;
                Ok(EXIT_TIMEOUT)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rollout(generation: i64, status: serde_json::Value) -> Rollout {
        serde_json::from_value(json!({
            "apiVersion": "weir.io/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "default", "generation": generation},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {}, "strategy": {"canary": {}}},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn verdicts_map_to_the_documented_exit_codes() {
        let cases = [
            (
                1,
                json!({"observedGeneration": 1, "phase": "Healthy", "currentPodHash": "a", "stableRS": "a"}),
                0,
            ),
            (
                1,
                json!({"observedGeneration": 1, "phase": "Degraded", "message": "InvalidSpec"}),
                1,
            ),
            (
                1,
                json!({"observedGeneration": 1, "phase": "Paused", "abort": true, "currentPodHash": "b", "stableRS": "a"}),
                1,
            ),
            (
                1,
                json!({"observedGeneration": 1, "phase": "Paused", "currentPodHash": "b", "stableRS": "a"}),
                2,
            ),
            // An old Healthy for a spec weir has not seen yet must not pass a pipeline.
            (
                2,
                json!({"observedGeneration": 1, "phase": "Healthy", "currentPodHash": "a", "stableRS": "a"}),
                2,
            ),
            // Healthy on a template that is not yet stable is still a release in progress.
            (
                1,
                json!({"observedGeneration": 1, "phase": "Healthy", "currentPodHash": "b", "stableRS": "a"}),
                2,
            ),
        ];
        for (generation, status, code) in cases {
            let got = verdict(&rollout(generation, status.clone()));
            assert_eq!(got.exit_code(), code, "{status}: {got:?}");
        }
    }

    #[test]
    fn timeouts_take_weir_durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
    }
}
