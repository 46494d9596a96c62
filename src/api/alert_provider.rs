//! AlertProvider: where a Rollout's alerts go (Slack, Microsoft Teams, Discord, Google Chat, or
//! any webhook).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::secret::{SecretKeyRef, SecretRef};

/// Key of the `secretRef` Secret that holds the address (webhook URL).
pub const SECRET_KEY_ADDRESS: &str = "address";
/// Optional key of the `secretRef` Secret holding a token sent as `Authorization: Bearer` by the
/// webhook provider.
pub const SECRET_KEY_TOKEN: &str = "token";
/// How many alerts `status.sentAlerts` remembers per provider.
pub const SENT_ALERTS_LIMIT: usize = 100;
/// How many alerts may wait in `status.pendingAlerts` per provider; one more is given up at once,
/// so a receiver that is down for a day cannot grow the object without bound.
pub const PENDING_ALERTS_LIMIT: usize = 50;

/// A destination for Rollout alerts.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "weir.io",
    version = "v1alpha1",
    kind = "AlertProvider",
    plural = "alertproviders",
    namespaced,
    status = "AlertProviderStatus",
    shortname = "ap",
    category = "weir",
    derive = "PartialEq",
    doc = "A destination for Rollout alerts.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Default", type_ = "boolean", json_path = ".spec.default"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("oneOf" = [{"required": ["address"]}, {"required": ["secretRef"]}]))]
pub struct AlertProviderSpec {
    /// The kind of service the alerts are sent to.
    #[serde(rename = "type")]
    pub provider_type: AlertProviderType,
    /// Webhook URL. Exactly one of `address` and `secretRef` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// A Secret whose `address` key holds the webhook URL (and, for `webhook`, an optional
    /// `token`). Use it when the URL itself is a credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// Channel to post to, where the service supports choosing one (Slack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Name to post as, where the service supports choosing one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The events to send. When empty: every event except `Started`, `StepCompleted` and
    /// `Resumed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub events: Vec<AlertEvent>,
    /// Receive the alerts of every Rollout in this namespace that names no provider in
    /// `spec.alerts`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    /// `webhook` only: a Secret key holding the HMAC-SHA256 key that signs each request
    /// (`X-Weir-Signature-256: sha256=<hex>` over the body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret_ref: Option<SecretKeyRef>,
}

impl AlertProviderSpec {
    /// Whether this provider wants the event. An empty `events` list means every event a
    /// person needs to hear about: all but `Started`, `StepCompleted` and `Resumed`, which are
    /// sent only when listed.
    pub fn accepts(&self, event: AlertEvent) -> bool {
        if self.events.is_empty() {
            return !matches!(
                event,
                AlertEvent::Started | AlertEvent::StepCompleted | AlertEvent::Resumed
            );
        }
        self.events.contains(&event)
    }
}

/// The kind of service alerts are sent to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertProviderType {
    /// A Slack incoming webhook.
    Slack,
    /// A Microsoft Teams incoming webhook / workflow.
    #[serde(rename = "msteams")]
    MsTeams,
    /// A Discord webhook.
    Discord,
    /// A Google Chat space webhook.
    #[serde(rename = "googlechat")]
    GoogleChat,
    /// Any HTTP endpoint, receiving weir's JSON event.
    Webhook,
}

/// Rollout events an AlertProvider can subscribe to.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum AlertEvent {
    /// A new release started.
    Started,
    /// A canary step completed.
    StepCompleted,
    /// The release paused (a pause step, an inconclusive analysis, or a human).
    Paused,
    /// A paused release resumed.
    Resumed,
    /// A human promoted the release.
    Promoted,
    /// The release finished: the new pods are stable.
    Completed,
    /// A person aborted the release: traffic went back to the stable pods.
    Aborted,
    /// weir aborted the release because an analysis failed or the progress deadline passed:
    /// traffic went back to the stable pods.
    RolledBack,
    /// weir pushed a revert commit for the failed release.
    GitReverted,
    /// weir could not revert the failed release in Git.
    GitRevertBlocked,
}

impl AlertEvent {
    /// Every event, in declaration order.
    pub const ALL: [AlertEvent; 10] = [
        Self::Started,
        Self::StepCompleted,
        Self::Paused,
        Self::Resumed,
        Self::Promoted,
        Self::Completed,
        Self::Aborted,
        Self::RolledBack,
        Self::GitReverted,
        Self::GitRevertBlocked,
    ];

    /// The event as it appears in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "Started",
            Self::StepCompleted => "StepCompleted",
            Self::Paused => "Paused",
            Self::Resumed => "Resumed",
            Self::Promoted => "Promoted",
            Self::Completed => "Completed",
            Self::Aborted => "Aborted",
            Self::RolledBack => "RolledBack",
            Self::GitReverted => "GitReverted",
            Self::GitRevertBlocked => "GitRevertBlocked",
        }
    }
}

impl std::fmt::Display for AlertEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The observed state of an AlertProvider.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertProviderStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: whether the last alert got through (reasons `AlertDelivered`,
    /// `AlertDeliveryRetrying`, `AlertDeliveryFailed`, `AlertDropped`, `SecretNotFound`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The newest alerts this provider was sent (at most 100), so that each Rollout event is
    /// sent once even when weir restarts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sent_alerts: Vec<SentAlert>,
    /// Alerts accepted for this provider but not yet delivered (at most 50). Each is written here
    /// before its first request, so a restarted weir resumes them; it moves to `sentAlerts` once
    /// the service accepts it or weir gives up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_alerts: Vec<PendingAlert>,
}

impl AlertProviderStatus {
    /// Whether the alert with this key is already waiting, delivered or given up.
    pub fn knows(&self, key: &str) -> bool {
        self.pending_alerts.iter().any(|a| a.key == key)
            || self.sent_alerts.iter().any(|a| a.key == key)
    }
}

/// An alert waiting to be delivered, with everything needed to send it after a restart.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingAlert {
    /// The Rollout event: `<namespace>/<core Event name>`.
    pub key: String,
    /// The alert's event.
    pub event: AlertEvent,
    /// The Rollout.
    pub rollout: String,
    /// When weir accepted the alert; it gives up a fixed time after this.
    pub since: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    /// Requests made so far.
    #[serde(default)]
    pub attempts: u32,
    /// The earliest time of the next request (backoff, or the service's `Retry-After`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// Why the last request failed. Never holds the address or any secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The alert itself, as built when the event happened (no secrets: the address and keys are
    /// read from their Secrets for each request).
    #[schemars(schema_with = "any_object")]
    pub alert: serde_json::Value,
}

fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// One alert a provider was sent, or gave up on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SentAlert {
    /// The Rollout event: `<namespace>/<core Event name>`.
    pub key: String,
    /// The alert's event.
    pub event: AlertEvent,
    /// The Rollout.
    pub rollout: String,
    /// `Delivered`, or `Failed`: given up (see the provider's Events for why).
    pub outcome: SentAlertOutcome,
    /// When the outcome was known.
    pub time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
}

/// How sending an alert ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SentAlertOutcome {
    /// The service accepted it.
    Delivered,
    /// weir gave up: 4xx, still failing when the time to retry ran out, or no room to hold
    /// it; it is not sent again.
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn manifest_round_trips() {
        let yaml = r#"
type: msteams
secretRef:
  name: teams-webhook
username: weir
events: [Aborted, GitReverted, GitRevertBlocked]
default: true
"#;
        let spec: AlertProviderSpec = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(spec.provider_type, AlertProviderType::MsTeams);
        assert!(spec.default);
        let expected: Value = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(serde_json::to_value(&spec).unwrap(), expected);
    }

    #[test]
    fn provider_types_use_their_lowercase_names() {
        let cases = [
            (AlertProviderType::Slack, "slack"),
            (AlertProviderType::MsTeams, "msteams"),
            (AlertProviderType::Discord, "discord"),
            (AlertProviderType::GoogleChat, "googlechat"),
            (AlertProviderType::Webhook, "webhook"),
        ];
        for (provider_type, name) in cases {
            assert_eq!(
                serde_json::to_value(provider_type).unwrap(),
                Value::from(name)
            );
        }
    }

    #[test]
    fn an_empty_event_list_accepts_every_event_but_the_step_level_ones() {
        let all: AlertProviderSpec =
            serde_saphyr::from_str("type: slack\naddress: https://hooks.example\n").unwrap();
        let some: AlertProviderSpec = serde_saphyr::from_str(
            "type: slack\naddress: https://hooks.example\nevents: [Aborted]\n",
        )
        .unwrap();
        for event in AlertEvent::ALL {
            let step_level = matches!(
                event,
                AlertEvent::Started | AlertEvent::StepCompleted | AlertEvent::Resumed
            );
            assert_eq!(all.accepts(event), !step_level, "{event}");
            assert_eq!(some.accepts(event), event == AlertEvent::Aborted, "{event}");
            assert_eq!(
                serde_json::to_value(event).unwrap(),
                Value::from(event.as_str())
            );
        }
    }
}
