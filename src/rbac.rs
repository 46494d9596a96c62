//! The Kubernetes API permissions weir's controllers use, kept next to the code that uses them.
//!
//! The Helm chart's ClusterRole is written from this list, and two tests hold the three together: one
//! renders the chart and checks that it grants every rule here, the other runs `weir run` through a
//! release (GitSync, canary with analysis, rollback, Git revert, alerts) against the emulator and checks
//! that every request weir made is allowed by a rule here. A new API call in a controller therefore fails
//! a test until it is listed here and granted by the chart.
//!
//! Discovery (`/api`, `/apis`) is not listed: every authenticated client may read it through the
//! `system:discovery` ClusterRole that Kubernetes binds by default.

/// One RBAC rule: `verbs` on `resource` (with `/subresource` when it is one) of an API group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The controller that needs it: `rollout`, `analysis`, `gitsync`, `notify` or `leader-election`.
    pub controller: &'static str,
    /// The API group; `""` is the core group.
    pub group: &'static str,
    /// The resource's plural, or `plural/subresource`.
    pub resource: &'static str,
    /// The verbs, as RBAC spells them.
    pub verbs: &'static [&'static str],
}

impl Rule {
    /// Whether this rule allows `verb` on `group`/`resource`.
    pub fn allows(&self, verb: &str, group: &str, resource: &str) -> bool {
        self.group == group && self.resource == resource && self.verbs.contains(&verb)
    }
}

const fn rule(
    controller: &'static str,
    group: &'static str,
    resource: &'static str,
    verbs: &'static [&'static str],
) -> Rule {
    Rule {
        controller,
        group,
        resource,
        verbs,
    }
}

/// weir's own API group.
pub const GROUP: &str = "weir.io";

/// The `User-Agent` weir's Kubernetes client sends, so that audit logs (and the RBAC coverage test)
/// tell weir's requests from those of kubectl or other tools.
pub const USER_AGENT: &str = concat!("weir/", env!("CARGO_PKG_VERSION"));

/// Every permission weir's controllers need whatever a GitSync applies.
///
/// Watches are cluster-wide (`Api::all`), so these are granted by a ClusterRole. GitSync's permissions
/// on the kinds it applies from Git are separate ([`GITSYNC_DEFAULT_APPLY`]) because they depend on
/// what the repository holds.
pub const RULES: &[Rule] = &[
    // Rollout: drives ReplicaSets, Services, routes and AnalysisRuns; records Events.
    rule("rollout", GROUP, "rollouts", &["get", "list", "watch"]),
    rule("rollout", GROUP, "rollouts/status", &["update", "patch"]),
    rule("rollout", GROUP, "analysistemplates", &["get"]),
    rule("rollout", GROUP, "clusteranalysistemplates", &["get"]),
    rule(
        "rollout",
        GROUP,
        "analysisruns",
        &["list", "watch", "create", "patch", "delete"],
    ),
    rule(
        "rollout",
        "apps",
        "replicasets",
        &["list", "watch", "create", "patch", "delete"],
    ),
    rule(
        "rollout",
        "",
        "services",
        &["get", "list", "watch", "patch"],
    ),
    rule(
        "rollout",
        "gateway.networking.k8s.io",
        "httproutes",
        &["get", "list", "watch", "patch"],
    ),
    rule(
        "rollout",
        "networking.istio.io",
        "virtualservices",
        &["get", "list", "watch", "patch"],
    ),
    rule("rollout", "", "events", &["create"]),
    // Analysis: measures AnalysisRuns; providers read credentials from Secrets.
    rule("analysis", GROUP, "analysisruns", &["get", "list", "watch"]),
    rule("analysis", GROUP, "analysisruns/status", &["update"]),
    rule("analysis", "", "secrets", &["get"]),
    // GitSync: its own objects, the Rollouts it reverts, Git credentials, and weir's kinds from Git.
    rule("gitsync", GROUP, "gitsyncs", &["get", "list", "watch"]),
    rule("gitsync", GROUP, "gitsyncs/status", &["update"]),
    rule(
        "gitsync",
        GROUP,
        "rollouts",
        &["get", "list", "watch", "patch", "delete"],
    ),
    rule("gitsync", GROUP, "rollouts/status", &["update"]),
    rule(
        "gitsync",
        GROUP,
        "analysistemplates",
        &["get", "patch", "delete"],
    ),
    rule(
        "gitsync",
        GROUP,
        "clusteranalysistemplates",
        &["get", "patch", "delete"],
    ),
    rule(
        "gitsync",
        GROUP,
        "alertproviders",
        &["get", "patch", "delete"],
    ),
    rule("gitsync", "", "secrets", &["get"]),
    rule("gitsync", "", "events", &["create"]),
    // Notify: turns Rollout Events into chat alerts and reports delivery on the AlertProvider.
    rule("notify", GROUP, "alertproviders", &["get", "list", "watch"]),
    rule("notify", GROUP, "alertproviders/status", &["update"]),
    rule("notify", "", "events", &["list", "watch", "create"]),
    rule("notify", GROUP, "rollouts", &["get"]),
    rule("notify", GROUP, "analysisruns", &["get"]),
    rule("notify", "apps", "replicasets", &["list"]),
    rule("notify", "", "secrets", &["get"]),
    // Leader election (a coordination Lease), used once `weir run` elects a leader among replicas.
    rule(
        "leader-election",
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update"],
    ),
];

/// What a GitSync may apply and prune out of the box: the common workload kinds. Server-side apply is a
/// `patch` (it creates too), pruning is a `delete`, and `get` reads the live object first.
///
/// The chart's `gitsync.rbac.rules` value holds the same rules and is meant to be edited: a repository
/// that holds other kinds needs them added there, and one that holds fewer can drop some.
pub const GITSYNC_DEFAULT_APPLY: &[Rule] = &[
    rule("gitsync", "", "configmaps", &APPLY),
    rule("gitsync", "", "services", &APPLY),
    rule("gitsync", "", "serviceaccounts", &APPLY),
    rule("gitsync", "apps", "deployments", &APPLY),
    rule("gitsync", "apps", "statefulsets", &APPLY),
    rule("gitsync", "apps", "daemonsets", &APPLY),
    rule("gitsync", "batch", "jobs", &APPLY),
    rule("gitsync", "batch", "cronjobs", &APPLY),
    rule("gitsync", "autoscaling", "horizontalpodautoscalers", &APPLY),
    rule("gitsync", "policy", "poddisruptionbudgets", &APPLY),
    rule("gitsync", "networking.k8s.io", "ingresses", &APPLY),
    rule("gitsync", "gateway.networking.k8s.io", "httproutes", &APPLY),
    rule("gitsync", "networking.istio.io", "virtualservices", &APPLY),
];

const APPLY: [&str; 3] = ["get", "patch", "delete"];

/// Whether `rules` allow `verb` on `group`/`resource`.
pub fn allowed(rules: &[Rule], verb: &str, group: &str, resource: &str) -> bool {
    rules.iter().any(|r| r.allows(verb, group, resource))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_names_a_known_controller_and_real_verbs() {
        let verbs = [
            "get", "list", "watch", "create", "update", "patch", "delete",
        ];
        for r in RULES.iter().chain(GITSYNC_DEFAULT_APPLY) {
            assert!(
                [
                    "rollout",
                    "analysis",
                    "gitsync",
                    "notify",
                    "leader-election"
                ]
                .contains(&r.controller),
                "{r:?}"
            );
            assert!(!r.verbs.is_empty(), "{r:?}");
            assert!(r.verbs.iter().all(|v| verbs.contains(v)), "{r:?}");
        }
    }

    #[test]
    fn gitsync_is_not_granted_everything_by_default() {
        assert!(
            GITSYNC_DEFAULT_APPLY
                .iter()
                .all(|r| r.group != "*" && r.resource != "*" && !r.verbs.contains(&"*"))
        );
        assert!(!allowed(
            GITSYNC_DEFAULT_APPLY,
            "patch",
            "rbac.authorization.k8s.io",
            "clusterroles"
        ));
    }
}
