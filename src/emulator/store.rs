//! The in-memory object store: collections, a global resourceVersion, per-collection event history for
//! watches, owner and namespace bookkeeping for garbage collection.
//!
//! Every write takes one lock and is committed atomically with its watch event, so events are totally
//! ordered by resourceVersion and a watcher that resumes from any retained version sees every later event.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, OnceLock, RwLock};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::api_error::ApiError;
use super::object_rules::{self, DeleteOptions, Propagation, WriteContext};
use super::resources::{Registry, ResourceKey, ResourceType, from_crd};

/// `(namespace, name)`; namespace is empty for cluster-scoped objects.
pub type ObjKey = (String, String);

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Object created.
    Added,
    /// Object changed.
    Modified,
    /// Object removed.
    Deleted,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed change.
#[derive(Debug)]
pub struct Event {
    /// The resourceVersion the change was committed at.
    pub rv: u64,
    /// What happened.
    pub kind: EventType,
    /// The object after the change (before removal for Deleted, with the deletion's resourceVersion).
    pub object: Arc<Value>,
    /// For Modified: the object before the change, so that a filtered watch can tell an object entering
    /// its selector (ADDED) or leaving it (DELETED) from an ordinary change.
    pub previous: Option<Arc<Value>>,
    wire: OnceLock<Bytes>,
}

impl Event {
    /// The newline-terminated watch line, serialized once and shared by every watcher.
    pub fn wire_line(&self) -> Bytes {
        self.wire
            .get_or_init(|| watch_line(self.kind.as_str(), &self.object))
            .clone()
    }
}

/// One line of a watch stream. The API server writes `type` before `object`, and clients rely
/// on that order: serde reads an adjacently tagged enum in one pass only when the tag comes
/// first, and otherwise buffers the whole object before decoding it again.
pub fn watch_line(kind: &str, object: &Value) -> Bytes {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        object: &'a Value,
    }
    let mut v = serde_json::to_vec(&Line { kind, object }).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

struct Collection {
    objects: BTreeMap<ObjKey, Arc<Value>>,
    log: VecDeque<Arc<Event>>,
    /// The highest resourceVersion dropped from `log`; resuming from below it is 410 Gone.
    compacted: u64,
    notify: watch::Sender<u64>,
}

impl Collection {
    fn new() -> Self {
        Self {
            objects: BTreeMap::new(),
            log: VecDeque::new(),
            compacted: 0,
            notify: watch::channel(0).0,
        }
    }
}

/// Tunables of the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Events kept per collection for watch resumption.
    pub watch_history: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            watch_history: 10_000,
        }
    }
}

struct State {
    rv: u64,
    registry: Registry,
    collections: HashMap<ResourceKey, Collection>,
    /// owner uid → dependents.
    dependents: HashMap<String, BTreeSet<(ResourceKey, ObjKey)>>,
    /// uid → where the object lives.
    by_uid: HashMap<String, (ResourceKey, ObjKey)>,
}

/// The store shared by the HTTP layer and the simulated controllers.
pub struct Store {
    state: RwLock<State>,
    config: StoreConfig,
}

/// A page of a list.
#[derive(Debug)]
pub struct ListPage {
    /// The objects, in key order.
    pub items: Vec<Arc<Value>>,
    /// resourceVersion of the list.
    pub rv: u64,
    /// Token for the next page.
    pub continue_token: Option<String>,
    /// Objects left after this page; unknown (None) when a filter is set, as the apiserver reports it.
    pub remaining: Option<u64>,
}

/// Options of a list.
#[derive(Default)]
pub struct ListOptions<'a> {
    /// Only this namespace, when set.
    pub namespace: Option<&'a str>,
    /// Object filter (label and field selectors).
    pub filter: Option<&'a dyn Fn(&Value) -> bool>,
    /// Page size; 0 for everything.
    pub limit: usize,
    /// Continue token from a previous page.
    pub continue_token: Option<&'a str>,
}

impl Store {
    /// An empty store with the built-in kinds and the default namespaces.
    pub fn new(config: StoreConfig) -> Arc<Self> {
        let store = Arc::new(Self {
            state: RwLock::new(State {
                rv: 0,
                registry: Registry::with_builtins(),
                collections: HashMap::new(),
                dependents: HashMap::new(),
                by_uid: HashMap::new(),
            }),
            config,
        });
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let ctx = WriteContext::internal("emulator");
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            if let Some(rt) = store.resource("", "v1", "namespaces") {
                // The default namespaces cannot fail validation; an error here would be a bug in the table.
                let _ = store.create(&rt, "", body, &ctx);
            }
        }
        store
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the registry, for discovery.
    pub fn registry(&self) -> Registry {
        self.read().registry.clone()
    }

    /// Looks up a served resource.
    pub fn resource(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.read().registry.get(group, version, plural)
    }

    /// The current global resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.read().rv
    }

    /// Number of objects held, over all collections.
    pub fn object_count(&self) -> usize {
        self.read()
            .collections
            .values()
            .map(|c| c.objects.len())
            .sum()
    }

    /// Reads one object.
    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Arc<Value>, ApiError> {
        self.read()
            .collections
            .get(&rt.key())
            .and_then(|c| c.objects.get(&(ns.to_string(), name.to_string())))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))
    }

    /// The objects of `rt` in namespace `ns` whose ownerReferences name `owner_uid`, in name
    /// order: from the owner index, so a simulated controller's read does not walk the namespace.
    pub fn dependents(&self, rt: &ResourceType, ns: &str, owner_uid: &str) -> Vec<Arc<Value>> {
        let state = self.read();
        let key = rt.key();
        let (Some(set), Some(coll)) =
            (state.dependents.get(owner_uid), state.collections.get(&key))
        else {
            return Vec::new();
        };
        set.iter()
            .filter(|(k, obj)| *k == key && obj.0 == ns)
            .filter_map(|(_, obj)| coll.objects.get(obj).cloned())
            .collect()
    }

    /// Lists objects; the continue token encodes the list's resourceVersion and the last key returned.
    pub fn list(&self, rt: &ResourceType, opts: &ListOptions<'_>) -> Result<ListPage, ApiError> {
        let state = self.read();
        let (mut rv, start) = match opts.continue_token {
            Some(token) => decode_continue(token)?,
            None => (state.rv, None),
        };
        if opts.continue_token.is_none() {
            rv = state.rv;
        }
        let Some(coll) = state.collections.get(&rt.key()) else {
            return Ok(ListPage {
                items: vec![],
                rv,
                continue_token: None,
                remaining: None,
            });
        };
        let mut items = Vec::new();
        let mut last_key: Option<&ObjKey> = None;
        let mut more = false;
        let lower = match &start {
            Some(k) => std::ops::Bound::Excluded(k.clone()),
            None => match opts.namespace {
                Some(ns) => std::ops::Bound::Included((ns.to_string(), String::new())),
                None => std::ops::Bound::Unbounded,
            },
        };
        let mut remaining = 0u64;
        for (key, obj) in coll.objects.range((lower, std::ops::Bound::Unbounded)) {
            if let Some(ns) = opts.namespace
                && key.0 != ns
            {
                break;
            }
            if let Some(f) = opts.filter
                && !f(obj)
            {
                continue;
            }
            if opts.limit > 0 && items.len() >= opts.limit {
                more = true;
                // With a selector the apiserver leaves remainingItemCount unset; counting here would run
                // the selector over the rest of the collection on every page, making a walk quadratic.
                if opts.filter.is_some() {
                    break;
                }
                remaining += 1;
                continue;
            }
            items.push(obj.clone());
            last_key = Some(key);
        }
        let continue_token = match (more, last_key) {
            (true, Some(k)) => Some(encode_continue(rv, k)),
            _ => None,
        };
        Ok(ListPage {
            items,
            rv,
            continue_token,
            remaining: (more && opts.filter.is_none()).then_some(remaining),
        })
    }

    /// Events of a collection after `rv`, at most `max`, or 410 when `rv` is older than the history.
    pub fn events_since(
        &self,
        key: &ResourceKey,
        rv: u64,
        max: usize,
    ) -> Result<Vec<Arc<Event>>, ApiError> {
        let state = self.read();
        let Some(coll) = state.collections.get(key) else {
            return Ok(vec![]);
        };
        if rv < coll.compacted {
            return Err(ApiError::expired(format!(
                "too old resource version: {rv} ({})",
                coll.compacted
            )));
        }
        let start = coll.log.partition_point(|e| e.rv <= rv);
        Ok(coll.log.range(start..).take(max).cloned().collect())
    }

    /// The resourceVersion a bookmark may carry for a watcher at `cursor`: the global one when the
    /// collection has nothing newer than `cursor`, else `cursor` itself.
    pub fn current_rv_of(&self, key: &ResourceKey, cursor: u64) -> u64 {
        let state = self.read();
        let last = state
            .collections
            .get(key)
            .and_then(|c| c.log.back())
            .map_or(0, |e| e.rv);
        if last > cursor {
            cursor
        } else {
            state.rv.max(cursor)
        }
    }

    /// A receiver that changes whenever the collection gets a new event; creates the collection if needed.
    pub fn subscribe(&self, key: &ResourceKey) -> watch::Receiver<u64> {
        if let Some(c) = self.read().collections.get(key) {
            return c.notify.subscribe();
        }
        self.write()
            .collections
            .entry(key.clone())
            .or_insert_with(Collection::new)
            .notify
            .subscribe()
    }

    /// Creates an object.
    ///
    /// The object is prepared (defaulted, validated, given its uid) before the store is locked,
    /// so concurrent writes wait on each other only for the commit.
    pub fn create(
        &self,
        rt: &ResourceType,
        ns: &str,
        body: Value,
        ctx: &WriteContext,
    ) -> Result<Arc<Value>, ApiError> {
        // A missing namespace is reported before the body is validated, as admission runs first.
        self.read().check_namespace(rt, ns)?;
        let obj = object_rules::prepare_create(rt, ns, body, ctx)?;
        self.commit_create(rt, ns, obj, ctx, None)
    }

    /// Commits a prepared new object, unless its name is taken (or, with `expected`, unless its
    /// name differs from the one on the URL).
    fn commit_create(
        &self,
        rt: &ResourceType,
        ns: &str,
        obj: Value,
        ctx: &WriteContext,
        expected: Option<&str>,
    ) -> Result<Arc<Value>, ApiError> {
        let name = object_rules::name_of(&obj).to_string();
        if let Some(expected) = expected.filter(|e| *e != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({name}) does not match the name on the URL ({expected})"
            )));
        }
        let key = (ns.to_string(), name);
        let mut state = self.write();
        state.check_namespace(rt, ns)?;
        if state.get(&rt.key(), &key).is_some() {
            return Err(ApiError::already_exists(&rt.group, &rt.plural, &key.1));
        }
        let obj = if rt.group == "apiextensions.k8s.io" {
            state.register_crd(obj)?
        } else {
            obj
        };
        if ctx.dry_run {
            return Ok(Arc::new(obj));
        }
        Ok(state.commit(&rt.key(), key, Some(obj), self.config.watch_history))
    }

    /// Replaces an object (or its status), or applies `change` to the current object: every patch
    /// flavour goes through here.
    ///
    /// `change` receives the current object (None when absent) and returns the desired object.
    /// `create_if_missing` is for server-side apply, which creates.
    ///
    /// The write is computed outside the lock from the object as it was read, and committed only
    /// if the object is still that version; otherwise `change` runs again on the newer one. So no
    /// concurrent write is lost or interleaved, as with the API server's guaranteed update, and
    /// writes wait on each other only for the commit.
    pub fn modify(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        ctx: &WriteContext,
        create_if_missing: bool,
        change: impl Fn(Option<&Value>) -> Result<Value, ApiError>,
    ) -> Result<Arc<Value>, ApiError> {
        let key = (ns.to_string(), name.to_string());
        loop {
            let warned = ctx.warning_count();
            let current = self.read().get(&rt.key(), &key);
            let Some(current) = current else {
                if !create_if_missing {
                    return Err(ApiError::not_found(&rt.group, &rt.plural, name));
                }
                self.read().check_namespace(rt, ns)?;
                let desired = change(None)?;
                let obj = object_rules::prepare_create(rt, ns, desired, ctx)?;
                match self.commit_create(rt, ns, obj, ctx, Some(name)) {
                    // Created by someone else since it was read: apply the change to theirs.
                    Err(e) if e.reason == "AlreadyExists" => {
                        ctx.rewind_warnings(warned);
                        continue;
                    }
                    result => return result,
                }
            };
            let desired = change(Some(&current))?;
            let obj = object_rules::prepare_update(rt, &current, desired, ctx)?;
            if obj == *current {
                // A no-op write does not bump the resourceVersion or emit an event, like the real apiserver.
                return Ok(current);
            }
            let mut state = self.write();
            if !state
                .get(&rt.key(), &key)
                .is_some_and(|now| Arc::ptr_eq(&now, &current))
            {
                drop(state);
                ctx.rewind_warnings(warned);
                continue;
            }
            let obj = if rt.group == "apiextensions.k8s.io" {
                state.register_crd(obj)?
            } else {
                obj
            };
            if ctx.dry_run {
                return Ok(Arc::new(obj));
            }
            if object_rules::finalized(&obj) {
                state.remove(&rt.key(), &key, self.config.watch_history);
                return Ok(Arc::new(obj));
            }
            return Ok(state.commit(&rt.key(), key, Some(obj), self.config.watch_history));
        }
    }

    /// Deletes an object. Returns the object as it is after the call: gone, or marked for deletion when
    /// finalizers (including foreground deletion) hold it.
    pub fn delete(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
        ctx: &WriteContext,
    ) -> Result<(Arc<Value>, bool), ApiError> {
        let mut state = self.write();
        let key = (ns.to_string(), name.to_string());
        let current = state
            .get(&rt.key(), &key)
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))?;
        object_rules::check_preconditions(rt, &current, opts)?;
        if ctx.dry_run {
            return Ok((current, false));
        }
        let history = self.config.watch_history;
        Ok(state.delete(rt.key(), key, opts.propagation(rt), history))
    }

    /// Deletes every object of a collection in a namespace that matches `filter`.
    pub fn delete_collection(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        filter: &dyn Fn(&Value) -> bool,
        opts: &DeleteOptions,
    ) -> Vec<Arc<Value>> {
        let mut state = self.write();
        let keys: Vec<ObjKey> = state
            .collections
            .get(&rt.key())
            .map(|c| {
                c.objects
                    .iter()
                    .filter(|(k, o)| ns.is_none_or(|n| k.0 == n) && filter(o))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        let history = self.config.watch_history;
        keys.into_iter()
            .map(|k| state.delete(rt.key(), k, opts.propagation(rt), history).0)
            .collect()
    }
}

impl State {
    fn get(&self, key: &ResourceKey, obj: &ObjKey) -> Option<Arc<Value>> {
        self.collections.get(key)?.objects.get(obj).cloned()
    }

    fn check_namespace(&self, rt: &ResourceType, ns: &str) -> Result<(), ApiError> {
        if !rt.namespaced {
            return Ok(());
        }
        let ns_key = ResourceKey {
            group: String::new(),
            plural: "namespaces".into(),
        };
        match self.get(&ns_key, &(String::new(), ns.to_string())) {
            None => Err(ApiError::not_found("", "namespaces", ns)),
            Some(n) if n.pointer("/metadata/deletionTimestamp").is_some() => Err(ApiError {
                code: 403,
                reason: "Forbidden",
                message: format!(
                    "{} is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    rt.plural
                ),
                details: None,
            }),
            Some(_) => Ok(()),
        }
    }

    /// Registers the kinds of a CRD and fills in its status the way the apiextensions server does.
    fn register_crd(&mut self, mut crd: Value) -> Result<Value, ApiError> {
        let name = object_rules::name_of(&crd).to_string();
        let types = from_crd(&crd).map_err(|m| {
            ApiError::invalid(
                "apiextensions.k8s.io",
                "CustomResourceDefinition",
                &name,
                vec![("FieldValueInvalid".into(), m, String::new())],
            )
        })?;
        let mut causes = Vec::new();
        for t in &types {
            if let Some(schema) = &t.schema {
                for v in super::validation::structural_violations(schema) {
                    causes.push((
                        "FieldValueInvalid".into(),
                        format!("spec.versions[{}].schema.{v}", t.version),
                        String::new(),
                    ));
                }
            }
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid(
                "apiextensions.k8s.io",
                "CustomResourceDefinition",
                &name,
                causes,
            ));
        }
        if let (Some(first), Some(names)) = (types.first(), crd.pointer("/spec/names").cloned()) {
            let now = object_rules::now_rfc3339();
            let cond = |t: &str, reason: &str, msg: &str| json!({"type": t, "status": "True", "reason": reason, "message": msg, "lastTransitionTime": now});
            let stored: Vec<Value> = crd
                .pointer("/spec/versions")
                .and_then(Value::as_array)
                .map(|vs| {
                    vs.iter()
                        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                        .filter_map(|v| v.get("name").cloned())
                        .collect()
                })
                .unwrap_or_default();
            let _ = first;
            if let Some(map) = crd.as_object_mut() {
                map.insert(
                    "status".into(),
                    json!({
                        "acceptedNames": names,
                        "conditions": [
                            cond("NamesAccepted", "NoConflicts", "no conflicts found"),
                            cond("Established", "InitialNamesAccepted", "the initial names have been accepted"),
                        ],
                        "storedVersions": stored,
                    }),
                );
            }
        }
        if let Some(first) = types.first() {
            self.registry.remove(&first.group, &first.plural);
        }
        for t in types {
            self.registry.insert(t);
        }
        Ok(crd)
    }

    /// Writes (Some) or removes (None) an object, assigns its resourceVersion, logs the event and updates
    /// the owner and uid indexes.
    fn commit(
        &mut self,
        key: &ResourceKey,
        obj_key: ObjKey,
        obj: Option<Value>,
        history: usize,
    ) -> Arc<Value> {
        self.rv += 1;
        let rv = self.rv;
        let coll = self
            .collections
            .entry(key.clone())
            .or_insert_with(Collection::new);
        let old = match &obj {
            Some(_) => coll.objects.get(&obj_key).cloned(),
            None => coll.objects.remove(&obj_key),
        };
        let (kind, stored) = match obj {
            Some(mut o) => {
                object_rules::set_resource_version(&mut o, rv);
                let o = Arc::new(o);
                coll.objects.insert(obj_key.clone(), o.clone());
                (
                    if old.is_some() {
                        EventType::Modified
                    } else {
                        EventType::Added
                    },
                    o,
                )
            }
            None => {
                let mut o = old.as_deref().cloned().unwrap_or(Value::Null);
                object_rules::set_resource_version(&mut o, rv);
                (EventType::Deleted, Arc::new(o))
            }
        };
        let previous = if kind == EventType::Modified {
            old.clone()
        } else {
            None
        };
        coll.log.push_back(Arc::new(Event {
            rv,
            kind,
            object: stored.clone(),
            previous,
            wire: OnceLock::new(),
        }));
        while coll.log.len() > history.max(1) {
            if let Some(e) = coll.log.pop_front() {
                coll.compacted = e.rv;
            }
        }
        coll.notify.send_replace(rv);
        // Index maintenance: owners and uids.
        let entry = (key.clone(), obj_key);
        if let Some(old) = &old {
            for owner in object_rules::owner_uids(old) {
                if let Some(set) = self.dependents.get_mut(&owner) {
                    set.remove(&entry);
                    if set.is_empty() {
                        self.dependents.remove(&owner);
                    }
                }
            }
            if kind == EventType::Deleted {
                self.by_uid.remove(object_rules::uid_of(old));
            }
        }
        if kind != EventType::Deleted {
            for owner in object_rules::owner_uids(&stored) {
                self.dependents
                    .entry(owner)
                    .or_default()
                    .insert(entry.clone());
            }
            self.by_uid
                .insert(object_rules::uid_of(&stored).to_string(), entry);
        }
        stored
    }

    /// The delete state machine shared by API deletes, garbage collection and namespace cleanup.
    fn delete(
        &mut self,
        key: ResourceKey,
        obj_key: ObjKey,
        propagation: Propagation,
        history: usize,
    ) -> (Arc<Value>, bool) {
        let Some(current) = self.get(&key, &obj_key) else {
            return (Arc::new(Value::Null), true);
        };
        let uid = object_rules::uid_of(&current).to_string();
        let is_namespace = key.group.is_empty() && key.plural == "namespaces";
        if propagation == Propagation::Orphan {
            self.orphan_dependents(&uid, history);
        }
        let foreground =
            propagation == Propagation::Foreground && self.dependents.contains_key(&uid);
        let has_content = is_namespace && self.namespace_has_objects(&obj_key.1);
        if foreground || object_rules::has_finalizers(&current) || has_content {
            let mut marked = (*current).clone();
            let changed = object_rules::mark_deleting(&mut marked, foreground, is_namespace);
            let stored = if changed {
                self.commit(&key, obj_key.clone(), Some(marked), history)
            } else {
                current.clone()
            };
            if foreground {
                self.delete_dependents(&uid, history);
            }
            if has_content {
                self.delete_namespace_contents(&obj_key.1, history);
            }
            // Dependents or contents may all have gone synchronously; finish if nothing holds the object.
            let gone = self.try_finalize(&key, &obj_key, history);
            let result = if gone {
                stored
            } else {
                self.get(&key, &obj_key).unwrap_or(stored)
            };
            return (result, gone);
        }
        self.remove(&key, &obj_key, history);
        (current, true)
    }

    /// Removes an object for good, then runs what depends on its absence.
    fn remove(&mut self, key: &ResourceKey, obj_key: &ObjKey, history: usize) {
        let Some(obj) = self.get(key, obj_key) else {
            return;
        };
        self.commit(key, obj_key.clone(), None, history);
        let uid = object_rules::uid_of(&obj).to_string();
        // Background garbage collection of dependents.
        self.delete_dependents(&uid, history);
        // Owners waiting in foreground deletion for this dependent.
        for owner in object_rules::owner_uids(&obj) {
            if let Some((k, o)) = self.by_uid.get(&owner).cloned() {
                self.try_finalize(&k, &o, history);
            }
        }
        // A terminating namespace waiting for its last object.
        if !obj_key.0.is_empty() {
            let ns_key = ResourceKey {
                group: String::new(),
                plural: "namespaces".into(),
            };
            self.try_finalize(&ns_key, &(String::new(), obj_key.0.clone()), history);
        }
        // A deleted CRD takes its kinds and their objects with it.
        if key.group == "apiextensions.k8s.io"
            && let Some(group) = obj.pointer("/spec/group").and_then(Value::as_str)
            && let Some(plural) = obj.pointer("/spec/names/plural").and_then(Value::as_str)
        {
            let crk = ResourceKey {
                group: group.into(),
                plural: plural.into(),
            };
            let keys: Vec<ObjKey> = self
                .collections
                .get(&crk)
                .map(|c| c.objects.keys().cloned().collect())
                .unwrap_or_default();
            for k in keys {
                self.remove(&crk, &k, history);
            }
            self.registry.remove(group, plural);
        }
    }

    /// Removes a terminating object once nothing holds it: its finalizers are only ones we own and their
    /// conditions are met.
    fn try_finalize(&mut self, key: &ResourceKey, obj_key: &ObjKey, history: usize) -> bool {
        let Some(obj) = self.get(key, obj_key) else {
            return true;
        };
        if obj.pointer("/metadata/deletionTimestamp").is_none() {
            return false;
        }
        let uid = object_rules::uid_of(&obj).to_string();
        let mut updated = (*obj).clone();
        let mut changed = false;
        if !self.dependents.contains_key(&uid) {
            changed |=
                object_rules::remove_finalizer(&mut updated, object_rules::FOREGROUND_FINALIZER);
        }
        let is_namespace = key.group.is_empty() && key.plural == "namespaces";
        if is_namespace && !self.namespace_has_objects(&obj_key.1) {
            changed |= object_rules::remove_namespace_finalizer(&mut updated);
        }
        if object_rules::finalized(&updated) {
            self.remove(key, obj_key, history);
            return true;
        }
        if changed {
            self.commit(key, obj_key.clone(), Some(updated), history);
        }
        false
    }

    fn delete_dependents(&mut self, owner_uid: &str, history: usize) {
        let deps: Vec<(ResourceKey, ObjKey)> = self
            .dependents
            .get(owner_uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for (k, o) in deps {
            // The owner may still exist (foreground); skip dependents already terminating.
            if let Some(d) = self.get(&k, &o)
                && d.pointer("/metadata/deletionTimestamp").is_none()
            {
                self.delete(k, o, Propagation::Background, history);
            }
        }
    }

    fn orphan_dependents(&mut self, owner_uid: &str, history: usize) {
        let deps: Vec<(ResourceKey, ObjKey)> = self
            .dependents
            .get(owner_uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for (k, o) in deps {
            if let Some(d) = self.get(&k, &o) {
                let mut updated = (*d).clone();
                object_rules::remove_owner(&mut updated, owner_uid);
                self.commit(&k, o, Some(updated), history);
            }
        }
    }

    fn namespace_has_objects(&self, ns: &str) -> bool {
        self.collections.values().any(|c| {
            c.objects
                .range((ns.to_string(), String::new())..)
                .next()
                .is_some_and(|(k, _)| k.0 == ns)
        })
    }

    fn delete_namespace_contents(&mut self, ns: &str, history: usize) {
        let mut targets = Vec::new();
        for (key, coll) in &self.collections {
            for (k, _) in coll.objects.range((ns.to_string(), String::new())..) {
                if k.0 != ns {
                    break;
                }
                targets.push((key.clone(), k.clone()));
            }
        }
        for (k, o) in targets {
            if let Some(d) = self.get(&k, &o)
                && d.pointer("/metadata/deletionTimestamp").is_none()
            {
                self.delete(k, o, Propagation::Background, history);
            }
        }
    }
}

fn encode_continue(rv: u64, key: &ObjKey) -> String {
    let raw =
        serde_json::to_string(&json!({"rv": rv, "ns": key.0, "name": key.1})).unwrap_or_default();
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str) -> Result<(u64, Option<ObjKey>), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    if !token.len().is_multiple_of(2) || token.len() > 4096 {
        return Err(bad());
    }
    let bytes: Result<Vec<u8>, _> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2).unwrap_or("zz"), 16))
        .collect();
    let v: Value = serde_json::from_slice(&bytes.map_err(|_| bad())?).map_err(|_| bad())?;
    let rv = v.get("rv").and_then(Value::as_u64).ok_or_else(bad)?;
    let ns = v.get("ns").and_then(Value::as_str).ok_or_else(bad)?;
    let name = v.get("name").and_then(Value::as_str).ok_or_else(bad)?;
    Ok((rv, Some((ns.to_string(), name.to_string()))))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_watch_line_names_its_type_before_its_object() {
        // Clients decode an event in one pass only when `type` comes first, as the API server writes it.
        let line = watch_line(
            "MODIFIED",
            &json!({"kind": "Pod", "metadata": {"name": "a"}}),
        );
        let text = std::str::from_utf8(&line).unwrap();
        assert!(
            text.starts_with(r#"{"type":"MODIFIED","object":{"#),
            "{text}"
        );
        assert!(text.ends_with("}\n"), "{text}");
    }

    #[test]
    fn dependents_are_an_owners_objects_of_one_kind_in_one_namespace_in_name_order() {
        let store = Store::new(StoreConfig::default());
        let ctx = WriteContext::internal("test");
        let pods = store.resource("", "v1", "pods").expect("pods");
        let maps = store.resource("", "v1", "configmaps").expect("configmaps");
        let owned = |ns: &str, name: &str, uid: &str| {
            json!({"metadata": {"name": name, "namespace": ns,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": uid}]},
                "spec": {"containers": [{"name": "c", "image": "i"}]}})
        };
        for (rt, ns, name, uid) in [
            (&pods, "default", "web-b", "u1"),
            (&pods, "default", "web-a", "u1"),
            (&pods, "default", "other", "u2"),
            (&pods, "kube-system", "web-c", "u1"),
            (&maps, "default", "web-d", "u1"),
        ] {
            store
                .create(rt, ns, owned(ns, name, uid), &ctx)
                .expect("create");
        }
        let names = |ns: &str, uid: &str| -> Vec<String> {
            store
                .dependents(&pods, ns, uid)
                .iter()
                .map(|o| object_rules::name_of(o).to_string())
                .collect()
        };
        assert_eq!(names("default", "u1"), ["web-a", "web-b"]);
        assert_eq!(names("kube-system", "u1"), ["web-c"]);
        assert!(names("default", "u3").is_empty());
        store
            .delete(&pods, "default", "web-a", &DeleteOptions::default(), &ctx)
            .expect("delete");
        assert_eq!(
            names("default", "u1"),
            ["web-b"],
            "a deleted pod is no dependent"
        );
    }
}
