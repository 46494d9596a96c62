//! Secrets stay in their Secrets. `weir run`, logging everything at trace level, goes through a release that
//! uses a Git password (HTTP basic authentication), a chat webhook whose URL path is the
//! credential, a webhook bearer token and signing key, and a metrics bearer token; a GitSync with a
//! wrong password, an alert receiver that refuses connections and a metric whose URL path holds a
//! secret argument make the error paths run too.
//! Then weir's logs, every Event, every object but the Secrets, and every alert received are
//! searched for each secret value, its base64 form and the Basic header built from the password.

#[path = "support/canary_app.rs"]
mod canary_app;
#[path = "support/git_remote.rs"]
mod git_remote;
#[path = "support/receiver.rs"]
mod receiver;
#[path = "support/release.rs"]
mod release;
mod support;

use std::process::Stdio;
use std::time::Duration;

use git_remote::{Fixture, HttpRemote};
use kube::api::Api;
use release::{
    METRICS_TOKEN, app_files, error_rate_server, secret, wait_healthy_from_git, wait_reverted,
};
use serde_json::{Value, json};
use support::{Cluster, api, apply, wait_for, weir_run_command};
use weir::api::gitsync::GitSync;

const NS: &str = "default";
const WAIT: Duration = Duration::from_secs(90);
const GIT_USER: &str = "weir-bot";
const GIT_PASSWORD: &str = "gitpw-Q7x9Lm2vT3";
const WRONG_PASSWORD: &str = "wrongpw-Zr4T8k1sN6";
const HOOK_PATH: &str = "hookpath-Vb6n3Jq0W1";
const DOWN_HOOK_PATH: &str = "downpath-Hc5w2Ye8X4";
const WEBHOOK_TOKEN: &str = "whtoken-Pm3d7Ua4Y2";
const SIGNING_KEY: &str = "signkey-Ke9s1Rf6Z8";

fn base64(text: &str) -> String {
    serde_json::to_value(k8s_openapi::ByteString(text.as_bytes().to_vec()))
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

/// (what it is, the text that must not appear).
fn needles() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (what, value) in [
        ("git password", GIT_PASSWORD),
        ("wrong git password", WRONG_PASSWORD),
        ("webhook URL path", HOOK_PATH),
        ("unreachable webhook URL path", DOWN_HOOK_PATH),
        ("webhook token", WEBHOOK_TOKEN),
        ("signing key", SIGNING_KEY),
        ("metrics token", METRICS_TOKEN),
    ] {
        out.push((what.to_owned(), value.to_owned()));
        out.push((format!("{what} (base64)"), base64(value)));
    }
    for (what, password) in [
        ("git Basic header", GIT_PASSWORD),
        ("wrong git Basic header", WRONG_PASSWORD),
    ] {
        out.push((what.to_owned(), base64(&format!("{GIT_USER}:{password}"))));
    }
    out
}

/// Every place in `text` (named `source`) where a secret shows, with its line.
fn leaks(source: &str, text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (what, needle) in needles() {
        for line in text.lines().filter(|l| l.contains(&needle)) {
            let line: String = line.chars().take(300).collect();
            found.push(format!("{source}: the {what} in: {line}"));
        }
    }
    found
}

async fn weir_object(c: &Cluster, kind: &str, plural: &str, object: Value) {
    apply(&api(c, "weir.io", "v1alpha1", kind, plural), object).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_events_statuses_or_alerts() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (base, _rates) = error_rate_server().await;
    let c = Cluster::start("secret-leak").await;
    c.install_crds().await;
    let fx = Fixture::new("secret-leak");
    let basic = format!("Basic {}", base64(&format!("{GIT_USER}:{GIT_PASSWORD}")));
    let remote = HttpRemote::start(&fx.served, &[&basic]).await;
    let team = receiver::Receiver::start().await;
    let down_port = receiver::unused_port();

    secret(
        &c,
        "git-creds",
        json!({"username": GIT_USER, "password": GIT_PASSWORD}),
    )
    .await;
    secret(
        &c,
        "git-wrong",
        json!({"username": GIT_USER, "password": WRONG_PASSWORD}),
    )
    .await;
    secret(&c, "metrics-token", json!({"token": METRICS_TOKEN})).await;
    secret(
        &c,
        "team-webhook",
        json!({"address": team.url(&format!("/services/T0/{HOOK_PATH}")), "token": WEBHOOK_TOKEN,
               "signingKey": SIGNING_KEY}),
    )
    .await;
    secret(
        &c,
        "down-webhook",
        json!({"address": format!("http://127.0.0.1:{down_port}/services/T0/{DOWN_HOOK_PATH}")}),
    )
    .await;
    weir_object(
        &c,
        "AlertProvider",
        "alertproviders",
        json!({"apiVersion": "weir.io/v1alpha1", "kind": "AlertProvider",
        "metadata": {"name": "team"},
        "spec": {"type": "webhook", "secretRef": {"name": "team-webhook"},
                 "signingSecretRef": {"name": "team-webhook", "key": "signingKey"},
                 "default": true, "events": ["RolledBack", "GitReverted"]}}),
    )
    .await;
    weir_object(&c, "AlertProvider", "alertproviders", json!({"apiVersion": "weir.io/v1alpha1", "kind": "AlertProvider",
        "metadata": {"name": "down"},
        "spec": {"type": "slack", "secretRef": {"name": "down-webhook"}, "default": true, "events": ["RolledBack"]}})).await;
    fx.commit_owned("web good", &app_files("good", &base, false));
    weir_object(&c, "GitSync", "gitsyncs", json!({"apiVersion": "weir.io/v1alpha1", "kind": "GitSync",
        "metadata": {"name": "apps"},
        "spec": {"url": remote.url("apps.git"), "ref": {"branch": "main"}, "path": "apps", "interval": "1s",
                 "secretRef": {"name": "git-creds"},
                 "revert": {"author": {"name": "weir bot", "email": "bot@weir.example"}}}})).await;
    weir_object(&c, "GitSync", "gitsyncs", json!({"apiVersion": "weir.io/v1alpha1", "kind": "GitSync",
        "metadata": {"name": "wrong-password"},
        "spec": {"url": remote.url("apps.git"), "ref": {"branch": "main"}, "path": "nothing", "interval": "1s",
                 "secretRef": {"name": "git-wrong"}}})).await;

    let log_path = fx.dir.path().join("weir.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut weir = weir_run_command(&c.kubeconfig, &fx.dir.path().join("cache"))
        .arg("--metrics-addr")
        .arg("off")
        .env("RUST_LOG", "trace")
        .env("NO_COLOR", "1")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start weir run");

    let stable = wait_healthy_from_git(&c).await;
    let bad = fx.commit_owned("web bad", &app_files("bad", &base, false));
    wait_reverted(&c, &bad, &stable).await;
    // The secrets were used: the alerts came signed and with the token, to the secret path.
    let alerts = team.wait_accepted(2, WAIT).await;
    for a in &alerts {
        assert!(a.path.ends_with(HOOK_PATH), "{}", a.path);
        assert!(a.signature_valid(SIGNING_KEY.as_bytes(), &a.body));
        assert_eq!(
            a.header("authorization"),
            Some(format!("Bearer {WEBHOOK_TOKEN}"))
        );
    }
    // A metric whose URL carries a secret argument in its path fails (404): the error names the
    // URL, and the run's status must not show the argument.
    weir_object(&c, "AnalysisRun", "analysisruns", json!({"apiVersion": "weir.io/v1alpha1", "kind": "AnalysisRun",
        "metadata": {"name": "secret-in-path"},
        "spec": {"args": [{"name": "token", "valueFrom": {"secretKeyRef": {"name": "metrics-token", "key": "token"}}}],
                 "metrics": [{"name": "probe", "count": 1, "successCondition": "result < 1",
                              "provider": {"web": {"url": format!("{base}/rate/{{{{args.token}}}}/missing"),
                                                   "jsonPath": "{$.errorRate}"}}}]}})).await;
    let runs = api(&c, "weir.io", "v1alpha1", "AnalysisRun", "analysisruns");
    let message = wait_for("the secret-in-path metric errored", WAIT, || async {
        let run = runs.get("secret-in-path").await.ok()?;
        let m = run.data["status"]["metricResults"][0]["measurements"][0].clone();
        (m["phase"] == "Error").then(|| m["message"].as_str().unwrap_or("").to_owned())
    })
    .await;
    assert!(
        message.contains("404") && message.contains("/rate/***/missing"),
        "{message}"
    );

    // The error paths ran: the unreachable receiver is being retried, the wrong password refused.
    let providers = api(&c, "weir.io", "v1alpha1", "AlertProvider", "alertproviders");
    wait_for("the unreachable receiver retried", WAIT, || async {
        let p = providers.get("down").await.ok()?;
        let pending = p.data["status"]["pendingAlerts"]
            .as_array()?
            .first()?
            .clone();
        (pending["attempts"].as_u64()? >= 2).then_some(())
    })
    .await;
    let gitsyncs: Api<GitSync> = Api::namespaced(c.client(), NS);
    wait_for("the wrong password refused", WAIT, || async {
        let g = gitsyncs.get("wrong-password").await.ok()?;
        let ready = g
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")?;
        (ready.status == "False").then_some(())
    })
    .await;

    weir.start_kill().unwrap();
    let _ = weir.wait().await;
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logs.contains("DEBUG") && logs.contains("alert delivery will be retried"),
        "weir logged at debug level and below, retries included"
    );

    // The search finds secrets where they do belong: in the Secrets, in base64.
    let secrets = c
        .kubectl_ok(&["get", "secrets", "-n", NS, "-o", "yaml"])
        .await;
    let in_secrets = leaks("Secrets", &secrets);
    for what in [
        "git password (base64)",
        "webhook token (base64)",
        "signing key (base64)",
    ] {
        assert!(
            in_secrets
                .iter()
                .any(|l| l.contains(&format!("the {what} in"))),
            "the search misses the {what} in the Secrets themselves"
        );
    }

    let mut found = leaks("weir's log", &logs);
    let events = c
        .kubectl_ok(&["get", "events", "--all-namespaces", "-o", "yaml"])
        .await;
    assert!(events.contains("RolloutAborted") && events.contains("GitReverted"));
    found.extend(leaks("Events", &events));
    let kinds = c
        .kubectl_ok(&["api-resources", "--verbs=list", "-o", "name"])
        .await;
    let kinds: Vec<&str> = kinds
        .lines()
        .map(str::trim)
        .filter(|k| !k.is_empty() && *k != "secrets")
        .collect();
    assert!(kinds.contains(&"alertproviders.weir.io"), "{kinds:?}");
    let objects = c
        .kubectl_ok(&["get", &kinds.join(","), "--all-namespaces", "-o", "yaml"])
        .await;
    assert!(objects.contains("pendingAlerts") && objects.contains("lastAppliedRevision"));
    found.extend(leaks("objects", &objects));
    for a in team.requests() {
        found.extend(leaks("an alert body", &String::from_utf8_lossy(&a.body)));
    }
    assert!(found.is_empty(), "secrets leaked:\n{}", found.join("\n"));
    drop(remote);
}
