//! `kubectl weir lint`: each invalid case is flagged at its file and line, valid files pass, and so
//! does every manifest of weir's own kinds in the repository.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use support::{TempDir, kubectl_path, repo_root};

fn lint(args: &[&Path]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-weir"));
    cmd.arg("lint");
    for a in args {
        cmd.arg("-f").arg(a);
    }
    cmd.output().expect("run kubectl-weir lint")
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One invalid manifest and the exact findings it must produce (`LINE: severity: message`).
struct Case {
    name: &'static str,
    yaml: &'static str,
    findings: &'static [&'static str],
}

const TEMPLATE: &str = "apiVersion: weir.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: error-rate
spec:
  args:
  - name: service
  metrics:
  - name: error-rate
    successCondition: result[0] < 0.05
    provider:
      prometheus:
        address: http://prometheus:9090
        query: rate(errors{service=\"{{args.service}}\"}[1m])
";

const CASES: &[Case] = &[
    Case {
        name: "not-yaml",
        yaml: "apiVersion: weir.io/v1alpha1\nkind: Rollout\nspec: [1, 2\n",
        findings: &["3: error: not valid YAML: unclosed bracket '['"],
    },
    Case {
        name: "schema",
        yaml: "apiVersion: weir.io/v1alpha1
kind: Rollout
metadata:
  name: web
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
  strategy:
    canary:
      stableSerivce: web-stable
      steps:
      - setWeight: 150
      - pause: {duration: 5x}
",
        findings: &[
            "13: error: unknown field \"spec.strategy.canary.stableSerivce\"",
            "15: error: spec.strategy.canary.steps[0].setWeight: Invalid value: 150: spec.strategy.canary.steps[0].setWeight in body should be less than or equal to 100",
            "16: error: spec.strategy.canary.steps[1].pause.duration: Invalid value: \"5x\": spec.strategy.canary.steps[1].pause.duration in body should match '^(0|([0-9]+(\\.[0-9]+)?(ms|s|m|h))+)$'",
        ],
    },
    Case {
        name: "kinds",
        yaml: "apiVersion: weir.io/v1
kind: Rollout
metadata:
  name: old
---
apiVersion: weir.io/v1alpha1
kind: Experiment
metadata:
  name: x
---
apiVersion: weir.io/v1alpha1
kind: GitSync
metadata:
  namespace: weir-system
spec:
  url: https://git.example/apps.git
",
        findings: &[
            "1: error: apiVersion weir.io/v1 is not served by weir; use weir.io/v1alpha1",
            "7: error: kind \"Experiment\" is not a weir kind (one of Rollout, AnalysisTemplate, ClusterAnalysisTemplate, AnalysisRun, GitSync, AlertProvider)",
            "14: error: metadata.name: Required value: name or generateName is required",
        ],
    },
    Case {
        name: "selector",
        yaml: "apiVersion: weir.io/v1alpha1
kind: Rollout
metadata:
  name: web
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: api}
  strategy:
    blueGreen:
      activeService: web-active
",
        findings: &[
            "7: error: spec.selector selects app=web, which spec.template.metadata.labels does not carry",
            "13: warning: Service \"web-active\" is not defined in the linted files",
        ],
    },
    Case {
        name: "references",
        yaml: "apiVersion: weir.io/v1alpha1
kind: Rollout
metadata:
  name: web
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
  strategy:
    canary:
      stableService: web-stable
      canaryService: web-canary
      trafficRouting:
        gatewayAPI:
          httpRoutes:
          - name: web
        istio:
          virtualServices:
          - name: web-vs
      steps:
      - analysis:
          templates:
          - templateName: missing
      - analysis:
          templates:
          - templateName: error-rate
          args:
          - name: unused
            value: x
---
apiVersion: v1
kind: Service
metadata:
  name: web-stable
",
        findings: &[
            "14: warning: Service \"web-canary\" is not defined in the linted files",
            "18: warning: HTTPRoute \"web\" is not defined in the linted files",
            "21: warning: VirtualService \"web-vs\" is not defined in the linted files",
            "25: error: AnalysisTemplate \"missing\" is not defined in the linted files; the Rollout would wait at this analysis",
            "27: error: argument \"service\" of the analysis templates is not supplied: add it to args",
            "30: warning: argument \"unused\" is not declared by any of the templates",
        ],
    },
    Case {
        name: "template",
        yaml: "apiVersion: weir.io/v1alpha1
kind: ClusterAnalysisTemplate
metadata:
  name: latency
spec:
  args:
  - name: service
  metrics:
  - name: bad-cel
    successCondition: result[0] <
    provider:
      prometheus:
        address: http://prometheus:9090
        query: up{service=\"{{args.service}}\", hash=\"{{args.hash}}\"}
  - name: bad-interval
    interval: often
    count: 2
    provider:
      web:
        url: http://health/{{args.service}}
",
        findings: &[
            "9: error: metric bad-cel refers to {{args.hash}}, which spec.args does not declare",
            "10: error: metric bad-cel: successCondition: condition \"result[0] <\" does not parse",
            "16: error: spec.metrics[1].interval: Invalid value: \"often\": spec.metrics[1].interval in body should match '^(0|([0-9]+(\\.[0-9]+)?(ms|s|m|h))+)$'",
        ],
    },
];

#[test]
fn lint_flags_each_invalid_case_at_its_file_and_line() {
    let dir = TempDir::new("plugin-lint");
    for case in CASES {
        let file = dir.path().join(format!("{}.yaml", case.name));
        let mut yaml = case.yaml.to_string();
        if case.name == "references" {
            // The template the second step names, defined in the same file.
            yaml.push_str("---\n");
            yaml.push_str(TEMPLATE);
        }
        std::fs::write(&file, yaml).unwrap();
        let out = lint(&[&file]);
        assert_eq!(out.status.code(), Some(1), "{}: {}", case.name, text(&out));
        let prefix = format!("{}:", file.display());
        let got: Vec<String> = text(&out)
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
            .collect();
        assert_eq!(
            got.len(),
            case.findings.len(),
            "{}:\n{}",
            case.name,
            text(&out)
        );
        for (got, want) in got.iter().zip(case.findings) {
            assert!(
                got.starts_with(want),
                "{}: {got:?} does not start with {want:?}",
                case.name
            );
        }
    }
    // All files at once: the same findings, and a summary.
    let out = lint(&[dir.path()]);
    assert_eq!(out.status.code(), Some(1));
    let total: usize = CASES.iter().map(|c| c.findings.len()).sum();
    assert_eq!(text(&out).lines().count(), total + 1, "{}", text(&out));
    assert!(
        text(&out).ends_with("6 files, 8 weir objects: 13 errors, 5 warnings\n"),
        "{}",
        text(&out)
    );
}

#[test]
fn warnings_alone_pass() {
    let dir = TempDir::new("plugin-lint-warn");
    let file = dir.path().join("bg.yaml");
    std::fs::write(&file, CASES[3].yaml.replace("{app: api}", "{app: web}")).unwrap();
    let out = lint(&[&file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("1 files, 1 weir objects: 0 errors, 1 warnings"),
        "{}",
        text(&out)
    );
}

#[test]
fn valid_manifests_and_the_repositorys_own_pass() {
    let root = repo_root();
    let mut paths: Vec<PathBuf> = vec![
        root.join("tests/plugin_lint/valid"),
        root.join("examples"),
        root.join("e2e"),
    ];
    let templates = root.join("analysis-templates");
    if templates.exists() {
        paths.push(templates);
    }
    for path in &paths {
        let out = lint(&[path]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            path.display(),
            text(&out)
        );
        assert!(
            text(&out).contains(": 0 errors, 0 warnings"),
            "{}: {}",
            path.display(),
            text(&out)
        );
    }
    // Through kubectl too: lint needs no cluster.
    let dir = root.join("tests/plugin_lint/valid");
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_kubectl-weir"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = std::env::join_paths(std::iter::once(bin_dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let out = std::process::Command::new(kubectl_path())
        .args(["weir", "lint", "-f"])
        .arg(&dir)
        .env("PATH", path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text(&out),
        "3 files, 4 weir objects: 0 errors, 0 warnings\n"
    );
}
