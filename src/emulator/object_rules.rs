//! The rules the apiserver applies to every write: metadata defaults, names, generation, the status
//! subresource split, schema validation, managed fields, finalizers and delete options.

use std::sync::Mutex;

use serde_json::{Map, Value, json};

use super::api_error::ApiError;
use super::merge;
use super::resources::ResourceType;

/// The finalizer the garbage collector uses for foreground deletion.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// How unknown fields in a request body are treated (`fieldValidation` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Reject the request.
    Strict,
    /// Prune and warn (the apiserver's default).
    #[default]
    Warn,
    /// Prune silently.
    Ignore,
}

/// Who writes, and how.
#[derive(Debug, Default)]
pub struct WriteContext {
    /// The field manager.
    pub manager: String,
    /// `dryRun=All`: compute everything, store nothing.
    pub dry_run: bool,
    /// `status` or `scale` when writing a subresource.
    pub subresource: Option<String>,
    /// Unknown-field handling.
    pub field_validation: FieldValidation,
    /// Server-side apply computes managed fields itself.
    pub apply: bool,
    /// Warnings for the `Warning` response header.
    pub warnings: Mutex<Vec<String>>,
}

impl WriteContext {
    /// A context for the emulator's own writes (default namespaces, simulated controllers).
    pub fn internal(manager: &str) -> Self {
        Self {
            manager: manager.into(),
            ..Self::default()
        }
    }

    fn warn(&self, w: String) {
        if let Ok(mut ws) = self.warnings.lock() {
            ws.push(w);
        }
    }

    /// How many warnings the write has collected so far.
    pub fn warning_count(&self) -> usize {
        self.warnings.lock().map(|ws| ws.len()).unwrap_or(0)
    }

    /// Forgets the warnings collected after the first `n`: the write is being prepared again, and
    /// will raise them again.
    pub fn rewind_warnings(&self, n: usize) {
        if let Ok(mut ws) = self.warnings.lock() {
            ws.truncate(n);
        }
    }
}

/// How dependents are treated when their owner is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Delete the owner now, dependents afterwards.
    Background,
    /// Delete dependents first; the owner waits with a finalizer.
    Foreground,
    /// Keep dependents, removing their owner reference.
    Orphan,
}

/// A parsed DeleteOptions.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// propagationPolicy, when given.
    pub propagation: Option<Propagation>,
    /// preconditions.uid.
    pub precondition_uid: Option<String>,
    /// preconditions.resourceVersion.
    pub precondition_rv: Option<String>,
}

impl DeleteOptions {
    /// Reads a DeleteOptions body (may be empty) merged with query parameters.
    pub fn parse(
        body: Option<&Value>,
        query_policy: Option<&str>,
        orphan: Option<bool>,
    ) -> Result<Self, ApiError> {
        let mut opts = DeleteOptions::default();
        let policy = body
            .and_then(|b| b.get("propagationPolicy"))
            .and_then(Value::as_str)
            .or(query_policy);
        let orphan = body
            .and_then(|b| b.get("orphanDependents"))
            .and_then(Value::as_bool)
            .or(orphan);
        opts.propagation = match (policy, orphan) {
            (Some("Foreground"), _) => Some(Propagation::Foreground),
            (Some("Background"), _) => Some(Propagation::Background),
            (Some("Orphan"), _) | (None, Some(true)) => Some(Propagation::Orphan),
            (None, _) => None,
            (Some(other), _) => {
                return Err(ApiError::unprocessable(format!(
                    "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
                )));
            }
        };
        if let Some(pre) = body.and_then(|b| b.get("preconditions")) {
            opts.precondition_uid = pre.get("uid").and_then(Value::as_str).map(String::from);
            opts.precondition_rv = pre
                .get("resourceVersion")
                .and_then(Value::as_str)
                .map(String::from);
        }
        Ok(opts)
    }

    /// The effective propagation: Background unless asked otherwise.
    pub fn propagation(&self, _rt: &ResourceType) -> Propagation {
        self.propagation.unwrap_or(Propagation::Background)
    }
}

/// Now, as the apiserver formats timestamps (seconds precision, UTC).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// `metadata.name` (empty when absent).
pub fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// `metadata.uid` (empty when absent).
pub fn uid_of(obj: &Value) -> &str {
    obj.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The uids of an object's owners.
pub fn owner_uids(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str).map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn metadata_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    obj.as_object_mut()?
        .entry("metadata")
        .or_insert_with(|| json!({}))
        .as_object_mut()
}

/// Sets `metadata.resourceVersion`.
pub fn set_resource_version(obj: &mut Value, rv: u64) {
    if let Some(m) = metadata_mut(obj) {
        m.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

/// Whether `metadata.finalizers` is non-empty.
pub fn has_finalizers(obj: &Value) -> bool {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

/// A terminating object that nothing holds any more, which must be removed.
pub fn finalized(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some()
        && !has_finalizers(obj)
        && obj
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_none_or(|f| {
                f.is_empty() || obj.get("kind").and_then(Value::as_str) != Some("Namespace")
            })
}

/// Marks an object as being deleted. Returns whether anything changed.
pub fn mark_deleting(obj: &mut Value, foreground: bool, namespace: bool) -> bool {
    let before = obj.clone();
    if let Some(m) = metadata_mut(obj) {
        if !m.contains_key("deletionTimestamp") {
            m.insert("deletionTimestamp".into(), Value::String(now_rfc3339()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
        }
        if foreground {
            let fins = m.entry("finalizers").or_insert_with(|| json!([]));
            if let Some(a) = fins.as_array_mut()
                && !a.iter().any(|f| f == FOREGROUND_FINALIZER)
            {
                a.push(json!(FOREGROUND_FINALIZER));
            }
        }
    }
    if namespace && let Some(map) = obj.as_object_mut() {
        map.insert("status".into(), json!({"phase": "Terminating"}));
    }
    *obj != before
}

/// Removes one entry from `metadata.finalizers`; returns whether it was there.
pub fn remove_finalizer(obj: &mut Value, finalizer: &str) -> bool {
    let Some(a) = obj
        .pointer_mut("/metadata/finalizers")
        .and_then(Value::as_array_mut)
    else {
        return false;
    };
    let before = a.len();
    a.retain(|f| f != finalizer);
    before != a.len()
}

/// Clears a namespace's `spec.finalizers` once it is empty.
pub fn remove_namespace_finalizer(obj: &mut Value) -> bool {
    match obj
        .pointer_mut("/spec/finalizers")
        .and_then(Value::as_array_mut)
    {
        Some(a) if !a.is_empty() => {
            a.clear();
            true
        }
        _ => false,
    }
}

/// Drops the owner reference with `uid`.
pub fn remove_owner(obj: &mut Value, uid: &str) {
    if let Some(a) = obj
        .pointer_mut("/metadata/ownerReferences")
        .and_then(Value::as_array_mut)
    {
        a.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
    }
}

/// Checks delete preconditions.
pub fn check_preconditions(
    rt: &ResourceType,
    obj: &Value,
    opts: &DeleteOptions,
) -> Result<(), ApiError> {
    let name = name_of(obj);
    if let Some(uid) = &opts.precondition_uid
        && uid != uid_of(obj)
    {
        return Err(ApiError::conflict(
            &rt.group,
            &rt.plural,
            name,
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                uid_of(obj)
            ),
        ));
    }
    let current_rv = obj
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if let Some(rv) = &opts.precondition_rv
        && rv != current_rv
    {
        return Err(ApiError::conflict(
            &rt.group,
            &rt.plural,
            name,
            &format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {current_rv}"
            ),
        ));
    }
    Ok(())
}

fn random_suffix(n: usize) -> String {
    // Same alphabet as the apiserver's name generator: no vowels, no confusable digits.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..n)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect()
}

/// A random RFC 4122 version 4 UID.
pub fn new_uid() -> String {
    let b: [u8; 16] = std::array::from_fn(|i| match i {
        6 => (fastrand::u8(..) & 0x0f) | 0x40,
        8 => (fastrand::u8(..) & 0x3f) | 0x80,
        _ => fastrand::u8(..),
    });
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Checks a name as a DNS-1123 subdomain (or label, for namespaces).
fn validate_name(rt: &ResourceType, name: &str) -> Result<(), String> {
    let label = rt.kind == "Namespace";
    let max = if label { 63 } else { 253 };
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !p.starts_with('-')
            && !p.ends_with('-')
    };
    let ok = name.len() <= max
        && if label {
            part_ok(name)
        } else {
            name.split('.').all(part_ok)
        };
    if ok {
        return Ok(());
    }
    let what = if label {
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
    } else {
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    };
    Err(format!("Invalid value: \"{name}\": {what}"))
}

fn check_type(rt: &ResourceType, obj: &mut Value) -> Result<(), ApiError> {
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the object provided is not a JSON object",
        ));
    };
    let api_version = rt.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        None => {
            map.insert("apiVersion".into(), Value::String(api_version));
        }
        Some(v) if v == api_version => {}
        // Another served version of the same group is fine; we store what we serve.
        Some(v) if !rt.group.is_empty() && v.split('/').next() == Some(rt.group.as_str()) => {
            map.insert("apiVersion".into(), Value::String(api_version));
        }
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        None => {
            map.insert("kind".into(), Value::String(rt.kind.clone()));
        }
        Some(k) if k == rt.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                rt.kind
            )));
        }
    }
    match map.get("metadata") {
        None | Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(ApiError::bad_request("metadata: must be an object")),
    }
}

fn invalid(rt: &ResourceType, name: &str, causes: Vec<(String, String, String)>) -> ApiError {
    ApiError::invalid(&rt.group, &rt.kind, name, causes)
}

/// Folds a Secret's write-only `stringData` into `data`, as the API server does: clients write
/// plain text, and every reader sees base64 in `data` only.
fn fold_string_data(rt: &ResourceType, obj: &mut Value) {
    if !(rt.group.is_empty() && rt.kind == "Secret") {
        return;
    }
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    let Some(Value::Object(plain)) = map.remove("stringData") else {
        return;
    };
    let data = map
        .entry("data")
        .or_insert_with(|| Value::Object(Map::new()));
    if !data.is_object() {
        *data = Value::Object(Map::new());
    }
    if let Some(data) = data.as_object_mut() {
        for (key, value) in plain {
            let text = value.as_str().unwrap_or_default().as_bytes().to_vec();
            let encoded =
                serde_json::to_value(k8s_openapi::ByteString(text)).unwrap_or(Value::Null);
            data.insert(key, encoded);
        }
    }
}

/// Prunes, defaults and validates a custom resource; built-in kinds only get their name checked.
fn validate(rt: &ResourceType, obj: &mut Value, ctx: &WriteContext) -> Result<(), ApiError> {
    fold_string_data(rt, obj);
    let name = name_of(obj).to_string();
    if let Err(msg) = validate_name(rt, &name) {
        return Err(invalid(
            rt,
            &name,
            vec![("FieldValueInvalid".into(), msg, "metadata.name".into())],
        ));
    }
    let Some(validator) = &rt.validator else {
        return Ok(());
    };
    let validated = match validator {
        Ok(schema) => schema.validate_object(obj),
        Err(e) => Err(vec![e.clone()]),
    };
    match validated {
        Ok(outcome) => {
            if outcome.pruned.is_empty() {
                return Ok(());
            }
            match ctx.field_validation {
                FieldValidation::Strict => {
                    let fields: Vec<String> = outcome
                        .pruned
                        .iter()
                        .map(|p| format!("unknown field \"{p}\""))
                        .collect();
                    Err(ApiError::bad_request(format!(
                        "{}.{} \"{name}\" is invalid: strict decoding error: {}",
                        rt.kind,
                        rt.group,
                        fields.join(", ")
                    )))
                }
                FieldValidation::Warn => {
                    for p in outcome.pruned {
                        ctx.warn(format!("unknown field \"{p}\""));
                    }
                    Ok(())
                }
                FieldValidation::Ignore => Ok(()),
            }
        }
        Err(errors) => Err(invalid(
            rt,
            &name,
            errors
                .iter()
                .map(|e| (e.cause_reason().to_string(), e.body(), e.field.clone()))
                .collect(),
        )),
    }
}

/// Prepares an object for creation.
pub fn prepare_create(
    rt: &ResourceType,
    ns: &str,
    mut obj: Value,
    ctx: &WriteContext,
) -> Result<Value, ApiError> {
    check_type(rt, &mut obj)?;
    let now = now_rfc3339();
    let Some(meta) = metadata_mut(&mut obj) else {
        return Err(ApiError::bad_request("metadata: must be an object"));
    };
    if meta
        .get("name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        match meta.get("generateName").and_then(Value::as_str) {
            Some(prefix) if !prefix.is_empty() => {
                let name = format!("{prefix}{}", random_suffix(5));
                meta.insert("name".into(), Value::String(name));
            }
            _ => {
                return Err(ApiError::invalid(
                    &rt.group,
                    &rt.kind,
                    "",
                    vec![(
                        "FieldValueRequired".into(),
                        "Required value: name or generateName is required".into(),
                        "metadata.name".into(),
                    )],
                ));
            }
        }
    }
    if rt.namespaced {
        match meta.get("namespace").and_then(Value::as_str) {
            Some(n) if !n.is_empty() && n != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {
                meta.insert("namespace".into(), Value::String(ns.into()));
            }
        }
    } else {
        meta.remove("namespace");
    }
    meta.insert("uid".into(), Value::String(new_uid()));
    meta.insert("creationTimestamp".into(), Value::String(now.clone()));
    meta.insert("generation".into(), json!(1));
    for k in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        meta.remove(k);
    }
    if !ctx.apply {
        meta.remove("managedFields");
    }
    if rt.status_subresource
        && let Some(map) = obj.as_object_mut()
    {
        map.remove("status");
    }
    if rt.kind == "Namespace"
        && let Some(map) = obj.as_object_mut()
    {
        map.insert("spec".into(), json!({"finalizers": ["kubernetes"]}));
        map.insert("status".into(), json!({"phase": "Active"}));
    }
    validate(rt, &mut obj, ctx)?;
    if !ctx.apply {
        merge::record_update(
            None,
            &mut obj,
            &ctx.manager,
            &rt.merge,
            &now,
            ctx.subresource.as_deref(),
        );
    }
    Ok(obj)
}

/// The part of an object whose change bumps `metadata.generation`: everything but metadata and status.
fn spec_view(obj: &Value) -> Map<String, Value> {
    obj.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| {
                    !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind")
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Prepares an update of `current` to `desired`, for the main resource or the `status` subresource.
pub fn prepare_update(
    rt: &ResourceType,
    current: &Value,
    desired: Value,
    ctx: &WriteContext,
) -> Result<Value, ApiError> {
    let mut desired = desired;
    check_type(rt, &mut desired)?;
    let name = name_of(current).to_string();
    let body_name = name_of(&desired);
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let ns = current
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if let Some(bns) = desired
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        && rt.namespaced
        && !bns.is_empty()
        && bns != ns
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let current_rv = current
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if let Some(rv) = desired
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        && !rv.is_empty()
        && rv != current_rv
    {
        return Err(ApiError::conflict(
            &rt.group,
            &rt.plural,
            &name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ));
    }
    let status_write = ctx.subresource.as_deref() == Some("status");
    // The status subresource changes status only; the main resource never changes status.
    let mut next = if status_write {
        let mut next = current.clone();
        if let Some(map) = next.as_object_mut() {
            match desired.get("status") {
                Some(s) => map.insert("status".into(), s.clone()),
                None => map.remove("status"),
            };
        }
        if ctx.apply
            && let (Some(mf), Some(m)) = (
                desired.pointer("/metadata/managedFields").cloned(),
                metadata_mut(&mut next),
            )
        {
            m.insert("managedFields".into(), mf);
        }
        next
    } else {
        if rt.status_subresource
            && let Some(map) = desired.as_object_mut()
        {
            match current.get("status") {
                Some(s) => map.insert("status".into(), s.clone()),
                None => map.remove("status"),
            };
        }
        desired
    };
    // Fields the system owns keep their current values whatever the client sent.
    let cur_meta = current
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let generation = cur_meta
        .get("generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let spec_changed = spec_view(current) != spec_view(&next);
    let Some(meta) = metadata_mut(&mut next) else {
        return Err(ApiError::bad_request("metadata: must be an object"));
    };
    for k in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "resourceVersion",
    ] {
        match cur_meta.get(k) {
            Some(v) => meta.insert(k.into(), v.clone()),
            None => meta.remove(k),
        };
    }
    meta.insert(
        "generation".into(),
        json!(if spec_changed {
            generation + 1
        } else {
            generation
        }),
    );
    if !ctx.apply
        && !meta.contains_key("managedFields")
        && let Some(mf) = cur_meta.get("managedFields")
    {
        meta.insert("managedFields".into(), mf.clone());
    }
    if rt.kind == "Namespace"
        && let (Some(map), Some(spec)) = (next.as_object_mut(), current.get("spec"))
        && !status_write
    {
        map.insert("spec".into(), spec.clone());
    }
    validate(rt, &mut next, ctx)?;
    if !ctx.apply {
        // Compare without managedFields so that a no-op write records nothing and stays a no-op.
        let mut a = current.clone();
        let mut b = next.clone();
        for o in [&mut a, &mut b] {
            if let Some(m) = metadata_mut(o) {
                m.remove("managedFields");
            }
        }
        if a != b {
            let now = now_rfc3339();
            merge::record_update(
                Some(current),
                &mut next,
                &ctx.manager,
                &rt.merge,
                &now,
                ctx.subresource.as_deref(),
            );
        }
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::resources::Registry;

    fn rt(group: &str, version: &str, plural: &str) -> std::sync::Arc<ResourceType> {
        Registry::with_builtins()
            .get(group, version, plural)
            .unwrap()
    }

    #[test]
    fn generation_moves_on_spec_changes_only() {
        let rs = rt("apps", "v1", "replicasets");
        let ctx = WriteContext::internal("t");
        let created = prepare_create(
            &rs,
            "default",
            json!({"metadata": {"name": "a"}, "spec": {"replicas": 1}}),
            &ctx,
        )
        .unwrap();
        assert_eq!(created["metadata"]["generation"], 1);
        let mut labelled = created.clone();
        labelled["metadata"]["labels"] = json!({"x": "y"});
        let next = prepare_update(&rs, &created, labelled, &ctx).unwrap();
        assert_eq!(next["metadata"]["generation"], 1, "metadata change");
        let mut scaled = next.clone();
        scaled["spec"]["replicas"] = json!(3);
        let next = prepare_update(&rs, &next, scaled, &ctx).unwrap();
        assert_eq!(next["metadata"]["generation"], 2, "spec change");
        let status_ctx = WriteContext {
            subresource: Some("status".into()),
            ..WriteContext::internal("t")
        };
        let mut status = next.clone();
        status["status"] = json!({"replicas": 3});
        let next = prepare_update(&rs, &next, status, &status_ctx).unwrap();
        assert_eq!(next["metadata"]["generation"], 2, "status change");
        assert_eq!(next["status"]["replicas"], 3);
    }

    #[test]
    fn main_resource_writes_cannot_change_status() {
        let rs = rt("apps", "v1", "replicasets");
        let ctx = WriteContext::internal("t");
        let created = prepare_create(
            &rs,
            "default",
            json!({"metadata": {"name": "a"}, "status": {"replicas": 9}}),
            &ctx,
        )
        .unwrap();
        assert!(
            created.get("status").is_none(),
            "status is dropped on create"
        );
        let mut body = created.clone();
        body["status"] = json!({"replicas": 9});
        let next = prepare_update(&rs, &created, body, &ctx).unwrap();
        assert!(next.get("status").is_none());
    }

    #[test]
    fn names_must_be_dns_subdomains() {
        let cm = rt("", "v1", "configmaps");
        let err = prepare_create(
            &cm,
            "default",
            json!({"metadata": {"name": "Bad_Name"}}),
            &WriteContext::internal("t"),
        )
        .unwrap_err();
        assert_eq!(err.code, 422);
        assert!(
            err.message.contains("RFC 1123 subdomain"),
            "{}",
            err.message
        );
    }

    #[test]
    fn stale_resource_version_is_a_conflict() {
        let cm = rt("", "v1", "configmaps");
        let ctx = WriteContext::internal("t");
        let mut cur =
            prepare_create(&cm, "default", json!({"metadata": {"name": "a"}}), &ctx).unwrap();
        set_resource_version(&mut cur, 5);
        let mut body = cur.clone();
        body["metadata"]["resourceVersion"] = json!("4");
        body["data"] = json!({"k": "v"});
        let err = prepare_update(&cm, &cur, body, &ctx).unwrap_err();
        assert_eq!(err.code, 409);
        assert!(err.message.contains("the object has been modified"));
    }
}
