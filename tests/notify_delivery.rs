//! The delivery worker against receivers that fail: retries on 5xx, Retry-After on 429, a timeout
//! on a receiver that hangs, no retry on 4xx, a bounded queue that drops instead of waiting, a
//! dead receiver that holds up nobody else, a deadline after which an alert is given up, and an
//! alert resumed where an earlier process left it.

#[path = "support/alerts.rs"]
mod alerts;
#[path = "support/receiver.rs"]
mod receiver;
mod support;

use std::time::{Duration, Instant};

use receiver::{Answer, Receiver, unused_port};
use weir::api::alert_provider::AlertProviderType;
use weir::notify::ProviderSettings;
use weir::notify::delivery::{DeliveryPolicy, Job};

const WAIT: Duration = Duration::from_secs(20);

fn quick() -> DeliveryPolicy {
    DeliveryPolicy {
        first_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        timeout: Duration::from_secs(5),
        ..DeliveryPolicy::default()
    }
}

fn job(rx: &Receiver, key: &str) -> Job {
    Job::new(
        alerts::rolled_back(key),
        alerts::target(
            AlertProviderType::Slack,
            rx.url("/hook"),
            ProviderSettings::default(),
        ),
    )
}

#[tokio::test]
async fn two_server_errors_then_success_deliver_exactly_one_alert() {
    let rx = Receiver::scripted(vec![Answer::Status(500), Answer::Status(503)]).await;
    let (delivery, mut outcomes) = alerts::delivery(quick());
    delivery.enqueue(job(&rx, "a")).unwrap();
    let ended = outcomes.next(WAIT).await;
    assert!(ended.delivered, "{ended:?}");
    assert_eq!(ended.attempts, 3);
    let got = rx.requests();
    let answers: Vec<Option<u16>> = got.iter().map(|r| r.answered).collect();
    assert_eq!(answers, vec![Some(500), Some(503), Some(200)]);
    assert_eq!(rx.accepted().len(), 1, "exactly one alert delivered");
    assert!(
        got.windows(2).all(|w| w[0].body == w[1].body),
        "a retry sends the same alert"
    );
    let stats = delivery.stats();
    assert_eq!((stats.delivered, stats.failed, stats.retries), (1, 0, 2));
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let rx = Receiver::scripted(vec![Answer::TooManyRequests {
        retry_after_secs: 2,
    }])
    .await;
    let (delivery, mut outcomes) = alerts::delivery(quick());
    delivery.enqueue(job(&rx, "a")).unwrap();
    let ended = outcomes.next(WAIT).await;
    assert!(ended.delivered, "{ended:?}");
    let got = rx.requests();
    assert_eq!(got.len(), 2);
    let gap = got[1].at.duration_since(got[0].at);
    assert!(
        gap >= Duration::from_secs(2),
        "the retry came {gap:?} after a 429 with Retry-After: 2"
    );
}

#[tokio::test]
async fn a_retry_after_beyond_the_limit_fails_the_alert_instead_of_holding_it() {
    let rx = Receiver::scripted(vec![Answer::TooManyRequests {
        retry_after_secs: 3600,
    }])
    .await;
    let policy = DeliveryPolicy {
        max_retry_after: Duration::from_secs(60),
        ..quick()
    };
    let (delivery, mut outcomes) = alerts::delivery(policy);
    delivery.enqueue(job(&rx, "a")).unwrap();
    let ended = outcomes.next(WAIT).await;
    assert!(!ended.delivered);
    assert!(ended.error.unwrap().contains("retry after"));
    assert_eq!(rx.requests().len(), 1);
}

#[tokio::test]
async fn a_hanging_receiver_times_out_and_the_next_alert_still_goes_out() {
    let rx = Receiver::scripted(vec![Answer::Hang]).await;
    // One alert at a time, so the second can only go out once the first has given up.
    let policy = DeliveryPolicy {
        concurrency: 1,
        max_attempts: 1,
        timeout: Duration::from_millis(500),
        ..quick()
    };
    let (delivery, mut outcomes) = alerts::delivery(policy);
    let started = Instant::now();
    delivery.enqueue(job(&rx, "hangs")).unwrap();
    delivery.enqueue(job(&rx, "next")).unwrap();
    let first = outcomes.next(WAIT).await;
    assert_eq!(first.key, "hangs");
    assert!(!first.delivered);
    assert!(
        first.error.as_deref().unwrap().contains("no answer within"),
        "{first:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(500));
    let second = outcomes.next(WAIT).await;
    assert_eq!(second.key, "next");
    assert!(second.delivered, "{second:?}");
    assert_eq!(rx.accepted().len(), 1);
}

#[tokio::test]
async fn a_client_error_is_not_retried_and_names_no_url() {
    let rx = Receiver::scripted(vec![Answer::Status(404)]).await;
    let (delivery, mut outcomes) = alerts::delivery(quick());
    delivery.enqueue(job(&rx, "a")).unwrap();
    let ended = outcomes.next(WAIT).await;
    assert!(!ended.delivered);
    assert_eq!(ended.attempts, 1);
    let error = ended.error.unwrap();
    assert!(error.contains("404"), "{error}");
    assert!(
        !error.contains("/hook") && !error.contains("127.0.0.1"),
        "{error}"
    );
    assert_eq!(rx.requests().len(), 1);
}

#[tokio::test]
async fn an_unreachable_receiver_fails_without_leaking_its_url() {
    // A port that was free a moment ago: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (delivery, mut outcomes) = alerts::delivery(DeliveryPolicy {
        max_attempts: 2,
        ..quick()
    });
    let mut j = job(&Receiver::start().await, "a");
    j.target.url = format!("http://127.0.0.1:{port}/services/T000/SECRET-PATH");
    delivery.enqueue(j).unwrap();
    let ended = outcomes.next(WAIT).await;
    assert!(!ended.delivered);
    assert_eq!(ended.attempts, 2);
    let error = ended.error.unwrap();
    assert!(!error.contains("SECRET-PATH"), "{error}");
}

#[tokio::test]
async fn a_full_queue_drops_instead_of_waiting() {
    let rx = Receiver::scripted(vec![Answer::Hang; 8]).await;
    let policy = DeliveryPolicy {
        queue_capacity: 1,
        concurrency: 1,
        max_attempts: 1,
        timeout: Duration::from_secs(30),
        ..quick()
    };
    let (delivery, _outcomes) = alerts::delivery(policy);
    // Nothing takes an alert off the queue between these calls (one thread), and it holds one.
    let results: Vec<bool> = (0..4)
        .map(|i| delivery.enqueue(job(&rx, &format!("k{i}"))).is_ok())
        .collect();
    assert!(results.iter().any(|ok| !ok), "{results:?}");
    let stats = delivery.stats();
    assert!(stats.dropped >= 1);
    assert_eq!(stats.enqueued + stats.dropped, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_receiver_holds_up_no_alert_to_another() {
    // One request at a time: with the slot held while waiting to retry, the second alert could
    // never go out while the first keeps failing.
    let policy = DeliveryPolicy {
        concurrency: 1,
        ..quick()
    };
    let (delivery, mut outcomes) = alerts::delivery(policy);
    let alive = Receiver::start().await;
    let mut dead = job(&alive, "to-the-dead-one");
    dead.target.url = format!("http://127.0.0.1:{}/hook", unused_port());
    delivery.enqueue(dead).unwrap();
    support::wait_for("the dead receiver retried", WAIT, || async {
        (delivery.stats().retries >= 1).then_some(())
    })
    .await;
    delivery.enqueue(job(&alive, "to-the-live-one")).unwrap();
    let ended = outcomes.next(WAIT).await;
    assert_eq!(ended.key, "to-the-live-one");
    assert!(ended.delivered, "{ended:?}");
}

#[tokio::test]
async fn an_alert_still_failing_at_the_deadline_is_given_up_saying_so() {
    let rx = Receiver::scripted(vec![Answer::Status(503); 1000]).await;
    let policy = DeliveryPolicy {
        give_up_after: Duration::from_millis(300),
        ..quick()
    };
    let (delivery, mut outcomes) = alerts::delivery(policy);
    delivery.enqueue(job(&rx, "a")).unwrap();
    let ended = outcomes.next(WAIT).await;
    assert!(!ended.delivered);
    let error = ended.error.unwrap();
    assert!(error.contains("gave up 300ms after"), "{error}");
    assert!(ended.attempts >= 2, "{} attempts", ended.attempts);
    assert_eq!(rx.requests().len() as u32, ended.attempts);
    assert!(rx.accepted().is_empty());
}

#[tokio::test]
async fn a_resumed_alert_keeps_its_count_and_waits_for_its_next_attempt_time() {
    let rx = Receiver::start().await;
    let (delivery, mut outcomes) = alerts::delivery(quick());
    let mut resumed = job(&rx, "a");
    resumed.attempts = 3;
    let start = Instant::now();
    let not_before = jiff::Timestamp::now() + jiff::SignedDuration::from_millis(800);
    resumed.not_before = Some(not_before);
    delivery.enqueue(resumed).unwrap();
    let ended = outcomes.next(WAIT).await;
    assert!(ended.delivered, "{ended:?}");
    assert_eq!(ended.attempts, 4, "three earlier attempts and this one");
    let got = rx.accepted();
    assert_eq!(got.len(), 1);
    let waited = got[0].at.duration_since(start);
    assert!(
        waited >= Duration::from_millis(790),
        "the request came {waited:?} after the start, before the recorded next attempt time"
    );
}
