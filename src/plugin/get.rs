//! `kubectl weir get rollout NAME [--watch]`: the Rollout as a tree. `--watch` redraws whenever the
//! Rollout, its ReplicaSets or its AnalysisRuns change, driven by Kubernetes watches.

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};

use crate::api::{AnalysisRun, Rollout};
use crate::rollout::replica_sets::ROLLOUT_LABEL;

use super::error::PluginError;
use super::kubeconfig::ClusterArgs;
use super::output::print;
use super::snapshot::Snapshot;
use super::style::Style;
use super::{EXIT_OK, tree};

/// Flags of `get`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  kubectl weir get rollout web\n  kubectl weir get ro/web --watch\n  kubectl weir get rollout web -n shop --no-color"
)]
pub struct GetArgs {
    /// The kind: `rollout` (or `rollouts`, `ro`); `rollout/NAME` also works.
    pub kind: String,
    /// Name of the Rollout.
    pub name: Option<String>,
    /// Keep watching and redraw on every change.
    #[arg(short, long)]
    pub watch: bool,
}

/// The Rollout name from `KIND NAME` or `KIND/NAME`, refusing kinds other than Rollout.
pub fn rollout_name(kind: &str, name: Option<&str>) -> Result<String, PluginError> {
    let (kind, inline) = match kind.split_once('/') {
        Some((k, n)) => (k, Some(n)),
        None => (kind, None),
    };
    let known = [
        "rollout",
        "rollouts",
        "ro",
        "rollouts.weir.io",
        "rollout.weir.io",
    ];
    if !known.contains(&kind.to_ascii_lowercase().as_str()) {
        return Err(PluginError::Usage(format!(
            "unknown kind {kind:?}: kubectl weir get shows rollouts (rollout, rollouts, ro)"
        )));
    }
    match (inline, name) {
        (Some(n), None) | (None, Some(n)) if !n.is_empty() => Ok(n.to_string()),
        (Some(_), Some(_)) => Err(PluginError::Usage(
            "give the name either as KIND/NAME or as KIND NAME, not both".into(),
        )),
        _ => Err(PluginError::Usage(
            "a Rollout name is required: kubectl weir get rollout NAME".into(),
        )),
    }
}

/// Runs `get`.
pub async fn run(cluster: &ClusterArgs, args: GetArgs, style: Style) -> Result<u8, PluginError> {
    let name = rollout_name(&args.kind, args.name.as_deref())?;
    let conn = cluster.connect().await?;
    let snap = Snapshot::read(&conn, &name).await?;
    let mut shown = tree::render(&snap, style);
    if !args.watch {
        print(&shown)?;
        return Ok(EXIT_OK);
    }
    draw(&shown, style)?;
    let selector = format!("{ROLLOUT_LABEL}={name}");
    let rollouts = watcher(
        Api::<Rollout>::namespaced(conn.client.clone(), &conn.namespace),
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .default_backoff()
    .map(|_| ());
    let replica_sets = watcher(
        Api::<ReplicaSet>::namespaced(conn.client.clone(), &conn.namespace),
        watcher::Config::default().labels(&selector),
    )
    .default_backoff()
    .map(|_| ());
    let runs = watcher(
        Api::<AnalysisRun>::namespaced(conn.client.clone(), &conn.namespace),
        watcher::Config::default().labels(&selector),
    )
    .default_backoff()
    .map(|_| ());
    let mut changes =
        futures::stream::select_all([rollouts.boxed(), replica_sets.boxed(), runs.boxed()]);
    while changes.next().await.is_some() {
        // One redraw for a burst: a reconcile touches the Rollout, a ReplicaSet and a run together.
        while let Some(Some(())) = changes.next().now_or_never() {}
        let snap = match Snapshot::read(&conn, &name).await {
            Ok(snap) => snap,
            // Deleted while watched: say so and stop.
            Err(e @ PluginError::NotFound { .. }) => return Err(e),
            Err(_) => continue,
        };
        let text = tree::render(&snap, style);
        if text != shown {
            draw(&text, style)?;
            shown = text;
        }
    }
    Ok(EXIT_OK)
}

/// On a terminal the frame replaces the previous one; piped, frames follow each other.
fn draw(text: &str, style: Style) -> Result<(), PluginError> {
    if style.is_colour() {
        print(&format!("\x1b[H\x1b[2J{text}"))
    } else {
        print(&format!("{text}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_kind_name_or_kind_slash_name() {
        assert_eq!(rollout_name("rollout", Some("web")).unwrap(), "web");
        assert_eq!(rollout_name("ro/web", None).unwrap(), "web");
        assert_eq!(rollout_name("Rollouts", Some("web")).unwrap(), "web");
        for (kind, name) in [
            ("deployment", Some("web")),
            ("rollout", None),
            ("ro/web", Some("web")),
            ("ro/", None),
        ] {
            assert!(
                matches!(rollout_name(kind, name), Err(PluginError::Usage(_))),
                "{kind} {name:?}"
            );
        }
    }
}
