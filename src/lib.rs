#![forbid(unsafe_code)]
//! weir: progressive delivery for Kubernetes, with canary and blue-green rollouts, metric analysis, and an
//! automatic Git revert when a release fails.
pub mod analysis;
pub mod api;
pub mod cache_ready;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod events;
pub mod fnv;
pub mod gitsync;
pub mod leader_election;
pub mod notify;
pub mod owner_index;
pub mod plugin;
pub mod rbac;
pub mod rollout;
pub mod telemetry;
pub mod traffic;
pub mod without_managed_fields;
