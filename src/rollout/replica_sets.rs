//! The ReplicaSets a Rollout owns: one per pod-template hash.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::Resource;

use crate::api::Rollout;

use super::hash::POD_TEMPLATE_HASH_LABEL;
use super::plan::ObservedReplicaSet;

/// Label naming the Rollout on its ReplicaSets, so the controller watches only its own.
pub const ROLLOUT_LABEL: &str = "weir.io/rollout";
/// Annotation holding the time at which weir scales a ReplicaSet to zero.
pub const SCALE_DOWN_AT_ANNOTATION: &str = "weir.io/scale-down-at";

/// `<rollout>-<hash>`, shortened so that it stays a valid name.
pub fn name(rollout: &str, hash: &str) -> String {
    let max = 253 - hash.len() - 1;
    let base: String = rollout.chars().take(max).collect();
    format!("{base}-{hash}")
}

/// The ReplicaSet running `hash` for this Rollout, owned by it.
pub fn build(ro: &Rollout, hash: &str, replicas: i32) -> ReplicaSet {
    let ro_name = ro.metadata.name.clone().unwrap_or_default();
    let mut template = ro.spec.template.clone();
    let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(POD_TEMPLATE_HASH_LABEL.into(), hash.into());
    let mut rs_labels = labels.clone();
    rs_labels.insert(ROLLOUT_LABEL.into(), ro_name.clone());
    let mut selector: LabelSelector = ro.spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.into());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name(&ro_name, hash)),
            namespace: ro.metadata.namespace.clone(),
            labels: Some(rs_labels),
            owner_references: ro.controller_owner_ref(&()).map(|r| vec![r]),
            // The commit that declared this template, so `kubectl weir history` can name it.
            annotations: ro
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(crate::api::TEMPLATE_COMMIT_ANNOTATION))
                .map(|commit| {
                    BTreeMap::from([(
                        crate::api::TEMPLATE_COMMIT_ANNOTATION.to_string(),
                        commit.clone(),
                    )])
                }),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            selector,
            template: Some(template),
            ..Default::default()
        }),
        status: None,
    }
}

/// What the plan needs to know of a ReplicaSet; None when it is not one of weir's.
pub fn observe(rs: &ReplicaSet) -> Option<ObservedReplicaSet> {
    let hash = rs
        .metadata
        .labels
        .as_ref()?
        .get(POD_TEMPLATE_HASH_LABEL)?
        .clone();
    let status = rs.status.clone().unwrap_or_default();
    Some(ObservedReplicaSet {
        name: rs.metadata.name.clone()?,
        hash,
        replicas: rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        ready: status.ready_replicas.unwrap_or(0),
        available: status.available_replicas.unwrap_or(0),
        scale_down_at: rs
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SCALE_DOWN_AT_ANNOTATION))
            .and_then(|t| t.parse().ok()),
        created: rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replica_sets_select_only_their_revision_and_are_owned() {
        let ro: Rollout = serde_json::from_value(json!({
            "apiVersion": "weir.io/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "w", "image": "w:1"}]}},
                "strategy": {"canary": {}}}
        }))
        .unwrap();
        let rs = build(&ro, "abc", 3);
        assert_eq!(rs.metadata.name.as_deref(), Some("web-abc"));
        let spec = rs.spec.as_ref().unwrap();
        assert_eq!(
            spec.selector
                .match_labels
                .as_ref()
                .unwrap()
                .get(POD_TEMPLATE_HASH_LABEL)
                .map(String::as_str),
            Some("abc")
        );
        let tpl_labels = spec
            .template
            .as_ref()
            .unwrap()
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        assert_eq!(
            tpl_labels.get(POD_TEMPLATE_HASH_LABEL).map(String::as_str),
            Some("abc")
        );
        assert_eq!(rs.metadata.owner_references.as_ref().unwrap()[0].uid, "u1");
        let seen = observe(&rs).unwrap();
        assert_eq!(
            (seen.hash.as_str(), seen.replicas, seen.ready),
            ("abc", 3, 0)
        );
    }
}
