//! AnalysisTemplate, ClusterAnalysisTemplate and AnalysisRun.
//!
//! A template names the metrics that decide whether a release is good; a Rollout turns one or more
//! templates plus its arguments into an AnalysisRun, which the analysis controller measures until
//! every metric reaches a verdict.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::{DurationError, DurationString};
use super::secret::{SecretKeyRef, SecretRef};

/// `failureLimit` when a metric does not set it: the first failed measurement fails the metric.
pub const DEFAULT_FAILURE_LIMIT: i32 = 0;
/// `inconclusiveLimit` when a metric does not set it.
pub const DEFAULT_INCONCLUSIVE_LIMIT: i32 = 0;
/// `consecutiveErrorLimit` when a metric does not set it.
pub const DEFAULT_CONSECUTIVE_ERROR_LIMIT: i32 = 4;
/// How many measurements per metric a run keeps when `measurementRetention` names no limit.
pub const DEFAULT_MEASUREMENT_RETENTION: usize = 10;
/// Prometheus query timeout when `provider.prometheus.timeout` is not set.
pub const DEFAULT_PROMETHEUS_TIMEOUT: Duration = Duration::from_secs(30);
/// Web request timeout when `provider.web.timeoutSeconds` is not set.
pub const DEFAULT_WEB_TIMEOUT_SECONDS: i64 = 10;

/// The metrics and arguments of an analysis, reusable by many Rollouts in one namespace.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "weir.io",
    version = "v1alpha1",
    kind = "AnalysisTemplate",
    plural = "analysistemplates",
    namespaced,
    status = "AnalysisTemplateStatus",
    shortname = "at",
    category = "weir",
    derive = "PartialEq",
    doc = "The metrics and arguments of an analysis, reusable by many Rollouts in one namespace.",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisTemplateSpec {
    /// The metrics to measure. Every metric must succeed for the analysis to succeed.
    #[schemars(length(min = 1))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub metrics: Vec<Metric>,
    /// Arguments the metrics refer to as `{{args.NAME}}`. An argument without a value must be
    /// supplied by the Rollout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub args: Vec<Argument>,
    /// Metrics that are measured and reported but cannot fail the analysis.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["metricName"]))]
    pub dry_run: Vec<DryRun>,
    /// How many measurements to keep per metric (default 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["metricName"]))]
    pub measurement_retention: Vec<MeasurementRetention>,
}

/// An analysis template available to Rollouts in every namespace.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "weir.io",
    version = "v1alpha1",
    kind = "ClusterAnalysisTemplate",
    plural = "clusteranalysistemplates",
    status = "AnalysisTemplateStatus",
    shortname = "cat",
    category = "weir",
    derive = "PartialEq",
    doc = "An analysis template available to Rollouts in every namespace.",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct ClusterAnalysisTemplateSpec {
    /// The same fields as an AnalysisTemplate's spec.
    #[serde(flatten)]
    pub template: AnalysisTemplateSpec,
}

/// What the analysis controller found when it checked a template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisTemplateStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `InvalidSpec` when a condition expression or argument reference cannot be used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// One execution of an analysis: the metrics to measure and their results.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "weir.io",
    version = "v1alpha1",
    kind = "AnalysisRun",
    plural = "analysisruns",
    namespaced,
    status = "AnalysisRunStatus",
    shortname = "ar",
    category = "weir",
    derive = "PartialEq",
    doc = "One execution of an analysis: the metrics to measure and their results.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Running, Successful, Failed, Error or Inconclusive"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunSpec {
    /// The metrics to measure, merged from the templates the run was made from.
    #[schemars(length(min = 1))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub metrics: Vec<Metric>,
    /// Argument values, resolved from the templates' defaults and the Rollout's arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub args: Vec<Argument>,
    /// Metrics that are measured and reported but cannot fail the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["metricName"]))]
    pub dry_run: Vec<DryRun>,
    /// How many measurements to keep per metric (default 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["metricName"]))]
    pub measurement_retention: Vec<MeasurementRetention>,
    /// Stop measuring. Set by the Rollout controller when a background analysis is no longer
    /// needed; a terminated run that has not failed ends as Successful.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub terminate: bool,
}

/// A named argument of an analysis.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Argument {
    /// Name the metrics use as `{{args.NAME}}`.
    #[schemars(length(min = 1))]
    pub name: String,
    /// The value, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Where to read the value from when it is a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<ArgumentValueFrom>,
}

/// The source of an argument's value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArgumentValueFrom {
    /// A key of a Secret in the namespace of the AnalysisRun. The value is read when a
    /// measurement is taken and never copied into the run.
    pub secret_key_ref: SecretKeyRef,
}

/// Marks a metric as dry-run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DryRun {
    /// Name of the metric.
    #[schemars(length(min = 1))]
    pub metric_name: String,
}

/// How many measurements of one metric to keep in the run's status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeasurementRetention {
    /// Name of the metric.
    #[schemars(length(min = 1))]
    pub metric_name: String,
    /// Number of most recent measurements to keep.
    #[schemars(range(min = 0))]
    pub limit: i32,
}

/// A metric: how to measure it, how often, and what counts as success.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Metric {
    /// Name, unique within the analysis.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Time between measurements. Without it the metric is measured `count` times back to back
    /// (once when `count` is unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<DurationString>,
    /// Time to wait before the first measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay: Option<DurationString>,
    /// Number of measurements to take. Unset with an `interval` means: measure until the run is
    /// terminated (background analysis); unset without an `interval` means once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub count: Option<i32>,
    /// CEL expression over `result`; a measurement for which it is true is Successful.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_condition: Option<String>,
    /// CEL expression over `result`; a measurement for which it is true is Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_condition: Option<String>,
    /// Failed measurements tolerated before the metric fails (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub failure_limit: Option<i32>,
    /// Inconclusive measurements tolerated before the metric is Inconclusive (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub inconclusive_limit: Option<i32>,
    /// Consecutive measurement errors tolerated before the metric is Error (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub consecutive_error_limit: Option<i32>,
    /// Where the measurement comes from.
    pub provider: MetricProvider,
}

impl Metric {
    /// `failureLimit`, or its default.
    pub fn failure_limit(&self) -> i32 {
        self.failure_limit.unwrap_or(DEFAULT_FAILURE_LIMIT)
    }

    /// `inconclusiveLimit`, or its default.
    pub fn inconclusive_limit(&self) -> i32 {
        self.inconclusive_limit
            .unwrap_or(DEFAULT_INCONCLUSIVE_LIMIT)
    }

    /// `consecutiveErrorLimit`, or its default.
    pub fn consecutive_error_limit(&self) -> i32 {
        self.consecutive_error_limit
            .unwrap_or(DEFAULT_CONSECUTIVE_ERROR_LIMIT)
    }
}

/// The source of a metric's measurements: exactly one provider.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum MetricProvider {
    /// A PromQL query.
    Prometheus(PrometheusMetric),
    /// An HTTP endpoint returning JSON.
    Web(WebMetric),
}

/// A PromQL query against a Prometheus server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusMetric {
    /// Base URL of the Prometheus server, e.g. `http://prometheus.monitoring:9090`.
    #[schemars(length(min = 1))]
    pub address: String,
    /// The PromQL query; `{{args.NAME}}` is replaced by argument values.
    #[schemars(length(min = 1))]
    pub query: String,
    /// Query timeout (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationString>,
    /// Extra HTTP headers sent with the query.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<Header>,
    /// Credentials for the Prometheus server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<PrometheusAuthentication>,
}

impl PrometheusMetric {
    /// `timeout`, or its default.
    pub fn timeout(&self) -> Result<Duration, DurationError> {
        match &self.timeout {
            Some(timeout) => timeout.to_duration(),
            None => Ok(DEFAULT_PROMETHEUS_TIMEOUT),
        }
    }
}

/// Credentials for a Prometheus server: exactly one scheme.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PrometheusAuthentication {
    /// `Authorization: Bearer TOKEN`, the token read from a Secret key.
    Bearer(BearerAuthentication),
    /// HTTP basic authentication.
    Basic(BasicAuthentication),
}

/// Bearer token authentication.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BearerAuthentication {
    /// The Secret key holding the token.
    pub secret_ref: SecretKeyRef,
}

/// HTTP basic authentication.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BasicAuthentication {
    /// A Secret with the keys `username` and `password`.
    pub secret_ref: SecretRef,
}

/// Key in a basic-authentication Secret that holds the user name.
pub const BASIC_AUTH_USERNAME_KEY: &str = "username";
/// Key in a basic-authentication Secret that holds the password.
pub const BASIC_AUTH_PASSWORD_KEY: &str = "password";

/// An HTTP request whose JSON response is the measurement.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebMetric {
    /// URL to request; `{{args.NAME}}` is replaced by argument values.
    #[schemars(length(min = 1))]
    pub url: String,
    /// HTTP method (default GET).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<WebMethod>,
    /// HTTP headers; values may use `{{args.NAME}}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<Header>,
    /// Request body for POST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// kubectl-style JSONPath selecting the value, e.g. `{$.data.errorRate}`; the whole
    /// response when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_path: Option<String>,
    /// Request timeout in seconds (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: Option<i64>,
}

impl WebMetric {
    /// `method`, or its default.
    pub fn method(&self) -> WebMethod {
        self.method.unwrap_or_default()
    }

    /// `timeoutSeconds`, or its default, as a [`Duration`].
    pub fn timeout(&self) -> Duration {
        let seconds = self
            .timeout_seconds
            .unwrap_or(DEFAULT_WEB_TIMEOUT_SECONDS)
            .max(1);
        Duration::from_secs(seconds.unsigned_abs())
    }
}

/// HTTP method of a web metric.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum WebMethod {
    /// GET.
    #[default]
    Get,
    /// POST, with `body`.
    Post,
}

/// An HTTP header.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct Header {
    /// Header name.
    #[schemars(length(min = 1))]
    pub key: String,
    /// Header value.
    pub value: String,
}

/// Phase of an AnalysisRun, of one of its metrics, or of one measurement.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum AnalysisPhase {
    /// Not started yet.
    #[default]
    Pending,
    /// Measuring.
    Running,
    /// Every metric met its success condition.
    Successful,
    /// A metric exceeded its failure limit.
    Failed,
    /// A metric exceeded its consecutive error limit.
    Error,
    /// A metric could not decide; a human must promote or abort.
    Inconclusive,
}

impl AnalysisPhase {
    /// Whether the phase is final.
    pub fn is_completed(self) -> bool {
        matches!(
            self,
            Self::Successful | Self::Failed | Self::Error | Self::Inconclusive
        )
    }

    /// The phase as it appears in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Running => "Running",
            Self::Successful => "Successful",
            Self::Failed => "Failed",
            Self::Error => "Error",
            Self::Inconclusive => "Inconclusive",
        }
    }
}

impl std::fmt::Display for AnalysisPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AnalysisRunSpec {
    /// Whether the named metric is dry-run.
    pub fn is_dry_run(&self, metric_name: &str) -> bool {
        self.dry_run.iter().any(|d| d.metric_name == metric_name)
    }

    /// How many measurements of the named metric to keep.
    pub fn measurement_retention(&self, metric_name: &str) -> usize {
        self.measurement_retention
            .iter()
            .find(|r| r.metric_name == metric_name)
            .map_or(DEFAULT_MEASUREMENT_RETENTION, |r| {
                usize::try_from(r.limit).unwrap_or(0)
            })
    }
}

/// The state of an AnalysisRun.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunStatus {
    /// Overall phase: the worst phase of the metrics once all have completed.
    #[serde(default)]
    pub phase: AnalysisPhase,
    /// Why the run is in its phase, e.g. which metric failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the first measurement started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// Results per metric.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub metric_results: Vec<MetricResult>,
    /// Counts of metrics per outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_summary: Option<RunSummary>,
}

/// The results of one metric.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricResult {
    /// Name of the metric.
    pub name: String,
    /// Phase of the metric.
    #[serde(default)]
    pub phase: AnalysisPhase,
    /// The most recent measurements, oldest first, trimmed to the retention limit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurements: Vec<Measurement>,
    /// Why the metric is in its phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Measurements taken.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub count: i32,
    /// Successful measurements.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub successful: i32,
    /// Failed measurements.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub failed: i32,
    /// Inconclusive measurements.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub inconclusive: i32,
    /// Measurements that ended in an error.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub error: i32,
    /// Errors since the last measurement without one.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub consecutive_error: i32,
    /// The metric is dry-run: its phase does not affect the run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// One measurement of a metric.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Measurement {
    /// Outcome of the measurement.
    #[serde(default)]
    pub phase: AnalysisPhase,
    /// The measured value as text (a number, a list of numbers, or JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Details, e.g. the error or the condition that decided the outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the measurement started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the measurement finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
}

/// Counts of a run's metrics per outcome.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// Metrics in the run.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub count: i32,
    /// Metrics that succeeded.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub successful: i32,
    /// Metrics that failed.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub failed: i32,
    /// Metrics that were inconclusive.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub inconclusive: i32,
    /// Metrics that ended in an error.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub error: i32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const TEMPLATE: &str = r#"
apiVersion: weir.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: error-rate
  namespace: demo
spec:
  args:
    - name: service
    - name: prometheus-token
      valueFrom:
        secretKeyRef:
          name: prometheus
          key: token
  dryRun:
    - metricName: latency
  measurementRetention:
    - metricName: error-rate
      limit: 20
  metrics:
    - name: error-rate
      interval: 30s
      initialDelay: 10s
      count: 5
      failureLimit: 1
      successCondition: "result[0] < 0.01"
      failureCondition: "result[0] >= 0.05"
      provider:
        prometheus:
          address: http://prometheus.monitoring:9090
          query: |
            sum(rate(http_requests_total{service="{{args.service}}",code=~"5.."}[1m]))
            /
            sum(rate(http_requests_total{service="{{args.service}}"}[1m]))
          timeout: 5s
          headers:
            - key: X-Scope-OrgID
              value: demo
          authentication:
            bearer:
              secretRef:
                name: prometheus
                key: token
    - name: latency
      successCondition: "result < 250"
      provider:
        web:
          url: http://podinfo-canary.demo:9898/api/latency
          method: POST
          body: '{"window": "1m"}'
          headers:
            - key: Authorization
              value: "Bearer {{args.prometheus-token}}"
          jsonPath: "{$.data.p99}"
          timeoutSeconds: 3
"#;

    #[test]
    fn template_manifest_round_trips() {
        let template: AnalysisTemplate = serde_saphyr::from_str(TEMPLATE).unwrap();
        let [error_rate, latency] = template.spec.metrics.as_slice() else {
            panic!("expected two metrics");
        };
        let MetricProvider::Prometheus(prometheus) = &error_rate.provider else {
            panic!("expected a prometheus provider");
        };
        assert!(prometheus.query.contains("{{args.service}}"));
        assert_eq!(prometheus.timeout(), Ok(Duration::from_secs(5)));
        assert_eq!(
            prometheus.authentication,
            Some(PrometheusAuthentication::Bearer(BearerAuthentication {
                secret_ref: SecretKeyRef {
                    name: "prometheus".into(),
                    key: "token".into(),
                },
            }))
        );
        assert_eq!(error_rate.failure_limit(), 1);
        let MetricProvider::Web(web) = &latency.provider else {
            panic!("expected a web provider");
        };
        assert_eq!(web.method(), WebMethod::Post);
        assert_eq!(web.json_path.as_deref(), Some("{$.data.p99}"));
        assert_eq!(web.timeout(), Duration::from_secs(3));
        assert_eq!(template.spec.args[0].value, None);

        let expected: Value = serde_saphyr::from_str(TEMPLATE).unwrap();
        assert_eq!(serde_json::to_value(&template).unwrap(), expected);
    }

    #[test]
    fn cluster_template_has_the_same_spec_fields() {
        let yaml = TEMPLATE.replace("kind: AnalysisTemplate", "kind: ClusterAnalysisTemplate");
        let cluster: ClusterAnalysisTemplate = serde_saphyr::from_str(&yaml).unwrap();
        let namespaced: AnalysisTemplate = serde_saphyr::from_str(TEMPLATE).unwrap();
        assert_eq!(cluster.spec.template, namespaced.spec);
    }

    #[test]
    fn unset_limits_take_their_documented_defaults() {
        let metric: Metric =
            serde_saphyr::from_str("name: m\nprovider:\n  web:\n    url: http://example\n")
                .unwrap();
        assert_eq!(metric.failure_limit(), 0);
        assert_eq!(metric.inconclusive_limit(), 0);
        assert_eq!(metric.consecutive_error_limit(), 4);
        let MetricProvider::Web(web) = &metric.provider else {
            panic!("expected a web provider");
        };
        assert_eq!(web.method(), WebMethod::Get);
        assert_eq!(web.timeout(), Duration::from_secs(10));

        let prometheus: PrometheusMetric =
            serde_saphyr::from_str("address: http://p:9090\nquery: up\n").unwrap();
        assert_eq!(prometheus.timeout(), Ok(Duration::from_secs(30)));
    }

    #[test]
    fn run_spec_answers_dry_run_and_retention_per_metric() {
        let template: AnalysisTemplate = serde_saphyr::from_str(TEMPLATE).unwrap();
        let run = AnalysisRunSpec {
            metrics: template.spec.metrics,
            args: template.spec.args,
            dry_run: template.spec.dry_run,
            measurement_retention: template.spec.measurement_retention,
            terminate: false,
        };
        let cases = [("error-rate", false, 20), ("latency", true, 10)];
        for (metric, dry_run, retention) in cases {
            assert_eq!(run.is_dry_run(metric), dry_run, "{metric}");
            assert_eq!(run.measurement_retention(metric), retention, "{metric}");
        }
    }

    #[test]
    fn only_final_phases_are_completed() {
        let cases = [
            (AnalysisPhase::Pending, false),
            (AnalysisPhase::Running, false),
            (AnalysisPhase::Successful, true),
            (AnalysisPhase::Failed, true),
            (AnalysisPhase::Error, true),
            (AnalysisPhase::Inconclusive, true),
        ];
        for (phase, completed) in cases {
            assert_eq!(phase.is_completed(), completed, "{phase}");
            let json = serde_json::to_value(phase).unwrap();
            assert_eq!(json, Value::from(phase.as_str()));
        }
    }

    #[test]
    fn run_status_round_trips() {
        let yaml = r#"
phase: Failed
message: "metric error-rate failed"
startedAt: "2026-11-02T10:00:00Z"
metricResults:
  - name: error-rate
    phase: Failed
    count: 2
    successful: 1
    failed: 1
    inconclusive: 0
    error: 0
    consecutiveError: 0
    measurements:
      - phase: Successful
        value: "[0.002]"
        startedAt: "2026-11-02T10:00:00Z"
        finishedAt: "2026-11-02T10:00:01Z"
      - phase: Failed
        value: "[0.12]"
        message: "result[0] >= 0.05"
        startedAt: "2026-11-02T10:00:30Z"
        finishedAt: "2026-11-02T10:00:31Z"
runSummary:
  count: 1
  successful: 0
  failed: 1
  inconclusive: 0
  error: 0
"#;
        let status: AnalysisRunStatus = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(status.phase, AnalysisPhase::Failed);
        assert_eq!(
            status.metric_results[0].measurements[1].value.as_deref(),
            Some("[0.12]")
        );
        let expected: Value = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(serde_json::to_value(&status).unwrap(), expected);
    }
}
