//! The pure core of the Rollout controller: (spec, status, observed objects, now) → (actions, new status,
//! events, requeue). The controller executes the actions in order and writes the status only when all of
//! them succeeded, so a crash at any point leaves a status from which the same plan is made again.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::conditions::{self, ConditionStatus, reasons, types};
use crate::api::rollout::{
    PauseCondition, PauseReason, Rollout, RolloutPhase, RolloutStatus, RolloutStrategy,
    TrafficWeights,
};

use super::analysis_gate::{ObservedAnalysisRun, Slot};
use super::hash::pod_template_hash;
use super::{blue_green, canary};
use crate::api::analysis::AnalysisRunSpec;

/// How soon an invalid spec is looked at again: what is missing (a Service, a route) may be
/// created a moment later, e.g. by the same Git sync, and the controller does not watch those kinds.
pub const INVALID_SPEC_RETRY: Duration = Duration::from_secs(5);

/// A ReplicaSet of the Rollout, as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedReplicaSet {
    /// Its name.
    pub name: String,
    /// The pod-template hash it runs.
    pub hash: String,
    /// `spec.replicas`.
    pub replicas: i32,
    /// `status.readyReplicas`.
    pub ready: i32,
    /// `status.availableReplicas`.
    pub available: i32,
    /// When weir scheduled it to scale to zero (`weir.io/scale-down-at` annotation).
    pub scale_down_at: Option<Timestamp>,
    /// `metadata.creationTimestamp`, to find the oldest for the history limit.
    pub created: Option<Timestamp>,
}

/// A Service the strategy names.
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceState {
    /// No such Service.
    Missing,
    /// The Service, with the pod-template hash its selector is pinned to (None = not pinned yet).
    Present(Option<String>),
}

/// The traffic routers of a canary, as observed.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum TrafficState {
    /// The Rollout routes no traffic by weight.
    #[default]
    Unrouted,
    /// The routers' canary weight when they all agree; None when they differ or were never set.
    Weights(Option<i32>),
    /// A router cannot be managed; the message names the route and the problem.
    Invalid(String),
}

/// Everything the plan looks at besides the Rollout.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed {
    /// The Rollout's ReplicaSets.
    pub replica_sets: Vec<ObservedReplicaSet>,
    /// The Services the strategy names, by name.
    pub services: BTreeMap<String, ServiceState>,
    /// The traffic routers.
    pub traffic: TrafficState,
    /// The Rollout's AnalysisRuns, by name.
    pub analysis_runs: BTreeMap<String, ObservedAnalysisRun>,
    /// The run spec each analysis of the Rollout would get now, or why it cannot be made.
    pub run_specs: BTreeMap<Slot, Result<AnalysisRunSpec, String>>,
}

/// One change to make in the cluster.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Point a Service's selector at a revision.
    PinService {
        /// The Service.
        service: String,
        /// The pod-template hash.
        hash: String,
    },
    /// Create the ReplicaSet of the current template.
    CreateReplicaSet {
        /// The pod-template hash.
        hash: String,
        /// Its initial size.
        replicas: i32,
    },
    /// Resize a ReplicaSet and set or clear its scale-down deadline.
    ScaleReplicaSet {
        /// The ReplicaSet.
        name: String,
        /// The new size.
        replicas: i32,
        /// The scale-down deadline to record (None clears it).
        scale_down_at: Option<Timestamp>,
    },
    /// Delete an old ReplicaSet beyond the revision history limit.
    DeleteReplicaSet {
        /// The ReplicaSet.
        name: String,
    },
    /// Create the AnalysisRun of a slot.
    CreateAnalysisRun {
        /// Its name.
        name: String,
        /// Which run.
        slot: Slot,
        /// Its spec.
        spec: Box<AnalysisRunSpec>,
    },
    /// Delete a completed run beyond the history limit.
    DeleteAnalysisRun {
        /// Its name.
        name: String,
    },
    /// Ask a run to stop measuring.
    TerminateAnalysisRun {
        /// Its name.
        name: String,
    },
    /// Set the canary weight on every traffic router.
    SetWeights {
        /// Percent to the canary.
        canary: i32,
        /// The release is over: routers drop the canary backends they added.
        complete: bool,
    },
}

/// An Event to record, because a transition happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The Event reason (RolloutStepCompleted, RolloutPaused, ...).
    pub reason: &'static str,
    /// The Event message.
    pub message: String,
    /// A Warning rather than a Normal Event.
    pub warning: bool,
}

/// Event reasons the Rollout controller records.
pub mod events {
    /// A step finished.
    pub const STEP_COMPLETED: &str = "RolloutStepCompleted";
    /// The Rollout paused.
    pub const PAUSED: &str = "RolloutPaused";
    /// A person (or auto-promotion) promoted the Rollout.
    pub const PROMOTED: &str = "RolloutPromoted";
    /// The release was aborted.
    pub const ABORTED: &str = "RolloutAborted";
    /// The release finished and the new revision is stable.
    pub const COMPLETED: &str = "RolloutCompleted";
    /// Traffic weights changed.
    pub const WEIGHT_UPDATED: &str = "TrafficWeightUpdated";
    /// The spec cannot be acted on.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// An aborted release is tried again.
    pub const RETRIED: &str = "RolloutRetried";
}

/// What to do, and the status to write once it is done.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Changes in order.
    pub actions: Vec<Action>,
    /// The new status.
    pub status: RolloutStatus,
    /// Events to record, in order.
    pub transitions: Vec<Transition>,
    /// When to look again even if nothing changes.
    pub requeue: Option<Duration>,
}

/// Working state of one planning pass, shared by the strategies.
pub(crate) struct Planner<'a> {
    pub ro: &'a Rollout,
    pub observed: &'a Observed,
    pub now: Timestamp,
    pub current: String,
    pub status: RolloutStatus,
    pub actions: Vec<Action>,
    pub transitions: Vec<Transition>,
    pub requeue: Option<Duration>,
}

/// Makes the plan for one Rollout.
pub fn plan(ro: &Rollout, observed: &Observed, now: Timestamp) -> Plan {
    let status = ro.status.clone().unwrap_or_default();
    let mut p = Planner {
        ro,
        observed,
        now,
        current: pod_template_hash(&ro.spec.template),
        status,
        actions: Vec::new(),
        transitions: Vec::new(),
        requeue: None,
    };
    p.status.observed_generation = ro.metadata.generation;
    p.status.current_pod_hash = Some(p.current.clone());
    p.status.selector = Some(selector_string(ro));
    match validate(ro, observed) {
        Err(message) => p.invalid(message),
        Ok(()) => {
            let had_invalid = conditions::remove(&mut p.status.conditions, types::INVALID_SPEC);
            let _ = had_invalid;
            match &ro.spec.strategy {
                RolloutStrategy::Canary(c) => canary::plan(&mut p, c),
                RolloutStrategy::BlueGreen(b) => blue_green::plan(&mut p, b),
            }
            p.history_limit();
            super::analysis_gate::collect_history(&mut p);
        }
    }
    p.count_replicas();
    Plan {
        actions: p.actions,
        status: p.status,
        transitions: p.transitions,
        requeue: p.requeue,
    }
}

fn selector_string(ro: &Rollout) -> String {
    ro.spec
        .selector
        .match_labels
        .as_ref()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// Checks what the schema cannot: references to Services and routes, and the selector.
fn validate(ro: &Rollout, observed: &Observed) -> Result<(), String> {
    let labels = ro
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let selects = ro
        .spec
        .selector
        .match_labels
        .as_ref()
        .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| labels.get(k) == Some(v)));
    if !selects {
        return Err("spec.selector: Invalid value: must select spec.template.metadata.labels with matchLabels".into());
    }
    let missing = |field: &str, name: &Option<String>| -> Result<(), String> {
        match name {
            Some(n) if observed.services.get(n) == Some(&ServiceState::Missing) => {
                Err(format!("{field}: Service \"{n}\" not found"))
            }
            _ => Ok(()),
        }
    };
    match &ro.spec.strategy {
        RolloutStrategy::Canary(c) => {
            for (i, step) in c.steps.iter().enumerate() {
                if let crate::api::CanaryStep::SetWeight(w) = step
                    && !(0..=100).contains(w)
                {
                    return Err(format!(
                        "spec.strategy.canary.steps[{i}].setWeight: Invalid value: {w}: must be between 0 and 100"
                    ));
                }
            }
            if c.traffic_routing.is_some() {
                if c.stable_service.is_none() {
                    return Err("spec.strategy.canary.stableService: Required value: traffic routing needs a stable Service".into());
                }
                if c.canary_service.is_none() {
                    return Err("spec.strategy.canary.canaryService: Required value: traffic routing needs a canary Service".into());
                }
            }
            if c.stable_service.is_some() && c.stable_service == c.canary_service {
                return Err("spec.strategy.canary.canaryService: Invalid value: must differ from stableService".into());
            }
            missing("spec.strategy.canary.stableService", &c.stable_service)?;
            missing("spec.strategy.canary.canaryService", &c.canary_service)?;
            if let TrafficState::Invalid(m) = &observed.traffic {
                return Err(format!("spec.strategy.canary.trafficRouting: {m}"));
            }
        }
        RolloutStrategy::BlueGreen(b) => {
            missing(
                "spec.strategy.blueGreen.activeService",
                &Some(b.active_service.clone()),
            )?;
            missing("spec.strategy.blueGreen.previewService", &b.preview_service)?;
            if b.preview_service.as_deref() == Some(b.active_service.as_str()) {
                return Err("spec.strategy.blueGreen.previewService: Invalid value: must differ from activeService".into());
            }
        }
    }
    Ok(())
}

impl Planner<'_> {
    fn generation(&self) -> Option<i64> {
        self.ro.metadata.generation
    }

    /// Records an Event.
    pub fn event(&mut self, reason: &'static str, message: impl Into<String>) {
        self.transitions.push(Transition {
            reason,
            message: message.into(),
            warning: false,
        });
    }

    /// Records a Warning Event.
    pub fn warn(&mut self, reason: &'static str, message: impl Into<String>) {
        self.transitions.push(Transition {
            reason,
            message: message.into(),
            warning: true,
        });
    }

    /// Asks to be called again after `d` at the latest.
    pub fn requeue_after(&mut self, d: Duration) {
        self.requeue = Some(self.requeue.map_or(d, |r| r.min(d)));
    }

    fn invalid(&mut self, message: String) {
        let changed = {
            let c = conditions::invalid_spec(message.clone(), self.now, self.generation());
            conditions::set(&mut self.status.conditions, c)
        };
        if changed {
            self.warn(events::INVALID_SPEC, message.clone());
        }
        self.set_phase(RolloutPhase::Degraded, format!("InvalidSpec: {message}"));
        self.requeue_after(INVALID_SPEC_RETRY);
    }

    /// Sets phase and message, and the Healthy/Paused conditions that mirror them.
    pub fn set_phase(&mut self, phase: RolloutPhase, message: impl Into<String>) {
        let message = message.into();
        self.status.phase = Some(phase);
        self.status.message = Some(message.clone());
        let healthy = phase == RolloutPhase::Healthy;
        let (reason, msg) = if healthy {
            (reasons::ROLLOUT_HEALTHY, "Rollout is healthy".to_string())
        } else {
            (reasons::ROLLOUT_NOT_HEALTHY, message.clone())
        };
        {
            let c = conditions::new(
                types::HEALTHY,
                ConditionStatus::from(healthy),
                reason,
                msg,
                self.now,
                self.generation(),
            );
            conditions::set(&mut self.status.conditions, c)
        };
        let paused = phase == RolloutPhase::Paused;
        {
            let c = conditions::new(
                types::PAUSED,
                ConditionStatus::from(paused),
                if paused {
                    reasons::ROLLOUT_PAUSED
                } else {
                    reasons::ROLLOUT_RESUMED
                },
                if paused {
                    message
                } else {
                    "Rollout is not paused".into()
                },
                self.now,
                self.generation(),
            );
            conditions::set(&mut self.status.conditions, c)
        };
    }

    /// Sets the Progressing condition.
    pub fn progressing(&mut self, holds: bool, reason: &str, message: impl Into<String>) {
        {
            let c = conditions::new(
                types::PROGRESSING,
                ConditionStatus::from(holds),
                reason,
                message,
                self.now,
                self.generation(),
            );
            conditions::set(&mut self.status.conditions, c)
        };
    }

    /// Sets the Completed condition.
    pub fn completed(&mut self, holds: bool) {
        let (reason, message) = if holds {
            (
                reasons::ROLLOUT_COMPLETED,
                "Rollout completed: every pod runs the stable revision",
            )
        } else {
            (reasons::ROLLOUT_NOT_COMPLETED, "A release is in progress")
        };
        {
            let c = conditions::new(
                types::COMPLETED,
                ConditionStatus::from(holds),
                reason,
                message,
                self.now,
                self.generation(),
            );
            conditions::set(&mut self.status.conditions, c)
        };
    }

    /// The ReplicaSet running `hash`, if any.
    pub fn rs(&self, hash: &str) -> Option<&ObservedReplicaSet> {
        self.observed.replica_sets.iter().find(|r| r.hash == hash)
    }

    /// Ready pods of `hash`.
    pub fn ready(&self, hash: &str) -> i32 {
        self.rs(hash).map_or(0, |r| r.ready.min(r.replicas))
    }

    /// Makes the ReplicaSet of `hash` exist at `replicas` pods, without a scale-down deadline.
    pub fn ensure_rs(&mut self, hash: &str, replicas: i32) {
        let action = match self.rs(hash) {
            None => Some(Action::CreateReplicaSet {
                hash: hash.to_string(),
                replicas,
            }),
            Some(rs) if rs.replicas != replicas || rs.scale_down_at.is_some() => {
                Some(Action::ScaleReplicaSet {
                    name: rs.name.clone(),
                    replicas,
                    scale_down_at: None,
                })
            }
            Some(_) => None,
        };
        self.actions.extend(action);
    }

    /// Scales the ReplicaSet of `hash` to zero once `delay` has passed since this was first asked.
    pub fn scale_down_after(&mut self, hash: &str, delay: Duration) {
        let Some(rs) = self.rs(hash).cloned() else {
            return;
        };
        let planned = self
            .actions
            .iter()
            .any(|a| matches!(a, Action::ScaleReplicaSet { name, .. } if *name == rs.name));
        if rs.replicas == 0 || planned {
            return;
        }
        match rs.scale_down_at {
            None => {
                let at = self.now.checked_add(delay).unwrap_or(self.now);
                self.actions.push(Action::ScaleReplicaSet {
                    name: rs.name,
                    replicas: rs.replicas,
                    scale_down_at: Some(at),
                });
                self.requeue_after(delay);
            }
            Some(at) if at <= self.now => {
                self.actions.push(Action::ScaleReplicaSet {
                    name: rs.name,
                    replicas: 0,
                    scale_down_at: None,
                });
            }
            Some(at) => {
                let left = at.duration_since(self.now);
                self.requeue_after(Duration::try_from(left).unwrap_or(Duration::from_secs(1)));
            }
        }
    }

    /// Scales every ReplicaSet except `keep` to zero after `delay`.
    pub fn scale_down_others(&mut self, keep: &[&str], delay: Duration) {
        let others: Vec<String> = self
            .observed
            .replica_sets
            .iter()
            .filter(|r| !keep.contains(&r.hash.as_str()))
            .map(|r| r.hash.clone())
            .collect();
        for h in others {
            self.scale_down_after(&h, delay);
        }
    }

    /// Points a Service at a revision, when it is not already.
    pub fn pin(&mut self, service: Option<&str>, hash: &str) {
        let Some(service) = service else {
            return;
        };
        // A pin planned earlier in this pass wins over the observed selector: re-planning a pass that was
        // cut short can pin the stable Service back to the old revision before promoting it again.
        let planned = self.actions.iter().rev().find_map(|a| match a {
            Action::PinService {
                service: s,
                hash: h,
            } if s == service => Some(h.as_str()),
            _ => None,
        });
        let pinned = match planned {
            Some(h) => Some(h),
            None => match self.observed.services.get(service) {
                Some(ServiceState::Present(h)) => h.as_deref(),
                _ => None,
            },
        };
        if pinned != Some(hash) {
            self.actions.push(Action::PinService {
                service: service.to_string(),
                hash: hash.to_string(),
            });
        }
    }

    /// Sets the traffic weights, when the routers do not already carry them.
    pub fn set_weights(&mut self, canary: i32, complete: bool) {
        let TrafficState::Weights(observed) = &self.observed.traffic else {
            if self.observed.traffic == TrafficState::Unrouted {
                self.status.weights = Some(TrafficWeights {
                    canary,
                    stable: 100 - canary,
                });
            }
            return;
        };
        // What the routers will carry once the actions planned so far are done.
        let planned = self.actions.iter().rev().find_map(|a| match a {
            Action::SetWeights { canary, .. } => Some(*canary),
            _ => None,
        });
        let carried = planned.or(*observed);
        // Completion goes to the routers once, when a release ends, so they drop the canary backends
        // they added; in a steady state nothing is sent.
        let was = self.ro.status.as_ref();
        let settling = complete
            && planned.is_none()
            && was.is_some_and(|s| {
                s.current_pod_hash != s.stable_rs
                    || s.abort
                    || s.weights.is_some_and(|w| w.canary != 0)
            });
        if carried != Some(canary) || settling {
            self.actions.push(Action::SetWeights { canary, complete });
        }
        // The Event follows the recorded weights, not the routes: a pass re-planned after a crash or a
        // conflict sees routes its first attempt already moved, and must record the same transitions.
        let recorded = self.status.weights.map(|w| w.canary).or(carried);
        if recorded != Some(canary) {
            self.event(
                events::WEIGHT_UPDATED,
                format!(
                    "Traffic weight set to {canary}% canary, {}% stable",
                    100 - canary
                ),
            );
        }
        self.status.weights = Some(TrafficWeights {
            canary,
            stable: 100 - canary,
        });
    }

    /// Whether a pause condition of this reason is present.
    pub fn paused_for(&self, reason: PauseReason) -> Option<&PauseCondition> {
        self.status
            .pause_conditions
            .iter()
            .find(|c| c.reason == reason)
    }

    /// Adds a pause condition (started now) unless present.
    pub fn add_pause(&mut self, reason: PauseReason) {
        if self.paused_for(reason).is_none() {
            self.status.pause_conditions.push(PauseCondition {
                reason,
                start_time: Time(self.now),
            });
            self.status.controller_pause = true;
        }
    }

    /// Starts the progress-deadline clock for a step that waits for pods, unless it is running.
    pub fn start_step_clock(&mut self) {
        if self.status.step_started_at.is_none() {
            self.status.step_started_at = Some(Time(self.now));
        }
    }

    /// Whether the step waiting for pods has run past `progressDeadlineSeconds`.
    pub fn past_deadline(&mut self) -> bool {
        let deadline = Duration::from_secs(
            u64::try_from(self.ro.spec.progress_deadline_seconds()).unwrap_or(600),
        );
        let Some(Time(start)) = self.status.step_started_at else {
            return false;
        };
        let elapsed = Duration::try_from(self.now.duration_since(start)).unwrap_or_default();
        if elapsed >= deadline {
            return true;
        }
        self.requeue_after(deadline - elapsed);
        false
    }

    /// Aborts the release, recording why.
    pub fn abort(&mut self, reason: &str, message: impl Into<String>) {
        let message = message.into();
        self.status.abort = true;
        self.status.aborted_at = Some(Time(self.now));
        self.progressing(false, reason, message.clone());
        self.warn(events::ABORTED, message);
    }

    /// Deletes scaled-down ReplicaSets beyond `revisionHistoryLimit`, oldest first.
    fn history_limit(&mut self) {
        let limit = usize::try_from(self.ro.spec.revision_history_limit()).unwrap_or(10);
        let keep = [
            Some(self.current.as_str()),
            self.status.stable_rs.as_deref(),
        ];
        let mut old: Vec<&ObservedReplicaSet> = self
            .observed
            .replica_sets
            .iter()
            .filter(|r| r.replicas == 0 && !keep.contains(&Some(r.hash.as_str())))
            .collect();
        if old.len() <= limit {
            return;
        }
        old.sort_by_key(|r| r.created);
        let excess = old.len() - limit;
        let deletes: Vec<Action> = old
            .iter()
            .take(excess)
            .map(|r| Action::DeleteReplicaSet {
                name: r.name.clone(),
            })
            .collect();
        self.actions.extend(deletes);
    }

    fn count_replicas(&mut self) {
        let rss = &self.observed.replica_sets;
        // Saturating: the counts are whatever the ReplicaSets say, and two at i32::MAX must not
        // overflow.
        let total = |count: fn(&ObservedReplicaSet) -> i32| {
            rss.iter().map(count).fold(0i32, i32::saturating_add)
        };
        self.status.replicas = total(|r| r.replicas);
        self.status.ready_replicas = total(|r| r.ready);
        self.status.available_replicas = total(|r| r.available);
        self.status.updated_replicas = self.rs(&self.current).map_or(0, |r| r.replicas);
    }

    /// Whether the transition from an aborted release back to a fresh attempt happens now.
    pub fn take_retry(&mut self) -> bool {
        if !self.status.abort && self.status.aborted_at.is_some() {
            self.status.aborted_at = None;
            self.status.current_step_index = Some(0);
            self.status.pause_conditions.clear();
            self.status.controller_pause = false;
            self.status.step_started_at = None;
            self.event(
                events::RETRIED,
                "Rollout retried: the release starts again from the first step",
            );
            return true;
        }
        false
    }

    /// Resets the release bookkeeping when a new template arrives.
    pub fn start_release(&mut self) {
        self.status.current_step_index = Some(0);
        self.status.abort = false;
        self.status.aborted_at = None;
        self.status.pause_conditions.clear();
        self.status.controller_pause = false;
        self.status.promote_full = false;
        self.status.step_started_at = None;
        self.status.canary = None;
        if let Some(bg) = self.status.blue_green.as_mut() {
            bg.pre_promotion_analysis_run_status = None;
            bg.post_promotion_analysis_run_status = None;
        }
    }

    /// The release is over on `hash`: stable again, nothing pending.
    pub fn settle(&mut self, hash: &str) {
        self.status.stable_rs = Some(hash.to_string());
        // The annotation travels with the template it describes, so while `hash` is the current
        // template it names the commit that declared it.
        if let Some(commit) = self
            .ro
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(crate::api::TEMPLATE_COMMIT_ANNOTATION))
            && *hash == self.current
        {
            self.status.stable_commit = Some(commit.clone());
        }
        self.status.abort = false;
        self.status.aborted_at = None;
        self.status.pause_conditions.clear();
        self.status.controller_pause = false;
        self.status.promote_full = false;
        self.status.step_started_at = None;
    }

    /// Healthy once `hash` has all its pods ready; records RolloutCompleted on the way into Healthy.
    pub fn settle_when_ready(&mut self, hash: &str, replicas: i32, scale_down_delay: Duration) {
        let ready = self.ready(hash);
        self.settle(hash);
        self.scale_down_others(&[hash], scale_down_delay);
        if ready >= replicas {
            let was = self.ro.status.as_ref().and_then(|s| s.phase);
            if was != Some(RolloutPhase::Healthy) {
                self.event(
                    events::COMPLETED,
                    format!("Rollout completed: revision {hash} is stable"),
                );
            }
            self.completed(true);
            self.progressing(
                true,
                reasons::NEW_REPLICA_SET_AVAILABLE,
                format!("Revision {hash} is stable"),
            );
            self.set_phase(RolloutPhase::Healthy, format!("Revision {hash} is stable"));
        } else {
            self.progressing(
                true,
                reasons::REPLICA_SET_UPDATED,
                format!("Waiting for {replicas} ready pods ({ready} ready)"),
            );
            self.set_phase(
                RolloutPhase::Progressing,
                format!(
                    "Waiting for {replicas} pods of revision {hash} to be ready ({ready} ready)"
                ),
            );
            self.requeue_after(Duration::from_secs(5));
        }
    }

    /// How many pods `percent` of `spec.replicas` is, rounded up.
    pub fn pods_for(&self, percent: i32) -> i32 {
        let replicas = self.ro.spec.replicas();
        ((i64::from(replicas) * i64::from(percent.clamp(0, 100)) + 99) / 100) as i32
    }

    /// An analysis cannot run (missing template or argument): wait, paused, for the spec to be fixed.
    pub fn analysis_blocked(&mut self, what: &str, why: &str) {
        let message = format!("Waiting at {what}: {why}");
        self.set_phase(RolloutPhase::Paused, message);
        self.requeue_after(Duration::from_secs(10));
    }
}
