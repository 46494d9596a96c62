//! Gateway API HTTPRoute (`gateway.networking.k8s.io/v1`): weir weights the backendRefs of the stable
//! and canary Services in every rule that routes to the stable Service.
//!
//! Gateway API weights are relative; weir writes stable = 100 - w and canary = w, so they read as
//! percentages. Other backendRefs of a managed rule keep their weights, and other rules and fields are
//! sent back exactly as read.
//!
//! A rule that routes only to the stable Service gets a canary backendRef (same port as the stable
//! one) as soon as the canary gets traffic. weir records the indexes of such rules in the annotation
//! [`ADDED_CANARY_REFS_ANNOTATION`], so that when the release completes it removes only the
//! backendRefs it added and never one a user wrote. Rules are identified by index because HTTPRoute
//! rule names are optional; reordering the rules of a route in the middle of a release can therefore
//! leave an added backendRef behind (weighted 0), but never removes a user's.

use serde_json::Value;

use super::{
    Backends, RouteObject, TrafficError, TrafficRouter, Weights, check_complete,
    guarded_merge_patch, most_canary, str_field,
};

/// The annotation listing, as a JSON array such as `[0,2]`, the indexes of the rules in
/// `spec.rules` where weir added the canary backendRef.
pub const ADDED_CANARY_REFS_ANNOTATION: &str = "weir.io/added-canary-backend-refs";

/// Gateway API's weight for a backendRef that sets none.
const DEFAULT_BACKEND_WEIGHT: i64 = 1;

/// Weights one HTTPRoute.
#[derive(Debug, Clone)]
pub struct HttpRouteRouter {
    object: RouteObject,
}

impl HttpRouteRouter {
    /// The router of the HTTPRoute `namespace/name`.
    pub fn new(namespace: &str, name: &str) -> HttpRouteRouter {
        HttpRouteRouter {
            object: RouteObject::new(
                "gateway.networking.k8s.io",
                "v1",
                "HTTPRoute",
                "httproutes",
                namespace,
                name,
            ),
        }
    }
}

impl TrafficRouter for HttpRouteRouter {
    fn route(&self) -> &RouteObject {
        &self.object
    }

    fn weights_in(&self, route: &Value, backends: &Backends) -> Result<Weights, TrafficError> {
        backends.check()?;
        observed_weights(route, backends)
    }

    fn set_weights_from<'a>(
        &'a self,
        client: &'a kube::Client,
        backends: &'a Backends,
        weights: Weights,
        complete: bool,
        read: Option<Value>,
    ) -> futures::future::BoxFuture<'a, Result<Value, TrafficError>> {
        Box::pin(async move {
            backends.check()?;
            check_complete(weights, complete)?;
            self.object
                .converge(
                    client,
                    weights,
                    read,
                    |route| {
                        Ok(desired_route(route, backends, weights, complete)?
                            .map(|change| change.merge_patch(route)))
                    },
                    |route| observed_weights(route, backends),
                )
                .await
        })
    }
}

/// What happens to [`ADDED_CANARY_REFS_ANNOTATION`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnnotationChange {
    /// Leave it as it is.
    Keep,
    /// Set it to this value.
    Set(String),
    /// Remove it: weir has no added backendRef left in the route.
    Remove,
}

/// The change weir makes to an HTTPRoute.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteChange {
    /// The new `spec.rules`, with every rule weir does not manage as read.
    pub rules: Value,
    /// The new value of [`ADDED_CANARY_REFS_ANNOTATION`].
    pub annotation: AnnotationChange,
}

impl RouteChange {
    /// The JSON merge patch that makes this change to `route`, guarded by its resourceVersion.
    pub fn merge_patch(&self, route: &Value) -> Value {
        let annotations = match &self.annotation {
            AnnotationChange::Keep => vec![],
            AnnotationChange::Set(v) => vec![(ADDED_CANARY_REFS_ANNOTATION, Some(v.clone()))],
            AnnotationChange::Remove => vec![(ADDED_CANARY_REFS_ANNOTATION, None)],
        };
        guarded_merge_patch(route, "rules", self.rules.clone(), &annotations)
    }
}

/// A rule that routes to the stable Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ManagedRule {
    /// Index in `spec.rules`.
    index: usize,
    /// Index of the stable backendRef in the rule's `backendRefs`.
    stable: usize,
    /// Index of the canary backendRef, when the rule has one.
    canary: Option<usize>,
}

/// Where the route is, for messages and for resolving backendRefs without a namespace.
struct RouteId<'v> {
    namespace: &'v str,
    name: &'v str,
}

impl RouteId<'_> {
    fn of<'v>(route: &'v Value, backends: &'v Backends) -> RouteId<'v> {
        let metadata = route.get("metadata").unwrap_or(&Value::Null);
        RouteId {
            namespace: str_field(metadata, "namespace")
                .filter(|ns| !ns.is_empty())
                .unwrap_or(&backends.rollout_namespace),
            name: str_field(metadata, "name").unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for RouteId<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTPRoute {}/{}", self.namespace, self.name)
    }
}

/// Whether `backend_ref` names the Service `service` in the Rollout's namespace. A backendRef without a
/// namespace means the route's own namespace.
fn names_service(backend_ref: &Value, service: &str, id: &RouteId, backends: &Backends) -> bool {
    str_field(backend_ref, "name") == Some(service)
        && matches!(str_field(backend_ref, "kind"), None | Some("Service"))
        && matches!(str_field(backend_ref, "group"), None | Some(""))
        && str_field(backend_ref, "namespace").unwrap_or(id.namespace) == backends.rollout_namespace
}

/// The rules that route to the stable Service, with the positions of the stable and canary refs.
fn managed_rules(route: &Value, backends: &Backends) -> Result<Vec<ManagedRule>, TrafficError> {
    let id = RouteId::of(route, backends);
    let rules = match route.pointer("/spec/rules") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(rules)) => rules.as_slice(),
        Some(_) => {
            return Err(TrafficError::invalid(format!(
                "{id} spec.rules is not a list"
            )));
        }
    };
    let mut managed = Vec::new();
    for (index, rule) in rules.iter().enumerate() {
        let refs = match rule.get("backendRefs") {
            None | Some(Value::Null) => continue,
            Some(Value::Array(refs)) => refs,
            Some(_) => {
                return Err(TrafficError::invalid(format!(
                    "{id} spec.rules[{index}].backendRefs is not a list"
                )));
            }
        };
        let positions = |service: &str| -> Vec<usize> {
            refs.iter()
                .enumerate()
                .filter(|(_, r)| names_service(r, service, &id, backends))
                .map(|(i, _)| i)
                .collect()
        };
        let stable = positions(&backends.stable_service);
        let canary = positions(&backends.canary_service);
        for (role, service, found) in [
            ("stable", &backends.stable_service, &stable),
            ("canary", &backends.canary_service, &canary),
        ] {
            if found.len() > 1 {
                return Err(TrafficError::invalid(format!(
                    "{id} spec.rules[{index}].backendRefs names the {role} Service {service} {} times; weir can weight only one",
                    found.len()
                )));
            }
        }
        // A rule that routes only to the canary is the user's own business.
        if let Some(&stable) = stable.first() {
            managed.push(ManagedRule {
                index,
                stable,
                canary: canary.first().copied(),
            });
        }
    }
    if managed.is_empty() {
        let hint = if id.namespace != backends.rollout_namespace {
            format!(
                " (a route in another namespace must set backendRefs[].namespace: {})",
                backends.rollout_namespace
            )
        } else {
            String::new()
        };
        return Err(TrafficError::invalid(format!(
            "{id} has no rule with a backendRef to the stable Service {}{hint}",
            backends.stable_service
        )));
    }
    Ok(managed)
}

/// The rule indexes in [`ADDED_CANARY_REFS_ANNOTATION`]; empty when it is absent.
fn added_rules(route: &Value, backends: &Backends) -> Result<Vec<usize>, TrafficError> {
    let Some(raw) = route
        .pointer("/metadata/annotations")
        .and_then(|a| str_field(a, ADDED_CANARY_REFS_ANNOTATION))
    else {
        return Ok(Vec::new());
    };
    serde_json::from_str::<Vec<usize>>(raw).map_err(|_| {
        TrafficError::invalid(format!(
            "{} annotation {ADDED_CANARY_REFS_ANNOTATION} must be a JSON list of rule indexes such as [0,2], got {raw:?}",
            RouteId::of(route, backends)
        ))
    })
}

fn weight_of(backend_ref: &Value) -> i64 {
    backend_ref
        .get("weight")
        .and_then(Value::as_i64)
        .unwrap_or(DEFAULT_BACKEND_WEIGHT)
}

/// Relative weights as percentages, rounded half up; both 0 when neither backend gets traffic.
fn as_percent(canary: i64, stable: i64) -> Weights {
    // Widened: a route may carry any int64, and 200 * i64::MAX must not overflow.
    let (canary, stable) = (i128::from(canary.max(0)), i128::from(stable.max(0)));
    let total = canary + stable;
    if total == 0 {
        return Weights {
            canary: 0,
            stable: 0,
        };
    }
    let percent = (200 * canary + total) / (2 * total);
    let percent = i32::try_from(percent.clamp(0, 100)).unwrap_or_default();
    Weights {
        canary: percent,
        stable: 100 - percent,
    }
}

/// The weights the route carries, as percentages between the stable and canary backendRefs. A rule
/// without a canary backendRef sends everything to stable. When rules disagree, the one with the
/// largest canary share counts.
pub fn observed_weights(route: &Value, backends: &Backends) -> Result<Weights, TrafficError> {
    let managed = managed_rules(route, backends)?;
    let per_rule = managed.iter().map(|rule| {
        let refs = route
            .pointer(&format!("/spec/rules/{}/backendRefs", rule.index))
            .and_then(Value::as_array);
        let weight = |i: usize| refs.and_then(|r| r.get(i)).map_or(0, weight_of);
        match rule.canary {
            Some(canary) => as_percent(weight(canary), weight(rule.stable)),
            None => Weights::ALL_STABLE,
        }
    });
    Ok(most_canary(per_rule).unwrap_or(Weights::ALL_STABLE))
}

/// The change that gives the route `weights`, or None when it already has them.
///
/// In every rule that routes to the stable Service: the stable backendRef gets weight
/// `weights.stable` and the canary one `weights.canary`. A rule without a canary backendRef gets one
/// when the canary weight is above 0, and is left alone otherwise. With `complete`, the canary
/// backendRefs weir added (see [`ADDED_CANARY_REFS_ANNOTATION`]) are removed.
pub fn desired_route(
    route: &Value,
    backends: &Backends,
    weights: Weights,
    complete: bool,
) -> Result<Option<RouteChange>, TrafficError> {
    check_complete(weights, complete)?;
    let managed = managed_rules(route, backends)?;
    let previously_added = added_rules(route, backends)?;
    let Some(rules) = route.pointer("/spec/rules").cloned() else {
        return Ok(None);
    };
    let mut new_rules = rules.clone();
    let mut added = Vec::new();
    for rule in &managed {
        let Some(refs) = new_rules
            .get_mut(rule.index)
            .and_then(|r| r.get_mut("backendRefs"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        let weir_added = previously_added.contains(&rule.index);
        match rule.canary {
            Some(canary) if complete && weir_added && canary < refs.len() => {
                refs.remove(canary);
                let stable = if canary < rule.stable {
                    rule.stable - 1
                } else {
                    rule.stable
                };
                set_weight(refs.get_mut(stable), weights.stable);
            }
            Some(canary) => {
                set_weight(refs.get_mut(rule.stable), weights.stable);
                set_weight(refs.get_mut(canary), weights.canary);
                if weir_added {
                    added.push(rule.index);
                }
            }
            None if weights.canary > 0 => {
                let canary_ref = canary_ref_like(refs.get(rule.stable), backends, weights.canary);
                set_weight(refs.get_mut(rule.stable), weights.stable);
                refs.push(canary_ref);
                added.push(rule.index);
            }
            None => {}
        }
    }
    let annotation = if added == previously_added && !added.is_empty() {
        AnnotationChange::Keep
    } else if added.is_empty() {
        let present = route
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(ADDED_CANARY_REFS_ANNOTATION))
            .is_some();
        if present {
            AnnotationChange::Remove
        } else {
            AnnotationChange::Keep
        }
    } else {
        AnnotationChange::Set(format_rule_indexes(&added))
    };
    if new_rules == rules && annotation == AnnotationChange::Keep {
        return Ok(None);
    }
    Ok(Some(RouteChange {
        rules: new_rules,
        annotation,
    }))
}

fn format_rule_indexes(indexes: &[usize]) -> String {
    let items: Vec<String> = indexes.iter().map(usize::to_string).collect();
    format!("[{}]", items.join(","))
}

fn set_weight(backend_ref: Option<&mut Value>, weight: i32) {
    if let Some(Value::Object(map)) = backend_ref {
        map.insert("weight".into(), Value::from(weight));
    }
}

/// A backendRef to the canary Service that addresses it the way `stable` addresses the stable one.
fn canary_ref_like(stable: Option<&Value>, backends: &Backends, weight: i32) -> Value {
    let mut canary = serde_json::Map::new();
    if let Some(Value::Object(stable)) = stable {
        for field in ["group", "kind", "namespace", "port"] {
            if let Some(v) = stable.get(field) {
                canary.insert(field.into(), v.clone());
            }
        }
    }
    canary.insert(
        "name".into(),
        Value::String(backends.canary_service.clone()),
    );
    canary.insert("weight".into(), Value::from(weight));
    Value::Object(canary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn backends() -> Backends {
        Backends {
            stable_service: "web-stable".into(),
            canary_service: "web-canary".into(),
            rollout_namespace: "default".into(),
        }
    }

    fn w(canary: i32) -> Weights {
        Weights::canary(canary).unwrap()
    }

    fn route(rules: Value) -> Value {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "web", "namespace": "default", "resourceVersion": "7"},
            "spec": {"parentRefs": [{"name": "public"}], "rules": rules}
        })
    }

    fn with_annotation(mut route: Value, value: &str) -> Value {
        route["metadata"]["annotations"] = json!({ ADDED_CANARY_REFS_ANNOTATION: value });
        route
    }

    /// Applies the change as the API server would apply its merge patch.
    fn apply(route: &Value, change: &RouteChange) -> Value {
        let mut next = route.clone();
        json_patch::merge(&mut next, &change.merge_patch(route));
        next
    }

    fn both(stable: i64, canary: i64) -> Value {
        json!({"backendRefs": [
            {"group": "", "kind": "Service", "name": "web-stable", "port": 80, "weight": stable},
            {"group": "", "kind": "Service", "name": "web-canary", "port": 80, "weight": canary}
        ]})
    }

    fn extra_rule() -> Value {
        json!({
            "matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
            "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x", "value": "y"}]}}],
            "backendRefs": [{"name": "admin", "port": 8080, "weight": 3}]
        })
    }

    #[test]
    fn sets_weights_in_rules_naming_both_services() {
        let cases = [
            ("first step", both(100, 0), w(20), json!([80, 20])),
            ("promotion", both(80, 20), w(100), json!([0, 100])),
            ("abort", both(50, 50), w(0), json!([100, 0])),
            (
                "absent weights default to 1 and are set",
                json!({"backendRefs": [{"name": "web-stable", "port": 80}, {"name": "web-canary", "port": 80}]}),
                w(30),
                json!([70, 30]),
            ),
        ];
        for (what, rule, weights, want) in cases {
            let r = route(json!([rule]));
            let change = desired_route(&r, &backends(), weights, false)
                .unwrap()
                .unwrap_or_else(|| panic!("{what}: no change"));
            let got: Vec<Value> = change.rules[0]["backendRefs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["weight"].clone())
                .collect();
            assert_eq!(Value::from(got), want, "{what}");
            assert_eq!(change.annotation, AnnotationChange::Keep, "{what}");
            let after = apply(&r, &change);
            assert_eq!(
                observed_weights(&after, &backends()).unwrap(),
                weights,
                "{what}"
            );
            assert_eq!(
                desired_route(&after, &backends(), weights, false).unwrap(),
                None,
                "{what}: idempotent"
            );
        }
    }

    #[test]
    fn unrelated_rules_and_fields_stay_byte_for_byte() {
        let mut managed = both(100, 0);
        managed["matches"] = json!([{"path": {"type": "PathPrefix", "value": "/"}}]);
        managed["timeouts"] = json!({"request": "10s"});
        managed["backendRefs"][0]["filters"] = json!([{"type": "RequestHeaderModifier"}]);
        managed["backendRefs"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "legacy", "port": 80, "weight": 5}));
        let r = route(json!([extra_rule(), managed]));
        let change = desired_route(&r, &backends(), w(25), false)
            .unwrap()
            .unwrap();
        let after = apply(&r, &change);
        assert_eq!(after["spec"]["rules"][0], extra_rule());
        assert_eq!(after["spec"]["parentRefs"], json!([{"name": "public"}]));
        let rule = &after["spec"]["rules"][1];
        assert_eq!(rule["matches"], managed["matches"]);
        assert_eq!(rule["timeouts"], json!({"request": "10s"}));
        assert_eq!(
            rule["backendRefs"][0]["filters"],
            json!([{"type": "RequestHeaderModifier"}])
        );
        assert_eq!(rule["backendRefs"][0]["weight"], 75);
        assert_eq!(rule["backendRefs"][1]["weight"], 25);
        assert_eq!(
            rule["backendRefs"][2],
            json!({"name": "legacy", "port": 80, "weight": 5})
        );
        let patch = change.merge_patch(&r);
        assert_eq!(patch["metadata"], json!({"resourceVersion": "7"}));
        assert_eq!(
            patch["spec"].as_object().unwrap().len(),
            1,
            "only spec.rules is sent"
        );
    }

    #[test]
    fn backend_ref_matching() {
        // (backendRef to the canary, route namespace, whether it is the canary Service in `default`)
        let cases = [
            (json!({"name": "web-canary"}), "default", true),
            (
                json!({"name": "web-canary", "kind": "Service", "group": ""}),
                "default",
                true,
            ),
            (
                json!({"name": "web-canary", "namespace": "default"}),
                "default",
                true,
            ),
            (
                json!({"name": "web-canary", "namespace": "default"}),
                "gateways",
                true,
            ),
            (json!({"name": "web-canary"}), "gateways", false),
            (
                json!({"name": "web-canary", "namespace": "other"}),
                "default",
                false,
            ),
            (
                json!({"name": "web-canary", "kind": "ServiceImport", "group": "multicluster.x-k8s.io"}),
                "default",
                false,
            ),
            (
                json!({"name": "web-canary", "group": "example.com"}),
                "default",
                false,
            ),
            (json!({"name": "web-canary-2"}), "default", false),
        ];
        for (canary_ref, namespace, want) in cases {
            let mut r = route(json!([{"backendRefs": [
                {"name": "web-stable", "namespace": "default", "port": 80, "weight": 100},
                canary_ref.clone()
            ]}]));
            r["metadata"]["namespace"] = json!(namespace);
            let rules = managed_rules(&r, &backends()).unwrap();
            assert_eq!(
                rules[0].canary.is_some(),
                want,
                "{canary_ref} in {namespace}"
            );
        }
    }

    #[test]
    fn adds_canary_ref_to_stable_only_rule_and_removes_it_on_complete() {
        let stable_only = json!({"backendRefs": [{"name": "web-stable", "port": 8080}]});
        let r = route(json!([extra_rule(), stable_only.clone()]));

        // Nothing to do while the canary gets no traffic.
        assert_eq!(desired_route(&r, &backends(), w(0), false).unwrap(), None);
        assert_eq!(
            observed_weights(&r, &backends()).unwrap(),
            Weights::ALL_STABLE
        );

        let change = desired_route(&r, &backends(), w(10), false)
            .unwrap()
            .unwrap();
        assert_eq!(change.annotation, AnnotationChange::Set("[1]".into()));
        let step1 = apply(&r, &change);
        assert_eq!(
            step1["spec"]["rules"][1]["backendRefs"],
            json!([
                {"name": "web-stable", "port": 8080, "weight": 90},
                {"name": "web-canary", "port": 8080, "weight": 10}
            ])
        );
        assert_eq!(
            step1["metadata"]["annotations"][ADDED_CANARY_REFS_ANNOTATION],
            "[1]"
        );
        assert_eq!(observed_weights(&step1, &backends()).unwrap(), w(10));
        assert_eq!(
            desired_route(&step1, &backends(), w(10), false).unwrap(),
            None
        );

        // Later steps and an abort keep the added ref, weighted.
        let step2 = apply(
            &step1,
            &desired_route(&step1, &backends(), w(50), false)
                .unwrap()
                .unwrap(),
        );
        let aborted = apply(
            &step2,
            &desired_route(&step2, &backends(), w(0), false)
                .unwrap()
                .unwrap(),
        );
        assert_eq!(aborted["spec"]["rules"][1]["backendRefs"][1]["weight"], 0);
        assert_eq!(
            aborted["metadata"]["annotations"][ADDED_CANARY_REFS_ANNOTATION],
            "[1]"
        );

        // Completion removes it and the annotation; the extra rule never changed.
        let change = desired_route(&aborted, &backends(), Weights::ALL_STABLE, true)
            .unwrap()
            .unwrap();
        assert_eq!(change.annotation, AnnotationChange::Remove);
        let done = apply(&aborted, &change);
        assert_eq!(
            done["spec"]["rules"][1]["backendRefs"],
            json!([{"name": "web-stable", "port": 8080, "weight": 100}])
        );
        assert_eq!(done["metadata"]["annotations"], json!({}));
        assert_eq!(done["spec"]["rules"][0], extra_rule());
        assert_eq!(
            desired_route(&done, &backends(), Weights::ALL_STABLE, true).unwrap(),
            None
        );
    }

    #[test]
    fn complete_keeps_canary_refs_the_user_wrote() {
        let r = with_annotation(
            route(json!([both(0, 100), {"backendRefs": [
                {"name": "web-stable", "port": 80, "weight": 0},
                {"name": "web-canary", "port": 80, "weight": 100}
            ]}])),
            "[1]",
        );
        let change = desired_route(&r, &backends(), Weights::ALL_STABLE, true)
            .unwrap()
            .unwrap();
        let done = apply(&r, &change);
        assert_eq!(
            done["spec"]["rules"][0]["backendRefs"][1]["name"],
            "web-canary"
        );
        assert_eq!(done["spec"]["rules"][0]["backendRefs"][1]["weight"], 0);
        assert_eq!(
            done["spec"]["rules"][1]["backendRefs"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn complete_with_canary_traffic_is_refused() {
        let r = route(json!([both(80, 20)]));
        assert!(matches!(
            desired_route(&r, &backends(), w(20), true),
            Err(TrafficError::CompleteWithCanaryTraffic { .. })
        ));
    }

    #[test]
    fn stale_annotation_is_cleaned_up() {
        // Rule 3 no longer exists and rule 0 lost its canary ref: nothing weir added is left.
        let r = with_annotation(
            route(json!([{"backendRefs": [{"name": "web-stable", "weight": 1}]}])),
            "[0,3]",
        );
        let change = desired_route(&r, &backends(), w(0), false)
            .unwrap()
            .unwrap();
        assert_eq!(change.annotation, AnnotationChange::Remove);
        assert_eq!(change.rules, r["spec"]["rules"]);
    }

    #[test]
    fn invalid_routes_name_the_problem() {
        let cases = [
            (
                route(json!([extra_rule()])),
                "HTTPRoute default/web has no rule with a backendRef to the stable Service web-stable",
            ),
            (
                route(json!([{"backendRefs": [{"name": "web-canary", "weight": 1}]}])),
                "HTTPRoute default/web has no rule with a backendRef to the stable Service web-stable",
            ),
            (
                json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {}}),
                "HTTPRoute default/web has no rule with a backendRef to the stable Service web-stable",
            ),
            (
                json!({"metadata": {"name": "edge", "namespace": "gateways"},
                       "spec": {"rules": [{"backendRefs": [{"name": "web-stable"}]}]}}),
                "HTTPRoute gateways/edge has no rule with a backendRef to the stable Service web-stable (a route in another namespace must set backendRefs[].namespace: default)",
            ),
            (
                route(
                    json!([{"backendRefs": [{"name": "web-stable", "port": 80}, {"name": "web-stable", "port": 81}]}]),
                ),
                "HTTPRoute default/web spec.rules[0].backendRefs names the stable Service web-stable 2 times; weir can weight only one",
            ),
            (
                route(json!({"backendRefs": []})),
                "HTTPRoute default/web spec.rules is not a list",
            ),
            (
                with_annotation(route(json!([both(100, 0)])), "rule one"),
                "HTTPRoute default/web annotation weir.io/added-canary-backend-refs must be a JSON list of rule indexes such as [0,2], got \"rule one\"",
            ),
        ];
        for (r, want) in cases {
            let err = desired_route(&r, &backends(), w(10), false).unwrap_err();
            assert!(err.is_invalid_spec(), "{err}");
            assert_eq!(err.to_string(), want);
        }
        let err = observed_weights(&route(json!([extra_rule()])), &backends()).unwrap_err();
        assert!(err.is_invalid_spec());
    }

    #[test]
    fn observed_weights_read_relative_weights_as_percent() {
        let cases = [
            ("weir's own", json!([both(80, 20)]), (20, 80)),
            ("relative 3:1", json!([both(3, 1)]), (25, 75)),
            ("rounds half up", json!([both(199, 1)]), (1, 99)),
            ("no traffic", json!([both(0, 0)]), (0, 0)),
            (
                "defaults of 1",
                json!([{"backendRefs": [{"name": "web-stable"}, {"name": "web-canary"}]}]),
                (50, 50),
            ),
            (
                "rules disagree: largest canary",
                json!([both(90, 10), extra_rule(), both(60, 40)]),
                (40, 60),
            ),
            (
                "stable only",
                json!([{"backendRefs": [{"name": "web-stable"}]}]),
                (0, 100),
            ),
        ];
        for (what, rules, (canary, stable)) in cases {
            let got = observed_weights(&route(rules), &backends()).unwrap();
            assert_eq!(got, Weights { canary, stable }, "{what}");
        }
    }

    #[test]
    fn percent_rounding() {
        let cases = [
            ((1, 2), 33),
            ((2, 1), 67),
            ((1, 199), 1),
            ((1, 200), 0),
            ((1_000_000, 0), 100),
        ];
        for ((c, s), want) in cases {
            assert_eq!(as_percent(c, s).canary, want, "{c}:{s}");
            assert_eq!(as_percent(c, s).stable, 100 - want, "{c}:{s}");
        }
    }
}
