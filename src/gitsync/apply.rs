//! Server-side apply of a rendered revision: what to write, what to skip, what to prune, and how
//! healthy each object is.
//!
//! The decisions are pure functions over (rendered, live) pairs; [`Applier`] only reads, applies and
//! deletes. An object is written only when the live one lacks something Git declares: its digest
//! annotation covers what Git declared last time, so a field removed from Git changes the digest and
//! is applied (server-side apply then drops it), while fields other managers own never count as drift.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use kube::Resource;
use kube::api::{Api, DeleteParams, GetParams, ListParams, Patch, PatchParams, PropagationPolicy};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::discovery::Scope;
use kube::{Client, ResourceExt};
use serde_json::Value;

use crate::api::TEMPLATE_COMMIT_ANNOTATION;
use crate::api::gitsync::{InventoryEntry, ObjectHealth};
use crate::api::rollout::{Rollout, RolloutStrategy};
use crate::rollout::pod_template_hash;

use super::ownership::{RolloutOwned, is_subset, keep_rollout_fields};
use super::render::{ANNOTATION_GITSYNC, RenderedObject};

/// Field manager of every object a GitSync applies.
pub const FIELD_MANAGER: &str = "weir";
/// Annotation holding a digest of what Git declared for the object at the last apply.
pub const ANNOTATION_APPLIED_DIGEST: &str = "weir.io/applied-digest";
/// Server-side applies in flight at once during a sync. Enough to keep the API server busy
/// while each request waits on the network; few enough that one GitSync cannot flood it
/// (client-go's default QPS budget is in the same range).
pub const APPLY_CONCURRENCY: usize = 16;

/// Why applying or pruning failed. Messages name the object and, for applies, its source file and
/// line, because they are shown to users in the Ready condition.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The object has no usable apiVersion, kind or name.
    #[error("{source_file}: object without {missing}")]
    Malformed {
        /// `file#Lline` of the object.
        source_file: String,
        /// What is missing.
        missing: &'static str,
    },
    /// The cluster serves no such kind.
    #[error(
        "{source_file}: {api_version} {kind} is not served by the cluster (is its CRD installed?)"
    )]
    UnknownKind {
        /// `file#Lline` of the object.
        source_file: String,
        /// Its apiVersion.
        api_version: String,
        /// Its kind.
        kind: String,
    },
    /// The API server refused or failed a request.
    #[error("{action}: {source}")]
    Api {
        /// What was being done, naming the object and its source.
        action: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// What an apply pass did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ApplyReport {
    /// Every object of the revision, in apply order, with its health.
    pub inventory: Vec<InventoryEntry>,
    /// Objects that did not exist and were created.
    pub created: usize,
    /// Objects that had drifted or changed in Git and were applied.
    pub configured: usize,
    /// Objects already as declared: not written.
    pub unchanged: usize,
}

/// What to do with one object.
#[derive(Debug, Clone, PartialEq)]
pub enum ObjectAction {
    /// Create it.
    Create(Value),
    /// Apply it over the live object.
    Configure(Value),
    /// Nothing: the live object already holds everything Git declares.
    Unchanged,
}

/// The identity of an object across API versions of its group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// API group ("" for the core group).
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Namespace, if namespaced.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// The key of an inventory entry.
    pub fn of(entry: &InventoryEntry) -> ObjectKey {
        ObjectKey {
            group: group_of(&entry.api_version).to_string(),
            kind: entry.kind.clone(),
            namespace: entry.namespace.clone(),
            name: entry.name.clone(),
        }
    }
}

fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

/// The inventory entry of a rendered object; `None` when it lacks apiVersion, kind or name.
pub fn entry_of(object: &Value) -> Option<InventoryEntry> {
    let text = |pointer: &str| {
        object
            .pointer(pointer)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    Some(InventoryEntry {
        api_version: text("/apiVersion")?,
        kind: text("/kind")?,
        namespace: text("/metadata/namespace"),
        name: text("/metadata/name")?,
        health: None,
    })
}

/// A stable digest of what Git declares for an object (serde_json maps are sorted, so equal
/// objects serialize alike).
pub fn digest(object: &Value) -> String {
    format!("{:016x}", crate::fnv::fnv1a_64(object.to_string().bytes()))
}

fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

fn set_annotation(object: &mut Value, key: &str, value: &str) {
    let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let annotations = meta
        .entry("annotations")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Some(annotations) = annotations.as_object_mut() {
        annotations.insert(key.to_string(), Value::String(value.to_string()));
    }
}

fn template_hash(object: &Value) -> Option<String> {
    let template = object.pointer("/spec/template")?;
    serde_json::from_value(template.clone())
        .ok()
        .map(|t| pod_template_hash(&t))
}

fn is_rollout(object: &Value) -> bool {
    object.get("kind").and_then(Value::as_str) == Some("Rollout")
        && object
            .get("apiVersion")
            .and_then(Value::as_str)
            .is_some_and(|v| group_of(v) == crate::api::GROUP)
}

/// The object to apply for `rendered` at `revision`, given the live object: Git's fields, its
/// digest, the Rollout controller's fields taken from the live object, and for a Rollout the
/// commit that last changed its pod template.
pub fn desired(
    rendered: &Value,
    live: Option<&Value>,
    owned: &RolloutOwned,
    revision: &str,
) -> Value {
    let mut desired = rendered.clone();
    set_annotation(&mut desired, ANNOTATION_APPLIED_DIGEST, &digest(rendered));
    if is_rollout(rendered) {
        // The commit travels with the template: kept while the template is unchanged, so the
        // Rollout controller can tell which commit declared its stable revision.
        let kept = live.and_then(|live| {
            let same =
                template_hash(live).is_some() && template_hash(live) == template_hash(rendered);
            same.then(|| annotation(live, TEMPLATE_COMMIT_ANNOTATION))
                .flatten()
        });
        set_annotation(
            &mut desired,
            TEMPLATE_COMMIT_ANNOTATION,
            kept.unwrap_or(revision),
        );
    }
    if let Some(live) = live {
        keep_rollout_fields(&mut desired, live, owned);
    }
    desired
}

/// Decides the write for one object.
pub fn plan_object(
    rendered: &Value,
    live: Option<&Value>,
    owned: &RolloutOwned,
    revision: &str,
) -> ObjectAction {
    let desired = desired(rendered, live, owned, revision);
    match live {
        None => ObjectAction::Create(desired),
        Some(live) if is_subset(&as_stored(&desired), live) => ObjectAction::Unchanged,
        Some(_) => ObjectAction::Configure(desired),
    }
}

/// `desired` as the API server stores it, for comparing with the live object: a Secret's
/// write-only `stringData` is folded into `data` (base64), so a Secret declared with
/// `stringData` is not drift on every resync.
fn as_stored(desired: &Value) -> std::borrow::Cow<'_, Value> {
    let is_secret = desired.get("kind").and_then(Value::as_str) == Some("Secret")
        && desired.get("apiVersion").and_then(Value::as_str) == Some("v1");
    let Some(Value::Object(plain)) = desired.get("stringData").filter(|_| is_secret) else {
        return std::borrow::Cow::Borrowed(desired);
    };
    let mut stored = desired.clone();
    let mut data = stored
        .get("data")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (key, value) in plain {
        let text = value.as_str().unwrap_or_default();
        data.insert(
            key.clone(),
            Value::String(super::git::base64(text.as_bytes())),
        );
    }
    if let Some(map) = stored.as_object_mut() {
        map.remove("stringData");
        map.insert("data".into(), Value::Object(data));
    }
    std::borrow::Cow::Owned(stored)
}

/// The objects of `previous` that `current` no longer has, in deletion order: everything else
/// first, then Namespaces, then CustomResourceDefinitions, so nothing is orphaned mid-prune.
pub fn stale(previous: &[InventoryEntry], current: &[InventoryEntry]) -> Vec<InventoryEntry> {
    let kept: BTreeSet<ObjectKey> = current.iter().map(ObjectKey::of).collect();
    let mut out: Vec<InventoryEntry> = previous
        .iter()
        .filter(|e| !kept.contains(&ObjectKey::of(e)))
        .cloned()
        .collect();
    let rank = |e: &InventoryEntry| match e.kind.as_str() {
        "CustomResourceDefinition" => 2,
        "Namespace" => 1,
        _ => 0,
    };
    out.reverse();
    out.sort_by_key(rank);
    out
}

/// Health of a live object, from what its kind reports.
pub fn health(object: &Value) -> ObjectHealth {
    let int = |p: &str| object.pointer(p).and_then(Value::as_i64);
    let generation = int("/metadata/generation");
    let observed = int("/status/observedGeneration");
    let stale_status = matches!((generation, observed), (Some(g), Some(o)) if o < g);
    match object.get("kind").and_then(Value::as_str) {
        Some("Rollout") if is_rollout(object) => {
            match object.pointer("/status/phase").and_then(Value::as_str) {
                _ if stale_status => ObjectHealth::Progressing,
                Some("Healthy") => ObjectHealth::Healthy,
                Some("Degraded") => ObjectHealth::Degraded,
                _ => ObjectHealth::Progressing,
            }
        }
        Some("Deployment" | "ReplicaSet" | "StatefulSet") => {
            let deadline_passed = object
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c.get("reason").and_then(Value::as_str) == Some("ProgressDeadlineExceeded")
                    })
                });
            let wanted = int("/spec/replicas").unwrap_or(1);
            let available = int("/status/availableReplicas")
                .or(int("/status/readyReplicas"))
                .unwrap_or(0);
            if deadline_passed {
                ObjectHealth::Degraded
            } else if stale_status || available < wanted {
                ObjectHealth::Progressing
            } else {
                ObjectHealth::Healthy
            }
        }
        _ => {
            let ready = object
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| {
                    cs.iter()
                        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
                })
                .and_then(|c| c.get("status").and_then(Value::as_str));
            match ready {
                Some("False") => ObjectHealth::Degraded,
                Some("Unknown") => ObjectHealth::Progressing,
                _ => ObjectHealth::Healthy,
            }
        }
    }
}

/// The Services and routes the given Rollouts manage (DESIGN §2), which the apply leaves to them.
pub fn rollout_owned<'a>(rollouts: impl IntoIterator<Item = &'a Rollout>) -> RolloutOwned {
    let mut owned = RolloutOwned::default();
    for ro in rollouts {
        let ns = ro.namespace().unwrap_or_default();
        match &ro.spec.strategy {
            RolloutStrategy::Canary(c) => {
                for svc in [&c.stable_service, &c.canary_service].into_iter().flatten() {
                    owned.services.insert((ns.clone(), svc.clone()));
                }
                let (Some(stable), Some(canary)) = (&c.stable_service, &c.canary_service) else {
                    continue;
                };
                let Some(routing) = &c.traffic_routing else {
                    continue;
                };
                for route in routing.gateway_api.iter().flat_map(|g| &g.http_routes) {
                    let route_ns = route.namespace.clone().unwrap_or_else(|| ns.clone());
                    owned.http_routes.insert(
                        (route_ns, route.name.clone()),
                        (stable.clone(), canary.clone()),
                    );
                }
                for vs in routing.istio.iter().flat_map(|i| &i.virtual_services) {
                    owned.virtual_services.insert(
                        (ns.clone(), vs.name.clone()),
                        (stable.clone(), canary.clone()),
                    );
                }
            }
            RolloutStrategy::BlueGreen(b) => {
                for svc in std::iter::once(&b.active_service).chain(&b.preview_service) {
                    owned.services.insert((ns.clone(), svc.clone()));
                }
            }
        }
    }
    owned
}

/// A kind and namespace with at least this many objects in a sync is read with one list; fewer
/// are read with a GET each, so one object in a crowded namespace does not list all of it.
const LIST_THRESHOLD: usize = 8;
/// Objects per list page: bounds the memory of one response.
const LIST_PAGE: u32 = 500;
/// Lists and GETs in flight at once while reading the live objects.
const READ_CONCURRENCY: usize = 4;

/// The apply group of an object: CRDs, then Namespaces, then the rest (the render's order).
fn phase(object: &Value) -> u8 {
    let group = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .map_or("", group_of);
    match (group, object.get("kind").and_then(Value::as_str)) {
        ("apiextensions.k8s.io", Some("CustomResourceDefinition")) => 0,
        ("", Some("Namespace")) => 1,
        _ => 2,
    }
}

/// A live object's identity: the resource's URL path, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LiveKey {
    resource: String,
    namespace: Option<String>,
    name: String,
}

/// The key the URL path of a resource is known by.
trait UrlPathKey {
    fn url_path_key(&self) -> String;
}

impl UrlPathKey for ApiResource {
    fn url_path_key(&self) -> String {
        format!("{}/{}", self.api_version, self.plural)
    }
}

/// One object of a sync, ready to read and apply.
struct Target<'o> {
    rendered: &'o RenderedObject,
    source_file: String,
    entry: InventoryEntry,
    resource: ApiResource,
}

/// Objects read together: one resource in one namespace (or cluster-wide).
type ReadGroup = (String, Option<String>);

impl Target<'_> {
    fn read_group(&self) -> ReadGroup {
        (self.resource.url_path_key(), self.entry.namespace.clone())
    }

    fn live_key(&self) -> LiveKey {
        LiveKey {
            resource: self.resource.url_path_key(),
            namespace: self.entry.namespace.clone(),
            name: self.entry.name.clone(),
        }
    }

    /// An API error, naming what was being done to which object and where it came from.
    fn api_error(&self, doing: &str, source: kube::Error) -> ApplyError {
        ApplyError::Api {
            action: format!(
                "{doing} {}: {} {}{}",
                self.source_file,
                self.entry.kind,
                self.entry
                    .namespace
                    .as_deref()
                    .map(|ns| format!("{ns}/"))
                    .unwrap_or_default(),
                self.entry.name
            ),
            source,
        }
    }
}

/// What happened to one object, with its health now.
enum Applied {
    Created(ObjectHealth),
    Configured(ObjectHealth),
    Unchanged(ObjectHealth),
}

/// Applies and prunes through the API, with a cache of which resource serves each kind.
pub struct Applier {
    client: Client,
    resources: Mutex<HashMap<GroupVersionKind, (ApiResource, bool)>>,
}

impl Applier {
    /// An applier over `client`.
    pub fn new(client: Client) -> Applier {
        Applier {
            client,
            resources: Mutex::new(HashMap::new()),
        }
    }

    /// The resource serving `api_version`/`kind` and whether it is namespaced; `None` when the
    /// cluster serves no such kind. Only hits are cached: a CRD applied earlier in the same pass
    /// makes its kind appear.
    async fn resource(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<Option<(ApiResource, bool)>, kube::Error> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        if let Some(hit) = self
            .resources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&gvk)
        {
            return Ok(Some(hit.clone()));
        }
        match kube::discovery::pinned_kind(&self.client, &gvk).await {
            Ok((resource, caps)) => {
                let found = (resource, caps.scope == Scope::Namespaced);
                self.resources
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(gvk, found.clone());
                Ok(Some(found))
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(kube::Error::Discovery(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn api(&self, resource: &ApiResource, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, resource),
            None => Api::all_with(self.client.clone(), resource),
        }
    }

    /// Applies every object at `revision`, writing only those that are new, changed in Git, or
    /// drifted. CustomResourceDefinitions go first, then Namespaces, then everything else, each
    /// group finished before the next starts (a custom resource needs its CRD served, a namespaced
    /// object its Namespace). Within a group the live objects are read with one list per kind and
    /// namespace (a GET each when only a few are wanted), and up to [`APPLY_CONCURRENCY`] applies
    /// are in flight. An API error on one object (or on the read of one kind) does not stop the
    /// others: every other object gets its write in this pass, and the first error is returned after
    /// the last one was tried. Against a flaky API server a sync of many objects then still makes
    /// progress each pass, rather than applying the same first few objects again and again.
    pub async fn apply(
        &self,
        objects: &[RenderedObject],
        owned: &RolloutOwned,
        revision: &str,
    ) -> Result<ApplyReport, ApplyError> {
        let mut report = ApplyReport::default();
        let mut first_err: Option<ApplyError> = None;
        let mut start = 0;
        while start < objects.len() {
            let rank = phase(&objects[start].object);
            let len = objects[start..]
                .iter()
                .take_while(|o| phase(&o.object) == rank)
                .count();
            let group = &objects[start..start + len];
            start += len;
            let targets = self.targets(group, &mut first_err).await?;
            let (live, unread) = self.read_live(&targets, &mut first_err).await;
            let targets: Vec<Target<'_>> = targets
                .into_iter()
                .filter(|t| !unread.contains(&t.read_group()))
                .collect();
            // Boxed one by one: a stream of unboxed borrowing futures trips the compiler's
            // `Send` check on the controller's future (higher-ranked lifetimes).
            let writes: Vec<BoxFuture<'_, (usize, Result<Applied, ApplyError>)>> = targets
                .iter()
                .enumerate()
                .map(|(i, target)| {
                    let live = live.get(&target.live_key());
                    async move { (i, self.apply_one(target, live, owned, revision).await) }.boxed()
                })
                .collect();
            let mut results: Vec<(usize, Result<Applied, ApplyError>)> =
                futures::stream::iter(writes)
                    .buffer_unordered(APPLY_CONCURRENCY)
                    .collect()
                    .await;
            results.sort_by_key(|(i, _)| *i);
            for ((_, result), target) in results.into_iter().zip(targets) {
                let applied = match result {
                    Ok(applied) => applied,
                    Err(e) => {
                        first_err.get_or_insert(e);
                        continue;
                    }
                };
                let health = match applied {
                    Applied::Created(h) => {
                        report.created += 1;
                        h
                    }
                    Applied::Configured(h) => {
                        report.configured += 1;
                        h
                    }
                    Applied::Unchanged(h) => {
                        report.unchanged += 1;
                        h
                    }
                };
                let mut entry = target.entry;
                entry.health = Some(health);
                report.inventory.push(entry);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// Each object of `group` with the resource that serves it, in order. An object whose kind
    /// could not be looked up is left out, its error kept in `first_err`.
    async fn targets<'o>(
        &self,
        group: &'o [RenderedObject],
        first_err: &mut Option<ApplyError>,
    ) -> Result<Vec<Target<'o>>, ApplyError> {
        let mut targets = Vec::with_capacity(group.len());
        for rendered in group {
            let source_file = format!("{}#L{}", rendered.source, rendered.line);
            let Some(mut entry) = entry_of(&rendered.object) else {
                return Err(ApplyError::Malformed {
                    source_file,
                    missing: "apiVersion, kind or metadata.name",
                });
            };
            let found = match self.resource(&entry.api_version, &entry.kind).await {
                Ok(found) => found,
                Err(source) => {
                    first_err.get_or_insert(ApplyError::Api {
                        action: format!("{source_file}: discovering {}", entry.kind),
                        source,
                    });
                    continue;
                }
            };
            let Some((resource, namespaced)) = found else {
                // After an API error the kind may be one whose CRD failed to apply: that error
                // is the one to report.
                if first_err.is_some() {
                    continue;
                }
                return Err(ApplyError::UnknownKind {
                    source_file,
                    api_version: entry.api_version,
                    kind: entry.kind,
                });
            };
            if !namespaced {
                entry.namespace = None;
            }
            targets.push(Target {
                rendered,
                source_file,
                entry,
                resource,
            });
        }
        Ok(targets)
    }

    /// The live objects of `targets` by (resource, namespace, name); missing ones are absent. Also
    /// the read groups that could not be read (their first error kept in `first_err`): what is live
    /// there is unknown, so their objects are not applied in this pass.
    async fn read_live(
        &self,
        targets: &[Target<'_>],
        first_err: &mut Option<ApplyError>,
    ) -> (HashMap<LiveKey, Value>, HashSet<ReadGroup>) {
        let mut wanted: HashMap<ReadGroup, Vec<&Target<'_>>> = HashMap::new();
        for t in targets {
            wanted.entry(t.read_group()).or_default().push(t);
        }
        type Found = (ReadGroup, Result<Vec<(LiveKey, Value)>, ApplyError>);
        let reads = wanted
            .into_iter()
            .map(|(key, group)| -> BoxFuture<'_, Found> {
                async move { (key, self.read_group(&group).await) }.boxed()
            });
        let reads: Vec<BoxFuture<'_, Found>> = reads.collect();
        let mut live = HashMap::new();
        let mut unread = HashSet::new();
        let mut reads = futures::stream::iter(reads).buffer_unordered(READ_CONCURRENCY);
        while let Some((key, found)) = reads.next().await {
            match found {
                Ok(found) => live.extend(found),
                Err(e) => {
                    first_err.get_or_insert(e);
                    unread.insert(key);
                }
            }
        }
        (live, unread)
    }

    /// The live objects of one read group (same resource and namespace).
    async fn read_group(&self, group: &[&Target<'_>]) -> Result<Vec<(LiveKey, Value)>, ApplyError> {
        let first = group[0];
        if group.len() < LIST_THRESHOLD {
            let mut found = Vec::new();
            for t in group {
                let url = DynamicObject::url_path(&t.resource, t.entry.namespace.as_deref());
                let request = kube::core::Request::new(url)
                    .get(&t.entry.name, &GetParams::default())
                    .map_err(|e| t.api_error("reading", kube::Error::BuildRequest(e)))?;
                match self.client.request::<Value>(request).await {
                    Ok(obj) => found.push((t.live_key(), obj)),
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(t.api_error("reading", e)),
                }
            }
            return Ok(found);
        }
        let url = DynamicObject::url_path(&first.resource, first.entry.namespace.as_deref());
        let listed = self
            .list_all(&url)
            .await
            .map_err(|source| ApplyError::Api {
                action: format!(
                    "listing {} in {}",
                    first.resource.plural,
                    first.entry.namespace.as_deref().unwrap_or("the cluster")
                ),
                source,
            })?;
        let key = |o: &Value| LiveKey {
            resource: first.resource.url_path_key(),
            namespace: first.entry.namespace.clone(),
            name: o
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        };
        Ok(listed.into_iter().map(|o| (key(&o), o)).collect())
    }

    /// Every object at `url`, a page at a time.
    async fn list_all(&self, url: &str) -> Result<Vec<Value>, kube::Error> {
        let mut items = Vec::new();
        let mut params = ListParams::default().limit(LIST_PAGE);
        loop {
            let request = kube::core::Request::new(url)
                .list(&params)
                .map_err(kube::Error::BuildRequest)?;
            let mut page: Value = self.client.request(request).await?;
            if let Some(Value::Array(page_items)) = page.get_mut("items").map(Value::take) {
                items.extend(page_items);
            }
            match page
                .pointer("/metadata/continue")
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty())
            {
                Some(token) => params = params.continue_token(token),
                None => return Ok(items),
            }
        }
    }

    /// Plans and, when needed, applies one object.
    async fn apply_one(
        &self,
        target: &Target<'_>,
        live: Option<&Value>,
        owned: &RolloutOwned,
        revision: &str,
    ) -> Result<Applied, ApplyError> {
        let action = if target.entry.namespace.is_none()
            && target
                .rendered
                .object
                .pointer("/metadata/namespace")
                .is_some()
        {
            let mut object = target.rendered.object.clone();
            if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("namespace");
            }
            plan_object(&object, live, owned, revision)
        } else {
            plan_object(&target.rendered.object, live, owned, revision)
        };
        let desired = match action {
            ObjectAction::Unchanged => {
                return Ok(Applied::Unchanged(
                    live.map_or(ObjectHealth::Healthy, health),
                ));
            }
            ObjectAction::Create(desired) | ObjectAction::Configure(desired) => desired,
        };
        let url = DynamicObject::url_path(&target.resource, target.entry.namespace.as_deref());
        let request = kube::core::Request::new(url)
            .patch(
                &target.entry.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&desired),
            )
            .map_err(|e| target.api_error("applying", kube::Error::BuildRequest(e)))?;
        let applied: Value = self
            .client
            .request(request)
            .await
            .map_err(|e| target.api_error("applying", e))?;
        Ok(if live.is_some() {
            Applied::Configured(health(&applied))
        } else {
            Applied::Created(health(&applied))
        })
    }

    /// Deletes the `stale` objects that still carry this GitSync's annotation (`namespace/name`);
    /// objects someone else has taken over, or that are gone, are left alone. Returns the deleted.
    pub async fn prune(
        &self,
        stale: &[InventoryEntry],
        gitsync: &str,
    ) -> Result<Vec<InventoryEntry>, ApplyError> {
        let mut deleted = Vec::new();
        for entry in stale {
            let Some((resource, namespaced)) = self
                .resource(&entry.api_version, &entry.kind)
                .await
                .map_err(|source| ApplyError::Api {
                    action: format!("discovering {}", entry.kind),
                    source,
                })?
            else {
                continue;
            };
            let ns = if namespaced {
                entry.namespace.as_deref()
            } else {
                None
            };
            let api = self.api(&resource, ns);
            let what = format!("{} {}", entry.kind, entry.name);
            let Some(live) = api
                .get_opt(&entry.name)
                .await
                .map_err(|source| ApplyError::Api {
                    action: format!("reading {what} to prune it"),
                    source,
                })?
            else {
                continue;
            };
            if live
                .annotations()
                .get(ANNOTATION_GITSYNC)
                .map(String::as_str)
                != Some(gitsync)
            {
                continue;
            }
            let params = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..Default::default()
            };
            match api.delete(&entry.name, &params).await {
                Ok(_) => deleted.push(entry.clone()),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(source) => {
                    return Err(ApplyError::Api {
                        action: format!("pruning {what}"),
                        source,
                    });
                }
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(api_version: &str, kind: &str, ns: Option<&str>, name: &str) -> InventoryEntry {
        InventoryEntry {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: ns.map(str::to_string),
            name: name.into(),
            health: None,
        }
    }

    fn config_map(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "apps"}, "data": data})
    }

    /// The live object as the API server would return it after our apply, plus server fields.
    fn served(desired: &Value) -> Value {
        let mut live = desired.clone();
        live["metadata"]["uid"] = json!("u-1");
        live["metadata"]["resourceVersion"] = json!("7");
        live["metadata"]["managedFields"] = json!([{"manager": "weir"}]);
        live
    }

    #[test]
    fn writes_happen_only_for_new_changed_or_drifted_objects() {
        let owned = RolloutOwned::default();
        let v1 = config_map(json!({"a": "1"}));
        let ObjectAction::Create(created) = plan_object(&v1, None, &owned, "c1") else {
            panic!("a missing object is created");
        };
        let live = served(&created);
        let cases = [
            ("unchanged", v1.clone(), live.clone(), false),
            (
                "changed in Git",
                config_map(json!({"a": "2"})),
                live.clone(),
                true,
            ),
            (
                "field removed in Git",
                config_map(json!({})),
                live.clone(),
                true,
            ),
            (
                "drifted",
                v1.clone(),
                {
                    let mut l = live.clone();
                    l["data"]["a"] = json!("edited");
                    l
                },
                true,
            ),
            (
                "another manager added a field",
                v1.clone(),
                {
                    let mut l = live.clone();
                    l["data"]["b"] = json!("theirs");
                    l
                },
                false,
            ),
        ];
        for (what, rendered, live, writes) in cases {
            let action = plan_object(&rendered, Some(&live), &owned, "c2");
            assert_eq!(
                !matches!(action, ObjectAction::Unchanged),
                writes,
                "{what}: {action:?}"
            );
        }
    }

    #[test]
    fn a_secret_declared_with_string_data_is_not_drift() {
        let owned = RolloutOwned::default();
        let secret = |token: &str| {
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "apps"},
                "stringData": {"token": token}})
        };
        let ObjectAction::Create(created) = plan_object(&secret("abc"), None, &owned, "c1") else {
            panic!("a missing Secret is created");
        };
        // The API server folds stringData into data and never returns stringData.
        let mut live = served(&created);
        live.as_object_mut().unwrap().remove("stringData");
        live["data"] = json!({"token": "YWJj"});
        assert_eq!(
            plan_object(&secret("abc"), Some(&live), &owned, "c2"),
            ObjectAction::Unchanged
        );
        assert!(matches!(
            plan_object(&secret("abd"), Some(&live), &owned, "c2"),
            ObjectAction::Configure(_)
        ));
    }

    fn rollout(image: &str) -> Value {
        json!({"apiVersion": "weir.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "web", "namespace": "apps"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": image}]}},
                "strategy": {"canary": {"steps": [{"setWeight": 20}]}}}})
    }

    #[test]
    fn a_rollout_carries_the_commit_that_last_changed_its_template() {
        let owned = RolloutOwned::default();
        let first = desired(&rollout("web:1"), None, &owned, "aaa");
        assert_eq!(annotation(&first, TEMPLATE_COMMIT_ANNOTATION), Some("aaa"));
        let live = served(&first);
        // A commit that changes something else keeps the commit of the template.
        let mut replicas = rollout("web:1");
        replicas["spec"]["replicas"] = json!(3);
        let next = desired(&replicas, Some(&live), &owned, "bbb");
        assert_eq!(annotation(&next, TEMPLATE_COMMIT_ANNOTATION), Some("aaa"));
        // A new image is a new template, declared by the new commit.
        let bumped = desired(&rollout("web:2"), Some(&live), &owned, "ccc");
        assert_eq!(annotation(&bumped, TEMPLATE_COMMIT_ANNOTATION), Some("ccc"));
        // A resync of the same revision writes nothing.
        assert_eq!(
            plan_object(&rollout("web:1"), Some(&live), &owned, "ddd"),
            ObjectAction::Unchanged
        );
    }

    #[test]
    fn a_route_the_rollout_weights_is_not_drift() {
        let route = |canary: i64| {
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "web", "namespace": "apps"},
                "spec": {"rules": [{"backendRefs": [{"name": "web-stable", "port": 80, "weight": 100 - canary}, {"name": "web-canary", "port": 80, "weight": canary}]}]}})
        };
        let mut owned = RolloutOwned::default();
        owned.http_routes.insert(
            ("apps".into(), "web".into()),
            ("web-stable".into(), "web-canary".into()),
        );
        let ObjectAction::Create(created) = plan_object(&route(0), None, &owned, "c1") else {
            panic!("created");
        };
        let mut live = served(&created);
        live["spec"] = route(20)["spec"].clone();
        assert_eq!(
            plan_object(&route(0), Some(&live), &owned, "c1"),
            ObjectAction::Unchanged
        );
    }

    #[test]
    fn prune_takes_what_left_git_and_deletes_crds_and_namespaces_last() {
        let previous = vec![
            entry(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                None,
                "things.example.com",
            ),
            entry("v1", "Namespace", None, "team"),
            entry("v1", "ConfigMap", Some("team"), "kept"),
            entry("apps/v1", "Deployment", Some("team"), "gone"),
            entry("example.com/v1", "Thing", Some("team"), "t"),
        ];
        let current = vec![entry("v1", "ConfigMap", Some("team"), "kept")];
        let names: Vec<String> = stale(&previous, &current)
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["t", "gone", "team", "things.example.com"]);
        // A new API version of the same group and kind is the same object.
        let moved = vec![entry("apps/v1beta2", "Deployment", Some("team"), "gone")];
        assert!(
            stale(
                &[entry("apps/v1", "Deployment", Some("team"), "gone")],
                &moved
            )
            .is_empty()
        );
    }

    #[test]
    fn health_follows_what_each_kind_reports() {
        let cases = [
            (
                json!({"apiVersion": "weir.io/v1alpha1", "kind": "Rollout", "metadata": {"generation": 2}, "status": {"observedGeneration": 2, "phase": "Healthy"}}),
                ObjectHealth::Healthy,
            ),
            (
                json!({"apiVersion": "weir.io/v1alpha1", "kind": "Rollout", "metadata": {"generation": 3}, "status": {"observedGeneration": 2, "phase": "Healthy"}}),
                ObjectHealth::Progressing,
            ),
            (
                json!({"apiVersion": "weir.io/v1alpha1", "kind": "Rollout", "status": {"phase": "Paused"}}),
                ObjectHealth::Progressing,
            ),
            (
                json!({"apiVersion": "weir.io/v1alpha1", "kind": "Rollout", "status": {"phase": "Degraded"}}),
                ObjectHealth::Degraded,
            ),
            (
                json!({"kind": "Deployment", "spec": {"replicas": 3}, "status": {"availableReplicas": 3}}),
                ObjectHealth::Healthy,
            ),
            (
                json!({"kind": "Deployment", "spec": {"replicas": 3}, "status": {"availableReplicas": 1}}),
                ObjectHealth::Progressing,
            ),
            (
                json!({"kind": "Deployment", "spec": {"replicas": 3}, "status": {"conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}}),
                ObjectHealth::Degraded,
            ),
            (
                json!({"kind": "GitSync", "status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
                ObjectHealth::Degraded,
            ),
            (json!({"kind": "ConfigMap"}), ObjectHealth::Healthy),
        ];
        for (object, expected) in cases {
            assert_eq!(health(&object), expected, "{object}");
        }
    }

    #[test]
    fn digests_differ_when_anything_git_declares_differs() {
        assert_eq!(
            digest(&config_map(json!({"a": "1"}))),
            digest(&config_map(json!({"a": "1"})))
        );
        assert_ne!(
            digest(&config_map(json!({"a": "1"}))),
            digest(&config_map(json!({"a": "2"})))
        );
    }
}
