//! Condition types and reasons used across weir, constructors for the conditions weir sets, and
//! the update rule for condition lists.
//!
//! Every constructor takes the clock (`now`) and the object's `metadata.generation` so that
//! callers stay deterministic and testable.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types.
pub mod types {
    /// Rollout: a release is moving forward (`True`), or has stopped (`False`: aborted, past its
    /// deadline).
    pub const PROGRESSING: &str = "Progressing";
    /// Rollout: at least the minimum number of pods is available.
    pub const AVAILABLE: &str = "Available";
    /// Rollout: the release is paused.
    pub const PAUSED: &str = "Paused";
    /// Rollout: the latest template is fully released and stable.
    pub const COMPLETED: &str = "Completed";
    /// Rollout: fully released and all pods available.
    pub const HEALTHY: &str = "Healthy";
    /// Any kind: the spec cannot be acted on; the message says why.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// GitSync, AlertProvider: the last reconciliation succeeded.
    pub const READY: &str = "Ready";
    /// GitSync: a reconciliation is in progress.
    pub const RECONCILING: &str = "Reconciling";
    /// GitSync: reconciliation cannot make progress without a change to the spec or the
    /// repository.
    pub const STALLED: &str = "Stalled";
    /// Rollout: weir pushed a revert of the failed release; the message names both commits.
    pub const GIT_REVERTED: &str = "GitReverted";
    /// Rollout: weir would not or could not revert the failed release in Git.
    pub const GIT_REVERT_BLOCKED: &str = "GitRevertBlocked";
}

/// Condition reasons.
pub mod reasons {
    /// The spec cannot be acted on.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// A ReplicaSet for the new template was created.
    pub const NEW_REPLICA_SET_CREATED: &str = "NewReplicaSetCreated";
    /// The release moved on (a step, a scale change, a weight change).
    pub const REPLICA_SET_UPDATED: &str = "ReplicaSetUpdated";
    /// The new ReplicaSet is fully released and available.
    pub const NEW_REPLICA_SET_AVAILABLE: &str = "NewReplicaSetAvailable";
    /// The release made no progress within `progressDeadlineSeconds`.
    pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
    /// The release was aborted, by a human or a failed analysis.
    pub const ROLLOUT_ABORTED: &str = "RolloutAborted";
    /// An aborted release was retried.
    pub const ROLLOUT_RETRIED: &str = "RolloutRetried";
    /// The release is paused.
    pub const ROLLOUT_PAUSED: &str = "RolloutPaused";
    /// A paused release resumed.
    pub const ROLLOUT_RESUMED: &str = "RolloutResumed";
    /// The release was promoted by a human.
    pub const ROLLOUT_PROMOTED: &str = "RolloutPromoted";
    /// An analysis was inconclusive and the release waits for a human.
    pub const INCONCLUSIVE_ANALYSIS: &str = "InconclusiveAnalysis";
    /// An analysis failed or errored.
    pub const ANALYSIS_RUN_FAILED: &str = "AnalysisRunFailed";
    /// Enough pods are available.
    pub const MINIMUM_REPLICAS_AVAILABLE: &str = "MinimumReplicasAvailable";
    /// Too few pods are available.
    pub const MINIMUM_REPLICAS_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
    /// The latest template is fully released.
    pub const ROLLOUT_COMPLETED: &str = "RolloutCompleted";
    /// A release of a new template is under way.
    pub const ROLLOUT_NOT_COMPLETED: &str = "RolloutNotCompleted";
    /// Fully released and available.
    pub const ROLLOUT_HEALTHY: &str = "RolloutHealthy";
    /// Not fully released, or not available.
    pub const ROLLOUT_NOT_HEALTHY: &str = "RolloutNotHealthy";
    /// A revert commit was pushed.
    pub const REVERT_PUSHED: &str = "RevertPushed";
    /// A commit of the release touched files outside the Rollout's own sources.
    pub const COMMIT_TOUCHES_OTHER_FILES: &str = "CommitTouchesOtherFiles";
    /// The revert does not apply cleanly.
    pub const REVERT_CONFLICT: &str = "RevertConflict";
    /// No commit since the stable revision changed the Rollout's pod template.
    pub const NO_COMMITS_TO_REVERT: &str = "NoCommitsToRevert";
    /// The revert could not be pushed.
    pub const PUSH_FAILED: &str = "PushFailed";
    /// The revert needs a branch to push to and none is known.
    pub const NO_PUSH_BRANCH: &str = "NoPushBranch";
    /// The reconciliation succeeded.
    pub const RECONCILIATION_SUCCEEDED: &str = "ReconciliationSucceeded";
    /// A reconciliation is in progress.
    pub const PROGRESSING: &str = "Progressing";
    /// The repository could not be fetched.
    pub const FETCH_FAILED: &str = "FetchFailed";
    /// The manifests could not be rendered.
    pub const RENDER_FAILED: &str = "RenderFailed";
    /// The manifests could not be applied.
    pub const APPLY_FAILED: &str = "ApplyFailed";
    /// Objects no longer in the repository could not be deleted.
    pub const PRUNE_FAILED: &str = "PruneFailed";
    /// Reconciliation is suspended by `spec.suspend`.
    pub const SUSPENDED: &str = "Suspended";
    /// A Secret the object names does not exist or lacks a key.
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
}

/// Status of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known.
    Unknown,
}

impl ConditionStatus {
    /// The status as it appears in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(holds: bool) -> Self {
        if holds { Self::True } else { Self::False }
    }
}

/// Builds a condition whose `lastTransitionTime` is `now`; [`set`] keeps the previous time when
/// the status did not change.
pub fn new(
    condition_type: &str,
    status: ConditionStatus,
    reason: &str,
    message: impl Into<String>,
    now: Timestamp,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: condition_type.to_owned(),
        status: status.as_str().to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        last_transition_time: Time(now),
        observed_generation: generation,
    }
}

/// `InvalidSpec=True`: the spec cannot be acted on.
pub fn invalid_spec(
    message: impl Into<String>,
    now: Timestamp,
    generation: Option<i64>,
) -> Condition {
    new(
        types::INVALID_SPEC,
        ConditionStatus::True,
        reasons::INVALID_SPEC,
        message,
        now,
        generation,
    )
}

/// `Progressing=True` because a ReplicaSet for the new template was created.
pub fn new_replica_set_created(
    message: impl Into<String>,
    now: Timestamp,
    generation: Option<i64>,
) -> Condition {
    new(
        types::PROGRESSING,
        ConditionStatus::True,
        reasons::NEW_REPLICA_SET_CREATED,
        message,
        now,
        generation,
    )
}

/// `Progressing=True` because the release moved on.
pub fn replica_set_updated(
    message: impl Into<String>,
    now: Timestamp,
    generation: Option<i64>,
) -> Condition {
    new(
        types::PROGRESSING,
        ConditionStatus::True,
        reasons::REPLICA_SET_UPDATED,
        message,
        now,
        generation,
    )
}

/// `Progressing=True` because the new ReplicaSet is fully released and available.
pub fn new_replica_set_available(
    message: impl Into<String>,
    now: Timestamp,
    generation: Option<i64>,
) -> Condition {
    new(
        types::PROGRESSING,
        ConditionStatus::True,
        reasons::NEW_REPLICA_SET_AVAILABLE,
        message,
        now,
        generation,
    )
}

/// `Progressing=False` because the release missed `progressDeadlineSeconds`.
pub fn progress_deadline_exceeded(
    message: impl Into<String>,
    now: Timestamp,
    generation: Option<i64>,
) -> Condition {
    new(
        types::PROGRESSING,
        ConditionStatus::False,
        reasons::PROGRESS_DEADLINE_EXCEEDED,
        message,
        now,
        generation,
    )
}

/// `Progressing=False` because the release was aborted.
pub fn rollout_aborted(
    message: impl Into<String>,
    now: Timestamp,
    generation: Option<i64>,
) -> Condition {
    new(
        types::PROGRESSING,
        ConditionStatus::False,
        reasons::ROLLOUT_ABORTED,
        message,
        now,
        generation,
    )
}

/// `Progressing=True` because an aborted release was retried.
pub fn rollout_retried(
    message: impl Into<String>,
    now: Timestamp,
    generation: Option<i64>,
) -> Condition {
    new(
        types::PROGRESSING,
        ConditionStatus::True,
        reasons::ROLLOUT_RETRIED,
        message,
        now,
        generation,
    )
}

/// `Progressing=True` because a human promoted the release.
pub fn rollout_promoted(
    message: impl Into<String>,
    now: Timestamp,
    generation: Option<i64>,
) -> Condition {
    new(
        types::PROGRESSING,
        ConditionStatus::True,
        reasons::ROLLOUT_PROMOTED,
        message,
        now,
        generation,
    )
}

/// `Paused=True` because of a pause step or `spec.paused`.
pub fn rollout_paused(
    message: impl Into<String>,
    now: Timestamp,
    generation: Option<i64>,
) -> Condition {
    new(
        types::PAUSED,
        ConditionStatus::True,
        reasons::ROLLOUT_PAUSED,
        message,
        now,
        generation,
    )
}

/// `Paused=True` because an analysis was inconclusive.
pub fn inconclusive_analysis(
    message: impl Into<String>,
    now: Timestamp,
    generation: Option<i64>,
) -> Condition {
    new(
        types::PAUSED,
        ConditionStatus::True,
        reasons::INCONCLUSIVE_ANALYSIS,
        message,
        now,
        generation,
    )
}

/// `Paused=False` because the release resumed.
pub fn rollout_resumed(
    message: impl Into<String>,
    now: Timestamp,
    generation: Option<i64>,
) -> Condition {
    new(
        types::PAUSED,
        ConditionStatus::False,
        reasons::ROLLOUT_RESUMED,
        message,
        now,
        generation,
    )
}

/// `Available=True`.
pub fn replicas_available(
    message: impl Into<String>,
    now: Timestamp,
    generation: Option<i64>,
) -> Condition {
    new(
        types::AVAILABLE,
        ConditionStatus::True,
        reasons::MINIMUM_REPLICAS_AVAILABLE,
        message,
        now,
        generation,
    )
}

/// `Available=False`.
pub fn replicas_unavailable(
    message: impl Into<String>,
    now: Timestamp,
    generation: Option<i64>,
) -> Condition {
    new(
        types::AVAILABLE,
        ConditionStatus::False,
        reasons::MINIMUM_REPLICAS_UNAVAILABLE,
        message,
        now,
        generation,
    )
}

/// `Completed=True`: the latest template is fully released.
pub fn rollout_completed(
    message: impl Into<String>,
    now: Timestamp,
    generation: Option<i64>,
) -> Condition {
    new(
        types::COMPLETED,
        ConditionStatus::True,
        reasons::ROLLOUT_COMPLETED,
        message,
        now,
        generation,
    )
}

/// `Completed=False`: a release is under way.
pub fn rollout_not_completed(
    message: impl Into<String>,
    now: Timestamp,
    generation: Option<i64>,
) -> Condition {
    new(
        types::COMPLETED,
        ConditionStatus::False,
        reasons::ROLLOUT_NOT_COMPLETED,
        message,
        now,
        generation,
    )
}

/// `Healthy=True`.
pub fn rollout_healthy(
    message: impl Into<String>,
    now: Timestamp,
    generation: Option<i64>,
) -> Condition {
    new(
        types::HEALTHY,
        ConditionStatus::True,
        reasons::ROLLOUT_HEALTHY,
        message,
        now,
        generation,
    )
}

/// `Healthy=False`.
pub fn rollout_not_healthy(
    message: impl Into<String>,
    now: Timestamp,
    generation: Option<i64>,
) -> Condition {
    new(
        types::HEALTHY,
        ConditionStatus::False,
        reasons::ROLLOUT_NOT_HEALTHY,
        message,
        now,
        generation,
    )
}

/// `GitReverted=True`: a revert commit was pushed. The message should name the reverted commits
/// and the revert commit.
pub fn git_reverted(
    message: impl Into<String>,
    now: Timestamp,
    generation: Option<i64>,
) -> Condition {
    new(
        types::GIT_REVERTED,
        ConditionStatus::True,
        reasons::REVERT_PUSHED,
        message,
        now,
        generation,
    )
}

/// `GitReverted=False` because the push failed for now (the remote is unreachable, refuses the
/// credentials, or keeps moving); weir retries, and the message says what git said.
pub fn git_revert_push_failed(
    message: impl Into<String>,
    now: Timestamp,
    generation: Option<i64>,
) -> Condition {
    new(
        types::GIT_REVERTED,
        ConditionStatus::False,
        reasons::PUSH_FAILED,
        message,
        now,
        generation,
    )
}

/// `GitRevertBlocked=True` with one of the revert reasons
/// ([`reasons::COMMIT_TOUCHES_OTHER_FILES`], [`reasons::REVERT_CONFLICT`], …).
pub fn git_revert_blocked(
    reason: &str,
    message: impl Into<String>,
    now: Timestamp,
    generation: Option<i64>,
) -> Condition {
    new(
        types::GIT_REVERT_BLOCKED,
        ConditionStatus::True,
        reason,
        message,
        now,
        generation,
    )
}

/// `GitRevertBlocked=True` because a commit of the release touched files outside the Rollout's
/// own sources.
pub fn commit_touches_other_files(
    message: impl Into<String>,
    now: Timestamp,
    generation: Option<i64>,
) -> Condition {
    git_revert_blocked(
        reasons::COMMIT_TOUCHES_OTHER_FILES,
        message,
        now,
        generation,
    )
}

/// `Ready=True` because the reconciliation succeeded.
pub fn reconciliation_succeeded(
    message: impl Into<String>,
    now: Timestamp,
    generation: Option<i64>,
) -> Condition {
    new(
        types::READY,
        ConditionStatus::True,
        reasons::RECONCILIATION_SUCCEEDED,
        message,
        now,
        generation,
    )
}

/// `Ready=False` with a failure reason ([`reasons::FETCH_FAILED`], [`reasons::APPLY_FAILED`], …).
pub fn not_ready(
    reason: &str,
    message: impl Into<String>,
    now: Timestamp,
    generation: Option<i64>,
) -> Condition {
    new(
        types::READY,
        ConditionStatus::False,
        reason,
        message,
        now,
        generation,
    )
}

/// `Reconciling=True`: a reconciliation is in progress.
pub fn reconciling(
    message: impl Into<String>,
    now: Timestamp,
    generation: Option<i64>,
) -> Condition {
    new(
        types::RECONCILING,
        ConditionStatus::True,
        reasons::PROGRESSING,
        message,
        now,
        generation,
    )
}

/// `Stalled=True` with the reason progress is impossible.
pub fn stalled(
    reason: &str,
    message: impl Into<String>,
    now: Timestamp,
    generation: Option<i64>,
) -> Condition {
    new(
        types::STALLED,
        ConditionStatus::True,
        reason,
        message,
        now,
        generation,
    )
}

/// Finds the condition of a type.
pub fn find<'a>(conditions: &'a [Condition], condition_type: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == condition_type)
}

/// Whether the condition of a type is present with status `True`.
pub fn is_true(conditions: &[Condition], condition_type: &str) -> bool {
    find(conditions, condition_type).is_some_and(|c| c.status == ConditionStatus::True.as_str())
}

/// Sets a condition, replacing the one of the same type. `lastTransitionTime` only moves when the
/// status changes, so it records when the condition last flipped, not when it was last
/// confirmed. Returns whether anything changed, so callers can skip a status write.
pub fn set(conditions: &mut Vec<Condition>, mut condition: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(existing) => {
            if existing.status == condition.status {
                condition.last_transition_time = existing.last_transition_time.clone();
            }
            if *existing == condition {
                return false;
            }
            *existing = condition;
            true
        }
        None => {
            conditions.push(condition);
            true
        }
    }
}

/// Removes the condition of a type. Returns whether it was present.
pub fn remove(conditions: &mut Vec<Condition>, condition_type: &str) -> bool {
    let before = conditions.len();
    conditions.retain(|c| c.type_ != condition_type);
    conditions.len() != before
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn named_constructors_set_type_status_and_reason() {
        let now = at(1_000);
        let cases: Vec<(Condition, &str, &str, &str)> = vec![
            (
                invalid_spec("m", now, Some(1)),
                "InvalidSpec",
                "True",
                "InvalidSpec",
            ),
            (
                progress_deadline_exceeded("m", now, Some(1)),
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
            ),
            (
                rollout_aborted("m", now, Some(1)),
                "Progressing",
                "False",
                "RolloutAborted",
            ),
            (
                replica_set_updated("m", now, Some(1)),
                "Progressing",
                "True",
                "ReplicaSetUpdated",
            ),
            (
                new_replica_set_available("m", now, Some(1)),
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
            ),
            (
                rollout_paused("m", now, Some(1)),
                "Paused",
                "True",
                "RolloutPaused",
            ),
            (
                inconclusive_analysis("m", now, Some(1)),
                "Paused",
                "True",
                "InconclusiveAnalysis",
            ),
            (
                rollout_resumed("m", now, Some(1)),
                "Paused",
                "False",
                "RolloutResumed",
            ),
            (
                replicas_available("m", now, Some(1)),
                "Available",
                "True",
                "MinimumReplicasAvailable",
            ),
            (
                rollout_completed("m", now, Some(1)),
                "Completed",
                "True",
                "RolloutCompleted",
            ),
            (
                rollout_healthy("m", now, Some(1)),
                "Healthy",
                "True",
                "RolloutHealthy",
            ),
            (
                git_reverted("m", now, Some(1)),
                "GitReverted",
                "True",
                "RevertPushed",
            ),
            (
                commit_touches_other_files("m", now, Some(1)),
                "GitRevertBlocked",
                "True",
                "CommitTouchesOtherFiles",
            ),
            (
                reconciliation_succeeded("m", now, Some(1)),
                "Ready",
                "True",
                "ReconciliationSucceeded",
            ),
            (
                not_ready(reasons::FETCH_FAILED, "m", now, Some(1)),
                "Ready",
                "False",
                "FetchFailed",
            ),
            (
                reconciling("m", now, Some(1)),
                "Reconciling",
                "True",
                "Progressing",
            ),
            (
                stalled(reasons::RENDER_FAILED, "m", now, Some(1)),
                "Stalled",
                "True",
                "RenderFailed",
            ),
        ];
        for (condition, condition_type, status, reason) in cases {
            assert_eq!(condition.type_, condition_type);
            assert_eq!(condition.status, status, "{condition_type}/{reason}");
            assert_eq!(condition.reason, reason);
            assert_eq!(condition.message, "m");
            assert_eq!(condition.last_transition_time, Time(now));
            assert_eq!(condition.observed_generation, Some(1));
        }
    }

    #[test]
    fn set_keeps_transition_time_while_status_is_unchanged() {
        struct Case {
            name: &'static str,
            second: Condition,
            changed: bool,
            transition_time: Timestamp,
        }
        let first = replica_set_updated("step 1", at(100), Some(1));
        let cases = [
            Case {
                name: "identical apart from the clock",
                second: replica_set_updated("step 1", at(200), Some(1)),
                changed: false,
                transition_time: at(100),
            },
            Case {
                name: "new message, same status",
                second: replica_set_updated("step 2", at(200), Some(1)),
                changed: true,
                transition_time: at(100),
            },
            Case {
                name: "new generation, same status",
                second: replica_set_updated("step 1", at(200), Some(2)),
                changed: true,
                transition_time: at(100),
            },
            Case {
                name: "status flips",
                second: rollout_aborted("analysis failed", at(200), Some(1)),
                changed: true,
                transition_time: at(200),
            },
        ];
        for case in cases {
            let mut conditions = vec![rollout_paused("p", at(50), Some(1)), first.clone()];
            let changed = set(&mut conditions, case.second.clone());
            assert_eq!(changed, case.changed, "{}", case.name);
            assert_eq!(conditions.len(), 2, "{}", case.name);
            let progressing = find(&conditions, types::PROGRESSING).unwrap();
            assert_eq!(
                progressing.last_transition_time,
                Time(case.transition_time),
                "{}",
                case.name
            );
            assert_eq!(progressing.message, case.second.message, "{}", case.name);
            assert_eq!(progressing.reason, case.second.reason, "{}", case.name);
            // The other condition is untouched.
            assert_eq!(
                conditions[0],
                rollout_paused("p", at(50), Some(1)),
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn set_appends_a_new_type() {
        let mut conditions = Vec::new();
        assert!(set(&mut conditions, invalid_spec("no steps", at(1), None)));
        assert!(is_true(&conditions, types::INVALID_SPEC));
        assert!(!is_true(&conditions, types::PAUSED));
    }

    #[test]
    fn remove_reports_whether_the_type_was_present() {
        let mut conditions = vec![rollout_paused("p", at(1), None)];
        assert!(!remove(&mut conditions, types::HEALTHY));
        assert!(remove(&mut conditions, types::PAUSED));
        assert!(conditions.is_empty());
    }
}
