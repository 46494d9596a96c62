//! Rollout: a Deployment replacement that releases a new pod template step by step.
//!
//! Field names follow Argo Rollouts wherever the concept is the same, so manifests and scripts
//! that patch `spec.paused`, `status.abort` or `status.promoteFull` keep working.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::analysis::{AnalysisPhase, DryRun, MeasurementRetention};
use super::duration::DurationString;

/// `replicas` when unset.
pub const DEFAULT_REPLICAS: i32 = 1;
/// `revisionHistoryLimit` when unset.
pub const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;
/// `progressDeadlineSeconds` when unset.
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: i32 = 600;
/// `scaleDownDelaySeconds` when unset, for both strategies.
pub const DEFAULT_SCALE_DOWN_DELAY_SECONDS: i32 = 30;
/// `abortScaleDownDelaySeconds` when unset, for both strategies.
pub const DEFAULT_ABORT_SCALE_DOWN_DELAY_SECONDS: i32 = 30;
/// `maxSurge` and `maxUnavailable` of a canary when unset.
pub const DEFAULT_MAX_SURGE_AND_UNAVAILABLE: &str = "25%";

/// A workload released step by step: canary with traffic weights and analysis, or blue-green.
// Several printer columns share a `type_`, which clippy mistakes for a repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "weir.io",
    version = "v1alpha1",
    kind = "Rollout",
    plural = "rollouts",
    namespaced,
    status = "RolloutStatus",
    shortname = "ro",
    category = "weir",
    derive = "PartialEq",
    doc = "A workload released step by step: canary with traffic weights and analysis, or blue-green.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Healthy, Progressing, Paused or Degraded"
    ),
    printcolumn(
        name = "Step",
        type_ = "integer",
        json_path = ".status.currentStepIndex",
        description = "Index of the current canary step"
    ),
    printcolumn(
        name = "Weight",
        type_ = "integer",
        json_path = ".status.weights.canary",
        description = "Percent of traffic sent to the canary"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Desired number of pods (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// Selects the pods of this Rollout; must match the template's labels.
    pub selector: LabelSelector,
    /// The pods to run. A change to it starts a new release.
    pub template: PodTemplateSpec,
    /// Old ReplicaSets to keep for history (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub revision_history_limit: Option<i32>,
    /// Seconds a release may go without progress before it is reported as
    /// `ProgressDeadlineExceeded` (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub progress_deadline_seconds: Option<i32>,
    /// Pauses the release where it is. Written by `kubectl weir pause` and `resume`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// How to release a new template.
    pub strategy: RolloutStrategy,
    /// AlertProviders (in this namespace) that receive this Rollout's alerts. When empty, the
    /// namespace's default providers do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub alerts: Vec<AlertProviderRef>,
}

impl RolloutSpec {
    /// `replicas`, or its default.
    pub fn replicas(&self) -> i32 {
        self.replicas.unwrap_or(DEFAULT_REPLICAS)
    }

    /// `revisionHistoryLimit`, or its default.
    pub fn revision_history_limit(&self) -> i32 {
        self.revision_history_limit
            .unwrap_or(DEFAULT_REVISION_HISTORY_LIMIT)
    }

    /// `progressDeadlineSeconds`, or its default.
    pub fn progress_deadline_seconds(&self) -> i32 {
        self.progress_deadline_seconds
            .unwrap_or(DEFAULT_PROGRESS_DEADLINE_SECONDS)
    }
}

/// Names an AlertProvider.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct AlertProviderRef {
    /// Name of the AlertProvider in the Rollout's namespace.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// How a new template is released: exactly one strategy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RolloutStrategy {
    /// Shift traffic to the new pods step by step.
    Canary(CanaryStrategy),
    /// Run the new pods beside the old ones behind a preview Service, then switch.
    BlueGreen(BlueGreenStrategy),
}

/// The canary strategy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStrategy {
    /// Service whose selector weir points at the canary pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_service: Option<String>,
    /// Service whose selector weir points at the stable pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_service: Option<String>,
    /// Pods that may be created above the desired count during a release: a number or a
    /// percentage (default 25%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrString>,
    /// Pods that may be unavailable during a release: a number or a percentage (default 25%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// The steps of a release, in order. Without steps a release goes straight to 100%.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<CanaryStep>,
    /// Analysis that runs in the background while the steps run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<BackgroundAnalysis>,
    /// Route traffic by weight instead of by pod count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_routing: Option<TrafficRouting>,
    /// Seconds to keep the old pods after traffic has moved away from them (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub scale_down_delay_seconds: Option<i32>,
    /// Seconds to keep the canary pods after an abort (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub abort_scale_down_delay_seconds: Option<i32>,
}

impl CanaryStrategy {
    /// `maxSurge`, or its default.
    pub fn max_surge(&self) -> IntOrString {
        self.max_surge
            .clone()
            .unwrap_or_else(|| IntOrString::String(DEFAULT_MAX_SURGE_AND_UNAVAILABLE.to_owned()))
    }

    /// `maxUnavailable`, or its default.
    pub fn max_unavailable(&self) -> IntOrString {
        self.max_unavailable
            .clone()
            .unwrap_or_else(|| IntOrString::String(DEFAULT_MAX_SURGE_AND_UNAVAILABLE.to_owned()))
    }

    /// `scaleDownDelaySeconds`, or its default.
    pub fn scale_down_delay_seconds(&self) -> i32 {
        self.scale_down_delay_seconds
            .unwrap_or(DEFAULT_SCALE_DOWN_DELAY_SECONDS)
    }

    /// `abortScaleDownDelaySeconds`, or its default.
    pub fn abort_scale_down_delay_seconds(&self) -> i32 {
        self.abort_scale_down_delay_seconds
            .unwrap_or(DEFAULT_ABORT_SCALE_DOWN_DELAY_SECONDS)
    }
}

/// One step of a canary release: exactly one action.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CanaryStep {
    /// Percent of traffic (or of pods, without traffic routing) to send to the canary.
    SetWeight(#[schemars(range(min = 0, max = 100))] i32),
    /// Wait for a duration, or until promoted when no duration is given.
    Pause(PauseStep),
    /// Run an analysis and wait for its verdict.
    Analysis(RolloutAnalysis),
    /// Size the canary independently of its traffic weight.
    SetCanaryScale(SetCanaryScale),
}

/// A pause step.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct PauseStep {
    /// How long to wait, e.g. `30s`. Without it the Rollout waits for `kubectl weir promote`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<DurationString>,
}

/// The size of the canary: exactly one form.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SetCanaryScale {
    /// An absolute number of pods.
    Replicas(#[schemars(range(min = 0))] i32),
    /// A percentage of `spec.replicas`.
    Weight(#[schemars(range(min = 0, max = 100))] i32),
    /// `true`: size the canary by its traffic weight again (the default behaviour).
    MatchTrafficWeight(bool),
}

/// Analysis started by a step, or before/after a blue-green promotion.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutAnalysis {
    /// The templates whose metrics make up the AnalysisRun.
    #[schemars(length(min = 1))]
    pub templates: Vec<AnalysisTemplateRef>,
    /// Values for the templates' arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub args: Vec<RolloutAnalysisArgument>,
    /// Metrics that are measured and reported but cannot fail the analysis.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["metricName"]))]
    pub dry_run: Vec<DryRun>,
    /// How many measurements to keep per metric.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["metricName"]))]
    pub measurement_retention: Vec<MeasurementRetention>,
}

/// Analysis that runs while the canary steps run, and aborts the release when it fails.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackgroundAnalysis {
    /// Templates and arguments, as for an analysis step.
    #[serde(flatten)]
    pub analysis: RolloutAnalysis,
    /// Index of the step at which the analysis starts (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub starting_step: Option<i32>,
}

/// Names an AnalysisTemplate or ClusterAnalysisTemplate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisTemplateRef {
    /// Name of the template.
    #[schemars(length(min = 1))]
    pub template_name: String,
    /// `true` for a ClusterAnalysisTemplate, otherwise an AnalysisTemplate in the Rollout's
    /// namespace.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cluster_scope: bool,
}

/// A value for an analysis argument.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutAnalysisArgument {
    /// Name of the template argument.
    #[schemars(length(min = 1))]
    pub name: String,
    /// A literal value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// A value taken from the Rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<RolloutArgumentValueFrom>,
}

/// A value taken from the Rollout: exactly one source.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RolloutArgumentValueFrom {
    /// The pod-template hash of the stable or the new pods.
    PodTemplateHashValue(PodTemplateHashValue),
    /// A field of the Rollout, e.g. `metadata.labels['app']`.
    FieldRef(FieldRef),
}

/// Which pods' template hash an argument takes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum PodTemplateHashValue {
    /// The stable pods.
    Stable,
    /// The pods being released.
    Latest,
}

/// A path to a field of the Rollout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FieldRef {
    /// The field, e.g. `metadata.name` or `metadata.labels['app']`.
    #[schemars(length(min = 1))]
    pub field_path: String,
}

/// How weir moves traffic between the stable and canary pods. Several routers may be used at
/// once; weir sets the same weight on each.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("minProperties" = 1))]
pub struct TrafficRouting {
    /// Gateway API HTTPRoutes whose backendRefs weir weights.
    #[serde(
        rename = "gatewayAPI",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub gateway_api: Option<GatewayApiTrafficRouting>,
    /// Istio VirtualServices whose route destinations weir weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub istio: Option<IstioTrafficRouting>,
}

/// Traffic routing through Gateway API HTTPRoutes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayApiTrafficRouting {
    /// The HTTPRoutes. Each must have a rule with backendRefs to the stable and canary Services.
    #[schemars(length(min = 1))]
    pub http_routes: Vec<HttpRouteRef>,
}

/// Names an HTTPRoute.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct HttpRouteRef {
    /// Name of the HTTPRoute.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Namespace of the HTTPRoute (default: the Rollout's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Traffic routing through Istio VirtualServices.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IstioTrafficRouting {
    /// The VirtualServices, in the Rollout's namespace.
    #[schemars(length(min = 1))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub virtual_services: Vec<VirtualServiceRef>,
}

/// Names a VirtualService and the HTTP routes in it that weir weights.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct VirtualServiceRef {
    /// Name of the VirtualService.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Names of the `http` routes to weight. May be empty when the VirtualService has exactly
    /// one HTTP route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub routes: Vec<String>,
}

/// The blue-green strategy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreenStrategy {
    /// Service that receives production traffic; weir points it at the active pods.
    #[schemars(length(min = 1))]
    pub active_service: String,
    /// Service weir points at the new pods before promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_service: Option<String>,
    /// Promote without waiting for `kubectl weir promote` (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_promotion_enabled: Option<bool>,
    /// With auto-promotion, seconds to wait after the new pods are ready before promoting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub auto_promotion_seconds: Option<i32>,
    /// Analysis that must succeed before the active Service is switched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_promotion_analysis: Option<RolloutAnalysis>,
    /// Analysis run after the switch; when it fails, the active Service is switched back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_promotion_analysis: Option<RolloutAnalysis>,
    /// Pods of the new template before promotion (default: `spec.replicas`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub preview_replica_count: Option<i32>,
    /// Seconds to keep the old pods after the switch (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub scale_down_delay_seconds: Option<i32>,
    /// Seconds to keep the new pods after an abort (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub abort_scale_down_delay_seconds: Option<i32>,
}

impl BlueGreenStrategy {
    /// `autoPromotionEnabled`, or its default.
    pub fn auto_promotion_enabled(&self) -> bool {
        self.auto_promotion_enabled.unwrap_or(true)
    }

    /// `scaleDownDelaySeconds`, or its default.
    pub fn scale_down_delay_seconds(&self) -> i32 {
        self.scale_down_delay_seconds
            .unwrap_or(DEFAULT_SCALE_DOWN_DELAY_SECONDS)
    }

    /// `abortScaleDownDelaySeconds`, or its default.
    pub fn abort_scale_down_delay_seconds(&self) -> i32 {
        self.abort_scale_down_delay_seconds
            .unwrap_or(DEFAULT_ABORT_SCALE_DOWN_DELAY_SECONDS)
    }
}

/// The observed state of a Rollout, plus the intent fields humans and `kubectl weir` write
/// (`abort`, `promoteFull`, clearing `pauseConditions`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Summary of the Rollout's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RolloutPhase>,
    /// Why the Rollout is in its phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Index of the canary step being executed; equal to the number of steps when all are done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub current_step_index: Option<i32>,
    /// Hash of `strategy.canary.steps`, to notice steps edited during a release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step_hash: Option<String>,
    /// Pod-template hash of the current `spec.template`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_pod_hash: Option<String>,
    /// Pod-template hash of the stable pods.
    #[serde(rename = "stableRS", default, skip_serializing_if = "Option::is_none")]
    pub stable_rs: Option<String>,
    /// The Git commit that declared the stable template, from the Rollout's
    /// `weir.io/template-commit` annotation when the release became stable. The revert writer
    /// reverts the commits after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_commit: Option<String>,
    /// Traffic weights weir last set on the routers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<TrafficWeights>,
    /// Intent: abort the current release and go back to stable. Set by `kubectl weir abort` or
    /// by weir when an analysis fails; cleared by `kubectl weir retry`.
    #[serde(default)]
    pub abort: bool,
    /// When the current release was aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted_at: Option<Time>,
    /// Why the Rollout is paused. `kubectl weir promote` clears the list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["reason"]))]
    pub pause_conditions: Vec<PauseCondition>,
    /// The pause was started by weir (a step or an inconclusive analysis), not by `spec.paused`.
    #[serde(default)]
    pub controller_pause: bool,
    /// Intent: skip the remaining steps and analyses and promote to 100%. Set by
    /// `kubectl weir promote --full`.
    #[serde(default)]
    pub promote_full: bool,
    /// AnalysisRuns of the canary strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStatus>,
    /// State of the blue-green strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<BlueGreenStatus>,
    /// The Git revert of a failed release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_revert: Option<GitRevertStatus>,
    /// When the current step started waiting for pods; the progress deadline counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,
    /// Number of Events weir has recorded for this Rollout. It names the next Event, so that a
    /// controller restarted between recording an Event and writing this status records it once.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(min = 0))]
    pub recorded_events: i64,
    /// Pods of this Rollout.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// Pods of the current template.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub updated_replicas: i32,
    /// Pods that are ready.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub ready_replicas: i32,
    /// Pods that have been ready for `minReadySeconds`.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub available_replicas: i32,
    /// `spec.selector` in label-query form, for the scale subresource (HPA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Progressing, Available, Paused, Completed, Healthy, InvalidSpec, GitReverted,
    /// GitRevertBlocked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// Summary of a Rollout's state.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum RolloutPhase {
    /// Fully released: every pod runs the stable template.
    Healthy,
    /// A release is under way.
    Progressing,
    /// A release waits for a pause to end or for a human.
    Paused,
    /// The release was aborted, missed its deadline, or the spec is invalid.
    Degraded,
}

impl RolloutPhase {
    /// The phase as it appears in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "Healthy",
            Self::Progressing => "Progressing",
            Self::Paused => "Paused",
            Self::Degraded => "Degraded",
        }
    }
}

impl std::fmt::Display for RolloutPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Traffic percentages.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct TrafficWeights {
    /// Percent of traffic sent to the canary.
    #[schemars(range(min = 0, max = 100))]
    pub canary: i32,
    /// Percent of traffic sent to the stable pods.
    #[schemars(range(min = 0, max = 100))]
    pub stable: i32,
}

/// Why a Rollout is paused.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PauseCondition {
    /// The cause of the pause.
    pub reason: PauseReason,
    /// When the pause started.
    pub start_time: Time,
}

/// The cause of a pause.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum PauseReason {
    /// A canary `pause` step.
    CanaryPauseStep,
    /// A blue-green release waits for promotion.
    BlueGreenPause,
    /// An analysis was inconclusive.
    InconclusiveAnalysisRun,
}

/// AnalysisRuns of the canary strategy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    /// The run started by the current `analysis` step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step_analysis_run_status: Option<RolloutAnalysisRunStatus>,
    /// The background analysis run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_background_analysis_run_status: Option<RolloutAnalysisRunStatus>,
}

/// State of the blue-green strategy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreenStatus {
    /// Pod-template hash the active Service selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_selector: Option<String>,
    /// Pod-template hash the preview Service selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_selector: Option<String>,
    /// The pre-promotion analysis run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_promotion_analysis_run_status: Option<RolloutAnalysisRunStatus>,
    /// The post-promotion analysis run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_promotion_analysis_run_status: Option<RolloutAnalysisRunStatus>,
}

/// An AnalysisRun a Rollout started, and its last known phase.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct RolloutAnalysisRunStatus {
    /// Name of the AnalysisRun, in the Rollout's namespace.
    pub name: String,
    /// Its phase.
    pub status: AnalysisPhase,
    /// Its message, e.g. the failed metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The Git revert of a failed release. Written before the push so that a retry never makes a
/// second revert commit.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitRevertStatus {
    /// Pod-template hash of the failed release being reverted.
    pub pod_hash: String,
    /// The GitSync that applied the Rollout and whose repository is reverted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_sync: Option<GitSyncRef>,
    /// The commits the revert undoes, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reverted_commits: Vec<String>,
    /// The revert commit, once made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_commit: Option<String>,
    /// Progress of the revert.
    pub state: GitRevertState,
    /// Details, e.g. why the revert is blocked or the last push error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Names a GitSync.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct GitSyncRef {
    /// Name of the GitSync.
    pub name: String,
    /// Namespace of the GitSync.
    pub namespace: String,
}

/// Progress of a Git revert.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum GitRevertState {
    /// Intent: a person aborted the release and asks for its Git revert too (`kubectl weir abort
    /// --revert`). Set with `podHash` equal to `status.currentPodHash`; the revert writer takes it
    /// from there.
    Requested,
    /// The revert commit is made (or being made) and not yet on the remote.
    Pending,
    /// The revert commit is on the remote.
    Pushed,
    /// The revert cannot be made safely; see `message` and the `GitRevertBlocked` condition.
    Blocked,
    /// The revert failed for a reason retrying will not fix.
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const CANARY: &str = r#"
apiVersion: weir.io/v1alpha1
kind: Rollout
metadata:
  name: podinfo
  namespace: demo
spec:
  replicas: 5
  revisionHistoryLimit: 3
  selector:
    matchLabels:
      app: podinfo
  template:
    metadata:
      labels:
        app: podinfo
    spec:
      containers:
        - name: podinfo
          image: ghcr.io/stefanprodan/podinfo:6.7.0
          ports:
            - name: http
              containerPort: 9898
          resources:
            requests:
              cpu: 100m
              memory: 64Mi
  strategy:
    canary:
      canaryService: podinfo-canary
      stableService: podinfo-stable
      maxSurge: "20%"
      maxUnavailable: 0
      abortScaleDownDelaySeconds: 10
      trafficRouting:
        gatewayAPI:
          httpRoutes:
            - name: podinfo
            - name: podinfo-internal
              namespace: gateways
        istio:
          virtualServices:
            - name: podinfo
              routes: [primary]
      analysis:
        startingStep: 1
        templates:
          - templateName: error-rate
        args:
          - name: service
            value: podinfo-canary
      steps:
        - setCanaryScale:
            replicas: 1
        - setWeight: 10
        - pause:
            duration: 30s
        - analysis:
            templates:
              - templateName: error-rate
              - templateName: latency
                clusterScope: true
            args:
              - name: canary-hash
                valueFrom:
                  podTemplateHashValue: Latest
              - name: app
                valueFrom:
                  fieldRef:
                    fieldPath: metadata.labels['app']
        - setCanaryScale:
            weight: 50
        - setWeight: 50
        - pause: {}
        - setCanaryScale:
            matchTrafficWeight: true
  alerts:
    - name: team-slack
"#;

    #[test]
    fn canary_manifest_round_trips() {
        let rollout: Rollout = serde_saphyr::from_str(CANARY).unwrap();
        let RolloutStrategy::Canary(canary) = &rollout.spec.strategy else {
            panic!("expected a canary strategy");
        };
        assert_eq!(
            canary.steps,
            vec![
                CanaryStep::SetCanaryScale(SetCanaryScale::Replicas(1)),
                CanaryStep::SetWeight(10),
                CanaryStep::Pause(PauseStep {
                    duration: Some(DurationString::new("30s")),
                }),
                CanaryStep::Analysis(RolloutAnalysis {
                    templates: vec![
                        AnalysisTemplateRef {
                            template_name: "error-rate".into(),
                            cluster_scope: false,
                        },
                        AnalysisTemplateRef {
                            template_name: "latency".into(),
                            cluster_scope: true,
                        },
                    ],
                    args: vec![
                        RolloutAnalysisArgument {
                            name: "canary-hash".into(),
                            value: None,
                            value_from: Some(RolloutArgumentValueFrom::PodTemplateHashValue(
                                PodTemplateHashValue::Latest
                            )),
                        },
                        RolloutAnalysisArgument {
                            name: "app".into(),
                            value: None,
                            value_from: Some(RolloutArgumentValueFrom::FieldRef(FieldRef {
                                field_path: "metadata.labels['app']".into(),
                            })),
                        },
                    ],
                    ..RolloutAnalysis::default()
                }),
                CanaryStep::SetCanaryScale(SetCanaryScale::Weight(50)),
                CanaryStep::SetWeight(50),
                CanaryStep::Pause(PauseStep::default()),
                CanaryStep::SetCanaryScale(SetCanaryScale::MatchTrafficWeight(true)),
            ]
        );
        let routing = canary.traffic_routing.as_ref().unwrap();
        let gateway = routing.gateway_api.as_ref().unwrap();
        assert_eq!(
            gateway.http_routes[1].namespace.as_deref(),
            Some("gateways")
        );
        let istio = routing.istio.as_ref().unwrap();
        assert_eq!(istio.virtual_services[0].routes, vec!["primary".to_owned()]);
        let background = canary.analysis.as_ref().unwrap();
        assert_eq!(background.starting_step, Some(1));
        assert_eq!(background.analysis.templates[0].template_name, "error-rate");
        assert_eq!(canary.max_unavailable, Some(IntOrString::Int(0)));
        assert_eq!(rollout.spec.alerts[0].name, "team-slack");

        // Serializing gives back exactly the manifest: nothing added, nothing lost.
        let expected: Value = serde_saphyr::from_str(CANARY).unwrap();
        assert_eq!(serde_json::to_value(&rollout).unwrap(), expected);
    }

    #[test]
    fn status_round_trips_with_argo_field_names() {
        let status_yaml = r#"
phase: Paused
message: "waiting at step 2"
observedGeneration: 4
currentStepIndex: 2
currentPodHash: 7d9f8c
stableRS: 5b6c4d
weights:
  canary: 10
  stable: 90
abort: false
controllerPause: true
promoteFull: false
pauseConditions:
  - reason: CanaryPauseStep
    startTime: "2026-11-02T10:00:00Z"
canary:
  currentStepAnalysisRunStatus:
    name: podinfo-7d9f8c-2
    status: Running
gitRevert:
  podHash: 7d9f8c
  gitSync:
    name: apps
    namespace: weir-system
  revertedCommits: [abc1234]
  revertCommit: def5678
  state: Pushed
replicas: 6
updatedReplicas: 1
readyReplicas: 6
availableReplicas: 6
selector: app=podinfo
conditions:
  - type: Paused
    status: "True"
    reason: RolloutPaused
    message: pause step
    lastTransitionTime: "2026-11-02T10:00:00Z"
"#;
        let status: RolloutStatus = serde_saphyr::from_str(status_yaml).unwrap();
        assert_eq!(status.phase, Some(RolloutPhase::Paused));
        assert_eq!(status.stable_rs.as_deref(), Some("5b6c4d"));
        assert_eq!(
            status.weights,
            Some(TrafficWeights {
                canary: 10,
                stable: 90
            })
        );
        assert_eq!(
            status.pause_conditions[0].reason,
            PauseReason::CanaryPauseStep
        );
        assert_eq!(
            status.git_revert.as_ref().map(|r| r.state),
            Some(GitRevertState::Pushed)
        );
        let expected: Value = serde_saphyr::from_str(status_yaml).unwrap();
        assert_eq!(serde_json::to_value(&status).unwrap(), expected);
    }

    #[test]
    fn intent_fields_are_always_written() {
        // A status written by weir must carry `abort: false` and `promoteFull: false` so that a
        // merge patch of the whole status clears an earlier `true`.
        let value = serde_json::to_value(RolloutStatus::default()).unwrap();
        assert_eq!(value["abort"], Value::Bool(false));
        assert_eq!(value["promoteFull"], Value::Bool(false));
    }

    #[test]
    fn a_step_with_two_actions_is_rejected() {
        let cases = [
            "setWeight: 10\npause: {}\n",
            "{}\n",
            "setCanaryScale:\n  replicas: 1\n  weight: 10\n",
        ];
        for yaml in cases {
            assert!(
                serde_saphyr::from_str::<CanaryStep>(yaml).is_err(),
                "{yaml:?} should be rejected"
            );
        }
    }

    #[test]
    fn unset_fields_take_their_documented_defaults() {
        let minimal = r#"
selector:
  matchLabels: {app: web}
template:
  metadata:
    labels: {app: web}
strategy:
  canary: {}
"#;
        let spec: RolloutSpec = serde_saphyr::from_str(minimal).unwrap();
        assert_eq!(spec.replicas(), 1);
        assert_eq!(spec.revision_history_limit(), 10);
        assert_eq!(spec.progress_deadline_seconds(), 600);
        assert!(!spec.paused);
        let RolloutStrategy::Canary(canary) = &spec.strategy else {
            panic!("expected a canary strategy");
        };
        assert_eq!(canary.max_surge(), IntOrString::String("25%".into()));
        assert_eq!(canary.max_unavailable(), IntOrString::String("25%".into()));
        assert_eq!(canary.scale_down_delay_seconds(), 30);
        assert_eq!(canary.abort_scale_down_delay_seconds(), 30);
        assert!(canary.steps.is_empty());

        let blue_green: BlueGreenStrategy =
            serde_saphyr::from_str("activeService: web-active\n").unwrap();
        assert!(blue_green.auto_promotion_enabled());
        assert_eq!(blue_green.scale_down_delay_seconds(), 30);
        assert_eq!(blue_green.abort_scale_down_delay_seconds(), 30);
        assert_eq!(blue_green.preview_replica_count, None);
    }

    #[test]
    fn blue_green_manifest_round_trips() {
        let yaml = r#"
blueGreen:
  activeService: web-active
  previewService: web-preview
  autoPromotionEnabled: false
  previewReplicaCount: 1
  prePromotionAnalysis:
    templates:
      - templateName: smoke
  postPromotionAnalysis:
    templates:
      - templateName: error-rate
    args:
      - name: service
        value: web-active
"#;
        let strategy: RolloutStrategy = serde_saphyr::from_str(yaml).unwrap();
        let RolloutStrategy::BlueGreen(blue_green) = &strategy else {
            panic!("expected a blue-green strategy");
        };
        assert!(!blue_green.auto_promotion_enabled());
        assert_eq!(blue_green.preview_replica_count, Some(1));
        let expected: Value = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(serde_json::to_value(&strategy).unwrap(), expected);
    }
}
