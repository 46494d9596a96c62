//! What the GitSync apply leaves to the Rollout controller, and when it need not write at all.
//!
//! Route weights, the canary backendRefs weir adds, and the pod-template-hash key of a Rollout's Service
//! selectors belong to the Rollout controller (DESIGN §2). Under server-side apply, Service selectors and
//! HTTPRoute rules are atomic, so applying Git's version over them would undo a canary in progress. Instead
//! the desired object takes those values from the live one before it is compared and applied: Git and the
//! controller then agree, nothing is reported as drift, and no ownership ever flips back and forth.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::rollout::POD_TEMPLATE_HASH_LABEL;
use crate::traffic::gateway_api::ADDED_CANARY_REFS_ANNOTATION;

/// The objects Rollouts manage, by (namespace, name).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RolloutOwned {
    /// Services whose selector a Rollout pins.
    pub services: BTreeSet<(String, String)>,
    /// HTTPRoutes a Rollout weights, with its (stable, canary) Service names.
    pub http_routes: BTreeMap<(String, String), (String, String)>,
    /// VirtualServices a Rollout weights, with its (stable, canary) Service names.
    pub virtual_services: BTreeMap<(String, String), (String, String)>,
}

fn key(obj: &Value) -> (String, String) {
    let s = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (s("/metadata/namespace"), s("/metadata/name"))
}

/// Copies the Rollout controller's fields from `live` into `desired`.
pub fn keep_rollout_fields(desired: &mut Value, live: &Value, owned: &RolloutOwned) {
    let k = key(desired);
    match desired.get("kind").and_then(Value::as_str) {
        Some("Service") if owned.services.contains(&k) => {
            if let Some(hash) = live
                .pointer(&format!(
                    "/spec/selector/{}",
                    POD_TEMPLATE_HASH_LABEL.replace('/', "~1")
                ))
                .cloned()
                && let Some(sel) = desired
                    .pointer_mut("/spec/selector")
                    .and_then(Value::as_object_mut)
            {
                sel.insert(POD_TEMPLATE_HASH_LABEL.into(), hash);
            }
        }
        Some("HTTPRoute") => {
            if let Some((stable, canary)) = owned.http_routes.get(&k) {
                keep_route_weights(desired, live, stable, canary);
            }
        }
        Some("VirtualService") => {
            if let Some((stable, canary)) = owned.virtual_services.get(&k) {
                keep_destination_weights(desired, live, stable, canary);
            }
        }
        _ => {}
    }
}

fn keep_route_weights(desired: &mut Value, live: &Value, stable: &str, canary: &str) {
    if let Some(added) = live
        .pointer(&format!(
            "/metadata/annotations/{}",
            ADDED_CANARY_REFS_ANNOTATION.replace('/', "~1")
        ))
        .cloned()
        && let Some(meta) = desired.get_mut("metadata").and_then(Value::as_object_mut)
        && let Some(ann) = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Default::default()))
            .as_object_mut()
    {
        ann.insert(ADDED_CANARY_REFS_ANNOTATION.into(), added);
    }
    let live_rules = live
        .pointer("/spec/rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(rules) = desired
        .pointer_mut("/spec/rules")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for (i, rule) in rules.iter_mut().enumerate() {
        let Some(live_refs) = live_rules
            .get(i)
            .and_then(|r| r.get("backendRefs"))
            .and_then(Value::as_array)
        else {
            continue;
        };
        let Some(refs) = rule.get_mut("backendRefs").and_then(Value::as_array_mut) else {
            continue;
        };
        let names = |r: &Value, n: &str| r.get("name").and_then(Value::as_str) == Some(n);
        let has_stable = refs.iter().any(|r| names(r, stable));
        for name in [stable, canary] {
            let Some(l) = live_refs.iter().find(|r| names(r, name)) else {
                continue;
            };
            match refs.iter_mut().find(|r| names(r, name)) {
                Some(r) => {
                    if let (Some(obj), Some(w)) = (r.as_object_mut(), l.get("weight")) {
                        obj.insert("weight".into(), w.clone());
                    }
                }
                // A canary backendRef the Rollout controller added to a rule Git declares with stable only.
                None if name == canary && has_stable => refs.push(l.clone()),
                None => {}
            }
        }
    }
}

fn keep_destination_weights(desired: &mut Value, live: &Value, stable: &str, canary: &str) {
    let live_http = live
        .pointer("/spec/http")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(http) = desired
        .pointer_mut("/spec/http")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for route in http.iter_mut() {
        let name = route.get("name").cloned();
        let Some(live_route) = live_http.iter().find(|r| r.get("name") == name.as_ref()) else {
            continue;
        };
        let host_of = |d: &Value| {
            d.pointer("/destination/host")
                .and_then(Value::as_str)
                .map(|h| h.split('.').next().unwrap_or(h).to_string())
        };
        let live_dests = live_route
            .get("route")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let Some(dests) = route.get_mut("route").and_then(Value::as_array_mut) else {
            continue;
        };
        for d in dests.iter_mut() {
            let Some(host) = host_of(d) else { continue };
            if host != stable && host != canary {
                continue;
            }
            if let Some(w) = live_dests
                .iter()
                .find(|l| host_of(l).as_deref() == Some(host.as_str()))
                .and_then(|l| l.get("weight"))
                && let Some(obj) = d.as_object_mut()
            {
                obj.insert("weight".into(), w.clone());
            }
        }
    }
}

/// Whether `live` already holds everything `desired` says: then the apply would change nothing and is skipped.
/// Fields only the server fills in (defaults, status, metadata) do not count as drift.
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d
            .iter()
            .all(|(k, v)| l.get(k).is_some_and(|lv| is_subset(v, lv))),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(a, b)| is_subset(a, b))
        }
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (a, b) => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn owned() -> RolloutOwned {
        let pair = ("web-stable".to_string(), "web-canary".to_string());
        RolloutOwned {
            services: BTreeSet::from([("default".into(), "web-stable".into())]),
            http_routes: BTreeMap::from([(("default".into(), "web".into()), pair.clone())]),
            virtual_services: BTreeMap::from([(("default".into(), "web".into()), pair)]),
        }
    }

    #[test]
    fn a_route_declared_100_0_in_git_keeps_the_rollouts_80_20() {
        let mut desired = json!({"kind": "HTTPRoute", "metadata": {"name": "web", "namespace": "default"}, "spec": {"rules": [
            {"backendRefs": [{"name": "web-stable", "port": 80, "weight": 100}, {"name": "web-canary", "port": 80, "weight": 0}]},
            {"backendRefs": [{"name": "admin", "port": 8080}]}]}});
        let live = json!({"kind": "HTTPRoute", "metadata": {"name": "web", "namespace": "default"}, "spec": {"rules": [
            {"backendRefs": [{"name": "web-stable", "port": 80, "weight": 80, "kind": "Service", "group": ""}, {"name": "web-canary", "port": 80, "weight": 20, "kind": "Service", "group": ""}]},
            {"backendRefs": [{"name": "admin", "port": 8080, "weight": 1, "kind": "Service", "group": ""}]}]}});
        keep_rollout_fields(&mut desired, &live, &owned());
        assert_eq!(desired["spec"]["rules"][0]["backendRefs"][0]["weight"], 80);
        assert_eq!(desired["spec"]["rules"][0]["backendRefs"][1]["weight"], 20);
        assert!(is_subset(&desired, &live), "no drift, no write");
    }

    #[test]
    fn a_canary_ref_weir_added_is_kept_and_its_marker_too() {
        let mut desired = json!({"kind": "HTTPRoute", "metadata": {"name": "web", "namespace": "default"}, "spec": {"rules": [
            {"backendRefs": [{"name": "web-stable", "port": 80}]}]}});
        let live = json!({"kind": "HTTPRoute", "metadata": {"name": "web", "namespace": "default", "annotations": {ADDED_CANARY_REFS_ANNOTATION: "[0]"}},
            "spec": {"rules": [{"backendRefs": [{"name": "web-stable", "port": 80, "weight": 70}, {"name": "web-canary", "port": 80, "weight": 30}]}]}});
        keep_rollout_fields(&mut desired, &live, &owned());
        assert!(is_subset(&desired, &live), "{desired}");
    }

    #[test]
    fn service_selectors_keep_the_pinned_hash_and_other_changes_still_show() {
        let mut desired = json!({"kind": "Service", "metadata": {"name": "web-stable", "namespace": "default"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}});
        let live = json!({"kind": "Service", "metadata": {"name": "web-stable", "namespace": "default", "uid": "u"}, "spec": {"selector": {"app": "web", POD_TEMPLATE_HASH_LABEL: "abc"}, "ports": [{"port": 80, "protocol": "TCP"}], "clusterIP": "10.0.0.1"}});
        keep_rollout_fields(&mut desired, &live, &owned());
        assert_eq!(desired["spec"]["selector"][POD_TEMPLATE_HASH_LABEL], "abc");
        assert!(is_subset(&desired, &live));
        desired["spec"]["ports"][0]["port"] = json!(81);
        assert!(
            !is_subset(&desired, &live),
            "a real change in Git is still applied"
        );
    }

    #[test]
    fn virtual_service_weights_are_kept_per_named_route() {
        let mut desired = json!({"kind": "VirtualService", "metadata": {"name": "web", "namespace": "default"}, "spec": {"http": [
            {"name": "primary", "route": [{"destination": {"host": "web-stable"}, "weight": 100}, {"destination": {"host": "web-canary.default.svc.cluster.local"}, "weight": 0}]}]}});
        let live = json!({"kind": "VirtualService", "metadata": {"name": "web", "namespace": "default"}, "spec": {"http": [
            {"name": "primary", "route": [{"destination": {"host": "web-stable"}, "weight": 60}, {"destination": {"host": "web-canary.default.svc.cluster.local"}, "weight": 40}]}]}});
        keep_rollout_fields(&mut desired, &live, &owned());
        assert!(is_subset(&desired, &live), "{desired}");
    }

    #[test]
    fn objects_rollouts_do_not_manage_are_untouched() {
        let mut desired = json!({"kind": "Service", "metadata": {"name": "other", "namespace": "default"}, "spec": {"selector": {"app": "x"}}});
        let before = desired.clone();
        let live = json!({"kind": "Service", "metadata": {"name": "other", "namespace": "default"}, "spec": {"selector": {"app": "x", POD_TEMPLATE_HASH_LABEL: "h"}}});
        keep_rollout_fields(&mut desired, &live, &owned());
        assert_eq!(desired, before);
        assert!(!is_subset(
            &json!({"spec": {"selector": {"app": "y"}}}),
            &live
        ));
    }
}
