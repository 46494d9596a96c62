//! The thin async layer of the Rollout controller: observe, plan, act, record, write status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{self, Action as Requeue, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::analysis::runs;
use crate::api::analysis::{
    AnalysisRun, AnalysisRunSpec, AnalysisTemplate, ClusterAnalysisTemplate,
};
use crate::api::conditions;
use crate::api::rollout::{CanaryStep, RolloutAnalysis};
use crate::api::rollout::{Rollout, RolloutPhase, RolloutStrategy};
use crate::cache_ready::{CacheReady, cache_ready, signal_when_listed};
use crate::owner_index::OwnerIndex;
use crate::traffic::{self, Backends, TrafficRouter, Weights};
use crate::without_managed_fields::{self, WithoutManagedFields};

use super::analysis_gate::{ObservedAnalysisRun, Slot};
use super::hash::POD_TEMPLATE_HASH_LABEL;
use super::plan::{self, Action, Observed, ServiceState, TrafficState, Transition};
use super::replica_sets::{self, ROLLOUT_LABEL, SCALE_DOWN_AT_ANNOTATION};
use super::rollout_object::RolloutObject;
use super::shared_watch::{self, RolloutEvents};
use super::watch_caches::{CachedCopy, ObjectKey, WatchCaches};

/// Label naming which analysis of a Rollout a run is (`step2`, `background`, ...).
pub const ANALYSIS_LABEL: &str = "weir.io/analysis";

/// The field manager of every write the Rollout controller makes.
pub const FIELD_MANAGER: &str = "weir-rollout";

/// Errors of one reconcile; all of them are retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// A Kubernetes API call failed.
    #[error("{action}")]
    Api {
        /// What was being done.
        action: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// A traffic router failed.
    #[error("setting traffic weights")]
    Traffic(#[source] traffic::TrafficError),
    /// The stored object is not a Rollout this version understands.
    #[error("decoding Rollout")]
    Decode(#[source] serde_json::Error),
}

fn api_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> ControllerError {
    let action = action.into();
    move |source| ControllerError::Api { action, source }
}

/// Rollouts reconciled at once. Unbounded, a resync of thousands ran every reconcile together:
/// over HTTP/1.1 that is one connection each, and the idle pool kept them all, with their buffers
/// (5,400 sockets and 380 MiB at 5,000 Rollouts). Over HTTP/2 (a real API server) the pool is one
/// connection, but the bound still keeps memory flat.
pub const RECONCILE_CONCURRENCY: u16 = 32;

/// Shared state of the controller.
pub struct Context {
    client: Client,
    replica_sets: Store<ReplicaSet>,
    analysis_runs: Store<AnalysisRun>,
    replica_sets_index: OwnerIndex,
    analysis_runs_index: OwnerIndex,
    replica_sets_ready: CacheReady,
    analysis_runs_ready: CacheReady,
    caches: WatchCaches,
    clock: Box<dyn Fn() -> jiff::Timestamp + Send + Sync>,
}

/// Runs the Rollout controller, with a Rollout watch of its own, until the API goes away for good.
pub async fn run(client: Client) {
    let (rollouts, watch) = shared_watch::watch_alone(client.clone());
    futures::future::select(Box::pin(run_with(client, rollouts)), Box::pin(watch)).await;
}

/// Runs the Rollout controller on `rollouts`, the events of a Rollout watch it may share.
pub async fn run_with(client: Client, rollouts: RolloutEvents) {
    let (reader, writer) = reflector::store();
    let (rs_signal, rs_ready) = cache_ready();
    let rs_index = OwnerIndex::default();
    let rs_stream = signal_when_listed(
        rs_index.track(reflector::reflector(
            writer,
            without_managed_fields::watch_all::<ReplicaSet>(
                client.clone(),
                &(),
                watcher::Config::default().labels(ROLLOUT_LABEL),
            )
            .modify(slim_replica_set),
        )),
        rs_signal,
    )
    .default_backoff()
    .touched_objects();
    let (run_reader, run_writer) = reflector::store();
    let (run_signal, runs_ready) = cache_ready();
    let run_index = OwnerIndex::default();
    let run_stream = signal_when_listed(
        run_index.track(reflector::reflector(
            run_writer,
            without_managed_fields::watch_all::<AnalysisRun>(
                client.clone(),
                &(),
                watcher::Config::default().labels(ROLLOUT_LABEL),
            ),
        )),
        run_signal,
    )
    .default_backoff()
    .touched_objects();
    let (caches, drivers) = WatchCaches::start(&client, &traffic::route_resources());
    let ctx = Arc::new(Context {
        client: client.clone(),
        replica_sets: reader,
        analysis_runs: run_reader,
        replica_sets_index: rs_index,
        analysis_runs_index: run_index,
        replica_sets_ready: rs_ready,
        analysis_runs_ready: runs_ready,
        caches,
        clock: Box::new(jiff::Timestamp::now),
    });
    let (ro_reader, ro_writer) = reflector::store();
    // Deletions are picked off the same watch (the Controller never reconciles an object that is
    // gone) to drop the deleted Rollout's metric series.
    let rollout_stream = reflector::reflector(ro_writer, rollouts.modify(RolloutObject::slim))
        .inspect(|event| {
            if let Ok(watcher::Event::Delete(ro)) = event {
                crate::telemetry::global().rollout(
                    &ro.namespace().unwrap_or_default(),
                    &ro.name_any(),
                    None,
                );
            }
        })
        .applied_objects();
    let controller = Controller::for_stream(rollout_stream, ro_reader)
        .with_config(controller::Config::default().concurrency(RECONCILE_CONCURRENCY))
        .owns_stream_with(rs_stream, ())
        .owns_stream_with(run_stream, ())
        .run(
            |obj, ctx| crate::telemetry::timed("rollout", reconcile(obj, ctx)),
            error_policy,
            ctx,
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "rollout reconcile failed");
            }
        });
    let caches = futures::future::join_all(drivers);
    futures::future::select(Box::pin(controller), caches).await;
}

fn rollout_key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey {
        resource: "rollouts.weir.io".into(),
        namespace: ns.into(),
        name: name.into(),
    }
}

/// What the controller reads of a ReplicaSet: not its pod template, which is most of it.
fn slim_replica_set(rs: &mut ReplicaSet) {
    if let Some(spec) = rs.spec.as_mut() {
        spec.template = None;
    }
}

fn error_policy(_obj: Arc<RolloutObject>, err: &ControllerError, _ctx: Arc<Context>) -> Requeue {
    tracing::warn!(error = %err, source = ?std::error::Error::source(err), "rollout reconcile failed; retrying");
    Requeue::requeue(Duration::from_millis(500))
}

async fn reconcile(obj: Arc<RolloutObject>, ctx: Arc<Context>) -> Result<Requeue, ControllerError> {
    // Until the first list is in, the stores are empty: a Healthy Rollout would look as if it had no
    // pods, drop to Progressing and record its completion again when they show up.
    if !ctx.replica_sets_ready.wait().await || !ctx.analysis_runs_ready.wait().await {
        return Ok(Requeue::requeue(Duration::from_secs(1)));
    }
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let key = rollout_key(&ns, &name);
    let newest = ctx.caches.newest();
    // The watch cache may lag our own last status write; planning from a stale status would record
    // transitions twice. So the cached copy is used only when it is whole and shows the newest
    // version weir knows of; when it is the version just before our own write, the write's answer
    // stands in for it (the next reconcile after a write usually starts before the watch shows it);
    // otherwise the Rollout is read fresh.
    // A slim copy is whole again when it is the version weir's own write left: that write's
    // answer (the reconcile after a release's last step).
    let whole = !obj.slimmed;
    let decoded = match newest.check_keeping(&key, obj.resource_version().as_deref(), whole) {
        CachedCopy::Current if whole => obj.decode(),
        CachedCopy::Written(written) => Ok((*written).clone()),
        _ => {
            let Some(fresh) = Api::<RolloutObject>::namespaced(ctx.client.clone(), &ns)
                .get_opt(&name)
                .await
                .map_err(api_err(format!("reading Rollout {ns}/{name}")))?
            else {
                newest.forget(&key);
                crate::telemetry::global().rollout(&ns, &name, None);
                return Ok(Requeue::await_change());
            };
            newest.saw(key.clone(), fresh.resource_version().as_deref());
            fresh.decode()
        }
    };
    let ro = match decoded {
        Ok(ro) => ro,
        Err(e) => return invalid_object(&ctx, &ns, &name, &e.to_string()).await,
    };
    let observed = observe(&ctx, &ro).await?;
    let now = (ctx.clock)();
    let plan = plan::plan(&ro, &observed, now);
    for action in &plan.actions {
        execute(&ctx, &ro, action).await?;
    }
    let old = ro.status.clone().unwrap_or_default();
    let mut status = plan.status;
    status.recorded_events = old.recorded_events;
    for t in &plan.transitions {
        record(&ctx, &ro, status.recorded_events, t, now).await?;
        status.recorded_events += 1;
    }
    crate::telemetry::global().rollout(
        &ns,
        &name,
        Some((
            status.phase.map_or("Progressing", |p| p.as_str()),
            status.weights.map_or(0, |w| i64::from(w.canary)),
        )),
    );
    if status != old {
        let mut next = ro.clone();
        next.status = Some(status);
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let api: Api<WithoutManagedFields<Rollout>> = Api::namespaced(ctx.client.clone(), &ns);
        match api
            .replace_status(&name, &pp, &WithoutManagedFields(next))
            .await
        {
            Ok(written) => newest.wrote(key, ro.metadata.resource_version.as_deref(), written.0),
            // Someone (a person promoting, the plugin) changed the Rollout since we read it: plan again,
            // from a fresh read.
            Err(kube::Error::Api(s)) if s.code == 409 => {
                newest.unknown(key);
                return Ok(Requeue::requeue(Duration::from_millis(50)));
            }
            Err(e) => {
                newest.unknown(key);
                return Err(api_err(format!("writing status of Rollout {ns}/{name}"))(e));
            }
        }
    }
    Ok(match plan.requeue {
        Some(d) => Requeue::requeue(d.max(Duration::from_millis(100))),
        None => Requeue::requeue(Duration::from_secs(300)),
    })
}

/// A stored object that does not decode as a Rollout gets InvalidSpec, and nothing else happens.
async fn invalid_object(
    ctx: &Context,
    ns: &str,
    name: &str,
    error: &str,
) -> Result<Requeue, ControllerError> {
    let api: Api<RolloutObject> = Api::namespaced(ctx.client.clone(), ns);
    let now = (ctx.clock)();
    let cond = conditions::invalid_spec(format!("spec: {error}"), now, None);
    let patch = json!({"status": {"phase": RolloutPhase::Degraded.as_str(), "message": format!("InvalidSpec: {error}"), "conditions": [cond]}});
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    api.patch_status(name, &pp, &Patch::Merge(&patch))
        .await
        .map_err(api_err("writing InvalidSpec"))?;
    Ok(Requeue::await_change())
}

fn services_of(ro: &Rollout) -> Vec<String> {
    match &ro.spec.strategy {
        RolloutStrategy::Canary(c) => [c.stable_service.clone(), c.canary_service.clone()]
            .into_iter()
            .flatten()
            .collect(),
        RolloutStrategy::BlueGreen(b) => {
            [Some(b.active_service.clone()), b.preview_service.clone()]
                .into_iter()
                .flatten()
                .collect()
        }
    }
}

fn routers(ro: &Rollout) -> Vec<Box<dyn TrafficRouter>> {
    let ns = ro.metadata.namespace.clone().unwrap_or_default();
    match &ro.spec.strategy {
        RolloutStrategy::Canary(c) => c
            .traffic_routing
            .as_ref()
            .map(|t| traffic::routers_for(t, &ns))
            .unwrap_or_default(),
        RolloutStrategy::BlueGreen(_) => Vec::new(),
    }
}

fn backends(ro: &Rollout) -> Option<Backends> {
    match &ro.spec.strategy {
        RolloutStrategy::Canary(c) => Some(Backends {
            stable_service: c.stable_service.clone()?,
            canary_service: c.canary_service.clone()?,
            rollout_namespace: ro.metadata.namespace.clone().unwrap_or_default(),
        }),
        RolloutStrategy::BlueGreen(_) => None,
    }
}

async fn observe(ctx: &Context, ro: &Rollout) -> Result<Observed, ControllerError> {
    let ns = ro.metadata.namespace.clone().unwrap_or_default();
    let uid = ro.metadata.uid.clone().unwrap_or_default();
    let replica_sets = ctx
        .replica_sets_index
        .owned(&ctx.replica_sets, &uid)
        .iter()
        .filter(|rs| rs.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter_map(|rs| replica_sets::observe(rs))
        .collect();
    let mut services = BTreeMap::new();
    for name in services_of(ro) {
        let selected = ctx
            .caches
            .service(&ctx.client, &ns, &name)
            .await
            .map_err(api_err(format!("reading Service {ns}/{name}")))?;
        let state = match selected {
            None => ServiceState::Missing,
            Some(hash) => ServiceState::Present(hash),
        };
        services.insert(name, state);
    }
    let routers = routers(ro);
    let traffic = match backends(ro) {
        Some(b) if !routers.is_empty() => {
            let mut weights = Vec::new();
            let mut invalid = None;
            for r in &routers {
                let read = match b.check() {
                    Ok(()) => ctx.caches.route(&ctx.client, r.route()).await,
                    Err(e) => Err(e),
                };
                match read.and_then(|route| r.weights_in(&route, &b)) {
                    Ok(w) => weights.push(w.canary),
                    Err(e) if e.is_invalid_spec() => {
                        invalid = Some(e.to_string());
                        break;
                    }
                    Err(e) => return Err(ControllerError::Traffic(e)),
                }
            }
            match invalid {
                Some(m) => TrafficState::Invalid(m),
                None => {
                    let first = weights.first().copied();
                    TrafficState::Weights(first.filter(|f| weights.iter().all(|w| w == f)))
                }
            }
        }
        _ => TrafficState::Unrouted,
    };
    let analysis_runs = ctx
        .analysis_runs_index
        .owned(&ctx.analysis_runs, &uid)
        .iter()
        .filter(|r| r.metadata.namespace.as_deref() == Some(ns.as_str()))
        .map(|r| {
            let status = r.status.clone().unwrap_or_default();
            (
                r.name_any(),
                ObservedAnalysisRun {
                    phase: status.phase,
                    message: status.message,
                    terminated: r.spec.terminate,
                    created: r.metadata.creation_timestamp.as_ref().map(|t| t.0),
                },
            )
        })
        .collect();
    let run_specs = prepare_runs(ctx, ro).await?;
    Ok(Observed {
        replica_sets,
        services,
        traffic,
        analysis_runs,
        run_specs,
    })
}

/// The analyses this Rollout may start: each needed slot's run spec, or why it cannot be made.
async fn prepare_runs(
    ctx: &Context,
    ro: &Rollout,
) -> Result<BTreeMap<Slot, Result<AnalysisRunSpec, String>>, ControllerError> {
    let mut wanted: Vec<(Slot, RolloutAnalysis)> = Vec::new();
    let status = ro.status.clone().unwrap_or_default();
    match &ro.spec.strategy {
        RolloutStrategy::Canary(c) => {
            let from = status.current_step_index.unwrap_or(0).max(0);
            for (i, step) in c.steps.iter().enumerate() {
                if let CanaryStep::Analysis(a) = step
                    && i32::try_from(i).unwrap_or(i32::MAX) >= from
                {
                    wanted.push((Slot::Step(i32::try_from(i).unwrap_or(i32::MAX)), a.clone()));
                }
            }
            if let Some(bg) = &c.analysis {
                wanted.push((Slot::Background, bg.analysis.clone()));
            }
        }
        RolloutStrategy::BlueGreen(b) => {
            if let Some(a) = &b.pre_promotion_analysis {
                wanted.push((Slot::PrePromotion, a.clone()));
            }
            if let Some(a) = &b.post_promotion_analysis {
                wanted.push((Slot::PostPromotion, a.clone()));
            }
        }
    }
    let ns = ro.metadata.namespace.clone().unwrap_or_default();
    let mut out = BTreeMap::new();
    for (slot, analysis) in wanted {
        let mut templates = Vec::new();
        let mut missing = None;
        for t in &analysis.templates {
            let spec = if t.cluster_scope {
                let api: Api<ClusterAnalysisTemplate> = Api::all(ctx.client.clone());
                api.get_opt(&t.template_name)
                    .await
                    .map_err(api_err(format!(
                        "reading ClusterAnalysisTemplate {}",
                        t.template_name
                    )))?
                    .map(|c| c.spec.template)
            } else {
                let api: Api<AnalysisTemplate> = Api::namespaced(ctx.client.clone(), &ns);
                api.get_opt(&t.template_name)
                    .await
                    .map_err(api_err(format!(
                        "reading AnalysisTemplate {ns}/{}",
                        t.template_name
                    )))?
                    .map(|t| t.spec)
            };
            match spec {
                Some(s) => templates.push(s),
                None => {
                    let kind = if t.cluster_scope {
                        "ClusterAnalysisTemplate"
                    } else {
                        "AnalysisTemplate"
                    };
                    missing = Some(format!("{kind} \"{}\" not found", t.template_name));
                    break;
                }
            }
        }
        let spec = match missing {
            Some(m) => Err(m),
            None => runs::run_spec(ro, &analysis, &templates).map_err(|e| e.to_string()),
        };
        out.insert(slot, spec);
    }
    Ok(out)
}

async fn execute(ctx: &Context, ro: &Rollout, action: &Action) -> Result<(), ControllerError> {
    let ns = ro.metadata.namespace.clone().unwrap_or_default();
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    match action {
        Action::PinService { service, hash } => {
            let api: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
            let patch = json!({"spec": {"selector": {POD_TEMPLATE_HASH_LABEL: hash}}});
            let written = api
                .patch(service, &pp, &Patch::Merge(&patch))
                .await
                .map_err(api_err(format!("pinning Service {ns}/{service}")))?;
            ctx.caches.wrote_service(&ns, service, &written);
        }
        Action::CreateReplicaSet { hash, replicas } => {
            let rs = replica_sets::build(ro, hash, *replicas);
            let post = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            match rs_api.create(&post, &rs).await {
                Ok(_) => {}
                // Created by a run that crashed before writing status; the next plan sizes it. Only
                // AlreadyExists says so: another 409 created nothing.
                Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists" => {}
                Err(e) => return Err(api_err(format!("creating ReplicaSet for {hash}"))(e)),
            }
        }
        Action::ScaleReplicaSet {
            name,
            replicas,
            scale_down_at,
        } => {
            let at = scale_down_at.map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
            let patch = json!({"metadata": {"annotations": {SCALE_DOWN_AT_ANNOTATION: at}}, "spec": {"replicas": replicas}});
            rs_api
                .patch(name, &pp, &Patch::Merge(&patch))
                .await
                .map_err(api_err(format!("scaling ReplicaSet {ns}/{name}")))?;
        }
        Action::DeleteReplicaSet { name } => {
            match rs_api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(api_err(format!("deleting ReplicaSet {ns}/{name}"))(e)),
            }
        }
        Action::CreateAnalysisRun { name, slot, spec } => {
            let api: Api<AnalysisRun> = Api::namespaced(ctx.client.clone(), &ns);
            let mut run = AnalysisRun::new(name, (**spec).clone());
            run.metadata.namespace = Some(ns.clone());
            run.metadata.labels = Some(BTreeMap::from([
                (
                    ROLLOUT_LABEL.to_string(),
                    ro.metadata.name.clone().unwrap_or_default(),
                ),
                (
                    POD_TEMPLATE_HASH_LABEL.to_string(),
                    super::pod_template_hash(&ro.spec.template),
                ),
                (ANALYSIS_LABEL.to_string(), slot.label()),
            ]));
            run.metadata.owner_references = ro.controller_owner_ref(&()).map(|r| vec![r]);
            let post = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            match api.create(&post, &run).await {
                Ok(_) => {}
                // A run of this name is there (made before a crash). Any other 409 made no run, and
                // the status must not say it is Pending: nothing would wake the Rollout again.
                Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists" => {}
                Err(e) => return Err(api_err(format!("creating AnalysisRun {ns}/{name}"))(e)),
            }
        }
        Action::DeleteAnalysisRun { name } => {
            let api: Api<AnalysisRun> = Api::namespaced(ctx.client.clone(), &ns);
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(api_err(format!("deleting AnalysisRun {ns}/{name}"))(e)),
            }
        }
        Action::TerminateAnalysisRun { name } => {
            let api: Api<AnalysisRun> = Api::namespaced(ctx.client.clone(), &ns);
            match api
                .patch(
                    name,
                    &pp,
                    &Patch::Merge(json!({"spec": {"terminate": true}})),
                )
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(api_err(format!("terminating AnalysisRun {ns}/{name}"))(e)),
            }
        }
        Action::SetWeights { canary, complete } => {
            let Some(b) = backends(ro) else {
                return Ok(());
            };
            let weights = Weights::canary(*canary).map_err(ControllerError::Traffic)?;
            // Every route gets its weight in this one reconcile; the first failure is reported after all
            // were tried, so an abort never leaves some routes on the canary because another failed.
            let mut first_err = None;
            for r in routers(ro) {
                // The route as the plan saw it, so an unchanged one costs no read; a stale one costs
                // a conflict and a fresh read.
                let read = ctx.caches.route(&ctx.client, r.route()).await.ok();
                match r
                    .set_weights_from(&ctx.client, &b, weights, *complete, read)
                    .await
                {
                    Ok(stored) => ctx.caches.wrote_route(r.route(), &stored),
                    Err(e) => {
                        ctx.caches.route_unknown(r.route());
                        if first_err.is_none() {
                            first_err = Some(e);
                        }
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(ControllerError::Traffic(e));
            }
        }
    }
    Ok(())
}

/// Records a transition as a core/v1 Event whose name follows from the status, so a restart that makes
/// the same transition again finds it already recorded.
async fn record(
    ctx: &Context,
    ro: &Rollout,
    seq: i64,
    t: &Transition,
    now: jiff::Timestamp,
) -> Result<(), ControllerError> {
    let ns = ro.metadata.namespace.clone().unwrap_or_default();
    let ro_name = ro.metadata.name.clone().unwrap_or_default();
    let uid = ro.metadata.uid.clone().unwrap_or_default();
    let h = crate::fnv::fnv1a_32(t.reason.bytes().chain(t.message.bytes()));
    let base: String = ro_name.chars().take(200).collect();
    let name = format!(
        "{base}.{}.{seq}-{h:08x}",
        uid.chars().take(8).collect::<String>()
    );
    let involved = ObjectReference {
        api_version: Some(Rollout::api_version(&()).into_owned()),
        kind: Some("Rollout".into()),
        name: Some(ro_name),
        namespace: Some(ns),
        uid: Some(uid),
        ..Default::default()
    };
    let event = crate::events::NewEvent {
        name,
        reason: t.reason,
        message: &t.message,
        warning: t.warning,
    };
    let reporter = crate::events::Reporter {
        field_manager: FIELD_MANAGER,
        controller: "weir.io/rollout-controller",
    };
    crate::events::record(&ctx.client, reporter, involved, event, now)
        .await
        .map_err(api_err("recording an Event"))
}
