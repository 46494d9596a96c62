#![forbid(unsafe_code)]
//! The black-box e2e suite: each scenario runs weir as people do, in separate processes (`weir
//! emulator` or the `KUBECONFIG` cluster, `weir run`, kubectl, `kubectl weir`, `git daemon`,
//! Prometheus, the simulated app), and asserts what a user sees. See e2e/README.md.

#[path = "../tests/support/canary_app.rs"]
mod canary_app;
#[path = "../tests/support/git_remote.rs"]
mod git_remote;
#[path = "../tests/support/prometheus.rs"]
mod prometheus;
#[path = "../tests/support/mod.rs"]
mod support;

mod harness;

mod blue_green;
mod canary_promote;
mod canary_rollback;
mod controller_restart;
mod istio_routes;
mod prune;
