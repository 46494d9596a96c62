//! The GitSync controller: every `interval`, fetch, render and apply; on a failed release, run the
//! revert writer first, then sync the revert at once.
//!
//! The pure parts ([`sync_due`], [`next_status`], [`transitions`]) decide; [`reconcile`] fetches,
//! renders, applies and writes status only when it changed, so a resync of an unchanged revision
//! makes no write at all.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{self, Action as Requeue, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};

use crate::api::conditions::{self, reasons, types};
use crate::api::gitsync::{
    GitSync, GitSyncStatus, HISTORY_LIMIT, InventoryEntry, SyncHistoryEntry, SyncResult,
};
use crate::api::rollout::{Rollout, RolloutSpec, RolloutStrategy};
use crate::cache_ready::{CacheReady, cache_ready, signal_when_listed};
use crate::rollout::rollout_object::RolloutObject;
use crate::rollout::shared_watch::{self, RolloutEvents};

use super::apply::{Applier, rollout_owned, stale};
use super::git::{Git, GitAuth, GitCli, GitError, GitRefSpec, validate_url};
use super::render::{
    ANNOTATION_GITSYNC, KustomizeCommand, RenderOptions, RenderedObject, check_path_field,
    plain_tree_files, render, render_files, tree_directory,
};
use super::revert::{self, Outcome, RevertWriter};

/// Field manager of GitSync status writes.
pub const FIELD_MANAGER: &str = "weir-gitsync";
/// Annotation asking for a sync now, whatever the interval: set it to a new value (a timestamp),
/// as Flux's `reconcile.fluxcd.io/requestedAt`. `status.lastHandledReconcileAt` echoes it once done.
pub const REQUESTED_AT_ANNOTATION: &str = "weir.io/requestedAt";

/// Event reasons of the GitSync controller.
pub mod events {
    /// A new revision was applied.
    pub const SYNCED: &str = "GitSynced";
    /// Fetch, render, apply or prune failed.
    pub const SYNC_FAILED: &str = "GitSyncFailed";
}

/// How the controller runs git and kustomize.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where mirrors and scratch checkouts live.
    pub cache_dir: PathBuf,
    /// How kustomizations are built.
    pub kustomize: KustomizeCommand,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cache_dir: std::env::temp_dir().join("weir-gitsync"),
            kustomize: KustomizeCommand::default(),
        }
    }
}

/// Errors of one reconcile; retried with backoff.
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
    /// A revert step failed and will be retried.
    #[error("reverting in Git")]
    Revert(#[source] revert::RevertError),
}

/// The last render of a GitSync: its cache key (revision, path, target namespace) and the
/// objects, shared rather than copied, since a sync only reads them.
type RenderCacheEntry = (String, Arc<Vec<RenderedObject>>);

/// Shared state of the controller. What is kept here only saves work (the last sync time, the last
/// render); losing it on a restart costs one extra sync, never a wrong one.
struct Context {
    client: Client,
    git: Arc<dyn Git>,
    applier: Applier,
    rollouts: Store<Rollout>,
    rollouts_ready: CacheReady,
    settings: Settings,
    last_sync: Mutex<HashMap<String, (Timestamp, Option<i64>)>>,
    /// Consecutive failed reconciles per GitSync, for the retry backoff.
    failures: Mutex<HashMap<String, u32>>,
    rendered: Mutex<HashMap<String, RenderCacheEntry>>,
    clock: Box<dyn Fn() -> Timestamp + Send + Sync>,
}

/// GitSyncs synced at once; each applies up to 16 objects at a time.
pub const RECONCILE_CONCURRENCY: u16 = 8;

/// Runs the GitSync controller (with the revert writer), with a Rollout watch of its own, until the
/// API goes away for good.
pub async fn run(client: Client, settings: Settings) {
    let (rollouts, watch) = shared_watch::watch_alone(client.clone());
    futures::future::select(
        Box::pin(run_with(client, settings, rollouts)),
        Box::pin(watch),
    )
    .await;
}

/// Runs the GitSync controller (with the revert writer) on `rollouts`, the events of a Rollout watch
/// it may share.
pub async fn run_with(client: Client, settings: Settings, rollouts: RolloutEvents) {
    let git: Arc<dyn Git> = Arc::new(GitCli::new(settings.cache_dir.clone()));
    let (reader, writer) = reflector::store();
    let (signal, rollouts_ready) = cache_ready();
    let rollouts = signal_when_listed(
        reflector::reflector(writer, rollouts.map_ok(for_revert_writer)),
        signal,
    )
    .touched_objects();
    let ctx = Arc::new(Context {
        client: client.clone(),
        git,
        applier: Applier::new(client.clone()),
        rollouts: reader,
        rollouts_ready,
        settings,
        last_sync: Mutex::new(HashMap::new()),
        failures: Mutex::new(HashMap::new()),
        rendered: Mutex::new(HashMap::new()),
        clock: Box::new(Timestamp::now),
    });
    let api: Api<GitSync> = Api::all(client);
    Controller::new(api, watcher::Config::default())
        .with_config(controller::Config::default().concurrency(RECONCILE_CONCURRENCY))
        .watches_stream(rollouts, |ro: Rollout| {
            // A Rollout wakes the GitSync that applied it, so a failed release is reverted at once.
            ro.annotations()
                .get(ANNOTATION_GITSYNC)
                .and_then(|v| v.split_once('/'))
                .map(|(ns, name)| ObjectRef::<GitSync>::new(name).within(ns))
        })
        .run(
            |obj, ctx| crate::telemetry::timed("gitsync", reconcile_and_reset(obj, ctx)),
            error_policy,
            ctx,
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "gitsync reconcile failed");
            }
        })
        .await;
}

/// What the revert writer and the applier keep of a watched Rollout: all of it but the pod
/// template, which is most of it and which neither reads. A Rollout this version cannot decode (the
/// Rollout controller marks it InvalidSpec) is kept by name only: a canary of no Services and no
/// status, which owns nothing and has nothing to revert.
fn for_revert_writer(event: watcher::Event<RolloutObject>) -> watcher::Event<Rollout> {
    let decode = |ro: RolloutObject| match ro.decode() {
        Ok(mut decoded) => {
            decoded.spec.template = Default::default();
            decoded
        }
        Err(e) => {
            tracing::debug!(rollout = %ro.name_any(), error = %e, "Rollout kept by name only");
            Rollout {
                metadata: ro.metadata,
                spec: RolloutSpec {
                    replicas: None,
                    selector: Default::default(),
                    template: Default::default(),
                    revision_history_limit: None,
                    progress_deadline_seconds: None,
                    paused: false,
                    strategy: RolloutStrategy::Canary(Default::default()),
                    alerts: Vec::new(),
                },
                status: None,
            }
        }
    };
    match event {
        watcher::Event::Apply(ro) => watcher::Event::Apply(decode(ro)),
        watcher::Event::Delete(ro) => watcher::Event::Delete(decode(ro)),
        watcher::Event::InitApply(ro) => watcher::Event::InitApply(decode(ro)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// First retry after a failed reconcile; each further failure doubles it, up to [`MAX_RETRY`].
pub const FIRST_RETRY: Duration = Duration::from_secs(2);
/// Longest wait between retries of a failing GitSync (a remote that is down, a conflict loop).
pub const MAX_RETRY: Duration = Duration::from_secs(60);

/// The wait before retry number `failures` (1 for the first failure).
pub fn retry_after(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (FIRST_RETRY * 2u32.pow(doublings)).min(MAX_RETRY)
}

fn error_policy(gs: Arc<GitSync>, err: &ControllerError, ctx: Arc<Context>) -> Requeue {
    let key = format!("{}/{}", gs.namespace().unwrap_or_default(), gs.name_any());
    let failures = {
        let mut all = ctx.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let n = all.entry(key).or_default();
        *n = n.saturating_add(1);
        *n
    };
    let wait = retry_after(failures);
    tracing::warn!(error = %err, source = ?std::error::Error::source(err), ?wait, "gitsync reconcile failed; retrying");
    Requeue::requeue(wait)
}

fn api_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> ControllerError {
    let action = action.into();
    move |source| ControllerError::Api { action, source }
}

/// Whether a sync is due now; otherwise how long until it is. A sync is due when the spec changed,
/// "sync now" was asked for, or `interval` passed since the last one (`last`: when and at which
/// generation, as this process remembers it).
pub fn sync_due(
    gs: &GitSync,
    last: Option<(Timestamp, Option<i64>)>,
    interval: Duration,
    now: Timestamp,
) -> Result<(), Duration> {
    let status = gs.status.clone().unwrap_or_default();
    let requested = gs.annotations().get(REQUESTED_AT_ANNOTATION);
    if requested.is_some() && requested != status.last_handled_reconcile_at.as_ref() {
        return Ok(());
    }
    let Some((at, generation)) = last else {
        return Ok(());
    };
    if generation != gs.metadata.generation {
        return Ok(());
    }
    let elapsed = Duration::try_from(now.duration_since(at)).unwrap_or_default();
    if elapsed >= interval {
        Ok(())
    } else {
        Err(interval - elapsed)
    }
}

/// How a sync ended.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncOutcome {
    /// Applied (and pruned): the new inventory.
    Applied(Vec<InventoryEntry>),
    /// Failed with a Ready reason and a message for people.
    Failed {
        /// One of the Ready=False reasons.
        reason: &'static str,
        /// What failed, naming the file and line when known.
        message: String,
    },
}

/// A sync attempt: the revision fetched (if the fetch worked) and how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// The commit fetched.
    pub revision: Option<String>,
    /// The ref it was fetched at, for messages (`main`, `v1.2`, …).
    pub ref_name: String,
    /// How it ended.
    pub outcome: SyncOutcome,
    /// When it started.
    pub started_at: Timestamp,
    /// The `requestedAt` annotation it handled.
    pub requested_at: Option<String>,
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// The status after `attempt`. On failure the inventory and `lastAppliedRevision` stay as they
/// were: the last good revision stays applied. History gains an entry only when the revision or
/// the outcome differs from the newest one.
pub fn next_status(
    old: &GitSyncStatus,
    attempt: &Attempt,
    generation: Option<i64>,
    now: Timestamp,
) -> GitSyncStatus {
    let mut s = old.clone();
    s.observed_generation = generation;
    if attempt.requested_at.is_some() {
        s.last_handled_reconcile_at = attempt.requested_at.clone();
    }
    if let Some(rev) = &attempt.revision {
        s.last_fetched_revision = Some(rev.clone());
    }
    let (result, message) = match &attempt.outcome {
        SyncOutcome::Applied(inventory) => {
            let rev = attempt.revision.clone().unwrap_or_default();
            s.last_applied_revision = Some(rev.clone());
            s.inventory = inventory.clone();
            let text = format!("Applied revision {}@{}", attempt.ref_name, short(&rev));
            conditions::set(
                &mut s.conditions,
                conditions::reconciliation_succeeded(text, now, generation),
            );
            conditions::remove(&mut s.conditions, types::STALLED);
            (SyncResult::Succeeded, None)
        }
        SyncOutcome::Failed { reason, message } => {
            conditions::set(
                &mut s.conditions,
                conditions::not_ready(reason, message.clone(), now, generation),
            );
            if *reason == reasons::INVALID_SPEC {
                conditions::set(
                    &mut s.conditions,
                    conditions::stalled(reason, message.clone(), now, generation),
                );
            } else {
                conditions::remove(&mut s.conditions, types::STALLED);
            }
            (SyncResult::Failed, Some(message.clone()))
        }
    };
    conditions::remove(&mut s.conditions, types::RECONCILING);
    let revision = attempt
        .revision
        .clone()
        .or_else(|| old.last_fetched_revision.clone())
        .unwrap_or_default();
    let repeat = s
        .history
        .first()
        .is_some_and(|h| h.revision == revision && h.result == result && h.message == message);
    if !repeat {
        s.history.insert(
            0,
            SyncHistoryEntry {
                revision,
                started_at: Time(attempt.started_at),
                finished_at: Some(Time(now)),
                result,
                message,
            },
        );
        s.history.truncate(HISTORY_LIMIT);
    }
    s
}

/// The Events a status change records: `(reason, message, warning)`.
pub fn transitions(old: &GitSyncStatus, new: &GitSyncStatus) -> Vec<(&'static str, String, bool)> {
    let mut out = Vec::new();
    let ready = |s: &GitSyncStatus| conditions::find(&s.conditions, types::READY).cloned();
    let (was, now) = (ready(old), ready(new));
    if new.last_applied_revision != old.last_applied_revision
        && let Some(c) = &now
    {
        out.push((events::SYNCED, c.message.clone(), false));
    }
    if let Some(c) = &now
        && c.status == "False"
        && was
            .as_ref()
            .is_none_or(|w| w.status != "False" || w.message != c.message)
    {
        out.push((events::SYNC_FAILED, c.message.clone(), true));
    }
    out
}

async fn read_auth(client: &Client, gs: &GitSync) -> Result<GitAuth, SyncOutcome> {
    let Some(secret_ref) = &gs.spec.secret_ref else {
        return Ok(GitAuth::None);
    };
    let ns = gs.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret = api
        .get_opt(&secret_ref.name)
        .await
        .map_err(|e| SyncOutcome::Failed {
            reason: reasons::SECRET_NOT_FOUND,
            message: format!("reading Secret {ns}/{}: {e}", secret_ref.name),
        })?;
    let Some(secret) = secret else {
        return Err(SyncOutcome::Failed {
            reason: reasons::SECRET_NOT_FOUND,
            message: format!("Secret {ns}/{} not found", secret_ref.name),
        });
    };
    GitAuth::from_secret(&secret.data.unwrap_or_default()).map_err(|e| SyncOutcome::Failed {
        reason: reasons::SECRET_NOT_FOUND,
        message: format!("Secret {ns}/{}: {e}", secret_ref.name),
    })
}

/// Checks what can be checked without git or the API: durations, URL, refs, the path.
fn validate(gs: &GitSync) -> Result<(Duration, Duration), String> {
    let interval = gs
        .spec
        .interval()
        .map_err(|e| format!("spec.interval: {e}"))?;
    let timeout = gs
        .spec
        .timeout()
        .map_err(|e| format!("spec.timeout: {e}"))?;
    validate_url(&gs.spec.url).map_err(|e| format!("spec.url: {e}"))?;
    GitRefSpec::from_spec(gs.spec.git_ref.as_ref())
        .validate()
        .map_err(|e| format!("spec.ref: {e}"))?;
    if let Some(branch) = gs.spec.revert.as_ref().and_then(|r| r.push_branch.as_ref()) {
        GitRefSpec::Branch(branch.clone())
            .validate()
            .map_err(|e| format!("spec.revert.pushBranch: {e}"))?;
    }
    if let Some(path) = &gs.spec.path {
        check_path_field(path).map_err(|e| format!("spec.path: {e}"))?;
    }
    Ok((interval, timeout))
}

fn ref_name(gs: &GitSync) -> String {
    match gs.spec.git_ref.as_ref() {
        Some(crate::api::gitsync::GitRef::Branch(b)) => b.clone(),
        Some(crate::api::gitsync::GitRef::Tag(t)) => t.clone(),
        Some(crate::api::gitsync::GitRef::Commit(c)) => short(c).to_string(),
        None => "HEAD".into(),
    }
}

/// A reconcile that succeeds ends the backoff of earlier failures.
async fn reconcile_and_reset(
    obj: Arc<GitSync>,
    ctx: Arc<Context>,
) -> Result<Requeue, ControllerError> {
    let key = format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
    let result = reconcile(obj, ctx.clone()).await;
    if result.is_ok() {
        ctx.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
    }
    result
}

async fn reconcile(obj: Arc<GitSync>, ctx: Arc<Context>) -> Result<Requeue, ControllerError> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let key = format!("{ns}/{name}");
    let api: Api<GitSync> = Api::namespaced(ctx.client.clone(), &ns);
    // The watch cache may lag our own status write; deciding from it would sync twice.
    let Some(mut gs) = api
        .get_opt(&name)
        .await
        .map_err(api_err(format!("reading GitSync {key}")))?
    else {
        let _ = ctx.git.forget(&key).await;
        return Ok(Requeue::await_change());
    };
    if gs.spec.suspend {
        return Ok(Requeue::await_change());
    }
    let now = (ctx.clock)();
    let old = gs.status.clone().unwrap_or_default();
    let (interval, timeout) = match validate(&gs) {
        Ok(v) => v,
        Err(message) => {
            let attempt = Attempt {
                revision: None,
                ref_name: ref_name(&gs),
                outcome: SyncOutcome::Failed {
                    reason: reasons::INVALID_SPEC,
                    message,
                },
                started_at: now,
                requested_at: None,
            };
            let new = next_status(&old, &attempt, gs.metadata.generation, now);
            write_status(&ctx, &mut gs, &old, new, now).await?;
            return Ok(Requeue::await_change());
        }
    };
    let auth = match read_auth(&ctx.client, &gs).await {
        Ok(a) => a,
        Err(outcome) => {
            let attempt = Attempt {
                revision: None,
                ref_name: ref_name(&gs),
                outcome,
                started_at: now,
                requested_at: None,
            };
            let new = next_status(&old, &attempt, gs.metadata.generation, now);
            write_status(&ctx, &mut gs, &old, new, now).await?;
            return Ok(Requeue::requeue(interval));
        }
    };

    // Reverts first: a pushed revert is synced in this same pass.
    let mut force = false;
    let mut revert_failed = None;
    if gs.spec.revert_enabled() {
        let mine: Vec<Arc<Rollout>> = ctx
            .rollouts
            .state()
            .into_iter()
            .filter(|ro| ro.annotations().get(ANNOTATION_GITSYNC) == Some(&key))
            .collect();
        for ro in mine {
            let Some(step) = revert::next_step(&ro) else {
                continue;
            };
            let writer = RevertWriter {
                client: &ctx.client,
                git: ctx.git.as_ref(),
                key: &key,
                auth: &auth,
                now,
            };
            tracing::info!(rollout = %ro.name_any(), ?step, "revert writer");
            match writer.run(&gs, &ro, step).await {
                Ok(Outcome::Pushed) => {
                    crate::telemetry::global().reverted("pushed");
                    force = true;
                }
                Ok(Outcome::Blocked) => crate::telemetry::global().reverted("blocked"),
                Ok(Outcome::Idle) => {}
                // The sync still runs; the failed revert is retried with backoff after it.
                Err(e) => revert_failed = revert_failed.or(Some(ControllerError::Revert(e))),
            }
        }
    }

    let last = ctx
        .last_sync
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
        .copied();
    if !force && let Err(wait) = sync_due(&gs, last, interval, now) {
        return match revert_failed {
            Some(e) => Err(e),
            None => Ok(Requeue::requeue(wait)),
        };
    }
    let requested_at = gs.annotations().get(REQUESTED_AT_ANNOTATION).cloned();
    let attempt = match tokio::time::timeout(timeout, sync(&ctx, &mut gs, &key, &auth)).await {
        Ok(attempt) => attempt,
        Err(_) => Attempt {
            revision: None,
            ref_name: ref_name(&gs),
            outcome: SyncOutcome::Failed {
                reason: reasons::APPLY_FAILED,
                message: format!("the sync ran past spec.timeout ({timeout:?})"),
            },
            started_at: now,
            requested_at: None,
        },
    };
    let attempt = Attempt {
        requested_at,
        started_at: now,
        ..attempt
    };
    let finished = (ctx.clock)();
    // The sync may have written Reconciling; build on what is stored now.
    let old = gs.status.clone().unwrap_or_default();
    let new = next_status(&old, &attempt, gs.metadata.generation, finished);
    write_status(&ctx, &mut gs, &old, new, finished).await?;
    ctx.last_sync
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key, (now, gs.metadata.generation));
    match revert_failed {
        Some(e) => Err(e),
        None => Ok(Requeue::requeue(interval)),
    }
}

/// Fetch, render (cached per revision), apply, prune. A new revision is announced first with
/// `Reconciling=True`.
async fn sync(ctx: &Context, gs: &mut GitSync, key: &str, auth: &GitAuth) -> Attempt {
    let ref_name = ref_name(gs);
    let failed = |revision: Option<String>, reason: &'static str, message: String| Attempt {
        revision,
        ref_name: ref_name.clone(),
        outcome: SyncOutcome::Failed { reason, message },
        started_at: Timestamp::UNIX_EPOCH,
        requested_at: None,
    };
    let spec_ref = GitRefSpec::from_spec(gs.spec.git_ref.as_ref());
    let fetch_started = std::time::Instant::now();
    let fetched = ctx.git.fetch(key, &gs.spec.url, &spec_ref, auth).await;
    crate::telemetry::global().fetched(fetch_started.elapsed());
    let revision = match fetched {
        Ok(r) => r,
        Err(e) => return failed(None, reasons::FETCH_FAILED, e.to_string()),
    };
    let old = gs.status.clone().unwrap_or_default();
    let new_revision = [&old.last_applied_revision, &old.last_fetched_revision]
        .iter()
        .all(|r| r.as_deref() != Some(revision.as_str()));
    if new_revision {
        let now = (ctx.clock)();
        let mut announced = old.clone();
        announced.last_fetched_revision = Some(revision.clone());
        let text = format!("Applying revision {ref_name}@{}", short(&revision));
        conditions::set(
            &mut announced.conditions,
            conditions::reconciling(text, now, gs.metadata.generation),
        );
        // Only informative: if it cannot be written, the final status still is.
        if let Err(e) = write_status(ctx, gs, &old, announced, now).await {
            tracing::debug!(error = %e, "writing Reconciling");
        }
    }
    let old = gs.status.clone().unwrap_or_default();
    let gs = &*gs;
    let apply_started = std::time::Instant::now();
    let objects = match rendered(ctx, gs, key, &revision).await {
        Ok(o) => {
            tracing::debug!(
                gitsync = key,
                objects = o.len(),
                elapsed_ms = apply_started.elapsed().as_secs_f64() * 1e3,
                "rendered"
            );
            o
        }
        Err(message) => return failed(Some(revision), reasons::RENDER_FAILED, message),
    };
    // From the watch cache the revert writer reads too: no list of every Rollout per sync.
    if !ctx.rollouts_ready.wait().await {
        let message = "the Rollout watch is not ready yet".to_string();
        return failed(Some(revision), reasons::APPLY_FAILED, message);
    }
    let owned = rollout_owned(ctx.rollouts.state().iter().map(AsRef::as_ref));
    let report = match ctx.applier.apply(&objects, &owned, &revision).await {
        Ok(r) => r,
        Err(e) => return failed(Some(revision), reasons::APPLY_FAILED, e.to_string()),
    };
    if report.created + report.configured > 0 {
        tracing::info!(
            gitsync = key,
            revision = short(&revision),
            created = report.created,
            configured = report.configured,
            unchanged = report.unchanged,
            "applied"
        );
    }
    crate::telemetry::global().applied(apply_started.elapsed());
    if gs.spec.prune {
        let gone = stale(&old.inventory, &report.inventory);
        if let Err(e) = ctx.applier.prune(&gone, key).await {
            return failed(Some(revision), reasons::PRUNE_FAILED, e.to_string());
        }
    }
    Attempt {
        revision: Some(revision),
        ref_name,
        outcome: SyncOutcome::Applied(report.inventory),
        started_at: Timestamp::UNIX_EPOCH,
        requested_at: None,
    }
}

/// The objects of `revision`, rendered once per revision and render settings.
async fn rendered(
    ctx: &Context,
    gs: &GitSync,
    key: &str,
    revision: &str,
) -> Result<Arc<Vec<RenderedObject>>, String> {
    let path = gs.spec.path.clone().unwrap_or_default();
    let cache_key = format!(
        "{revision}\n{path}\n{}",
        gs.spec.target_namespace.as_deref().unwrap_or_default()
    );
    if let Some((k, objects)) = ctx
        .rendered
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(key)
        && *k == cache_key
    {
        return Ok(Arc::clone(objects));
    }
    let mut opts = RenderOptions::new(gs.namespace().unwrap_or_default(), gs.name_any());
    opts.target_namespace = gs.spec.target_namespace.clone();
    opts.kustomize = ctx.settings.kustomize.clone();
    opts.timeout = gs.spec.timeout().unwrap_or(opts.timeout);
    let result = match render_from_objects(ctx, key, revision, &path, &opts).await {
        Some(result) => result,
        None => render_checkout(ctx, key, revision, &path, &opts).await,
    };
    let objects = Arc::new(result?);
    ctx.rendered
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key.to_string(), (cache_key, Arc::clone(&objects)));
    Ok(objects)
}

/// Renders a plain directory straight from the mirror's object database: one `ls-tree` and one
/// `cat-file --batch`, with no checkout written to disk. `None` when the tree needs a checkout
/// (a kustomization, symlinks, a path that is not a directory, or anything the checkout render
/// reports as an error).
async fn render_from_objects(
    ctx: &Context,
    key: &str,
    revision: &str,
    path: &str,
    opts: &RenderOptions,
) -> Option<Result<Vec<RenderedObject>, String>> {
    // An invalid field is the checkout render's to report.
    let directory = tree_directory(path)?;
    let entries = match ctx.git.list_tree(key, revision, &directory).await {
        Ok(entries) => entries,
        Err(e) => {
            tracing::debug!(gitsync = key, error = %e, "listing the tree failed; rendering a checkout");
            return None;
        }
    };
    let files = plain_tree_files(&entries, path, opts)?;
    let ids: Vec<String> = files.iter().map(|f| f.id.clone()).collect();
    let blobs = match ctx.git.read_blobs(key, &ids).await {
        Ok(blobs) => blobs,
        Err(e) => return Some(Err(format!("reading {}: {e}", short(revision)))),
    };
    let files = files.iter().map(|f| f.path.clone()).zip(blobs).collect();
    Some(render_files(files, opts).await.map_err(|e| e.to_string()))
}

/// Renders `path` from a scratch checkout of `revision`, removed afterwards.
async fn render_checkout(
    ctx: &Context,
    key: &str,
    revision: &str,
    path: &str,
    opts: &RenderOptions,
) -> Result<Vec<RenderedObject>, String> {
    let scratch = ctx.settings.cache_dir.join("checkouts").join(format!(
        "{}-{}",
        key.replace('/', "_"),
        fastrand::u64(..)
    ));
    let result = async {
        ctx.git
            .checkout(key, revision, &scratch)
            .await
            .map_err(|e: GitError| format!("checking out {}: {e}", short(revision)))?;
        render(&scratch, path, opts)
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    let _ = tokio::fs::remove_dir_all(&scratch).await;
    result
}

/// Writes `new` when it differs from `old`, recording the Events of the change first; `gs` takes the
/// stored result, so a later write in the same pass is not refused as stale.
async fn write_status(
    ctx: &Context,
    gs: &mut GitSync,
    old: &GitSyncStatus,
    new: GitSyncStatus,
    now: Timestamp,
) -> Result<(), ControllerError> {
    if *old == new {
        return Ok(());
    }
    let ns = gs.namespace().unwrap_or_default();
    let name = gs.name_any();
    for (reason, message, warning) in transitions(old, &new) {
        let involved = ObjectReference {
            api_version: Some(GitSync::api_version(&()).into_owned()),
            kind: Some("GitSync".into()),
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            uid: gs.uid(),
            ..Default::default()
        };
        // Named from the status it follows, which is only written after the Event: a restart that
        // makes the same transition again finds the Event already there.
        let previous = old
            .history
            .first()
            .map(|h| h.started_at.0.as_second())
            .unwrap_or_default();
        let h = crate::fnv::fnv1a_32(
            reason
                .bytes()
                .chain(message.bytes())
                .chain(previous.to_le_bytes()),
        );
        let ev_name = format!(
            "{}.{}.{}-{h:08x}",
            name.chars().take(200).collect::<String>(),
            gs.uid()
                .unwrap_or_default()
                .chars()
                .take(8)
                .collect::<String>(),
            reason.to_ascii_lowercase()
        );
        let event = crate::events::NewEvent {
            name: ev_name,
            reason,
            message: &message,
            warning,
        };
        record_event(&ctx.client, involved, event, now)
            .await
            .map_err(api_err(format!(
                "recording {reason} for GitSync {ns}/{name}"
            )))?;
    }
    let mut next = gs.clone();
    next.status = Some(new);
    let api: Api<GitSync> = Api::namespaced(ctx.client.clone(), &ns);
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match api.replace_status(&name, &pp, &next).await {
        Ok(stored) => {
            *gs = stored;
            Ok(())
        }
        // Changed since we read it (a person edited it): the next pass decides again.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(api_err(format!("writing status of GitSync {ns}/{name}"))(e)),
    }
}

/// Records an Event of the GitSync controller (and its revert writer) about `involved`.
pub(crate) async fn record_event(
    client: &Client,
    involved: ObjectReference,
    event: crate::events::NewEvent<'_>,
    now: Timestamp,
) -> Result<(), kube::Error> {
    let reporter = crate::events::Reporter {
        field_manager: FIELD_MANAGER,
        controller: "weir.io/gitsync-controller",
    };
    crate::events::record(client, reporter, involved, event, now).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::gitsync::GitSyncSpec;

    fn watched(body: serde_json::Value) -> RolloutObject {
        let mut v = serde_json::json!({
            "apiVersion": "weir.io/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "apps", "annotations": {ANNOTATION_GITSYNC: "apps/site"}},
        });
        if let (Some(obj), serde_json::Value::Object(body)) = (v.as_object_mut(), body) {
            obj.extend(body);
        }
        serde_json::from_value(v).expect("a watched Rollout")
    }

    #[test]
    fn the_revert_writer_keeps_a_rollout_without_its_template() {
        let ro = watched(serde_json::json!({
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": "app:2"}]}},
                "strategy": {"canary": {"stableService": "web-stable", "canaryService": "web-canary"}}},
            "status": {"abort": true, "currentPodHash": "abc"},
        }));
        let watcher::Event::Apply(kept) = for_revert_writer(watcher::Event::Apply(ro)) else {
            panic!("an Apply stays an Apply");
        };
        assert_eq!(
            kept.spec.template,
            Default::default(),
            "the pod template is dropped"
        );
        assert_eq!(
            kept.annotations()
                .get(ANNOTATION_GITSYNC)
                .map(String::as_str),
            Some("apps/site")
        );
        assert!(
            kept.status.as_ref().is_some_and(|s| s.abort),
            "the status the revert reads stays"
        );
        let owned = rollout_owned([&kept]);
        assert!(
            owned
                .services
                .contains(&("apps".to_string(), "web-stable".to_string()))
        );
    }

    #[test]
    fn a_rollout_that_does_not_decode_is_kept_by_name_owning_nothing() {
        // `steps` must be a list: the Rollout controller marks this one InvalidSpec.
        let ro = watched(serde_json::json!({
            "spec": {"strategy": {"canary": {"stableService": "web-stable", "steps": "all of them"}}},
            "status": {"abort": true, "currentPodHash": "abc"},
        }));
        for event in [
            watcher::Event::Apply(ro.clone()),
            watcher::Event::InitApply(ro.clone()),
            watcher::Event::Delete(ro),
        ] {
            let (watcher::Event::Apply(kept)
            | watcher::Event::InitApply(kept)
            | watcher::Event::Delete(kept)) = for_revert_writer(event)
            else {
                panic!("an object event stays an object event");
            };
            assert_eq!(kept.name_any(), "web");
            assert_eq!(kept.namespace().as_deref(), Some("apps"));
            assert!(kept.status.is_none(), "nothing to revert");
            assert!(revert::next_step(&kept).is_none());
            let owned = rollout_owned([&kept]);
            assert!(owned.services.is_empty() && owned.http_routes.is_empty());
        }
    }

    fn gitsync(annotations: &[(&str, &str)], status: GitSyncStatus) -> GitSync {
        let mut gs = GitSync::new(
            "apps",
            GitSyncSpec {
                url: "git://localhost/apps.git".into(),
                git_ref: None,
                path: None,
                interval: None,
                timeout: None,
                secret_ref: None,
                prune: false,
                suspend: false,
                target_namespace: None,
                revert: None,
            },
        );
        gs.metadata.generation = Some(1);
        gs.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        gs.status = Some(status);
        gs
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn a_sync_is_due_on_interval_spec_change_or_request() {
        let minute = Duration::from_secs(60);
        let handled = GitSyncStatus {
            last_handled_reconcile_at: Some("t1".into()),
            ..Default::default()
        };
        let cases = [
            ("never synced", gitsync(&[], handled.clone()), None, Ok(())),
            (
                "synced 10s ago",
                gitsync(&[], handled.clone()),
                Some((at(990), Some(1))),
                Err(Duration::from_secs(50)),
            ),
            (
                "interval passed",
                gitsync(&[], handled.clone()),
                Some((at(900), Some(1))),
                Ok(()),
            ),
            (
                "spec changed",
                gitsync(&[], handled.clone()),
                Some((at(990), Some(0))),
                Ok(()),
            ),
            (
                "sync now",
                gitsync(&[(REQUESTED_AT_ANNOTATION, "t2")], handled.clone()),
                Some((at(999), Some(1))),
                Ok(()),
            ),
            (
                "request already handled",
                gitsync(&[(REQUESTED_AT_ANNOTATION, "t1")], handled.clone()),
                Some((at(990), Some(1))),
                Err(Duration::from_secs(50)),
            ),
        ];
        for (what, gs, last, expected) in cases {
            assert_eq!(sync_due(&gs, last, minute, at(1000)), expected, "{what}");
        }
    }

    fn applied(rev: &str) -> Attempt {
        Attempt {
            revision: Some(rev.into()),
            ref_name: "main".into(),
            outcome: SyncOutcome::Applied(vec![]),
            started_at: at(10),
            requested_at: None,
        }
    }

    #[test]
    fn an_unchanged_resync_changes_no_status_and_records_nothing() {
        let first = next_status(&GitSyncStatus::default(), &applied("aaaa"), Some(1), at(11));
        assert_eq!(first.last_applied_revision.as_deref(), Some("aaaa"));
        assert_eq!(first.history.len(), 1);
        assert_eq!(
            transitions(&GitSyncStatus::default(), &first)[0].0,
            events::SYNCED
        );
        let again = next_status(&first, &applied("aaaa"), Some(1), at(71));
        assert_eq!(again, first);
        assert!(transitions(&first, &again).is_empty());
    }

    #[test]
    fn a_failed_render_keeps_the_last_good_revision_and_says_where() {
        let good = next_status(&GitSyncStatus::default(), &applied("aaaa"), Some(1), at(11));
        let bad = Attempt {
            revision: Some("bbbb".into()),
            outcome: SyncOutcome::Failed {
                reason: reasons::RENDER_FAILED,
                message: "apps/web.yaml:3:1: invalid YAML".into(),
            },
            ..applied("bbbb")
        };
        let after = next_status(&good, &bad, Some(1), at(20));
        assert_eq!(after.last_applied_revision.as_deref(), Some("aaaa"));
        assert_eq!(after.last_fetched_revision.as_deref(), Some("bbbb"));
        let ready = conditions::find(&after.conditions, types::READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", reasons::RENDER_FAILED)
        );
        assert!(ready.message.contains("apps/web.yaml:3"));
        let t = transitions(&good, &after);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].0, events::SYNC_FAILED);
        // The same failure again: no new Event, no new history entry, no write.
        assert_eq!(next_status(&after, &bad, Some(1), at(80)), after);
        // Fixed: Ready again, with the new revision.
        let fixed = next_status(&after, &applied("cccc"), Some(1), at(90));
        assert!(conditions::is_true(&fixed.conditions, types::READY));
        assert_eq!(fixed.history.len(), 3);
    }

    #[test]
    fn failures_back_off_exponentially_up_to_a_minute() {
        let waits: Vec<u64> = (1..=8).map(|n| retry_after(n).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(retry_after(u32::MAX), MAX_RETRY);
    }

    #[test]
    fn history_is_bounded() {
        let mut s = GitSyncStatus::default();
        for i in 0..25 {
            s = next_status(&s, &applied(&format!("{i:04}")), Some(1), at(i));
        }
        assert_eq!(s.history.len(), HISTORY_LIMIT);
        assert_eq!(s.history[0].revision, "0024");
    }
}
