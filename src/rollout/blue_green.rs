//! The blue-green strategy: new pods behind the preview Service, then one switch of the active Service.

use std::time::Duration;

use crate::api::conditions::reasons;
use crate::api::rollout::{BlueGreenStatus, BlueGreenStrategy, PauseReason, RolloutPhase};

use super::analysis_gate::{self, Gate, Slot};
use super::plan::{Planner, events};

fn secs(s: i32) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

/// Plans one pass of a blue-green Rollout.
pub(crate) fn plan(p: &mut Planner<'_>, b: &BlueGreenStrategy) {
    let current = p.current.clone();
    let replicas = p.ro.spec.replicas();
    let active = b.active_service.as_str();
    let preview = b.preview_service.as_deref();
    let delay = secs(b.scale_down_delay_seconds());

    let stable = match p.status.stable_rs.clone() {
        Some(s) if s != current => s,
        _ => {
            // First release or back on stable: both Services select the one revision.
            p.pin(Some(active), &current);
            p.pin(preview, &current);
            p.ensure_rs(&current, replicas);
            selectors(p, &current, preview.map(|_| current.as_str()));
            return p.settle_when_ready(&current, replicas, delay);
        }
    };

    let previous =
        p.ro.status
            .as_ref()
            .and_then(|s| s.current_pod_hash.clone());
    if previous.as_deref() != Some(current.as_str()) {
        p.start_release();
        p.progressing(
            true,
            reasons::NEW_REPLICA_SET_CREATED,
            format!("Releasing revision {current} behind the preview Service"),
        );
    }
    p.completed(false);
    p.take_retry();
    p.ensure_rs(&stable, replicas);

    if p.status.abort {
        // The active Service goes (or stays) back on the stable revision.
        p.pin(Some(active), &stable);
        analysis_gate::terminate(p, Slot::PrePromotion);
        analysis_gate::terminate(p, Slot::PostPromotion);
        if p.status.aborted_at.is_none() {
            p.status.aborted_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(p.now));
            p.progressing(
                false,
                reasons::ROLLOUT_ABORTED,
                "Rollout aborted: the active Service stays on the stable revision",
            );
            p.warn(
                events::ABORTED,
                format!("Rollout aborted: active Service back on stable revision {stable}"),
            );
        }
        p.status.pause_conditions.clear();
        p.status.controller_pause = false;
        p.status.current_step_index = None;
        p.scale_down_after(&current, secs(b.abort_scale_down_delay_seconds()));
        selectors(p, &stable, preview.map(|_| current.as_str()));
        p.set_phase(
            RolloutPhase::Degraded,
            "Rollout aborted: the active Service stays on the stable revision",
        );
        return;
    }
    // Stage 2: switched, waiting for post-promotion analysis before the new revision counts as stable.
    if p.status.current_step_index == Some(2) {
        p.pin(Some(active), &current);
        p.pin(preview, &current);
        p.ensure_rs(&current, replicas);
        selectors(p, &current, preview.map(|_| current.as_str()));
        return post_promotion(p, b, &current);
    }
    p.pin(Some(active), &stable);

    // Stage 0: preview. The preview Service is pinned before the new pods exist.
    p.pin(preview, &current);
    selectors(p, &stable, preview.map(|_| current.as_str()));
    let preview_count = b.preview_replica_count.unwrap_or(replicas).min(replicas);
    let promoting = p.status.promote_full || p.status.current_step_index == Some(1);
    p.ensure_rs(&current, if promoting { replicas } else { preview_count });
    if p.ro.spec.paused {
        p.set_phase(RolloutPhase::Paused, "Paused by user: resume to continue");
        return;
    }
    if !promoting {
        if p.ready(&current) < preview_count {
            p.start_step_clock();
            if p.past_deadline() {
                p.abort(reasons::PROGRESS_DEADLINE_EXCEEDED, format!("ProgressDeadlineExceeded: the preview did not get {preview_count} ready pods within {}s", p.ro.spec.progress_deadline_seconds()));
                return;
            }
            p.set_phase(
                RolloutPhase::Progressing,
                format!(
                    "Preview: waiting for {preview_count} pods of revision {current} ({} ready)",
                    p.ready(&current)
                ),
            );
            p.requeue_after(Duration::from_secs(5));
            return;
        }
        p.status.step_started_at = None;
        if b.pre_promotion_analysis.is_some() {
            match analysis_gate::gate(p, Slot::PrePromotion) {
                Gate::Passed => {}
                Gate::Waiting => {
                    p.set_phase(
                        RolloutPhase::Progressing,
                        "Preview ready: pre-promotion analysis running",
                    );
                    return;
                }
                Gate::Failed(msg) => {
                    p.abort(
                        reasons::ANALYSIS_RUN_FAILED,
                        format!("Rollout aborted: {msg}"),
                    );
                    return;
                }
                Gate::Inconclusive(msg) => {
                    if !analysis_gate::inconclusive(p, msg.clone()) {
                        p.set_phase(
                            RolloutPhase::Paused,
                            format!("Paused: pre-promotion {msg}; promote or abort"),
                        );
                        return;
                    }
                }
                Gate::Blocked(why) => return p.analysis_blocked("pre-promotion analysis", &why),
            }
        }
        if !ready_to_promote(p, b) {
            return;
        }
        // Stage 1 records that promotion started, so a restart keeps scaling up instead of pausing again.
        p.status.current_step_index = Some(1);
    }
    p.ensure_rs(&current, replicas);
    if p.ready(&current) < replicas {
        p.start_step_clock();
        if p.past_deadline() {
            p.abort(reasons::PROGRESS_DEADLINE_EXCEEDED, format!("ProgressDeadlineExceeded: revision {current} did not get {replicas} ready pods within {}s", p.ro.spec.progress_deadline_seconds()));
            return;
        }
        p.set_phase(
            RolloutPhase::Progressing,
            format!(
                "Promoting: waiting for {replicas} pods of revision {current} ({} ready)",
                p.ready(&current)
            ),
        );
        p.requeue_after(Duration::from_secs(5));
        return;
    }
    // The switch: the active Service moves only when every new pod is ready. It replaces the pin to
    // stable planned above, so the Service is written once.
    p.actions.retain(
        |a| !matches!(a, super::plan::Action::PinService { service, .. } if service == active),
    );
    p.pin(Some(active), &current);
    selectors(p, &current, preview.map(|_| current.as_str()));
    p.status.step_started_at = None;
    if b.post_promotion_analysis.is_some() {
        p.status.current_step_index = Some(2);
        return post_promotion(p, b, &current);
    }
    p.status.current_step_index = None;
    p.settle_when_ready(&current, replicas, delay);
}

/// After the switch: the new revision is stable only once post-promotion analysis succeeds; a failure
/// aborts and puts the active Service back on the old revision in the same pass.
fn post_promotion(p: &mut Planner<'_>, b: &BlueGreenStrategy, current: &str) {
    match analysis_gate::gate(p, Slot::PostPromotion) {
        Gate::Passed => {
            p.status.current_step_index = None;
            p.settle_when_ready(
                current,
                p.ro.spec.replicas(),
                secs(b.scale_down_delay_seconds()),
            );
        }
        Gate::Waiting => p.set_phase(
            RolloutPhase::Progressing,
            "Switched: post-promotion analysis running",
        ),
        Gate::Failed(msg) => {
            p.abort(
                reasons::ANALYSIS_RUN_FAILED,
                format!("Rollout aborted: {msg}"),
            );
            let active = b.active_service.clone();
            if let Some(stable) = p.status.stable_rs.clone() {
                p.actions.retain(|a| !matches!(a, super::plan::Action::PinService { service, .. } if *service == active));
                p.pin(Some(&active), &stable);
            }
            p.set_phase(RolloutPhase::Degraded, "Rollout aborted: post-promotion analysis failed; the active Service is back on the stable revision");
        }
        Gate::Inconclusive(msg) => {
            if analysis_gate::inconclusive(p, msg.clone()) {
                p.status.current_step_index = None;
                p.settle_when_ready(
                    current,
                    p.ro.spec.replicas(),
                    secs(b.scale_down_delay_seconds()),
                );
            } else {
                p.set_phase(
                    RolloutPhase::Paused,
                    format!("Paused: post-promotion {msg}; promote or abort"),
                );
            }
        }
        Gate::Blocked(why) => p.analysis_blocked("post-promotion analysis", &why),
    }
}

/// Auto-promotion (after `autoPromotionSeconds`) or a person's promote.
fn ready_to_promote(p: &mut Planner<'_>, b: &BlueGreenStrategy) -> bool {
    if p.status.promote_full {
        return true;
    }
    let wait = b.auto_promotion_seconds.filter(|s| *s > 0).map(secs);
    if b.auto_promotion_enabled() && wait.is_none() {
        return true;
    }
    match p.paused_for(PauseReason::BlueGreenPause).cloned() {
        None if p.status.controller_pause => {
            p.status.controller_pause = false;
            p.event(
                events::PROMOTED,
                "Rollout promoted: switching the active Service",
            );
            true
        }
        None => {
            p.add_pause(PauseReason::BlueGreenPause);
            let msg = match wait {
                Some(w) if b.auto_promotion_enabled() => {
                    format!("Preview ready: promoting automatically in {}s", w.as_secs())
                }
                _ => "Preview ready: waiting for promote".to_string(),
            };
            p.event(events::PAUSED, msg.clone());
            if let Some(w) = wait.filter(|_| b.auto_promotion_enabled()) {
                p.requeue_after(w);
            }
            p.set_phase(RolloutPhase::Paused, msg);
            false
        }
        Some(cond) => match wait.filter(|_| b.auto_promotion_enabled()) {
            Some(w) => {
                let elapsed =
                    Duration::try_from(p.now.duration_since(cond.start_time.0)).unwrap_or_default();
                if elapsed >= w {
                    p.status
                        .pause_conditions
                        .retain(|c| c.reason != PauseReason::BlueGreenPause);
                    p.status.controller_pause = false;
                    p.event(
                        events::PROMOTED,
                        "Rollout promoted automatically: switching the active Service",
                    );
                    true
                } else {
                    p.requeue_after(w - elapsed);
                    p.set_phase(
                        RolloutPhase::Paused,
                        format!(
                            "Preview ready: promoting automatically in {}s",
                            (w - elapsed).as_secs().max(1)
                        ),
                    );
                    false
                }
            }
            None => {
                p.set_phase(RolloutPhase::Paused, "Preview ready: waiting for promote");
                false
            }
        },
    }
}

fn selectors(p: &mut Planner<'_>, active: &str, preview: Option<&str>) {
    let bg = p
        .status
        .blue_green
        .get_or_insert_with(BlueGreenStatus::default);
    bg.active_selector = Some(active.to_string());
    bg.preview_selector = preview.map(String::from);
}
