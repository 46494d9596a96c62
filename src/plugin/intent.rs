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
    let mut attempt = 1;
    loop {
        let rollout = get_rollout(&conn, name).await?;
        let intent = decide(&rollout)?;
        match write(&conn, name, &rollout, &intent).await {
            Ok(()) => {
                super::output::print(&format!("{}\n", intent.summary))?;
                return Ok(EXIT_OK);
            }
            Err(e) if status_code(&e) == Some(409) && attempt < ATTEMPTS => attempt += 1,
            Err(e) if status_code(&e) == Some(409) => {
                return Err(PluginError::api(
                    format!(
                        "rollout {}/{name} kept changing while being updated",
                        conn.namespace
                    ),
                    e,
                ));
            }
            Err(e) => {
                return Err(PluginError::api(
                    format!("updating rollout {}/{name}", conn.namespace),
                    e,
                ));
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::{abort, pause, promote, resume, retry};
    use super::*;

    fn rollout(paused: bool, labels: Value, status: Value) -> Rollout {
        serde_json::from_value(json!({
            "apiVersion": "weir.io/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "shop", "generation": 2, "labels": labels},
            "spec": {"paused": paused, "selector": {"matchLabels": {"app": "web"}}, "template": {}, "strategy": {"canary": {}}},
            "status": status,
        }))
        .unwrap()
    }

    fn at_pause_step() -> Value {
        json!({"observedGeneration": 2, "phase": "Paused", "currentPodHash": "new", "stableRS": "old",
            "controllerPause": true, "pauseConditions": [{"reason": "CanaryPauseStep", "startTime": "2026-11-22T10:00:00Z"}]})
    }

    fn healthy() -> Value {
        json!({"observedGeneration": 2, "phase": "Healthy", "currentPodHash": "old", "stableRS": "old"})
    }

    fn aborted() -> Value {
        json!({"observedGeneration": 2, "phase": "Degraded", "currentPodHash": "new", "stableRS": "old", "abort": true})
    }

    fn progressing() -> Value {
        json!({"observedGeneration": 2, "phase": "Progressing", "message": "Step 1/3: waiting for pods", "currentPodHash": "new", "stableRS": "old"})
    }

    type Decide = fn(&Rollout) -> Result<Intent, PluginError>;

    /// (what, verb, paused, labels, status, Ok((status patch, spec patch)) or Err(refusal fragment)).
    #[allow(clippy::type_complexity)]
    fn cases() -> Vec<(
        &'static str,
        Decide,
        bool,
        Value,
        Value,
        Result<(Value, Value), &'static str>,
    )> {
        let none = Value::Null;
        let from_git =
            json!({"weir.io/gitsync-name": "apps", "weir.io/gitsync-namespace": "weir-system"});
        vec![
            // promote clears the pause conditions and nothing else: controllerPause must stay true
            // for the controller to read the cleared list as a promotion.
            (
                "promote at a pause step",
                |r| promote::decide(r, false),
                false,
                none.clone(),
                at_pause_step(),
                Ok((json!({"status": {"pauseConditions": null}}), Value::Null)),
            ),
            (
                "promote a user pause",
                |r| promote::decide(r, false),
                true,
                none.clone(),
                progressing(),
                Ok((Value::Null, json!({"spec": {"paused": false}}))),
            ),
            (
                "promote both",
                |r| promote::decide(r, false),
                true,
                none.clone(),
                at_pause_step(),
                Ok((
                    json!({"status": {"pauseConditions": null}}),
                    json!({"spec": {"paused": false}}),
                )),
            ),
            (
                "promote while progressing",
                |r| promote::decide(r, false),
                false,
                none.clone(),
                progressing(),
                Err(
                    "has no pause to clear (Progressing: Step 1/3: waiting for pods): nothing to promote; use --full",
                ),
            ),
            (
                "promote --full while progressing",
                |r| promote::decide(r, true),
                false,
                none.clone(),
                progressing(),
                Ok((
                    json!({"status": {"promoteFull": true, "pauseConditions": null}}),
                    Value::Null,
                )),
            ),
            (
                "promote Healthy",
                |r| promote::decide(r, false),
                false,
                none.clone(),
                healthy(),
                Err("rollout shop/web is Healthy: there is no release to promote"),
            ),
            (
                "promote --full Healthy",
                |r| promote::decide(r, true),
                false,
                none.clone(),
                healthy(),
                Err("is Healthy"),
            ),
            (
                "promote aborted",
                |r| promote::decide(r, false),
                false,
                none.clone(),
                aborted(),
                Err("is aborted: use `kubectl weir retry`"),
            ),
            (
                "abort at a pause step",
                |r| abort::decide(r, false),
                false,
                none.clone(),
                at_pause_step(),
                Ok((json!({"status": {"abort": true}}), Value::Null)),
            ),
            (
                "abort --revert from Git",
                |r| abort::decide(r, true),
                false,
                from_git.clone(),
                at_pause_step(),
                Ok((
                    json!({"status": {"abort": true, "gitRevert": {"podHash": "new", "state": "Requested",
                    "gitSync": null, "revertedCommits": null, "revertCommit": null, "message": null}}}),
                    Value::Null,
                )),
            ),
            (
                "abort --revert not from Git",
                |r| abort::decide(r, true),
                false,
                none.clone(),
                at_pause_step(),
                Err("was not applied by a GitSync"),
            ),
            (
                "abort --revert after a plain abort",
                |r| abort::decide(r, true),
                false,
                from_git.clone(),
                aborted(),
                Ok((
                    json!({"status": {"abort": true, "gitRevert": {"podHash": "new", "state": "Requested",
                    "gitSync": null, "revertedCommits": null, "revertCommit": null, "message": null}}}),
                    Value::Null,
                )),
            ),
            (
                "abort twice",
                |r| abort::decide(r, false),
                false,
                none.clone(),
                aborted(),
                Err("is already aborted"),
            ),
            (
                "abort Healthy",
                |r| abort::decide(r, false),
                false,
                none.clone(),
                healthy(),
                Err("no release to abort"),
            ),
            (
                "retry aborted",
                retry::decide,
                false,
                none.clone(),
                aborted(),
                Ok((json!({"status": {"abort": false}}), Value::Null)),
            ),
            (
                "retry not aborted",
                retry::decide,
                false,
                none.clone(),
                at_pause_step(),
                Err("is not aborted"),
            ),
            (
                "pause",
                pause::decide,
                false,
                none.clone(),
                progressing(),
                Ok((Value::Null, json!({"spec": {"paused": true}}))),
            ),
            (
                "pause twice",
                pause::decide,
                true,
                none.clone(),
                progressing(),
                Err("is already paused"),
            ),
            (
                "resume",
                resume::decide,
                true,
                none.clone(),
                progressing(),
                Ok((Value::Null, json!({"spec": {"paused": false}}))),
            ),
            (
                "resume at a pause step",
                resume::decide,
                false,
                none.clone(),
                at_pause_step(),
                Err(
                    "not paused by spec.paused (it waits at a pause step: use `kubectl weir promote`)",
                ),
            ),
        ]
    }

    #[test]
    fn each_verb_writes_exactly_its_intent_or_refuses() {
        for (what, decide, paused, labels, status, expected) in cases() {
            let got = decide(&rollout(paused, labels, status));
            match (got, expected) {
                (Ok(intent), Ok((status, spec))) => {
                    assert_eq!(intent.status.unwrap_or(Value::Null), status, "{what}");
                    assert_eq!(intent.spec.unwrap_or(Value::Null), spec, "{what}");
                    assert!(
                        intent.summary.starts_with("rollout shop/web "),
                        "{what}: {}",
                        intent.summary
                    );
                }
                (Err(PluginError::Refused(message)), Err(fragment)) => {
                    assert!(
                        message.contains(fragment),
                        "{what}: {message:?} lacks {fragment:?}"
                    );
                }
                (got, expected) => panic!("{what}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn patches_carry_the_resource_version_they_were_decided_on() {
        let patch = with_version(&json!({"status": {"abort": true}}), &Some("42".into()));
        assert_eq!(
            patch,
            json!({"status": {"abort": true}, "metadata": {"resourceVersion": "42"}})
        );
    }
}
