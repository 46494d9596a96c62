//! Discord webhooks: one embed.
//!
//! Limits (Discord's embed reference): title 256 characters, description 4096, at most 25 fields,
//! field name 256 and value 1024, footer 2048, and 6000 characters across the whole embed.

use serde_json::{Value, json};

use super::{Alert, Notifier, NotifyError, Payload, ProviderSettings, encode, truncate};

/// Title limit.
pub const TITLE_MAX: usize = 256;
/// Description limit.
pub const DESCRIPTION_MAX: usize = 4096;
/// Fields per embed.
pub const FIELDS_MAX: usize = 25;
/// Field name limit.
pub const FIELD_NAME_MAX: usize = 256;
/// Field value limit.
pub const FIELD_VALUE_MAX: usize = 1024;
/// Footer text limit.
pub const FOOTER_MAX: usize = 2048;
/// Characters across title, description, field names and values, and footer.
pub const EMBED_TOTAL_MAX: usize = 6000;
/// Username limit.
pub const USERNAME_MAX: usize = 80;

/// Posts to a Discord webhook.
#[derive(Debug)]
pub struct Discord {
    settings: ProviderSettings,
}

impl Discord {
    /// A Discord notifier; `username` overrides the webhook's name.
    pub fn new(settings: ProviderSettings) -> Self {
        Discord { settings }
    }
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

impl Notifier for Discord {
    fn service(&self) -> &'static str {
        "discord"
    }

    fn payload(&self, alert: &Alert) -> Result<Payload, NotifyError> {
        let title = truncate(&alert.title(), TITLE_MAX);
        let footer = truncate(&format!("weir · {}", alert.key), FOOTER_MAX);
        let mut fields: Vec<(String, String)> = alert
            .facts()
            .into_iter()
            .map(|(n, v)| (truncate(n, FIELD_NAME_MAX), truncate(&v, FIELD_VALUE_MAX)))
            .collect();
        if !alert.next_steps.is_empty() {
            let steps = alert
                .next_steps
                .iter()
                .map(|s| format!("{}: `{}`", s.description, s.command))
                .collect::<Vec<_>>()
                .join("\n");
            // Commands matter more than the later facts: keep them inside the field limit.
            fields.truncate(FIELDS_MAX - 1);
            fields.push((
                "What you can do next".into(),
                truncate(&steps, FIELD_VALUE_MAX),
            ));
        }
        fields.truncate(FIELDS_MAX);
        let fixed = chars(&title) + chars(&footer);
        let field_total: usize = fields.iter().map(|(n, v)| chars(n) + chars(v)).sum();
        // The description gives way first, so the facts and commands survive a long message.
        let room = EMBED_TOTAL_MAX
            .saturating_sub(fixed + field_total)
            .min(DESCRIPTION_MAX);
        let description = truncate(&alert.summary(), room);
        let mut total = fixed + field_total + chars(&description);
        while total > EMBED_TOTAL_MAX && fields.len() > 1 {
            let (n, v) = fields.remove(fields.len() - 2);
            total -= chars(&n) + chars(&v);
        }
        let fields: Vec<Value> = fields
            .into_iter()
            .map(|(name, value)| json!({"name": name, "value": value, "inline": false}))
            .collect();
        let mut body = json!({
            "embeds": [{
                "title": title,
                "description": description,
                "color": alert.severity().rgb(),
                "fields": fields,
                "footer": {"text": footer},
                "timestamp": alert.time.to_string(),
            }],
            // Never ping anyone because a Rollout message happens to contain @everyone.
            "allowed_mentions": {"parse": []},
        });
        if let Some(u) = &self.settings.username {
            body["username"] = json!(truncate(u, USERNAME_MAX));
        }
        Ok(Payload {
            body: encode(self.service(), &body)?,
            headers: Vec::new(),
        })
    }
}
