//! Istio VirtualService (`networking.istio.io/v1`): weir weights the stable and canary destinations
//! of the named `spec.http[]` routes.
//!
//! Istio requires the weights of a route's destinations to sum to 100, so weir writes stable = 100 - w
//! and canary = w, and refuses routes where another destination carries weight. Routes weir was not
//! told to weight, and every other field, are sent back exactly as read.

use serde_json::Value;

use super::{
    Backends, RouteObject, TrafficError, TrafficRouter, Weights, check_complete,
    guarded_merge_patch, most_canary, str_field,
};

/// Weights the named HTTP routes of one VirtualService.
#[derive(Debug, Clone)]
pub struct VirtualServiceRouter {
    object: RouteObject,
    routes: Vec<String>,
}

impl VirtualServiceRouter {
    /// The router of the VirtualService `namespace/name`, weighting the `spec.http[]` routes named
    /// `routes` (or its only route when `routes` is empty).
    pub fn new(namespace: &str, name: &str, routes: Vec<String>) -> VirtualServiceRouter {
        VirtualServiceRouter {
            object: RouteObject::new(
                "networking.istio.io",
                "v1",
                "VirtualService",
                "virtualservices",
                namespace,
                name,
            ),
            routes,
        }
    }
}

impl TrafficRouter for VirtualServiceRouter {
    fn route(&self) -> &RouteObject {
        &self.object
    }

    fn weights_in(&self, vs: &Value, backends: &Backends) -> Result<Weights, TrafficError> {
        backends.check()?;
        observed_weights(vs, &self.routes, backends)
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
            // A VirtualService has nothing weir added, so completion only means the weights.
            check_complete(weights, complete)?;
            self.object
                .converge(
                    client,
                    weights,
                    read,
                    |vs| {
                        Ok(desired_http(vs, &self.routes, backends, weights)?
                            .map(|http| guarded_merge_patch(vs, "http", http, &[])))
                    },
                    |vs| observed_weights(vs, &self.routes, backends),
                )
                .await
        })
    }
}

/// Whether a destination `host` addresses `service` in `namespace`: the short name, `name.ns`,
/// `name.ns.svc` or `name.ns.svc.cluster.local`.
pub fn host_matches(host: &str, service: &str, namespace: &str) -> bool {
    let Some(rest) = host.strip_prefix(service) else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    let Some(rest) = rest
        .strip_prefix('.')
        .and_then(|r| r.strip_prefix(namespace))
    else {
        return false;
    };
    matches!(rest, "" | ".svc" | ".svc.cluster.local")
}

/// An HTTP route weir weights, with the positions of its stable and canary destinations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ManagedRoute {
    /// Index in `spec.http`.
    index: usize,
    /// Index of the stable destination in the route's `route`.
    stable: usize,
    /// Index of the canary destination.
    canary: usize,
}

fn vs_id(vs: &Value, backends: &Backends) -> String {
    let metadata = vs.get("metadata").unwrap_or(&Value::Null);
    format!(
        "VirtualService {}/{}",
        str_field(metadata, "namespace").unwrap_or(&backends.rollout_namespace),
        str_field(metadata, "name").unwrap_or_default()
    )
}

/// The indexes in `http` of the routes the Rollout names.
fn selected_routes(id: &str, http: &[Value], names: &[String]) -> Result<Vec<usize>, TrafficError> {
    if names.is_empty() {
        return match http.len() {
            1 => Ok(vec![0]),
            0 => Err(TrafficError::invalid(format!("{id} has no http routes"))),
            n => Err(TrafficError::invalid(format!(
                "{id} has {n} http routes; name the ones weir weights in spec.strategy.canary.trafficRouting.istio.virtualServices[].routes"
            ))),
        };
    }
    let mut selected = Vec::new();
    for name in names {
        let found: Vec<usize> = http
            .iter()
            .enumerate()
            .filter(|(_, route)| str_field(route, "name") == Some(name.as_str()))
            .map(|(i, _)| i)
            .collect();
        if found.is_empty() {
            return Err(TrafficError::invalid(format!(
                "{id} has no http route named {name} (spec.strategy.canary.trafficRouting.istio.virtualServices[].routes)"
            )));
        }
        selected.extend(found);
    }
    selected.sort_unstable();
    selected.dedup();
    Ok(selected)
}

fn weight_of(destination: &Value) -> i64 {
    destination
        .get("weight")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

fn managed_routes(
    vs: &Value,
    names: &[String],
    backends: &Backends,
) -> Result<Vec<ManagedRoute>, TrafficError> {
    let id = vs_id(vs, backends);
    let http = match vs.pointer("/spec/http") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(http)) => http.as_slice(),
        Some(_) => {
            return Err(TrafficError::invalid(format!(
                "{id} spec.http is not a list"
            )));
        }
    };
    let namespace = &backends.rollout_namespace;
    let mut managed = Vec::new();
    for index in selected_routes(&id, http, names)? {
        let destinations = match http.get(index).and_then(|r| r.get("route")) {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(d)) => d.as_slice(),
            Some(_) => {
                return Err(TrafficError::invalid(format!(
                    "{id} spec.http[{index}].route is not a list"
                )));
            }
        };
        let host = |d: &Value| {
            d.pointer("/destination/host")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let mut stable = Vec::new();
        let mut canary = Vec::new();
        let mut weighted_other = None;
        for (i, d) in destinations.iter().enumerate() {
            let h = host(d);
            if host_matches(&h, &backends.stable_service, namespace) {
                stable.push(i);
            } else if host_matches(&h, &backends.canary_service, namespace) {
                canary.push(i);
            } else if weight_of(d) > 0 && weighted_other.is_none() {
                weighted_other = Some((i, h, weight_of(d)));
            }
        }
        let one = |role: &str, service: &str, found: &[usize]| match found {
            [only] => Ok(*only),
            [] => Err(TrafficError::invalid(format!(
                "{id} spec.http[{index}].route has no destination with the {role} host {service}"
            ))),
            many => Err(TrafficError::invalid(format!(
                "{id} spec.http[{index}].route has {} destinations with the {role} host {service}; weir can weight only one",
                many.len()
            ))),
        };
        let stable = one("stable", &backends.stable_service, &stable)?;
        let canary = one("canary", &backends.canary_service, &canary)?;
        if let Some((i, h, weight)) = weighted_other {
            return Err(TrafficError::invalid(format!(
                "{id} spec.http[{index}].route[{i}] sends weight {weight} to host {h}; weir keeps the weights summing to 100 only when every destination other than the stable and canary Services has weight 0"
            )));
        }
        managed.push(ManagedRoute {
            index,
            stable,
            canary,
        });
    }
    Ok(managed)
}

/// The weights the named routes carry. When they disagree, the route with the largest canary share
/// counts.
pub fn observed_weights(
    vs: &Value,
    names: &[String],
    backends: &Backends,
) -> Result<Weights, TrafficError> {
    let managed = managed_routes(vs, names, backends)?;
    let per_route = managed.iter().map(|route| {
        let destinations = vs
            .pointer(&format!("/spec/http/{}/route", route.index))
            .and_then(Value::as_array);
        let weight = |i: usize| {
            let w = destinations.and_then(|d| d.get(i)).map_or(0, weight_of);
            i32::try_from(w).unwrap_or(i32::MAX)
        };
        Weights {
            canary: weight(route.canary),
            stable: weight(route.stable),
        }
    });
    Ok(most_canary(per_route).unwrap_or(Weights::ALL_STABLE))
}

/// The new `spec.http` that gives the named routes `weights`, or None when they already have them.
pub fn desired_http(
    vs: &Value,
    names: &[String],
    backends: &Backends,
    weights: Weights,
) -> Result<Option<Value>, TrafficError> {
    let managed = managed_routes(vs, names, backends)?;
    let Some(http) = vs.pointer("/spec/http") else {
        return Ok(None);
    };
    let mut new_http = http.clone();
    for route in &managed {
        let Some(destinations) = new_http
            .get_mut(route.index)
            .and_then(|r| r.get_mut("route"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for (i, weight) in [
            (route.stable, weights.stable),
            (route.canary, weights.canary),
        ] {
            if let Some(Value::Object(d)) = destinations.get_mut(i) {
                d.insert("weight".into(), Value::from(weight));
            }
        }
    }
    if &new_http == http {
        return Ok(None);
    }
    Ok(Some(new_http))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn backends() -> Backends {
        Backends {
            stable_service: "web-stable".into(),
            canary_service: "web-canary".into(),
            rollout_namespace: "shop".into(),
        }
    }

    fn w(canary: i32) -> Weights {
        Weights::canary(canary).unwrap()
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn vs(http: Value) -> Value {
        json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "3"},
            "spec": {"hosts": ["web.example.com"], "gateways": ["public"], "http": http}
        })
    }

    fn split(name: &str, stable_host: &str, canary_host: &str, stable: i64, canary: i64) -> Value {
        json!({
            "name": name,
            "match": [{"uri": {"prefix": "/"}}],
            "retries": {"attempts": 3},
            "route": [
                {"destination": {"host": stable_host, "port": {"number": 80}}, "weight": stable},
                {"destination": {"host": canary_host, "port": {"number": 80}}, "weight": canary, "headers": {"request": {"set": {"x-canary": "1"}}}}
            ]
        })
    }

    fn plain(name: &str, stable: i64, canary: i64) -> Value {
        split(name, "web-stable", "web-canary", stable, canary)
    }

    fn weights_of(http: &Value, index: usize) -> (Value, Value) {
        let route = &http[index]["route"];
        (route[0]["weight"].clone(), route[1]["weight"].clone())
    }

    #[test]
    fn host_name_forms() {
        let cases = [
            ("web-stable", true),
            ("web-stable.shop", true),
            ("web-stable.shop.svc", true),
            ("web-stable.shop.svc.cluster.local", true),
            ("web-stable.other", false),
            ("web-stable.other.svc.cluster.local", false),
            ("web-stable.shop.svc.cluster", false),
            ("web-stable-2", false),
            ("web-stable.shopping", false),
            ("web", false),
            ("", false),
        ];
        for (host, want) in cases {
            assert_eq!(host_matches(host, "web-stable", "shop"), want, "{host}");
        }
    }

    #[test]
    fn sets_weights_on_every_host_form() {
        let forms = [
            ("web-stable", "web-canary"),
            ("web-stable.shop", "web-canary.shop"),
            ("web-stable.shop.svc", "web-canary.shop.svc"),
            (
                "web-stable.shop.svc.cluster.local",
                "web-canary.shop.svc.cluster.local",
            ),
        ];
        for (stable_host, canary_host) in forms {
            let v = vs(json!([split("primary", stable_host, canary_host, 100, 0)]));
            let http = desired_http(&v, &[], &backends(), w(30)).unwrap().unwrap();
            assert_eq!(
                weights_of(&http, 0),
                (json!(70), json!(30)),
                "{stable_host}"
            );
        }
    }

    #[test]
    fn weights_only_the_named_routes() {
        let v = vs(json!([
            plain("primary", 100, 0),
            plain("mobile", 100, 0),
            plain("internal", 100, 0)
        ]));
        let http = desired_http(&v, &names(&["primary", "internal"]), &backends(), w(40))
            .unwrap()
            .unwrap();
        assert_eq!(weights_of(&http, 0), (json!(60), json!(40)));
        assert_eq!(http[1], v["spec"]["http"][1], "unnamed route untouched");
        assert_eq!(weights_of(&http, 2), (json!(60), json!(40)));
        // Everything but the weights is kept.
        assert_eq!(http[0]["retries"], json!({"attempts": 3}));
        assert_eq!(
            http[0]["route"][1]["headers"],
            v["spec"]["http"][0]["route"][1]["headers"]
        );
        assert_eq!(
            http[0]["route"][0]["destination"],
            json!({"host": "web-stable", "port": {"number": 80}})
        );

        let mut after = v.clone();
        let patch = guarded_merge_patch(&v, "http", http, &[]);
        json_patch::merge(&mut after, &patch);
        assert_eq!(after["spec"]["hosts"], v["spec"]["hosts"]);
        assert_eq!(after["spec"]["gateways"], v["spec"]["gateways"]);
        assert_eq!(
            observed_weights(&after, &names(&["primary", "internal"]), &backends()).unwrap(),
            w(40)
        );
        assert_eq!(
            desired_http(&after, &names(&["primary", "internal"]), &backends(), w(40)).unwrap(),
            None,
            "idempotent"
        );
    }

    #[test]
    fn unchanged_weights_need_no_write() {
        let v = vs(json!([plain("primary", 80, 20)]));
        assert_eq!(desired_http(&v, &[], &backends(), w(20)).unwrap(), None);
        assert_eq!(
            desired_http(&v, &names(&["primary"]), &backends(), w(20)).unwrap(),
            None
        );
        assert!(desired_http(&v, &[], &backends(), w(0)).unwrap().is_some());
    }

    #[test]
    fn absent_weights_and_zero_weight_extra_destinations() {
        let v = vs(json!([{"route": [
            {"destination": {"host": "web-stable"}},
            {"destination": {"host": "web-canary"}},
            {"destination": {"host": "mirror-sink"}, "weight": 0}
        ]}]));
        assert_eq!(
            observed_weights(&v, &[], &backends()).unwrap(),
            Weights {
                canary: 0,
                stable: 0
            }
        );
        let http = desired_http(&v, &[], &backends(), w(10)).unwrap().unwrap();
        assert_eq!(
            http[0]["route"],
            json!([
                {"destination": {"host": "web-stable"}, "weight": 90},
                {"destination": {"host": "web-canary"}, "weight": 10},
                {"destination": {"host": "mirror-sink"}, "weight": 0}
            ])
        );
    }

    #[test]
    fn observed_weights_take_the_largest_canary_share() {
        let v = vs(json!([plain("a", 90, 10), plain("b", 50, 50)]));
        assert_eq!(
            observed_weights(&v, &names(&["a", "b"]), &backends()).unwrap(),
            w(50)
        );
        assert_eq!(
            observed_weights(&v, &names(&["a"]), &backends()).unwrap(),
            w(10)
        );
    }

    #[test]
    fn invalid_virtual_services_name_the_problem() {
        let cases: Vec<(Value, Vec<String>, &str)> = vec![
            (
                vs(json!([plain("a", 100, 0), plain("b", 100, 0)])),
                vec![],
                "VirtualService shop/web has 2 http routes; name the ones weir weights in spec.strategy.canary.trafficRouting.istio.virtualServices[].routes",
            ),
            (
                vs(json!([])),
                vec![],
                "VirtualService shop/web has no http routes",
            ),
            (
                vs(json!([plain("a", 100, 0)])),
                names(&["a", "missing"]),
                "VirtualService shop/web has no http route named missing (spec.strategy.canary.trafficRouting.istio.virtualServices[].routes)",
            ),
            (
                vs(
                    json!([{"name": "a", "route": [{"destination": {"host": "web-stable"}, "weight": 100}]}]),
                ),
                vec![],
                "VirtualService shop/web spec.http[0].route has no destination with the canary host web-canary",
            ),
            (
                vs(json!([split(
                    "a",
                    "web-stable.other",
                    "web-canary",
                    100,
                    0
                )])),
                vec![],
                "VirtualService shop/web spec.http[0].route has no destination with the stable host web-stable",
            ),
            (
                vs(json!([{"route": [
                    {"destination": {"host": "web-stable", "subset": "v1"}, "weight": 50},
                    {"destination": {"host": "web-stable.shop", "subset": "v2"}, "weight": 50},
                    {"destination": {"host": "web-canary"}, "weight": 0}
                ]}])),
                vec![],
                "VirtualService shop/web spec.http[0].route has 2 destinations with the stable host web-stable; weir can weight only one",
            ),
            (
                vs(json!([{"route": [
                    {"destination": {"host": "web-stable"}, "weight": 80},
                    {"destination": {"host": "web-canary"}, "weight": 10},
                    {"destination": {"host": "legacy"}, "weight": 10}
                ]}])),
                vec![],
                "VirtualService shop/web spec.http[0].route[2] sends weight 10 to host legacy; weir keeps the weights summing to 100 only when every destination other than the stable and canary Services has weight 0",
            ),
        ];
        for (v, routes, want) in cases {
            let err = desired_http(&v, &routes, &backends(), w(10)).unwrap_err();
            assert!(err.is_invalid_spec(), "{err}");
            assert_eq!(err.to_string(), want);
            let err = observed_weights(&v, &routes, &backends()).unwrap_err();
            assert_eq!(err.to_string(), want);
        }
    }
}
