//! `kubectl weir get rollout` in plain mode, compared with a checked-in snapshot: a canary at step 3
//! of 5 whose analysis run has measured once, applied by a GitSync. Ages and pod-template hashes vary
//! between runs and are normalised; everything else must match exactly.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use support::{Cluster, apply_web_network, kubectl_path, repo_root, wait_for};

fn api(c: &Cluster, group: &str, version: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::namespaced_with(c.client(), "default", &ar)
}

async fn apply(a: &Api<DynamicObject>, obj: Value) {
    let name = obj["metadata"]["name"].as_str().unwrap().to_string();
    a.patch(
        &name,
        &PatchParams::apply("test").force(),
        &Patch::Apply(&obj),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {name}: {e}"));
}

/// A health endpoint whose error rate is under the threshold.
async fn health() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = Router::new().route(
        "/health",
        get(|| async {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                r#"{"errorRate": 0.01}"#,
            )
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{address}/health")
}

fn rollout(image: &str, commit: &str) -> Value {
    json!({
        "apiVersion": "weir.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "web", "annotations": {"weir.io/template-commit": commit},
            "labels": {"weir.io/gitsync-name": "apps", "weir.io/gitsync-namespace": "default"}},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": image}]}},
            "strategy": {"canary": {"stableService": "web-stable", "canaryService": "web-canary",
                "trafficRouting": {"gatewayAPI": {"httpRoutes": [{"name": "web"}]}},
                "steps": [{"setWeight": 25}, {"pause": {"duration": "1s"}},
                          {"analysis": {"templates": [{"templateName": "error-rate"}]}},
                          {"setWeight": 75}, {"pause": {}}]}}}
    })
}

/// Replaces what differs between runs, keeping every column where it is: each pod-template hash
/// becomes a placeholder of its own length, a run's numeric suffix becomes `#`s, and each age (with
/// the spaces after it) becomes `<a>` padded to the same width.
fn normalise(text: &str, stable: &str, canary: &str) -> String {
    let placeholder = |tag: char, hash: &str| {
        let mut p = format!("<{tag}");
        while p.len() + 1 < hash.len() {
            p.push('.');
        }
        p.push('>');
        p
    };
    let ages = regex::Regex::new(r"\b\d+(s|m\d+s|m|h|d)\b( *)").unwrap();
    // A run's name ends in the Rollout's event count when it was made.
    let run_suffix = regex::Regex::new(r"(-step\d+-)(\d+)\b").unwrap();
    text.lines()
        .map(|l| {
            let l = l
                .replace(stable, &placeholder('s', stable))
                .replace(canary, &placeholder('c', canary));
            let l = run_suffix.replace_all(&l, |caps: &regex::Captures| {
                format!("{}{}", &caps[1], "#".repeat(caps[2].len()))
            });
            ages.replace_all(&l, |caps: &regex::Captures| {
                format!("{:width$}", "<a>", width = caps[0].len().max(3))
            })
            .trim_end()
            .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[tokio::test(flavor = "multi_thread")]
async fn get_rollout_plain_matches_the_snapshot_for_a_canary_at_step_3_of_5() {
    let url = health().await;
    let c = Cluster::start("plugin-get").await;
    c.install_crds().await;
    let tasks = [
        tokio::spawn(weir::rollout::controller::run(c.client())),
        tokio::spawn(weir::analysis::controller::run(c.client())),
    ];
    apply_web_network(&c, Some(100)).await;
    // Measured once now, the second measurement an hour away: the run stays Running.
    apply(&api(&c, "weir.io", "v1alpha1", "AnalysisTemplate", "analysistemplates"), json!({"apiVersion": "weir.io/v1alpha1", "kind": "AnalysisTemplate",
        "metadata": {"name": "error-rate"},
        "spec": {"metrics": [{"name": "error-rate", "interval": "1h", "count": 2, "successCondition": "result < 0.05",
            "provider": {"web": {"url": url, "jsonPath": "{$.errorRate}"}}}]}})).await;
    let gitsyncs = api(&c, "weir.io", "v1alpha1", "GitSync", "gitsyncs");
    apply(
        &gitsyncs,
        json!({"apiVersion": "weir.io/v1alpha1", "kind": "GitSync", "metadata": {"name": "apps"},
        "spec": {"url": "https://git.example/apps.git", "path": "web"}}),
    )
    .await;
    gitsyncs
        .patch_status(
            "apps",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"lastAppliedRevision": "main@sha1:7e1f00d"}})),
        )
        .await
        .unwrap();

    let rollouts = api(&c, "weir.io", "v1alpha1", "Rollout", "rollouts");
    apply(&rollouts, rollout("registry.local/web:1.0", "a11ce01")).await;
    let status = || async {
        rollouts
            .get("web")
            .await
            .map(|r| r.data["status"].clone())
            .unwrap_or(Value::Null)
    };
    let first = wait_for("v1 Healthy", Duration::from_secs(60), || async {
        let s = status().await;
        (s["phase"] == "Healthy").then_some(s)
    })
    .await;
    apply(&rollouts, rollout("registry.local/web:1.1", "b0b0b02")).await;
    let at_step_3 = wait_for("step 3 measured once", Duration::from_secs(60), || async {
        let s = status().await;
        let run = s["canary"]["currentStepAnalysisRunStatus"]["name"]
            .as_str()?
            .to_string();
        let run = api(&c, "weir.io", "v1alpha1", "AnalysisRun", "analysisruns")
            .get(&run)
            .await
            .ok()?;
        let measured = run.data["status"]["metricResults"][0]["count"] == 1;
        (s["currentStepIndex"] == 2 && measured && s["weights"]["canary"] == 25).then_some(s)
    })
    .await;
    let stable = first["stableRS"].as_str().unwrap();
    let canary = at_step_3["currentPodHash"].as_str().unwrap();

    let direct = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-weir"))
        .args(["get", "rollout", "web", "--kubeconfig"])
        .arg(&c.kubeconfig)
        .output()
        .await
        .unwrap();
    assert!(
        direct.status.success(),
        "{}",
        String::from_utf8_lossy(&direct.stderr)
    );
    let text = String::from_utf8(direct.stdout).unwrap();
    assert!(!text.contains('\x1b'), "piped output is plain");
    let got = normalise(&text, stable, canary);

    // Through kubectl, with --no-color, the same text.
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_kubectl-weir"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = std::env::join_paths(std::iter::once(bin_dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let through = tokio::process::Command::new(kubectl_path())
        .args([
            "weir",
            "get",
            "rollout",
            "web",
            "--no-color",
            "--kubeconfig",
        ])
        .arg(&c.kubeconfig)
        .env("PATH", path)
        .output()
        .await
        .unwrap();
    assert!(
        through.status.success(),
        "{}",
        String::from_utf8_lossy(&through.stderr)
    );
    assert_eq!(
        normalise(&String::from_utf8(through.stdout).unwrap(), stable, canary),
        got
    );

    let expected_path = repo_root().join("tests/plugin_expected/get_rollout_canary_step3.txt");
    if std::env::var_os("WEIR_BLESS").is_some() {
        std::fs::write(&expected_path, &got).unwrap();
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap();
    assert_eq!(
        got, expected,
        "get rollout output changed; rerun with WEIR_BLESS=1 to accept:\n{got}"
    );
    for t in tasks {
        t.abort();
    }
}
