//! The text of `kubectl weir get rollout`: a summary of the Rollout, then a tree of its revisions with
//! their ReplicaSets and AnalysisRuns. Pure: it renders a [`Snapshot`], so the output is testable.

use std::fmt::Write as _;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::AnalysisRun;
use crate::api::TEMPLATE_COMMIT_ANNOTATION;
use crate::api::rollout::{RolloutStrategy, TrafficWeights};

use super::snapshot::{Snapshot, images, set_weight_at};
use super::style::{Style, age, pad, visible_width};

/// Column where values start in the summary.
const LABEL_WIDTH: usize = 16;

fn seconds_since(time: Option<&Time>, now: Timestamp) -> Option<i64> {
    time.map(|t| now.as_second() - t.0.as_second())
}

fn age_of(time: Option<&Time>, now: Timestamp) -> String {
    seconds_since(time, now).map_or_else(|| "-".to_string(), age)
}

fn line(out: &mut String, label: &str, value: &str) {
    let width = LABEL_WIDTH.max(label.chars().count() + 1);
    let text = format!("{}{}", pad(label, width), value);
    let _ = writeln!(out, "{}", text.trim_end());
}

fn dash(value: Option<&str>) -> String {
    value.filter(|v| !v.is_empty()).unwrap_or("-").to_string()
}

/// Renders the summary and the tree.
pub fn render(snap: &Snapshot, style: Style) -> String {
    let ro = &snap.rollout;
    let status = ro.status.clone().unwrap_or_default();
    let mut out = String::new();
    line(&mut out, "Name:", &dash(ro.metadata.name.as_deref()));
    line(
        &mut out,
        "Namespace:",
        &dash(ro.metadata.namespace.as_deref()),
    );
    let phase = if status.abort {
        "Degraded (aborted)".to_string()
    } else {
        status
            .phase
            .map_or_else(|| "Unknown".to_string(), |p| p.to_string())
    };
    let coloured = match phase.split(' ').next() {
        Some(word) => style.phase(word) + &phase[word.len()..],
        None => phase.clone(),
    };
    line(&mut out, "Status:", &coloured);
    line(&mut out, "Message:", &dash(status.message.as_deref()));
    if ro.spec.paused {
        line(&mut out, "Paused:", "by spec.paused (kubectl weir resume)");
    }
    match &ro.spec.strategy {
        RolloutStrategy::Canary(canary) => {
            line(&mut out, "Strategy:", "Canary");
            let total = i32::try_from(canary.steps.len()).unwrap_or(i32::MAX);
            let index = status.current_step_index.unwrap_or(0).clamp(0, total);
            let step = if total == 0 {
                "-".to_string()
            } else if index >= total {
                format!("{total}/{total} (done)")
            } else {
                format!("{}/{total}", index + 1)
            };
            line(&mut out, "  Step:", &step);
            // A settled Rollout sends nothing to a canary, whatever its last step said.
            let settled =
                status.current_pod_hash.is_some() && status.current_pod_hash == status.stable_rs;
            let set = if settled {
                0
            } else {
                set_weight_at(&canary.steps, index.min(total.saturating_sub(1)))
            };
            line(&mut out, "  SetWeight:", &set.to_string());
            let actual = status.weights.map_or_else(
                || "-".to_string(),
                |TrafficWeights { canary, .. }| canary.to_string(),
            );
            line(&mut out, "  ActualWeight:", &actual);
            for route in &snap.routes {
                let value = match &route.canary {
                    Ok(w) => w.to_string(),
                    Err(e) => style.bad(&format!("unknown: {e}")),
                };
                line(&mut out, &format!("  {}:", route.route), &value);
            }
        }
        RolloutStrategy::BlueGreen(bg) => {
            line(&mut out, "Strategy:", "BlueGreen");
            let b = status.blue_green.clone().unwrap_or_default();
            line(
                &mut out,
                "  ActiveService:",
                &format!(
                    "{} -> {}",
                    bg.active_service,
                    dash(b.active_selector.as_deref())
                ),
            );
            if let Some(preview) = &bg.preview_service {
                line(
                    &mut out,
                    "  PreviewService:",
                    &format!("{preview} -> {}", dash(b.preview_selector.as_deref())),
                );
            }
        }
    }
    let stable = status.stable_rs.clone();
    let current = status.current_pod_hash.clone();
    let rs_for = |hash: &Option<String>| {
        hash.as_ref().and_then(|h| {
            snap.replica_sets
                .iter()
                .find(|r| Snapshot::hash_of(r) == *h)
        })
    };
    let mut image_lines = Vec::new();
    let canary_differs = current.is_some() && current != stable;
    if canary_differs {
        for image in images(rs_for(&current).and_then(|r| r.spec.as_ref()?.template.as_ref())) {
            image_lines.push(format!("{image} (canary)"));
        }
    }
    let stable_images = rs_for(&stable)
        .map(|r| images(r.spec.as_ref().and_then(|s| s.template.as_ref())))
        .unwrap_or_default();
    let stable_images = if stable_images.is_empty() && !canary_differs {
        images(Some(&ro.spec.template))
    } else {
        stable_images
    };
    for image in stable_images {
        image_lines.push(format!("{image} (stable)"));
    }
    if image_lines.is_empty() {
        line(&mut out, "Images:", "-");
    }
    for (i, l) in image_lines.iter().enumerate() {
        line(&mut out, if i == 0 { "Images:" } else { "" }, l);
    }
    line(&mut out, "Revisions:", "");
    let commit_of = |hash: &Option<String>| {
        rs_for(hash)
            .and_then(|r| r.metadata.annotations.as_ref())
            .and_then(|a| a.get(TEMPLATE_COMMIT_ANNOTATION))
            .cloned()
    };
    let stable_commit = status.stable_commit.clone().or_else(|| commit_of(&stable));
    line(
        &mut out,
        "  Stable:",
        &format!(
            "{} (commit {})",
            dash(stable.as_deref()),
            dash(stable_commit.as_deref())
        ),
    );
    if canary_differs {
        line(
            &mut out,
            "  Canary:",
            &format!(
                "{} (commit {})",
                dash(current.as_deref()),
                dash(commit_of(&current).as_deref())
            ),
        );
    }
    line(&mut out, "Replicas:", "");
    line(&mut out, "  Desired:", &ro.spec.replicas().to_string());
    line(&mut out, "  Current:", &status.replicas.to_string());
    line(&mut out, "  Updated:", &status.updated_replicas.to_string());
    line(&mut out, "  Ready:", &status.ready_replicas.to_string());
    line(
        &mut out,
        "  Available:",
        &status.available_replicas.to_string(),
    );
    let git_sync = match &snap.git_sync {
        None => "-".to_string(),
        Some(g) if !g.found => format!("{}/{} (not found)", g.namespace, g.name),
        Some(g) => format!(
            "{}/{} at {}",
            g.namespace,
            g.name,
            dash(g.revision.as_deref())
        ),
    };
    line(&mut out, "GitSync:", &git_sync);
    match &status.git_revert {
        None => line(&mut out, "GitRevert:", "-"),
        Some(r) => {
            let state = format!("{:?}", r.state);
            let state = match state.as_str() {
                "Pushed" => style.good(&state),
                "Blocked" | "Failed" => style.bad(&state),
                _ => style.wait(&state),
            };
            line(
                &mut out,
                "GitRevert:",
                &format!("{state} (revision {})", r.pod_hash),
            );
            let reverted = if r.reverted_commits.is_empty() {
                "-".to_string()
            } else {
                r.reverted_commits.join(", ")
            };
            line(&mut out, "  Reverted:", &reverted);
            line(
                &mut out,
                "  RevertCommit:",
                &dash(r.revert_commit.as_deref()),
            );
            if let Some(message) = &r.message {
                line(&mut out, "  Message:", message);
            }
        }
    }
    out.push('\n');
    out.push_str(&tree(snap, style));
    out
}

struct Row {
    prefix: String,
    name: String,
    kind: &'static str,
    status: String,
    age: String,
    info: String,
}

fn tree(snap: &Snapshot, style: Style) -> String {
    let ro = &snap.rollout;
    let status = ro.status.clone().unwrap_or_default();
    let mut rows = vec![Row {
        prefix: String::new(),
        name: ro.metadata.name.clone().unwrap_or_default(),
        kind: "Rollout",
        status: style.phase(
            &status
                .phase
                .map_or_else(|| "Unknown".to_string(), |p| p.to_string()),
        ),
        age: age_of(ro.metadata.creation_timestamp.as_ref(), snap.now),
        info: String::new(),
    }];
    // Newest revision first, as a person reads a release: what is happening now on top.
    let revisions: Vec<(usize, &ReplicaSet)> = snap
        .replica_sets
        .iter()
        .enumerate()
        .map(|(i, r)| (i + 1, r))
        .rev()
        .collect();
    let mut orphan_runs: Vec<&AnalysisRun> = snap
        .analysis_runs
        .iter()
        .filter(|run| {
            let hash = run_hash(run);
            !snap
                .replica_sets
                .iter()
                .any(|r| Snapshot::hash_of(r) == hash)
        })
        .collect();
    orphan_runs.reverse();
    let count = revisions.len();
    for (position, (number, rs)) in revisions.iter().enumerate() {
        let last_revision = position + 1 == count && orphan_runs.is_empty();
        let (branch, stem) = if last_revision {
            ("└── ", "    ")
        } else {
            ("├── ", "│   ")
        };
        let hash = Snapshot::hash_of(rs);
        rows.push(Row {
            prefix: branch.to_string(),
            name: format!("revision:{number}"),
            kind: "",
            status: String::new(),
            age: String::new(),
            info: String::new(),
        });
        let runs: Vec<&AnalysisRun> = snap
            .analysis_runs
            .iter()
            .filter(|r| run_hash(r) == hash)
            .collect();
        let mut role = Vec::new();
        if status.stable_rs.as_deref() == Some(hash.as_str()) {
            role.push("stable");
        }
        if status.current_pod_hash.as_deref() == Some(hash.as_str())
            && status.stable_rs != status.current_pod_hash
        {
            role.push(if status.abort {
                "canary, aborted"
            } else {
                "canary"
            });
        }
        let desired = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let ready = rs
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        let rs_state = if desired == 0 {
            style.dim("ScaledDown")
        } else if ready >= desired {
            style.good("Healthy")
        } else {
            style.busy("Progressing")
        };
        let rs_last = runs.is_empty();
        rows.push(Row {
            prefix: format!("{stem}{}", if rs_last { "└── " } else { "├── " }),
            name: rs.metadata.name.clone().unwrap_or_default(),
            kind: "ReplicaSet",
            status: rs_state,
            age: age_of(rs.metadata.creation_timestamp.as_ref(), snap.now),
            info: join_info(&[format!("{ready}/{desired} ready"), role.join(", ")]),
        });
        for (i, run) in runs.iter().enumerate() {
            let last = i + 1 == runs.len();
            push_run(&mut rows, run, stem, last, snap.now, style);
        }
    }
    for (i, run) in orphan_runs.iter().enumerate() {
        push_run(
            &mut rows,
            run,
            "",
            i + 1 == orphan_runs.len(),
            snap.now,
            style,
        );
    }
    let widths = [
        rows.iter()
            .map(|r| visible_width(&r.prefix) + r.name.chars().count())
            .max()
            .unwrap_or(0)
            .max(4),
        rows.iter().map(|r| r.kind.len()).max().unwrap_or(0).max(4),
        rows.iter()
            .map(|r| visible_width(&r.status))
            .max()
            .unwrap_or(0)
            .max(6),
        rows.iter().map(|r| r.age.len()).max().unwrap_or(0).max(3),
    ];
    let mut out = String::new();
    let mut emit = |cells: [String; 5]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i < 4 {
                text.push_str(&pad(cell, widths[i] + 2));
            } else {
                text.push_str(cell);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    emit([
        "NAME".into(),
        "KIND".into(),
        "STATUS".into(),
        "AGE".into(),
        "INFO".into(),
    ]);
    for row in rows {
        emit([
            format!("{}{}", style.dim(&row.prefix), row.name),
            row.kind.to_string(),
            row.status,
            row.age,
            row.info,
        ]);
    }
    out
}

fn join_info(parts: &[String]) -> String {
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join(", ")
}

fn run_hash(run: &AnalysisRun) -> String {
    run.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(crate::rollout::POD_TEMPLATE_HASH_LABEL))
        .cloned()
        .unwrap_or_default()
}

fn push_run(
    rows: &mut Vec<Row>,
    run: &AnalysisRun,
    stem: &str,
    last: bool,
    now: Timestamp,
    style: Style,
) {
    let status = run.status.clone().unwrap_or_default();
    let (branch, inner) = if last {
        ("└── ", "    ")
    } else {
        ("├── ", "│   ")
    };
    let slot = run
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(crate::rollout::controller::ANALYSIS_LABEL))
        .cloned()
        .unwrap_or_default();
    let summary = status.run_summary.clone().unwrap_or_default();
    rows.push(Row {
        prefix: format!("{stem}{branch}"),
        name: run.metadata.name.clone().unwrap_or_default(),
        kind: "AnalysisRun",
        status: style.phase(status.phase.as_str()),
        age: age_of(run.metadata.creation_timestamp.as_ref(), now),
        info: join_info(&[
            slot,
            format!(
                "{}/{} metrics successful",
                summary.successful,
                run.spec.metrics.len()
            ),
        ]),
    });
    let count = run.spec.metrics.len();
    for (i, metric) in run.spec.metrics.iter().enumerate() {
        let result = status.metric_results.iter().find(|r| r.name == metric.name);
        let latest = result.and_then(|r| r.measurements.last());
        let phase = result.map_or("Pending", |r| r.phase.as_str());
        let value = latest
            .and_then(|m| m.value.clone())
            .unwrap_or_else(|| "-".to_string());
        let measured = latest.map_or_else(
            || "no measurement yet".to_string(),
            |m| format!("latest {value} ({})", m.phase),
        );
        let counts = result.map_or(String::new(), |r| {
            format!("{} measured, {} failed", r.count, r.failed)
        });
        let branch = if i + 1 == count {
            "└── "
        } else {
            "├── "
        };
        rows.push(Row {
            prefix: format!("{stem}{inner}{branch}"),
            name: metric.name.clone(),
            kind: "Metric",
            status: style.phase(phase),
            age: String::new(),
            info: join_info(&[measured, counts]),
        });
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::snapshot::GitSyncInfo;
    use super::*;

    fn snapshot(status: serde_json::Value, strategy: serde_json::Value) -> Snapshot {
        let rollout = serde_json::from_value(json!({
            "apiVersion": "weir.io/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "shop", "creationTimestamp": "2026-11-22T10:00:00Z"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [{"name": "web", "image": "web:1"}]}}, "strategy": strategy},
            "status": status,
        }))
        .unwrap();
        Snapshot {
            rollout,
            replica_sets: Vec::new(),
            analysis_runs: Vec::new(),
            git_sync: Some(GitSyncInfo {
                name: "apps".into(),
                namespace: "weir-system".into(),
                revision: Some("main@sha1:0a1b2c3".into()),
                found: true,
            }),
            routes: Vec::new(),
            now: "2026-11-22T10:05:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn a_git_revert_is_shown_with_its_commits() {
        let snap = snapshot(
            json!({"phase": "Healthy", "message": "Revision aaa is stable", "currentPodHash": "aaa", "stableRS": "aaa", "currentStepIndex": 1,
                "gitRevert": {"podHash": "bbb", "state": "Pushed", "revertedCommits": ["c2", "c1"], "revertCommit": "r9",
                    "message": "reverted after error-rate failed"}}),
            json!({"canary": {"steps": [{"setWeight": 50}]}}),
        );
        let text = render(&snap, Style::PLAIN);
        for line in [
            "Status:         Healthy\n",
            "  Step:         1/1 (done)\n",
            "  SetWeight:    0\n",
            "Images:         web:1 (stable)\n",
            "GitSync:        weir-system/apps at main@sha1:0a1b2c3\n",
            "GitRevert:      Pushed (revision bbb)\n",
            "  Reverted:     c2, c1\n",
            "  RevertCommit: r9\n",
            "  Message:      reverted after error-rate failed\n",
            "web   Rollout  Healthy  5m0s\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
    }

    #[test]
    fn blue_green_shows_its_services_and_an_abort() {
        let snap = snapshot(
            json!({"phase": "Degraded", "abort": true, "message": "Rollout aborted", "currentPodHash": "bbb", "stableRS": "aaa",
                "blueGreen": {"activeSelector": "aaa", "previewSelector": "bbb"}}),
            json!({"blueGreen": {"activeService": "web-active", "previewService": "web-preview"}}),
        );
        let text = render(&snap, Style::PLAIN);
        for line in [
            "Status:         Degraded (aborted)\n",
            "Strategy:       BlueGreen\n",
            "  ActiveService: web-active -> aaa\n",
            "  PreviewService: web-preview -> bbb\n",
            "  Stable:       aaa (commit -)\n",
            "  Canary:       bbb (commit -)\n",
            "GitRevert:      -\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
    }
}
