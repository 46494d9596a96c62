//! The alert controller: core/v1 Events on Rollouts in, one alert per subscribed AlertProvider out.
//!
//! weir records an Event on a Rollout only when something happens (a transition), under a name
//! derived from the Rollout's status, so `<namespace>/<event name>` identifies the happening. That
//! key is what dedupe works on:
//! - while weir runs, an in-memory set holds the keys being sent and recently sent, so a relisted
//!   watch does not send twice;
//! - across restarts, each AlertProvider's status says what it has: `pendingAlerts` holds every
//!   alert accepted but not yet delivered, with the alert itself, written *before* the first
//!   request; `sentAlerts` (the newest [`SENT_ALERTS_LIMIT`] keys, delivered or given up) what
//!   it already had. A started controller resumes the pending alerts, so a receiver that is down
//!   gets each alert once it is back (until [`DeliveryPolicy::give_up_after`], 24 h by default).
//!   An alert moves from pending to sent in the one status write right after the service's 2xx:
//!   a crash between that answer and the write is the one window in which an alert is sent twice
//!   rather than never.
//!
//! Events older than the provider, or than [`MAX_EVENT_AGE`], are not sent: a new provider does
//! not get the namespace's history.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};

use super::delivery::{
    AbortOnDrop, Delivery, DeliveryPolicy, DeliveryReport, Job, Outcome, Retrying, Target,
};
use super::{Alert, AnalysisEvidence, GitEvidence, ProviderSettings};
use crate::analysis::providers::{KubeSecrets, ProviderError, SecretSource};
use crate::api::alert_provider::{
    AlertEvent, AlertProvider, AlertProviderStatus, PENDING_ALERTS_LIMIT, PendingAlert,
    SECRET_KEY_ADDRESS, SECRET_KEY_TOKEN, SENT_ALERTS_LIMIT, SentAlert, SentAlertOutcome,
};
use crate::api::analysis::{AnalysisPhase, AnalysisRun, MetricResult};
use crate::api::conditions::{self, ConditionStatus, reasons, types};
use crate::api::rollout::{CanaryStep, Rollout, RolloutStatus, RolloutStrategy};
use crate::cache_ready::{cache_ready, signal_when_listed};
use crate::rollout::hash::POD_TEMPLATE_HASH_LABEL;
use crate::rollout::replica_sets::ROLLOUT_LABEL;

/// The field manager of the alert controller's writes.
pub const FIELD_MANAGER: &str = "weir-notify";
/// Events older than this are history, not news.
pub const MAX_EVENT_AGE: Duration = Duration::from_secs(3600);
/// Event reason on an AlertProvider when an alert could not be delivered.
pub const REASON_DELIVERY_FAILED: &str = "AlertDeliveryFailed";
/// `Ready` reason of an AlertProvider whose last alert was delivered.
pub const REASON_DELIVERED: &str = "AlertDelivered";
/// `Ready` reason of an AlertProvider whose last alert failed and will be retried.
pub const REASON_RETRYING: &str = "AlertDeliveryRetrying";
/// Event reason on an AlertProvider when an alert was dropped because the queue, or the
/// provider's `pendingAlerts`, was full.
pub const REASON_DROPPED: &str = "AlertDropped";
/// Event reason (Rollout) of a Git revert that was pushed, recorded by the revert writer.
pub const EVENT_GIT_REVERTED: &str = "GitReverted";
/// Event reason (Rollout) of a Git revert that weir would not or could not make.
pub const EVENT_GIT_REVERT_BLOCKED: &str = "GitRevertBlocked";
/// `reportingComponent` of the Rollout controller's Events.
const ROLLOUT_CONTROLLER: &str = "weir.io/rollout-controller";
/// Longest wait for the Rollout status that goes with an Event.
const STATUS_WAIT: Duration = Duration::from_secs(5);
/// Keys remembered in memory after they were sent.
const RECENT_KEYS: usize = 4096;

/// Settings of the alert controller.
#[derive(Clone, Debug)]
pub struct NotifyConfig {
    /// The cluster's name as people know it; it appears in every alert.
    pub cluster_name: String,
    /// Queue and retry limits.
    pub policy: DeliveryPolicy,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            cluster_name: std::env::var("WEIR_CLUSTER_NAME")
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "kubernetes".to_owned()),
            policy: DeliveryPolicy::default(),
        }
    }
}

/// The alert event for a Rollout Event, or None when it is not one to alert on.
///
/// `progressing_reason` is the reason of the Rollout's `Progressing` condition when the Rollout
/// is still aborted: it tells a failed analysis or a missed deadline (`RolledBack`) from a person
/// (`Aborted`) when the message does not.
pub fn classify(
    reason: &str,
    message: &str,
    warning: bool,
    progressing_reason: Option<&str>,
) -> Option<AlertEvent> {
    use crate::rollout::plan::events;
    match reason {
        events::ABORTED => {
            let by_weir = message.starts_with(reasons::PROGRESS_DEADLINE_EXCEEDED)
                || message.contains("AnalysisRun ")
                || matches!(
                    progressing_reason,
                    Some(reasons::ANALYSIS_RUN_FAILED | reasons::PROGRESS_DEADLINE_EXCEEDED)
                );
            Some(if by_weir {
                AlertEvent::RolledBack
            } else {
                AlertEvent::Aborted
            })
        }
        // Timed pause steps and automatic promotions need nobody; say nothing about them.
        events::PAUSED => (warning
            || message.contains("until promoted")
            || message.contains("waiting for promote"))
        .then_some(AlertEvent::Paused),
        events::PROMOTED => Some(AlertEvent::Promoted),
        events::COMPLETED => Some(AlertEvent::Completed),
        events::STEP_COMPLETED => Some(AlertEvent::StepCompleted),
        EVENT_GIT_REVERTED => Some(AlertEvent::GitReverted),
        EVENT_GIT_REVERT_BLOCKED => Some(AlertEvent::GitRevertBlocked),
        _ => None,
    }
}

/// Runs the alert controller with settings from the environment (`WEIR_CLUSTER_NAME`).
pub async fn run(client: Client) {
    run_with(client, NotifyConfig::default()).await;
}

struct Shared {
    client: Client,
    providers: Store<AlertProvider>,
    cluster: String,
    /// Keys being sent or recently sent, per provider.
    seen: Mutex<RecentKeys>,
    /// Serializes status writes, which read, append and replace.
    status_lock: tokio::sync::Mutex<()>,
    /// How long alerts are retried, for the messages that say until when.
    give_up_after: Duration,
}

/// (provider, alert key) pairs, oldest dropped first.
#[derive(Default)]
struct RecentKeys {
    set: HashSet<(String, String)>,
    order: VecDeque<(String, String)>,
}

impl Shared {
    /// Whether this process may send the alert to the provider: false when it already is.
    fn claim(&self, provider: &str, key: &str) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let entry = (provider.to_owned(), key.to_owned());
        if !seen.set.insert(entry.clone()) {
            return false;
        }
        seen.order.push_back(entry);
        while seen.order.len() > RECENT_KEYS {
            if let Some(old) = seen.order.pop_front() {
                seen.set.remove(&old);
            }
        }
        true
    }
}

/// Runs the alert controller until the Event watch ends (it does not, unless the API goes away).
pub async fn run_with(client: Client, config: NotifyConfig) {
    let (reader, writer) = reflector::store();
    let (signal, providers_ready) = cache_ready();
    let (any_tx, mut any_provider) = tokio::sync::watch::channel(false);
    let counted = reader.clone();
    let providers = signal_when_listed(
        reflector::reflector(
            writer,
            watcher(
                Api::<AlertProvider>::all(client.clone()),
                watcher::Config::default(),
            ),
        ),
        signal,
    )
    .default_backoff()
    .for_each(move |_| {
        // The reflector has applied the event by now, so the store says whether any are left.
        let any = !counted.is_empty();
        any_tx.send_if_modified(|was| std::mem::replace(was, any) != any);
        async {}
    });
    let _providers = AbortOnDrop(tokio::spawn(providers).abort_handle());
    let shared = Arc::new(Shared {
        client: client.clone(),
        providers: reader,
        cluster: config.cluster_name.clone(),
        seen: Mutex::new(RecentKeys::default()),
        status_lock: tokio::sync::Mutex::new(()),
        give_up_after: config.policy.give_up_after,
    });
    let delivery = Delivery::start(
        config.policy.clone(),
        Arc::new(Recorder {
            shared: shared.clone(),
        }),
    );
    if !providers_ready.wait().await {
        return;
    }
    resume(&shared, &delivery).await;
    // Events are watched only while some AlertProvider exists: without one no Event alerts anybody,
    // and a busy cluster's Rollouts record a few per step. Starting the watch lists every Rollout
    // Event, so one recorded while no provider was known is still seen; `handle` skips those
    // older than the provider, as it does after a restart.
    loop {
        if any_provider.wait_for(|any| *any).await.is_err() {
            return;
        }
        // The API server filters, so a busy cluster's other Events never reach weir.
        let events = crate::without_managed_fields::watch_all::<CoreEvent>(
            client.clone(),
            &(),
            watcher::Config::default().fields("involvedObject.kind=Rollout"),
        )
        .default_backoff()
        .applied_objects()
        .for_each(|ev| {
            let (shared, delivery) = (shared.clone(), delivery.clone());
            async move {
                match ev {
                    Ok(ev) => handle(&shared, &delivery, &ev).await,
                    Err(e) => tracing::debug!(error = %e, "event watch failed; retrying"),
                }
            }
        });
        tokio::select! {
            () = events => return,
            none = any_provider.wait_for(|any| !*any) => {
                if none.is_err() {
                    return;
                }
            }
        }
    }
}

fn event_time(ev: &CoreEvent) -> Option<Timestamp> {
    ev.last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| ev.event_time.as_ref().map(|t| t.0))
        .or_else(|| ev.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

async fn handle(shared: &Shared, delivery: &Delivery, ev: &CoreEvent) {
    let obj = &ev.involved_object;
    if obj.kind.as_deref() != Some("Rollout")
        || !obj
            .api_version
            .as_deref()
            .is_some_and(|v| v.starts_with(&format!("{}/", crate::api::GROUP)))
    {
        return;
    }
    let ns = ev.namespace().unwrap_or_default();
    let Some(rollout_name) = obj.name.clone() else {
        return;
    };
    let when = event_time(ev).unwrap_or_else(Timestamp::now);
    let age = Timestamp::now().duration_since(when);
    if age > jiff::SignedDuration::try_from(MAX_EVENT_AGE).unwrap_or(jiff::SignedDuration::MAX) {
        return;
    }
    let key = format!("{ns}/{}", ev.name_any());
    let reason = ev.reason.clone().unwrap_or_default();
    let message = ev.message.clone().unwrap_or_default();
    let warning = ev.type_.as_deref() == Some("Warning");
    // Most Rollout Events alert nobody (no provider in the namespace takes them); telling so needs
    // only the Event. Reading the Rollout first cost a GET, and up to STATUS_WAIT of polling, per
    // Event: 10,000 of them while 1,000 canaries stepped, one after another, so the watch fell behind.
    let Some(candidate) = classify(&reason, &message, warning, None) else {
        return;
    };
    // An abort turns out to be weir's rollback or a person's only once the Rollout is read.
    let possible: &[AlertEvent] = match candidate {
        AlertEvent::Aborted | AlertEvent::RolledBack => {
            &[AlertEvent::Aborted, AlertEvent::RolledBack]
        }
        _ => std::slice::from_ref(&candidate),
    };
    let anyone = shared.providers.state().iter().any(|p| {
        p.namespace().as_deref() == Some(ns.as_str()) && possible.iter().any(|e| p.spec.accepts(*e))
    });
    if !anyone {
        return;
    }
    let rollout = read_rollout(shared, &ns, &rollout_name, ev).await;
    let status = rollout
        .as_ref()
        .and_then(|r| r.status.clone())
        .unwrap_or_default();
    let progressing = status
        .aborted_at
        .as_ref()
        .and_then(|_| {
            status
                .conditions
                .iter()
                .find(|c| c.type_ == types::PROGRESSING)
        })
        .map(|c| c.reason.as_str());
    let Some(event) = classify(&reason, &message, warning, progressing) else {
        return;
    };
    let named: Vec<&str> = rollout
        .as_ref()
        .map(|r| r.spec.alerts.iter().map(|a| a.name.as_str()).collect())
        .unwrap_or_default();
    let providers: Vec<Arc<AlertProvider>> = shared
        .providers
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
        .filter(|p| {
            if named.is_empty() {
                p.spec.default
            } else {
                named.contains(&p.name_any().as_str())
            }
        })
        .filter(|p| p.spec.accepts(event))
        .filter(|p| {
            p.metadata
                .creation_timestamp
                .as_ref()
                .is_none_or(|c| c.0 <= when)
        })
        .filter(|p| !p.status.as_ref().is_some_and(|s| s.knows(&key)))
        .collect();
    if providers.is_empty() {
        return;
    }
    let mut claimed = Vec::new();
    for p in providers {
        if shared.claim(&provider_id(&p), &key) {
            claimed.push(p);
        }
    }
    if claimed.is_empty() {
        return;
    }
    let alert = build_alert(
        shared,
        AlertInput {
            key: &key,
            event,
            time: when,
            namespace: &ns,
            rollout_name: &rollout_name,
            rollout: rollout.as_ref(),
            reason: &reason,
            message: &message,
        },
    )
    .await;
    for p in claimed {
        let target = match target(&shared.client, &p).await {
            Ok(t) => t,
            Err(why) => {
                give_up_unresolved(shared, &p, &alert, &why).await;
                continue;
            }
        };
        let job = Job::new(alert.clone(), target);
        // Pending in the cluster before the first request, so a restart resumes it.
        match persist_pending(shared, &p, &job).await {
            Persisted::Yes | Persisted::Unknown => {}
            Persisted::Full => {
                give_up_dropped(
                    shared,
                    &p,
                    &alert,
                    &format!("{PENDING_ALERTS_LIMIT} alerts are already waiting for this provider"),
                )
                .await;
                continue;
            }
        }
        if let Err(full) = delivery.enqueue(job) {
            give_up_dropped(shared, &p, &alert, &full.to_string()).await;
        }
    }
}

/// Hands the alerts a provider's status holds as pending to the worker: the ones an earlier
/// process accepted and did not finish.
async fn resume(shared: &Shared, delivery: &Delivery) {
    for p in shared.providers.state() {
        let pending = p
            .status
            .as_ref()
            .map(|s| s.pending_alerts.clone())
            .unwrap_or_default();
        for entry in pending {
            if !shared.claim(&provider_id(&p), &entry.key) {
                continue;
            }
            let alert: Alert = match serde_json::from_value(entry.alert.clone()) {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(provider = %p.name_any(), key = %entry.key, error = %e, "a pending alert cannot be read back; giving it up");
                    let unreadable = Alert {
                        key: entry.key.clone(),
                        event: entry.event,
                        rollout: entry.rollout.clone(),
                        ..placeholder_alert(&p)
                    };
                    let why = format!("not delivered: the stored alert cannot be read ({e})");
                    give_up(shared, &p, &unreadable, &why, REASON_DELIVERY_FAILED).await;
                    continue;
                }
            };
            let target = match target(&shared.client, &p).await {
                Ok(t) => t,
                Err(why) => {
                    give_up_unresolved(shared, &p, &alert, &why).await;
                    continue;
                }
            };
            tracing::info!(provider = %p.name_any(), event = %alert.event, rollout = %alert.rollout, attempts = entry.attempts, "resuming a pending alert");
            let job = Job {
                alert: alert.clone(),
                target,
                since: entry.since.0,
                attempts: entry.attempts,
                not_before: entry.next_attempt_at.map(|t| t.0),
            };
            if let Err(full) = delivery.enqueue_waiting(job).await {
                give_up_dropped(shared, &p, &alert, &full.to_string()).await;
            }
        }
    }
}

/// An alert with only the provider's namespace set, for records of alerts that cannot be
/// rebuilt.
fn placeholder_alert(p: &AlertProvider) -> Alert {
    Alert {
        key: String::new(),
        event: AlertEvent::Started,
        time: Timestamp::now(),
        cluster: String::new(),
        namespace: p.namespace().unwrap_or_default(),
        rollout: String::new(),
        reason: String::new(),
        message: String::new(),
        analysis: None,
        canary_images: Vec::new(),
        stable_images: Vec::new(),
        weight: None,
        git: None,
        next_steps: Vec::new(),
    }
}

/// The provider's address or keys could not be read: the alert is given up.
async fn give_up_unresolved(shared: &Shared, p: &AlertProvider, alert: &Alert, why: &TargetError) {
    let why = format!("not sent: {why}");
    give_up(shared, p, alert, &why, reasons::SECRET_NOT_FOUND).await;
}

/// No room to hold the alert: it is given up, counted and recorded as dropped.
async fn give_up_dropped(shared: &Shared, p: &AlertProvider, alert: &Alert, why: &str) {
    crate::telemetry::global().alert("dropped");
    let job_ref = JobRef { provider: p, alert };
    record_event(
        shared,
        &job_ref,
        REASON_DROPPED,
        &format!(
            "Dropped the {} alert for Rollout {}/{}: {why}",
            alert.event, alert.namespace, alert.rollout
        ),
    )
    .await;
    let ready = Ready {
        holds: false,
        reason: REASON_DROPPED,
        message: format!("The last alert ({}) was dropped: {why}", alert.event),
    };
    remember(shared, p, alert, SentAlertOutcome::Failed, ready).await;
}

/// Records a Warning Event and the alert as given up.
async fn give_up(
    shared: &Shared,
    p: &AlertProvider,
    alert: &Alert,
    why: &str,
    reason: &'static str,
) {
    let job_ref = JobRef { provider: p, alert };
    record_failure(shared, &job_ref, why).await;
    let ready = Ready {
        holds: false,
        reason,
        message: why.to_owned(),
    };
    remember(shared, p, alert, SentAlertOutcome::Failed, ready).await;
}

/// The Rollout controller records an Event before it writes the status that goes with it, and
/// counts its Events in `status.recordedEvents`; the sequence number is part of the Event's name
/// (`<rollout>.<uid>.<seq>-<hash>`).
fn rollout_event_seq(ev: &CoreEvent) -> Option<i64> {
    if ev.reporting_component.as_deref() != Some(ROLLOUT_CONTROLLER) {
        return None;
    }
    let name = ev.metadata.name.as_deref()?;
    name.rsplit('.').next()?.split('-').next()?.parse().ok()
}

/// The Rollout as it was once the status that goes with the Event was written: the alert needs
/// that status (abort reason, step, revert). Waits at most [`STATUS_WAIT`] for it.
async fn read_rollout(shared: &Shared, ns: &str, name: &str, ev: &CoreEvent) -> Option<Rollout> {
    let api: Api<Rollout> = Api::namespaced(shared.client.clone(), ns);
    let seq = rollout_event_seq(ev);
    let deadline = tokio::time::Instant::now() + STATUS_WAIT;
    loop {
        let rollout = match api.get_opt(name).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, rollout = %name, "reading the Rollout of an Event failed");
                None
            }
        };
        let written = match (&rollout, seq) {
            (Some(r), Some(seq)) => r.status.as_ref().is_some_and(|s| s.recorded_events > seq),
            _ => true,
        };
        if written || tokio::time::Instant::now() >= deadline {
            return rollout;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn provider_id(p: &AlertProvider) -> String {
    format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any())
}

/// Why a provider's address could not be resolved. Never contains a secret value.
#[derive(Debug, thiserror::Error)]
enum TargetError {
    #[error("{0}")]
    Secret(#[source] ProviderError),
    #[error("the AlertProvider has neither address nor secretRef")]
    NoAddress,
}

async fn optional_secret(
    secrets: &KubeSecrets,
    ns: &str,
    name: &str,
    key: &str,
) -> Result<Option<String>, TargetError> {
    match secrets.secret(ns, name, key).await {
        Ok(v) => Ok(Some(v)),
        Err(ProviderError::SecretKeyMissing { .. }) => Ok(None),
        Err(e) => Err(TargetError::Secret(e)),
    }
}

async fn target(client: &Client, p: &AlertProvider) -> Result<Target, TargetError> {
    let ns = p.namespace().unwrap_or_default();
    let secrets = KubeSecrets(client.clone());
    let (url, token) = match (&p.spec.address, &p.spec.secret_ref) {
        (Some(a), _) => (a.clone(), None),
        (None, Some(r)) => {
            let url = secrets
                .secret(&ns, &r.name, SECRET_KEY_ADDRESS)
                .await
                .map_err(TargetError::Secret)?;
            let token = optional_secret(&secrets, &ns, &r.name, SECRET_KEY_TOKEN).await?;
            (url.trim().to_owned(), token.map(|t| t.trim().to_owned()))
        }
        (None, None) => return Err(TargetError::NoAddress),
    };
    let signing_key = match &p.spec.signing_secret_ref {
        Some(r) => Some(
            secrets
                .secret(&ns, &r.name, &r.key)
                .await
                .map_err(TargetError::Secret)?
                .into_bytes(),
        ),
        None => None,
    };
    Ok(Target {
        namespace: ns,
        name: p.name_any(),
        kind: p.spec.provider_type,
        url,
        settings: ProviderSettings {
            channel: p.spec.channel.clone(),
            username: p.spec.username.clone(),
            token,
            signing_key,
        },
    })
}

/// The abort reason a message shows, when the Rollout's status cannot say.
fn reason_from_message(message: &str, recorded: &str) -> String {
    if message.starts_with(reasons::PROGRESS_DEADLINE_EXCEEDED) {
        reasons::PROGRESS_DEADLINE_EXCEEDED.to_owned()
    } else if message.contains("AnalysisRun ") {
        reasons::ANALYSIS_RUN_FAILED.to_owned()
    } else {
        recorded.to_owned()
    }
}

struct AlertInput<'a> {
    key: &'a str,
    event: AlertEvent,
    time: Timestamp,
    namespace: &'a str,
    rollout_name: &'a str,
    rollout: Option<&'a Rollout>,
    reason: &'a str,
    message: &'a str,
}

async fn build_alert(shared: &Shared, input: AlertInput<'_>) -> Alert {
    let status = input
        .rollout
        .and_then(|r| r.status.clone())
        .unwrap_or_default();
    let event = input.event;
    // The reason people need is the one that explains the abort, not the Event's own name.
    let reason = match event {
        AlertEvent::RolledBack | AlertEvent::Aborted => status
            .conditions
            .iter()
            .find(|c| c.type_ == types::PROGRESSING && !c.reason.is_empty())
            .map(|c| c.reason.clone())
            .filter(|_| status.aborted_at.is_some())
            .unwrap_or_else(|| reason_from_message(input.message, input.reason)),
        _ => input.reason.to_owned(),
    };
    let wants_run = matches!(
        event,
        AlertEvent::RolledBack
            | AlertEvent::Paused
            | AlertEvent::GitReverted
            | AlertEvent::GitRevertBlocked
    );
    let analysis = if wants_run {
        analysis_evidence(shared, input.namespace, input.message, &status, event).await
    } else {
        None
    };
    let git = status.git_revert.as_ref().map(|g| GitEvidence {
        reverted_commits: g.reverted_commits.clone(),
        revert_commit: g.revert_commit.clone(),
        state: serde_json::to_value(g.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned)),
        blocked_reason: matches!(
            g.state,
            crate::api::rollout::GitRevertState::Blocked
                | crate::api::rollout::GitRevertState::Failed
        )
        .then(|| g.message.clone().unwrap_or_default()),
    });
    let git = match event {
        AlertEvent::GitRevertBlocked => {
            let mut g = git.unwrap_or_default();
            if g.blocked_reason.as_deref().is_none_or(str::is_empty) {
                g.blocked_reason = Some(input.message.to_owned());
            }
            Some(g)
        }
        AlertEvent::RolledBack | AlertEvent::GitReverted | AlertEvent::Aborted => git,
        _ => None,
    };
    let canary_hash = match event {
        AlertEvent::GitReverted | AlertEvent::GitRevertBlocked => status
            .git_revert
            .as_ref()
            .map(|g| g.pod_hash.clone())
            .or(status.current_pod_hash.clone()),
        _ => status.current_pod_hash.clone(),
    };
    let images = images_by_hash(shared, input.namespace, input.rollout_name).await;
    let canary_images = canary_hash
        .as_ref()
        .and_then(|h| images.get(h).cloned())
        .unwrap_or_default();
    let stable_images = status
        .stable_rs
        .as_ref()
        .and_then(|h| images.get(h).cloned())
        .unwrap_or_default();
    let weight = input
        .rollout
        .and_then(|r| weight_at_event(r, &status, event));
    let reverted_in_git = git
        .as_ref()
        .is_some_and(|g| g.revert_commit.is_some() || event == AlertEvent::GitReverted);
    let next_steps = Alert::commands_for(
        event,
        input.namespace,
        input.rollout_name,
        analysis.as_ref().map(|a| a.run.as_str()),
        reverted_in_git,
    );
    Alert {
        key: input.key.to_owned(),
        event,
        time: input.time,
        cluster: shared.cluster.clone(),
        namespace: input.namespace.to_owned(),
        rollout: input.rollout_name.to_owned(),
        reason,
        message: input.message.to_owned(),
        analysis,
        canary_images,
        stable_images,
        weight,
        git,
        next_steps,
    }
}

/// The canary weight when the release stopped or paused. After an abort the routers are back at
/// 0, so the weight comes from the steps done before the current one.
fn weight_at_event(ro: &Rollout, status: &RolloutStatus, event: AlertEvent) -> Option<i32> {
    let RolloutStrategy::Canary(c) = &ro.spec.strategy else {
        return None;
    };
    match event {
        AlertEvent::Paused | AlertEvent::Promoted => status.weights.map(|w| w.canary),
        AlertEvent::RolledBack
        | AlertEvent::Aborted
        | AlertEvent::GitReverted
        | AlertEvent::GitRevertBlocked => {
            status.aborted_at.as_ref()?;
            let index = usize::try_from(status.current_step_index.unwrap_or(0)).unwrap_or(0);
            let before = &c.steps[..index.min(c.steps.len())];
            let last = before
                .iter()
                .filter_map(|s| match s {
                    CanaryStep::SetWeight(w) => Some(*w),
                    _ => None,
                })
                .next_back()
                .unwrap_or(0);
            Some(last)
        }
        _ => None,
    }
}

async fn images_by_hash(shared: &Shared, ns: &str, rollout: &str) -> BTreeMap<String, Vec<String>> {
    let api: Api<ReplicaSet> = Api::namespaced(shared.client.clone(), ns);
    let lp = ListParams::default().labels(&format!("{ROLLOUT_LABEL}={rollout}"));
    let Ok(list) = api.list(&lp).await else {
        return BTreeMap::new();
    };
    list.items
        .into_iter()
        .filter_map(|rs| {
            let hash = rs.labels().get(POD_TEMPLATE_HASH_LABEL)?.clone();
            let images = rs
                .spec?
                .template?
                .spec?
                .containers
                .into_iter()
                .map(|c| format!("{}={}", c.name, c.image.unwrap_or_default()))
                .collect();
            Some((hash, images))
        })
        .collect()
}

/// The AnalysisRun the Event names (`AnalysisRun NAME ...`), else the unsuccessful run the
/// Rollout's status names.
fn run_name(message: &str, status: &RolloutStatus, want: &[AnalysisPhase]) -> Option<String> {
    if let Some(rest) = message.split("AnalysisRun ").nth(1)
        && let Some(name) = rest.split_whitespace().next()
    {
        return Some(name.trim_end_matches(':').to_owned());
    }
    let canary = status.canary.clone().unwrap_or_default();
    let bg = status.blue_green.clone().unwrap_or_default();
    [
        canary.current_step_analysis_run_status,
        canary.current_background_analysis_run_status,
        bg.pre_promotion_analysis_run_status,
        bg.post_promotion_analysis_run_status,
    ]
    .into_iter()
    .flatten()
    .find(|r| want.contains(&r.status))
    .map(|r| r.name)
}

async fn analysis_evidence(
    shared: &Shared,
    ns: &str,
    message: &str,
    status: &RolloutStatus,
    event: AlertEvent,
) -> Option<AnalysisEvidence> {
    let want: &[AnalysisPhase] = if event == AlertEvent::Paused {
        &[AnalysisPhase::Inconclusive]
    } else {
        &[AnalysisPhase::Failed, AnalysisPhase::Error]
    };
    let name = run_name(message, status, want)?;
    let api: Api<AnalysisRun> = Api::namespaced(shared.client.clone(), ns);
    let run = api.get_opt(&name).await.ok()??;
    evidence_from_run(&run, want)
}

/// The deciding metric of a run: its last measurement, the condition it broke, and its count
/// against the limit.
pub fn evidence_from_run(run: &AnalysisRun, want: &[AnalysisPhase]) -> Option<AnalysisEvidence> {
    let status = run.status.as_ref()?;
    let result: &MetricResult = want.iter().find_map(|phase| {
        status
            .metric_results
            .iter()
            .find(|m| !m.dry_run && m.phase == *phase)
    })?;
    let metric = run.spec.metrics.iter().find(|m| m.name == result.name);
    let measurement = result
        .measurements
        .iter()
        .rev()
        .find(|m| m.phase == result.phase)
        .or(result.measurements.last());
    let broke_failure = measurement
        .and_then(|m| m.message.as_deref())
        .is_some_and(|m| m.contains("failureCondition"));
    let condition = metric.and_then(|m| {
        if result.phase == AnalysisPhase::Error {
            return None;
        }
        match (&m.success_condition, &m.failure_condition) {
            (_, Some(f)) if broke_failure => Some(format!("failureCondition: {f}")),
            (Some(s), _) => Some(format!("successCondition: {s}")),
            (None, Some(f)) => Some(format!("failureCondition: {f}")),
            (None, None) => None,
        }
    });
    let (failures, limit) = match result.phase {
        AnalysisPhase::Error => (
            result.consecutive_error,
            metric.map_or(crate::api::analysis::DEFAULT_CONSECUTIVE_ERROR_LIMIT, |m| {
                m.consecutive_error_limit()
            }),
        ),
        AnalysisPhase::Inconclusive => (
            result.inconclusive,
            metric.map_or(0, |m| m.inconclusive_limit()),
        ),
        _ => (result.failed, metric.map_or(0, |m| m.failure_limit())),
    };
    Some(AnalysisEvidence {
        run: run.name_any(),
        metric: result.name.clone(),
        value: measurement.and_then(|m| m.value.clone()),
        condition,
        failures,
        limit,
        message: result
            .message
            .clone()
            .or_else(|| measurement.and_then(|m| m.message.clone())),
    })
}

struct JobRef<'a> {
    provider: &'a AlertProvider,
    alert: &'a Alert,
}

/// Records the outcome of each alert (dedupe in the provider's status, an Event when it failed)
/// and each retry (in `pendingAlerts`, for a restart to resume from).
struct Recorder {
    shared: Arc<Shared>,
}

impl DeliveryReport for Recorder {
    fn report<'a>(&'a self, job: &'a Job, outcome: &'a Outcome) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let api: Api<AlertProvider> =
                Api::namespaced(self.shared.client.clone(), &job.target.namespace);
            let Ok(Some(provider)) = api.get_opt(&job.target.name).await else {
                return;
            };
            let job_ref = JobRef {
                provider: &provider,
                alert: &job.alert,
            };
            let (result, ready) = match outcome {
                Outcome::Delivered { attempts } => {
                    crate::telemetry::global().alert("delivered");
                    tracing::info!(provider = %job.target.name, event = %job.alert.event, rollout = %job.alert.rollout, attempts, "alert delivered");
                    let ready = Ready {
                        holds: true,
                        reason: REASON_DELIVERED,
                        message: format!("The last alert ({}) was delivered", job.alert.event),
                    };
                    (SentAlertOutcome::Delivered, ready)
                }
                Outcome::Failed { attempts, error } => {
                    crate::telemetry::global().alert("failed");
                    tracing::warn!(provider = %job.target.name, event = %job.alert.event, rollout = %job.alert.rollout, attempts, error = %error, "alert not delivered");
                    let why = format!("not delivered after {attempts} attempts: {}", chain(error));
                    record_failure(&self.shared, &job_ref, &why).await;
                    let ready = Ready {
                        holds: false,
                        reason: REASON_DELIVERY_FAILED,
                        message: format!("The last alert ({}) was {why}", job.alert.event),
                    };
                    (SentAlertOutcome::Failed, ready)
                }
            };
            remember(&self.shared, &provider, &job.alert, result, ready).await;
        })
    }

    fn retrying<'a>(&'a self, job: &'a Job, retry: &'a Retrying) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let error = chain(&retry.error);
            let next = Time(retry.next_attempt_at);
            let key = job.alert.key.clone();
            let message = format!(
                "The {} alert for Rollout {}/{} is waiting: {error}; retrying until {}",
                job.alert.event,
                job.alert.namespace,
                job.alert.rollout,
                job.since
                    .checked_add(
                        jiff::SignedDuration::try_from(self.shared.give_up_after)
                            .unwrap_or(jiff::SignedDuration::MAX)
                    )
                    .unwrap_or(Timestamp::MAX)
            );
            update_status(
                &self.shared,
                &job.target.namespace,
                &job.target.name,
                |status, generation| {
                    let Some(entry) = status.pending_alerts.iter_mut().find(|a| a.key == key)
                    else {
                        // Delivered or given up meanwhile by another writer: nothing to record.
                        return;
                    };
                    entry.attempts = retry.attempts;
                    entry.next_attempt_at = Some(next.clone());
                    entry.last_error = Some(error.clone());
                    set_ready(
                        status,
                        Ready {
                            holds: false,
                            reason: REASON_RETRYING,
                            message: message.clone(),
                        },
                        generation,
                    );
                },
            )
            .await;
        })
    }
}

/// An error and its sources, one after the other.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// Whether the pending record was written.
enum Persisted {
    /// It is in `pendingAlerts` now.
    Yes,
    /// `pendingAlerts` is full.
    Full,
    /// The write failed; the alert is sent anyway, at least while this process runs.
    Unknown,
}

/// Adds the job to the provider's `pendingAlerts`.
async fn persist_pending(shared: &Shared, p: &AlertProvider, job: &Job) -> Persisted {
    let alert = match serde_json::to_value(&job.alert) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "encoding a pending alert failed");
            return Persisted::Unknown;
        }
    };
    let entry = PendingAlert {
        key: job.alert.key.clone(),
        event: job.alert.event,
        rollout: job.alert.rollout.clone(),
        since: Time(job.since),
        attempts: job.attempts,
        next_attempt_at: None,
        last_error: None,
        alert,
    };
    let mut full = false;
    let written = update_status(
        shared,
        &p.namespace().unwrap_or_default(),
        &p.name_any(),
        |status, _| {
            full = false;
            if status.knows(&entry.key) {
                return;
            }
            if status.pending_alerts.len() >= PENDING_ALERTS_LIMIT {
                full = true;
                return;
            }
            status.pending_alerts.push(entry.clone());
        },
    )
    .await;
    match (full, written) {
        (true, _) => Persisted::Full,
        (false, true) => Persisted::Yes,
        (false, false) => Persisted::Unknown,
    }
}

async fn record_failure(shared: &Shared, job: &JobRef<'_>, why: &str) {
    let message = format!(
        "The {} alert for Rollout {}/{} was {why}",
        job.alert.event, job.alert.namespace, job.alert.rollout
    );
    record_event(shared, job, REASON_DELIVERY_FAILED, &message).await;
}

/// The provider's `Ready` condition after an alert: whether the last one got through.
#[derive(Clone)]
struct Ready {
    holds: bool,
    reason: &'static str,
    message: String,
}

/// Moves the alert from the provider's `pendingAlerts` to `sentAlerts`, keeping the newest
/// ones, and sets `Ready`.
async fn remember(
    shared: &Shared,
    provider: &AlertProvider,
    alert: &Alert,
    outcome: SentAlertOutcome,
    ready: Ready,
) {
    update_status(
        shared,
        &provider.namespace().unwrap_or_default(),
        &provider.name_any(),
        |status, generation| {
            status.pending_alerts.retain(|a| a.key != alert.key);
            if status.sent_alerts.iter().any(|a| a.key == alert.key) {
                return;
            }
            status.sent_alerts.push(SentAlert {
                key: alert.key.clone(),
                event: alert.event,
                rollout: alert.rollout.clone(),
                outcome,
                time: Time(Timestamp::now()),
            });
            let excess = status.sent_alerts.len().saturating_sub(SENT_ALERTS_LIMIT);
            status.sent_alerts.drain(..excess);
            set_ready(status, ready.clone(), generation);
        },
    )
    .await;
}

fn set_ready(status: &mut AlertProviderStatus, ready: Ready, generation: Option<i64>) {
    conditions::set(
        &mut status.conditions,
        conditions::new(
            types::READY,
            ConditionStatus::from(ready.holds),
            ready.reason,
            ready.message,
            Timestamp::now(),
            generation,
        ),
    );
    status.observed_generation = generation;
}

/// Reads the provider's status, lets `change` edit it, and writes it back through the status
/// subresource only when it changed (retrying on conflicts). False when the provider is gone or
/// the write failed.
async fn update_status(
    shared: &Shared,
    ns: &str,
    name: &str,
    mut change: impl FnMut(&mut AlertProviderStatus, Option<i64>),
) -> bool {
    let _one_writer = shared.status_lock.lock().await;
    let api: Api<AlertProvider> = Api::namespaced(shared.client.clone(), ns);
    for _ in 0..5 {
        let mut fresh = match api.get_opt(name).await {
            Ok(Some(p)) => p,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(provider = %name, error = %e, "reading an AlertProvider failed");
                return false;
            }
        };
        let before = fresh.status.clone().unwrap_or_default();
        let mut status = before.clone();
        change(&mut status, fresh.metadata.generation);
        if status == before {
            return true;
        }
        fresh.status = Some(status);
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        match api.replace_status(name, &pp, &fresh).await {
            Ok(_) => return true,
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => {
                tracing::warn!(provider = %name, error = %e, "writing an AlertProvider's status failed");
                return false;
            }
        }
    }
    false
}

/// Records a core/v1 Event on the AlertProvider. Its name follows from the alert, so the same
/// failure is recorded once.
async fn record_event(shared: &Shared, job: &JobRef<'_>, reason: &str, message: &str) {
    let ns = job.provider.namespace().unwrap_or_default();
    let provider = job.provider.name_any();
    let h = crate::fnv::fnv1a_32(reason.bytes().chain(job.alert.key.bytes()));
    let base: String = provider.chars().take(200).collect();
    let involved = ObjectReference {
        api_version: Some(AlertProvider::api_version(&()).into_owned()),
        kind: Some("AlertProvider".into()),
        name: Some(provider),
        namespace: Some(ns),
        uid: job.provider.metadata.uid.clone(),
        ..Default::default()
    };
    let event = crate::events::NewEvent {
        name: format!("{base}.alert-{h:08x}"),
        reason,
        message,
        warning: true,
    };
    let reporter = crate::events::Reporter {
        field_manager: FIELD_MANAGER,
        controller: "weir.io/alert-controller",
    };
    if let Err(e) =
        crate::events::record(&shared.client, reporter, involved, event, Timestamp::now()).await
    {
        tracing::warn!(error = %e, "recording an alert Event failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn abort_events_tell_weir_from_a_person() {
        let cases = [
            (
                "Rollout aborted: AnalysisRun web-x-step1-3 Failed: error-rate: [0.5] failed",
                None,
                AlertEvent::RolledBack,
            ),
            (
                "ProgressDeadlineExceeded: the canary did not get 2 ready pods within 600s",
                None,
                AlertEvent::RolledBack,
            ),
            (
                "Rollout aborted: traffic moved back to stable revision abc",
                Some("RolloutAborted"),
                AlertEvent::Aborted,
            ),
            (
                "Rollout aborted: traffic moved back to stable revision abc",
                Some("AnalysisRunFailed"),
                AlertEvent::RolledBack,
            ),
        ];
        for (message, progressing, want) in cases {
            assert_eq!(
                classify("RolloutAborted", message, true, progressing),
                Some(want),
                "{message}"
            );
        }
    }

    #[test]
    fn only_pauses_that_wait_for_a_person_alert() {
        assert_eq!(
            classify(
                "RolloutPaused",
                "Rollout paused at step 2/3 until promoted",
                false,
                None
            ),
            Some(AlertEvent::Paused)
        );
        assert_eq!(
            classify(
                "RolloutPaused",
                "Rollout paused: AnalysisRun r Inconclusive: x",
                true,
                None
            ),
            Some(AlertEvent::Paused)
        );
        assert_eq!(
            classify(
                "RolloutPaused",
                "Rollout paused at step 2/3 for 30s",
                false,
                None
            ),
            None
        );
        assert_eq!(
            classify("TrafficWeightUpdated", "weight 50", false, None),
            None
        );
        assert_eq!(
            classify("GitReverted", "reverted abc in def", false, None),
            Some(AlertEvent::GitReverted)
        );
        assert_eq!(
            classify("GitRevertBlocked", "touches other files", true, None),
            Some(AlertEvent::GitRevertBlocked)
        );
    }

    fn run(yaml: &str) -> AnalysisRun {
        serde_saphyr::from_str(yaml).unwrap()
    }

    const FAILED_RUN: &str = r#"
apiVersion: weir.io/v1alpha1
kind: AnalysisRun
metadata: {name: web-abc-step1-3, namespace: shop}
spec:
  metrics:
    - name: latency
      successCondition: "result[0] < 0.3"
      provider: {prometheus: {address: "http://p", query: "q"}}
    - name: error-rate
      successCondition: "result[0] < 0.05"
      failureCondition: "result[0] > 0.2"
      failureLimit: 2
      provider: {prometheus: {address: "http://p", query: "q"}}
status:
  phase: Failed
  metricResults:
    - name: latency
      phase: Successful
      count: 3
      successful: 3
    - name: error-rate
      phase: Failed
      count: 4
      failed: 3
      successful: 1
      message: "error-rate: [0.5] met failureCondition \"result[0] > 0.2\" (failed 3 > failureLimit 2)"
      measurements:
        - {phase: Successful, value: "[0.01]"}
        - {phase: Failed, value: "[0.5]", message: "error-rate: [0.5] met failureCondition \"result[0] > 0.2\""}
        - {phase: Failed, value: "[0.45]", message: "error-rate: [0.45] met failureCondition \"result[0] > 0.2\""}
"#;

    #[test]
    fn evidence_names_the_failed_metric_its_last_failed_value_and_the_condition_it_met() {
        let e = evidence_from_run(
            &run(FAILED_RUN),
            &[AnalysisPhase::Failed, AnalysisPhase::Error],
        )
        .unwrap();
        assert_eq!(e.run, "web-abc-step1-3");
        assert_eq!(e.metric, "error-rate");
        assert_eq!(e.value.as_deref(), Some("[0.45]"));
        assert_eq!(
            e.condition.as_deref(),
            Some("failureCondition: result[0] > 0.2")
        );
        assert_eq!((e.failures, e.limit), (3, 2));
        assert!(e.message.unwrap().contains("failureLimit 2"));
    }

    #[test]
    fn a_dry_run_metric_never_explains_a_rollback() {
        let yaml = FAILED_RUN.replace(
            "      phase: Failed\n      count: 4",
            "      phase: Failed\n      dryRun: true\n      count: 4",
        );
        assert_eq!(
            evidence_from_run(&run(&yaml), &[AnalysisPhase::Failed]),
            None
        );
    }

    #[test]
    fn the_sequence_comes_from_the_rollout_controllers_event_names_only() {
        let ev = |name: &str, component: &str| CoreEvent {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            reporting_component: Some(component.into()),
            ..Default::default()
        };
        assert_eq!(
            rollout_event_seq(&ev("web.1234abcd.7-0badf00d", ROLLOUT_CONTROLLER)),
            Some(7)
        );
        assert_eq!(
            rollout_event_seq(&ev("my.web.v2.1234abcd.12-00ff00ff", ROLLOUT_CONTROLLER)),
            Some(12)
        );
        assert_eq!(
            rollout_event_seq(&ev("web.1234abcd.7-0badf00d", "weir.io/gitsync")),
            None
        );
    }
}
