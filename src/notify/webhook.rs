//! Any HTTP endpoint: weir's own JSON event (documented in the README), optionally signed.
//!
//! With a signing key, the request carries `X-Weir-Signature-256: sha256=<hex>`, the
//! HMAC-SHA256 of the exact body bytes under the key, so a receiver can check that the alert
//! came from weir and was not altered.

use serde_json::json;

use super::{Alert, Notifier, NotifyError, Payload, ProviderSettings, encode};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-Weir-Signature-256";
/// The header naming the event, so receivers can route without parsing the body.
pub const EVENT_HEADER: &str = "X-Weir-Event";
/// The header carrying the alert key, the same for every retry of one alert.
pub const DELIVERY_HEADER: &str = "X-Weir-Delivery";
/// `kind` of the JSON event.
pub const KIND: &str = "RolloutAlert";

/// Posts weir's JSON event.
#[derive(Debug)]
pub struct Webhook {
    settings: ProviderSettings,
}

impl Webhook {
    /// A webhook notifier, with an optional bearer token and signing key.
    pub fn new(settings: ProviderSettings) -> Self {
        Webhook { settings }
    }
}

/// `sha256=<hex>` of `body` under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

impl Notifier for Webhook {
    fn service(&self) -> &'static str {
        "webhook"
    }

    fn payload(&self, alert: &Alert) -> Result<Payload, NotifyError> {
        let body = json!({
            "apiVersion": crate::api::API_VERSION,
            "kind": KIND,
            "id": alert.key,
            "event": alert.event,
            "severity": alert.severity().as_str(),
            "time": alert.time,
            "cluster": alert.cluster,
            "rollout": {"namespace": alert.namespace, "name": alert.rollout},
            "title": alert.title(),
            "summary": alert.summary(),
            "reason": alert.reason,
            "message": alert.message,
            "analysis": alert.analysis,
            "images": {"canary": alert.canary_images, "stable": alert.stable_images},
            "weight": alert.weight,
            "git": alert.git,
            "nextSteps": alert.next_steps,
        });
        let body = encode(self.service(), &body)?;
        let mut headers = vec![
            (EVENT_HEADER.to_owned(), alert.event.as_str().to_owned()),
            (DELIVERY_HEADER.to_owned(), alert.key.clone()),
        ];
        if let Some(key) = &self.settings.signing_key {
            if key.is_empty() {
                return Err(NotifyError::SigningKey("it is empty"));
            }
            headers.push((SIGNATURE_HEADER.to_owned(), signature(key, &body)));
        }
        if let Some(token) = &self.settings.token {
            headers.push(("Authorization".to_owned(), format!("Bearer {token}")));
        }
        Ok(Payload { body, headers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_rfc_4231_test_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
