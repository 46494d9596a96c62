//! Slack incoming webhooks: Block Kit blocks inside an attachment, whose colour marks the severity.
//!
//! Limits (Block Kit reference): header text 150 characters, section text 3000, a section holds at
//! most 10 fields of at most 2000 characters each, a message at most 50 blocks.

use serde_json::{Value, json};

use super::{Alert, Notifier, NotifyError, Payload, ProviderSettings, encode, truncate};

/// Header block text limit.
pub const HEADER_MAX: usize = 150;
/// Section text limit.
pub const SECTION_TEXT_MAX: usize = 3000;
/// Section field text limit.
pub const FIELD_TEXT_MAX: usize = 2000;
/// Fields per section.
pub const FIELDS_PER_SECTION: usize = 10;
/// Blocks per message.
pub const BLOCKS_MAX: usize = 50;

/// Posts to a Slack incoming webhook.
#[derive(Debug)]
pub struct Slack {
    settings: ProviderSettings,
}

impl Slack {
    /// A Slack notifier; `channel` and `username` override the webhook's defaults.
    pub fn new(settings: ProviderSettings) -> Self {
        Slack { settings }
    }
}

/// Slack's mrkdwn treats these three as control characters.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn mrkdwn(text: &str, max: usize) -> Value {
    json!({"type": "mrkdwn", "text": truncate(&escape(text), max)})
}

impl Notifier for Slack {
    fn service(&self) -> &'static str {
        "slack"
    }

    fn payload(&self, alert: &Alert) -> Result<Payload, NotifyError> {
        let mut blocks = vec![
            json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&alert.title(), HEADER_MAX), "emoji": true}}),
            json!({"type": "section", "text": mrkdwn(&alert.summary(), SECTION_TEXT_MAX)}),
        ];
        let fields: Vec<Value> = alert
            .facts()
            .into_iter()
            .map(|(label, value)| {
                // The label is ours and short; only the value can be long.
                let label = format!("*{label}*\n");
                let room = FIELD_TEXT_MAX - label.chars().count();
                json!({"type": "mrkdwn", "text": format!("{label}{}", truncate(&escape(&value), room))})
            })
            .collect();
        for chunk in fields.chunks(FIELDS_PER_SECTION) {
            blocks.push(json!({"type": "section", "fields": chunk}));
        }
        if !alert.next_steps.is_empty() {
            let steps = alert
                .next_steps
                .iter()
                .map(|s| format!("• {}: `{}`", escape(&s.description), escape(&s.command)))
                .collect::<Vec<_>>()
                .join("\n");
            blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(&format!("*What you can do next*\n{steps}"), SECTION_TEXT_MAX)}}));
        }
        blocks.push(json!({"type": "context", "elements": [mrkdwn(&format!("weir · {} · {}", alert.time, alert.key), SECTION_TEXT_MAX)]}));
        blocks.truncate(BLOCKS_MAX);
        let mut body = json!({
            // Notifications and clients without Block Kit show this text.
            "text": truncate(&format!("{}: {}", alert.title(), alert.summary()), SECTION_TEXT_MAX),
            "attachments": [{"color": alert.severity().hex(), "blocks": blocks}],
        });
        if let Some(c) = &self.settings.channel {
            body["channel"] = json!(c);
        }
        if let Some(u) = &self.settings.username {
            body["username"] = json!(u);
        }
        Ok(Payload {
            body: encode(self.service(), &body)?,
            headers: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::sample;

    #[test]
    fn blocks_carry_every_fact_and_command_in_an_attachment() {
        let p = Slack::new(ProviderSettings {
            channel: Some("#deploys".into()),
            ..Default::default()
        })
        .payload(&sample::rolled_back())
        .unwrap();
        let v: Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(v["channel"], "#deploys");
        assert_eq!(v["attachments"][0]["color"], "#d62728");
        let text = v.to_string();
        for part in [
            "web=web:bad",
            "web=web:good",
            "def5678",
            "kubectl weir retry web -n shop",
            "prod-eu",
        ] {
            assert!(text.contains(part), "{part} missing");
        }
    }
}
