//! The canary step machine.

use std::time::Duration;

use crate::api::conditions::reasons;
use crate::api::rollout::{CanaryStep, CanaryStrategy, PauseReason, RolloutPhase, SetCanaryScale};

use super::analysis_gate::{self, Gate, Slot};
use super::plan::{Planner, TrafficState, events};

/// Plans one pass of a canary Rollout.
pub(crate) fn plan(p: &mut Planner<'_>, c: &CanaryStrategy) {
    let current = p.current.clone();
    let replicas = p.ro.spec.replicas();
    let stable_service = c.stable_service.as_deref();
    let canary_service = c.canary_service.as_deref();
    let scale_down_delay = secs(c.scale_down_delay_seconds());

    // First release, or a template back at the stable revision: no steps.
    let stable = match p.status.stable_rs.clone() {
        None => {
            p.pin(stable_service, &current);
            p.pin(canary_service, &current);
            p.ensure_rs(&current, replicas);
            p.set_weights(0, false);
            p.status.current_step_index = Some(steps_len(c));
            return p.settle_when_ready(&current, replicas, scale_down_delay);
        }
        Some(s) => s,
    };
    if current == stable {
        // A reverted or unchanged template: stable at full size, any canary away, nothing to step through.
        let was_aborted = p.status.abort || p.status.aborted_at.is_some();
        p.pin(stable_service, &current);
        p.ensure_rs(&current, replicas);
        p.set_weights(0, true);
        p.pin(canary_service, &current);
        let abort_delay = secs(c.abort_scale_down_delay_seconds());
        p.scale_down_others(
            &[current.as_str()],
            if was_aborted {
                abort_delay
            } else {
                scale_down_delay
            },
        );
        p.status.current_step_index = Some(steps_len(c));
        return p.settle_when_ready(&current, replicas, scale_down_delay);
    }

    // A release of `current` over `stable`.
    let previous =
        p.ro.status
            .as_ref()
            .and_then(|s| s.current_pod_hash.clone());
    if previous.as_deref() != Some(current.as_str()) || p.status.current_step_index.is_none() {
        p.start_release();
        p.progressing(
            true,
            reasons::NEW_REPLICA_SET_CREATED,
            format!("Releasing revision {current} over stable {stable}"),
        );
    }
    p.completed(false);
    p.take_retry();
    // Pin before any canary pod exists, so neither Service ever selects the wrong revision.
    p.pin(stable_service, &stable);
    p.pin(canary_service, &current);
    p.ensure_rs(&stable, replicas);
    // Superseded canaries (neither stable nor current) go away now.
    let superseded: Vec<String> = p
        .observed
        .replica_sets
        .iter()
        .filter(|r| r.hash != stable && r.hash != current && r.replicas > 0)
        .map(|r| r.hash.clone())
        .collect();
    for h in superseded {
        p.scale_down_after(&h, Duration::ZERO);
    }

    if p.status.abort {
        return aborted(p, c, &current, &stable);
    }
    if p.status.promote_full {
        p.status.current_step_index = Some(steps_len(c));
        p.status.pause_conditions.clear();
        p.status.controller_pause = false;
    }
    if p.ro.spec.paused {
        p.set_phase(RolloutPhase::Paused, "Paused by user: resume to continue");
        p.progressing(true, reasons::ROLLOUT_PAUSED, "Paused by user");
        // Hold the canary where it is.
        let index = p.status.current_step_index.unwrap_or(0);
        let (weight, pods) = target(p, c, index);
        p.ensure_rs(&current, pods);
        if weight_reached(p, c, &current, pods) {
            p.set_weights(weight, false);
        }
        return;
    }
    walk_steps(p, c, &current, &stable);
}

fn secs(s: i32) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

fn steps_len(c: &CanaryStrategy) -> i32 {
    i32::try_from(c.steps.len()).unwrap_or(i32::MAX)
}

/// The canary weight in force at step `index`: the last setWeight before it (0 before any).
fn weight_at(c: &CanaryStrategy, index: i32) -> i32 {
    c.steps
        .iter()
        .take(usize::try_from(index.max(0)).unwrap_or(0) + 1)
        .filter_map(|s| match s {
            CanaryStep::SetWeight(w) => Some(*w),
            _ => None,
        })
        .next_back()
        .unwrap_or(0)
}

/// (traffic weight, canary pods) at step `index`, honouring the last setCanaryScale before it.
fn target(p: &Planner<'_>, c: &CanaryStrategy, index: i32) -> (i32, i32) {
    let weight = weight_at(c, index);
    let scale = c
        .steps
        .iter()
        .take(usize::try_from(index.max(0)).unwrap_or(0) + 1)
        .filter_map(|s| match s {
            CanaryStep::SetCanaryScale(s) => Some(s.clone()),
            _ => None,
        })
        .next_back();
    let pods = match scale {
        Some(SetCanaryScale::Replicas(n)) => n.max(0),
        Some(SetCanaryScale::Weight(w)) => p.pods_for(w),
        Some(SetCanaryScale::MatchTrafficWeight(_)) | None => p.pods_for(weight),
    };
    (weight, pods)
}

/// With traffic routing the stable pods stay at full size; without it the split is by pod count, so the
/// stable ReplicaSet gives up only as many pods as the canary has ready.
fn size_stable(p: &mut Planner<'_>, c: &CanaryStrategy, stable: &str, current: &str) {
    if c.traffic_routing.is_some() {
        return;
    }
    let replicas = p.ro.spec.replicas();
    let ready_canary = p.ready(current);
    let stable_size = (replicas - ready_canary).max(0);
    p.ensure_rs(
        stable,
        stable_size
            .max(if ready_canary >= replicas { 0 } else { 1 })
            .min(replicas),
    );
}

fn weight_reached(p: &Planner<'_>, _c: &CanaryStrategy, current: &str, pods: i32) -> bool {
    p.ready(current) >= pods
}

fn walk_steps(p: &mut Planner<'_>, c: &CanaryStrategy, current: &str, stable: &str) {
    let total = steps_len(c);
    let mut index = p.status.current_step_index.unwrap_or(0).clamp(0, total);
    if let Some(bg) = &c.analysis
        && index >= bg.starting_step.unwrap_or(0)
        && index < total
    {
        match analysis_gate::gate(p, Slot::Background) {
            Gate::Passed | Gate::Waiting => {}
            Gate::Failed(msg) => {
                p.abort(
                    reasons::ANALYSIS_RUN_FAILED,
                    format!("Rollout aborted: {msg}"),
                );
                return aborted(p, c, current, stable);
            }
            Gate::Inconclusive(msg) => {
                if !analysis_gate::inconclusive(p, msg.clone()) {
                    p.set_phase(
                        RolloutPhase::Paused,
                        format!("Paused: background {msg}; promote or abort"),
                    );
                    return;
                }
            }
            Gate::Blocked(why) => return p.analysis_blocked("background analysis", &why),
        }
    }
    loop {
        let (weight, pods) = target(p, c, index);
        p.ensure_rs(
            current,
            if index >= total {
                p.ro.spec.replicas()
            } else {
                pods
            },
        );
        if index >= total {
            p.status.current_step_index = Some(total);
            return promote(p, c, current, stable);
        }
        let step = c.steps.get(usize::try_from(index).unwrap_or(0)).cloned();
        let done = match step {
            Some(CanaryStep::SetWeight(w)) => {
                size_stable(p, c, stable, current);
                if weight_reached(p, c, current, pods) {
                    p.set_weights(w, false);
                    true
                } else {
                    p.start_step_clock();
                    if p.past_deadline() {
                        p.status.current_step_index = Some(index);
                        let msg = format!(
                            "ProgressDeadlineExceeded: the canary did not get {pods} ready pods within {}s",
                            p.ro.spec.progress_deadline_seconds()
                        );
                        p.abort(reasons::PROGRESS_DEADLINE_EXCEEDED, msg);
                        return aborted(p, c, current, stable);
                    }
                    p.set_phase(
                        RolloutPhase::Progressing,
                        format!(
                            "Step {}/{}: waiting for {pods} canary pods to be ready ({} ready)",
                            index + 1,
                            total,
                            p.ready(current)
                        ),
                    );
                    p.requeue_after(Duration::from_secs(5));
                    false
                }
            }
            Some(CanaryStep::Pause(pause)) => {
                size_stable(p, c, stable, current);
                if weight_reached(p, c, current, pods) {
                    p.set_weights(weight, false);
                }
                match p.paused_for(PauseReason::CanaryPauseStep).cloned() {
                    Some(cond) => {
                        match pause.duration.as_ref().and_then(|d| d.to_duration().ok()) {
                            Some(d) => {
                                let elapsed = std::time::Duration::try_from(
                                    p.now.duration_since(cond.start_time.0),
                                )
                                .unwrap_or_default();
                                if elapsed >= d {
                                    p.status
                                        .pause_conditions
                                        .retain(|c| c.reason != PauseReason::CanaryPauseStep);
                                    p.status.controller_pause = false;
                                    true
                                } else {
                                    p.requeue_after(d - elapsed);
                                    paused_phase(p, index, total, Some(d - elapsed));
                                    false
                                }
                            }
                            None => {
                                paused_phase(p, index, total, None);
                                false
                            }
                        }
                    }
                    None if p.status.controller_pause => {
                        // The pause condition was cleared by a promote.
                        p.status.controller_pause = false;
                        p.event(
                            events::PROMOTED,
                            format!("Rollout promoted past step {}/{}", index + 1, total),
                        );
                        true
                    }
                    None => {
                        p.add_pause(PauseReason::CanaryPauseStep);
                        let msg = match &pause.duration {
                            Some(d) => format!(
                                "Rollout paused at step {}/{} for {}",
                                index + 1,
                                total,
                                d.as_str()
                            ),
                            None => format!(
                                "Rollout paused at step {}/{} until promoted",
                                index + 1,
                                total
                            ),
                        };
                        p.event(events::PAUSED, msg);
                        if let Some(d) = pause.duration.as_ref().and_then(|d| d.to_duration().ok())
                        {
                            p.requeue_after(d);
                            paused_phase(p, index, total, Some(d));
                        } else {
                            paused_phase(p, index, total, None);
                        }
                        false
                    }
                }
            }
            Some(CanaryStep::SetCanaryScale(_)) => {
                size_stable(p, c, stable, current);
                true
            }
            Some(CanaryStep::Analysis(_)) => {
                size_stable(p, c, stable, current);
                if weight_reached(p, c, current, pods) {
                    p.set_weights(weight, false);
                }
                match analysis_gate::gate(p, Slot::Step(index)) {
                    Gate::Passed => true,
                    Gate::Waiting => {
                        let msg = format!("Step {}/{}: analysis running", index + 1, total);
                        p.set_phase(RolloutPhase::Progressing, msg);
                        false
                    }
                    Gate::Failed(msg) => {
                        p.status.current_step_index = Some(index);
                        p.abort(
                            reasons::ANALYSIS_RUN_FAILED,
                            format!("Rollout aborted: {msg}"),
                        );
                        return aborted(p, c, current, stable);
                    }
                    Gate::Inconclusive(msg) => {
                        if analysis_gate::inconclusive(p, msg.clone()) {
                            true
                        } else {
                            p.set_phase(
                                RolloutPhase::Paused,
                                format!(
                                    "Paused at step {}/{}: {msg}; promote or abort",
                                    index + 1,
                                    total
                                ),
                            );
                            false
                        }
                    }
                    Gate::Blocked(why) => {
                        p.analysis_blocked(&format!("step {}/{}", index + 1, total), &why);
                        false
                    }
                }
            }
            None => true,
        };
        if !done {
            p.status.current_step_index = Some(index);
            return;
        }
        p.event(
            events::STEP_COMPLETED,
            format!("Step {}/{} completed", index + 1, total),
        );
        p.status.step_started_at = None;
        index += 1;
        p.status.current_step_index = Some(index);
    }
}

fn paused_phase(p: &mut Planner<'_>, index: i32, total: i32, left: Option<Duration>) {
    let msg = match left {
        Some(d) => format!(
            "Paused at step {}/{}: resuming in {}s",
            index + 1,
            total,
            d.as_secs().max(1)
        ),
        None => format!(
            "Paused at step {}/{}: waiting for promote",
            index + 1,
            total
        ),
    };
    p.progressing(true, reasons::ROLLOUT_PAUSED, msg.clone());
    p.set_phase(RolloutPhase::Paused, msg);
}

/// All steps done: make the new revision stable. The stable Service moves to the new pods only once they
/// are all ready, and weights return to stable only after that, so no request meets a missing backend.
fn promote(p: &mut Planner<'_>, c: &CanaryStrategy, current: &str, stable: &str) {
    let replicas = p.ro.spec.replicas();
    let ready = p.ready(current);
    if ready < replicas {
        p.start_step_clock();
        if p.past_deadline() {
            let msg = format!(
                "ProgressDeadlineExceeded: the new revision did not get {replicas} ready pods within {}s",
                p.ro.spec.progress_deadline_seconds()
            );
            p.abort(reasons::PROGRESS_DEADLINE_EXCEEDED, msg);
            return aborted(p, c, current, stable);
        }
        let weight = weight_at(c, steps_len(c) - 1);
        if p.observed.traffic != TrafficState::Unrouted
            && weight_reached(p, c, current, p.pods_for(weight))
        {
            p.set_weights(weight, false);
        }
        size_stable(p, c, stable, current);
        p.set_phase(RolloutPhase::Progressing, format!("Promoting: waiting for {replicas} pods of the new revision to be ready ({ready} ready)"));
        p.requeue_after(Duration::from_secs(5));
        return;
    }
    analysis_gate::terminate(p, Slot::Background);
    p.pin(c.stable_service.as_deref(), current);
    p.set_weights(0, true);
    p.scale_down_others(&[current], secs(c.scale_down_delay_seconds()));
    p.settle_when_ready(current, replicas, secs(c.scale_down_delay_seconds()));
}

/// Traffic to stable at once, the canary scaled away after the abort delay.
fn aborted(p: &mut Planner<'_>, c: &CanaryStrategy, current: &str, stable: &str) {
    let replicas = p.ro.spec.replicas();
    p.ensure_rs(stable, replicas);
    p.set_weights(0, false);
    analysis_gate::terminate(p, Slot::Background);
    if let Some(i) = p.status.current_step_index {
        analysis_gate::terminate(p, Slot::Step(i));
    }
    if p.status.aborted_at.is_none() {
        p.status.aborted_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(p.now));
        p.progressing(
            false,
            reasons::ROLLOUT_ABORTED,
            "Rollout aborted: traffic is back on the stable revision",
        );
        p.warn(
            events::ABORTED,
            format!("Rollout aborted: traffic moved back to stable revision {stable}"),
        );
    }
    p.status.pause_conditions.clear();
    p.status.controller_pause = false;
    p.status.step_started_at = None;
    p.scale_down_after(current, secs(c.abort_scale_down_delay_seconds()));
    let why = p
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == crate::api::conditions::types::PROGRESSING)
        .map(|c| c.message.clone())
        .unwrap_or_else(|| "Rollout aborted".into());
    p.set_phase(RolloutPhase::Degraded, why);
}
