//! Sending alerts without ever holding up a reconcile.
//!
//! [`Delivery::enqueue`] never waits: it puts the alert on a bounded queue, or drops it and counts
//! the drop when the queue is full. A worker takes alerts off the queue and sends each in its own
//! task (at most [`DeliveryPolicy::concurrency`] at once), so one slow receiver does not hold up
//! alerts to the others. Each request has a timeout. 429 and 5xx answers, timeouts and
//! connection failures are retried with exponential backoff, never sooner than the server's
//! `Retry-After`, up to [`DeliveryPolicy::max_attempts`]. Every alert ends in exactly one
//! [`Outcome`], handed to a [`DeliveryReport`]; a failure is reported once and then dropped, so it
//! never becomes an error loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::StatusCode;
use tokio::sync::{Semaphore, mpsc};

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
    /// Requests per alert, the first one included.
    pub max_attempts: u32,
    /// Wait before the first retry; it doubles for every further one.
    pub first_backoff: Duration,
    /// Longest wait between two attempts that backoff alone chooses.
    pub max_backoff: Duration,
    /// Longest `Retry-After` honoured; a longer one fails the alert instead of holding it.
    pub max_retry_after: Duration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            concurrency: 8,
            timeout: Duration::from_secs(10),
            max_attempts: 5,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(300),
        }
    }
}

impl DeliveryPolicy {
    /// The wait before attempt `attempt + 1` when the server named none.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.first_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
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

/// Told how every alert ended; the alert controller records it (dedupe, Events).
pub trait DeliveryReport: Send + Sync {
    /// Called once per alert, after its last attempt.
    fn report<'a>(&'a self, job: &'a Job, outcome: &'a Outcome) -> BoxFuture<'a, ()>;
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

/// The handle to the delivery worker.
#[derive(Clone)]
pub struct Delivery {
    tx: mpsc::Sender<Job>,
    stats: Arc<DeliveryStats>,
    capacity: usize,
}

impl Delivery {
    /// Starts the worker on the current Tokio runtime.
    pub fn start(policy: DeliveryPolicy, report: Arc<dyn DeliveryReport>) -> Self {
        let (tx, rx) = mpsc::channel(policy.queue_capacity.max(1));
        let stats = Arc::new(DeliveryStats::default());
        let capacity = policy.queue_capacity.max(1);
        tokio::spawn(work(rx, policy, report, stats.clone()));
        Delivery {
            tx,
            stats,
            capacity,
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
) {
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .connect_timeout(policy.timeout)
        .build()
        .map_err(|e| DeliveryError::Client(e.without_url().to_string()));
    let limit = Arc::new(Semaphore::new(policy.concurrency.max(1)));
    let policy = Arc::new(policy);
    while let Some(job) = rx.recv().await {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let (client, policy, report, stats) = (
            client.as_ref().map_err(|e| e.to_string()).cloned(),
            policy.clone(),
            report.clone(),
            stats.clone(),
        );
        tokio::spawn(async move {
            let outcome = match client {
                Ok(client) => send(&client, &policy, &job, &stats).await,
                Err(e) => Outcome::Failed {
                    attempts: 0,
                    error: DeliveryError::Client(e),
                },
            };
            match &outcome {
                Outcome::Delivered { .. } => stats.delivered.fetch_add(1, Ordering::Relaxed),
                Outcome::Failed { .. } => stats.failed.fetch_add(1, Ordering::Relaxed),
            };
            report.report(&job, &outcome).await;
            drop(permit);
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

async fn send(
    client: &reqwest::Client,
    policy: &DeliveryPolicy,
    job: &Job,
    stats: &DeliveryStats,
) -> Outcome {
    let notifier = notifier_for(job.target.kind, job.target.settings.clone());
    let payload = match notifier.payload(&job.alert) {
        Ok(p) => p,
        Err(e) => {
            return Outcome::Failed {
                attempts: 0,
                error: DeliveryError::Payload(e),
            };
        }
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let wait = match attempt_once(client, policy, &job.target.url, &payload).await {
            Attempt::Done => return Outcome::Delivered { attempts: attempt },
            Attempt::Fail(error) => {
                return Outcome::Failed {
                    attempts: attempt,
                    error,
                };
            }
            Attempt::Retry { error, after } => {
                if attempt >= policy.max_attempts {
                    return Outcome::Failed {
                        attempts: attempt,
                        error,
                    };
                }
                let backoff = policy.backoff(attempt);
                let delay = match after {
                    Some(a) if a > policy.max_retry_after => {
                        return Outcome::Failed {
                            attempts: attempt,
                            error: DeliveryError::RetryAfterTooLong(a),
                        };
                    }
                    Some(a) => a.max(backoff),
                    None => backoff,
                };
                tracing::debug!(provider = %job.target.name, attempt, ?delay, error = %error, "alert delivery will be retried");
                delay
            }
        };
        stats.retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(wait).await;
    }
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
            return Attempt::Fail(DeliveryError::Transport(e.without_url().to_string()));
        }
        Err(e) => {
            return Attempt::Retry {
                error: DeliveryError::Transport(e.without_url().to_string()),
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
