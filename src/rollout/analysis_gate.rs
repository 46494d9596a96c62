//! The AnalysisRuns a Rollout waits on: one per analysis step, a background run, and blue-green's pre- and
//! post-promotion runs. A run's name follows from the persisted status, so a restart never makes two.

use crate::api::analysis::{AnalysisPhase, AnalysisRunSpec};
use crate::api::rollout::{BlueGreenStatus, CanaryStatus, PauseReason, RolloutAnalysisRunStatus};

use super::plan::{Action, Planner, events};

/// Which run of a Rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Slot {
    /// The run of canary step `i`.
    Step(i32),
    /// The canary background run.
    Background,
    /// Blue-green pre-promotion.
    PrePromotion,
    /// Blue-green post-promotion.
    PostPromotion,
}

impl Slot {
    /// The part of the run name and of the `weir.io/analysis` label that names the slot.
    pub fn label(self) -> String {
        match self {
            Slot::Step(i) => format!("step{i}"),
            Slot::Background => "background".into(),
            Slot::PrePromotion => "prepromotion".into(),
            Slot::PostPromotion => "postpromotion".into(),
        }
    }
}

/// An AnalysisRun as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedAnalysisRun {
    /// Its phase.
    pub phase: AnalysisPhase,
    /// Its message: the metric and value that decided.
    pub message: Option<String>,
    /// Whether `spec.terminate` is set.
    pub terminated: bool,
    /// `metadata.creationTimestamp`, to keep the newest runs.
    pub created: Option<jiff::Timestamp>,
}

/// Completed runs kept per Rollout, for each of successful and unsuccessful ones (as Argo Rollouts'
/// default `successfulRunHistoryLimit` and `unsuccessfulRunHistoryLimit`).
pub const RUN_HISTORY_LIMIT: usize = 5;

/// Deletes completed runs beyond the history limits, oldest first; runs the status still names are kept.
pub(crate) fn collect_history(p: &mut Planner<'_>) {
    let named: Vec<String> = {
        let c = p.status.canary.clone().unwrap_or_default();
        let b = p.status.blue_green.clone().unwrap_or_default();
        [
            c.current_step_analysis_run_status,
            c.current_background_analysis_run_status,
            b.pre_promotion_analysis_run_status,
            b.post_promotion_analysis_run_status,
        ]
        .into_iter()
        .flatten()
        .map(|r| r.name)
        .collect()
    };
    for successful in [true, false] {
        let mut done: Vec<(&String, &ObservedAnalysisRun)> = p
            .observed
            .analysis_runs
            .iter()
            .filter(|(n, r)| {
                r.phase.is_completed()
                    && (r.phase == AnalysisPhase::Successful) == successful
                    && !named.contains(n)
            })
            .collect();
        if done.len() <= RUN_HISTORY_LIMIT {
            continue;
        }
        done.sort_by_key(|(n, r)| (r.created, (*n).clone()));
        let excess = done.len() - RUN_HISTORY_LIMIT;
        let deletes: Vec<Action> = done
            .iter()
            .take(excess)
            .map(|(n, _)| Action::DeleteAnalysisRun { name: (*n).clone() })
            .collect();
        p.actions.extend(deletes);
    }
}

/// The verdict of a slot's run for the plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Gate {
    /// Successful: move on.
    Passed,
    /// Still measuring (or just created).
    Waiting,
    /// Failed or Error: abort, with this message.
    Failed(String),
    /// Inconclusive and not yet promoted past: the Rollout pauses for a person.
    Inconclusive(String),
    /// The run cannot be made (a template or argument is missing): pause with this message.
    Blocked(String),
}

fn slot_status<'a>(p: &'a mut Planner<'_>, slot: Slot) -> &'a mut Option<RolloutAnalysisRunStatus> {
    match slot {
        Slot::Step(_) => {
            &mut p
                .status
                .canary
                .get_or_insert_with(CanaryStatus::default)
                .current_step_analysis_run_status
        }
        Slot::Background => {
            &mut p
                .status
                .canary
                .get_or_insert_with(CanaryStatus::default)
                .current_background_analysis_run_status
        }
        Slot::PrePromotion => {
            &mut p
                .status
                .blue_green
                .get_or_insert_with(BlueGreenStatus::default)
                .pre_promotion_analysis_run_status
        }
        Slot::PostPromotion => {
            &mut p
                .status
                .blue_green
                .get_or_insert_with(BlueGreenStatus::default)
                .post_promotion_analysis_run_status
        }
    }
}

fn prefix(p: &Planner<'_>, slot: Slot) -> String {
    let ro: String =
        p.ro.metadata
            .name
            .clone()
            .unwrap_or_default()
            .chars()
            .take(180)
            .collect();
    format!("{ro}-{}-{}-", p.current, slot.label())
}

/// Drives the run of `slot`: creates it when missing, and reads its verdict.
pub(crate) fn gate(p: &mut Planner<'_>, slot: Slot) -> Gate {
    let prefix = prefix(p, slot);
    let recorded = slot_status(p, slot)
        .clone()
        .filter(|r| r.name.starts_with(&prefix));
    match recorded {
        Some(r) => {
            let Some(run) = p.observed.analysis_runs.get(&r.name).cloned() else {
                // Just created; the watch has not shown it yet.
                p.requeue_after(std::time::Duration::from_secs(1));
                return Gate::Waiting;
            };
            *slot_status(p, slot) = Some(RolloutAnalysisRunStatus {
                name: r.name.clone(),
                status: run.phase,
                message: run.message.clone(),
            });
            let message = format!(
                "AnalysisRun {} {}: {}",
                r.name,
                run.phase.as_str(),
                run.message.clone().unwrap_or_default()
            );
            match run.phase {
                AnalysisPhase::Successful => Gate::Passed,
                AnalysisPhase::Failed | AnalysisPhase::Error => Gate::Failed(message),
                AnalysisPhase::Inconclusive => Gate::Inconclusive(message),
                AnalysisPhase::Pending | AnalysisPhase::Running => Gate::Waiting,
            }
        }
        None => match p.observed.run_specs.get(&slot).cloned() {
            Some(Ok(spec)) => {
                let persisted = p.ro.status.as_ref().map_or(0, |s| s.recorded_events);
                let name = format!("{prefix}{persisted}");
                p.actions.push(Action::CreateAnalysisRun {
                    name: name.clone(),
                    slot,
                    spec: Box::new(spec),
                });
                *slot_status(p, slot) = Some(RolloutAnalysisRunStatus {
                    name,
                    status: AnalysisPhase::Pending,
                    message: None,
                });
                p.requeue_after(std::time::Duration::from_secs(1));
                Gate::Waiting
            }
            Some(Err(message)) => Gate::Blocked(message),
            None => Gate::Blocked(format!("no analysis prepared for {}", slot.label())),
        },
    }
}

/// Inconclusive runs pause the Rollout; a promote (clearing the pause condition) lets it pass.
pub(crate) fn inconclusive(p: &mut Planner<'_>, message: String) -> bool {
    if p.paused_for(PauseReason::InconclusiveAnalysisRun).is_some() {
        return false;
    }
    if p.status.controller_pause {
        p.status.controller_pause = false;
        p.event(
            events::PROMOTED,
            "Rollout promoted past an inconclusive analysis",
        );
        return true;
    }
    p.add_pause(PauseReason::InconclusiveAnalysisRun);
    p.warn(events::PAUSED, format!("Rollout paused: {message}"));
    false
}

/// Stops the run of `slot` if it still measures (background analysis after the steps, or any run of an
/// aborted release).
pub(crate) fn terminate(p: &mut Planner<'_>, slot: Slot) {
    let prefix = prefix(p, slot);
    let Some(r) = slot_status(p, slot)
        .clone()
        .filter(|r| r.name.starts_with(&prefix))
    else {
        return;
    };
    if let Some(run) = p.observed.analysis_runs.get(&r.name)
        && !run.phase.is_completed()
        && !run.terminated
        && !p
            .actions
            .iter()
            .any(|a| matches!(a, Action::TerminateAnalysisRun { name } if *name == r.name))
    {
        p.actions.push(Action::TerminateAnalysisRun {
            name: r.name.clone(),
        });
    }
}

/// The spec type carried by [`Action::CreateAnalysisRun`].
pub type RunSpec = AnalysisRunSpec;
