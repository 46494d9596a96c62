//! Turning measurements into verdicts: the phase of one measurement, of each metric and of the
//! whole run, and when the next measurement is due. Pure: the caller passes the clock in.
//!
//! Semantics follow Argo Rollouts where it has them; where weir decides differently, or where
//! Argo is silent, the choice is written down here.
//!
//! - **One measurement** ([`judge`]): no data and NaN/±Inf are Inconclusive, never Successful
//!   and never an Error (Argo turns an empty vector into an Error, argo-rollouts#1466; weir
//!   does not, because an idle canary is a reason to wait for a human, not a broken provider).
//!   A provider error is Error with the provider's own message. Conditions: failureCondition
//!   true is Failed (it wins over successCondition); successCondition true is Successful;
//!   with only a successCondition, false is Failed; with only a failureCondition, false is
//!   Successful; with both and neither true, Inconclusive (Argo's documented way to ask for
//!   human judgement); with no condition at all, Successful. A condition that does not parse,
//!   fails to run or is not a boolean makes the measurement an Error naming the expression.
//! - **Counts** ([`record`]): Successful, Failed and Inconclusive measurements count toward
//!   `count` and reset `consecutiveError`; an Error does neither, so an unreachable Prometheus
//!   is retried until `consecutiveErrorLimit` is exceeded instead of using up `count`.
//! - **Metric phase** ([`assess`]): Failed when `failed > failureLimit`, Inconclusive when
//!   `inconclusive > inconclusiveLimit`, Error when `consecutiveError > consecutiveErrorLimit`.
//!   When `count` is reached without any of those it is Successful, but only if at least one
//!   measurement was Successful: a metric whose every measurement was tolerated as
//!   Inconclusive (or Failed within its limit) proved nothing, so it is Inconclusive. This is
//!   the rule that keeps a Rollout from being promoted past an analysis step on missing data.
//!   A completed phase never changes again.
//! - **Run phase**: the worst phase among the metrics that are not dry-run, in the order
//!   Failed > Error > Inconclusive > Running > Successful. A Failed, Error or Inconclusive
//!   metric completes the run at once, even while other metrics are still measuring: for a
//!   background analysis whose metrics never reach a count, waiting would let the Rollout keep
//!   progressing on a metric that can no longer succeed. An Inconclusive run never lets a
//!   Rollout promote; the Rollout pauses until a human promotes or aborts. The run is
//!   Successful only when every such metric is Successful. A run without metrics is an Error.
//! - **Dry-run metrics** are measured, judged and recorded like any other, and their verdicts
//!   are mentioned in the run's message, but they never decide the run's phase.
//! - **Terminate**: no further measurements; every metric still measuring that has not
//!   exceeded a limit ends Successful (a terminated run that has not failed is Successful).

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::analysis::{
    AnalysisPhase, AnalysisRunSpec, AnalysisRunStatus, Measurement, Metric, MetricResult,
    RunSummary,
};
use crate::api::duration::DurationError;

use super::condition::{Condition, ConditionError};
use super::value::MetricValue;

/// The message of a measurement whose query matched no series (or whose `jsonPath` selected
/// nothing).
pub const NO_DATA_MESSAGE: &str = "query returned no data";

/// Wait before retrying a measurement that ended in an error, for a metric without an
/// `interval`: without it an unreachable provider would be queried in a tight loop.
pub const ERROR_RETRY_INTERVAL: Duration = Duration::from_secs(10);

/// What one measurement attempt produced (the I/O layer fills this from the provider).
#[derive(Clone, Debug, PartialEq)]
pub enum Observation {
    /// The provider answered with a value.
    Value(MetricValue),
    /// The provider could not be asked or refused the query; the text is its own message
    /// (e.g. Prometheus's PromQL parse error, or the connection error).
    Error(String),
}

/// A metric whose spec cannot be measured as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricSpecError {
    /// `interval` or `initialDelay` is not a duration.
    #[error("metric {metric}: {field}: {source}")]
    Duration {
        /// Name of the metric.
        metric: String,
        /// `interval` or `initialDelay`.
        field: &'static str,
        /// Why the duration is invalid.
        #[source]
        source: DurationError,
    },
    /// `successCondition` or `failureCondition` is not valid CEL.
    #[error("metric {metric}: {field}: {source}")]
    Condition {
        /// Name of the metric.
        metric: String,
        /// `successCondition` or `failureCondition`.
        field: &'static str,
        /// What is wrong with the expression.
        #[source]
        source: ConditionError,
    },
}

/// Checks that a metric can be measured: its durations parse and its conditions compile.
/// The analysis controller uses it to reject a template up front instead of failing every
/// measurement.
pub fn validate(metric: &Metric) -> Result<(), MetricSpecError> {
    Timing::of(metric)?;
    Conditions::compile(metric)?;
    Ok(())
}

/// Decides a measurement's phase from an observation and the metric's conditions (see the
/// module documentation for the rules). The message names the metric and the value, e.g.
/// `error-rate: [0.07] failed "result[0] < 0.05"`.
pub fn judge(metric: &Metric, obs: &Observation) -> (AnalysisPhase, Option<String>) {
    let name = &metric.name;
    let value = match obs {
        Observation::Error(message) => {
            return (AnalysisPhase::Error, Some(format!("{name}: {message}")));
        }
        Observation::Value(value) => value,
    };
    if value.no_data() {
        return (
            AnalysisPhase::Inconclusive,
            Some(format!("{name}: {NO_DATA_MESSAGE}")),
        );
    }
    if let Some(number) = value.first_non_finite() {
        let number = super::value::format_number(number);
        let message = match value {
            MetricValue::Scalar(_) => format!("{name}: result is {number}"),
            MetricValue::Vector(samples) if samples.len() == 1 => {
                format!("{name}: result is {number}")
            }
            _ => format!("{name}: result {value} contains {number}"),
        };
        return (AnalysisPhase::Inconclusive, Some(message));
    }
    let conditions = match Conditions::compile(metric) {
        Ok(conditions) => conditions,
        Err(error) => {
            return (
                AnalysisPhase::Error,
                Some(format!("{name}: {value}: {error}")),
            );
        }
    };
    match conditions.decide(value) {
        Ok((phase, verdict)) => (phase, Some(format!("{name}: {value} {verdict}"))),
        Err(error) => (
            AnalysisPhase::Error,
            Some(format!("{name}: {value}: {error}")),
        ),
    }
}

/// Which metrics are due for a measurement now, and how long until the next one after them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Due {
    /// Names of the metrics to measure now, in spec order.
    pub metrics: Vec<String>,
    /// Time until the earliest measurement among the metrics not due now; `None` when no
    /// further measurement is scheduled (every metric is complete or out of `count`).
    pub next: Option<Duration>,
}

/// Which metrics are due now and when the next one is.
///
/// The first measurement of a metric is due `initialDelay` after the run's `startedAt` (taken
/// as `now` when unset: [`assess`] stamps it, so call it before the first `due`). Later ones
/// are due `interval` after the previous measurement finished; without an `interval` they are
/// back to back, except that an Error is retried after [`ERROR_RETRY_INTERVAL`]. Nothing is
/// due for a metric that is complete or has taken `count` measurements (unset `count` with
/// an `interval` means: until the run is terminated), nor for a completed or terminated run.
pub fn due(spec: &AnalysisRunSpec, status: &AnalysisRunStatus, now: Timestamp) -> Due {
    let mut due = Due::default();
    if status.phase.is_completed() || spec.terminate {
        return due;
    }
    let started = status.started_at.as_ref().map_or(now, |time| time.0);
    for metric in &spec.metrics {
        let result = status.metric_results.iter().find(|r| r.name == metric.name);
        if result.is_some_and(|r| r.phase.is_completed()) {
            continue;
        }
        // A metric with an unusable spec is marked Error by `assess`; it is never measured.
        let Ok(timing) = Timing::of(metric) else {
            continue;
        };
        let taken = result.map_or(0, |r| r.count);
        if timing.count.is_some_and(|count| taken >= count) {
            continue;
        }
        let last = result.and_then(|r| r.measurements.last());
        let due_at = match last {
            None => started.checked_add(timing.initial_delay),
            Some(last) => {
                let gap = match (timing.interval, last.phase) {
                    (Some(interval), _) => interval,
                    (None, AnalysisPhase::Error) => ERROR_RETRY_INTERVAL,
                    (None, _) => Duration::ZERO,
                };
                let finished = last
                    .finished_at
                    .as_ref()
                    .or(last.started_at.as_ref())
                    .map_or(started, |time| time.0);
                finished.checked_add(gap)
            }
        };
        // A due time past the end of representable time is never.
        let Ok(due_at) = due_at else {
            continue;
        };
        if due_at <= now {
            due.metrics.push(metric.name.clone());
        } else {
            let wait = now.duration_until(due_at).unsigned_abs();
            due.next = Some(due.next.map_or(wait, |next| next.min(wait)));
        }
    }
    due
}

/// Records a finished measurement into the status and re-assesses the run (see [`assess`]).
///
/// Updates the metric's counters (`count`, per-phase counts, `consecutiveError`) and keeps its
/// newest measurements up to `measurementRetention` (default 10; at least the newest one is
/// always kept, because the next measurement is timed from it). A measurement for a metric
/// not in the spec, for a metric that is already complete, or for a completed run is dropped:
/// a verdict never changes. A measurement recorded as Pending or Running is stored as an Error,
/// since a measurement that did not complete cannot decide anything.
// Each argument is one field of the measurement being recorded, passed straight from the
// provider's answer; grouping them would only move the same eight values into a struct.
#[allow(clippy::too_many_arguments)]
pub fn record(
    spec: &AnalysisRunSpec,
    status: &mut AnalysisRunStatus,
    metric: &str,
    phase: AnalysisPhase,
    value: Option<String>,
    message: Option<String>,
    started: Timestamp,
    finished: Timestamp,
) {
    if status.phase.is_completed() || !spec.metrics.iter().any(|m| m.name == metric) {
        return;
    }
    if status.started_at.is_none() {
        status.started_at = Some(Time(started));
    }
    ensure_results(spec, status);
    let Some(result) = status.metric_results.iter_mut().find(|r| r.name == metric) else {
        return;
    };
    if result.phase.is_completed() {
        return;
    }
    let (phase, message) = if phase.is_completed() {
        (phase, message)
    } else {
        (
            AnalysisPhase::Error,
            Some(format!("{metric}: measurement ended while {phase}")),
        )
    };
    match phase {
        AnalysisPhase::Successful => result.successful += 1,
        AnalysisPhase::Failed => result.failed += 1,
        AnalysisPhase::Inconclusive => result.inconclusive += 1,
        AnalysisPhase::Error | AnalysisPhase::Pending | AnalysisPhase::Running => {
            result.error += 1;
        }
    }
    if phase == AnalysisPhase::Error {
        result.consecutive_error += 1;
    } else {
        result.count += 1;
        result.consecutive_error = 0;
    }
    result.measurements.push(Measurement {
        phase,
        value,
        message,
        started_at: Some(Time(started)),
        finished_at: Some(Time(finished)),
    });
    let keep = spec.measurement_retention(metric).max(1);
    let excess = result.measurements.len().saturating_sub(keep);
    result.measurements.drain(..excess);
    assess(spec, status, finished);
}

/// Re-assesses every metric and the run from the recorded counts (see the module
/// documentation for the rules), stamps the run's `startedAt` when unset, and fills in the run
/// summary. A completed run is left as it is.
pub fn assess(spec: &AnalysisRunSpec, status: &mut AnalysisRunStatus, now: Timestamp) {
    if status.started_at.is_none() {
        status.started_at = Some(Time(now));
    }
    if status.phase.is_completed() {
        return;
    }
    ensure_results(spec, status);
    for metric in &spec.metrics {
        let Some(result) = status
            .metric_results
            .iter_mut()
            .find(|r| r.name == metric.name)
        else {
            continue;
        };
        result.dry_run = spec.is_dry_run(&metric.name);
        if result.phase.is_completed() {
            continue;
        }
        let (phase, message) = metric_phase(metric, result, spec.terminate);
        result.phase = phase;
        result.message = message;
    }
    let (phase, message) = run_phase(spec, status);
    status.phase = phase;
    status.message = message;
    status.run_summary = Some(summary(spec, status));
}

/// Adds an empty result for every metric of the spec that has none yet, keeping spec order for
/// new ones.
fn ensure_results(spec: &AnalysisRunSpec, status: &mut AnalysisRunStatus) {
    for metric in &spec.metrics {
        if !status.metric_results.iter().any(|r| r.name == metric.name) {
            status.metric_results.push(MetricResult {
                name: metric.name.clone(),
                dry_run: spec.is_dry_run(&metric.name),
                ..MetricResult::default()
            });
        }
    }
}

fn metric_phase(
    metric: &Metric,
    result: &MetricResult,
    terminate: bool,
) -> (AnalysisPhase, Option<String>) {
    let name = &metric.name;
    if let Err(error) = validate(metric) {
        return (AnalysisPhase::Error, Some(error.to_string()));
    }
    let limits = [
        (
            AnalysisPhase::Failed,
            result.failed,
            "failed",
            metric.failure_limit(),
            "failureLimit",
        ),
        (
            AnalysisPhase::Inconclusive,
            result.inconclusive,
            "inconclusive",
            metric.inconclusive_limit(),
            "inconclusiveLimit",
        ),
        (
            AnalysisPhase::Error,
            result.consecutive_error,
            "consecutiveError",
            metric.consecutive_error_limit(),
            "consecutiveErrorLimit",
        ),
    ];
    for (phase, observed, counter, limit, limit_name) in limits {
        // A negative limit cannot be written through the schema; read it as the strictest.
        let limit = limit.max(0);
        if observed > limit {
            let decided_by = last_message(name, result, phase);
            return (
                phase,
                Some(format!(
                    "{decided_by} ({counter} {observed} > {limit_name} {limit})"
                )),
            );
        }
    }
    // Timing parsed in `validate` above, so this is the metric's effective count.
    let count = Timing::of(metric).ok().and_then(|timing| timing.count);
    if count.is_some_and(|count| result.count >= count) {
        let taken = result.count;
        if result.successful == 0 {
            let mut message = format!("{name}: none of {taken} measurements was successful");
            if let Some(last) = result.measurements.last().and_then(|m| m.message.as_ref()) {
                message.push_str(&format!("; last: {last}"));
            }
            return (AnalysisPhase::Inconclusive, Some(message));
        }
        let decided_by = last_message(name, result, AnalysisPhase::Successful);
        let successful = result.successful;
        return (
            AnalysisPhase::Successful,
            Some(format!("{decided_by} ({successful} of {taken} successful)")),
        );
    }
    if terminate {
        let taken = result.count;
        return (
            AnalysisPhase::Successful,
            Some(format!("{name}: terminated after {taken} measurements")),
        );
    }
    if result.count == 0 && result.error == 0 {
        (AnalysisPhase::Pending, None)
    } else {
        (AnalysisPhase::Running, None)
    }
}

/// The message of the newest retained measurement with `phase`, or a description of the
/// phase when none is retained.
fn last_message(name: &str, result: &MetricResult, phase: AnalysisPhase) -> String {
    let last = result.measurements.iter().rev().find(|m| m.phase == phase);
    match last {
        Some(Measurement {
            message: Some(message),
            ..
        }) => message.clone(),
        Some(Measurement {
            value: Some(value), ..
        }) => format!("{name}: {value} {phase}"),
        _ => format!("{name}: {phase}"),
    }
}

/// How bad a completed metric phase is for the run; `None` for phases that do not complete a
/// run on their own.
fn severity(phase: AnalysisPhase) -> Option<u8> {
    match phase {
        AnalysisPhase::Failed => Some(3),
        AnalysisPhase::Error => Some(2),
        AnalysisPhase::Inconclusive => Some(1),
        AnalysisPhase::Pending | AnalysisPhase::Running | AnalysisPhase::Successful => None,
    }
}

fn run_phase(
    spec: &AnalysisRunSpec,
    status: &AnalysisRunStatus,
) -> (AnalysisPhase, Option<String>) {
    if spec.metrics.is_empty() {
        return (
            AnalysisPhase::Error,
            Some("analysis has no metrics".to_owned()),
        );
    }
    let results: Vec<&MetricResult> = spec
        .metrics
        .iter()
        .filter_map(|metric| status.metric_results.iter().find(|r| r.name == metric.name))
        .collect();
    let deciding: Vec<&MetricResult> = results.iter().copied().filter(|r| !r.dry_run).collect();
    let dry_run_notes: Vec<String> = results
        .iter()
        .filter(|r| r.dry_run && severity(r.phase).is_some())
        .map(|r| {
            let reason = r.message.as_deref().unwrap_or(r.name.as_str());
            format!("dry-run {}: {reason}", r.phase)
        })
        .collect();
    let with_notes = |message: Option<String>| -> Option<String> {
        let mut parts: Vec<String> = message.into_iter().collect();
        parts.extend(dry_run_notes.iter().cloned());
        (!parts.is_empty()).then(|| parts.join("; "))
    };

    let mut worst: Option<(u8, &MetricResult)> = None;
    for result in &deciding {
        if let Some(rank) = severity(result.phase)
            && worst.is_none_or(|(worst_rank, _)| rank > worst_rank)
        {
            worst = Some((rank, result));
        }
    }
    if let Some((_, result)) = worst {
        let message = result
            .message
            .clone()
            .unwrap_or_else(|| format!("{}: {}", result.name, result.phase));
        return (result.phase, with_notes(Some(message)));
    }

    // With only dry-run metrics nothing can fail the run; it ends when they all have.
    let must_complete = if deciding.is_empty() {
        &results
    } else {
        &deciding
    };
    if must_complete.iter().all(|r| r.phase.is_completed()) {
        let message = if deciding.is_empty() {
            "every metric is dry-run".to_owned()
        } else {
            deciding
                .iter()
                .filter_map(|r| r.message.clone())
                .collect::<Vec<_>>()
                .join("; ")
        };
        let message = (!message.is_empty()).then_some(message);
        return (AnalysisPhase::Successful, with_notes(message));
    }
    let started = results.iter().any(|r| r.phase != AnalysisPhase::Pending);
    let phase = if started {
        AnalysisPhase::Running
    } else {
        AnalysisPhase::Pending
    };
    (phase, with_notes(None))
}

/// Counts of the deciding (not dry-run) metrics per phase.
fn summary(spec: &AnalysisRunSpec, status: &AnalysisRunStatus) -> RunSummary {
    let mut summary = RunSummary::default();
    for result in &status.metric_results {
        if result.dry_run || !spec.metrics.iter().any(|m| m.name == result.name) {
            continue;
        }
        summary.count += 1;
        match result.phase {
            AnalysisPhase::Successful => summary.successful += 1,
            AnalysisPhase::Failed => summary.failed += 1,
            AnalysisPhase::Inconclusive => summary.inconclusive += 1,
            AnalysisPhase::Error => summary.error += 1,
            AnalysisPhase::Pending | AnalysisPhase::Running => {}
        }
    }
    summary
}

/// A metric's schedule, parsed.
struct Timing {
    interval: Option<Duration>,
    initial_delay: Duration,
    /// Measurements to take; `None` means until the run is terminated.
    count: Option<i32>,
}

impl Timing {
    fn of(metric: &Metric) -> Result<Timing, MetricSpecError> {
        let parse = |field: &'static str, value: Option<&crate::api::DurationString>| {
            value
                .map(|duration| duration.to_duration())
                .transpose()
                .map_err(|source| MetricSpecError::Duration {
                    metric: metric.name.clone(),
                    field,
                    source,
                })
        };
        let interval = parse("interval", metric.interval.as_ref())?;
        let initial_delay =
            parse("initialDelay", metric.initial_delay.as_ref())?.unwrap_or_default();
        let count = match (metric.count, interval) {
            (Some(count), _) => Some(count.max(0)),
            // Without an interval there is nothing to repeat on: one measurement.
            (None, None) => Some(1),
            (None, Some(_)) => None,
        };
        Ok(Timing {
            interval,
            initial_delay,
            count,
        })
    }
}

/// A metric's compiled conditions.
struct Conditions {
    success: Option<Condition>,
    failure: Option<Condition>,
}

impl Conditions {
    fn compile(metric: &Metric) -> Result<Conditions, MetricSpecError> {
        let compile = |field: &'static str, expr: Option<&String>| {
            expr.map(|expr| Condition::compile(expr))
                .transpose()
                .map_err(|source| MetricSpecError::Condition {
                    metric: metric.name.clone(),
                    field,
                    source,
                })
        };
        Ok(Conditions {
            success: compile("successCondition", metric.success_condition.as_ref())?,
            failure: compile("failureCondition", metric.failure_condition.as_ref())?,
        })
    }

    /// The phase of a measured value, and the words explaining it (after the value).
    fn decide(&self, value: &MetricValue) -> Result<(AnalysisPhase, String), ConditionError> {
        if let Some(failure) = &self.failure
            && failure.evaluate(value)?
        {
            return Ok((
                AnalysisPhase::Failed,
                format!("met failureCondition {:?}", failure.expression()),
            ));
        }
        let decision = match (&self.success, &self.failure) {
            (Some(success), failure) => {
                if success.evaluate(value)? {
                    (
                        AnalysisPhase::Successful,
                        format!("passed {:?}", success.expression()),
                    )
                } else if let Some(failure) = failure {
                    (
                        AnalysisPhase::Inconclusive,
                        format!(
                            "met neither successCondition {:?} nor failureCondition {:?}",
                            success.expression(),
                            failure.expression()
                        ),
                    )
                } else {
                    (
                        AnalysisPhase::Failed,
                        format!("failed {:?}", success.expression()),
                    )
                }
            }
            (None, Some(failure)) => (
                AnalysisPhase::Successful,
                format!("did not meet failureCondition {:?}", failure.expression()),
            ),
            (None, None) => (AnalysisPhase::Successful, "(no conditions)".to_owned()),
        };
        Ok(decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::DurationString;
    use crate::api::analysis::{DryRun, MeasurementRetention, MetricProvider, PrometheusMetric};
    use AnalysisPhase::{Error, Failed, Inconclusive, Pending, Running, Successful};
    use serde_json::json;

    const CONNECTION_REFUSED: &str = "Post \"http://prometheus:9090/api/v1/query\": dial tcp \
                                      10.96.0.9:9090: connect: connection refused";

    fn t(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn metric(name: &str) -> Metric {
        Metric {
            name: name.to_owned(),
            interval: None,
            initial_delay: None,
            count: None,
            success_condition: None,
            failure_condition: None,
            failure_limit: None,
            inconclusive_limit: None,
            consecutive_error_limit: None,
            provider: MetricProvider::Prometheus(PrometheusMetric {
                address: "http://prometheus:9090".to_owned(),
                query: "vector(0)".to_owned(),
                timeout: None,
                headers: Vec::new(),
                authentication: None,
            }),
        }
    }

    fn success(mut metric: Metric, expr: &str) -> Metric {
        metric.success_condition = Some(expr.to_owned());
        metric
    }

    fn failure(mut metric: Metric, expr: &str) -> Metric {
        metric.failure_condition = Some(expr.to_owned());
        metric
    }

    fn every(mut metric: Metric, interval: &str, count: Option<i32>) -> Metric {
        metric.interval = Some(DurationString::new(interval));
        metric.count = count;
        metric
    }

    fn run_spec(metrics: Vec<Metric>) -> AnalysisRunSpec {
        AnalysisRunSpec {
            metrics,
            args: Vec::new(),
            dry_run: Vec::new(),
            measurement_retention: Vec::new(),
            terminate: false,
        }
    }

    fn vector(samples: &[f64]) -> Observation {
        Observation::Value(MetricValue::Vector(samples.to_vec()))
    }

    /// Judges `obs` for the named metric and records it, the way the controller does; each
    /// measurement takes one second and starts at `at`.
    fn measure(
        spec: &AnalysisRunSpec,
        status: &mut AnalysisRunStatus,
        name: &str,
        obs: &Observation,
        at: i64,
    ) {
        let metric = spec.metrics.iter().find(|m| m.name == name).unwrap();
        let (phase, message) = judge(metric, obs);
        let value = match obs {
            Observation::Value(value) => Some(value.display()),
            Observation::Error(_) => None,
        };
        record(spec, status, name, phase, value, message, t(at), t(at + 1));
    }

    fn result<'a>(status: &'a AnalysisRunStatus, name: &str) -> &'a MetricResult {
        status
            .metric_results
            .iter()
            .find(|r| r.name == name)
            .unwrap()
    }

    #[test]
    fn judge_decides_every_kind_of_observation() {
        let rate = "result[0] < 0.05";
        let refused = format!("error-rate: {CONNECTION_REFUSED}");
        let cases: Vec<(&str, Metric, Observation, AnalysisPhase, &str)> = vec![
            (
                "PromQL syntax error keeps Prometheus's message",
                success(metric("error-rate"), rate),
                Observation::Error(
                    "bad_data: 1:14: parse error: unexpected right parenthesis ')'".to_owned(),
                ),
                Error,
                "error-rate: bad_data: 1:14: parse error: unexpected right parenthesis ')'",
            ),
            (
                "unreachable Prometheus",
                success(metric("error-rate"), rate),
                Observation::Error(CONNECTION_REFUSED.to_owned()),
                Error,
                &refused,
            ),
            (
                "empty vector",
                success(metric("error-rate"), rate),
                vector(&[]),
                Inconclusive,
                "error-rate: query returned no data",
            ),
            (
                "null JSON",
                success(metric("latency"), "result < 250"),
                Observation::Value(MetricValue::Json(json!(null))),
                Inconclusive,
                "latency: query returned no data",
            ),
            (
                "NaN scalar",
                success(metric("error-rate"), "result < 0.05"),
                Observation::Value(MetricValue::Scalar(f64::NAN)),
                Inconclusive,
                "error-rate: result is NaN",
            ),
            (
                "one NaN sample, which a condition would otherwise call Failed",
                success(metric("error-rate"), rate),
                vector(&[f64::NAN]),
                Inconclusive,
                "error-rate: result is NaN",
            ),
            (
                "-Inf scalar",
                success(metric("error-rate"), "result < 0.05"),
                Observation::Value(MetricValue::Scalar(f64::NEG_INFINITY)),
                Inconclusive,
                "error-rate: result is -Inf",
            ),
            (
                "+Inf among several samples",
                success(metric("error-rate"), rate),
                vector(&[0.01, f64::INFINITY]),
                Inconclusive,
                "error-rate: result [0.01,+Inf] contains +Inf",
            ),
            (
                "successCondition true",
                success(metric("error-rate"), rate),
                vector(&[0.01]),
                Successful,
                r#"error-rate: [0.01] passed "result[0] < 0.05""#,
            ),
            (
                "successCondition false without failureCondition",
                success(metric("error-rate"), rate),
                vector(&[0.07]),
                Failed,
                r#"error-rate: [0.07] failed "result[0] < 0.05""#,
            ),
            (
                "failureCondition true",
                failure(metric("error-rate"), "result[0] >= 0.1"),
                vector(&[0.12]),
                Failed,
                r#"error-rate: [0.12] met failureCondition "result[0] >= 0.1""#,
            ),
            (
                "failureCondition false without successCondition",
                failure(metric("error-rate"), "result[0] >= 0.1"),
                vector(&[0.07]),
                Successful,
                r#"error-rate: [0.07] did not meet failureCondition "result[0] >= 0.1""#,
            ),
            (
                "failureCondition wins when both are true",
                failure(success(metric("error-rate"), "true"), "result[0] >= 0.1"),
                vector(&[0.12]),
                Failed,
                r#"error-rate: [0.12] met failureCondition "result[0] >= 0.1""#,
            ),
            (
                "both conditions, neither true",
                failure(success(metric("error-rate"), rate), "result[0] >= 0.1"),
                vector(&[0.07]),
                Inconclusive,
                r#"error-rate: [0.07] met neither successCondition "result[0] < 0.05" nor failureCondition "result[0] >= 0.1""#,
            ),
            (
                "no conditions",
                metric("error-rate"),
                vector(&[0.07]),
                Successful,
                "error-rate: [0.07] (no conditions)",
            ),
            (
                "scalar",
                success(metric("error-rate"), "result < 0.05"),
                Observation::Value(MetricValue::Scalar(0.07)),
                Failed,
                r#"error-rate: 0.07 failed "result < 0.05""#,
            ),
            (
                "web JSON",
                success(metric("availability"), "result.rate >= 0.99"),
                Observation::Value(MetricValue::Json(json!({"rate": 0.995}))),
                Successful,
                r#"availability: {"rate":0.995} passed "result.rate >= 0.99""#,
            ),
            (
                "vector size",
                success(metric("pods"), "size(result) > 0"),
                vector(&[1.0, 1.0]),
                Successful,
                r#"pods: [1,1] passed "size(result) > 0""#,
            ),
            (
                "condition that does not parse",
                success(metric("error-rate"), "result[0] <"),
                vector(&[0.01]),
                Error,
                r#"condition "result[0] <" does not parse"#,
            ),
            (
                "condition that is not a boolean",
                success(metric("error-rate"), "result[0]"),
                vector(&[0.01]),
                Error,
                r#"error-rate: [0.01]: condition "result[0]" evaluated to double 0.01, not a boolean"#,
            ),
            (
                "condition that fails to run",
                success(metric("availability"), "result.rate >= 0.99"),
                Observation::Value(MetricValue::Json(json!({"p99": 120}))),
                Error,
                r#"availability: {"p99":120}: condition "result.rate >= 0.99" could not be evaluated"#,
            ),
        ];
        for (case, metric, obs, phase, message) in cases {
            let (got_phase, got_message) = judge(&metric, &obs);
            let got_message = got_message.unwrap_or_default();
            assert_eq!(got_phase, phase, "{case}: {got_message}");
            assert!(
                got_message.contains(message),
                "{case}: {got_message:?} does not contain {message:?}"
            );
        }
    }

    #[test]
    fn due_honours_initial_delay_interval_count_and_terminate() {
        struct Case {
            name: &'static str,
            metric: Metric,
            /// Observations recorded before asking, each starting at the given second.
            history: Vec<(Observation, i64)>,
            started_at: Option<i64>,
            terminate: bool,
            now: i64,
            due: bool,
            next: Option<u64>,
        }
        let delayed = |delay: &str| {
            let mut m = metric("m");
            m.initial_delay = Some(DurationString::new(delay));
            m
        };
        let ok = || vector(&[1.0]);
        let cases = vec![
            Case {
                name: "single measurement, no delay: due at once",
                metric: metric("m"),
                history: vec![],
                started_at: Some(0),
                terminate: false,
                now: 0,
                due: true,
                next: None,
            },
            Case {
                name: "initialDelay not yet over",
                metric: delayed("30s"),
                history: vec![],
                started_at: Some(0),
                terminate: false,
                now: 10,
                due: false,
                next: Some(20),
            },
            Case {
                name: "initialDelay over",
                metric: delayed("30s"),
                history: vec![],
                started_at: Some(0),
                terminate: false,
                now: 30,
                due: true,
                next: None,
            },
            Case {
                name: "initialDelay counts from now when the run has not started",
                metric: delayed("30s"),
                history: vec![],
                started_at: None,
                terminate: false,
                now: 100,
                due: false,
                next: Some(30),
            },
            Case {
                name: "interval counts from the last measurement's finish",
                metric: every(metric("m"), "10s", Some(3)),
                history: vec![(ok(), 0)],
                started_at: Some(0),
                terminate: false,
                now: 5,
                due: false,
                next: Some(6),
            },
            Case {
                name: "interval over",
                metric: every(metric("m"), "10s", Some(3)),
                history: vec![(ok(), 0)],
                started_at: Some(0),
                terminate: false,
                now: 11,
                due: true,
                next: None,
            },
            Case {
                name: "count reached: nothing more",
                metric: every(metric("m"), "10s", Some(2)),
                history: vec![(ok(), 0), (ok(), 11)],
                started_at: Some(0),
                terminate: false,
                now: 100,
                due: false,
                next: None,
            },
            Case {
                name: "no count with an interval: measures until terminated",
                metric: every(metric("m"), "10s", None),
                history: (0..12).map(|i| (ok(), i * 11)).collect(),
                started_at: Some(0),
                terminate: false,
                now: 200,
                due: true,
                next: None,
            },
            Case {
                name: "terminated: nothing more",
                metric: every(metric("m"), "10s", None),
                history: vec![(ok(), 0)],
                started_at: Some(0),
                terminate: true,
                now: 200,
                due: false,
                next: None,
            },
            Case {
                name: "count without interval: back to back",
                metric: {
                    let mut m = metric("m");
                    m.count = Some(3);
                    m
                },
                history: vec![(ok(), 0)],
                started_at: Some(0),
                terminate: false,
                now: 1,
                due: true,
                next: None,
            },
            Case {
                name: "error without interval: retried after ERROR_RETRY_INTERVAL",
                metric: metric("m"),
                history: vec![(Observation::Error(CONNECTION_REFUSED.to_owned()), 0)],
                started_at: Some(0),
                terminate: false,
                now: 1,
                due: false,
                next: Some(ERROR_RETRY_INTERVAL.as_secs()),
            },
            Case {
                name: "error with interval: retried after the interval",
                metric: every(metric("m"), "3s", Some(2)),
                history: vec![(Observation::Error(CONNECTION_REFUSED.to_owned()), 0)],
                started_at: Some(0),
                terminate: false,
                now: 4,
                due: true,
                next: None,
            },
            Case {
                name: "completed metric: nothing more",
                metric: success(every(metric("m"), "10s", None), "result[0] < 0.5"),
                history: vec![(ok(), 0)],
                started_at: Some(0),
                terminate: false,
                now: 100,
                due: false,
                next: None,
            },
        ];
        for case in cases {
            let mut spec = run_spec(vec![case.metric]);
            let mut status = AnalysisRunStatus {
                started_at: case.started_at.map(|s| Time(t(s))),
                ..AnalysisRunStatus::default()
            };
            for (obs, at) in &case.history {
                measure(&spec, &mut status, "m", obs, *at);
            }
            spec.terminate = case.terminate;
            let due = due(&spec, &status, t(case.now));
            let expected = Due {
                metrics: if case.due {
                    vec!["m".to_owned()]
                } else {
                    vec![]
                },
                next: case.next.map(Duration::from_secs),
            };
            assert_eq!(due, expected, "{}", case.name);
        }
    }

    #[test]
    fn due_reports_the_earliest_next_measurement_across_metrics() {
        let spec = run_spec(vec![
            every(metric("slow"), "60s", None),
            every(metric("fast"), "5s", None),
            every(metric("now"), "1s", None),
        ]);
        let mut status = AnalysisRunStatus {
            started_at: Some(Time(t(0))),
            ..AnalysisRunStatus::default()
        };
        for name in ["slow", "fast"] {
            measure(&spec, &mut status, name, &vector(&[1.0]), 0);
        }
        let due = due(&spec, &status, t(2));
        assert_eq!(due.metrics, vec!["now".to_owned()]);
        assert_eq!(due.next, Some(Duration::from_secs(4)));

        status.phase = Failed;
        assert_eq!(super::due(&spec, &status, t(100)), Due::default());
    }

    #[test]
    fn limits_decide_at_one_past_the_limit() {
        let rate = "result[0] < 0.05";
        let refused_five_times = format!(
            "error-rate: {CONNECTION_REFUSED} (consecutiveError 5 > consecutiveErrorLimit 4)"
        );
        let bad = || vector(&[0.07]);
        let none = || vector(&[]);
        let down = || Observation::Error(CONNECTION_REFUSED.to_owned());
        let with = |mut m: Metric, f: fn(&mut Metric)| {
            f(&mut m);
            m
        };
        let cases: Vec<(&str, Metric, Vec<Observation>, AnalysisPhase, &str)> = vec![
            (
                "default failureLimit 0: the first failure fails",
                success(every(metric("error-rate"), "1s", Some(5)), rate),
                vec![bad()],
                Failed,
                r#"error-rate: [0.07] failed "result[0] < 0.05" (failed 1 > failureLimit 0)"#,
            ),
            (
                "failureLimit 2: at the limit keeps running",
                with(
                    success(every(metric("error-rate"), "1s", Some(5)), rate),
                    |m| m.failure_limit = Some(2),
                ),
                vec![bad(), bad()],
                Running,
                "",
            ),
            (
                "failureLimit 2: over the limit fails",
                with(
                    success(every(metric("error-rate"), "1s", Some(5)), rate),
                    |m| m.failure_limit = Some(2),
                ),
                vec![bad(), bad(), bad()],
                Failed,
                "(failed 3 > failureLimit 2)",
            ),
            (
                "default inconclusiveLimit 0: no data once is Inconclusive",
                success(metric("error-rate"), rate),
                vec![none()],
                Inconclusive,
                "error-rate: query returned no data (inconclusive 1 > inconclusiveLimit 0)",
            ),
            (
                "inconclusiveLimit 1: at the limit keeps running",
                with(
                    success(every(metric("error-rate"), "1s", Some(5)), rate),
                    |m| m.inconclusive_limit = Some(1),
                ),
                vec![none()],
                Running,
                "",
            ),
            (
                "inconclusiveLimit 1: over the limit",
                with(
                    success(every(metric("error-rate"), "1s", Some(5)), rate),
                    |m| m.inconclusive_limit = Some(1),
                ),
                vec![none(), none()],
                Inconclusive,
                "(inconclusive 2 > inconclusiveLimit 1)",
            ),
            (
                "default consecutiveErrorLimit 4: four errors keep running",
                success(metric("error-rate"), rate),
                vec![down(), down(), down(), down()],
                Running,
                "",
            ),
            (
                "default consecutiveErrorLimit 4: the fifth error is Error",
                success(metric("error-rate"), rate),
                vec![down(), down(), down(), down(), down()],
                Error,
                &refused_five_times,
            ),
            (
                "consecutiveErrorLimit 0: the first error is Error",
                with(success(metric("error-rate"), rate), |m| {
                    m.consecutive_error_limit = Some(0)
                }),
                vec![down()],
                Error,
                "(consecutiveError 1 > consecutiveErrorLimit 0)",
            ),
            (
                "a success resets consecutive errors",
                success(every(metric("error-rate"), "1s", Some(3)), rate),
                vec![
                    down(),
                    down(),
                    down(),
                    down(),
                    vector(&[0.01]),
                    down(),
                    down(),
                    down(),
                    down(),
                ],
                Running,
                "",
            ),
            (
                "errors do not use up count",
                success(metric("error-rate"), rate),
                vec![down(), vector(&[0.01])],
                Successful,
                r#"error-rate: [0.01] passed "result[0] < 0.05" (1 of 1 successful)"#,
            ),
            (
                "failures within the limit still let the count succeed",
                with(
                    success(every(metric("error-rate"), "1s", Some(3)), rate),
                    |m| m.failure_limit = Some(1),
                ),
                vec![bad(), vector(&[0.01]), vector(&[0.02])],
                Successful,
                r#"error-rate: [0.02] passed "result[0] < 0.05" (2 of 3 successful)"#,
            ),
            (
                "count reached on tolerated missing data alone is not a success",
                with(
                    success(every(metric("error-rate"), "1s", Some(2)), rate),
                    |m| m.inconclusive_limit = Some(5),
                ),
                vec![none(), none()],
                Inconclusive,
                "error-rate: none of 2 measurements was successful; last: error-rate: query returned no data",
            ),
        ];
        for (case, metric, observations, phase, message) in cases {
            let spec = run_spec(vec![metric]);
            let mut status = AnalysisRunStatus::default();
            for (at, obs) in (0..).step_by(2).zip(&observations) {
                measure(&spec, &mut status, "error-rate", obs, at);
            }
            let result = result(&status, "error-rate");
            assert_eq!(result.phase, phase, "{case}: {:?}", result.message);
            assert_eq!(status.phase, phase, "{case}: run phase");
            let got = result.message.clone().unwrap_or_default();
            assert!(got.contains(message), "{case}: {got:?} lacks {message:?}");
            if phase.is_completed() {
                assert_eq!(status.message.as_deref(), Some(got.as_str()), "{case}");
            }
        }
    }

    #[test]
    fn record_keeps_counts_per_outcome() {
        let mut m = success(every(metric("error-rate"), "1s", None), "result[0] < 0.05");
        // Limits high enough to record mixed outcomes without completing the metric.
        m.failure_limit = Some(5);
        m.inconclusive_limit = Some(5);
        let spec = run_spec(vec![m]);
        let mut status = AnalysisRunStatus::default();
        let observations = [
            vector(&[0.01]),
            Observation::Error(CONNECTION_REFUSED.to_owned()),
            Observation::Error(CONNECTION_REFUSED.to_owned()),
            vector(&[]),
            vector(&[0.07]),
            Observation::Error(CONNECTION_REFUSED.to_owned()),
        ];
        for (at, obs) in (0..).zip(&observations) {
            measure(&spec, &mut status, "error-rate", obs, at * 2);
        }
        let result = result(&status, "error-rate");
        let counts = (
            result.count,
            result.successful,
            result.failed,
            result.inconclusive,
            result.error,
            result.consecutive_error,
        );
        assert_eq!(
            counts,
            (3, 1, 1, 1, 3, 1),
            "count, successful, failed, inconclusive, error, consecutive"
        );
        assert_eq!(result.phase, Running);
        assert_eq!(status.started_at, Some(Time(t(0))));
        let last = result.measurements.last().unwrap();
        assert_eq!(last.phase, Error);
        assert_eq!(last.value, None);
        assert_eq!(last.started_at, Some(Time(t(10))));
        assert_eq!(last.finished_at, Some(Time(t(11))));
        assert_eq!(result.measurements[0].value.as_deref(), Some("[0.01]"));
    }

    #[test]
    fn retention_keeps_the_newest_measurements() {
        let cases = [
            (None, 12, 10),
            (Some(3), 12, 3),
            (Some(0), 5, 1),
            (Some(20), 12, 12),
        ];
        for (limit, taken, kept) in cases {
            let mut spec = run_spec(vec![every(metric("m"), "1s", None)]);
            if let Some(limit) = limit {
                spec.measurement_retention = vec![MeasurementRetention {
                    metric_name: "m".to_owned(),
                    limit,
                }];
            }
            let mut status = AnalysisRunStatus::default();
            for at in 0..taken {
                measure(&spec, &mut status, "m", &vector(&[at as f64]), at * 2);
            }
            let result = result(&status, "m");
            assert_eq!(result.count, i32::try_from(taken).unwrap(), "{limit:?}");
            assert_eq!(result.measurements.len(), kept, "{limit:?}");
            let newest = format!("[{}]", taken - 1);
            assert_eq!(
                result.measurements.last().unwrap().value.as_deref(),
                Some(newest.as_str()),
                "{limit:?}"
            );
        }
    }

    #[test]
    fn dry_run_metrics_are_recorded_but_never_decide() {
        let mut spec = run_spec(vec![
            success(metric("error-rate"), "result[0] < 0.05"),
            success(metric("latency"), "result[0] < 250"),
        ]);
        spec.dry_run = vec![DryRun {
            metric_name: "latency".to_owned(),
        }];
        let mut status = AnalysisRunStatus::default();

        measure(&spec, &mut status, "latency", &vector(&[900.0]), 0);
        let latency = result(&status, "latency");
        assert_eq!(latency.phase, Failed);
        assert!(latency.dry_run);
        assert_eq!(
            status.phase, Running,
            "a failed dry-run metric does not fail the run"
        );

        measure(&spec, &mut status, "error-rate", &vector(&[0.01]), 2);
        assert_eq!(status.phase, Successful);
        let message = status.message.clone().unwrap_or_default();
        assert!(
            message.starts_with(r#"error-rate: [0.01] passed "result[0] < 0.05""#),
            "{message}"
        );
        assert!(
            message.contains(r#"dry-run Failed: latency: [900] failed "result[0] < 250""#),
            "{message}"
        );
        assert_eq!(
            status.run_summary,
            Some(RunSummary {
                count: 1,
                successful: 1,
                ..RunSummary::default()
            }),
            "the summary counts deciding metrics only"
        );

        // A run of dry-run metrics only ends Successful whatever they measure.
        let mut spec = run_spec(vec![success(metric("latency"), "result[0] < 250")]);
        spec.dry_run = vec![DryRun {
            metric_name: "latency".to_owned(),
        }];
        let mut status = AnalysisRunStatus::default();
        measure(&spec, &mut status, "latency", &vector(&[]), 0);
        assert_eq!(result(&status, "latency").phase, Inconclusive);
        assert_eq!(status.phase, Successful);
    }

    #[test]
    fn the_run_is_the_worst_deciding_metric() {
        let rate = "result[0] < 0.05";
        let a = || success(every(metric("a"), "1s", Some(2)), rate);
        let b = || success(every(metric("b"), "1s", Some(2)), rate);
        let ok = || vector(&[0.01]);
        let bad = || vector(&[0.07]);
        let none = || vector(&[]);
        let down = || Observation::Error(CONNECTION_REFUSED.to_owned());
        let no_errors = |mut m: Metric| {
            m.consecutive_error_limit = Some(0);
            m
        };
        // (case, metrics, measurements in order, run phase, text the run message contains)
        type RunCase<'a> = (
            &'a str,
            Vec<Metric>,
            Vec<(&'a str, Observation)>,
            AnalysisPhase,
            &'a str,
        );
        let cases: Vec<RunCase> = vec![
            ("nothing measured yet", vec![a(), b()], vec![], Pending, ""),
            (
                "one Successful, one still measuring",
                vec![a(), b()],
                vec![("a", ok()), ("a", ok()), ("b", ok())],
                Running,
                "",
            ),
            (
                "every metric Successful",
                vec![a(), b()],
                vec![("a", ok()), ("a", ok()), ("b", ok()), ("b", ok())],
                Successful,
                r#"a: [0.01] passed "result[0] < 0.05" (2 of 2 successful); b: [0.01] passed"#,
            ),
            (
                "a Failed metric fails the run while another is measuring",
                vec![a(), b()],
                vec![("b", ok()), ("a", bad())],
                Failed,
                r#"a: [0.07] failed "result[0] < 0.05" (failed 1 > failureLimit 0)"#,
            ),
            (
                "an Inconclusive metric completes the run while another is measuring",
                vec![a(), b()],
                vec![("b", ok()), ("a", none())],
                Inconclusive,
                "a: query returned no data (inconclusive 1 > inconclusiveLimit 0)",
            ),
            (
                "an Error metric errors the run",
                vec![no_errors(a()), b()],
                vec![("a", down())],
                Error,
                "a: Post",
            ),
            (
                "the first completed run verdict is final",
                vec![a(), b()],
                vec![("a", none()), ("b", bad())],
                Inconclusive,
                "a: query returned no data",
            ),
            (
                "invalid condition is an Error naming the expression",
                vec![success(metric("a"), "result[0] <"), b()],
                vec![],
                Error,
                r#"metric a: successCondition: condition "result[0] <" does not parse"#,
            ),
            (
                "a run without metrics is an Error",
                vec![],
                vec![],
                Error,
                "analysis has no metrics",
            ),
        ];
        for (case, metrics, observations, phase, message) in cases {
            let spec = run_spec(metrics);
            let mut status = AnalysisRunStatus::default();
            assess(&spec, &mut status, t(0));
            for (at, (name, obs)) in (0..).step_by(2).zip(&observations) {
                measure(&spec, &mut status, name, obs, at);
            }
            assert_eq!(status.phase, phase, "{case}: {:?}", status.message);
            let got = status.message.clone().unwrap_or_default();
            assert!(got.contains(message), "{case}: {got:?} lacks {message:?}");
        }
    }

    #[test]
    fn error_and_failed_together_report_failed() {
        let spec = run_spec(vec![
            {
                let mut m = success(every(metric("a"), "1s", Some(3)), "result[0] < 0.05");
                m.consecutive_error_limit = Some(0);
                m
            },
            success(every(metric("b"), "1s", Some(3)), "result[0] < 0.05"),
        ]);
        // Metric verdicts reached in one assessment (e.g. after a controller restart) rank
        // Failed above Error.
        let mut status = AnalysisRunStatus {
            metric_results: vec![
                MetricResult {
                    name: "a".to_owned(),
                    error: 1,
                    consecutive_error: 1,
                    ..MetricResult::default()
                },
                MetricResult {
                    name: "b".to_owned(),
                    count: 1,
                    failed: 1,
                    ..MetricResult::default()
                },
            ],
            ..AnalysisRunStatus::default()
        };
        assess(&spec, &mut status, t(0));
        assert_eq!(result(&status, "a").phase, Error);
        assert_eq!(result(&status, "b").phase, Failed);
        assert_eq!(status.phase, Failed);
        assert_eq!(
            status.run_summary,
            Some(RunSummary {
                count: 2,
                failed: 1,
                error: 1,
                ..RunSummary::default()
            })
        );
    }

    #[test]
    fn terminate_ends_a_background_run_successful_unless_it_already_failed() {
        let background = || success(every(metric("a"), "1s", None), "result[0] < 0.05");
        let mut spec = run_spec(vec![background()]);
        let mut status = AnalysisRunStatus::default();
        measure(&spec, &mut status, "a", &vector(&[0.01]), 0);
        measure(&spec, &mut status, "a", &vector(&[0.02]), 2);
        assert_eq!(status.phase, Running);
        spec.terminate = true;
        assess(&spec, &mut status, t(10));
        assert_eq!(status.phase, Successful);
        assert_eq!(
            status.message.as_deref(),
            Some("a: terminated after 2 measurements")
        );

        let mut spec = run_spec(vec![background()]);
        let mut status = AnalysisRunStatus::default();
        measure(&spec, &mut status, "a", &vector(&[0.07]), 0);
        spec.terminate = true;
        assess(&spec, &mut status, t(10));
        assert_eq!(status.phase, Failed);
    }

    #[test]
    fn a_completed_verdict_never_changes() {
        let spec = run_spec(vec![success(
            every(metric("a"), "1s", Some(3)),
            "result[0] < 0.05",
        )]);
        let mut status = AnalysisRunStatus::default();
        measure(&spec, &mut status, "a", &vector(&[0.07]), 0);
        assert_eq!(status.phase, Failed);
        let verdict = status.clone();
        measure(&spec, &mut status, "a", &vector(&[0.01]), 2);
        record(
            &spec,
            &mut status,
            "unknown",
            Successful,
            None,
            None,
            t(4),
            t(5),
        );
        assess(&spec, &mut status, t(6));
        assert_eq!(status, verdict);

        // A measurement of a metric the run does not have is dropped.
        let mut status = AnalysisRunStatus::default();
        record(
            &spec,
            &mut status,
            "unknown",
            Failed,
            None,
            None,
            t(0),
            t(1),
        );
        assert_eq!(status, AnalysisRunStatus::default());
    }

    #[test]
    fn missing_data_never_lets_a_step_analysis_succeed() {
        // Whatever the limits, a run whose measurements all lacked data is not Successful.
        for (count, inconclusive_limit) in [(None, None), (Some(1), Some(3)), (Some(3), Some(3))] {
            let mut m = success(metric("a"), "result[0] < 0.05");
            m.count = count;
            m.inconclusive_limit = inconclusive_limit;
            let spec = run_spec(vec![m]);
            let mut status = AnalysisRunStatus::default();
            let mut at = 0;
            while !status.phase.is_completed() {
                for name in due(&spec, &status, t(at)).metrics {
                    measure(&spec, &mut status, &name, &vector(&[]), at);
                }
                at += 2;
                assert!(at < 100, "{count:?}/{inconclusive_limit:?} never completed");
            }
            assert_eq!(
                status.phase, Inconclusive,
                "{count:?}/{inconclusive_limit:?}"
            );
        }
    }

    #[test]
    fn validate_rejects_unusable_specs() {
        let mut bad_interval = metric("a");
        bad_interval.interval = Some(DurationString::new("5 minutes"));
        let cases = [
            (metric("a"), None),
            (success(metric("a"), "result[0] < 0.05"), None),
            (bad_interval, Some("metric a: interval: invalid duration")),
            (
                failure(metric("a"), "result >"),
                Some(r#"metric a: failureCondition: condition "result >" does not parse"#),
            ),
        ];
        for (metric, expected) in cases {
            let got = validate(&metric).err().map(|e| e.to_string());
            match expected {
                None => assert_eq!(got, None),
                Some(prefix) => {
                    let got = got.unwrap_or_default();
                    assert!(got.starts_with(prefix), "{got:?} lacks {prefix:?}");
                }
            }
        }
    }
}
