//! The Rollout as the controller's watch and cache hold it.
//!
//! The controller must see every stored Rollout, including one whose spec this version cannot
//! decode (it gets InvalidSpec), so the watch cannot decode into [`Rollout`] directly. A
//! `DynamicObject` would do, but it flattens its body into a map, and serde reads a flattened
//! struct in two passes: the whole object buffered as generic content, then decoded again. Here
//! the metadata is decoded once, typed, and the spec and status once, as JSON; [`RolloutObject::decode`]
//! turns them into a [`Rollout`] from a reference, without copying them.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::rollout::{Rollout, RolloutPhase, RolloutSpec, RolloutStatus};

/// A stored Rollout: typed metadata, and the spec and status as the API served them.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RolloutObject {
    /// The object's metadata, but for its managed fields.
    #[serde(deserialize_with = "crate::without_managed_fields::metadata")]
    pub metadata: ObjectMeta,
    /// `spec`, or `Null` when absent or dropped by [`RolloutObject::slim`].
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub spec: Value,
    /// `status`, or `Null` when absent or dropped by [`RolloutObject::slim`].
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub status: Value,
    /// Whether [`RolloutObject::slim`] dropped the body: the copy names the Rollout and no more.
    #[serde(skip)]
    pub slimmed: bool,
}

impl RolloutObject {
    /// The Rollout, or the decoding error that makes it invalid.
    pub fn decode(&self) -> Result<Rollout, serde_json::Error> {
        if self.spec.is_null() {
            return Err(serde::de::Error::missing_field("spec"));
        }
        Ok(Rollout {
            metadata: self.metadata.clone(),
            spec: RolloutSpec::deserialize(&self.spec)?,
            status: Option::<RolloutStatus>::deserialize(&self.status)?,
        })
    }

    /// Keeps only what names a settled Rollout: Healthy, with a status that describes its current
    /// spec. Such a Rollout is reconciled only on a change or a resync, and that reconcile reads
    /// it fresh, so 10,000 settled Rollouts cost the cache no more than their names. One in the
    /// middle of a release, or whose spec just changed to start one, is reconciled on every step
    /// and is kept whole, so those reconciles plan from the cache.
    pub fn slim(&mut self) {
        let healthy = self.status.get("phase").and_then(Value::as_str)
            == Some(RolloutPhase::Healthy.as_str());
        let observed = self
            .status
            .get("observedGeneration")
            .and_then(Value::as_i64);
        if healthy && observed.is_some() && observed == self.metadata.generation {
            self.spec = Value::Null;
            self.status = Value::Null;
            self.metadata.annotations = None;
            self.metadata.labels = None;
            self.slimmed = true;
        }
    }
}

impl Resource for RolloutObject {
    type DynamicType = ();
    type Scope = <Rollout as Resource>::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        Rollout::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        Rollout::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        Rollout::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        Rollout::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    fn object(body: Value) -> RolloutObject {
        let mut v = json!({
            "apiVersion": "weir.io/v1alpha1",
            "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "default", "generation": 3, "labels": {"app": "web"}},
        });
        if let (Some(obj), Value::Object(body)) = (v.as_object_mut(), body) {
            obj.extend(body);
        }
        serde_json::from_value(v).expect("a RolloutObject")
    }

    #[test]
    fn only_a_settled_rollout_is_cached_by_name() {
        // (phase, status.observedGeneration, kept by name only?) with metadata.generation 3
        let cases = [
            (Some("Healthy"), Some(3), true),
            (Some("Healthy"), Some(2), false),
            (Some("Healthy"), None, false),
            (Some("Progressing"), Some(3), false),
            (Some("Paused"), Some(3), false),
            (None, None, false),
        ];
        for (phase, observed, slimmed) in cases {
            let mut ro = object(json!({
                "spec": {"replicas": 1},
                "status": {"phase": phase, "observedGeneration": observed},
            }));
            ro.slim();
            assert_eq!(ro.slimmed, slimmed, "{phase:?} {observed:?}");
            assert_eq!(ro.spec.is_null(), slimmed);
            assert_eq!(ro.metadata.labels.is_none(), slimmed);
            assert_eq!(ro.metadata.name.as_deref(), Some("web"), "its name stays");
        }
    }

    #[test]
    fn a_whole_copy_decodes_as_the_rollout_the_api_served() {
        let served = json!({
            "apiVersion": "weir.io/v1alpha1",
            "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "default", "generation": 3, "labels": {"app": "web"}},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": "web:2"}]}},
                "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}},
            },
            "status": {"phase": "Progressing", "currentStepIndex": 1},
        });
        let expected: Rollout = serde_json::from_value(served.clone()).expect("a Rollout");
        let ro: RolloutObject = serde_json::from_value(served).expect("a RolloutObject");
        assert_eq!(ro.decode().expect("decodes"), expected);
        assert_eq!(
            ro.metadata.labels,
            Some(BTreeMap::from([("app".into(), "web".into())]))
        );
    }

    #[test]
    fn a_copy_that_is_no_rollout_says_why() {
        let no_spec = object(json!({}));
        let err = no_spec.decode().expect_err("no spec");
        assert!(err.to_string().contains("missing field `spec`"), "{err}");
        let bad = object(json!({"spec": {"replicas": "three"}}));
        let err = bad.decode().expect_err("replicas is not a number");
        assert!(err.to_string().contains("invalid type"), "{err}");
    }

    #[test]
    fn a_watch_event_carries_the_rollout_object() {
        let line = r#"{"type":"MODIFIED","object":{"apiVersion":"weir.io/v1alpha1","kind":"Rollout","metadata":{"name":"web","resourceVersion":"7"},"spec":{"replicas":2}}}"#;
        let ev: kube::core::WatchEvent<RolloutObject> =
            serde_json::from_str(line).expect("decodes");
        let kube::core::WatchEvent::Modified(ro) = ev else {
            panic!("a MODIFIED event")
        };
        assert_eq!(ro.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(ro.spec, json!({"replicas": 2}));
    }
}
