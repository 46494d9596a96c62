//! The AnalysisRun controller: measure what is due, judge it, record it, assess the run, write status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{self, Action as Requeue, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::api::analysis::{AnalysisPhase, AnalysisRun, AnalysisRunStatus};

use super::assessment::{self, Observation};
use super::providers::{self, KubeSecrets, SecretSource};
use super::runs;

/// The field manager of the analysis controller's writes.
pub const FIELD_MANAGER: &str = "weir-analysis";

/// Errors of one reconcile, retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// Writing the run's status failed.
    #[error("writing status of AnalysisRun {name}")]
    Status {
        /// The run.
        name: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
}

/// AnalysisRuns measured at once (each holds a request to its metric provider).
pub const RECONCILE_CONCURRENCY: u16 = 32;

struct Context {
    client: Client,
    clock: Box<dyn Fn() -> jiff::Timestamp + Send + Sync>,
}

/// Runs the AnalysisRun controller.
pub async fn run(client: Client) {
    let api: Api<AnalysisRun> = Api::all(client.clone());
    let ctx = Arc::new(Context {
        client,
        clock: Box::new(jiff::Timestamp::now),
    });
    Controller::new(api, watcher::Config::default())
        .with_config(controller::Config::default().concurrency(RECONCILE_CONCURRENCY))
        .run(
            |obj, ctx| crate::telemetry::timed("analysis", reconcile(obj, ctx)),
            |_, err, _| {
                tracing::warn!(error = %err, "analysis reconcile failed; retrying");
                Requeue::requeue(Duration::from_secs(1))
            },
            ctx,
        )
        .for_each(|_| async {})
        .await;
}

/// Resolves every argument: literal values, and Secret keys read now (never stored). Also returns
/// the values that came from Secrets, to be redacted from anything recorded.
async fn resolve_args(
    run: &AnalysisRun,
    secrets: &dyn SecretSource,
    ns: &str,
) -> Result<(BTreeMap<String, String>, Vec<String>), String> {
    let mut out = BTreeMap::new();
    let mut secret_values = Vec::new();
    for a in &run.spec.args {
        let value = match (&a.value, &a.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => {
                let v = secrets
                    .secret(ns, &from.secret_key_ref.name, &from.secret_key_ref.key)
                    .await
                    .map_err(|e| format!("argument {:?}: {e}", a.name))?;
                secret_values.push(v.clone());
                v
            }
            (None, None) => return Err(format!("argument {:?} has no value", a.name)),
        };
        out.insert(a.name.clone(), value);
    }
    Ok((out, secret_values))
}

async fn reconcile(run: Arc<AnalysisRun>, ctx: Arc<Context>) -> Result<Requeue, AnalysisError> {
    let ns = run.namespace().unwrap_or_default();
    let old = run.status.clone().unwrap_or_default();
    if old.phase.is_completed() {
        return Ok(Requeue::await_change());
    }
    let now = (ctx.clock)();
    let mut status = old.clone();
    if status.started_at.is_none() {
        status.started_at = Some(Time(now));
    }
    let secrets = KubeSecrets(ctx.client.clone());
    // Conditions see literal arguments only: their text is quoted in messages, so a secret must never
    // be substituted into one.
    let spec = runs::with_literal_args_in_conditions(&run.spec);
    let due = assessment::due(&spec, &status, now);
    if !due.metrics.is_empty() && !run.spec.terminate {
        let args = resolve_args(&run, &secrets, &ns).await;
        // Dry-run metrics are recorded first: a deciding metric's verdict completes the run,
        // after which `record` drops every later measurement of this reconcile.
        let mut due_metrics = due.metrics;
        due_metrics.sort_by_key(|name| !spec.is_dry_run(name));
        for metric_name in &due_metrics {
            let Some(metric) = spec.metrics.iter().find(|m| &m.name == metric_name) else {
                continue;
            };
            let started = (ctx.clock)();
            let obs = match &args {
                Err(e) => Observation::Error(e.clone()),
                Ok((values, secret_values)) => {
                    let m = runs::substitute(metric, values);
                    match providers::provider_for(&m.provider)
                        .measure(&secrets, &ns)
                        .await
                    {
                        Ok(v) => Observation::Value(v),
                        Err(e) => {
                            Observation::Error(runs::redact_secrets(&e.to_string(), secret_values))
                        }
                    }
                }
            };
            let finished = (ctx.clock)();
            let (phase, message) = assessment::judge(metric, &obs);
            let value = match &obs {
                Observation::Value(v) => Some(v.display()),
                Observation::Error(_) => None,
            };
            crate::telemetry::global().measured(phase.as_str());
            assessment::record(
                &spec,
                &mut status,
                metric_name,
                phase,
                value,
                message,
                started,
                finished,
            );
        }
    }
    assessment::assess(&spec, &mut status, (ctx.clock)());
    if status != old {
        if !write_status(&ctx, &run, status.clone()).await? {
            // Not written: measure and judge again soon. Waiting for a change instead would
            // leave a verdict that never got stored waiting forever when no change comes.
            return Ok(Requeue::requeue(Duration::from_millis(200)));
        }
        if status.phase.is_completed() && !old.phase.is_completed() {
            crate::telemetry::global().run_completed(status.phase.as_str());
        }
    }
    if status.phase.is_completed() {
        return Ok(Requeue::await_change());
    }
    let next = assessment::due(&spec, &status, (ctx.clock)())
        .next
        .unwrap_or(Duration::from_secs(10));
    Ok(Requeue::requeue(next.max(Duration::from_millis(50))))
}

/// Writes the run's status; `false` when the run changed since it was read (409), so nothing was
/// written.
async fn write_status(
    ctx: &Context,
    run: &AnalysisRun,
    status: AnalysisRunStatus,
) -> Result<bool, AnalysisError> {
    let api: Api<AnalysisRun> =
        Api::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default());
    let mut next = run.clone();
    next.status = Some(status);
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match api.replace_status(&run.name_any(), &pp, &next).await {
        Ok(_) => Ok(true),
        // The run changed (terminated by the Rollout controller): the next pass reads it again.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(source) => Err(AnalysisError::Status {
            name: run.name_any(),
            source,
        }),
    }
}

/// Whether a run's phase lets a Rollout move on.
pub fn lets_rollout_continue(phase: AnalysisPhase) -> bool {
    phase == AnalysisPhase::Successful
}
