//! Microsoft Teams: an Adaptive Card in the message envelope that a Teams workflow ("Post to a
//! channel when a webhook request is received") accepts.
//!
//! Teams rejects messages over about 28 KB, so each text is capped and the card as a whole is
//! kept under [`MESSAGE_MAX_BYTES`].

use serde_json::{Value, json};

use super::{Alert, Notifier, NotifyError, Payload, ProviderSettings, Severity, encode, truncate};

/// The Adaptive Card schema version used; Teams renders 1.4 on every client.
pub const CARD_VERSION: &str = "1.4";
/// The attachment content type of an Adaptive Card.
pub const CARD_CONTENT_TYPE: &str = "application/vnd.microsoft.card.adaptive";
/// Cap on the encoded message, below Teams' 28 KB limit.
pub const MESSAGE_MAX_BYTES: usize = 27_000;
/// Cap on one text of the card.
pub const TEXT_MAX: usize = 2000;

/// Posts to a Teams workflow webhook.
#[derive(Debug)]
pub struct MsTeams {
    _settings: ProviderSettings,
}

impl MsTeams {
    /// A Teams notifier. Teams workflows choose the channel and sender themselves.
    pub fn new(settings: ProviderSettings) -> Self {
        MsTeams {
            _settings: settings,
        }
    }
}

fn card(alert: &Alert, text_max: usize) -> Value {
    let colour = match alert.severity() {
        Severity::Error => "Attention",
        Severity::Warning => "Warning",
        Severity::Info => "Good",
    };
    let facts: Vec<Value> = alert
        .facts()
        .into_iter()
        .map(|(t, v)| json!({"title": t, "value": truncate(&v, text_max)}))
        .collect();
    let mut body = vec![
        json!({"type": "TextBlock", "text": truncate(&alert.title(), text_max), "size": "Large", "weight": "Bolder", "color": colour, "wrap": true}),
        json!({"type": "TextBlock", "text": truncate(&alert.summary(), text_max), "wrap": true}),
        json!({"type": "FactSet", "facts": facts}),
    ];
    if !alert.next_steps.is_empty() {
        body.push(json!({"type": "TextBlock", "text": "What you can do next", "weight": "Bolder", "wrap": true}));
        for s in &alert.next_steps {
            body.push(json!({"type": "TextBlock", "text": truncate(&s.description, text_max), "wrap": true, "spacing": "Small"}));
            body.push(json!({"type": "TextBlock", "text": truncate(&s.command, text_max), "fontType": "Monospace", "wrap": true, "spacing": "None"}));
        }
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": CARD_CONTENT_TYPE,
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": CARD_VERSION,
                "msteams": {"width": "Full"},
                "body": body,
            },
        }],
    })
}

impl Notifier for MsTeams {
    fn service(&self) -> &'static str {
        "msteams"
    }

    fn payload(&self, alert: &Alert) -> Result<Payload, NotifyError> {
        let mut text_max = TEXT_MAX;
        loop {
            let body = encode(self.service(), &card(alert, text_max))?;
            if body.len() <= MESSAGE_MAX_BYTES || text_max <= 100 {
                return Ok(Payload {
                    body,
                    headers: Vec::new(),
                });
            }
            text_max /= 2;
        }
    }
}
