//! GitSync: keeps a directory of a Git repository applied to the cluster, and reverts the commits
//! of a failed release.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::{DurationError, DurationString};
use super::secret::SecretRef;

/// `interval` when unset.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// `timeout` when unset.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// How many entries `status.history` keeps.
pub const HISTORY_LIMIT: usize = 10;
/// Revert commit author name when `revert.author` is unset.
pub const DEFAULT_REVERT_AUTHOR_NAME: &str = "weir";
/// Revert commit author email when `revert.author` is unset.
pub const DEFAULT_REVERT_AUTHOR_EMAIL: &str = "weir@localhost";

/// Secret key holding the user name for HTTPS basic authentication.
pub const SECRET_KEY_USERNAME: &str = "username";
/// Secret key holding the password (or token used as password) for HTTPS basic authentication.
pub const SECRET_KEY_PASSWORD: &str = "password";
/// Secret key holding a token sent as `Authorization: Bearer` over HTTPS.
pub const SECRET_KEY_BEARER_TOKEN: &str = "bearerToken";
/// Secret key holding an SSH private key.
pub const SECRET_KEY_IDENTITY: &str = "identity";
/// Secret key holding the SSH `known_hosts` lines for the remote.
pub const SECRET_KEY_KNOWN_HOSTS: &str = "known_hosts";

/// A directory of a Git repository, applied to the cluster with server-side apply.
// Several printer columns share a `type_`, which clippy mistakes for a repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "weir.io",
    version = "v1alpha1",
    kind = "GitSync",
    plural = "gitsyncs",
    namespaced,
    status = "GitSyncStatus",
    shortname = "gs",
    category = "weir",
    derive = "PartialEq",
    doc = "A directory of a Git repository, applied to the cluster with server-side apply.",
    printcolumn(
        name = "Revision",
        type_ = "string",
        json_path = ".status.lastAppliedRevision",
        description = "Last commit applied"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct GitSyncSpec {
    /// Repository URL: `https://…`, `ssh://…`, `git@host:path`, or `git://…`.
    #[schemars(length(min = 1))]
    pub url: String,
    /// What to check out (default: the remote's default branch).
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<GitRef>,
    /// Directory within the repository to apply (default: the repository root). A directory with
    /// a `kustomization.yaml` is rendered with kustomize; otherwise its YAML files are applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Time between fetches (default 1m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<DurationString>,
    /// Time limit for one fetch, render and apply (default 1m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationString>,
    /// Credentials: `username` and `password`, or `bearerToken`, for HTTPS; `identity` and
    /// `known_hosts` for SSH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// Delete objects that were applied before and are no longer in the repository.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prune: bool,
    /// Stop fetching and applying.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
    /// Namespace for namespaced objects that name none (default: the GitSync's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
    /// Revert the commits of a release whose analysis failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert: Option<GitRevertPolicy>,
}

impl GitSyncSpec {
    /// `interval`, or its default.
    pub fn interval(&self) -> Result<Duration, DurationError> {
        self.interval
            .as_ref()
            .map_or(Ok(DEFAULT_INTERVAL), DurationString::to_duration)
    }

    /// `timeout`, or its default.
    pub fn timeout(&self) -> Result<Duration, DurationError> {
        self.timeout
            .as_ref()
            .map_or(Ok(DEFAULT_TIMEOUT), DurationString::to_duration)
    }

    /// Whether failed releases are reverted in Git: yes unless `revert.enabled` is false.
    pub fn revert_enabled(&self) -> bool {
        self.revert.as_ref().is_none_or(|revert| revert.enabled)
    }

    /// The branch revert commits are pushed to: `revert.pushBranch`, else the branch that is
    /// synced. `None` when neither is known (a tag or commit without `pushBranch`).
    pub fn revert_push_branch(&self) -> Option<&str> {
        let configured = self
            .revert
            .as_ref()
            .and_then(|revert| revert.push_branch.as_deref());
        configured.or(match &self.git_ref {
            Some(GitRef::Branch(branch)) => Some(branch.as_str()),
            _ => None,
        })
    }
}

/// What to check out: exactly one of a branch, a tag or a commit.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum GitRef {
    /// The head of a branch.
    Branch(#[schemars(length(min = 1))] String),
    /// A tag.
    Tag(#[schemars(length(min = 1))] String),
    /// A full or abbreviated commit hash.
    Commit(#[schemars(pattern(r"^[0-9a-f]{7,64}$"))] String),
}

/// How to revert the commits of a failed release.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitRevertPolicy {
    /// Revert failed releases (default true).
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// Author and committer of revert commits (default `weir <weir@localhost>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<GitAuthor>,
    /// Commit message template. Placeholders: `{{rollout}}`, `{{namespace}}`, `{{commits}}`,
    /// `{{reason}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_template: Option<String>,
    /// Branch to push revert commits to (default: the synced branch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_branch: Option<String>,
}

impl Default for GitRevertPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            author: None,
            message_template: None,
            push_branch: None,
        }
    }
}

fn enabled_by_default() -> bool {
    true
}

/// A Git identity.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct GitAuthor {
    /// Name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Email address.
    #[schemars(length(min = 1))]
    pub email: String,
}

impl Default for GitAuthor {
    fn default() -> Self {
        Self {
            name: DEFAULT_REVERT_AUTHOR_NAME.to_owned(),
            email: DEFAULT_REVERT_AUTHOR_EMAIL.to_owned(),
        }
    }
}

/// The observed state of a GitSync.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitSyncStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The commit last fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fetched_revision: Option<String>,
    /// The commit last applied successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_revision: Option<String>,
    /// The objects the last successful apply owns; pruning deletes what drops out of it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inventory: Vec<InventoryEntry>,
    /// Ready, Reconciling, Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The value of the `weir.io/requestedAt` annotation last acted on (a manual "sync now").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// The most recent sync attempts, newest first (at most 10). A sync that repeats the
    /// revision and outcome of the newest entry adds none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<SyncHistoryEntry>,
}

/// An object applied by a GitSync.
#[derive(
    Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct InventoryEntry {
    /// `group/version`, or `version` for the core group.
    pub api_version: String,
    /// Kind.
    pub kind: String,
    /// Namespace; absent for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// Health after the last sync: Rollout phase, workload availability, or a Ready condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<ObjectHealth>,
}

/// Health of an applied object.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum ObjectHealth {
    /// Applied and serving: a Healthy Rollout, an available workload, or an object with nothing to wait for.
    Healthy,
    /// Still converging: a Rollout mid-release, a workload whose pods are not all available.
    Progressing,
    /// Failed: a Degraded Rollout, a workload past its progress deadline, a Ready=False condition.
    Degraded,
}

/// One sync attempt.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncHistoryEntry {
    /// The commit synced.
    pub revision: String,
    /// When the attempt started.
    pub started_at: Time,
    /// When the attempt ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Outcome.
    pub result: SyncResult,
    /// Details, e.g. the apply error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Outcome of a sync attempt.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum SyncResult {
    /// Everything was applied (and pruned).
    Succeeded,
    /// Fetching, rendering, applying or pruning failed.
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn manifest_round_trips() {
        let yaml = r#"
url: https://git.example.com/team/apps.git
ref:
  branch: main
path: clusters/prod
interval: 30s
timeout: 2m
secretRef:
  name: git-credentials
prune: true
targetNamespace: demo
revert:
  enabled: true
  author:
    name: Release Bot
    email: release-bot@example.com
  messageTemplate: "Revert {{rollout}}: {{reason}}"
  pushBranch: main
"#;
        let spec: GitSyncSpec = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(spec.git_ref, Some(GitRef::Branch("main".into())));
        assert_eq!(spec.interval(), Ok(Duration::from_secs(30)));
        assert_eq!(spec.timeout(), Ok(Duration::from_secs(120)));
        assert!(spec.prune);
        assert!(spec.revert_enabled());
        let expected: Value = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(serde_json::to_value(&spec).unwrap(), expected);
    }

    #[test]
    fn unset_fields_take_their_documented_defaults() {
        let spec: GitSyncSpec = serde_saphyr::from_str("url: git://localhost/apps\n").unwrap();
        assert_eq!(spec.git_ref, None);
        assert_eq!(spec.interval(), Ok(DEFAULT_INTERVAL));
        assert_eq!(spec.timeout(), Ok(DEFAULT_TIMEOUT));
        assert!(!spec.prune && !spec.suspend);
        assert!(spec.revert_enabled());
        let off: GitSyncSpec =
            serde_saphyr::from_str("url: git://localhost/apps\nrevert: {enabled: false}\n")
                .unwrap();
        assert!(!off.revert_enabled());
        let on: GitSyncSpec =
            serde_saphyr::from_str("url: git://localhost/apps\nrevert: {pushBranch: main}\n")
                .unwrap();
        assert!(on.revert_enabled());
        assert_eq!(GitAuthor::default().name, "weir");
    }

    #[test]
    fn revert_push_branch_falls_back_to_the_synced_branch() {
        let cases = [
            ("ref: {branch: main}\n", Some("main")),
            (
                "ref: {branch: main}\nrevert: {enabled: true, pushBranch: reverts}\n",
                Some("reverts"),
            ),
            ("ref: {tag: v1.2.0}\nrevert: {enabled: true}\n", None),
            (
                "ref: {commit: 0123abc}\nrevert: {enabled: true, pushBranch: main}\n",
                Some("main"),
            ),
            ("revert: {enabled: true}\n", None),
        ];
        for (fields, expected) in cases {
            let yaml = format!("url: git://localhost/apps\n{fields}");
            let spec: GitSyncSpec = serde_saphyr::from_str(&yaml).unwrap();
            assert_eq!(spec.revert_push_branch(), expected, "{fields}");
        }
    }

    #[test]
    fn a_ref_names_exactly_one_of_branch_tag_commit() {
        for yaml in ["branch: main\ntag: v1\n", "{}\n"] {
            assert!(serde_saphyr::from_str::<GitRef>(yaml).is_err(), "{yaml:?}");
        }
    }
}
