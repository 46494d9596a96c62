//! Sending alerts without ever holding up a reconcile, until they get through.
//!
//! [`Delivery::enqueue`] never waits: it puts the alert on a bounded queue, or drops it and counts
//! the drop when the queue is full. A worker takes alerts off the queue and gives each its own
//! task. At most [`DeliveryPolicy::concurrency`] requests are in flight at once, and a task holds
//! no slot while it waits to retry, so a dead receiver never holds up alerts to the others. Each
//! request has a timeout. 429 and 5xx answers, timeouts and connection failures are retried with
//! capped exponential backoff, never sooner than the server's `Retry-After`, until
//! [`DeliveryPolicy::give_up_after`] has passed since the alert was raised (or
//! [`DeliveryPolicy::max_attempts`] requests were made). Every retry is told to the
//! [`DeliveryReport`] (the alert controller records it in the provider's status, so a restart
//! resumes where this process stopped), and every alert ends in exactly one [`Outcome`].
//! When to try next is decided by a pure function, [`DeliveryPolicy::next_attempt`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use jiff::{SignedDuration, Timestamp};
use reqwest::StatusCode;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use super::{Alert, NotifyError, Payload, ProviderSettings, notifier_for};
use crate::api::alert_provider::AlertProviderType;

/// Alerts waiting to be sent before new ones are dropped.
pub const DEFAULT_QUEUE_CAPACITY: usize = 256;

/// Limits of the delivery worker.
#[derive(Clone, Debug)]
pub struct DeliveryPolicy {
    /// Alerts waiting to be sent before new ones are dropped.
    pub queue_capacity: usize,
    /// Alerts being sent at once.
    pub concurrency: usize,
    /// Time allowed for one request, answer included.
    pub timeout: Duration,
    /// Requests per alert, the first one included (`u32::MAX`: only
    /// [`DeliveryPolicy::give_up_after`] bounds them).
    pub max_attempts: u32,
    /// Wait before the first retry; it doubles for every further one.
    pub first_backoff: Duration,
    /// Longest wait between two attempts that backoff alone chooses.
    pub max_backoff: Duration,
    /// Longest `Retry-After` honoured; a longer one fails the alert instead of holding it.
    pub max_retry_after: Duration,
    /// How long after the alert was raised weir keeps retrying; an attempt that would come later
    /// is not made and the alert is given up.
    pub give_up_after: Duration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            concurrency: 8,
            timeout: Duration::from_secs(10),
            max_attempts: u32::MAX,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            max_retry_after: Duration::from_secs(3600),
            give_up_after: DEFAULT_GIVE_UP_AFTER,
        }
    }
}

/// How long weir keeps retrying an alert by default: a receiver down for less than a day gets
/// every alert once it is back.
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Why no further attempt is made after a retryable failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GiveUp {
    /// [`DeliveryPolicy::max_attempts`] requests were made.
    Attempts,
    /// The service asked to wait longer than [`DeliveryPolicy::max_retry_after`].
    RetryAfterTooLong(Duration),
    /// The next attempt would come after [`DeliveryPolicy::give_up_after`].
    Expired,
}

impl DeliveryPolicy {
    /// The wait before attempt `attempt + 1` when the server named none.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.first_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// When to make the next request after `attempts` requests failed in a way that retrying
    /// may fix, the last one answered with `retry_after` (if any); or why not to. `since` is
    /// when the alert was raised.
    pub fn next_attempt(
        &self,
        attempts: u32,
        retry_after: Option<Duration>,
        since: Timestamp,
        now: Timestamp,
    ) -> Result<Timestamp, GiveUp> {
        if attempts >= self.max_attempts {
            return Err(GiveUp::Attempts);
        }
        let backoff = self.backoff(attempts);
        let delay = match retry_after {
            Some(a) if a > self.max_retry_after => return Err(GiveUp::RetryAfterTooLong(a)),
            Some(a) => a.max(backoff),
            None => backoff,
        };
        let at = now
            .checked_add(SignedDuration::try_from(delay).map_err(|_| GiveUp::Expired)?)
            .map_err(|_| GiveUp::Expired)?;
        let deadline = since
            .checked_add(
                SignedDuration::try_from(self.give_up_after).unwrap_or(SignedDuration::MAX),
            )
            .unwrap_or(Timestamp::MAX);
        if at > deadline {
            return Err(GiveUp::Expired);
        }
        Ok(at)
    }
}

/// Where one alert goes: the provider, its URL and settings. `Debug` never shows the URL.
#[derive(Clone)]
pub struct Target {
    /// Namespace of the AlertProvider.
    pub namespace: String,
    /// Name of the AlertProvider.
    pub name: String,
    /// The kind of service.
    pub kind: AlertProviderType,
    /// The webhook URL; often a credential in itself.
    pub url: String,
    /// Channel, username, token and signing key.
    pub settings: ProviderSettings,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &"<redacted>")
            .field("settings", &self.settings)
            .finish()
    }
}

/// One alert for one provider.
#[derive(Clone, Debug)]
pub struct Job {
    /// The alert.
    pub alert: Alert,
    /// The provider.
    pub target: Target,
    /// When weir accepted the alert; [`DeliveryPolicy::give_up_after`] counts from here.
    pub since: Timestamp,
    /// Requests already made (by an earlier process, when resumed).
    pub attempts: u32,
    /// No request before this time (a backoff or `Retry-After` an earlier process chose).
    pub not_before: Option<Timestamp>,
}

impl Job {
    /// A new alert, accepted now, never tried.
    pub fn new(alert: Alert, target: Target) -> Self {
        Job {
            alert,
            target,
            since: Timestamp::now(),
            attempts: 0,
            not_before: None,
        }
    }
}

/// Why an alert was not delivered. Messages never contain the URL or any secret.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The payload could not be built.
    #[error("building the payload")]
    Payload(#[source] NotifyError),
    /// The receiver answered with a status that retrying will not change, or kept answering
    /// 429/5xx until the attempts ran out.
    #[error("the receiver answered HTTP {0}")]
    Status(u16),
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The request failed before an answer (connection refused, TLS, DNS).
    #[error("the request failed: {0}")]
    Transport(String),
    /// The receiver asked to wait longer than weir holds an alert.
    #[error("the receiver asked to retry after {0:?}, longer than weir waits")]
    RetryAfterTooLong(Duration),
    /// Still failing when the time weir retries an alert ran out.
    #[error("gave up {} after the alert was raised", crate::api::duration::DurationString::from_duration(*.after).as_str())]
    Expired {
        /// [`DeliveryPolicy::give_up_after`].
        after: Duration,
        /// The last failure.
        #[source]
        last: Box<DeliveryError>,
    },
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
}

/// How an alert ended.
#[derive(Debug)]
pub enum Outcome {
    /// The receiver accepted it (2xx).
    Delivered {
        /// Requests made.
        attempts: u32,
    },
    /// It was given up.
    Failed {
        /// Requests made.
        attempts: u32,
        /// The last error.
        error: DeliveryError,
    },
}

/// A failed request that will be repeated.
#[derive(Debug)]
pub struct Retrying {
    /// Requests made so far.
    pub attempts: u32,
    /// Why the last one failed.
    pub error: DeliveryError,
    /// When the next one will be made.
    pub next_attempt_at: Timestamp,
}

/// Told how every alert ended, and of every retry; the alert controller records both (dedupe,
/// resumption after a restart, Events).
pub trait DeliveryReport: Send + Sync {
    /// Called once per alert, after its last attempt.
    fn report<'a>(&'a self, job: &'a Job, outcome: &'a Outcome) -> BoxFuture<'a, ()>;

    /// Called after each failed request that will be repeated, before waiting for the next.
    fn retrying<'a>(&'a self, job: &'a Job, retry: &'a Retrying) -> BoxFuture<'a, ()> {
        let _ = (job, retry);
        Box::pin(async {})
    }
}

/// Counters of the delivery worker, readable at any time.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    enqueued: AtomicU64,
    dropped: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
}

/// A snapshot of [`DeliveryStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Alerts accepted onto the queue.
    pub enqueued: u64,
    /// Alerts dropped because the queue was full.
    pub dropped: u64,
    /// Alerts delivered.
    pub delivered: u64,
    /// Alerts given up.
    pub failed: u64,
    /// Requests repeated after a retryable failure.
    pub retries: u64,
}

impl DeliveryStats {
    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            enqueued: self.enqueued.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }
}

/// The queue was full; the alert was dropped and counted.
#[derive(Debug, thiserror::Error)]
#[error("the alert queue is full ({capacity} alerts waiting)")]
pub struct QueueFull {
    /// The queue's capacity.
    pub capacity: usize,
    /// The alert that did not fit.
    pub job: Box<Job>,
}

/// The handle to the delivery worker. The worker, and every alert it is sending, stops when the
/// last handle is dropped: alerts the controller recorded as pending are resumed by the next one.
#[derive(Clone)]
pub struct Delivery {
    tx: mpsc::Sender<Job>,
    stats: Arc<DeliveryStats>,
    capacity: usize,
    _worker: Arc<WorkerGuard>,
}

/// Stops the worker and every alert task it started, at once, when the last handle goes: a
/// stopped controller must not go on sending beside the one that replaces it.
struct WorkerGuard {
    worker: tokio::task::AbortHandle,
    sending: Arc<std::sync::Mutex<JoinSet<()>>>,
}

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        self.worker.abort();
        self.sending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .abort_all();
    }
}

/// Aborts a task when dropped.
pub struct AbortOnDrop(pub tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Delivery {
    /// Starts the worker on the current Tokio runtime.
    pub fn start(policy: DeliveryPolicy, report: Arc<dyn DeliveryReport>) -> Self {
        let (tx, rx) = mpsc::channel(policy.queue_capacity.max(1));
        let stats = Arc::new(DeliveryStats::default());
        let capacity = policy.queue_capacity.max(1);
        let sending = Arc::new(std::sync::Mutex::new(JoinSet::new()));
        let worker = tokio::spawn(work(rx, policy, report, stats.clone(), sending.clone()));
        Delivery {
            tx,
            stats,
            capacity,
            _worker: Arc::new(WorkerGuard {
                worker: worker.abort_handle(),
                sending,
            }),
        }
    }

    /// Queues an alert without waiting. When the queue is full the alert is dropped, counted, and
    /// handed back in the error so the caller can record the drop.
    pub fn enqueue(&self, job: Job) -> Result<(), QueueFull> {
        match self.tx.try_send(job) {
            Ok(()) => {
                self.stats.enqueued.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                Err(QueueFull {
                    capacity: self.capacity,
                    job: Box::new(job),
                })
            }
        }
    }

    /// Queues an alert, waiting for room when the queue is full: for alerts resumed at start,
    /// which are already recorded and should not be dropped for arriving all at once. Fails only
    /// when the worker has stopped.
    pub async fn enqueue_waiting(&self, job: Job) -> Result<(), QueueFull> {
        match self.tx.send(job).await {
            Ok(()) => {
                self.stats.enqueued.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(mpsc::error::SendError(job)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                Err(QueueFull {
                    capacity: self.capacity,
                    job: Box::new(job),
                })
            }
        }
    }

    /// The counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }
}

async fn work(
    mut rx: mpsc::Receiver<Job>,
    policy: DeliveryPolicy,
    report: Arc<dyn DeliveryReport>,
    stats: Arc<DeliveryStats>,
    sending: Arc<std::sync::Mutex<JoinSet<()>>>,
) {
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .connect_timeout(policy.timeout)
        .build()
        .map_err(|e| e.without_url().to_string());
    let limit = Arc::new(Semaphore::new(policy.concurrency.max(1)));
    let policy = Arc::new(policy);
    while let Some(job) = rx.recv().await {
        let (client, policy, report, stats, limit) = (
            client.clone(),
            policy.clone(),
            report.clone(),
            stats.clone(),
            limit.clone(),
        );
        let mut sending = sending.lock().unwrap_or_else(|p| p.into_inner());
        // Forget the alerts that ended; their outcomes were reported by their tasks.
        while sending.try_join_next().is_some() {}
        sending.spawn(async move {
            let outcome = match client {
                Ok(client) => {
                    let ctx = Sender {
                        client: &client,
                        policy: &policy,
                        limit: &limit,
                        stats: &stats,
                        report: report.as_ref(),
                    };
                    ctx.send(&job).await
                }
                Err(e) => Outcome::Failed {
                    attempts: job.attempts,
                    error: DeliveryError::Client(e),
                },
            };
            match &outcome {
                Outcome::Delivered { .. } => stats.delivered.fetch_add(1, Ordering::Relaxed),
                Outcome::Failed { .. } => stats.failed.fetch_add(1, Ordering::Relaxed),
            };
            report.report(&job, &outcome).await;
        });
    }
}

/// What one attempt came to.
enum Attempt {
    Done,
    Retry {
        error: DeliveryError,
        after: Option<Duration>,
    },
    Fail(DeliveryError),
}

/// Sleeps until `at` by the wall clock (the time may come from another process's status).
async fn sleep_until(at: Timestamp) {
    let wait = at.duration_since(Timestamp::now());
    if let Ok(wait) = Duration::try_from(wait) {
        tokio::time::sleep(wait).await;
    }
}

/// Everything one alert's task shares with the others.
struct Sender<'a> {
    client: &'a reqwest::Client,
    policy: &'a DeliveryPolicy,
    limit: &'a Semaphore,
    stats: &'a DeliveryStats,
    report: &'a dyn DeliveryReport,
}

impl Sender<'_> {
    async fn send(&self, job: &Job) -> Outcome {
        let notifier = notifier_for(job.target.kind, job.target.settings.clone());
        let payload = match notifier.payload(&job.alert) {
            Ok(p) => p,
            Err(e) => {
                return Outcome::Failed {
                    attempts: job.attempts,
                    error: DeliveryError::Payload(e),
                };
            }
        };
        if let Some(at) = job.not_before {
            sleep_until(at).await;
        }
        let mut attempts = job.attempts;
        loop {
            attempts = attempts.saturating_add(1);
            let result = {
                // A slot only for the request itself: waiting to retry holds none.
                let Ok(_slot) = self.limit.acquire().await else {
                    return Outcome::Failed {
                        attempts,
                        error: DeliveryError::Client("the worker stopped".into()),
                    };
                };
                attempt_once(self.client, self.policy, &job.target.url, &payload).await
            };
            let (error, after) = match result {
                Attempt::Done => return Outcome::Delivered { attempts },
                Attempt::Fail(error) => return Outcome::Failed { attempts, error },
                Attempt::Retry { error, after } => (error, after),
            };
            let next = self
                .policy
                .next_attempt(attempts, after, job.since, Timestamp::now());
            let next_attempt_at = match next {
                Ok(at) => at,
                Err(give_up) => {
                    let error = match give_up {
                        GiveUp::Attempts => error,
                        GiveUp::RetryAfterTooLong(a) => DeliveryError::RetryAfterTooLong(a),
                        GiveUp::Expired => DeliveryError::Expired {
                            after: self.policy.give_up_after,
                            last: Box::new(error),
                        },
                    };
                    return Outcome::Failed { attempts, error };
                }
            };
            tracing::debug!(provider = %job.target.name, attempts, %next_attempt_at, error = %error, "alert delivery will be retried");
            let retry = Retrying {
                attempts,
                error,
                next_attempt_at,
            };
            self.report.retrying(job, &retry).await;
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            sleep_until(next_attempt_at).await;
        }
    }
}

/// A request error and its causes ("connection refused"), without the URL: reqwest names the URL
/// only in its own message, which `without_url` drops; the causes below it name none.
fn transport_error(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

async fn attempt_once(
    client: &reqwest::Client,
    policy: &DeliveryPolicy,
    url: &str,
    payload: &Payload,
) -> Attempt {
    let mut req = client
        .post(url)
        .timeout(policy.timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(payload.body.clone());
    for (name, value) in &payload.headers {
        req = req.header(name.as_str(), value.as_str());
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return Attempt::Retry {
                error: DeliveryError::Timeout(policy.timeout),
                after: None,
            };
        }
        Err(e) if e.is_builder() => {
            return Attempt::Fail(DeliveryError::Transport(transport_error(e)));
        }
        Err(e) => {
            return Attempt::Retry {
                error: DeliveryError::Transport(transport_error(e)),
                after: None,
            };
        }
    };
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    // Read the body so the connection can be reused, within the same timeout.
    let _ = tokio::time::timeout(policy.timeout, resp.bytes()).await;
    if status.is_success() {
        Attempt::Done
    } else if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        Attempt::Retry {
            error: DeliveryError::Status(status.as_u16()),
            after: retry_after,
        }
    } else {
        Attempt::Fail(DeliveryError::Status(status.as_u16()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = DeliveryPolicy {
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            ..DeliveryPolicy::default()
        };
        let got: Vec<u128> = (1..=5).map(|a| p.backoff(a).as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 500, 500]);
    }

    #[test]
    fn the_next_attempt_backs_off_honours_retry_after_and_stops_at_the_deadline() {
        let p = DeliveryPolicy {
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            max_retry_after: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(24 * 3600),
            ..DeliveryPolicy::default()
        };
        let since: Timestamp = "2026-11-22T00:00:00Z".parse().unwrap();
        let at = |secs: i64| since.checked_add(SignedDuration::from_secs(secs)).unwrap();
        // (attempts so far, Retry-After, now in seconds after `since`, expected next attempt)
        type Case = (u32, Option<u64>, i64, Result<i64, GiveUp>);
        let cases: [Case; 9] = [
            (1, None, 0, Ok(1)),
            (2, None, 10, Ok(12)),
            (4, None, 100, Ok(108)),
            (20, None, 1000, Ok(1300)),
            (1, Some(30), 0, Ok(30)),
            (9, Some(30), 0, Ok(256)),
            (
                1,
                Some(7200),
                0,
                Err(GiveUp::RetryAfterTooLong(Duration::from_secs(7200))),
            ),
            (300, None, 24 * 3600 - 300, Ok(24 * 3600)),
            (300, None, 24 * 3600 - 299, Err(GiveUp::Expired)),
        ];
        for (attempts, retry_after, now, want) in cases {
            let got = p.next_attempt(
                attempts,
                retry_after.map(Duration::from_secs),
                since,
                at(now),
            );
            assert_eq!(
                got,
                want.map(at),
                "attempts {attempts}, retry-after {retry_after:?}, now +{now}s"
            );
        }
        let counted = DeliveryPolicy {
            max_attempts: 3,
            ..p.clone()
        };
        assert_eq!(counted.next_attempt(2, None, since, since), Ok(at(2)));
        assert_eq!(
            counted.next_attempt(3, None, since, since),
            Err(GiveUp::Attempts)
        );
    }

    #[test]
    fn target_debug_hides_the_url() {
        let t = Target {
            namespace: "ns".into(),
            name: "p".into(),
            kind: AlertProviderType::Slack,
            url: "https://hooks.example/T000/SECRET".into(),
            settings: ProviderSettings::default(),
        };
        assert!(!format!("{t:?}").contains("SECRET"));
    }
}
