//! Traffic routers: how weir moves requests between the stable and canary Services by rewriting the
//! weights of routes it does not own.
//!
//! Each router reads one route resource (a Gateway API HTTPRoute or an Istio VirtualService), works out
//! the change weir wants with a pure function, and writes it back with a JSON merge patch guarded by the
//! resourceVersion it read. Only the parts weir owns change: the weights of the stable and canary
//! backends, and (Gateway API) the canary backendRef weir adds. Everything else in the route is sent
//! back exactly as it was read.
//!
//! There are no Gateway API or Istio type crates for kube 5, so the routers work on `serde_json::Value`.

pub mod gateway_api;
pub mod istio;

use std::fmt;

use futures::future::BoxFuture;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use serde_json::Value;

use crate::api::rollout::TrafficRouting;

/// The field manager of every write a router makes, so `managedFields` and audit logs show weir.
pub const FIELD_MANAGER: &str = "weir-rollout";

/// How many writes one `set_weights` call makes at most before it gives up. A conflict or a read-back
/// that differs costs one attempt; the controller's next reconcile tries again.
pub const MAX_WRITE_ATTEMPTS: usize = 3;

/// Weights weir wants: canary percent 0..=100; stable = 100 - canary.
///
/// Values read from a route (see [`TrafficRouter::observe`]) may break that sum when someone else
/// wrote them, or when no traffic flows at all (both 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weights {
    /// Percent of requests for the canary Service.
    pub canary: i32,
    /// Percent of requests for the stable Service.
    pub stable: i32,
}

impl Weights {
    /// The weights that send `percent` of requests to the canary and the rest to stable.
    pub fn canary(percent: i32) -> Result<Weights, TrafficError> {
        if !(0..=100).contains(&percent) {
            return Err(TrafficError::WeightOutOfRange { percent });
        }
        Ok(Weights {
            canary: percent,
            stable: 100 - percent,
        })
    }

    /// All requests to stable: the weights of a finished or aborted release.
    pub const ALL_STABLE: Weights = Weights {
        canary: 0,
        stable: 100,
    };
}

impl Backends {
    /// Rejects Service names no route can be weighted for.
    pub(crate) fn check(&self) -> Result<(), TrafficError> {
        if self.stable_service.is_empty() {
            return Err(TrafficError::invalid(
                "spec.strategy.canary.stableService must be set to route traffic",
            ));
        }
        if self.canary_service.is_empty() {
            return Err(TrafficError::invalid(
                "spec.strategy.canary.canaryService must be set to route traffic",
            ));
        }
        if self.stable_service == self.canary_service {
            return Err(TrafficError::invalid(format!(
                "spec.strategy.canary.stableService and canaryService are both {}; they must differ",
                self.stable_service
            )));
        }
        Ok(())
    }
}

impl fmt::Display for Weights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "canary {}, stable {}", self.canary, self.stable)
    }
}

/// Which Services (and Istio hosts) are stable and canary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backends {
    /// `spec.strategy.canary.stableService`.
    pub stable_service: String,
    /// `spec.strategy.canary.canaryService`.
    pub canary_service: String,
    /// The Rollout's namespace, where both Services live.
    pub rollout_namespace: String,
}

/// What went wrong while reading or weighting a route.
#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    /// A canary weight outside 0..=100 was asked for.
    #[error("canary weight {percent} is outside 0..=100")]
    WeightOutOfRange {
        /// The weight asked for.
        percent: i32,
    },
    /// `set_weights` was told the release is complete while still sending traffic to the canary;
    /// removing the canary backend then would move that traffic without anyone asking for it.
    #[error("a complete release must have canary weight 0, got {weights}")]
    CompleteWithCanaryTraffic {
        /// The weights passed along with `complete`.
        weights: Weights,
    },
    /// The route the Rollout names does not exist.
    #[error("{kind} {namespace}/{name} not found")]
    NotFound {
        /// `HTTPRoute` or `VirtualService`.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// The route (or the Rollout's reference to it) is not one weir can manage; the message names the
    /// field and what is wrong with it.
    #[error("{message}")]
    InvalidSpec {
        /// What is wrong, naming the route and field.
        message: String,
    },
    /// The Kubernetes API failed a read or write.
    #[error("{action} {route}")]
    Api {
        /// `reading` or `patching`.
        action: &'static str,
        /// e.g. `HTTPRoute default/web`.
        route: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// Every write attempt hit a conflict with a concurrent writer.
    #[error("{route} kept changing under weir: {attempts} writes ended in a conflict")]
    Conflict {
        /// e.g. `HTTPRoute default/web`.
        route: String,
        /// How many writes were tried.
        attempts: usize,
        /// The last conflict.
        #[source]
        source: kube::Error,
    },
    /// The route's object could not be turned into JSON.
    #[error("decoding {route}")]
    Decode {
        /// e.g. `HTTPRoute default/web`.
        route: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// The route still carries other weights after the bounded retries, e.g. because another
    /// controller keeps rewriting them.
    #[error("{route} carries weights {got} after writing {want}")]
    WeightMismatch {
        /// e.g. `HTTPRoute default/web`.
        route: String,
        /// What weir wrote.
        want: Weights,
        /// What the route carries.
        got: Weights,
    },
}

impl TrafficError {
    /// Whether the Rollout's spec or the route must change before retrying can help: the controller
    /// then reports `InvalidSpec` instead of retrying.
    pub fn is_invalid_spec(&self) -> bool {
        matches!(
            self,
            TrafficError::InvalidSpec { .. } | TrafficError::NotFound { .. }
        )
    }

    pub(crate) fn invalid(message: impl Into<String>) -> TrafficError {
        TrafficError::InvalidSpec {
            message: message.into(),
        }
    }
}

/// One kind of router; one value per route resource the Rollout names.
pub trait TrafficRouter: Send + Sync {
    /// e.g. "HTTPRoute default/web".
    fn describe(&self) -> String {
        self.route().describe()
    }

    /// The route resource this router weights.
    fn route(&self) -> &RouteObject;

    /// Checks that weir can manage `route` (stable backend present, etc.), returning the weights it
    /// carries. `route` is the whole object, as read from the API or a watch cache.
    ///
    /// When several rules or routes in the resource disagree, the weights with the largest canary
    /// share are returned: that is the most traffic the canary may be getting.
    fn weights_in(&self, route: &Value, backends: &Backends) -> Result<Weights, TrafficError>;

    /// Reads the route from the API and returns [`TrafficRouter::weights_in`] of it. Never writes.
    fn observe<'a>(
        &'a self,
        client: &'a kube::Client,
        backends: &'a Backends,
    ) -> BoxFuture<'a, Result<Weights, TrafficError>> {
        Box::pin(async move {
            backends.check()?;
            let route = self.route().get(client).await?;
            self.weights_in(&route, backends)
        })
    }

    /// Sets the weights, writing only when they differ from what is there; checks the stored object
    /// each write returns and retries (at most [`MAX_WRITE_ATTEMPTS`] writes) on a mismatch or a 409;
    /// returns [`TrafficError::WeightMismatch`] if it still differs.
    ///
    /// `complete=true` means the release finished: the canary backendRefs weir added are removed
    /// (Gateway API). It requires canary weight 0.
    fn set_weights<'a>(
        &'a self,
        client: &'a kube::Client,
        backends: &'a Backends,
        weights: Weights,
        complete: bool,
    ) -> BoxFuture<'a, Result<(), TrafficError>> {
        Box::pin(async move {
            self.set_weights_from(client, backends, weights, complete, None)
                .await
                .map(drop)
        })
    }

    /// [`TrafficRouter::set_weights`], starting from `read` (the route as the caller last saw it)
    /// instead of a fresh read. A stale `read` costs one conflict: every patch is guarded by the
    /// resourceVersion it was made from. Returns the route as stored after the last write (or as
    /// read, when nothing had to change).
    fn set_weights_from<'a>(
        &'a self,
        client: &'a kube::Client,
        backends: &'a Backends,
        weights: Weights,
        complete: bool,
        read: Option<Value>,
    ) -> BoxFuture<'a, Result<Value, TrafficError>>;
}

/// Every route kind a router weights, for watches over them.
pub fn route_resources() -> Vec<ApiResource> {
    vec![
        gateway_api::HttpRouteRouter::new("", "")
            .route()
            .resource
            .clone(),
        istio::VirtualServiceRouter::new("", "", Vec::new())
            .route()
            .resource
            .clone(),
    ]
}

/// The routers a Rollout's trafficRouting names, Gateway API routes first.
pub fn routers_for(
    routing: &TrafficRouting,
    rollout_namespace: &str,
) -> Vec<Box<dyn TrafficRouter>> {
    let mut routers: Vec<Box<dyn TrafficRouter>> = Vec::new();
    if let Some(gateway) = &routing.gateway_api {
        for route in &gateway.http_routes {
            let namespace = route
                .namespace
                .as_deref()
                .filter(|ns| !ns.is_empty())
                .unwrap_or(rollout_namespace);
            routers.push(Box::new(gateway_api::HttpRouteRouter::new(
                namespace,
                &route.name,
            )));
        }
    }
    if let Some(istio) = &routing.istio {
        for vs in &istio.virtual_services {
            routers.push(Box::new(istio::VirtualServiceRouter::new(
                rollout_namespace,
                &vs.name,
                vs.routes.clone(),
            )));
        }
    }
    routers
}

/// Rejects `complete` with canary traffic left; see [`TrafficError::CompleteWithCanaryTraffic`].
pub(crate) fn check_complete(weights: Weights, complete: bool) -> Result<(), TrafficError> {
    if complete && weights.canary != 0 {
        return Err(TrafficError::CompleteWithCanaryTraffic { weights });
    }
    Ok(())
}

/// The string field `name` of a JSON object, if it is one.
pub(crate) fn str_field<'v>(value: &'v Value, name: &str) -> Option<&'v str> {
    value.get(name).and_then(Value::as_str)
}

/// One route resource, addressed dynamically because no typed crate exists for it.
#[derive(Debug, Clone)]
pub struct RouteObject {
    /// `HTTPRoute` or `VirtualService`.
    pub kind: &'static str,
    /// Its API resource.
    pub resource: ApiResource,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl RouteObject {
    pub(crate) fn new(
        group: &str,
        version: &str,
        kind: &'static str,
        plural: &str,
        namespace: &str,
        name: &str,
    ) -> RouteObject {
        let gvk = GroupVersionKind::gvk(group, version, kind);
        RouteObject {
            kind,
            resource: ApiResource::from_gvk_with_plural(&gvk, plural),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// e.g. "HTTPRoute default/web".
    pub fn describe(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }

    fn api(&self, client: &kube::Client) -> Api<DynamicObject> {
        Api::namespaced_with(client.clone(), &self.namespace, &self.resource)
    }

    /// The whole object as JSON, read from the API.
    pub async fn get(&self, client: &kube::Client) -> Result<Value, TrafficError> {
        let found = self
            .api(client)
            .get_opt(&self.name)
            .await
            .map_err(|source| TrafficError::Api {
                action: "reading",
                route: self.describe(),
                source,
            })?;
        let Some(object) = found else {
            return Err(TrafficError::NotFound {
                kind: self.kind,
                namespace: self.namespace.clone(),
                name: self.name.clone(),
            });
        };
        serde_json::to_value(&object).map_err(|source| TrafficError::Decode {
            route: self.describe(),
            source,
        })
    }

    /// Writes `body`; the object as stored after the write (admission included).
    async fn merge_patch(&self, client: &kube::Client, body: &Value) -> Result<Value, kube::Error> {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        let written = self
            .api(client)
            .patch(&self.name, &params, &Patch::Merge(body))
            .await?;
        serde_json::to_value(written).map_err(kube::Error::SerdeError)
    }

    /// Starting from `read` (or a fresh read), asks `desired` for the merge patch that brings the
    /// object where weir wants it, and writes it, until nothing is left to change or the attempts run
    /// out. Each write's answer is the stored object, so it serves as the read-back; only a conflict
    /// costs a fresh read.
    ///
    /// `desired` returns None when the object already is as wanted. Its patch must carry the
    /// object's `metadata.resourceVersion`, so a concurrent change fails the write with 409 instead of
    /// being overwritten.
    pub(crate) async fn converge(
        &self,
        client: &kube::Client,
        want: Weights,
        read: Option<Value>,
        desired: impl Fn(&Value) -> Result<Option<Value>, TrafficError>,
        observed: impl Fn(&Value) -> Result<Weights, TrafficError>,
    ) -> Result<Value, TrafficError> {
        let mut object = match read {
            Some(object) => object,
            None => self.get(client).await?,
        };
        let mut last_conflict = None;
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let Some(patch) = desired(&object)? else {
                return Ok(object);
            };
            match self.merge_patch(client, &patch).await {
                Ok(written) => {
                    last_conflict = None;
                    object = written;
                }
                Err(kube::Error::Api(status)) if status.is_conflict() => {
                    last_conflict = Some(kube::Error::Api(status));
                    object = self.get(client).await?;
                }
                Err(source) => {
                    return Err(TrafficError::Api {
                        action: "patching",
                        route: self.describe(),
                        source,
                    });
                }
            }
        }
        if desired(&object)?.is_none() {
            return Ok(object);
        }
        if let Some(source) = last_conflict {
            return Err(TrafficError::Conflict {
                route: self.describe(),
                attempts: MAX_WRITE_ATTEMPTS,
                source,
            });
        }
        Err(TrafficError::WeightMismatch {
            route: self.describe(),
            want,
            got: observed(&object)?,
        })
    }
}

/// The merge patch that replaces `spec.<field>` with `value`, guarded by the object's
/// resourceVersion, plus any annotation changes (None removes the annotation).
pub(crate) fn guarded_merge_patch(
    object: &Value,
    field: &str,
    value: Value,
    annotations: &[(&str, Option<String>)],
) -> Value {
    let mut metadata = serde_json::Map::new();
    if let Some(rv) = object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
    {
        metadata.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
    if !annotations.is_empty() {
        let changes = annotations
            .iter()
            .map(|(key, value)| {
                let value = value.clone().map_or(Value::Null, Value::String);
                ((*key).to_string(), value)
            })
            .collect();
        metadata.insert("annotations".into(), Value::Object(changes));
    }
    let mut spec = serde_json::Map::new();
    spec.insert(field.to_string(), value);
    let mut patch = serde_json::Map::new();
    patch.insert("metadata".into(), Value::Object(metadata));
    patch.insert("spec".into(), Value::Object(spec));
    Value::Object(patch)
}

/// Of several weights, the one with the largest canary share (the first on a tie).
pub(crate) fn most_canary(weights: impl IntoIterator<Item = Weights>) -> Option<Weights> {
    weights.into_iter().fold(None, |best, w| match best {
        Some(b) if b.canary >= w.canary => Some(b),
        _ => Some(w),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::rollout::{
        GatewayApiTrafficRouting, HttpRouteRef, IstioTrafficRouting, VirtualServiceRef,
    };
    use serde_json::json;

    #[test]
    fn canary_weights_sum_to_100_and_reject_out_of_range() {
        let cases = [
            (0, Some((0, 100))),
            (20, Some((20, 80))),
            (100, Some((100, 0))),
            (-1, None),
            (101, None),
        ];
        for (percent, want) in cases {
            let got = Weights::canary(percent).ok().map(|w| (w.canary, w.stable));
            assert_eq!(got, want, "percent {percent}");
        }
        assert!(!Weights::canary(101).unwrap_err().is_invalid_spec());
    }

    #[test]
    fn complete_requires_zero_canary() {
        assert!(check_complete(Weights::ALL_STABLE, true).is_ok());
        assert!(check_complete(Weights::canary(30).unwrap(), false).is_ok());
        assert!(matches!(
            check_complete(Weights::canary(30).unwrap(), true),
            Err(TrafficError::CompleteWithCanaryTraffic { .. })
        ));
    }

    #[test]
    fn invalid_spec_and_not_found_are_not_retried() {
        let cases = [
            (TrafficError::invalid("x"), true),
            (
                TrafficError::NotFound {
                    kind: "HTTPRoute",
                    namespace: "default".into(),
                    name: "web".into(),
                },
                true,
            ),
            (
                TrafficError::WeightMismatch {
                    route: "HTTPRoute default/web".into(),
                    want: Weights::ALL_STABLE,
                    got: Weights::canary(5).unwrap(),
                },
                false,
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.is_invalid_spec(), want, "{err}");
        }
    }

    #[test]
    fn routers_default_namespace_and_order() {
        let routing = TrafficRouting {
            gateway_api: Some(GatewayApiTrafficRouting {
                http_routes: vec![
                    HttpRouteRef {
                        name: "web".into(),
                        namespace: None,
                    },
                    HttpRouteRef {
                        name: "edge".into(),
                        namespace: Some("gateways".into()),
                    },
                ],
            }),
            istio: Some(IstioTrafficRouting {
                virtual_services: vec![VirtualServiceRef {
                    name: "web-vs".into(),
                    routes: vec!["primary".into()],
                }],
            }),
        };
        let names: Vec<String> = routers_for(&routing, "shop")
            .iter()
            .map(|r| r.describe())
            .collect();
        assert_eq!(
            names,
            [
                "HTTPRoute shop/web",
                "HTTPRoute gateways/edge",
                "VirtualService shop/web-vs"
            ]
        );
        assert!(routers_for(&TrafficRouting::default(), "shop").is_empty());
    }

    #[test]
    fn guarded_patch_carries_resource_version_and_annotation_changes() {
        let object =
            json!({"metadata": {"name": "web", "resourceVersion": "42"}, "spec": {"rules": []}});
        let patch = guarded_merge_patch(
            &object,
            "rules",
            json!([{"backendRefs": []}]),
            &[("a", Some("1".into())), ("b", None)],
        );
        assert_eq!(
            patch,
            json!({
                "metadata": {"resourceVersion": "42", "annotations": {"a": "1", "b": null}},
                "spec": {"rules": [{"backendRefs": []}]}
            })
        );
    }

    #[test]
    fn most_canary_picks_largest_share() {
        let w = |c| Weights::canary(c).unwrap();
        assert_eq!(most_canary([w(10), w(40), w(20)]), Some(w(40)));
        assert_eq!(most_canary([]), None);
    }
}
