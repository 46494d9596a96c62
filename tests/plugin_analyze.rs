//! `kubectl weir analyze` against a real Prometheus: it prints every measurement and the decision,
//! and exits non-zero when the template would fail.

#[path = "support/prometheus.rs"]
mod prometheus;
mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use prometheus::{Prometheus, unix_now};
use support::{TempDir, kubectl_path};

/// An error ratio per service, with the latest sample 30s before now.
fn openmetrics() -> String {
    let late = unix_now() - 30;
    format!(
        "# HELP http_error_ratio Share of requests that failed.\n\
         # TYPE http_error_ratio gauge\n\
         http_error_ratio{{service=\"good\"}} 0.01 {late}\n\
         http_error_ratio{{service=\"bad\"}} 0.2 {late}\n\
         # EOF\n"
    )
}

/// The template as a team would keep it: the address is the in-cluster Prometheus, overridden here.
const TEMPLATE: &str = r#"apiVersion: weir.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: error-rate
spec:
  args:
  - name: service
  - name: threshold
    value: "0.05"
  metrics:
  - name: error-rate
    interval: 1s
    count: 2
    successCondition: result[0] < {{args.threshold}}
    provider:
      prometheus:
        address: http://prometheus.monitoring.svc:9090
        query: http_error_ratio{service="{{args.service}}"}
"#;

fn analyze(file: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-weir"))
        .arg("analyze")
        .arg("-f")
        .arg(file)
        .args(args)
        .output()
        .expect("run kubectl-weir analyze")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn analyze_prints_measurements_and_fails_when_the_template_would() {
    let prom = Prometheus::start(&openmetrics()).await;
    let dir = TempDir::new("plugin-analyze");
    let file = dir.path().join("error-rate.yaml");
    std::fs::write(&file, TEMPLATE).unwrap();
    let url = prom.url();

    // A healthy service: both measurements (honouring interval and count) pass.
    let out = analyze(&file, &["--arg", "service=good", "--prometheus", &url]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout(&out),
        "error-rate #1: value [0.01]  Successful  error-rate: [0.01] passed \"result[0] < 0.05\"\n\
         error-rate #2: value [0.01]  Successful  error-rate: [0.01] passed \"result[0] < 0.05\"\n\
         metric error-rate: Successful (2 measured: 2 successful, 0 failed, 0 inconclusive, 0 errors)\n\
         Decision: Successful: error-rate: [0.01] passed \"result[0] < 0.05\" (2 of 2 successful)\n"
    );

    // A failing service, once, through kubectl: the measurement, the decision, exit 1.
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_kubectl-weir"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = std::env::join_paths(std::iter::once(bin_dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let out = std::process::Command::new(kubectl_path())
        .args([
            "weir",
            "analyze",
            "--once",
            "--arg",
            "service=bad",
            "--prometheus",
            &url,
            "-f",
        ])
        .arg(&file)
        .env("PATH", path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with(
            "error-rate #1: value [0.2]  Failed  error-rate: [0.2] failed \"result[0] < 0.05\"\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("metric error-rate: Failed (1 measured: 0 successful, 1 failed"),
        "{text}"
    );
    assert!(
        text.lines().last().unwrap().starts_with("Decision: Failed"),
        "{text}"
    );

    // No data is Inconclusive, which fails the dry run too: weir never promotes on missing data.
    let out = analyze(
        &file,
        &["--once", "--arg", "service=idle", "--prometheus", &url],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("Inconclusive  error-rate: query returned no data"),
        "{}",
        stdout(&out)
    );

    // A threshold given on the command line overrides the template's.
    let out = analyze(
        &file,
        &[
            "--once",
            "--arg",
            "service=bad",
            "--arg",
            "threshold=0.5",
            "--prometheus",
            &url,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    // Without --prometheus the template's own address is used: a closed port here, an Error.
    let closed = dir.path().join("closed.yaml");
    std::fs::write(
        &closed,
        TEMPLATE.replace(
            "http://prometheus.monitoring.svc:9090",
            "http://127.0.0.1:1",
        ),
    )
    .unwrap();
    let out = analyze(&closed, &["--once", "--arg", "service=good"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("error-rate #1: value -  Error"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn analyze_refuses_unusable_input_with_one_line() {
    let dir = TempDir::new("plugin-analyze-bad");
    let file = dir.path().join("error-rate.yaml");
    std::fs::write(&file, TEMPLATE).unwrap();
    let not_template = dir.path().join("service.yaml");
    std::fs::write(
        &not_template,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n",
    )
    .unwrap();
    let cases: [(&Path, &[&str], &str); 4] = [
        (
            &file,
            &["--once"],
            "arguments without a value: service; pass --arg NAME=VALUE",
        ),
        (
            &file,
            &["--arg", "service"],
            "--arg \"service\": expected NAME=VALUE",
        ),
        (
            &file,
            &["--arg", "region=eu", "--arg", "service=x"],
            "the templates declare no argument \"region\"",
        ),
        (
            &not_template,
            &[],
            "no AnalysisTemplate or ClusterAnalysisTemplate in the file",
        ),
    ];
    for (path, args, message) in cases {
        let out = analyze(path, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(message),
            "{args:?}: {stderr}"
        );
    }
}
