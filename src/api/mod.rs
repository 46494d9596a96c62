//! weir's API: the custom resources of group `weir.io`, version `v1alpha1`, their conditions, and
//! their CustomResourceDefinitions.
//!
//! Field names follow Argo Rollouts wherever the concept is the same. Defaults are applied in code
//! (the `DEFAULT_*` constants and the accessor methods next to them), not by the API server, so
//! that weir behaves the same against a real cluster and against the emulator.

pub mod alert_provider;
pub mod analysis;
pub mod conditions;
pub mod crds;
pub mod duration;
pub mod gitsync;
pub mod rollout;
pub mod secret;

pub use alert_provider::{
    AlertEvent, AlertProvider, AlertProviderSpec, AlertProviderStatus, AlertProviderType,
};
pub use analysis::{
    AnalysisPhase, AnalysisRun, AnalysisRunSpec, AnalysisRunStatus, AnalysisTemplate,
    AnalysisTemplateSpec, AnalysisTemplateStatus, ClusterAnalysisTemplate,
    ClusterAnalysisTemplateSpec, Metric, MetricProvider,
};
pub use duration::DurationString;
pub use gitsync::{GitRef, GitSync, GitSyncSpec, GitSyncStatus};
pub use rollout::{
    CanaryStep, CanaryStrategy, Rollout, RolloutPhase, RolloutSpec, RolloutStatus, RolloutStrategy,
};

/// The API group of every weir kind.
pub const GROUP: &str = "weir.io";
/// The API version of every weir kind.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of every weir object.
pub const API_VERSION: &str = "weir.io/v1alpha1";

/// Annotation a GitSync writes on the objects it applies that carry a pod template (Rollouts): the
/// Git commit that last changed the rendered template. The Rollout controller copies it onto the
/// ReplicaSet of that template, and records it as `status.stableCommit` when the template becomes
/// stable.
pub const TEMPLATE_COMMIT_ANNOTATION: &str = "weir.io/template-commit";
