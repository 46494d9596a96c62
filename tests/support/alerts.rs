//! Alerts and a delivery report for the notify tests.
//!
//! Include it with `#[path = "support/alerts.rs"] mod alerts;`.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use weir::api::alert_provider::{AlertEvent, AlertProviderType};
use weir::notify::delivery::{Delivery, DeliveryPolicy, DeliveryReport, Job, Outcome, Target};
use weir::notify::{Alert, AnalysisEvidence, GitEvidence, ProviderSettings};

/// A rollback alert with every field set.
pub fn rolled_back(key: &str) -> Alert {
    Alert {
        key: key.to_owned(),
        event: AlertEvent::RolledBack,
        time: "2026-11-22T23:00:00Z".parse().unwrap(),
        cluster: "prod-eu".into(),
        namespace: "shop".into(),
        rollout: "web".into(),
        reason: "AnalysisRunFailed".into(),
        message: "Rollout aborted: AnalysisRun web-7d9f-step1-3 Failed: error-rate: [0.5] failed \"result[0] < 0.05\"".into(),
        analysis: Some(AnalysisEvidence {
            run: "web-7d9f-step1-3".into(),
            metric: "error-rate".into(),
            value: Some("[0.5]".into()),
            condition: Some("successCondition: result[0] < 0.05".into()),
            failures: 1,
            limit: 0,
            message: Some("error-rate: [0.5] failed \"result[0] < 0.05\"".into()),
        }),
        canary_images: vec!["web=registry.example/web:1.4.0".into()],
        stable_images: vec!["web=registry.example/web:1.3.2".into()],
        weight: Some(20),
        git: Some(GitEvidence {
            reverted_commits: vec!["1a2b3c4".into()],
            revert_commit: Some("9f8e7d6".into()),
            state: Some("Pushed".into()),
            blocked_reason: None,
        }),
        next_steps: Alert::commands_for(
            AlertEvent::RolledBack,
            "shop",
            "web",
            Some("web-7d9f-step1-3"),
            false,
        ),
    }
}

/// The same alert with texts far beyond every service's limits.
pub fn oversized(key: &str) -> Alert {
    let mut a = rolled_back(key);
    a.rollout = "w".repeat(300);
    a.message = "m".repeat(20_000);
    if let Some(x) = a.analysis.as_mut() {
        x.metric = "e".repeat(5_000);
        x.value = Some(format!("[{}]", "0.5, ".repeat(3_000)));
    }
    a.canary_images = (0..40)
        .map(|i| format!("c{i}={}", "i".repeat(3_000)))
        .collect();
    a
}

/// A target of `kind` at `url`.
pub fn target(kind: AlertProviderType, url: String, settings: ProviderSettings) -> Target {
    Target {
        namespace: "shop".into(),
        name: "team".into(),
        kind,
        url,
        settings,
    }
}

/// How an alert ended, as the test sees it.
#[derive(Debug)]
pub struct Ended {
    pub key: String,
    pub delivered: bool,
    pub attempts: u32,
    pub error: Option<String>,
}

struct Channel(mpsc::UnboundedSender<Ended>);

impl DeliveryReport for Channel {
    fn report<'a>(&'a self, job: &'a Job, outcome: &'a Outcome) -> BoxFuture<'a, ()> {
        let ended = match outcome {
            Outcome::Delivered { attempts } => Ended {
                key: job.alert.key.clone(),
                delivered: true,
                attempts: *attempts,
                error: None,
            },
            Outcome::Failed { attempts, error } => Ended {
                key: job.alert.key.clone(),
                delivered: false,
                attempts: *attempts,
                error: Some(error.to_string()),
            },
        };
        let _ = self.0.send(ended);
        Box::pin(async {})
    }
}

/// A delivery worker whose outcomes arrive on the returned channel.
pub fn delivery(policy: DeliveryPolicy) -> (Delivery, Outcomes) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (tx, rx) = mpsc::unbounded_channel();
    (Delivery::start(policy, Arc::new(Channel(tx))), Outcomes(rx))
}

/// Outcomes of a delivery worker, in the order alerts ended.
pub struct Outcomes(mpsc::UnboundedReceiver<Ended>);

impl Outcomes {
    /// The next outcome, or a panic after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Ended {
        tokio::time::timeout(timeout, self.0.recv())
            .await
            .expect("an alert ended in time")
            .expect("the worker is running")
    }
}
