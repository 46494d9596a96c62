//! The Rollout controller: a pure step machine ([`plan`]) for canary and blue-green, and a thin async
//! layer ([`controller`]) that observes the cluster, executes the plan and writes status.

pub mod analysis_gate;
mod blue_green;
mod canary;
pub mod controller;
pub mod hash;
pub mod plan;
pub mod replica_sets;
pub mod rollout_object;
pub mod shared_watch;
pub mod watch_caches;

pub use hash::{POD_TEMPLATE_HASH_LABEL, pod_template_hash};
pub use plan::{
    Action, Observed, ObservedReplicaSet, Plan, ServiceState, TrafficState, Transition, plan,
};

#[cfg(test)]
mod tests;
