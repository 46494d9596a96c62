//! Google Chat space webhooks: a `cardsV2` card with a header, the summary, the facts and the
//! commands.
//!
//! A card may hold at most 100 widgets and 32 KB; texts are capped so the card stays under
//! [`CARD_MAX_BYTES`].

use serde_json::{Value, json};

use super::{Alert, Notifier, NotifyError, Payload, ProviderSettings, encode, truncate};

/// Cap on the encoded message, below Google Chat's 32 KB card limit.
pub const CARD_MAX_BYTES: usize = 30_000;
/// Widgets per card.
pub const WIDGETS_MAX: usize = 100;
/// Cap on one text.
pub const TEXT_MAX: usize = 4000;
/// Cap on the header title and subtitle.
pub const HEADER_MAX: usize = 200;

/// Posts to a Google Chat space webhook.
#[derive(Debug)]
pub struct GoogleChat {
    _settings: ProviderSettings,
}

impl GoogleChat {
    /// A Google Chat notifier. The webhook URL names the space.
    pub fn new(settings: ProviderSettings) -> Self {
        GoogleChat {
            _settings: settings,
        }
    }
}

/// Google Chat card text is HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn card(alert: &Alert, text_max: usize) -> Value {
    let text = |s: &str| truncate(&escape(s), text_max);
    let facts: Vec<Value> = alert
        .facts()
        .into_iter()
        .map(|(label, value)| json!({"decoratedText": {"topLabel": label, "text": text(&value), "wrapText": true}}))
        .collect();
    let steps: Vec<Value> = alert
        .next_steps
        .iter()
        .map(|s| json!({"decoratedText": {"topLabel": text(&s.description), "text": format!("<code>{}</code>", text(&s.command)), "wrapText": true}}))
        .collect();
    let mut budget = WIDGETS_MAX - 1;
    let facts: Vec<Value> = facts
        .into_iter()
        .take(budget.saturating_sub(steps.len()))
        .collect();
    budget -= facts.len();
    let steps: Vec<Value> = steps.into_iter().take(budget).collect();
    let mut sections = vec![
        json!({"widgets": [{"textParagraph": {"text": text(&alert.summary())}}]}),
        json!({"header": "Details", "widgets": facts}),
    ];
    if !steps.is_empty() {
        sections.push(json!({"header": "What you can do next", "widgets": steps}));
    }
    json!({
        "text": truncate(&alert.title(), HEADER_MAX),
        "cardsV2": [{
            "cardId": "weir-alert",
            "card": {
                "header": {
                    "title": truncate(&alert.title(), HEADER_MAX),
                    "subtitle": truncate(&format!("{} · {}", alert.event, alert.time), HEADER_MAX),
                },
                "sections": sections,
            },
        }],
    })
}

impl Notifier for GoogleChat {
    fn service(&self) -> &'static str {
        "googlechat"
    }

    fn payload(&self, alert: &Alert) -> Result<Payload, NotifyError> {
        let mut text_max = TEXT_MAX;
        loop {
            let body = encode(self.service(), &card(alert, text_max))?;
            if body.len() <= CARD_MAX_BYTES || text_max <= 100 {
                return Ok(Payload {
                    body,
                    headers: Vec::new(),
                });
            }
            text_max /= 2;
        }
    }
}
