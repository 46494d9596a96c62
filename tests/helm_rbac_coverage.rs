//! The permissions listed in src/rbac.rs (and so granted by the Helm chart, which tests/helm_chart.rs
//! holds to exactly that list) match what weir's code really asks the API for, both ways: `weir run`
//! (with leader election) goes through a whole release against the emulator (GitSync from a private
//! remote, a canary with a Secret-fed analysis, a failed release rolled back and reverted in Git, a
//! chat alert, alert providers and a ConfigMap applied and pruned from Git). Every request it made
//! must be allowed by a listed rule, and every listed rule must have been used, unless it is one
//! this release cannot reach and is named with the code that needs it.

#[path = "support/canary_app.rs"]
mod canary_app;
#[path = "support/git_remote.rs"]
mod git_remote;
#[path = "support/receiver.rs"]
mod receiver;
#[path = "support/release.rs"]
mod release;
mod support;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use canary_app::Canary;
use git_remote::{Fixture, HttpRemote};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use release::{
    METRICS_TOKEN, app_files, error_rate_server, named_rollout, secret, wait_healthy_from_git,
    wait_reverted,
};
use serde_json::{Value, json};
use support::{Cluster, wait_for, weir_run_command};
use weir::rbac::{GITSYNC_DEFAULT_APPLY, RULES, USER_AGENT, allowed};

const NS: &str = "default";
const WAIT: Duration = Duration::from_secs(90);
const GIT_TOKEN: &str = "rbac-coverage-token";

/// A second app routed by an Istio VirtualService, judged by a ClusterAnalysisTemplate that Git also
/// holds (cluster-scoped, so GitSync applies it outside any namespace).
fn api_files(version: &str, base: &str) -> Vec<(&'static str, String)> {
    let rollout = format!(
        "apiVersion: weir.io/v1alpha1\nkind: Rollout\nmetadata:\n  name: api\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: api}}\n  template:\n    metadata:\n      labels: {{app: api}}\n    spec:\n      containers:\n      - name: api\n        image: api:{version}\n  strategy:\n    canary:\n      stableService: api-stable\n      canaryService: api-canary\n      scaleDownDelaySeconds: 1\n      trafficRouting:\n        istio:\n          virtualServices:\n          - name: api\n            routes: [primary]\n      steps:\n      - setWeight: 50\n      - analysis:\n          templates:\n          - templateName: healthy\n            clusterScope: true\n      - setWeight: 100\n"
    );
    let services = Canary {
        name: "api",
        ..canary_app::WEB
    }
    .services_yaml();
    let route = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: api\nspec:\n  hosts: [api.example.com]\n  http:\n  - name: primary\n    route:\n    - destination: {host: api-stable}\n      weight: 100\n    - destination: {host: api-canary}\n      weight: 0\n";
    let template = format!(
        "apiVersion: weir.io/v1alpha1\nkind: ClusterAnalysisTemplate\nmetadata:\n  name: healthy\nspec:\n  args:\n  - name: token\n    valueFrom:\n      secretKeyRef:\n        name: metrics-token\n        key: token\n  metrics:\n  - name: error-rate\n    interval: 1s\n    count: 1\n    successCondition: \"result < 0.05\"\n    provider:\n      web:\n        url: {base}/rate/good\n        headers:\n        - key: Authorization\n          value: \"Bearer {{{{args.token}}}}\"\n        jsonPath: \"{{$.errorRate}}\"\n"
    );
    vec![
        ("apps/api/rollout.yaml", rollout),
        ("apps/api/services.yaml", services),
        ("apps/api/route.yaml", route.to_string()),
        ("apps/cluster/healthy.yaml", template),
    ]
}

async fn apply(c: &Cluster, resource: ApiResource, object: Value) {
    let api: Api<DynamicObject> = Api::namespaced_with(c.client(), NS, &resource);
    let name = object["metadata"]["name"].as_str().unwrap().to_owned();
    api.patch(
        &name,
        &PatchParams::apply("test").force(),
        &Patch::Apply(&object),
    )
    .await
    .unwrap_or_else(|e| panic!("applying {name}: {e}"));
}

fn weir_kind(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("weir.io", "v1alpha1", kind), plural)
}

/// weir's requests as the emulator counted them: (verb, group, resource[/subresource]).
fn weirs_requests(c: &Cluster) -> BTreeSet<(String, String, String)> {
    let stats = c.emulator.app.stats_json();
    stats["requestsByResource"]
        .as_array()
        .expect("requestsByResource")
        .iter()
        .filter(|r| r["userAgent"] == USER_AGENT)
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap().to_owned();
            (s("verb"), s("group"), s("resource"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_weir_makes_in_a_release_is_granted_by_the_listed_rules() {
    let (base, _rates) = error_rate_server().await;
    let c = Cluster::start("rbac-coverage").await;
    c.install_crds().await;
    let fx = Fixture::new("rbac-coverage");
    let remote = HttpRemote::start(&fx.served, &[&format!("Bearer {GIT_TOKEN}")]).await;
    let team = receiver::Receiver::start().await;
    secret(&c, "git-creds", json!({"bearerToken": GIT_TOKEN})).await;
    secret(&c, "metrics-token", json!({"token": METRICS_TOKEN})).await;
    secret(&c, "team-webhook", json!({"address": team.url("/weir")})).await;
    // The alert providers come from Git too; a later commit retires one, for prune.
    let mut files = app_files("good", &base, true);
    files.extend(api_files("v1", &base));
    files.push((ALERTS_FILE, alert_providers(true)));
    fx.commit_owned("api v1, web good", &files);
    apply(
        &c,
        weir_kind("GitSync", "gitsyncs"),
        json!({"apiVersion": "weir.io/v1alpha1", "kind": "GitSync", "metadata": {"name": "apps"},
            "spec": {"url": remote.url("apps.git"), "ref": {"branch": "main"}, "path": "apps", "interval": "1s",
                     "prune": true, "secretRef": {"name": "git-creds"},
                     "revert": {"author": {"name": "weir bot", "email": "bot@weir.example"}}}}),
    )
    .await;

    let _weir = weir_run_command(&c.kubeconfig, &fx.dir.path().join("cache"))
        .args([
            "--leader-elect",
            "--lease-namespace",
            NS,
            "--retry-period",
            "200ms",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start weir run");

    // api v2 goes through its Istio canary and its cluster-wide analysis.
    let api_v2 = fx.commit_owned("api v2", &api_files("v2", &base));
    wait_for("api:v2 promoted through Istio", WAIT, || async {
        let s = named_rollout(&c, "api").await?.status?;
        (s.stable_commit.as_deref() == Some(api_v2.as_str()) && s.current_pod_hash == s.stable_rs)
            .then_some(())
    })
    .await;
    let stable = wait_healthy_from_git(&c).await;
    // The bad release fails its analysis, is rolled back and reverted in Git, and the team hears of it.
    let bad = fx.commit_owned("web bad", &app_files("bad", &base, true));
    wait_reverted(&c, &bad, &stable).await;
    let alerts: Vec<Value> = team
        .wait_accepted(2, WAIT)
        .await
        .iter()
        .map(receiver::Recorded::json)
        .collect();
    let events: BTreeSet<&str> = alerts.iter().filter_map(|a| a["event"].as_str()).collect();
    assert_eq!(
        events,
        BTreeSet::from(["GitReverted", "RolledBack"]),
        "{alerts:?}"
    );
    // A commit that drops the ConfigMap: GitSync prunes it.
    fx.work_git(&["pull", "--quiet", "--rebase", "origin", "main"]);
    std::fs::remove_file(fx.work.join("apps/web/config.yaml")).unwrap();
    fx.commit(
        "drop web-config and the retired alert provider",
        &[(ALERTS_FILE, &alert_providers(false))],
    );
    let configs: Api<ConfigMap> = Api::namespaced(c.client(), NS);
    wait_for("web-config pruned", WAIT, || async {
        configs
            .get_opt("web-config")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let providers: Api<DynamicObject> = Api::namespaced_with(
        c.client(),
        NS,
        &weir_kind("AlertProvider", "alertproviders"),
    );
    wait_for("the retired alert provider pruned", WAIT, || async {
        providers
            .get_opt("retired")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;

    let observed = weirs_requests(&c);
    let granted: Vec<_> = RULES.iter().chain(GITSYNC_DEFAULT_APPLY).copied().collect();
    let ungranted: Vec<&(String, String, String)> = observed
        .iter()
        .filter(|(verb, group, resource)| !allowed(&granted, verb, group, resource))
        .collect();
    assert!(
        ungranted.is_empty(),
        "weir made requests that src/rbac.rs (and so the chart) does not grant: {ungranted:?}"
    );
    // The scenario reached every controller, so the check above had something to check.
    for (verb, group, resource) in [
        ("watch", "weir.io", "rollouts"),
        ("update", "weir.io", "rollouts/status"),
        ("create", "apps", "replicasets"),
        ("patch", "gateway.networking.k8s.io", "httproutes"),
        ("patch", "networking.istio.io", "virtualservices"),
        ("get", "weir.io", "clusteranalysistemplates"),
        ("patch", "weir.io", "clusteranalysistemplates"),
        ("create", "weir.io", "analysisruns"),
        ("update", "weir.io", "analysisruns/status"),
        ("update", "weir.io", "gitsyncs/status"),
        ("update", "weir.io", "alertproviders/status"),
        ("watch", "", "events"),
        ("create", "", "events"),
        ("get", "", "secrets"),
        ("patch", "", "configmaps"),
        ("delete", "", "configmaps"),
        ("patch", "weir.io", "alertproviders"),
        ("delete", "weir.io", "alertproviders"),
        ("create", "coordination.k8s.io", "leases"),
        ("update", "coordination.k8s.io", "leases"),
    ] {
        assert!(
            observed.contains(&(verb.into(), group.into(), resource.into())),
            "weir never made {verb} {group}/{resource}; observed: {observed:?}"
        );
    }
    // Least privilege the other way: every listed permission was used here, or is one that this
    // release cannot reach and is named, with the code that needs it, in NOT_EXERCISED.
    let unused: BTreeSet<String> = RULES
        .iter()
        .flat_map(|r| r.verbs.iter().map(move |v| (r, *v)))
        .filter(|(r, v)| {
            !observed
                .iter()
                .any(|(ov, og, or)| ov == v && og == r.group && or == r.resource)
        })
        .map(|(r, v)| format!("{} {v} {}/{}", r.controller, r.group, r.resource))
        .collect();
    let justified: BTreeSet<String> = NOT_EXERCISED.iter().map(|(r, _)| (*r).to_owned()).collect();
    assert_eq!(
        unused, justified,
        "src/rbac.rs lists permissions this release did not use: remove them, or name them in \
         NOT_EXERCISED with the code that needs them (and drop entries the release now uses)"
    );
}

/// Listed permissions the release above does not use, each with the code path that does.
const NOT_EXERCISED: &[(&str, &str)] = &[
    (
        "rollout patch weir.io/rollouts/status",
        "a Rollout with an invalid spec gets its InvalidSpec condition by merge patch",
    ),
    (
        "rollout patch weir.io/analysisruns",
        "a run the Rollout no longer needs (a skipped or promoted step) is terminated",
    ),
    (
        "rollout delete weir.io/analysisruns",
        "runs beyond the newest 5 successful and 5 unsuccessful are deleted",
    ),
    (
        "rollout delete apps/replicasets",
        "ReplicaSets beyond revisionHistoryLimit are deleted",
    ),
    (
        "gitsync delete weir.io/rollouts",
        "a Rollout removed from Git is pruned",
    ),
    (
        "gitsync delete weir.io/analysistemplates",
        "an AnalysisTemplate removed from Git is pruned",
    ),
    (
        "gitsync delete weir.io/clusteranalysistemplates",
        "a ClusterAnalysisTemplate removed from Git is pruned",
    ),
];

const ALERTS_FILE: &str = "apps/alerts.yaml";

/// The team's AlertProvider (its URL in a Secret), and while `with_retired` one that a later
/// commit removes.
fn alert_providers(with_retired: bool) -> String {
    let mut yaml = "apiVersion: weir.io/v1alpha1\nkind: AlertProvider\nmetadata:\n  name: team\nspec:\n  type: webhook\n  secretRef:\n    name: team-webhook\n  default: true\n  events: [RolledBack, GitReverted]\n".to_owned();
    if with_retired {
        yaml.push_str("---\napiVersion: weir.io/v1alpha1\nkind: AlertProvider\nmetadata:\n  name: retired\nspec:\n  type: slack\n  address: http://127.0.0.1:9/unused\n  events: [Completed]\n");
    }
    yaml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_counts_requests_by_user_agent_verb_and_subresource() {
    let c = Cluster::start("rbac-stats").await;
    c.kubectl_ok(&["get", "configmaps", "-n", NS]).await;
    let mut config = c.emulator.kube_config();
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(USER_AGENT),
    ));
    let weir_client = kube::Client::try_from(config).unwrap();
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(weir_client, NS);
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "i"}]}});
    pods.create(&Default::default(), &serde_json::from_value(pod).unwrap())
        .await
        .unwrap();
    pods.patch_status(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running"}})),
    )
    .await
    .unwrap();

    let weirs = weirs_requests(&c);
    let expected: BTreeSet<(String, String, String)> =
        [("create", "pods"), ("patch", "pods/status")]
            .iter()
            .map(|(v, r)| (v.to_string(), String::new(), r.to_string()))
            .collect();
    assert_eq!(weirs, expected, "kubectl's list is not counted as weir's");
    let stats = c.emulator.app.stats_json();
    let kubectl_list = stats["requestsByResource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["verb"] == "list" && r["resource"] == "configmaps")
        .expect("kubectl's list counted");
    assert!(
        kubectl_list["userAgent"]
            .as_str()
            .unwrap()
            .starts_with("kubectl"),
        "{kubectl_list}"
    );
}
