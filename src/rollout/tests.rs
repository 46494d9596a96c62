//! Table tests of the pure step machine: each case is (Rollout, observed cluster, now) → expected plan.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::plan::{Action, Observed, ObservedReplicaSet, Plan, ServiceState, TrafficState, plan};
use super::pod_template_hash;
use crate::api::Rollout;

const STEPS: &str = r#"[{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"pause": {"duration": "2s"}}, {"setWeight": 100}]"#;

fn now() -> Timestamp {
    "2026-11-22T12:00:00Z".parse().unwrap()
}

fn ago(secs: i64) -> String {
    now()
        .checked_sub(jiff::SignedDuration::from_secs(secs))
        .unwrap()
        .to_string()
}

fn template(image: &str) -> Value {
    json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": image}]}})
}

fn hash(image: &str) -> String {
    pod_template_hash(&serde_json::from_value(template(image)).unwrap())
}

fn canary_strategy(extra: Value) -> Value {
    let mut c = json!({"stableService": "stable", "canaryService": "canary", "steps": serde_json::from_str::<Value>(STEPS).unwrap(),
        "trafficRouting": {"gatewayAPI": {"httpRoutes": [{"name": "web"}]}}});
    if let (Some(m), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            m.insert(k.clone(), v.clone());
        }
    }
    json!({"canary": c})
}

fn rollout(image: &str, strategy: Value, status: Value) -> Rollout {
    serde_json::from_value(json!({
        "apiVersion": "weir.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "web", "namespace": "default", "uid": "uid-1", "generation": 2},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}}, "template": template(image), "strategy": strategy},
        "status": status,
    }))
    .unwrap()
}

fn rs(image: &str, replicas: i32, ready: i32) -> ObservedReplicaSet {
    ObservedReplicaSet {
        name: format!("web-{}", hash(image)),
        hash: hash(image),
        replicas,
        ready,
        available: ready,
        scale_down_at: None,
        created: None,
    }
}

fn observed(rss: Vec<ObservedReplicaSet>, weight: Option<i32>) -> Observed {
    let pinned = |img: &str| ServiceState::Present(Some(hash(img)));
    Observed {
        replica_sets: rss,
        services: BTreeMap::from([
            ("stable".into(), pinned("v1")),
            ("canary".into(), pinned("v2")),
        ]),
        traffic: TrafficState::Weights(weight),
        ..Default::default()
    }
}

/// A release of v2 over stable v1 at step `index`.
fn releasing(index: i32, extra: Value) -> Value {
    let mut s = json!({"stableRS": hash("v1"), "currentPodHash": hash("v2"), "currentStepIndex": index, "phase": "Progressing"});
    if let (Some(m), Some(e)) = (s.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            m.insert(k.clone(), v.clone());
        }
    }
    s
}

fn reasons(p: &Plan) -> Vec<&'static str> {
    p.transitions.iter().map(|t| t.reason).collect()
}

fn weights(p: &Plan) -> Vec<(i32, bool)> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            Action::SetWeights { canary, complete } => Some((*canary, *complete)),
            _ => None,
        })
        .collect()
}

#[test]
fn first_deploy_creates_the_stable_revision_without_steps() {
    let ro = rollout("v1", canary_strategy(json!({})), json!(null));
    let mut obs = observed(vec![], Some(0));
    obs.services = BTreeMap::from([
        ("stable".into(), ServiceState::Present(None)),
        ("canary".into(), ServiceState::Present(None)),
    ]);
    let p = plan(&ro, &obs, now());
    assert_eq!(
        p.actions,
        vec![
            Action::PinService {
                service: "stable".into(),
                hash: hash("v1")
            },
            Action::PinService {
                service: "canary".into(),
                hash: hash("v1")
            },
            Action::CreateReplicaSet {
                hash: hash("v1"),
                replicas: 4
            },
        ],
        "Services are pinned before any pod exists"
    );
    assert_eq!(p.status.stable_rs, Some(hash("v1")));
    assert_eq!(p.status.phase.map(|p| p.as_str()), Some("Progressing"));
    // Once ready, Healthy, with a RolloutCompleted event.
    let ro = rollout(
        "v1",
        canary_strategy(json!({})),
        serde_json::to_value(&p.status).unwrap(),
    );
    let mut obs = observed(vec![rs("v1", 4, 4)], Some(0));
    obs.services = BTreeMap::from([
        ("stable".into(), ServiceState::Present(Some(hash("v1")))),
        ("canary".into(), ServiceState::Present(Some(hash("v1")))),
    ]);
    let p = plan(&ro, &obs, now());
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.status.phase.map(|p| p.as_str()), Some("Healthy"));
    assert_eq!(reasons(&p), vec!["RolloutCompleted"]);
}

#[test]
fn canary_steps_table() {
    struct Case {
        name: &'static str,
        status: Value,
        rss: Vec<ObservedReplicaSet>,
        weight: Option<i32>,
        want_actions: Vec<Action>,
        want_events: Vec<&'static str>,
        want_index: i32,
        want_phase: &'static str,
    }
    let v2 = || format!("web-{}", hash("v2"));
    let cases = vec![
        Case {
            name: "new template: canary ReplicaSet at 20% of 4, no traffic until ready",
            status: json!({"stableRS": hash("v1"), "currentPodHash": hash("v1"), "currentStepIndex": 5, "phase": "Healthy"}),
            rss: vec![rs("v1", 4, 4)],
            weight: Some(0),
            want_actions: vec![Action::CreateReplicaSet {
                hash: hash("v2"),
                replicas: 1,
            }],
            want_events: vec![],
            want_index: 0,
            want_phase: "Progressing",
        },
        Case {
            name: "canary ready: weight 20, step done, then pause",
            status: releasing(0, json!({})),
            rss: vec![rs("v1", 4, 4), rs("v2", 1, 1)],
            weight: Some(0),
            want_actions: vec![Action::SetWeights {
                canary: 20,
                complete: false,
            }],
            want_events: vec![
                "TrafficWeightUpdated",
                "RolloutStepCompleted",
                "RolloutPaused",
            ],
            want_index: 1,
            want_phase: "Paused",
        },
        Case {
            name: "paused until promoted: nothing happens",
            status: releasing(
                1,
                json!({"controllerPause": true, "pauseConditions": [{"reason": "CanaryPauseStep", "startTime": ago(3600)}]}),
            ),
            rss: vec![rs("v1", 4, 4), rs("v2", 1, 1)],
            weight: Some(20),
            want_actions: vec![],
            want_events: vec![],
            want_index: 1,
            want_phase: "Paused",
        },
        Case {
            name: "promote (pause conditions cleared): continue to weight 50",
            status: releasing(1, json!({"controllerPause": true})),
            rss: vec![rs("v1", 4, 4), rs("v2", 1, 1)],
            weight: Some(20),
            want_actions: vec![Action::ScaleReplicaSet {
                name: v2(),
                replicas: 2,
                scale_down_at: None,
            }],
            want_events: vec!["RolloutPromoted", "RolloutStepCompleted"],
            want_index: 2,
            want_phase: "Progressing",
        },
        Case {
            name: "timed pause over: continue",
            status: releasing(
                3,
                json!({"controllerPause": true, "pauseConditions": [{"reason": "CanaryPauseStep", "startTime": ago(3)}]}),
            ),
            rss: vec![rs("v1", 4, 4), rs("v2", 2, 2)],
            weight: Some(50),
            want_actions: vec![Action::ScaleReplicaSet {
                name: v2(),
                replicas: 4,
                scale_down_at: None,
            }],
            want_events: vec!["RolloutStepCompleted"],
            want_index: 4,
            want_phase: "Progressing",
        },
        Case {
            name: "timed pause not over: wait",
            status: releasing(
                3,
                json!({"controllerPause": true, "pauseConditions": [{"reason": "CanaryPauseStep", "startTime": ago(1)}]}),
            ),
            rss: vec![rs("v1", 4, 4), rs("v2", 2, 2)],
            weight: Some(50),
            want_actions: vec![],
            want_events: vec![],
            want_index: 3,
            want_phase: "Paused",
        },
        Case {
            name: "last step done and all new pods ready: promote to stable",
            status: releasing(4, json!({})),
            rss: vec![rs("v1", 4, 4), rs("v2", 4, 4)],
            weight: Some(50),
            want_actions: vec![
                Action::SetWeights {
                    canary: 100,
                    complete: false,
                },
                Action::PinService {
                    service: "stable".into(),
                    hash: hash("v2"),
                },
                Action::SetWeights {
                    canary: 0,
                    complete: true,
                },
                Action::ScaleReplicaSet {
                    name: format!("web-{}", hash("v1")),
                    replicas: 4,
                    scale_down_at: now().checked_add(Duration::from_secs(30)).ok(),
                },
            ],
            want_events: vec![
                "TrafficWeightUpdated",
                "RolloutStepCompleted",
                "TrafficWeightUpdated",
                "RolloutCompleted",
            ],
            want_index: 5,
            want_phase: "Healthy",
        },
        Case {
            name: "abort: weight 0 on every route now, canary scaled down after the delay",
            status: releasing(
                1,
                json!({"abort": true, "controllerPause": true, "pauseConditions": [{"reason": "CanaryPauseStep", "startTime": ago(5)}]}),
            ),
            rss: vec![rs("v1", 4, 4), rs("v2", 1, 1)],
            weight: Some(20),
            want_actions: vec![
                Action::SetWeights {
                    canary: 0,
                    complete: false,
                },
                Action::ScaleReplicaSet {
                    name: v2(),
                    replicas: 1,
                    scale_down_at: now().checked_add(Duration::from_secs(30)).ok(),
                },
            ],
            want_events: vec!["TrafficWeightUpdated", "RolloutAborted"],
            want_index: 1,
            want_phase: "Degraded",
        },
        Case {
            name: "aborted past the delay: canary to zero, no new events",
            status: releasing(
                1,
                json!({"abort": true, "abortedAt": ago(60), "weights": {"canary": 0, "stable": 100}}),
            ),
            rss: vec![
                rs("v1", 4, 4),
                ObservedReplicaSet {
                    scale_down_at: Some(now()),
                    ..rs("v2", 1, 1)
                },
            ],
            weight: Some(0),
            want_actions: vec![Action::ScaleReplicaSet {
                name: v2(),
                replicas: 0,
                scale_down_at: None,
            }],
            want_events: vec![],
            want_index: 1,
            want_phase: "Degraded",
        },
        Case {
            name: "retry: abort cleared, the release starts again from step 1",
            status: releasing(1, json!({"abort": false, "abortedAt": ago(60)})),
            rss: vec![
                rs("v1", 4, 4),
                ObservedReplicaSet {
                    scale_down_at: Some(now()),
                    ..rs("v2", 0, 0)
                },
            ],
            weight: Some(0),
            want_actions: vec![Action::ScaleReplicaSet {
                name: v2(),
                replicas: 1,
                scale_down_at: None,
            }],
            want_events: vec!["RolloutRetried"],
            want_index: 0,
            want_phase: "Progressing",
        },
        Case {
            name: "promote --full: skip the remaining steps",
            status: releasing(
                1,
                json!({"promoteFull": true, "controllerPause": true, "pauseConditions": [{"reason": "CanaryPauseStep", "startTime": ago(5)}]}),
            ),
            rss: vec![rs("v1", 4, 4), rs("v2", 1, 1)],
            weight: Some(20),
            want_actions: vec![Action::ScaleReplicaSet {
                name: v2(),
                replicas: 4,
                scale_down_at: None,
            }],
            want_events: vec![],
            want_index: 5,
            want_phase: "Progressing",
        },
        Case {
            name: "progress deadline exceeded while waiting for pods: abort",
            status: releasing(0, json!({"stepStartedAt": ago(601)})),
            rss: vec![rs("v1", 4, 4), rs("v2", 1, 0)],
            weight: Some(0),
            want_actions: vec![Action::ScaleReplicaSet {
                name: v2(),
                replicas: 1,
                scale_down_at: now().checked_add(Duration::from_secs(30)).ok(),
            }],
            want_events: vec!["RolloutAborted"],
            want_index: 0,
            want_phase: "Degraded",
        },
        Case {
            name: "a newer template supersedes the release: old canary away at once",
            status: json!({"stableRS": hash("v1"), "currentPodHash": hash("v3"), "currentStepIndex": 1, "phase": "Paused", "controllerPause": true,
                "pauseConditions": [{"reason": "CanaryPauseStep", "startTime": ago(5)}]}),
            rss: vec![rs("v1", 4, 4), rs("v3", 1, 1)],
            weight: Some(20),
            want_actions: vec![
                Action::ScaleReplicaSet {
                    name: format!("web-{}", hash("v3")),
                    replicas: 1,
                    scale_down_at: Some(now()),
                },
                Action::CreateReplicaSet {
                    hash: hash("v2"),
                    replicas: 1,
                },
            ],
            want_events: vec![],
            want_index: 0,
            want_phase: "Progressing",
        },
    ];
    for case in cases {
        let ro = rollout("v2", canary_strategy(json!({})), case.status.clone());
        let p = plan(&ro, &observed(case.rss, case.weight), now());
        assert_eq!(p.actions, case.want_actions, "{}: actions", case.name);
        assert_eq!(reasons(&p), case.want_events, "{}: events", case.name);
        assert_eq!(
            p.status.current_step_index,
            Some(case.want_index),
            "{}: step",
            case.name
        );
        assert_eq!(
            p.status.phase.map(|p| p.as_str()),
            Some(case.want_phase),
            "{}: phase ({:?})",
            case.name,
            p.status.message
        );
    }
}

#[test]
fn template_back_at_stable_after_abort_is_healthy_without_steps() {
    let ro = rollout(
        "v1",
        canary_strategy(json!({})),
        json!({"stableRS": hash("v1"), "currentPodHash": hash("v2"), "currentStepIndex": 1, "abort": true, "abortedAt": ago(10), "phase": "Degraded"}),
    );
    let mut obs = observed(vec![rs("v1", 4, 4), rs("v2", 1, 1)], Some(0));
    obs.services
        .insert("canary".into(), ServiceState::Present(Some(hash("v1"))));
    let p = plan(&ro, &obs, now());
    assert_eq!(p.status.phase.map(|p| p.as_str()), Some("Healthy"));
    assert!(!p.status.abort && p.status.aborted_at.is_none());
    assert_eq!(
        weights(&p),
        vec![(0, true)],
        "canary backends weir added are dropped"
    );
    assert!(p.actions.contains(&Action::ScaleReplicaSet {
        name: format!("web-{}", hash("v2")),
        replicas: 1,
        scale_down_at: now().checked_add(Duration::from_secs(30)).ok()
    }));
}

#[test]
fn user_pause_holds_the_step() {
    let mut ro = rollout("v2", canary_strategy(json!({})), releasing(0, json!({})));
    ro.spec.paused = true;
    let p = plan(
        &ro,
        &observed(vec![rs("v1", 4, 4), rs("v2", 1, 1)], Some(0)),
        now(),
    );
    assert_eq!(p.status.current_step_index, Some(0));
    assert_eq!(p.status.phase.map(|p| p.as_str()), Some("Paused"));
    assert!(reasons(&p).iter().all(|r| *r != "RolloutStepCompleted"));
}

#[test]
fn set_canary_scale_sizes_the_canary_apart_from_its_weight() {
    let strategy = json!({"canary": {"stableService": "stable", "canaryService": "canary", "trafficRouting": {"gatewayAPI": {"httpRoutes": [{"name": "web"}]}},
        "steps": [{"setCanaryScale": {"replicas": 3}}, {"setWeight": 10}, {"pause": {}}]}});
    let ro = rollout("v2", strategy, releasing(0, json!({})));
    let p = plan(
        &ro,
        &observed(vec![rs("v1", 4, 4), rs("v2", 1, 1)], Some(0)),
        now(),
    );
    assert_eq!(
        p.actions[0],
        Action::ScaleReplicaSet {
            name: format!("web-{}", hash("v2")),
            replicas: 3,
            scale_down_at: None
        }
    );
    assert_eq!(
        p.status.current_step_index,
        Some(1),
        "waits for 3 ready canary pods before weight 10"
    );
}

#[test]
fn analysis_steps_create_a_run_and_follow_its_verdict() {
    use super::analysis_gate::{ObservedAnalysisRun, Slot};
    use crate::api::analysis::{AnalysisPhase, AnalysisRunSpec};
    let strategy = json!({"canary": {"steps": [{"setWeight": 20}, {"analysis": {"templates": [{"templateName": "error-rate"}]}}, {"setWeight": 60}]}});
    let spec: AnalysisRunSpec = serde_json::from_value(
        json!({"metrics": [{"name": "m", "provider": {"web": {"url": "http://x"}}}]}),
    )
    .unwrap();
    let base =
        |runs: Vec<(String, AnalysisPhase)>, specs: Result<AnalysisRunSpec, String>| Observed {
            replica_sets: vec![rs("v1", 4, 4), rs("v2", 1, 1)],
            analysis_runs: runs
                .into_iter()
                .map(|(n, phase)| {
                    (
                        n,
                        ObservedAnalysisRun {
                            phase,
                            message: Some("m: 0.07 failed".into()),
                            terminated: false,
                            created: None,
                        },
                    )
                })
                .collect(),
            run_specs: BTreeMap::from([(Slot::Step(1), specs)]),
            ..Default::default()
        };
    // A missing template pauses with a message naming it; nothing is promoted.
    let ro = rollout("v2", strategy.clone(), releasing(1, json!({})));
    let p = plan(
        &ro,
        &base(
            vec![],
            Err("AnalysisTemplate \"error-rate\" not found".into()),
        ),
        now(),
    );
    assert_eq!(p.status.current_step_index, Some(1));
    assert_eq!(p.status.phase.map(|p| p.as_str()), Some("Paused"));
    assert!(
        p.status.message.as_deref().unwrap().contains("error-rate"),
        "{:?}",
        p.status.message
    );
    // The run is created with a name that follows from the persisted status.
    let p = plan(&ro, &base(vec![], Ok(spec.clone())), now());
    let name = format!("web-{}-step1-0", hash("v2"));
    let created_runs: Vec<&String> = p
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::CreateAnalysisRun { name, .. } => Some(name),
            _ => None,
        })
        .collect();
    assert_eq!(created_runs, vec![&name]);
    assert_eq!(p.status.current_step_index, Some(1));
    let created = serde_json::to_value(&p.status).unwrap();
    // Running: wait. Successful: next step. Failed: abort, traffic to stable. Inconclusive: pause.
    let verdicts = [
        (AnalysisPhase::Running, 1, "Progressing", vec![]),
        (
            AnalysisPhase::Successful,
            2,
            "Progressing",
            vec!["RolloutStepCompleted"],
        ),
        (
            AnalysisPhase::Failed,
            1,
            "Degraded",
            vec!["RolloutAborted", "TrafficWeightUpdated"],
        ),
        (
            AnalysisPhase::Error,
            1,
            "Degraded",
            vec!["RolloutAborted", "TrafficWeightUpdated"],
        ),
        (
            AnalysisPhase::Inconclusive,
            1,
            "Paused",
            vec!["RolloutPaused"],
        ),
    ];
    for (phase, index, want_phase, events) in verdicts {
        let ro = rollout("v2", strategy.clone(), created.clone());
        let mut obs = base(vec![(name.clone(), phase)], Ok(spec.clone()));
        obs.traffic = TrafficState::Weights(Some(20));
        obs.services = BTreeMap::new();
        let p = plan(&ro, &obs, now());
        assert_eq!(p.status.current_step_index, Some(index), "{phase:?}");
        assert_eq!(
            p.status.phase.map(|p| p.as_str()),
            Some(want_phase),
            "{phase:?}: {:?}",
            p.status.message
        );
        assert_eq!(reasons(&p), events, "{phase:?}");
        if matches!(phase, AnalysisPhase::Failed | AnalysisPhase::Error) {
            assert!(p.status.abort);
            assert!(p.status.message.unwrap().contains("m: 0.07 failed"));
        }
    }
}

#[test]
fn invalid_specs_make_no_changes() {
    let cases = [
        (
            ServiceState::Missing,
            TrafficState::Weights(Some(0)),
            "Service \"stable\" not found",
        ),
        (
            ServiceState::Present(None),
            TrafficState::Invalid("HTTPRoute default/web not found".into()),
            "HTTPRoute default/web not found",
        ),
    ];
    for (svc, traffic, want) in cases {
        let ro = rollout("v2", canary_strategy(json!({})), releasing(1, json!({})));
        let mut obs = observed(vec![rs("v1", 4, 4), rs("v2", 1, 1)], Some(20));
        obs.services.insert("stable".into(), svc);
        obs.traffic = traffic;
        let p = plan(&ro, &obs, now());
        assert!(p.actions.is_empty(), "{want}: {:?}", p.actions);
        let cond = p
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "InvalidSpec")
            .expect("InvalidSpec");
        assert!(cond.message.contains(want), "{}", cond.message);
        assert_eq!(reasons(&p), vec!["InvalidSpec"]);
        // What is missing may appear any moment (the same Git sync creates it): look again soon.
        assert!(
            p.requeue
                .is_some_and(|r| r <= crate::rollout::plan::INVALID_SPEC_RETRY),
            "{want}: {:?}",
            p.requeue
        );
        // The same invalid spec again records no second event.
        let again = plan(
            &rollout(
                "v2",
                canary_strategy(json!({})),
                serde_json::to_value(&p.status).unwrap(),
            ),
            &obs,
            now(),
        );
        assert!(reasons(&again).is_empty());
    }
}

#[test]
fn old_replica_sets_beyond_the_history_limit_are_deleted_oldest_first() {
    let mut rss = vec![rs("v1", 4, 4)];
    for i in 0..12 {
        let mut old = rs(&format!("old{i}"), 0, 0);
        old.created = Some(
            now()
                .checked_sub(jiff::SignedDuration::from_hours(24 - i))
                .unwrap(),
        );
        rss.push(old);
    }
    let ro = rollout(
        "v1",
        canary_strategy(json!({})),
        json!({"stableRS": hash("v1"), "currentPodHash": hash("v1"), "currentStepIndex": 5, "phase": "Healthy"}),
    );
    let mut obs = observed(rss, Some(0));
    obs.services
        .insert("canary".into(), ServiceState::Present(Some(hash("v1"))));
    let p = plan(&ro, &obs, now());
    let deleted: Vec<&Action> = p
        .actions
        .iter()
        .filter(|a| matches!(a, Action::DeleteReplicaSet { .. }))
        .collect();
    assert_eq!(
        deleted,
        vec![
            &Action::DeleteReplicaSet {
                name: format!("web-{}", hash("old0"))
            },
            &Action::DeleteReplicaSet {
                name: format!("web-{}", hash("old1"))
            }
        ]
    );
}

#[test]
fn blue_green_previews_then_switches_active() {
    let strategy = |auto: bool| json!({"blueGreen": {"activeService": "active", "previewService": "preview", "autoPromotionEnabled": auto}});
    let services = |active: &str, preview: &str| {
        BTreeMap::from([
            ("active".into(), ServiceState::Present(Some(hash(active)))),
            ("preview".into(), ServiceState::Present(Some(hash(preview)))),
        ])
    };
    let start = json!({"stableRS": hash("v1"), "currentPodHash": hash("v1"), "phase": "Healthy"});
    // New template: preview pinned to the new revision before its pods exist; active stays.
    let ro = rollout("v2", strategy(false), start.clone());
    let obs = Observed {
        replica_sets: vec![rs("v1", 4, 4)],
        services: services("v1", "v1"),
        traffic: TrafficState::Unrouted,
        ..Default::default()
    };
    let p = plan(&ro, &obs, now());
    assert_eq!(
        p.actions,
        vec![
            Action::PinService {
                service: "preview".into(),
                hash: hash("v2")
            },
            Action::CreateReplicaSet {
                hash: hash("v2"),
                replicas: 4
            }
        ]
    );
    // Preview ready, manual promotion: paused.
    let ro = rollout(
        "v2",
        strategy(false),
        serde_json::to_value(&p.status).unwrap(),
    );
    let obs = Observed {
        replica_sets: vec![rs("v1", 4, 4), rs("v2", 4, 4)],
        services: services("v1", "v2"),
        traffic: TrafficState::Unrouted,
        ..Default::default()
    };
    let p = plan(&ro, &obs, now());
    assert!(p.actions.is_empty());
    assert_eq!(p.status.phase.map(|p| p.as_str()), Some("Paused"));
    assert_eq!(reasons(&p), vec!["RolloutPaused"]);
    // Promote: the active Service switches; the old revision scales down after the delay.
    let mut status = serde_json::to_value(&p.status).unwrap();
    status["pauseConditions"] = json!([]);
    let p = plan(&rollout("v2", strategy(false), status), &obs, now());
    assert_eq!(
        p.actions[0],
        Action::PinService {
            service: "active".into(),
            hash: hash("v2")
        }
    );
    assert_eq!(p.status.stable_rs, Some(hash("v2")));
    assert_eq!(p.status.phase.map(|p| p.as_str()), Some("Healthy"));
    assert_eq!(reasons(&p), vec!["RolloutPromoted", "RolloutCompleted"]);
}

#[test]
fn completed_analysis_runs_beyond_the_history_limit_are_deleted() {
    use super::analysis_gate::{ObservedAnalysisRun, RUN_HISTORY_LIMIT};
    use crate::api::analysis::AnalysisPhase;
    let ro = rollout(
        "v1",
        canary_strategy(json!({})),
        json!({"stableRS": hash("v1"), "currentPodHash": hash("v1"), "currentStepIndex": 5, "phase": "Healthy"}),
    );
    let mut obs = observed(vec![rs("v1", 4, 4)], Some(0));
    obs.services
        .insert("canary".into(), ServiceState::Present(Some(hash("v1"))));
    for i in 0..8i64 {
        for (phase, tag) in [
            (AnalysisPhase::Successful, "ok"),
            (AnalysisPhase::Failed, "bad"),
        ] {
            let created = now()
                .checked_sub(jiff::SignedDuration::from_hours(10 - i))
                .ok();
            obs.analysis_runs.insert(
                format!("{tag}{i}"),
                ObservedAnalysisRun {
                    phase,
                    message: None,
                    terminated: false,
                    created,
                },
            );
        }
    }
    obs.analysis_runs.insert(
        "running".into(),
        ObservedAnalysisRun {
            phase: AnalysisPhase::Running,
            message: None,
            terminated: false,
            created: None,
        },
    );
    let p = plan(&ro, &obs, now());
    let deleted: Vec<String> = p
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::DeleteAnalysisRun { name } => Some(name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(RUN_HISTORY_LIMIT, 5);
    assert_eq!(deleted, vec!["ok0", "ok1", "ok2", "bad0", "bad1", "bad2"]);
}

#[test]
fn background_analysis_aborts_on_failure_and_is_terminated_when_the_steps_finish() {
    use super::analysis_gate::{ObservedAnalysisRun, Slot};
    use crate::api::analysis::{AnalysisPhase, AnalysisRunSpec};
    let strategy = json!({"canary": {"analysis": {"templates": [{"templateName": "bg"}]}, "steps": [{"setWeight": 50}, {"pause": {"duration": "1s"}}]}});
    let spec: AnalysisRunSpec = serde_json::from_value(
        json!({"metrics": [{"name": "m", "provider": {"web": {"url": "http://x"}}}]}),
    )
    .unwrap();
    let name = format!("web-{}-background-0", hash("v2"));
    let obs = |phase: Option<AnalysisPhase>, ready: i32| Observed {
        replica_sets: vec![rs("v1", 4, 4), rs("v2", ready, ready)],
        analysis_runs: phase
            .map(|phase| {
                (
                    name.clone(),
                    ObservedAnalysisRun {
                        phase,
                        message: Some("m: 9 failed".into()),
                        terminated: false,
                        created: None,
                    },
                )
            })
            .into_iter()
            .collect(),
        run_specs: BTreeMap::from([(Slot::Background, Ok(spec.clone()))]),
        ..Default::default()
    };
    let status = |index: i32| {
        releasing(
            index,
            json!({"canary": {"currentBackgroundAnalysisRunStatus": {"name": name, "status": "Running"}}}),
        )
    };
    // Created at the start of the release.
    let p = plan(
        &rollout("v2", strategy.clone(), releasing(0, json!({}))),
        &obs(None, 2),
        now(),
    );
    assert!(p.actions.iter().any(|a| matches!(a, Action::CreateAnalysisRun { name: n, slot: Slot::Background, .. } if *n == name)), "{:?}", p.actions);
    // A failure aborts the release.
    let p = plan(
        &rollout("v2", strategy.clone(), status(1)),
        &obs(Some(AnalysisPhase::Failed), 2),
        now(),
    );
    assert!(p.status.abort);
    assert_eq!(p.status.phase.map(|p| p.as_str()), Some("Degraded"));
    // When the steps finish, the run is terminated.
    let p = plan(
        &rollout("v2", strategy, status(2)),
        &obs(Some(AnalysisPhase::Running), 4),
        now(),
    );
    assert!(
        p.actions
            .contains(&Action::TerminateAnalysisRun { name: name.clone() }),
        "{:?}",
        p.actions
    );
    assert_eq!(p.status.phase.map(|p| p.as_str()), Some("Healthy"));
}

#[test]
fn blue_green_pre_and_post_promotion_analysis_gate_the_switch() {
    use super::analysis_gate::{ObservedAnalysisRun, Slot};
    use crate::api::analysis::{AnalysisPhase, AnalysisRunSpec};
    let strategy = json!({"blueGreen": {"activeService": "active", "previewService": "preview",
        "prePromotionAnalysis": {"templates": [{"templateName": "smoke"}]}, "postPromotionAnalysis": {"templates": [{"templateName": "smoke"}]}}});
    let spec: AnalysisRunSpec = serde_json::from_value(
        json!({"metrics": [{"name": "m", "provider": {"web": {"url": "http://x"}}}]}),
    )
    .unwrap();
    let pre = format!("web-{}-prepromotion-0", hash("v2"));
    let post = format!("web-{}-postpromotion-0", hash("v2"));
    let svcs = |active: &str| {
        BTreeMap::from([
            ("active".into(), ServiceState::Present(Some(hash(active)))),
            ("preview".into(), ServiceState::Present(Some(hash("v2")))),
        ])
    };
    let obs = |runs: Vec<(&String, AnalysisPhase)>, active: &str| Observed {
        replica_sets: vec![rs("v1", 4, 4), rs("v2", 4, 4)],
        services: svcs(active),
        analysis_runs: runs
            .into_iter()
            .map(|(n, phase)| {
                (
                    n.clone(),
                    ObservedAnalysisRun {
                        phase,
                        message: None,
                        terminated: false,
                        created: None,
                    },
                )
            })
            .collect(),
        run_specs: BTreeMap::from([
            (Slot::PrePromotion, Ok(spec.clone())),
            (Slot::PostPromotion, Ok(spec.clone())),
        ]),
        ..Default::default()
    };
    let base =
        json!({"stableRS": hash("v1"), "currentPodHash": hash("v2"), "phase": "Progressing"});
    // Preview ready: the pre-promotion run is created, the active Service stays.
    let p = plan(
        &rollout("v2", strategy.clone(), base.clone()),
        &obs(vec![], "v1"),
        now(),
    );
    assert!(
        p.actions
            .iter()
            .any(|a| matches!(a, Action::CreateAnalysisRun { name, .. } if *name == pre)),
        "{:?}",
        p.actions
    );
    assert!(
        !p.actions
            .iter()
            .any(|a| matches!(a, Action::PinService { service, .. } if service == "active"))
    );
    // Pre-promotion passed (auto-promotion): the active Service switches and the post-promotion run starts.
    let mut s = serde_json::to_value(&p.status).unwrap();
    let p = plan(
        &rollout("v2", strategy.clone(), s.clone()),
        &obs(vec![(&pre, AnalysisPhase::Successful)], "v1"),
        now(),
    );
    assert!(
        p.actions.contains(&Action::PinService {
            service: "active".into(),
            hash: hash("v2")
        }),
        "{:?}",
        p.actions
    );
    assert!(
        p.actions
            .iter()
            .any(|a| matches!(a, Action::CreateAnalysisRun { name, .. } if *name == post))
    );
    assert_eq!(
        p.status.stable_rs,
        Some(hash("v1")),
        "not stable until post-promotion analysis passes"
    );
    s = serde_json::to_value(&p.status).unwrap();
    // Post-promotion failed: abort, active back on the old revision in the same pass.
    let p = plan(
        &rollout("v2", strategy.clone(), s.clone()),
        &obs(
            vec![
                (&pre, AnalysisPhase::Successful),
                (&post, AnalysisPhase::Failed),
            ],
            "v2",
        ),
        now(),
    );
    assert!(p.status.abort);
    assert!(
        p.actions.contains(&Action::PinService {
            service: "active".into(),
            hash: hash("v1")
        }),
        "{:?}",
        p.actions
    );
    assert_eq!(p.status.phase.map(|p| p.as_str()), Some("Degraded"));
    // Post-promotion passed: stable.
    let p = plan(
        &rollout("v2", strategy, s),
        &obs(
            vec![
                (&pre, AnalysisPhase::Successful),
                (&post, AnalysisPhase::Successful),
            ],
            "v2",
        ),
        now(),
    );
    assert_eq!(p.status.stable_rs, Some(hash("v2")));
    assert_eq!(p.status.phase.map(|p| p.as_str()), Some("Healthy"));
}
