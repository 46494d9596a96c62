//! The real kubectl binary against the emulator: every command a user runs in the README and the e2e suite.

mod support;

use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use support::{Cluster, kubectl_path, repo_root, wait_for};
use tokio::io::{AsyncBufReadExt, BufReader};

const ROLLOUT: &str = r#"
apiVersion: weir.io/v1alpha1
kind: Rollout
metadata:
  name: web
  namespace: default
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: registry.local/web:1.0
  strategy:
    canary:
      canaryService: web-canary
      stableService: web-stable
      steps:
      - setWeight: 20
      - pause: {}
"#;

async fn with_crds(tag: &str) -> Cluster {
    let c = Cluster::start(tag).await;
    let crds = repo_root().join("crds");
    let out = c.kubectl_ok(&["apply", "-f", crds.to_str().unwrap()]).await;
    for kind in [
        "rollouts",
        "analysistemplates",
        "clusteranalysistemplates",
        "analysisruns",
        "gitsyncs",
        "alertproviders",
    ] {
        assert!(
            out.contains(&format!(
                "customresourcedefinition.apiextensions.k8s.io/{kind}.weir.io created"
            )),
            "apply -f crds/ output lacks {kind}: {out}"
        );
    }
    c
}

async fn apply_rollout(c: &Cluster) {
    let file = c.dir.path().join("rollout.yaml");
    std::fs::write(&file, ROLLOUT).unwrap();
    let out = c
        .kubectl_ok(&["apply", "--server-side", "-f", file.to_str().unwrap()])
        .await;
    assert_eq!(out.trim(), "rollout.weir.io/web serverside-applied");
}

fn yaml(s: &str) -> Value {
    serde_saphyr::from_str(s).expect("kubectl printed valid YAML")
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_crds_then_server_side_apply_and_get_yaml() {
    let c = with_crds("kubectl-apply").await;
    let crds = c.kubectl_ok(&["get", "crds", "-o", "name"]).await;
    assert!(crds.contains("customresourcedefinition.apiextensions.k8s.io/rollouts.weir.io"));
    // Re-applying the same files is a no-op, as with a real cluster.
    let again = c
        .kubectl_ok(&["apply", "-f", repo_root().join("crds").to_str().unwrap()])
        .await;
    assert!(again.contains("rollouts.weir.io unchanged"), "{again}");

    apply_rollout(&c).await;
    let obj = yaml(
        &c.kubectl_ok(&[
            "get",
            "rollout",
            "web",
            "-o",
            "yaml",
            "--show-managed-fields",
        ])
        .await,
    );
    assert_eq!(obj["kind"], "Rollout");
    assert_eq!(obj["spec"]["replicas"], 3);
    assert_eq!(
        obj["spec"]["strategy"]["canary"]["steps"][0]["setWeight"],
        20
    );
    assert_eq!(obj["metadata"]["generation"], 1);
    assert!(
        obj["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| u.len() == 36)
    );
    let managers: Vec<&str> = obj["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields")
        .iter()
        .map(|m| m["manager"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        managers,
        vec!["kubectl"],
        "server-side apply records kubectl as the field manager"
    );
    assert_eq!(obj["metadata"]["managedFields"][0]["operation"], "Apply");

    // The short name and printer columns work like a real cluster's.
    let table = c.kubectl_ok(&["get", "ro"]).await;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, vec!["NAME", "PHASE", "STEP", "WEIGHT", "AGE"]);
    assert!(table.lines().nth(1).unwrap().starts_with("web "));
}

#[tokio::test(flavor = "multi_thread")]
async fn get_watch_prints_concurrent_changes() {
    let c = with_crds("kubectl-watch").await;
    apply_rollout(&c).await;
    let mut child = tokio::process::Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .arg("--cache-dir")
        .arg(c.dir.path().join("kube-cache"))
        .args(["get", "configmaps", "-w", "--output-watch-events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn kubectl get -w");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // kubectl prints nothing until there is something; make the change while it watches.
    let cms: Api<ConfigMap> = Api::default_namespaced(c.client());
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "watched"}, "data": {"a": "1"}});
    let mut seen = Vec::new();
    let read = async {
        // Wait until the watch is established so the change is not folded into the initial list.
        wait_for(
            "kubectl's watch to open",
            Duration::from_secs(20),
            || async {
                let stats = c.emulator.app.stats_json();
                (stats["requests"]["watch"].as_u64().unwrap_or(0) >= 1).then_some(())
            },
        )
        .await;
        cms.patch("watched", &PatchParams::apply("test"), &Patch::Apply(&cm))
            .await
            .unwrap();
        let changed = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "watched"}, "data": {"a": "2"}});
        cms.patch(
            "watched",
            &PatchParams::apply("test"),
            &Patch::Apply(&changed),
        )
        .await
        .unwrap();
        cms.delete("watched", &Default::default()).await.unwrap();
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push(line);
            if seen.iter().any(|l| l.starts_with("DELETED")) {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("kubectl get -w printed the changes");
    let events: Vec<String> = seen
        .iter()
        .filter(|l| l.contains("watched"))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(
        events,
        vec!["ADDED", "MODIFIED", "DELETED"],
        "lines: {seen:?}"
    );
    let _ = child.kill().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_merge_json_and_strategic() {
    let c = with_crds("kubectl-patch").await;
    apply_rollout(&c).await;
    let out = c
        .kubectl_ok(&[
            "patch",
            "rollout",
            "web",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"replicas":5}}"#,
        ])
        .await;
    assert_eq!(out.trim(), "rollout.weir.io/web patched");
    let out = c
        .kubectl_ok(&[
            "patch",
            "rollout",
            "web",
            "--type",
            "json",
            "-p",
            r#"[{"op":"replace","path":"/spec/strategy/canary/steps/0/setWeight","value":30}]"#,
        ])
        .await;
    assert_eq!(out.trim(), "rollout.weir.io/web patched");
    let obj = yaml(&c.kubectl_ok(&["get", "rollout", "web", "-o", "yaml"]).await);
    assert_eq!(obj["spec"]["replicas"], 5);
    assert_eq!(
        obj["spec"]["strategy"]["canary"]["steps"][0]["setWeight"],
        30
    );
    assert_eq!(
        obj["metadata"]["generation"], 3,
        "each spec change bumps generation"
    );

    // A failing JSON patch test op is rejected and changes nothing.
    let failed = c
        .kubectl(&["patch", "rollout", "web", "--type", "json", "-p", r#"[{"op":"test","path":"/spec/replicas","value":1},{"op":"replace","path":"/spec/replicas","value":9}]"#])
        .await;
    assert!(!failed.status.success());
    let obj = yaml(&c.kubectl_ok(&["get", "rollout", "web", "-o", "yaml"]).await);
    assert_eq!(obj["spec"]["replicas"], 5);

    // Strategic merge patch merges containers by name on built-in kinds.
    let deploy = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"api"},"spec":{"replicas":1,"selector":{"matchLabels":{"app":"api"}},"template":{"metadata":{"labels":{"app":"api"}},"spec":{"containers":[{"name":"api","image":"api:1"},{"name":"sidecar","image":"proxy:1"}]}}}}"#;
    let file = c.dir.path().join("deploy.json");
    std::fs::write(&file, deploy).unwrap();
    c.kubectl_ok(&["apply", "-f", file.to_str().unwrap()]).await;
    let out = c
        .kubectl_ok(&[
            "patch",
            "deployment",
            "api",
            "--type",
            "strategic",
            "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"api","image":"api:2"}]}}}}"#,
        ])
        .await;
    assert_eq!(out.trim(), "deployment.apps/api patched");
    let obj = yaml(
        &c.kubectl_ok(&["get", "deployment", "api", "-o", "yaml"])
            .await,
    );
    let containers = obj["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(
        containers.len(),
        2,
        "the sidecar survives a strategic merge"
    );
    assert_eq!(containers[0]["image"], "api:2");
    assert_eq!(containers[1]["image"], "proxy:1");

    // Custom resources do not support strategic merge patch, as on a real cluster.
    let smp = c
        .kubectl(&[
            "patch",
            "rollout",
            "web",
            "--type",
            "strategic",
            "-p",
            r#"{"spec":{"replicas":1}}"#,
        ])
        .await;
    assert!(!smp.status.success());
    let err = String::from_utf8_lossy(&smp.stderr);
    assert!(
        err.contains("unknown format") || err.contains("strategic merge patch"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_cascades_through_owner_references() {
    let c = Cluster::start("kubectl-delete").await;
    let cms: Api<ConfigMap> = Api::default_namespaced(c.client());
    let mk = |name: &str, owner: Option<(&str, &str)>| {
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
        if let Some((oname, uid)) = owner {
            cm["metadata"]["ownerReferences"] =
                json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": oname, "uid": uid}]);
        }
        cm
    };
    for (policy, owner) in [("background", "bg"), ("foreground", "fg"), ("orphan", "or")] {
        let o = cms
            .create(
                &Default::default(),
                &serde_json::from_value(mk(owner, None)).unwrap(),
            )
            .await
            .unwrap();
        let uid = o.metadata.uid.clone().unwrap();
        let child = format!("{owner}-child");
        let grandchild = format!("{owner}-grandchild");
        let c1 = cms
            .create(
                &Default::default(),
                &serde_json::from_value(mk(&child, Some((owner, &uid)))).unwrap(),
            )
            .await
            .unwrap();
        let uid1 = c1.metadata.uid.clone().unwrap();
        cms.create(
            &Default::default(),
            &serde_json::from_value(mk(&grandchild, Some((&child, &uid1)))).unwrap(),
        )
        .await
        .unwrap();
        let out = c
            .kubectl_ok(&["delete", "configmap", owner, &format!("--cascade={policy}")])
            .await;
        assert_eq!(out.trim(), format!("configmap \"{owner}\" deleted"));
        let names = c.kubectl_ok(&["get", "configmaps", "-o", "name"]).await;
        assert!(
            !names.contains(&format!("configmap/{owner}\n")),
            "{policy}: owner gone: {names}"
        );
        if policy == "orphan" {
            assert!(
                names.contains(&format!("configmap/{child}")),
                "orphan keeps the child: {names}"
            );
            let kept = cms.get(&child).await.unwrap();
            assert!(
                kept.metadata
                    .owner_references
                    .unwrap_or_default()
                    .is_empty(),
                "orphaned child loses its owner reference"
            );
        } else {
            assert!(
                !names.contains(&child),
                "{policy}: child collected: {names}"
            );
            assert!(
                !names.contains(&grandchild),
                "{policy}: grandchild collected: {names}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_rollout_strategy() {
    let c = with_crds("kubectl-explain").await;
    let out = c.kubectl_ok(&["explain", "rollout.spec.strategy"]).await;
    assert!(out.contains("KIND:       Rollout"), "{out}");
    assert!(out.contains("GROUP:      weir.io"), "{out}");
    assert!(out.contains("FIELD: strategy <Object>"), "{out}");
    for field in ["canary\t<Object>", "blueGreen\t<Object>"] {
        assert!(out.contains(field), "explain lists {field}: {out}");
    }
    let steps = c
        .kubectl_ok(&["explain", "rollout.spec.strategy.canary.steps.setWeight"])
        .await;
    assert!(steps.contains("<integer>"), "{steps}");
}

#[tokio::test(flavor = "multi_thread")]
async fn readme_example_applies_with_test_crds() {
    let c = with_crds("kubectl-example").await;
    c.kubectl_ok(&[
        "apply",
        "-f",
        repo_root().join("e2e/crds").to_str().unwrap(),
    ])
    .await;
    let out = c
        .kubectl_ok(&[
            "apply",
            "-f",
            repo_root()
                .join("examples/canary-gateway.yaml")
                .to_str()
                .unwrap(),
        ])
        .await;
    for line in [
        "service/web-stable created",
        "service/web-canary created",
        "httproute.gateway.networking.k8s.io/web created",
        "rollout.weir.io/web created",
    ] {
        assert!(out.contains(line), "{line} in {out}");
    }
    let again = c
        .kubectl_ok(&[
            "apply",
            "-f",
            repo_root()
                .join("examples/canary-gateway.yaml")
                .to_str()
                .unwrap(),
        ])
        .await;
    assert!(again.contains("rollout.weir.io/web unchanged"), "{again}");
}

#[tokio::test(flavor = "multi_thread")]
async fn weir_run_embedded_serves_kubectl() {
    let dir = support::TempDir::new("run-embedded");
    let kubeconfig = dir.path().join("kc");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "--embedded", "--emulator-kubeconfig"])
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn weir run --embedded");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let printed = tokio::time::timeout(Duration::from_secs(30), async {
        let mut out = Vec::new();
        while let Some(l) = lines.next_line().await.unwrap() {
            let done = l.starts_with("connected to Kubernetes");
            out.push(l);
            if done {
                break;
            }
        }
        out
    })
    .await
    .expect("weir run --embedded reports it is connected");
    assert!(
        printed.iter().any(|l| l.starts_with("kubeconfig: ")),
        "{printed:?}"
    );
    let out = tokio::process::Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .args(["get", "crd", "rollouts.weir.io", "-o", "name"])
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "customresourcedefinition.apiextensions.k8s.io/rollouts.weir.io",
        "the embedded run installed weir's CRDs"
    );
    let _ = child.kill().await;
}
