//! What the Rollout controller reads from watch caches instead of the API: the Services it pins and
//! the routes it weights.
//!
//! Every reconcile used to GET both Services and every route, and every step transition takes
//! several reconciles (weir's own writes trigger the next ones), so reads outnumbered writes by two
//! to one while 1,000 canaries stepped. A cache can lag weir's own last write, though, and planning
//! from the version before it would repeat the write. [`NewestVersions`] remembers the
//! resourceVersion of weir's own writes until the cache shows it; until then, and whenever a cache
//! is not listed yet or lacks the object, the read goes to the API. A cache miss therefore costs one
//! GET, never a wrong plan.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource};
use kube::core::DynamicResourceScope;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::Deserialize;
use serde_json::Value;

use crate::api::rollout::Rollout;
use crate::cache_ready::{CacheReady, cache_ready, signal_when_listed};
use crate::traffic::{RouteObject, TrafficError};
use crate::without_managed_fields;

/// Which object: its resource (plural and group), namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    /// `services`, `httproutes.gateway.networking.k8s.io`, ...
    pub resource: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// The resourceVersion of the newest version weir knows of each object, for objects whose watch
/// cache may not show it yet (weir just wrote them, or read them past the cache).
///
/// resourceVersions are opaque: they can be compared for equality, never ordered. So a cached copy
/// is trusted when no newer version is known, or when it is that version; once the cache shows it,
/// the entry is dropped, and the map holds only objects in flight.
#[derive(Debug, Default)]
pub struct NewestVersions(Mutex<HashMap<ObjectKey, Newest>>);

#[derive(Debug)]
struct Newest {
    rv: String,
    written: Option<Written>,
}

/// An object as weir's own guarded write left it, and the versions that write and the guarded
/// writes of weir before it replaced, one after another with nothing between them.
#[derive(Debug)]
struct Written {
    base_rvs: Vec<String>,
    object: Arc<Rollout>,
}

/// How many of weir's writes in a row a cache may lag and still be served by the last one's answer.
/// A step transition writes a Rollout's status two or three times, faster than a busy watch shows.
const WRITES_IN_A_ROW: usize = 4;

/// What a cached copy is worth.
#[derive(Debug, Clone, PartialEq)]
pub enum CachedCopy {
    /// It is the newest version weir knows of.
    Current,
    /// It is a version weir's own last writes replaced: the last write's answer is the object now.
    /// Each write was guarded by the version before it, so nothing came between them.
    Written(Arc<Rollout>),
    /// It may be older than what weir knows; read the object fresh.
    Stale,
}

impl NewestVersions {
    /// Remembers `rv` as the newest version of `key` (from a write's answer or a fresh read).
    pub fn saw(&self, key: ObjectKey, rv: Option<&str>) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match rv {
            Some(rv) => {
                map.insert(
                    key,
                    Newest {
                        rv: rv.to_string(),
                        written: None,
                    },
                );
            }
            None => {
                map.remove(&key);
            }
        }
    }

    /// Remembers the answer of weir's write of `key`, guarded by `base_rv`, so that a cache still at
    /// `base_rv` (or at the base of a write of weir's that led to it) is served by it instead of a
    /// fresh read.
    pub fn wrote(&self, key: ObjectKey, base_rv: Option<&str>, object: Rollout) {
        let Some(rv) = object.metadata.resource_version.clone() else {
            self.unknown(key);
            return;
        };
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let written = base_rv.map(|base| {
            let mut base_rvs = match map.remove(&key) {
                Some(Newest {
                    rv,
                    written: Some(w),
                }) if rv == base => w.base_rvs,
                _ => Vec::new(),
            };
            base_rvs.push(base.to_string());
            if base_rvs.len() > WRITES_IN_A_ROW {
                base_rvs.remove(0);
            }
            Written {
                base_rvs,
                object: Arc::new(object),
            }
        });
        map.insert(key, Newest { rv, written });
    }

    /// Marks `key` as changed by someone else in a way weir has not read (a write refused with a
    /// conflict): its cached copy is not trusted until a fresh read.
    pub fn unknown(&self, key: ObjectKey) {
        // No stored object has an empty resourceVersion, so no cached copy matches it.
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                key,
                Newest {
                    rv: String::new(),
                    written: None,
                },
            );
    }

    /// Forgets `key` (the object is gone).
    pub fn forget(&self, key: &ObjectKey) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }

    /// What a cached copy at `cached_rv` is worth.
    pub fn check(&self, key: &ObjectKey, cached_rv: Option<&str>) -> CachedCopy {
        self.check_keeping(key, cached_rv, true)
    }

    /// What a cached copy at `cached_rv` is worth, for a cache that may keep less than the whole
    /// object: when `whole` is false and the copy is the version weir's own write left, that
    /// write's answer stands in for it.
    pub fn check_keeping(
        &self,
        key: &ObjectKey,
        cached_rv: Option<&str>,
        whole: bool,
    ) -> CachedCopy {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(newest) = map.get(key) else {
            return CachedCopy::Current;
        };
        if Some(newest.rv.as_str()) == cached_rv {
            let newest = map.remove(key);
            return match newest.and_then(|n| n.written) {
                Some(w) if !whole => CachedCopy::Written(w.object),
                _ => CachedCopy::Current,
            };
        }
        match &newest.written {
            Some(w) if cached_rv.is_some_and(|c| w.base_rvs.iter().any(|b| b == c)) => {
                CachedCopy::Written(Arc::clone(&w.object))
            }
            _ => CachedCopy::Stale,
        }
    }

    /// Whether a cached copy at `cached_rv` is the newest version weir knows of.
    pub fn is_current(&self, key: &ObjectKey, cached_rv: Option<&str>) -> bool {
        self.check(key, cached_rv) == CachedCopy::Current
    }

    /// How many objects are in flight; for tests and metrics.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether no object is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A reflector store and whether its first list is in.
#[derive(Clone)]
struct Cache<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store: Store<K>,
    ready: CacheReady,
}

impl<K: Resource + Clone + 'static> Cache<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    /// The cached copy of `key`, when the cache is listed, holds it, and it is the newest known.
    fn current(
        &self,
        newest: &NewestVersions,
        key: &ObjectKey,
        dt: K::DynamicType,
    ) -> Option<Arc<K>> {
        if !self.ready.is_ready() {
            return None;
        }
        let obj = self
            .store
            .get(&ObjectRef::new_with(&key.name, dt).within(&key.namespace))?;
        newest
            .is_current(key, obj.meta().resource_version.as_deref())
            .then_some(obj)
    }
}

/// The Services and routes the Rollout controller reads, cached by watches that keep only the
/// fields it reads.
pub struct WatchCaches {
    services: Cache<Service>,
    routes: HashMap<String, (ApiResource, Cache<CachedRoute>)>,
    newest: NewestVersions,
}

/// A watch's stream, driven until the API goes away for good.
pub type Driver = futures::future::BoxFuture<'static, ()>;

impl WatchCaches {
    /// Caches fed by watches on every Service and every route kind a router names; the returned
    /// futures drive the watches and never end.
    ///
    /// A route kind whose CRD is not installed never lists: its reads go to the API (and say
    /// NotFound), as without a cache.
    pub fn start(client: &Client, route_kinds: &[ApiResource]) -> (WatchCaches, Vec<Driver>) {
        let mut drivers = Vec::new();
        let (services, driver) = watch::<Service, _>(client, (), slim_service);
        drivers.push(driver);
        let mut routes = HashMap::new();
        for ar in route_kinds {
            let (cache, driver) = watch::<CachedRoute, _>(client, ar.clone(), CachedRoute::slim);
            drivers.push(driver);
            routes.insert(resource_key(ar), (ar.clone(), cache));
        }
        let caches = WatchCaches {
            services,
            routes,
            newest: NewestVersions::default(),
        };
        (caches, drivers)
    }

    /// The versions weir knows to be newer than its caches.
    pub fn newest(&self) -> &NewestVersions {
        &self.newest
    }

    /// The pod-template-hash the Service `namespace/name` selects (None when it selects none), or
    /// None when the Service does not exist.
    pub async fn service(
        &self,
        client: &Client,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Option<String>>, kube::Error> {
        let key = service_key(namespace, name);
        let selected = |svc: &Service| {
            svc.spec
                .as_ref()
                .and_then(|sp| sp.selector.as_ref())
                .and_then(|sel| sel.get(super::hash::POD_TEMPLATE_HASH_LABEL).cloned())
        };
        if let Some(svc) = self.services.current(&self.newest, &key, ()) {
            return Ok(Some(selected(&svc)));
        }
        let fresh = Api::<Service>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await?;
        self.saw_read(key, fresh.as_ref().map(|s| s.meta()));
        Ok(fresh.as_ref().map(selected))
    }

    /// Remembers weir's own write of the Service `namespace/name`.
    pub fn wrote_service(&self, namespace: &str, name: &str, written: &Service) {
        self.newest.saw(
            service_key(namespace, name),
            written.metadata.resource_version.as_deref(),
        );
    }

    /// The route `route` as JSON, from the cache when it is current there, else from the API.
    pub async fn route(&self, client: &Client, route: &RouteObject) -> Result<Value, TrafficError> {
        let key = route_key(route);
        if let Some((ar, cache)) = self.routes.get(&key.resource)
            && let Some(obj) = cache.current(&self.newest, &key, ar.clone())
        {
            return obj.served(ar).map_err(|source| TrafficError::Decode {
                route: route.describe(),
                source,
            });
        }
        match route.get(client).await {
            Ok(fresh) => {
                self.wrote_route(route, &fresh);
                Ok(fresh)
            }
            Err(e) => {
                if matches!(e, TrafficError::NotFound { .. }) {
                    self.newest.forget(&key);
                }
                Err(e)
            }
        }
    }

    /// Remembers the route as weir last read or wrote it.
    pub fn wrote_route(&self, route: &RouteObject, stored: &Value) {
        self.newest.saw(
            route_key(route),
            stored
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str),
        );
    }

    /// After a failed write of `route`: its cached copy is not trusted until read again.
    pub fn route_unknown(&self, route: &RouteObject) {
        self.newest.unknown(route_key(route));
    }

    fn saw_read(&self, key: ObjectKey, meta: Option<&kube::api::ObjectMeta>) {
        match meta {
            Some(m) => self.newest.saw(key, m.resource_version.as_deref()),
            None => self.newest.forget(&key),
        }
    }
}

fn watch<K, F>(client: &Client, dt: K::DynamicType, slim: F) -> (Cache<K>, Driver)
where
    K: Resource + Clone + std::fmt::Debug + Send + Sync + serde::de::DeserializeOwned + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
    F: FnMut(&mut K) + Send + 'static,
{
    let objects =
        without_managed_fields::watch_all(client.clone(), &dt, watcher::Config::default());
    let writer = reflector::store::Writer::new(dt);
    let store = writer.as_reader();
    let (signal, ready) = cache_ready();
    let stream = signal_when_listed(reflector::reflector(writer, objects.modify(slim)), signal)
        .default_backoff();
    let driver = Box::pin(stream.for_each(|_| futures::future::ready(())));
    (Cache { store, ready }, driver)
}

/// What the controller reads of a Service: the pod-template-hash its selector pins. At 20,000
/// Services each field dropped here is memory the controller does not hold.
fn slim_service(svc: &mut Service) {
    let meta = &mut svc.metadata;
    meta.annotations = None;
    meta.labels = None;
    meta.owner_references = None;
    meta.uid = None;
    meta.creation_timestamp = None;
    meta.generation = None;
    svc.status = None;
    if let Some(spec) = svc.spec.as_mut() {
        let pinned = spec
            .selector
            .take()
            .unwrap_or_default()
            .into_iter()
            .filter(|(key, _)| key == super::hash::POD_TEMPLATE_HASH_LABEL)
            .collect();
        *spec = k8s_openapi::api::core::v1::ServiceSpec {
            selector: Some(pinned),
            ..Default::default()
        };
    }
}

/// What the routers read of a route: its metadata (weir's own bookkeeping lives in its
/// annotations) and its spec. The spec is kept as its JSON text: parsed, a route's spec is about
/// twenty maps of about 5 KiB in all, its text a tenth of that, and a router reads a route only
/// when it steps. [`CachedRoute::served`] turns it back.
///
/// Not a `DynamicObject`: serde decodes its flattened body in two passes (the whole object buffered
/// as generic content, then decoded again), on every watch event of every route.
#[derive(Clone, Debug, Deserialize)]
struct CachedRoute {
    metadata: ObjectMeta,
    #[serde(default, deserialize_with = "json_text")]
    spec: Option<String>,
}

fn json_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Some(Value::deserialize(d)?.to_string()))
}

impl CachedRoute {
    fn slim(&mut self) {
        let meta = &mut self.metadata;
        meta.labels = None;
        meta.uid = None;
        meta.creation_timestamp = None;
    }

    /// The route as the API served it, less its status and the metadata [`CachedRoute::slim`] dropped.
    fn served(&self, ar: &ApiResource) -> Result<Value, serde_json::Error> {
        let mut route = serde_json::Map::new();
        route.insert("apiVersion".into(), ar.api_version.clone().into());
        route.insert("kind".into(), ar.kind.clone().into());
        route.insert("metadata".into(), serde_json::to_value(&self.metadata)?);
        if let Some(text) = &self.spec {
            route.insert("spec".into(), serde_json::from_str(text)?);
        }
        Ok(Value::Object(route))
    }
}

impl Resource for CachedRoute {
    type DynamicType = ApiResource;
    type Scope = DynamicResourceScope;

    fn kind(ar: &ApiResource) -> Cow<'_, str> {
        Cow::Borrowed(&ar.kind)
    }

    fn group(ar: &ApiResource) -> Cow<'_, str> {
        Cow::Borrowed(&ar.group)
    }

    fn version(ar: &ApiResource) -> Cow<'_, str> {
        Cow::Borrowed(&ar.version)
    }

    fn api_version(ar: &ApiResource) -> Cow<'_, str> {
        Cow::Borrowed(&ar.api_version)
    }

    fn plural(ar: &ApiResource) -> Cow<'_, str> {
        Cow::Borrowed(&ar.plural)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

fn service_key(namespace: &str, name: &str) -> ObjectKey {
    ObjectKey {
        resource: "services".into(),
        namespace: namespace.into(),
        name: name.into(),
    }
}

fn resource_key(ar: &ApiResource) -> String {
    format!("{}.{}", ar.plural, ar.group)
}

fn route_key(route: &RouteObject) -> ObjectKey {
    ObjectKey {
        resource: resource_key(&route.resource),
        namespace: route.namespace.clone(),
        name: route.name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Rollout as a status write's answer at resourceVersion `rv`.
    fn rollout_at(rv: &str) -> Rollout {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "ro", "namespace": "default", "resourceVersion": rv},
            "spec": {
                "selector": {"matchLabels": {"app": "ro"}},
                "template": {"spec": {"containers": [{"name": "app", "image": "ro:1"}]}},
                "strategy": {"canary": {}},
            },
            "status": {"phase": "Progressing"},
        }))
        .expect("a Rollout")
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            resource: "services".into(),
            namespace: "default".into(),
            name: name.into(),
        }
    }

    #[test]
    fn a_cached_copy_is_trusted_until_weir_writes_and_again_once_it_shows_the_write() {
        let newest = NewestVersions::default();
        // (what happens, cached rv, trusted?)
        assert!(newest.is_current(&key("web"), Some("1")), "nothing known");
        newest.saw(key("web"), Some("5"));
        assert!(
            !newest.is_current(&key("web"), Some("1")),
            "cache lags the write"
        );
        assert!(!newest.is_current(&key("web"), None), "no version at all");
        assert!(newest.is_current(&key("web"), Some("5")), "cache shows it");
        assert!(newest.is_empty(), "in flight no more");
        assert!(
            newest.is_current(&key("web"), Some("7")),
            "a later outside write"
        );
    }

    #[test]
    fn a_cache_one_write_behind_is_served_by_that_writes_answer() {
        let newest = NewestVersions::default();
        let written = rollout_at("5");
        newest.wrote(key("ro"), Some("4"), written.clone());
        // (cached rv, what it is worth)
        let cases = [
            (Some("4"), CachedCopy::Written(Arc::new(written.clone()))),
            (Some("3"), CachedCopy::Stale),
            (Some("6"), CachedCopy::Stale),
            (None, CachedCopy::Stale),
            (Some("5"), CachedCopy::Current),
        ];
        for (cached, want) in cases {
            assert_eq!(newest.check(&key("ro"), cached), want, "cached {cached:?}");
        }
        assert!(newest.is_empty(), "the cache showed the write");

        // An answer without a version says nothing: read fresh.
        let mut unversioned = rollout_at("5");
        unversioned.metadata.resource_version = None;
        newest.wrote(key("ro"), Some("5"), unversioned);
        assert_eq!(newest.check(&key("ro"), Some("5")), CachedCopy::Stale);
    }

    #[test]
    fn a_cache_several_writes_behind_is_served_by_the_last_writes_answer() {
        let newest = NewestVersions::default();
        let at = |rv: u32| rollout_at(&rv.to_string());
        // weir writes 4 → 5 → 6 → 7 → 8 → 9, each guarded by the one before.
        for rv in 5..=9 {
            newest.wrote(key("ro"), Some(&(rv - 1).to_string()), at(rv));
        }
        let last = CachedCopy::Written(Arc::new(at(9)));
        // (cached rv, what it is worth)
        let cases = [
            ("4", CachedCopy::Stale), // more writes behind than are remembered
            ("5", last.clone()),
            ("8", last.clone()),
            ("3", CachedCopy::Stale),
        ];
        for (cached, want) in cases {
            assert_eq!(
                newest.check(&key("ro"), Some(cached)),
                want,
                "cached {cached}"
            );
        }
        // A write from a version weir did not write starts the row again.
        newest.wrote(key("ro"), Some("20"), at(21));
        assert_eq!(newest.check(&key("ro"), Some("8")), CachedCopy::Stale);
        assert_eq!(
            newest.check(&key("ro"), Some("20")),
            CachedCopy::Written(Arc::new(at(21)))
        );
    }

    #[test]
    fn a_name_only_copy_of_weirs_own_write_is_made_whole_by_that_writes_answer() {
        let newest = NewestVersions::default();
        let written = rollout_at("5");
        newest.wrote(key("ro"), Some("4"), written.clone());
        assert_eq!(
            newest.check_keeping(&key("ro"), Some("5"), false),
            CachedCopy::Written(Arc::new(written))
        );
        assert!(newest.is_empty(), "the cache showed the write");
        assert_eq!(
            newest.check_keeping(&key("ro"), Some("5"), false),
            CachedCopy::Current,
            "nothing in flight: a name-only copy is read fresh by the caller"
        );
    }

    #[test]
    fn a_conflict_distrusts_the_cache_until_a_fresh_read() {
        let newest = NewestVersions::default();
        newest.unknown(key("web"));
        assert!(!newest.is_current(&key("web"), Some("5")));
        assert!(!newest.is_current(&key("web"), Some("6")));
        newest.saw(key("web"), Some("6"));
        assert!(newest.is_current(&key("web"), Some("6")));
        newest.unknown(key("gone"));
        newest.forget(&key("gone"));
        assert!(newest.is_current(&key("gone"), Some("1")));
        assert!(newest.is_empty());
    }

    #[test]
    fn a_slim_service_keeps_its_selector_and_identity_only() {
        let mut svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "resourceVersion": "3",
                "labels": {"a": "b"}, "annotations": {"c": "d"}},
            "spec": {"selector": {"app": "web", "weir.io/pod-template-hash": "abc"},
                "ports": [{"port": 80}], "type": "ClusterIP"},
        }))
        .unwrap();
        slim_service(&mut svc);
        assert_eq!(
            serde_json::to_value(&svc).unwrap(),
            serde_json::json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "namespace": "default", "resourceVersion": "3"},
                "spec": {"selector": {"weir.io/pod-template-hash": "abc"}},
            })
        );
    }

    #[test]
    fn a_slim_route_gives_back_its_spec_and_bookkeeping() {
        let served = serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "web", "namespace": "default", "resourceVersion": "7",
                "uid": "u-1", "labels": {"a": "b"}, "annotations": {"weir.io/x": "y"}},
            "spec": {"rules": [{"backendRefs": [{"name": "web-stable", "weight": 100}]}]},
            "status": {"parents": []},
        });
        let mut route: CachedRoute = serde_json::from_value(served.clone()).unwrap();
        route.slim();
        let ar = ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
            "httproutes",
        );
        let read = route.served(&ar).unwrap();
        assert_eq!(read["spec"], served["spec"]);
        assert_eq!(read["kind"], "HTTPRoute");
        assert_eq!(read["apiVersion"], "gateway.networking.k8s.io/v1");
        assert_eq!(
            read["metadata"]["annotations"],
            served["metadata"]["annotations"]
        );
        assert_eq!(read["metadata"]["resourceVersion"], "7");
        assert!(read.get("status").is_none());
    }
}
