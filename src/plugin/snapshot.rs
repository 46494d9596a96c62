//! Everything `get`, `status` and `history` show about one Rollout, read in one go: the Rollout, its
//! ReplicaSets and AnalysisRuns, the GitSync that applied it, and the weights its routes carry.

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::api::{Api, ListParams};

use crate::api::rollout::{CanaryStep, RolloutStrategy};
use crate::api::{AnalysisRun, GitSync, Rollout};
use crate::gitsync::render::{LABEL_GITSYNC_NAME, LABEL_GITSYNC_NAMESPACE};
use crate::rollout::POD_TEMPLATE_HASH_LABEL;
use crate::rollout::replica_sets::ROLLOUT_LABEL;
use crate::traffic::{Backends, routers_for};

use super::error::{PluginError, status_code};
use super::kubeconfig::Connection;

/// The GitSync that applied a Rollout, and the revision it last applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitSyncInfo {
    /// Its name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// `status.lastAppliedRevision`, when the GitSync exists and has applied something.
    pub revision: Option<String>,
    /// Whether the GitSync object was found.
    pub found: bool,
}

/// The weights one route carries now, or why they could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteWeight {
    /// e.g. `HTTPRoute default/web`.
    pub route: String,
    /// Canary percent, or the reason it is unknown.
    pub canary: Result<i32, String>,
}

/// A Rollout and what belongs to it, as read at `now`.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The Rollout.
    pub rollout: Rollout,
    /// Its ReplicaSets, oldest first.
    pub replica_sets: Vec<ReplicaSet>,
    /// Its AnalysisRuns, oldest first.
    pub analysis_runs: Vec<AnalysisRun>,
    /// The GitSync that applied it, if one did.
    pub git_sync: Option<GitSyncInfo>,
    /// The weights on each route it names.
    pub routes: Vec<RouteWeight>,
    /// When it was read.
    pub now: Timestamp,
}

/// Reads a Rollout, mapping a missing object or a missing CRD to a clear error.
pub async fn get_rollout(conn: &Connection, name: &str) -> Result<Rollout, PluginError> {
    let api: Api<Rollout> = Api::namespaced(conn.client.clone(), &conn.namespace);
    api.get(name)
        .await
        .map_err(|e| not_found_or(e, "rollout", &conn.namespace, name))
}

/// Maps a 404 to [`PluginError::NotFound`] when the object is missing, or to
/// [`PluginError::NotServed`] when the kind itself is unknown to the server.
pub fn not_found_or(
    error: kube::Error,
    kind: &'static str,
    namespace: &str,
    name: &str,
) -> PluginError {
    if status_code(&error) == Some(404) {
        let names_object =
            matches!(&error, kube::Error::Api(s) if s.message.contains(&format!("\"{name}\"")));
        if names_object {
            return PluginError::NotFound {
                kind,
                namespace: namespace.to_string(),
                name: name.to_string(),
            };
        }
        return PluginError::NotServed {
            resource: "rollouts.weir.io/v1alpha1",
        };
    }
    PluginError::api(format!("reading {kind} {namespace}/{name}"), error)
}

impl Snapshot {
    /// Reads the Rollout `name` and everything that belongs to it.
    pub async fn read(conn: &Connection, name: &str) -> Result<Snapshot, PluginError> {
        let rollout = get_rollout(conn, name).await?;
        let ns = conn.namespace.as_str();
        let selector = format!("{ROLLOUT_LABEL}={name}");
        let rs_api: Api<ReplicaSet> = Api::namespaced(conn.client.clone(), ns);
        let mut replica_sets = rs_api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| {
                PluginError::api(format!("listing ReplicaSets of rollout {ns}/{name}"), e)
            })?
            .items;
        // Creation times have a resolution of a second, so a release made within a second of the
        // previous one ties with it; the Rollout's own status knows which revision came last.
        let status = rollout.status.clone().unwrap_or_default();
        let rank = |rs: &ReplicaSet| {
            let hash = Snapshot::hash_of(rs);
            if status.current_pod_hash.as_deref() == Some(hash.as_str()) {
                2
            } else if status.stable_rs.as_deref() == Some(hash.as_str()) {
                1
            } else {
                0
            }
        };
        replica_sets.sort_by_key(|r| {
            (
                r.metadata.creation_timestamp.as_ref().map(|t| t.0),
                rank(r),
                r.metadata.name.clone(),
            )
        });
        let run_api: Api<AnalysisRun> = Api::namespaced(conn.client.clone(), ns);
        let mut analysis_runs = match run_api.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => list.items,
            // An older install without the AnalysisRun kind still has Rollouts worth showing.
            Err(e) if status_code(&e) == Some(404) => Vec::new(),
            Err(e) => {
                return Err(PluginError::api(
                    format!("listing AnalysisRuns of rollout {ns}/{name}"),
                    e,
                ));
            }
        };
        analysis_runs.sort_by_key(|r| {
            (
                r.metadata.creation_timestamp.as_ref().map(|t| t.0),
                r.metadata.name.clone(),
            )
        });
        let git_sync = read_git_sync(conn, &rollout).await;
        let routes = read_routes(conn, &rollout).await;
        Ok(Snapshot {
            rollout,
            replica_sets,
            analysis_runs,
            git_sync,
            routes,
            now: Timestamp::now(),
        })
    }

    /// Pod-template hash of a ReplicaSet.
    pub fn hash_of(rs: &ReplicaSet) -> String {
        rs.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(POD_TEMPLATE_HASH_LABEL))
            .cloned()
            .unwrap_or_default()
    }
}

async fn read_git_sync(conn: &Connection, rollout: &Rollout) -> Option<GitSyncInfo> {
    let labels = rollout.metadata.labels.as_ref()?;
    let name = labels.get(LABEL_GITSYNC_NAME)?.clone();
    let namespace = labels
        .get(LABEL_GITSYNC_NAMESPACE)
        .cloned()
        .unwrap_or_else(|| conn.namespace.clone());
    let api: Api<GitSync> = Api::namespaced(conn.client.clone(), &namespace);
    // The GitSync may live where this user cannot read; the Rollout is still worth showing.
    let found = api.get_opt(&name).await.ok().flatten();
    Some(GitSyncInfo {
        revision: found
            .as_ref()
            .and_then(|g| g.status.as_ref())
            .and_then(|s| s.last_applied_revision.clone()),
        found: found.is_some(),
        name,
        namespace,
    })
}

async fn read_routes(conn: &Connection, rollout: &Rollout) -> Vec<RouteWeight> {
    let RolloutStrategy::Canary(canary) = &rollout.spec.strategy else {
        return Vec::new();
    };
    let Some(routing) = &canary.traffic_routing else {
        return Vec::new();
    };
    let ns = rollout
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| conn.namespace.clone());
    let backends = Backends {
        stable_service: canary.stable_service.clone().unwrap_or_default(),
        canary_service: canary.canary_service.clone().unwrap_or_default(),
        rollout_namespace: ns.clone(),
    };
    let mut out = Vec::new();
    for router in routers_for(routing, &ns) {
        let canary = router
            .observe(&conn.client, &backends)
            .await
            .map(|w| w.canary)
            .map_err(|e| e.to_string().replace('\n', " "));
        out.push(RouteWeight {
            route: router.describe(),
            canary,
        });
    }
    out
}

/// The canary weight the steps ask for at `index`: the last `setWeight` at or before it.
pub fn set_weight_at(steps: &[CanaryStep], index: i32) -> i32 {
    let upto = usize::try_from(index.max(0)).unwrap_or(0).saturating_add(1);
    steps
        .iter()
        .take(upto)
        .filter_map(|s| match s {
            CanaryStep::SetWeight(w) => Some(*w),
            _ => None,
        })
        .next_back()
        .unwrap_or(0)
}

/// The images of a pod template, in container order.
pub fn images(template: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>) -> Vec<String> {
    template
        .and_then(|t| t.spec.as_ref())
        .map(|s| {
            s.containers
                .iter()
                .filter_map(|c| c.image.clone())
                .collect()
        })
        .unwrap_or_default()
}
