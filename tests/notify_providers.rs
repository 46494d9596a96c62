//! Each notifier against a local receiver: the request a service would get (method, headers,
//! a payload valid for that service), with long texts cut to the service's limits.

#[path = "support/alerts.rs"]
mod alerts;
#[path = "support/receiver.rs"]
mod receiver;
mod support;

use std::time::Duration;

use receiver::{Receiver, Recorded};
use serde_json::Value;
use weir::api::alert_provider::AlertProviderType;
use weir::notify::delivery::{DeliveryPolicy, Job};
use weir::notify::{Alert, ProviderSettings};

const WAIT: Duration = Duration::from_secs(20);

/// Sends `alert` to a fresh receiver as `kind` and returns the one request it got.
async fn send(kind: AlertProviderType, settings: ProviderSettings, alert: Alert) -> Recorded {
    let rx = Receiver::start().await;
    let (delivery, mut outcomes) = alerts::delivery(DeliveryPolicy::default());
    delivery
        .enqueue(Job::new(
            alert,
            alerts::target(kind, rx.url("/hook/T000/B000"), settings),
        ))
        .unwrap();
    let ended = outcomes.next(WAIT).await;
    assert!(ended.delivered, "{ended:?}");
    let got = rx.requests();
    assert_eq!(got.len(), 1, "exactly one request");
    let req = got.into_iter().next().unwrap();
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/hook/T000/B000");
    assert_eq!(
        req.header("content-type").as_deref(),
        Some("application/json")
    );
    req
}

fn text_len(v: &Value) -> usize {
    v.as_str().expect("a string").chars().count()
}

fn all_text(v: &Value) -> String {
    v.to_string()
}

/// Every fact a rollback alert must carry, as it appears in any payload.
fn assert_carries_the_rollback(payload: &str) {
    for part in [
        "shop/web",
        "prod-eu",
        "error-rate",
        "[0.5]",
        "result[0] &lt; 0.05",
        "1 (limit 0)",
        "20%",
        "registry.example/web:1.4.0",
        "registry.example/web:1.3.2",
        "9f8e7d6",
        "kubectl weir get rollout web -n shop",
        "kubectl get analysisrun web-7d9f-step1-3 -n shop -o yaml",
        "kubectl weir retry web -n shop",
    ] {
        let plain = part.replace("&lt;", "<");
        assert!(
            payload.contains(part) || payload.contains(&plain),
            "{part} missing from {payload}"
        );
    }
}

fn check_slack(body: &Value) {
    assert!(body["text"].is_string(), "top-level text is the fallback");
    assert!(text_len(&body["text"]) <= 3000);
    let attachment = &body["attachments"][0];
    let colour = attachment["color"].as_str().unwrap();
    assert!(colour.len() == 7 && colour.starts_with('#'), "{colour}");
    let blocks = attachment["blocks"].as_array().unwrap();
    assert!(!blocks.is_empty() && blocks.len() <= 50);
    for b in blocks {
        match b["type"].as_str().unwrap() {
            "header" => {
                assert_eq!(b["text"]["type"], "plain_text");
                assert!(text_len(&b["text"]["text"]) <= 150);
            }
            "section" => {
                assert!(b.get("text").is_some() || b.get("fields").is_some(), "{b}");
                if let Some(t) = b.get("text") {
                    assert!(["mrkdwn", "plain_text"].contains(&t["type"].as_str().unwrap()));
                    assert!(text_len(&t["text"]) <= 3000);
                }
                if let Some(f) = b.get("fields") {
                    let f = f.as_array().unwrap();
                    assert!(!f.is_empty() && f.len() <= 10);
                    for x in f {
                        assert!(x["type"].is_string());
                        assert!(text_len(&x["text"]) <= 2000);
                    }
                }
            }
            "context" => {
                let e = b["elements"].as_array().unwrap();
                assert!(!e.is_empty() && e.len() <= 10);
            }
            other => panic!("unexpected block type {other}"),
        }
    }
}

#[tokio::test]
async fn slack_gets_block_kit_with_a_colour_and_channel() {
    let settings = ProviderSettings {
        channel: Some("#deploys".into()),
        username: Some("weir".into()),
        ..Default::default()
    };
    let req = send(
        AlertProviderType::Slack,
        settings.clone(),
        alerts::rolled_back("k1"),
    )
    .await;
    let body = req.json();
    check_slack(&body);
    assert_eq!(body["channel"], "#deploys");
    assert_eq!(body["username"], "weir");
    assert_eq!(
        body["attachments"][0]["color"], "#d62728",
        "red for a rollback"
    );
    assert_carries_the_rollback(&all_text(&body));

    let big = send(AlertProviderType::Slack, settings, alerts::oversized("k2"))
        .await
        .json();
    check_slack(&big);
    let blocks = big["attachments"][0]["blocks"].as_array().unwrap();
    let summary = &blocks[1]["text"]["text"];
    assert_eq!(
        text_len(summary),
        3000,
        "the summary is cut to exactly the limit"
    );
    assert!(summary.as_str().unwrap().ends_with('…'));
}

fn check_teams(body: &Value, raw: usize) {
    assert_eq!(body["type"], "message");
    let a = &body["attachments"][0];
    assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
    let card = &a["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["version"], "1.4");
    assert_eq!(
        card["$schema"],
        "http://adaptivecards.io/schemas/adaptive-card.json"
    );
    let items = card["body"].as_array().unwrap();
    assert!(!items.is_empty());
    for i in items {
        match i["type"].as_str().unwrap() {
            "TextBlock" => assert!(i["text"].is_string()),
            "FactSet" => {
                for f in i["facts"].as_array().unwrap() {
                    assert!(f["title"].is_string() && f["value"].is_string());
                }
            }
            other => panic!("unexpected element {other}"),
        }
    }
    assert!(raw <= 28 * 1024, "Teams takes at most 28 KB, got {raw}");
}

#[tokio::test]
async fn teams_gets_an_adaptive_card_in_a_workflow_envelope() {
    let req = send(
        AlertProviderType::MsTeams,
        ProviderSettings::default(),
        alerts::rolled_back("k1"),
    )
    .await;
    let body = req.json();
    check_teams(&body, req.body.len());
    assert_eq!(
        body["attachments"][0]["content"]["body"][0]["color"],
        "Attention"
    );
    assert_carries_the_rollback(&all_text(&body));

    let big = send(
        AlertProviderType::MsTeams,
        ProviderSettings::default(),
        alerts::oversized("k2"),
    )
    .await;
    check_teams(&big.json(), big.body.len());
}

fn check_discord(body: &Value) {
    let embeds = body["embeds"].as_array().unwrap();
    assert_eq!(embeds.len(), 1);
    let e = &embeds[0];
    let mut total =
        text_len(&e["title"]) + text_len(&e["description"]) + text_len(&e["footer"]["text"]);
    assert!(text_len(&e["title"]) <= 256);
    assert!(text_len(&e["description"]) <= 4096);
    assert!(text_len(&e["footer"]["text"]) <= 2048);
    assert!(e["color"].is_u64());
    let fields = e["fields"].as_array().unwrap();
    assert!(fields.len() <= 25);
    for f in fields {
        assert!(text_len(&f["name"]) <= 256);
        assert!(text_len(&f["value"]) <= 1024);
        assert!(
            text_len(&f["value"]) > 0,
            "Discord rejects empty field values"
        );
        total += text_len(&f["name"]) + text_len(&f["value"]);
    }
    assert!(total <= 6000, "embed total {total}");
}

#[tokio::test]
async fn discord_gets_an_embed_within_discord_limits() {
    let settings = ProviderSettings {
        username: Some("weir".into()),
        ..Default::default()
    };
    let body = send(
        AlertProviderType::Discord,
        settings.clone(),
        alerts::rolled_back("k1"),
    )
    .await
    .json();
    check_discord(&body);
    assert_eq!(body["username"], "weir");
    assert_eq!(body["embeds"][0]["color"], 0xd62728);
    assert_eq!(body["allowed_mentions"]["parse"], serde_json::json!([]));
    assert_carries_the_rollback(&all_text(&body));

    let big = send(
        AlertProviderType::Discord,
        settings,
        alerts::oversized("k2"),
    )
    .await
    .json();
    check_discord(&big);
    let fields = big["embeds"][0]["fields"].as_array().unwrap();
    assert_eq!(
        fields.last().unwrap()["name"],
        "What you can do next",
        "the commands survive an oversized alert"
    );
}

fn check_google_chat(body: &Value, raw: usize) {
    let cards = body["cardsV2"].as_array().unwrap();
    assert_eq!(cards.len(), 1);
    assert!(!cards[0]["cardId"].as_str().unwrap().is_empty());
    let card = &cards[0]["card"];
    assert!(card["header"]["title"].is_string());
    let sections = card["sections"].as_array().unwrap();
    assert!(!sections.is_empty());
    let mut widgets = 0;
    for s in sections {
        let w = s["widgets"].as_array().unwrap();
        assert!(!w.is_empty(), "a section needs a widget");
        for x in w {
            let o = x.as_object().unwrap();
            assert_eq!(o.len(), 1, "a widget is exactly one kind: {x}");
            assert!(o.contains_key("textParagraph") || o.contains_key("decoratedText"));
            if let Some(d) = o.get("decoratedText") {
                assert!(d["text"].is_string());
            }
        }
        widgets += w.len();
    }
    assert!(widgets <= 100);
    assert!(raw <= 32_000, "a card is at most 32 KB, got {raw}");
}

#[tokio::test]
async fn google_chat_gets_a_cards_v2_card() {
    let req = send(
        AlertProviderType::GoogleChat,
        ProviderSettings::default(),
        alerts::rolled_back("k1"),
    )
    .await;
    check_google_chat(&req.json(), req.body.len());
    assert_carries_the_rollback(&all_text(&req.json()));

    let big = send(
        AlertProviderType::GoogleChat,
        ProviderSettings::default(),
        alerts::oversized("k2"),
    )
    .await;
    check_google_chat(&big.json(), big.body.len());
}

#[tokio::test]
async fn webhook_gets_the_documented_event_signed_with_the_shared_key() {
    let key = b"shared-signing-key".to_vec();
    let settings = ProviderSettings {
        token: Some("t0ken".into()),
        signing_key: Some(key.clone()),
        ..Default::default()
    };
    let req = send(
        AlertProviderType::Webhook,
        settings,
        alerts::rolled_back("shop/web.1.7-abc"),
    )
    .await;
    assert!(
        req.signature_valid(&key, &req.body),
        "the signature verifies with the shared key over the bytes received"
    );
    assert!(
        !req.signature_valid(b"another key", &req.body),
        "a receiver with another key rejects it"
    );
    let mut tampered = req.body.to_vec();
    let at = tampered.iter().position(|b| *b == b'5').expect("a digit");
    tampered[at] = b'9';
    assert!(
        !req.signature_valid(&key, &tampered),
        "a body changed by one byte is rejected"
    );
    assert_eq!(req.header("x-weir-event").as_deref(), Some("RolledBack"));
    assert_eq!(
        req.header("x-weir-delivery").as_deref(),
        Some("shop/web.1.7-abc")
    );
    assert_eq!(req.header("authorization").as_deref(), Some("Bearer t0ken"));

    let body = req.json();
    assert_eq!(body["apiVersion"], "weir.io/v1alpha1");
    assert_eq!(body["kind"], "RolloutAlert");
    assert_eq!(body["id"], "shop/web.1.7-abc");
    assert_eq!(body["event"], "RolledBack");
    assert_eq!(body["severity"], "error");
    assert_eq!(body["cluster"], "prod-eu");
    assert_eq!(
        body["rollout"],
        serde_json::json!({"namespace": "shop", "name": "web"})
    );
    assert_eq!(body["analysis"]["metric"], "error-rate");
    assert_eq!(body["analysis"]["value"], "[0.5]");
    assert_eq!(
        body["analysis"]["condition"],
        "successCondition: result[0] < 0.05"
    );
    assert_eq!(body["analysis"]["failures"], 1);
    assert_eq!(body["analysis"]["limit"], 0);
    assert_eq!(
        body["images"]["canary"][0],
        "web=registry.example/web:1.4.0"
    );
    assert_eq!(
        body["images"]["stable"][0],
        "web=registry.example/web:1.3.2"
    );
    assert_eq!(body["weight"], 20);
    assert_eq!(body["git"]["revertCommit"], "9f8e7d6");
    assert_eq!(body["git"]["revertedCommits"][0], "1a2b3c4");
    assert_eq!(
        body["nextSteps"][0]["command"],
        "kubectl weir get rollout web -n shop"
    );
}

#[tokio::test]
async fn an_unsigned_webhook_has_no_signature_header() {
    let req = send(
        AlertProviderType::Webhook,
        ProviderSettings::default(),
        alerts::rolled_back("k"),
    )
    .await;
    assert!(req.header("x-weir-signature-256").is_none());
    assert!(req.header("authorization").is_none());
}
