//! The template library in `analysis-templates/`, judged by weir itself against a real Prometheus.
//!
//! Every file in the directory is loaded with weir's own types, turned into an AnalysisRun spec by
//! `weir::analysis::runs` from a Rollout's `analysis` args (wired the way the library's README tells
//! users to wire them), measured against a `prometheus` serving synthetic series for several
//! canaries, and decided by `weir::analysis::assessment`. A template without test data here fails
//! the test, so a new template cannot slip in untested.
//!
//! All canaries share one TSDB, told apart by label values, so one Prometheus serves the whole run.
//! Measurements follow the template's `interval` on a simulated clock: Prometheus answers the same
//! instant query each time, and no test waits a real minute.

#[path = "support/prometheus.rs"]
mod prometheus;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;

use futures::future::BoxFuture;
use jiff::Timestamp;
use serde_json::{Value, json};

use prometheus::{Prometheus, unix_now};
use support::{Cluster, repo_root};
use weir::analysis::assessment::{self, Observation};
use weir::analysis::providers::{ProviderError, SecretSource, provider_for};
use weir::analysis::runs;
use weir::api::Rollout;
use weir::api::analysis::{
    AnalysisPhase, AnalysisRunSpec, AnalysisRunStatus, ClusterAnalysisTemplate,
};
use weir::api::rollout::RolloutAnalysis;

const NAMESPACE: &str = "shop";
/// Latency bucket bounds in milliseconds (the last is `+Inf`); NGINX gets them in seconds.
const BOUNDS_MS: [f64; 12] = [
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1000.0,
    2500.0,
    5000.0,
    10000.0,
    f64::INFINITY,
];
/// The synthetic series start this long before now, with one sample every `STEP` seconds, so any
/// rate window up to ten minutes finds data.
const HISTORY: u64 = 600;
const STEP: u64 = 15;
/// The canary's share of an HTTPRoute rule's traffic in the Envoy Gateway data.
const CANARY_WEIGHT: f64 = 0.2;

/// Which proxy or library reports the series, and so how they are named and labelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Istio,
    EnvoyGateway,
    Nginx,
    Http,
    Linkerd,
}

/// What a metric judges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Measures {
    /// Success rate or error rate.
    Errors,
    /// A latency percentile.
    Latency,
}

/// A template of the library and how a Rollout feeds it.
struct TemplateCase {
    file: &'static str,
    family: Family,
    /// Each metric the template must contain, and what it judges.
    metrics: &'static [(&'static str, Measures)],
    /// The Rollout `analysis.args` that point the template at the canary (without the Prometheus
    /// address, which every case sets to the test server).
    args: fn(&Canary) -> Value,
}

fn service_args(_: &Canary) -> Value {
    json!([
        {"name": "service", "valueFrom": {"fieldRef": {"fieldPath": "spec.strategy.canary.canaryService"}}},
        {"name": "namespace", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ])
}

fn route_args(canary: &Canary) -> Value {
    json!([
        {"name": "namespace", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "httproute", "value": canary.rollout},
    ])
}

fn pod_args(_: &Canary) -> Value {
    json!([
        {"name": "namespace", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "rollout", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "canary-hash", "valueFrom": {"podTemplateHashValue": "Latest"}},
    ])
}

const TEMPLATES: &[TemplateCase] = &[
    TemplateCase {
        file: "istio-success-rate.yaml",
        family: Family::Istio,
        metrics: &[("istio-success-rate", Measures::Errors)],
        args: service_args,
    },
    TemplateCase {
        file: "istio-latency-p99.yaml",
        family: Family::Istio,
        metrics: &[("istio-latency-p99", Measures::Latency)],
        args: service_args,
    },
    TemplateCase {
        file: "envoy-gateway-success-rate.yaml",
        family: Family::EnvoyGateway,
        metrics: &[("envoy-gateway-success-rate", Measures::Errors)],
        args: route_args,
    },
    TemplateCase {
        file: "envoy-gateway-latency-p99.yaml",
        family: Family::EnvoyGateway,
        metrics: &[("envoy-gateway-latency-p99", Measures::Latency)],
        args: route_args,
    },
    TemplateCase {
        file: "nginx-ingress-success-rate.yaml",
        family: Family::Nginx,
        metrics: &[("nginx-ingress-success-rate", Measures::Errors)],
        args: service_args,
    },
    TemplateCase {
        file: "nginx-ingress-latency-p99.yaml",
        family: Family::Nginx,
        metrics: &[("nginx-ingress-latency-p99", Measures::Latency)],
        args: service_args,
    },
    TemplateCase {
        file: "http-error-rate.yaml",
        family: Family::Http,
        metrics: &[("http-error-rate", Measures::Errors)],
        args: pod_args,
    },
    TemplateCase {
        file: "linkerd-success-rate.yaml",
        family: Family::Linkerd,
        metrics: &[("linkerd-success-rate", Measures::Errors)],
        args: pod_args,
    },
];

/// How a release behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    /// Answers 2xx and a few 4xx, never a 5xx, quickly.
    Healthy,
    /// A few 5xx and a slower tail, both within the templates' default thresholds.
    Tolerable,
    /// A quarter of the answers are 503, and the tail is seconds long.
    Failing,
    /// Every answer is a fast 503.
    Crashing,
    /// Its series exist but stopped growing: no requests within the window.
    Stalled,
    /// Never received a request: no series at all.
    Idle,
}

/// A Rollout whose new pods (the canary) behave one way; its stable pods are always healthy.
struct Canary {
    rollout: &'static str,
    behaviour: Behaviour,
}

const CANARIES: &[Canary] = &[
    Canary {
        rollout: "checkout",
        behaviour: Behaviour::Healthy,
    },
    Canary {
        rollout: "cart",
        behaviour: Behaviour::Tolerable,
    },
    Canary {
        rollout: "payments",
        behaviour: Behaviour::Failing,
    },
    Canary {
        rollout: "orders",
        behaviour: Behaviour::Crashing,
    },
    Canary {
        rollout: "search",
        behaviour: Behaviour::Stalled,
    },
    Canary {
        rollout: "profile",
        behaviour: Behaviour::Idle,
    },
];

/// The verdict weir must reach.
fn expected(family: Family, measures: Measures, behaviour: Behaviour) -> AnalysisPhase {
    match (behaviour, measures) {
        (Behaviour::Healthy | Behaviour::Tolerable, _) => AnalysisPhase::Successful,
        (Behaviour::Failing, _) => AnalysisPhase::Failed,
        (Behaviour::Crashing, Measures::Errors) => AnalysisPhase::Failed,
        // Failing fast is not slow: the error templates catch this release.
        (Behaviour::Crashing, Measures::Latency) => AnalysisPhase::Successful,
        // An HTTPRoute rule's Envoy cluster also carries the stable backend, whose healthy traffic
        // is all there is to judge when the canary gets none (a documented limit of the
        // Envoy Gateway templates).
        (Behaviour::Stalled | Behaviour::Idle, _) if family == Family::EnvoyGateway => {
            AnalysisPhase::Successful
        }
        (Behaviour::Stalled | Behaviour::Idle, _) => AnalysisPhase::Inconclusive,
    }
}

/// Requests per second by status code, and the latency distribution.
struct Traffic {
    per_second: &'static [(u16, f64)],
    /// `(bound in ms, share of requests at or under it)`, ascending; every bound is in
    /// [`BOUNDS_MS`] and the last share is 1.
    latency: &'static [(f64, f64)],
    /// Whether the counters grow during the window.
    flowing: bool,
}

const HEALTHY: Traffic = Traffic {
    per_second: &[(200, 40.0), (404, 0.5)],
    latency: &[
        (10.0, 0.3),
        (25.0, 0.6),
        (50.0, 0.95),
        (100.0, 0.995),
        (250.0, 1.0),
    ],
    flowing: true,
};

fn traffic(behaviour: Behaviour) -> Option<Traffic> {
    match behaviour {
        Behaviour::Healthy => Some(HEALTHY),
        // 0.25% errors against a 1% budget; p99 about 375 ms against 500 ms.
        Behaviour::Tolerable => Some(Traffic {
            per_second: &[(200, 40.0), (500, 0.1)],
            latency: &[(50.0, 0.5), (100.0, 0.9), (250.0, 0.98), (500.0, 1.0)],
            flowing: true,
        }),
        Behaviour::Failing => Some(Traffic {
            per_second: &[(200, 30.0), (503, 10.0)],
            latency: &[(100.0, 0.4), (500.0, 0.7), (1000.0, 0.9), (2500.0, 1.0)],
            flowing: true,
        }),
        Behaviour::Crashing => Some(Traffic {
            per_second: &[(503, 20.0)],
            latency: &[(5.0, 1.0)],
            flowing: true,
        }),
        Behaviour::Stalled => Some(Traffic {
            flowing: false,
            ..HEALTHY
        }),
        Behaviour::Idle => None,
    }
}

/// One counter of a traffic mix: requests with a status code, requests at or under a latency
/// bound (an index into [`BOUNDS_MS`]), or all requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Counter {
    Code(u16),
    Bucket(usize),
    Count,
}

/// The counters of `parts` (each traffic scaled by its weight) at every sample time.
fn counters(parts: &[(f64, &Traffic)], times: &[u64]) -> BTreeMap<Counter, Vec<f64>> {
    let start = times[0];
    let mut out: BTreeMap<Counter, Vec<f64>> = BTreeMap::new();
    for (weight, traffic) in parts {
        let total: f64 = traffic.per_second.iter().map(|(_, rate)| rate).sum();
        let mut rates: Vec<(Counter, f64)> = traffic
            .per_second
            .iter()
            .map(|&(code, rate)| (Counter::Code(code), rate))
            .collect();
        for (index, bound) in BOUNDS_MS.iter().enumerate() {
            let share = traffic
                .latency
                .iter()
                .take_while(|(at, _)| at <= bound)
                .last()
                .map_or(0.0, |(_, share)| *share);
            rates.push((Counter::Bucket(index), total * share));
        }
        rates.push((Counter::Count, total));
        for (counter, rate) in rates {
            let values = out.entry(counter).or_insert_with(|| vec![0.0; times.len()]);
            for (value, time) in values.iter_mut().zip(times) {
                // Counters start high, as for a process that served requests before the window;
                // a stalled one never moves after that.
                let seconds = HISTORY + if traffic.flowing { time - start } else { 0 };
                *value += weight * rate * seconds as f64;
            }
        }
    }
    out
}

/// Adds one series to an OpenMetrics text: `name{labels} value timestamp` at every sample time.
fn push_series(out: &mut String, name: &str, labels: &str, values: &[f64], times: &[u64]) {
    for (value, time) in values.iter().zip(times) {
        writeln!(out, "{name}{{{labels}}} {value} {time}").unwrap();
    }
}

fn le(index: usize, scale: f64) -> String {
    let bound = BOUNDS_MS[index];
    if bound.is_infinite() {
        "+Inf".into()
    } else {
        (bound * scale).to_string()
    }
}

/// One family's series for a set of workloads, each `(label set, counters)`. Families are kept
/// contiguous, as OpenMetrics requires.
fn render(
    family: Family,
    workloads: &[(String, BTreeMap<Counter, Vec<f64>>)],
    times: &[u64],
) -> String {
    let mut requests = String::new();
    let mut buckets = String::new();
    let mut counts = String::new();
    let (requests_name, buckets_name, scale) = match family {
        Family::Istio => (
            "istio_requests_total",
            Some("istio_request_duration_milliseconds"),
            1.0,
        ),
        Family::EnvoyGateway => (
            "envoy_cluster_upstream_rq_xx",
            Some("envoy_cluster_upstream_rq_time"),
            1.0,
        ),
        Family::Nginx => (
            "nginx_ingress_controller_requests",
            Some("nginx_ingress_controller_request_duration_seconds"),
            0.001,
        ),
        Family::Http => ("http_requests_total", None, 1.0),
        Family::Linkerd => ("response_total", None, 1.0),
    };
    for (labels, counters) in workloads {
        // Envoy counts by response class, so codes of one class add up to one series.
        let mut classes: BTreeMap<u16, Vec<f64>> = BTreeMap::new();
        for (counter, values) in counters {
            match *counter {
                Counter::Code(code) if family == Family::EnvoyGateway => {
                    let class = classes
                        .entry(code / 100)
                        .or_insert_with(|| vec![0.0; values.len()]);
                    for (sum, value) in class.iter_mut().zip(values) {
                        *sum += value;
                    }
                }
                Counter::Code(code) => {
                    let code_labels = match family {
                        Family::Istio => format!("{labels},response_code=\"{code}\""),
                        Family::Nginx => format!("{labels},status=\"{code}\""),
                        Family::Http => format!("{labels},code=\"{code}\""),
                        Family::Linkerd => {
                            let classification = if code < 500 { "success" } else { "failure" };
                            format!(
                                "{labels},status_code=\"{code}\",classification=\"{classification}\""
                            )
                        }
                        Family::EnvoyGateway => unreachable!("handled above"),
                    };
                    push_series(&mut requests, requests_name, &code_labels, values, times);
                }
                Counter::Bucket(index) => {
                    if let Some(name) = buckets_name {
                        let bucket_labels = format!("{labels},le=\"{}\"", le(index, scale));
                        push_series(
                            &mut buckets,
                            &format!("{name}_bucket"),
                            &bucket_labels,
                            values,
                            times,
                        );
                    }
                }
                Counter::Count => {
                    if let Some(name) = buckets_name {
                        push_series(&mut counts, &format!("{name}_count"), labels, values, times);
                    }
                }
            }
        }
        for (class, values) in classes {
            let class_labels = format!("{labels},envoy_response_code_class=\"{class}\"");
            push_series(&mut requests, requests_name, &class_labels, &values, times);
        }
    }
    // Envoy's counter has no `_total` suffix, which OpenMetrics reserves for counters.
    let mut out = match requests_name.strip_suffix("_total") {
        Some(base) => format!("# TYPE {base} counter\n"),
        None => format!("# TYPE {requests_name} unknown\n"),
    };
    out.push_str(&requests);
    if let Some(name) = buckets_name {
        writeln!(out, "# TYPE {name} histogram").unwrap();
        out.push_str(&buckets);
        out.push_str(&counts);
    }
    out
}

/// The canary's Rollout: version 2 of its pod template is being released, version 1 is stable.
fn rollout(canary: &Canary, analysis_args: &Value) -> Rollout {
    let name = canary.rollout;
    serde_json::from_value(json!({
        "apiVersion": "weir.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": name}},
            "template": pod_template(name, 2),
            "strategy": {"canary": {
                "canaryService": format!("{name}-canary"),
                "stableService": format!("{name}-stable"),
                "trafficRouting": {"gatewayAPI": {"httpRoutes": [{"name": name}]}},
                "steps": [{"setWeight": 20}, {"analysis": {
                    "templates": [{"templateName": "t", "clusterScope": true}],
                    "args": analysis_args,
                }}],
            }},
        },
        "status": {"stableRS": pod_template_hash(name, 1)},
    }))
    .expect("a valid Rollout")
}

fn pod_template(name: &str, version: u32) -> Value {
    json!({
        "metadata": {"labels": {"app": name}},
        "spec": {"containers": [{"name": "app", "image": format!("registry.example/{name}:{version}")}]},
    })
}

fn pod_template_hash(name: &str, version: u32) -> String {
    let template = serde_json::from_value(pod_template(name, version)).unwrap();
    weir::rollout::pod_template_hash(&template)
}

/// A pod of the Rollout's ReplicaSet for `version`, named as Kubernetes names ReplicaSet pods.
fn pod_name(name: &str, version: u32) -> String {
    let hash = pod_template_hash(name, version);
    format!("{}-x7k2p", weir::rollout::replica_sets::name(name, &hash))
}

/// Every family's series for every canary and its stable pods, as one OpenMetrics text.
fn openmetrics() -> String {
    let now = unix_now();
    let times: Vec<u64> = (0..=HISTORY / STEP)
        .map(|i| now - HISTORY + i * STEP)
        .collect();
    let families = [
        Family::Istio,
        Family::EnvoyGateway,
        Family::Nginx,
        Family::Http,
        Family::Linkerd,
    ];
    let failing = traffic(Behaviour::Failing).unwrap();
    let mut text = String::new();
    for family in families {
        let mut workloads = Vec::new();
        // The same names in another namespace, all failing: a template that forgets to select the
        // namespace judges a healthy canary by them.
        for (namespace, decoy) in [(NAMESPACE, false), ("staging", true)] {
            for canary in CANARIES {
                let name = canary.rollout;
                let canary_traffic = if decoy {
                    Some(traffic(Behaviour::Failing).unwrap())
                } else {
                    traffic(canary.behaviour)
                };
                let stable_traffic = if decoy { &failing } else { &HEALTHY };
                if family == Family::EnvoyGateway {
                    // Both backendRefs of the route's rule feed one Envoy cluster.
                    let mut parts = vec![(1.0 - CANARY_WEIGHT, stable_traffic)];
                    parts.extend(canary_traffic.as_ref().map(|t| (CANARY_WEIGHT, t)));
                    let labels = format!(
                        "envoy_cluster_name=\"httproute/{namespace}/{name}/rule/0\",namespace=\"envoy-gateway-system\""
                    );
                    workloads.push((labels, counters(&parts, &times)));
                    continue;
                }
                let versions = [(1, Some(stable_traffic)), (2, canary_traffic.as_ref())];
                for (version, traffic) in versions {
                    let Some(traffic) = traffic else { continue };
                    let service = if version == 1 {
                        format!("{name}-stable")
                    } else {
                        format!("{name}-canary")
                    };
                    let pod = pod_name(name, version);
                    let labels = match family {
                        Family::Istio => format!(
                            "reporter=\"source\",destination_service_namespace=\"{namespace}\",destination_service_name=\"{service}\",destination_workload=\"{name}\""
                        ),
                        Family::Nginx => format!(
                            "namespace=\"{namespace}\",ingress=\"{name}\",service=\"{service}\",method=\"GET\""
                        ),
                        Family::Http => {
                            format!("namespace=\"{namespace}\",pod=\"{pod}\",method=\"GET\"")
                        }
                        Family::Linkerd => {
                            // The pod's own calls to a failing dependency: not the pod's answers.
                            let outbound = format!(
                                "direction=\"outbound\",namespace=\"{namespace}\",pod=\"{pod}\",tls=\"true\""
                            );
                            workloads.push((outbound, counters(&[(1.0, &failing)], &times)));
                            format!(
                                "direction=\"inbound\",namespace=\"{namespace}\",pod=\"{pod}\",tls=\"true\""
                            )
                        }
                        Family::EnvoyGateway => unreachable!("handled above"),
                    };
                    workloads.push((labels, counters(&[(1.0, traffic)], &times)));
                }
            }
        }
        text.push_str(&render(family, &workloads, &times));
    }
    text.push_str("# EOF\n");
    text
}

/// No Secrets: no template of the library needs one.
struct NoSecrets;

impl SecretSource for NoSecrets {
    fn secret<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        _key: &'a str,
    ) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(async move {
            Err(ProviderError::SecretNotFound {
                namespace: namespace.into(),
                name: name.into(),
            })
        })
    }
}

/// Measures the run until weir decides it, the way the AnalysisRun controller does (due metrics
/// measured, judged, recorded, then the run assessed), on a clock that jumps to the next due
/// measurement instead of waiting for it.
async fn decide(spec: &AnalysisRunSpec) -> AnalysisRunStatus {
    let values: BTreeMap<String, String> = spec
        .args
        .iter()
        .map(|a| (a.name.clone(), a.value.clone().expect("literal argument")))
        .collect();
    let spec = runs::with_literal_args_in_conditions(spec);
    for metric in &spec.metrics {
        assessment::validate(metric).expect("a metric weir can measure");
    }
    let mut now = Timestamp::now();
    let mut status = AnalysisRunStatus::default();
    assessment::assess(&spec, &mut status, now);
    // A run of `count` measurements per metric decides within that many rounds.
    for _ in 0..100 {
        if status.phase.is_completed() {
            return status;
        }
        let due = assessment::due(&spec, &status, now);
        for name in &due.metrics {
            let metric = spec.metrics.iter().find(|m| &m.name == name).unwrap();
            let measured = runs::substitute(metric, &values);
            let observation = match provider_for(&measured.provider)
                .measure(&NoSecrets, NAMESPACE)
                .await
            {
                Ok(value) => Observation::Value(value),
                Err(error) => Observation::Error(error.to_string()),
            };
            let (phase, message) = assessment::judge(metric, &observation);
            let value = match &observation {
                Observation::Value(value) => Some(value.display()),
                Observation::Error(_) => None,
            };
            assessment::record(&spec, &mut status, name, phase, value, message, now, now);
        }
        assessment::assess(&spec, &mut status, now);
        if status.phase.is_completed() {
            return status;
        }
        let next = assessment::due(&spec, &status, now)
            .next
            .unwrap_or_else(|| panic!("the run is {} with nothing due: {status:?}", status.phase));
        now = now.checked_add(next).unwrap();
    }
    panic!("no verdict after 100 rounds: {status:?}");
}

fn templates_dir() -> PathBuf {
    repo_root().join("analysis-templates")
}

/// The YAML files of the library, by file name.
fn template_files() -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(templates_dir()).expect("analysis-templates/ exists") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".yaml") || name.ends_with(".yml") {
            files.insert(name, std::fs::read_to_string(&path).unwrap());
        }
    }
    files
}

/// Parses a library file with weir's types; fields weir does not know (a typo such as
/// `failurelimit`) would be dropped silently, so the typed template must say everything the file
/// says.
fn load(file: &str, yaml: &str) -> ClusterAnalysisTemplate {
    let template: ClusterAnalysisTemplate = serde_saphyr::from_str(yaml)
        .unwrap_or_else(|e| panic!("{file} is not a ClusterAnalysisTemplate: {e}"));
    let written: Value = serde_saphyr::from_str(yaml).unwrap();
    assert_eq!(
        serde_json::to_value(&template).unwrap(),
        written,
        "{file} has fields weir does not read"
    );
    let stem = file.trim_end_matches(".yaml").trim_end_matches(".yml");
    assert_eq!(
        template.metadata.name.as_deref(),
        Some(stem),
        "{file}: the template is named after its file"
    );
    template
}

#[tokio::test]
async fn every_template_decides_healthy_failing_and_idle_canaries_correctly() {
    let files = template_files();
    let covered: BTreeSet<&str> = TEMPLATES.iter().map(|t| t.file).collect();
    let on_disk: BTreeSet<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        on_disk, covered,
        "every file in analysis-templates/ needs a case (with test data) in TEMPLATES, and every case a file"
    );

    let templates: BTreeMap<&str, ClusterAnalysisTemplate> = TEMPLATES
        .iter()
        .map(|case| (case.file, load(case.file, &files[case.file])))
        .collect();
    for case in TEMPLATES {
        let names: Vec<&str> = templates[case.file]
            .spec
            .template
            .metrics
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        let listed: Vec<&str> = case.metrics.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, listed, "{}: metrics without expectations", case.file);
    }

    // Each template alone, then the templates of a family together in one step, as the README
    // shows: they must share their arguments without conflict.
    let mut steps: Vec<Vec<&TemplateCase>> = TEMPLATES.iter().map(|case| vec![case]).collect();
    for family in [Family::Istio, Family::EnvoyGateway, Family::Nginx] {
        steps.push(TEMPLATES.iter().filter(|c| c.family == family).collect());
    }

    let server = Prometheus::start(&openmetrics()).await;
    let mut problems = Vec::new();
    let mut verdicts = 0;
    for step in &steps {
        let label = step.iter().map(|c| c.file).collect::<Vec<_>>().join(" + ");
        let specs: Vec<_> = step
            .iter()
            .map(|c| templates[c.file].spec.template.clone())
            .collect();
        for canary in CANARIES {
            let mut args: Vec<Value> = Vec::new();
            for case in step {
                for arg in (case.args)(canary).as_array().unwrap() {
                    if !args.iter().any(|a| a["name"] == arg["name"]) {
                        args.push(arg.clone());
                    }
                }
            }
            args.push(json!({"name": "prometheus-address", "value": server.url()}));
            let args = Value::Array(args);
            let ro = rollout(canary, &args);
            let references: Vec<Value> = step
                .iter()
                .map(|c| json!({"templateName": c.file.trim_end_matches(".yaml"), "clusterScope": true}))
                .collect();
            let analysis: RolloutAnalysis =
                serde_json::from_value(json!({"templates": references, "args": args})).unwrap();
            let spec =
                runs::run_spec(&ro, &analysis, &specs).unwrap_or_else(|e| panic!("{label}: {e}"));
            let status = decide(&spec).await;
            let mut run_want = AnalysisPhase::Successful;
            for case in step {
                for (metric, measures) in case.metrics {
                    let want = expected(case.family, *measures, canary.behaviour);
                    if severity(want) > severity(run_want) {
                        run_want = want;
                    }
                    let result = status
                        .metric_results
                        .iter()
                        .find(|r| r.name == *metric)
                        .unwrap_or_else(|| panic!("{label}: no result for {metric}"));
                    verdicts += 1;
                    // A run completes as soon as one metric fails, leaving the others Running.
                    let decided_early = step.len() > 1 && result.phase == AnalysisPhase::Running;
                    if result.phase != want && !decided_early {
                        problems.push(format!(
                            "{label} on the {:?} canary {}: {metric} is {}, expected {want}; measurements: {:?}",
                            canary.behaviour,
                            canary.rollout,
                            result.phase,
                            result
                                .measurements
                                .iter()
                                .map(|m| m.message.clone().unwrap_or_default())
                                .collect::<Vec<_>>()
                        ));
                    }
                }
            }
            if status.phase != run_want {
                problems.push(format!(
                    "{label} on the {:?} canary: the run is {}, expected {run_want}: {:?}",
                    canary.behaviour, status.phase, status.message
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {verdicts} verdicts wrong:\n{}\nPrometheus log:\n{}",
        problems.len(),
        problems.join("\n"),
        server.log()
    );
}

/// The fenced `yaml` blocks of a Markdown text, dedented.
fn yaml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim()) {
            (None, "```yaml") => current = Some(Vec::new()),
            (Some(lines), "```") => {
                let indent = lines
                    .iter()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| l.len() - l.trim_start().len())
                    .min()
                    .unwrap_or(0);
                let text: Vec<&str> = lines
                    .iter()
                    .map(|l| l.get(indent..).unwrap_or(""))
                    .collect();
                blocks.push(text.join("\n"));
                current = None;
            }
            (Some(lines), _) => lines.push(line),
            (None, _) => {}
        }
    }
    blocks
}

/// Every object with a `templates` field in a parsed example: an analysis step or its body.
fn analyses(value: &Value, out: &mut Vec<Value>) {
    match value {
        Value::Object(map) if map.contains_key("templates") => out.push(value.clone()),
        Value::Object(map) => map.values().for_each(|v| analyses(v, out)),
        Value::Array(items) => items.iter().for_each(|v| analyses(v, out)),
        _ => {}
    }
}

/// The examples in the library's README are what users copy into their Rollouts: each must make a
/// run (every argument without a default supplied) and pass only arguments the templates declare.
#[test]
fn readme_examples_give_every_template_its_arguments() {
    let readme = std::fs::read_to_string(templates_dir().join("README.md")).unwrap();
    let templates: BTreeMap<String, ClusterAnalysisTemplate> = template_files()
        .iter()
        .map(|(file, yaml)| {
            let template = load(file, yaml);
            (template.metadata.name.clone().unwrap(), template)
        })
        .collect();
    let mut shown = BTreeSet::new();
    for block in yaml_blocks(&readme) {
        let parsed: Value = serde_saphyr::from_str(&block)
            .unwrap_or_else(|e| panic!("README example does not parse: {e}\n{block}"));
        let mut found = Vec::new();
        analyses(&parsed, &mut found);
        for analysis in found {
            let analysis: RolloutAnalysis = serde_json::from_value(analysis)
                .unwrap_or_else(|e| panic!("README example is not an analysis: {e}\n{block}"));
            let mut specs = Vec::new();
            for reference in &analysis.templates {
                let name = &reference.template_name;
                let template = templates.get(name).unwrap_or_else(|| {
                    panic!("README example names {name}, which is not in the library")
                });
                assert!(
                    reference.cluster_scope,
                    "{name}: the example must say clusterScope: true"
                );
                specs.push(template.spec.template.clone());
                shown.insert(name.clone());
            }
            for arg in &analysis.args {
                assert!(
                    specs
                        .iter()
                        .any(|s| s.args.iter().any(|a| a.name == arg.name)),
                    "README example passes {:?}, which none of its templates declares:\n{block}",
                    arg.name
                );
            }
            let ro = rollout(&CANARIES[0], &json!([]));
            runs::run_spec(&ro, &analysis, &specs)
                .unwrap_or_else(|e| panic!("README example cannot make a run: {e}\n{block}"));
        }
    }
    let all: BTreeSet<String> = templates.keys().cloned().collect();
    assert_eq!(shown, all, "every template needs an example in the README");
}

/// The order in which a run takes the worst phase of its metrics.
fn severity(phase: AnalysisPhase) -> u8 {
    match phase {
        AnalysisPhase::Failed => 5,
        AnalysisPhase::Error => 4,
        AnalysisPhase::Inconclusive => 3,
        AnalysisPhase::Running => 2,
        AnalysisPhase::Pending => 1,
        AnalysisPhase::Successful => 0,
    }
}

/// The library installs as it is: an API server with weir's CRDs accepts every file.
#[tokio::test]
async fn every_template_is_accepted_by_the_api_server() {
    let cluster = Cluster::start("analysis-templates").await;
    let crds = repo_root().join("crds");
    cluster
        .kubectl_ok(&["apply", "-f", crds.to_str().unwrap()])
        .await;
    let dir = templates_dir();
    let out = cluster
        .kubectl_ok(&[
            "apply",
            "--dry-run=server",
            "--validate=strict",
            "-f",
            dir.to_str().unwrap(),
        ])
        .await;
    for file in template_files().keys() {
        let name = file.trim_end_matches(".yaml").trim_end_matches(".yml");
        assert!(
            out.contains(&format!(
                "clusteranalysistemplate.weir.io/{name} created (server dry run)"
            )),
            "{file} was not accepted:\n{out}"
        );
    }
}
