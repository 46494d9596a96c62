//! Writing intent: merge patches of a Rollout's spec or status (the status subresource), carrying
//! `metadata.resourceVersion` so a decision made on a stale read is rejected and made again.

use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::api::Rollout;
use crate::api::rollout::RolloutStatus;

use super::error::{PluginError, status_code};
use super::kubeconfig::{ClusterArgs, Connection};
use super::snapshot::get_rollout;
use super::{EXIT_OK, FIELD_MANAGER};

/// The positional argument of every intent verb.
#[derive(clap::Args, Debug, Clone)]
pub struct NameArg {
    /// Name of the Rollout.
    pub name: String,
}

/// What an intent verb decided to write, and what to tell the user.
#[derive(Debug, Clone, PartialEq)]
pub struct Intent {
    /// Merge patch of the status subresource, if any.
    pub status: Option<Value>,
    /// Merge patch of the object (spec), if any.
    pub spec: Option<Value>,
    /// What changed, printed on success.
    pub summary: String,
}

/// Reads before each attempt; a 409 means someone else wrote in between, so decide again.
const ATTEMPTS: usize = 5;

/// Reads the Rollout, lets `decide` choose the patches (or refuse), and writes them with the read's
/// resourceVersion; on a conflict it reads and decides again.
pub async fn apply(
    cluster: &ClusterArgs,
    name: &str,
    decide: impl Fn(&Rollout) -> Result<Intent, PluginError>,
) -> Result<u8, PluginError> {
    let conn = cluster.connect().await?;
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let rollout = get_rollout(&conn, name).await?;
        let intent = decide(&rollout)?;
        match write(&conn, name, &rollout, &intent).await {
            Ok(()) => {
                super::output::print(&format!("{}\n", intent.summary))?;
                return Ok(EXIT_OK);
            }
            Err(e) if status_code(&e) == Some(409) => last = Some(e),
            Err(e) => {
                return Err(PluginError::api(
                    format!("updating rollout {}/{name}", conn.namespace),
                    e,
                ));
            }
        }
    }
    let error = last.expect("the loop ran at least once");
    Err(PluginError::api(
        format!(
            "rollout {}/{name} kept changing while being updated",
            conn.namespace
        ),
        error,
    ))
}

async fn write(
    conn: &Connection,
    name: &str,
    rollout: &Rollout,
    intent: &Intent,
) -> Result<(), kube::Error> {
    let api: Api<Rollout> = Api::namespaced(conn.client.clone(), &conn.namespace);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    let mut version = rollout.metadata.resource_version.clone();
    if let Some(status) = &intent.status {
        let written = api
            .patch_status(name, &params, &Patch::Merge(with_version(status, &version)))
            .await?;
        // A status write moves the resourceVersion; the spec write that follows must carry the new one.
        version = written.metadata.resource_version;
    }
    if let Some(spec) = &intent.spec {
        api.patch(name, &params, &Patch::Merge(with_version(spec, &version)))
            .await?;
    }
    Ok(())
}

fn with_version(patch: &Value, version: &Option<String>) -> Value {
    let mut patch = patch.clone();
    if let (Some(version), Some(object)) = (version, patch.as_object_mut()) {
        object.insert("metadata".into(), json!({ "resourceVersion": version }));
    }
    patch
}

/// The Rollout's status, or an empty one before the controller first wrote it.
pub fn status_of(rollout: &Rollout) -> RolloutStatus {
    rollout.status.clone().unwrap_or_default()
}

/// `namespace/name` of a Rollout.
pub fn display_name(rollout: &Rollout) -> String {
    format!(
        "{}/{}",
        rollout.metadata.namespace.as_deref().unwrap_or_default(),
        rollout.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Whether the Rollout is fully released: Healthy on its current template, nothing pending.
pub fn is_settled(rollout: &Rollout) -> bool {
    let status = status_of(rollout);
    status.phase == Some(crate::api::RolloutPhase::Healthy)
        && status.current_pod_hash.is_some()
        && status.current_pod_hash == status.stable_rs
        && status.observed_generation == rollout.metadata.generation
}
