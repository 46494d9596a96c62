//! weir's own metrics (`/metrics`, Prometheus text format) and health (`/healthz`, `/readyz`).
//!
//! Labels stay bounded: per controller, per outcome, per phase, and per Rollout only where a
//! series per Rollout is the point (phase and weight), removed when the Rollout goes away. No label
//! carries a revision, a run name, a URL or a message (argo-rollouts#3929 grew without bound that way).

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels naming a controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    /// `rollout`, `analysis`, `gitsync` or `notify`.
    pub controller: String,
}

/// Labels naming a Rollout.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabel {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// Labels naming a Rollout and one of its phases.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutPhaseLabel {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Healthy, Progressing, Paused or Degraded.
    pub phase: String,
}

/// A label with one bounded value: a phase, an outcome, a provider type.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// The value.
    pub outcome: String,
}

/// Every metric weir exports.
pub struct Telemetry {
    registry: Registry,
    reconciles: Family<ControllerLabel, Counter>,
    reconcile_errors: Family<ControllerLabel, Counter>,
    reconcile_seconds: Family<ControllerLabel, Histogram>,
    rollout_phase: Family<RolloutPhaseLabel, Gauge>,
    rollout_canary_weight: Family<RolloutLabel, Gauge>,
    measurements: Family<OutcomeLabel, Counter>,
    analysis_runs: Family<OutcomeLabel, Counter>,
    git_fetch_seconds: Histogram,
    gitsync_apply_seconds: Histogram,
    git_reverts: Family<OutcomeLabel, Counter>,
    alerts: Family<OutcomeLabel, Counter>,
    ready: AtomicBool,
}

const PHASES: [&str; 4] = ["Healthy", "Progressing", "Paused", "Degraded"];

fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.5, 14))
}

impl Telemetry {
    fn new() -> Telemetry {
        let mut registry = Registry::with_prefix("weir");
        let t = Telemetry {
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_seconds: Family::new_with_constructor(seconds_histogram),
            rollout_phase: Family::default(),
            rollout_canary_weight: Family::default(),
            measurements: Family::default(),
            analysis_runs: Family::default(),
            git_fetch_seconds: seconds_histogram(),
            gitsync_apply_seconds: seconds_histogram(),
            git_reverts: Family::default(),
            alerts: Family::default(),
            ready: AtomicBool::new(false),
            registry: Registry::default(),
        };
        registry.register(
            "reconciles",
            "Reconciles, per controller",
            t.reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that failed and will be retried, per controller",
            t.reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time per reconcile, per controller",
            t.reconcile_seconds.clone(),
        );
        registry.register(
            "rollout_phase",
            "1 for the phase each Rollout is in, 0 for the others",
            t.rollout_phase.clone(),
        );
        registry.register(
            "rollout_canary_weight_percent",
            "Percent of traffic weir has set on the canary, per Rollout",
            t.rollout_canary_weight.clone(),
        );
        registry.register(
            "analysis_measurements",
            "Analysis measurements taken, by phase",
            t.measurements.clone(),
        );
        registry.register(
            "analysis_runs_completed",
            "AnalysisRuns that reached a final phase, by phase",
            t.analysis_runs.clone(),
        );
        registry.register(
            "git_fetch_duration_seconds",
            "Time per GitSync fetch",
            t.git_fetch_seconds.clone(),
        );
        registry.register(
            "gitsync_apply_duration_seconds",
            "Time per GitSync render and apply",
            t.gitsync_apply_seconds.clone(),
        );
        registry.register(
            "git_reverts",
            "Git reverts of failed releases, by outcome (pushed, blocked)",
            t.git_reverts.clone(),
        );
        registry.register(
            "alerts",
            "Chat alerts, by outcome (delivered, failed, dropped)",
            t.alerts.clone(),
        );
        Telemetry { registry, ..t }
    }

    /// Records one reconcile of `controller`.
    pub fn reconciled(&self, controller: &str, took: Duration, ok: bool) {
        let label = ControllerLabel {
            controller: controller.to_string(),
        };
        self.reconciles.get_or_create(&label).inc();
        if !ok {
            self.reconcile_errors.get_or_create(&label).inc();
        }
        self.reconcile_seconds
            .get_or_create(&label)
            .observe(took.as_secs_f64());
    }

    /// Sets a Rollout's phase and canary weight; `None` removes its series (the Rollout is gone).
    pub fn rollout(&self, namespace: &str, name: &str, state: Option<(&str, i64)>) {
        let key = RolloutLabel {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        for phase in PHASES {
            let label = RolloutPhaseLabel {
                namespace: namespace.to_string(),
                name: name.to_string(),
                phase: phase.to_string(),
            };
            match state {
                Some((current, _)) => {
                    self.rollout_phase
                        .get_or_create(&label)
                        .set(i64::from(current == phase));
                }
                None => {
                    self.rollout_phase.remove(&label);
                }
            }
        }
        match state {
            Some((_, weight)) => {
                self.rollout_canary_weight.get_or_create(&key).set(weight);
            }
            None => {
                self.rollout_canary_weight.remove(&key);
            }
        }
    }

    fn count(family: &Family<OutcomeLabel, Counter>, outcome: &str) {
        family
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Records an analysis measurement of `phase`.
    pub fn measured(&self, phase: &str) {
        Self::count(&self.measurements, phase);
    }

    /// Records an AnalysisRun that ended in `phase`.
    pub fn run_completed(&self, phase: &str) {
        Self::count(&self.analysis_runs, phase);
    }

    /// Records a Git fetch.
    pub fn fetched(&self, took: Duration) {
        self.git_fetch_seconds.observe(took.as_secs_f64());
    }

    /// Records a render and apply.
    pub fn applied(&self, took: Duration) {
        self.gitsync_apply_seconds.observe(took.as_secs_f64());
    }

    /// Records a revert outcome (`pushed`, `blocked`).
    pub fn reverted(&self, outcome: &str) {
        Self::count(&self.git_reverts, outcome);
    }

    /// Records an alert outcome (`delivered`, `failed`, `dropped`).
    pub fn alert(&self, outcome: &str) {
        Self::count(&self.alerts, outcome);
    }

    /// Marks the process ready (connected to the API, controllers started).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Runs one reconcile of `controller`, recording its count, duration and failure.
pub async fn timed<T, E>(
    controller: &str,
    reconcile: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let started = std::time::Instant::now();
    let result = reconcile.await;
    global().reconciled(controller, started.elapsed(), result.is_ok());
    result
}

/// The process's metrics.
pub fn global() -> &'static Telemetry {
    static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();
    TELEMETRY.get_or_init(Telemetry::new)
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until the process ends. Returns the bound
/// address; a port in use is an error for the caller to report, not a reason to stop reconciling.
pub async fn serve(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    use axum::http::StatusCode;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let router = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(|| async {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    global().encode(),
                )
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/readyz",
            axum::routing::get(|| async {
                if global().ready.load(Ordering::SeqCst) {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rollout_has_one_phase_at_a_time_and_its_series_go_when_it_does() {
        let t = Telemetry::new();
        t.rollout("apps", "web", Some(("Paused", 20)));
        let text = t.encode();
        assert!(
            text.contains(r#"weir_rollout_phase{namespace="apps",name="web",phase="Paused"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"weir_rollout_phase{namespace="apps",name="web",phase="Healthy"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"weir_rollout_canary_weight_percent{namespace="apps",name="web"} 20"#),
            "{text}"
        );
        t.rollout("apps", "web", None);
        assert!(!t.encode().contains("name=\"web\""));
    }

    #[test]
    fn reconciles_are_counted_per_controller_with_errors_apart() {
        let t = Telemetry::new();
        t.reconciled("gitsync", Duration::from_millis(3), true);
        t.reconciled("gitsync", Duration::from_millis(5), false);
        let text = t.encode();
        assert!(
            text.contains(r#"weir_reconciles_total{controller="gitsync"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"weir_reconcile_errors_total{controller="gitsync"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"weir_reconcile_duration_seconds_count{controller="gitsync"} 2"#),
            "{text}"
        );
    }
}

#[cfg(test)]
mod dashboard_tests {
    use super::*;

    /// Every `weir_…` series the Grafana dashboard queries is one weir exports.
    #[test]
    fn the_dashboard_queries_only_metrics_weir_exports() {
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../charts/weir/dashboards/weir.json")).unwrap();
        let t = Telemetry::new();
        t.reconciled("rollout", Duration::from_millis(1), false);
        t.rollout("ns", "ro", Some(("Healthy", 0)));
        t.measured("Successful");
        t.run_completed("Successful");
        t.fetched(Duration::from_millis(1));
        t.applied(Duration::from_millis(1));
        t.reverted("pushed");
        t.alert("delivered");
        let exported = t.encode();
        let names = regex::Regex::new(r"weir_[a-z_]+").unwrap();
        let panels = dashboard["panels"].as_array().unwrap();
        assert!(!panels.is_empty());
        for panel in panels {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                for name in names.find_iter(expr) {
                    assert!(
                        exported.contains(&format!("\n{} ", name.as_str()))
                            || exported.contains(&format!("\n{}{{", name.as_str())),
                        "{} in {expr:?} is not exported:\n{exported}",
                        name.as_str()
                    );
                }
            }
        }
    }
}
