//! Chat alerts for Rollout events: what happened, the evidence, and what a person can do next.
//!
//! The [`controller`] turns the core/v1 Events weir records on a Rollout into [`Alert`]s, one per
//! subscribed AlertProvider. The [`delivery`] worker sends them without ever holding up a
//! reconcile. Each service has its own [`Notifier`] that builds the service's native request.

pub mod controller;
pub mod delivery;
pub mod discord;
pub mod googlechat;
pub mod msteams;
pub mod slack;
pub mod webhook;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::api::alert_provider::{AlertEvent, AlertProviderType};

pub use controller::run;

/// Everything a person needs to understand one Rollout event from the message alone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// Identifies the event; the same event always has the same key, so it is sent once.
    pub key: String,
    /// What happened.
    pub event: AlertEvent,
    /// When it happened.
    pub time: Timestamp,
    /// The cluster weir runs in, as configured (`--cluster-name`).
    pub cluster: String,
    /// The Rollout's namespace.
    pub namespace: String,
    /// The Rollout's name.
    pub rollout: String,
    /// The reason weir recorded (e.g. `AnalysisRunFailed`, `ProgressDeadlineExceeded`).
    pub reason: String,
    /// The message of the Event, as weir recorded it.
    pub message: String,
    /// The metric that decided, when an analysis decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisEvidence>,
    /// Images of the release being rolled out (`container=image`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub canary_images: Vec<String>,
    /// Images of the stable release (`container=image`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stable_images: Vec<String>,
    /// Percent of traffic the canary had when the release stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    /// The Git revert of the release, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitEvidence>,
    /// What a person can do next, as exact commands.
    pub next_steps: Vec<NextStep>,
}

/// The metric that decided an analysis.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisEvidence {
    /// The AnalysisRun.
    pub run: String,
    /// The metric.
    pub metric: String,
    /// The last measured value, as recorded (`[0.5]`, `0.02`, JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The condition the value broke, e.g. `successCondition: result[0] < 0.05`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// Failed (or errored, or inconclusive) measurements so far.
    pub failures: i32,
    /// How many such measurements the metric tolerates; one more decides.
    pub limit: i32,
    /// The run's own explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The Git side of a failed release.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitEvidence {
    /// The commits the revert undoes, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reverted_commits: Vec<String>,
    /// The revert commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_commit: Option<String>,
    /// Progress of the revert (`Pending`, `Pushed`, `Blocked`, `Failed`, `Requested`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Why the revert was blocked or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_reason: Option<String>,
}

/// One thing a person can do next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextStep {
    /// What the command does, for a person.
    pub description: String,
    /// The exact command.
    pub command: String,
}

impl NextStep {
    fn new(description: &str, command: String) -> Self {
        NextStep {
            description: description.to_owned(),
            command,
        }
    }
}

/// How bad an event is, which sets its colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Traffic went back to stable, or Git could not be fixed.
    Error,
    /// A person is needed.
    Warning,
    /// Good news, or a record of what someone did.
    Info,
}

impl Severity {
    /// The colour as `#rrggbb`.
    pub fn hex(self) -> &'static str {
        match self {
            Severity::Error => "#d62728",
            Severity::Warning => "#f2a900",
            Severity::Info => "#2ca02c",
        }
    }

    /// The colour as an integer, as Discord wants it.
    pub fn rgb(self) -> u32 {
        u32::from_str_radix(&self.hex()[1..], 16).unwrap_or(0)
    }

    /// The name used in the webhook JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

impl Alert {
    /// How bad the event is.
    pub fn severity(&self) -> Severity {
        match self.event {
            AlertEvent::RolledBack | AlertEvent::GitRevertBlocked => Severity::Error,
            AlertEvent::Aborted | AlertEvent::Paused | AlertEvent::GitReverted => Severity::Warning,
            _ => Severity::Info,
        }
    }

    /// One line naming the event and the Rollout.
    pub fn title(&self) -> String {
        let what = match self.event {
            AlertEvent::RolledBack => "Rolled back",
            AlertEvent::Aborted => "Aborted by a person",
            AlertEvent::GitReverted => "Reverted in Git",
            AlertEvent::GitRevertBlocked => "Git revert blocked",
            AlertEvent::Paused => "Waiting for a person",
            AlertEvent::Promoted => "Promoted",
            AlertEvent::Completed => "Completed",
            AlertEvent::Started => "Started",
            AlertEvent::StepCompleted => "Step completed",
            AlertEvent::Resumed => "Resumed",
        };
        format!(
            "{what}: {}/{} on {}",
            self.namespace, self.rollout, self.cluster
        )
    }

    /// The sentence that says what happened and why.
    pub fn summary(&self) -> String {
        if let (AlertEvent::RolledBack, Some(a)) = (self.event, &self.analysis) {
            let mut s = format!("Analysis metric {} failed", a.metric);
            if let Some(v) = &a.value {
                s.push_str(&format!(" with value {v}"));
            }
            if let Some(c) = &a.condition {
                s.push_str(&format!(", breaking {c}"));
            }
            s.push_str(&format!(
                " ({} failed measurements, limit {})",
                a.failures, a.limit
            ));
            if let Some(w) = self.weight {
                s.push_str(&format!(" at {w}% canary traffic"));
            }
            s.push_str(". Traffic is back on the stable release.");
            return s;
        }
        self.message.clone()
    }

    /// Labelled facts, in the order they should be read. Empty values are left out.
    pub fn facts(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![
            ("Rollout", format!("{}/{}", self.namespace, self.rollout)),
            ("Cluster", self.cluster.clone()),
            ("Event", self.event.as_str().to_owned()),
        ];
        if !self.reason.is_empty() {
            f.push(("Reason", self.reason.clone()));
        }
        if let Some(a) = &self.analysis {
            f.push(("Metric", a.metric.clone()));
            if let Some(v) = &a.value {
                f.push(("Measured value", v.clone()));
            }
            if let Some(c) = &a.condition {
                f.push(("Condition", c.clone()));
            }
            f.push(("Failures", format!("{} (limit {})", a.failures, a.limit)));
            f.push(("AnalysisRun", a.run.clone()));
        }
        if let Some(w) = self.weight {
            f.push(("Canary weight", format!("{w}%")));
        }
        if !self.canary_images.is_empty() {
            f.push(("Canary image", self.canary_images.join(", ")));
        }
        if !self.stable_images.is_empty() {
            f.push(("Stable image", self.stable_images.join(", ")));
        }
        if let Some(g) = &self.git {
            if let Some(c) = &g.revert_commit {
                f.push(("Revert commit", c.clone()));
            }
            if !g.reverted_commits.is_empty() {
                f.push(("Reverted commits", g.reverted_commits.join(", ")));
            }
            if let Some(r) = &g.blocked_reason {
                f.push(("Revert blocked", r.clone()));
            }
        }
        // Discord and Slack reject empty field values.
        f.retain(|(_, value)| !value.trim().is_empty());
        f
    }

    /// The next steps as text, one command per line with its purpose.
    pub fn next_steps_text(&self) -> String {
        self.next_steps
            .iter()
            .map(|s| format!("{}: {}", s.description, s.command))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The commands a person can run next for this event.
    pub fn commands_for(
        event: AlertEvent,
        namespace: &str,
        rollout: &str,
        run: Option<&str>,
        reverted_in_git: bool,
    ) -> Vec<NextStep> {
        let get = NextStep::new(
            "See the Rollout",
            format!("kubectl weir get rollout {rollout} -n {namespace}"),
        );
        let retry = NextStep::new(
            "Release the same version again",
            format!("kubectl weir retry {rollout} -n {namespace}"),
        );
        let run_step = run.map(|r| {
            NextStep::new(
                "See every measurement",
                format!("kubectl get analysisrun {r} -n {namespace} -o yaml"),
            )
        });
        let mut steps = vec![get];
        match event {
            AlertEvent::RolledBack | AlertEvent::Aborted => {
                steps.extend(run_step);
                if !reverted_in_git {
                    steps.push(retry);
                }
            }
            AlertEvent::Paused => {
                steps.extend(run_step);
                steps.push(NextStep::new(
                    "Continue the release",
                    format!("kubectl weir promote {rollout} -n {namespace}"),
                ));
                steps.push(NextStep::new(
                    "Stop it and go back to stable",
                    format!("kubectl weir abort {rollout} -n {namespace}"),
                ));
            }
            AlertEvent::GitRevertBlocked => {
                steps.extend(run_step);
                steps.push(NextStep::new(
                    "Ask weir to revert in Git again once the cause is fixed",
                    format!("kubectl weir abort {rollout} -n {namespace} --revert"),
                ));
            }
            AlertEvent::GitReverted => steps.extend(run_step),
            _ => {}
        }
        steps
    }
}

/// One request for a service: the body and the headers besides `Content-Type: application/json`.
#[derive(Clone, PartialEq, Eq)]
pub struct Payload {
    /// The JSON body.
    pub body: Vec<u8>,
    /// Extra headers (signature, token, event name).
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Headers may carry a bearer token.
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Payload")
            .field("bytes", &self.body.len())
            .field("headers", &names)
            .finish()
    }
}

/// Why a payload could not be built.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The payload did not serialize.
    #[error("encoding the {service} payload")]
    Encode {
        /// The service.
        service: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The signing key cannot be used.
    #[error("the signing key cannot be used: {0}")]
    SigningKey(&'static str),
}

/// Builds a service's native request from an alert.
pub trait Notifier: Send + Sync {
    /// The service's name, for logs and Events.
    fn service(&self) -> &'static str;
    /// The request body and headers for `alert`.
    fn payload(&self, alert: &Alert) -> Result<Payload, NotifyError>;
}

/// How one provider is set up, Secrets already read. Its `Debug` never shows the secrets.
#[derive(Clone, Default)]
pub struct ProviderSettings {
    /// Channel to post to, where the service supports it.
    pub channel: Option<String>,
    /// Name to post as, where the service supports it.
    pub username: Option<String>,
    /// Bearer token for the webhook provider.
    pub token: Option<String>,
    /// HMAC-SHA256 key for the webhook provider's signature.
    pub signing_key: Option<Vec<u8>>,
}

impl std::fmt::Debug for ProviderSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSettings")
            .field("channel", &self.channel)
            .field("username", &self.username)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field(
                "signing_key",
                &self.signing_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The notifier for a provider type.
pub fn notifier_for(kind: AlertProviderType, settings: ProviderSettings) -> Box<dyn Notifier> {
    match kind {
        AlertProviderType::Slack => Box::new(slack::Slack::new(settings)),
        AlertProviderType::MsTeams => Box::new(msteams::MsTeams::new(settings)),
        AlertProviderType::Discord => Box::new(discord::Discord::new(settings)),
        AlertProviderType::GoogleChat => Box::new(googlechat::GoogleChat::new(settings)),
        AlertProviderType::Webhook => Box::new(webhook::Webhook::new(settings)),
    }
}

/// `text` cut to at most `max` characters, ending in `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

pub(crate) fn encode(
    service: &'static str,
    value: &serde_json::Value,
) -> Result<Vec<u8>, NotifyError> {
    serde_json::to_vec(value).map_err(|source| NotifyError::Encode { service, source })
}

#[cfg(test)]
pub(crate) mod sample {
    //! An alert with every field set, for the notifiers' unit tests.
    use super::*;

    pub fn rolled_back() -> Alert {
        Alert {
            key: "shop/web.1234abcd.7-0badf00d".into(),
            event: AlertEvent::RolledBack,
            time: "2026-11-22T23:00:00Z".parse().unwrap(),
            cluster: "prod-eu".into(),
            namespace: "shop".into(),
            rollout: "web".into(),
            reason: "AnalysisRunFailed".into(),
            message:
                "Rollout aborted: AnalysisRun web-abc-step1-3 Failed: error-rate: [0.5] failed"
                    .into(),
            analysis: Some(AnalysisEvidence {
                run: "web-abc-step1-3".into(),
                metric: "error-rate".into(),
                value: Some("[0.5]".into()),
                condition: Some("successCondition: result[0] < 0.05".into()),
                failures: 1,
                limit: 0,
                message: Some("error-rate: [0.5] failed \"result[0] < 0.05\"".into()),
            }),
            canary_images: vec!["web=web:bad".into()],
            stable_images: vec!["web=web:good".into()],
            weight: Some(50),
            git: Some(GitEvidence {
                reverted_commits: vec!["abc1234".into()],
                revert_commit: Some("def5678".into()),
                state: Some("Pushed".into()),
                blocked_reason: None,
            }),
            next_steps: Alert::commands_for(
                AlertEvent::RolledBack,
                "shop",
                "web",
                Some("web-abc-step1-3"),
                false,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_counts_characters_and_marks_the_cut() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("ééééé", 3).chars().count(), 3);
    }

    #[test]
    fn a_rollback_summary_names_metric_value_condition_and_weight() {
        let s = sample::rolled_back().summary();
        for part in ["error-rate", "[0.5]", "result[0] < 0.05", "limit 0", "50%"] {
            assert!(s.contains(part), "{part} missing from {s}");
        }
    }

    #[test]
    fn next_steps_fit_the_event() {
        let cmds = |e, reverted| {
            Alert::commands_for(e, "shop", "web", None, reverted)
                .into_iter()
                .map(|s| s.command)
                .collect::<Vec<_>>()
        };
        assert!(
            cmds(AlertEvent::RolledBack, false)
                .contains(&"kubectl weir retry web -n shop".to_owned())
        );
        assert!(
            !cmds(AlertEvent::RolledBack, true)
                .iter()
                .any(|c| c.contains("retry"))
        );
        assert!(
            cmds(AlertEvent::Paused, false)
                .contains(&"kubectl weir promote web -n shop".to_owned())
        );
        assert_eq!(
            cmds(AlertEvent::Completed, false),
            vec!["kubectl weir get rollout web -n shop"]
        );
    }

    #[test]
    fn facts_leave_out_empty_values() {
        let mut a = sample::rolled_back();
        a.cluster = String::new();
        a.git = Some(GitEvidence {
            blocked_reason: Some(" ".into()),
            ..GitEvidence::default()
        });
        let labels: Vec<&str> = a.facts().into_iter().map(|(l, _)| l).collect();
        assert!(
            !labels.contains(&"Cluster") && !labels.contains(&"Revert blocked"),
            "{labels:?}"
        );
        assert!(labels.contains(&"Metric"));
    }

    #[test]
    fn settings_debug_hides_secrets() {
        let s = ProviderSettings {
            token: Some("tok-SECRET".into()),
            signing_key: Some(b"key-SECRET".to_vec()),
            ..Default::default()
        };
        assert!(!format!("{s:?}").contains("SECRET"));
    }
}
