//! `kubectl weir history NAME`: the Rollout's revisions, from its ReplicaSets: their images, the Git
//! commit that declared each (`weir.io/template-commit`), and when each became stable (the
//! controller's `RolloutCompleted` Events) or was aborted. What is not known prints as `-`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::api::TEMPLATE_COMMIT_ANNOTATION;
use crate::api::rollout::RolloutStatus;
use crate::rollout::plan::events as rollout_events;

use super::EXIT_OK;
use super::error::PluginError;
use super::kubeconfig::ClusterArgs;
use super::list::{Format, render_list};
use super::output::print;
use super::snapshot::{Snapshot, images};
use super::style::table;

/// Flags of `history`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  kubectl weir history web\n  kubectl weir history web -o yaml")]
pub struct HistoryArgs {
    /// Name of the Rollout.
    pub name: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Format,
}

/// One revision of a Rollout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    /// 1 for the oldest ReplicaSet still kept.
    pub revision: usize,
    /// Pod-template hash.
    pub pod_hash: String,
    /// Container images.
    pub images: Vec<String>,
    /// The Git commit that declared the template.
    pub commit: Option<String>,
    /// When its ReplicaSet was created.
    pub created: Option<String>,
    /// stable, canary, aborted, reverted or old.
    pub state: String,
    /// When it last became stable.
    pub stable_since: Option<String>,
    /// When it was aborted.
    pub aborted_at: Option<String>,
    /// The Git revert of it, if one was asked for or made.
    pub git_revert: Option<String>,
}

/// The revisions, oldest first, from a snapshot and the times the controller recorded each becoming
/// stable (by pod hash).
pub fn revisions(snap: &Snapshot, stable_times: &BTreeMap<String, String>) -> Vec<Revision> {
    let status: RolloutStatus = snap.rollout.status.clone().unwrap_or_default();
    snap.replica_sets
        .iter()
        .enumerate()
        .map(|(i, rs)| {
            let hash = Snapshot::hash_of(rs);
            let is_current = status.current_pod_hash.as_deref() == Some(hash.as_str());
            let is_stable = status.stable_rs.as_deref() == Some(hash.as_str());
            let revert = status.git_revert.as_ref().filter(|r| r.pod_hash == hash);
            let aborted_here = is_current && !is_stable && status.abort;
            let state = if is_stable {
                "stable"
            } else if revert.is_some() {
                "reverted"
            } else if aborted_here {
                "aborted"
            } else if is_current {
                "canary"
            } else {
                "old"
            };
            let commit = rs
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(TEMPLATE_COMMIT_ANNOTATION))
                .cloned()
                .or_else(|| is_stable.then(|| status.stable_commit.clone()).flatten());
            Revision {
                revision: i + 1,
                images: images(rs.spec.as_ref().and_then(|s| s.template.as_ref())),
                commit,
                created: rs
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.to_string()),
                state: state.to_string(),
                stable_since: stable_times.get(&hash).cloned(),
                aborted_at: (aborted_here || revert.is_some())
                    .then(|| status.aborted_at.as_ref().map(|t| t.0.to_string()))
                    .flatten(),
                git_revert: revert.map(|r| {
                    let mut text = format!("{:?}", r.state);
                    if let Some(commit) = &r.revert_commit {
                        text.push_str(&format!(" by {commit}"));
                    }
                    text
                }),
                pod_hash: hash,
            }
        })
        .collect()
}

/// When each revision last became stable, from the controller's `RolloutCompleted` Events.
async fn stable_times(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    hashes: &[String],
) -> BTreeMap<String, String> {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    // Events are a record, not a contract: without them the column shows `-`.
    let Ok(list) = api.list(&ListParams::default()).await else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for event in list.items {
        let about = &event.involved_object;
        if about.kind.as_deref() != Some("Rollout") || about.name.as_deref() != Some(name) {
            continue;
        }
        if event.reason.as_deref() != Some(rollout_events::COMPLETED) {
            continue;
        }
        let message = event.message.unwrap_or_default();
        let Some(time) = event.last_timestamp.or(event.first_timestamp).map(|t| t.0) else {
            continue;
        };
        for hash in hashes {
            if message.contains(&format!("revision {hash} ")) {
                let entry = out.entry(hash.clone()).or_insert(time);
                if *entry < time {
                    *entry = time;
                }
            }
        }
    }
    out.into_iter().map(|(k, v)| (k, v.to_string())).collect()
}

fn dash(value: &Option<String>) -> String {
    value.clone().unwrap_or_else(|| "-".to_string())
}

/// Runs `history`.
pub async fn run(cluster: &ClusterArgs, args: HistoryArgs) -> Result<u8, PluginError> {
    let conn = cluster.connect().await?;
    let snap = Snapshot::read(&conn, &args.name).await?;
    let hashes: Vec<String> = snap.replica_sets.iter().map(Snapshot::hash_of).collect();
    let times = stable_times(&conn.client, &conn.namespace, &args.name, &hashes).await;
    let revs = revisions(&snap, &times);
    let text = match args.output {
        Format::Table => {
            if revs.is_empty() {
                print("No revisions yet.\n")?;
                return Ok(EXIT_OK);
            }
            let rows: Vec<Vec<String>> = revs
                .iter()
                .rev()
                .map(|r| {
                    vec![
                        r.revision.to_string(),
                        r.pod_hash.clone(),
                        if r.images.is_empty() {
                            "-".into()
                        } else {
                            r.images.join(",")
                        },
                        dash(&r.commit),
                        r.state.clone(),
                        dash(&r.created),
                        dash(&r.stable_since),
                        dash(&r.aborted_at),
                        dash(&r.git_revert),
                    ]
                })
                .collect();
            table(
                &[
                    "REVISION",
                    "HASH",
                    "IMAGES",
                    "COMMIT",
                    "STATE",
                    "CREATED",
                    "STABLE-SINCE",
                    "ABORTED",
                    "GIT-REVERT",
                ],
                &rows,
            )
        }
        format => {
            let values = revs
                .iter()
                .map(|r| serde_json::to_value(r).map_err(|e| PluginError::Output(e.to_string())))
                .collect::<Result<Vec<_>, _>>()?;
            render_list(&values, format)?
        }
    };
    print(&text)?;
    Ok(EXIT_OK)
}
