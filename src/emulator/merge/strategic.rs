//! Strategic merge patch, as the apiserver applies it to built-in kinds (kubectl's default patch type and the
//! body of client-side `kubectl apply`).
//!
//! Beyond JSON merge patch: lists with a patch strategy merge (by merge key, or as sets of scalars), and the
//! directives `$patch` (replace/delete/merge), `$retainKeys`, `$setElementOrder/<field>` and
//! `$deleteFromPrimitiveList/<field>` are honoured and never stored.
//!
//! Where the apiserver stores a patch fragment verbatim (a new key, a new list item), this implementation merges
//! it into an empty value instead, so directives and `null`s nested inside never reach the stored object (the
//! apiserver gets the same effect from decoding into Go structs).

use serde_json::{Map, Value};

use super::list_types::{MergeSchema, Node};
use super::{MergeError, canonical_json, values_equal};

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";

/// Applies a strategic merge patch (as kubectl sends for built-in kinds) to `original`.
///
/// `original` that is not an object is treated as `{}`. The patch must be a JSON object.
pub fn strategic_merge(
    original: &Value,
    patch: &Value,
    schema: &MergeSchema,
) -> Result<Value, MergeError> {
    let Value::Object(patch) = patch else {
        return Err(MergeError::bad_request(format!(
            "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
            go_kind(patch)
        )));
    };
    let original = match original {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    merge_map(original, patch, schema.root()).map(Value::Object)
}

/// The Go decoder's name for a JSON value's kind, used in its "cannot unmarshal" message.
fn go_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn merge_map(
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
    node: &Node,
) -> Result<Map<String, Value>, MergeError> {
    if let Some(directive) = patch.get(DIRECTIVE) {
        return match directive.as_str() {
            Some("replace") => {
                let rest: Map<String, Value> = patch
                    .iter()
                    .filter(|(key, _)| *key != DIRECTIVE)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                merge_map(Map::new(), &rest, node)
            }
            Some("delete") => Ok(Map::new()),
            _ => Err(unknown_patch_type(directive, patch)),
        };
    }

    if let Some(retain) = patch.get(RETAIN_KEYS) {
        apply_retain_keys(&mut original, patch, retain)?;
    }

    let ordered = apply_element_orders(&mut original, patch, node)?;

    let mut deletions: Vec<(&String, &Value)> = Vec::new();
    for (key, patch_value) in patch {
        if key == RETAIN_KEYS || key.starts_with(SET_ELEMENT_ORDER) || ordered.contains(key) {
            continue;
        }
        if key.starts_with(DELETE_FROM_PRIMITIVE_LIST) {
            // Deletions run after the additions so an item both listed and deleted ends up deleted.
            deletions.push((key, patch_value));
            continue;
        }
        if patch_value.is_null() {
            original.remove(key);
            continue;
        }
        let (child, _) = node.child(key);
        let merged = match (original.remove(key), patch_value) {
            (Some(Value::Object(current)), Value::Object(patch_map))
                if !child.strategy().replace =>
            {
                Value::Object(merge_map(current, patch_map, child)?)
            }
            (Some(Value::Array(current)), Value::Array(patch_list)) => {
                Value::Array(merge_list_field(&current, patch_list, child)?)
            }
            // Absent, a different JSON type, a scalar, or a map with the replace strategy: the patch wins.
            _ => fresh_value(patch_value, child)?,
        };
        original.insert(key.clone(), merged);
    }

    for (key, to_delete) in deletions {
        let field = directive_target(key, DELETE_FROM_PRIMITIVE_LIST)
            .ok_or_else(|| MergeError::bad_request("invalid patch format of primitive list"))?;
        let Value::Array(to_delete) = to_delete else {
            return Err(bad_arg_type("[]interface {}", to_delete));
        };
        if let Some(Value::Array(items)) = original.get_mut(field) {
            items.retain(|item| !to_delete.iter().any(|gone| values_equal(item, gone)));
        }
    }
    Ok(original)
}

/// `$retainKeys`: drop every key of `original` not listed, after checking the patch sets only listed keys.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    retain: &Value,
) -> Result<(), MergeError> {
    let Value::Array(keys) = retain else {
        return Err(MergeError::bad_request(
            "invalid patch format of retainKeys",
        ));
    };
    let listed = |key: &str| keys.iter().any(|listed| listed.as_str() == Some(key));
    for (key, value) in patch {
        let is_directive = key == RETAIN_KEYS
            || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            || key.starts_with(SET_ELEMENT_ORDER);
        if !is_directive && !value.is_null() && !listed(key) {
            return Err(MergeError::bad_request(
                "invalid patch format of retainKeys",
            ));
        }
    }
    original.retain(|key, _| listed(key));
    Ok(())
}

/// `$setElementOrder/<field>`: merge the field's list and put its items in the given order, with items only the
/// server knows interleaved by their live order. Returns the fields it has fully handled.
fn apply_element_orders(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    node: &Node,
) -> Result<Vec<String>, MergeError> {
    let mut handled = Vec::new();
    for (key, order) in patch {
        if !key.starts_with(SET_ELEMENT_ORDER) {
            continue;
        }
        let field = directive_target(key, SET_ELEMENT_ORDER).ok_or_else(|| {
            MergeError::bad_request("invalid patch format of setElementOrder list")
        })?;
        let Value::Array(order) = order else {
            return Err(MergeError::bad_request(
                "invalid patch format of setElementOrder list",
            ));
        };
        let current = match original.get(field) {
            None => None,
            Some(Value::Array(items)) => Some(items.clone()),
            Some(other) => return Err(bad_arg_type("[]interface {}", other)),
        };
        let patch_list = match patch.get(field) {
            None => None,
            Some(Value::Array(items)) => Some(items),
            Some(other) => return Err(bad_arg_type("[]interface {}", other)),
        };
        let (child, _) = node.child(field);
        let merge_key = child.strategy().merge_key.as_deref();
        validate_element_order(patch_list.map(Vec::as_slice), order, merge_key)?;
        let merged = match (&current, patch_list) {
            (Some(current), None) => current.clone(),
            (current, Some(patch_list)) => {
                merge_list_field(current.as_deref().unwrap_or_default(), patch_list, child)?
            }
            (None, None) => continue,
        };
        let holds_objects = merged.iter().chain(order).any(Value::is_object);
        let key = merge_key.filter(|_| holds_objects);
        let (in_order, server_only) = partition_by_presence(merged, order, key)?;
        let ordered = normalize_element_order(
            in_order,
            server_only,
            order,
            current.as_deref().unwrap_or_default(),
            key,
        )?;
        original.insert(field.to_string(), Value::Array(ordered));
        handled.push(field.to_string());
    }
    Ok(handled)
}

/// The field a `$directive/<field>` key is about.
fn directive_target<'a>(key: &'a str, directive: &str) -> Option<&'a str> {
    let (prefix, field) = key.split_once('/')?;
    (prefix == directive).then_some(field)
}

/// Checks that the patch list names its items in the same relative order as `$setElementOrder`.
fn validate_element_order(
    patch_list: Option<&[Value]>,
    order: &[Value],
    merge_key: Option<&str>,
) -> Result<(), MergeError> {
    let Some(patch_list) = patch_list else {
        return Ok(());
    };
    if order.is_empty() || patch_list.is_empty() {
        return Ok(());
    }
    let mut kept: Vec<&Value> = Vec::new();
    for item in patch_list {
        if merge_key.is_some() {
            let Value::Object(map) = item else {
                return Err(bad_arg_type("map[string]interface {}", item));
            };
            if map.get(DIRECTIVE).and_then(Value::as_str) == Some("delete") {
                continue;
            }
        }
        kept.push(item);
    }
    let mut in_patch = kept.iter().peekable();
    let mut in_order = order.iter();
    while let Some(item) = in_patch.peek() {
        if item
            .as_object()
            .is_some_and(|map| map.contains_key(DIRECTIVE))
        {
            in_patch.next();
            continue;
        }
        let Some(ordered) = in_order.next() else {
            return Err(MergeError::invalid(format!(
                "The order in patch list:\n{}\n doesn't match {SET_ELEMENT_ORDER} list:\n{}\n",
                canonical_json(&Value::Array(patch_list.to_vec())),
                canonical_json(&Value::Array(order.to_vec())),
            )));
        };
        if same_merge_key(item, ordered, merge_key)? {
            in_patch.next();
        }
    }
    Ok(())
}

fn same_merge_key(
    left: &Value,
    right: &Value,
    merge_key: Option<&str>,
) -> Result<bool, MergeError> {
    let Some(key) = merge_key else {
        return Ok(values_equal(left, right));
    };
    Ok(values_equal(
        merge_key_value(left, key)?,
        merge_key_value(right, key)?,
    ))
}

fn merge_key_value<'a>(item: &'a Value, key: &str) -> Result<&'a Value, MergeError> {
    let Value::Object(map) = item else {
        return Err(bad_arg_type("map[string]interface {}", item));
    };
    map.get(key).ok_or_else(|| no_merge_key(map, key))
}

/// A value for a key that has nothing to merge with: still processed, so its directives and nulls vanish.
fn fresh_value(patch_value: &Value, node: &Node) -> Result<Value, MergeError> {
    match patch_value {
        Value::Object(map) => Ok(Value::Object(merge_map(Map::new(), map, node)?)),
        Value::Array(items) => Ok(Value::Array(merge_list_field(&[], items, node)?)),
        other => Ok(other.clone()),
    }
}

/// Merges a list field according to its patch strategy: merge, or replace by the patch.
fn merge_list_field(
    current: &[Value],
    patch: &[Value],
    node: &Node,
) -> Result<Vec<Value>, MergeError> {
    let strategy = node.strategy();
    if strategy.merge {
        merge_list(current, patch, strategy.merge_key.as_deref(), node.item())
    } else {
        Ok(patch.iter().map(without_nulls).collect())
    }
}

/// A copy with `null` members of objects dropped (what decoding into a Go struct does to them).
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum ElementKind {
    Null,
    Bool,
    Number,
    String,
    Object,
}

/// The common kind of all items of both lists; lists of lists and mixed kinds are refused, as upstream does.
fn element_kind(current: &[Value], patch: &[Value]) -> Result<ElementKind, MergeError> {
    let mut kind = None;
    for item in current.iter().chain(patch) {
        let this = match item {
            Value::Null => ElementKind::Null,
            Value::Bool(_) => ElementKind::Bool,
            Value::Number(_) => ElementKind::Number,
            Value::String(_) => ElementKind::String,
            Value::Object(_) => ElementKind::Object,
            Value::Array(_) => return Err(MergeError::invalid("lists of lists are not supported")),
        };
        match kind {
            None => kind = Some(this),
            Some(previous) if previous != this => {
                return Err(MergeError::invalid(format!(
                    "list element types are not identical: {} {}",
                    canonical_json(&Value::Array(current.to_vec())),
                    canonical_json(&Value::Array(patch.to_vec()))
                )));
            }
            Some(_) => {}
        }
    }
    kind.ok_or_else(|| MergeError::invalid("no elements in any of the given slices"))
}

/// Merges a list with `patchStrategy=merge`: scalars as a set, objects by merge key. Patch items come in patch
/// order, with items only the server has interleaved by their live order (new items come first).
fn merge_list(
    current: &[Value],
    patch: &[Value],
    merge_key: Option<&str>,
    item_node: &Node,
) -> Result<Vec<Value>, MergeError> {
    if current.is_empty() && patch.is_empty() {
        return Ok(Vec::new());
    }
    if element_kind(current, patch)? != ElementKind::Object {
        let mut merged: Vec<Value> = Vec::new();
        for item in current.iter().chain(patch) {
            if !merged.iter().any(|seen| values_equal(seen, item)) {
                merged.push(item.clone());
            }
        }
        let (in_patch, server_only) = partition_by_presence(merged, patch, None)?;
        return normalize_element_order(in_patch, server_only, patch, current, None);
    }
    let Some(key) = merge_key else {
        return Err(MergeError::invalid(
            "cannot merge lists without merge key for type map",
        ));
    };
    let (base, plain) = apply_list_directives(current, patch, key, item_node)?;
    let mut merged = base.clone();
    for item in &plain {
        let Value::Object(patch_item) = item else {
            return Err(bad_arg_type("map[string]interface {}", item));
        };
        let wanted = patch_item
            .get(key)
            .ok_or_else(|| no_merge_key(patch_item, key))?;
        match position_by_key(&merged, key, wanted)? {
            Some(index) => {
                if let Some(slot) = merged.get_mut(index) {
                    let existing = match slot.take() {
                        Value::Object(map) => map,
                        _ => Map::new(),
                    };
                    *slot = Value::Object(merge_map(existing, patch_item, item_node)?);
                }
            }
            None => merged.push(Value::Object(merge_map(Map::new(), patch_item, item_node)?)),
        }
    }
    let (in_patch, server_only) = partition_by_presence(merged, &plain, Some(key))?;
    normalize_element_order(in_patch, server_only, &plain, &base, Some(key))
}

/// Handles list items carrying `$patch`: `delete` removes the matching live items, `replace` makes the patch's
/// other items the whole list. Returns the list to merge into and the patch items left to merge.
fn apply_list_directives(
    current: &[Value],
    patch: &[Value],
    key: &str,
    item_node: &Node,
) -> Result<(Vec<Value>, Vec<Value>), MergeError> {
    let mut base = current.to_vec();
    let mut plain = Vec::new();
    let mut replace = false;
    for item in patch {
        let Value::Object(map) = item else {
            return Err(bad_arg_type("map[string]interface {}", item));
        };
        let Some(directive) = map.get(DIRECTIVE) else {
            plain.push(item.clone());
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let doomed = map.get(key).ok_or_else(|| no_merge_key(map, key))?;
                let mut kept = Vec::with_capacity(base.len());
                for existing in base {
                    let Value::Object(existing_map) = &existing else {
                        return Err(MergeError::invalid("value for key is not a map."));
                    };
                    if !existing_map
                        .get(key)
                        .is_some_and(|value| values_equal(value, doomed))
                    {
                        kept.push(existing);
                    }
                }
                base = kept;
            }
            Some("replace") => replace = true,
            Some("merge") => {
                return Err(MergeError::invalid(
                    "merging lists cannot yet be specified in the patch",
                ));
            }
            _ => return Err(unknown_patch_type(directive, map)),
        }
    }
    if replace {
        let mut replacement = Vec::with_capacity(plain.len());
        for item in &plain {
            if let Value::Object(map) = item {
                replacement.push(Value::Object(merge_map(Map::new(), map, item_node)?));
            }
        }
        return Ok((replacement, Vec::new()));
    }
    Ok((base, plain))
}

fn position_by_key(
    items: &[Value],
    key: &str,
    wanted: &Value,
) -> Result<Option<usize>, MergeError> {
    for (index, item) in items.iter().enumerate() {
        let Value::Object(map) = item else {
            return Err(MergeError::invalid(format!(
                "value for key {index} is not a map."
            )));
        };
        if map
            .get(key)
            .is_some_and(|value| values_equal(value, wanted))
        {
            return Ok(Some(index));
        }
    }
    Ok(None)
}

/// Splits `items` into those named in `by` and the rest, keeping their order.
fn partition_by_presence(
    items: Vec<Value>,
    by: &[Value],
    key: Option<&str>,
) -> Result<(Vec<Value>, Vec<Value>), MergeError> {
    let mut present = Vec::new();
    let mut absent = Vec::new();
    for item in items {
        let found = match key {
            None => by.iter().any(|other| values_equal(other, &item)),
            Some(key) => {
                let value = merge_key_value(&item, key)?;
                let mut found = false;
                for other in by {
                    let Value::Object(other) = other else {
                        return Err(bad_arg_type("map[string]interface {}", other));
                    };
                    if other
                        .get(key)
                        .is_some_and(|candidate| values_equal(candidate, value))
                    {
                        found = true;
                        break;
                    }
                }
                found
            }
        };
        if found {
            present.push(item)
        } else {
            absent.push(item)
        }
    }
    Ok((present, absent))
}

/// Sorts patch items by `patch_order` and server-only items by `server_order`, then interleaves them: a
/// server-only item goes before a patch item only when both are live and it came first there.
fn normalize_element_order(
    in_patch: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: Option<&str>,
) -> Result<Vec<Value>, MergeError> {
    if let Some(key) = key {
        for item in in_patch
            .iter()
            .chain(&server_only)
            .chain(patch_order)
            .chain(server_order)
        {
            merge_key_value(item, key)?;
        }
    }
    let in_patch = sorted_by_position(in_patch, patch_order, key);
    let server_only = sorted_by_position(server_only, server_order, key);
    let mut out = Vec::with_capacity(in_patch.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = in_patch.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => match (
                position(server_order, l, key),
                position(server_order, r, key),
            ) {
                (Some(li), Some(ri)) => li < ri,
                _ => false,
            },
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    Ok(out)
}

fn sorted_by_position(mut items: Vec<Value>, order: &[Value], key: Option<&str>) -> Vec<Value> {
    items.sort_by_cached_key(|item| position(order, item, key).unwrap_or(usize::MAX));
    items
}

/// Where `item` sits in `list`: by merge key value for objects, by value for scalars.
fn position(list: &[Value], item: &Value, key: Option<&str>) -> Option<usize> {
    match key {
        None => list
            .iter()
            .position(|candidate| values_equal(candidate, item)),
        Some(key) => {
            let wanted = item.get(key);
            list.iter()
                .position(|candidate| match (candidate.get(key), wanted) {
                    (Some(a), Some(b)) => values_equal(a, b),
                    (None, None) => true,
                    _ => false,
                })
        }
    }
}

fn unknown_patch_type(directive: &Value, map: &Map<String, Value>) -> MergeError {
    let name = directive
        .as_str()
        .map_or_else(|| canonical_json(directive), str::to_string);
    MergeError::invalid(format!(
        "unknown patch type: {name} in map: {}",
        canonical_json(&Value::Object(map.clone()))
    ))
}

fn no_merge_key(map: &Map<String, Value>, key: &str) -> MergeError {
    MergeError::invalid(format!(
        "map: {} does not contain declared merge key: {key}",
        canonical_json(&Value::Object(map.clone()))
    ))
}

fn bad_arg_type(expected: &str, actual: &Value) -> MergeError {
    MergeError::invalid(format!(
        "expected a {expected}, but received a {}",
        go_kind(actual)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> MergeSchema {
        MergeSchema::for_builtin("apps", "Deployment")
    }

    fn patch(original: Value, patch: Value) -> Value {
        strategic_merge(&original, &patch, &deployment()).unwrap()
    }

    fn pod_spec(spec: Value) -> Value {
        json!({"spec": {"template": {"spec": spec}}})
    }

    #[test]
    fn maps_merge_and_null_deletes() {
        let cases = [
            (
                json!({"a": 1, "b": {"c": 2, "d": 3}}),
                json!({"b": {"c": 5}}),
                json!({"a": 1, "b": {"c": 5, "d": 3}}),
            ),
            (json!({"a": 1, "b": 2}), json!({"a": null}), json!({"b": 2})),
            (json!({"a": 1}), json!({"z": null}), json!({"a": 1})),
            (
                json!({"a": {"x": 1}}),
                json!({"a": "flat"}),
                json!({"a": "flat"}),
            ),
            (
                json!({}),
                json!({"a": {"b": null, "c": 1}}),
                json!({"a": {"c": 1}}),
            ),
            (
                json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
                json!({"metadata": {"labels": {"b": null, "c": "3"}}}),
                json!({"metadata": {"labels": {"a": "1", "c": "3"}}}),
            ),
        ];
        for (original, p, want) in cases {
            assert_eq!(patch(original.clone(), p.clone()), want, "{original} + {p}");
        }
    }

    #[test]
    fn merge_key_lists_merge_by_key() {
        let original = pod_spec(json!({"containers": [
            {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}]},
            {"name": "sidecar", "image": "proxy:1"}
        ]}));
        let cases = [
            (
                "change one container's image",
                pod_spec(json!({"containers": [{"name": "app", "image": "app:2"}]})),
                json!([
                    {"name": "app", "image": "app:2", "env": [{"name": "A", "value": "1"}]},
                    {"name": "sidecar", "image": "proxy:1"}
                ]),
            ),
            (
                "new items come before server-only items",
                pod_spec(json!({"containers": [{"name": "debug", "image": "busybox"}]})),
                json!([
                    {"name": "debug", "image": "busybox"},
                    {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}]},
                    {"name": "sidecar", "image": "proxy:1"}
                ]),
            ),
            (
                "nested env merges by name",
                pod_spec(
                    json!({"containers": [{"name": "app", "env": [{"name": "B", "value": "2"}, {"name": "A", "value": null}]}]}),
                ),
                json!([
                    {"name": "app", "image": "app:1", "env": [{"name": "B", "value": "2"}, {"name": "A"}]},
                    {"name": "sidecar", "image": "proxy:1"}
                ]),
            ),
            (
                "delete directive removes by key",
                pod_spec(json!({"containers": [{"$patch": "delete", "name": "sidecar"}]})),
                json!([{"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}]}]),
            ),
            (
                "replace directive replaces the list",
                pod_spec(
                    json!({"containers": [{"$patch": "replace"}, {"name": "only", "image": "x"}]}),
                ),
                json!([{"name": "only", "image": "x"}]),
            ),
        ];
        for (name, p, want) in cases {
            let merged = patch(original.clone(), p);
            assert_eq!(
                merged["spec"]["template"]["spec"]["containers"], want,
                "{name}"
            );
        }
    }

    #[test]
    fn builtin_merge_keys_are_used() {
        let cases = [
            (
                "container ports by containerPort",
                pod_spec(
                    json!({"containers": [{"name": "a", "ports": [{"containerPort": 80, "name": "http"}]}]}),
                ),
                pod_spec(
                    json!({"containers": [{"name": "a", "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 9090}]}]}),
                ),
                json!([{"containerPort": 80, "name": "http", "protocol": "TCP"}, {"containerPort": 9090}]),
                &["spec", "template", "spec", "containers", "0", "ports"][..],
            ),
            (
                "volume mounts by mountPath",
                pod_spec(
                    json!({"containers": [{"name": "a", "volumeMounts": [{"mountPath": "/a", "name": "v1"}]}]}),
                ),
                pod_spec(
                    json!({"containers": [{"name": "a", "volumeMounts": [{"mountPath": "/a", "readOnly": true}]}]}),
                ),
                json!([{"mountPath": "/a", "name": "v1", "readOnly": true}]),
                &[
                    "spec",
                    "template",
                    "spec",
                    "containers",
                    "0",
                    "volumeMounts",
                ][..],
            ),
            (
                "volumes by name",
                pod_spec(json!({"volumes": [{"name": "data", "emptyDir": {}}]})),
                pod_spec(json!({"volumes": [{"name": "cfg", "configMap": {"name": "c"}}]})),
                json!([{"name": "cfg", "configMap": {"name": "c"}}, {"name": "data", "emptyDir": {}}]),
                &["spec", "template", "spec", "volumes"][..],
            ),
            (
                "image pull secrets by name",
                pod_spec(json!({"imagePullSecrets": [{"name": "a"}]})),
                pod_spec(json!({"imagePullSecrets": [{"name": "b"}]})),
                json!([{"name": "b"}, {"name": "a"}]),
                &["spec", "template", "spec", "imagePullSecrets"][..],
            ),
            (
                "tolerations are replaced",
                pod_spec(json!({"tolerations": [{"key": "a", "operator": "Exists"}]})),
                pod_spec(json!({"tolerations": [{"key": "b", "operator": "Exists"}]})),
                json!([{"key": "b", "operator": "Exists"}]),
                &["spec", "template", "spec", "tolerations"][..],
            ),
            (
                "envFrom is replaced",
                pod_spec(
                    json!({"containers": [{"name": "a", "envFrom": [{"configMapRef": {"name": "x"}}]}]}),
                ),
                pod_spec(
                    json!({"containers": [{"name": "a", "envFrom": [{"secretRef": {"name": "y"}}]}]}),
                ),
                json!([{"secretRef": {"name": "y"}}]),
                &["spec", "template", "spec", "containers", "0", "envFrom"][..],
            ),
            (
                "owner references by uid",
                json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "a"}]}}),
                json!({"metadata": {"ownerReferences": [{"uid": "1", "controller": true}]}}),
                json!([{"uid": "1", "name": "a", "controller": true}]),
                &["metadata", "ownerReferences"][..],
            ),
            (
                "conditions by type",
                json!({"status": {"conditions": [{"type": "Available", "status": "False"}, {"type": "Progressing", "status": "True"}]}}),
                json!({"status": {"conditions": [{"type": "Available", "status": "True"}]}}),
                json!([{"type": "Available", "status": "True"}, {"type": "Progressing", "status": "True"}]),
                &["status", "conditions"][..],
            ),
        ];
        for (name, original, p, want, path) in cases {
            let mut merged = patch(original, p);
            for step in path {
                merged = match step.parse::<usize>() {
                    Ok(index) => merged[index].take(),
                    Err(_) => merged[*step].take(),
                };
            }
            assert_eq!(merged, want, "{name}");
        }
    }

    #[test]
    fn other_builtin_kinds_use_their_keys() {
        let service = MergeSchema::for_builtin("", "Service");
        let merged = strategic_merge(
            &json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}], "selector": {"app": "a", "tier": "web"}}}),
            &json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}], "selector": {"tier": null}}}),
            &service,
        )
        .unwrap();
        assert_eq!(
            merged,
            json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}], "selector": {"app": "a"}}})
        );

        // CRD versions have no patch strategy, so a strategic patch replaces the whole list.
        let crd = MergeSchema::for_builtin("apiextensions.k8s.io", "CustomResourceDefinition");
        let merged = strategic_merge(
            &json!({"spec": {"versions": [{"name": "v1", "served": true}, {"name": "v2", "served": true}]}}),
            &json!({"spec": {"versions": [{"name": "v2", "served": false}]}}),
            &crd,
        )
        .unwrap();
        assert_eq!(
            merged["spec"]["versions"],
            json!([{"name": "v2", "served": false}])
        );
    }

    #[test]
    fn primitive_lists_with_merge_strategy_are_sets() {
        let cases = [
            (
                json!(["a", "b"]),
                json!({"finalizers": ["c", "a"]}),
                json!(["c", "a", "b"]),
            ),
            (
                json!(["a", "b", "c"]),
                json!({"$deleteFromPrimitiveList/finalizers": ["b"]}),
                json!(["a", "c"]),
            ),
            (
                json!(["a", "b", "c"]),
                json!({"$setElementOrder/finalizers": ["c", "a"], "$deleteFromPrimitiveList/finalizers": ["b"]}),
                json!(["c", "a"]),
            ),
            (json!(["a"]), json!({"finalizers": null}), Value::Null),
        ];
        for (finalizers, meta_patch, want) in cases {
            let merged = patch(
                json!({"metadata": {"finalizers": finalizers}}),
                json!({"metadata": meta_patch}),
            );
            assert_eq!(merged["metadata"]["finalizers"], want, "{meta_patch}");
        }
    }

    #[test]
    fn set_element_order_reorders_and_keeps_server_only_items() {
        let original = pod_spec(json!({"containers": [
            {"name": "a", "image": "a:1"},
            {"name": "injected", "image": "mesh"},
            {"name": "b", "image": "b:1"}
        ]}));
        let cases = [
            (
                "reorder without changes",
                pod_spec(json!({"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]})),
                // The server-only item keeps its place relative to the item it preceded live.
                json!(["injected", "b", "a"]),
            ),
            (
                "add an item in the middle",
                pod_spec(json!({
                    "$setElementOrder/containers": [{"name": "a"}, {"name": "c"}, {"name": "b"}],
                    "containers": [{"name": "c", "image": "c:1"}]
                })),
                json!(["a", "c", "injected", "b"]),
            ),
            (
                "delete with order (kubectl apply removing b)",
                pod_spec(json!({
                    "$setElementOrder/containers": [{"name": "a"}],
                    "containers": [{"$patch": "delete", "name": "b"}]
                })),
                json!(["a", "injected"]),
            ),
        ];
        for (name, p, want) in cases {
            let merged = patch(original.clone(), p);
            let names: Vec<Value> = merged["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].clone())
                .collect();
            assert_eq!(Value::Array(names), want, "{name}");
            let text = merged.to_string();
            assert!(!text.contains('$'), "{name}: directive leaked into {text}");
        }
    }

    #[test]
    fn kubectl_client_side_apply_patch_is_applied_cleanly() {
        // The shape `kubectl apply` (client-side) sends after editing a manifest.
        let live = json!({
            "metadata": {"name": "web", "labels": {"app": "web", "team": "a"}},
            "spec": {
                "replicas": 3,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
                "template": {"spec": {"containers": [{"name": "app", "image": "web:1", "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}}
            }
        });
        let p = json!({
            "metadata": {"labels": {"team": null}},
            "spec": {
                "strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null},
                "template": {"spec": {
                    "$setElementOrder/containers": [{"name": "app"}],
                    "containers": [{"name": "app", "image": "web:2", "$setElementOrder/ports": [{"containerPort": 80}]}]
                }}
            }
        });
        let merged = patch(live, p);
        assert_eq!(
            merged,
            json!({
                "metadata": {"name": "web", "labels": {"app": "web"}},
                "spec": {
                    "replicas": 3,
                    "strategy": {"type": "Recreate"},
                    "template": {"spec": {"containers": [{"name": "app", "image": "web:2", "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}}
                }
            })
        );
    }

    #[test]
    fn map_directives() {
        let cases = [
            (
                json!({"spec": {"strategy": {"type": "A", "x": 1}}}),
                json!({"spec": {"strategy": {"$patch": "replace", "type": "B"}}}),
                json!({"spec": {"strategy": {"type": "B"}}}),
            ),
            (
                json!({"spec": {"strategy": {"type": "A"}, "paused": true}}),
                json!({"spec": {"strategy": {"$patch": "delete"}}}),
                json!({"spec": {"strategy": {}, "paused": true}}),
            ),
            (
                json!({"spec": {"a": 1}}),
                json!({"$patch": "replace", "kind": "X"}),
                json!({"kind": "X"}),
            ),
            (
                json!({"spec": {"a": 1, "b": 2, "c": 3}}),
                json!({"spec": {"$retainKeys": ["a", "b"], "b": 5}}),
                json!({"spec": {"a": 1, "b": 5}}),
            ),
            (
                json!({}),
                json!({"spec": {"new": {"$patch": "replace", "x": 1}}}),
                json!({"spec": {"new": {"x": 1}}}),
            ),
        ];
        for (original, p, want) in cases {
            assert_eq!(patch(original, p.clone()), want, "{p}");
        }
    }

    #[test]
    fn malformed_patches_are_refused() {
        let cases = [
            (
                json!({}),
                json!([1]),
                400,
                "json: cannot unmarshal array into Go value of type map[string]interface {}",
            ),
            (
                json!({"spec": {}}),
                json!({"spec": {"$patch": "merge"}}),
                422,
                "unknown patch type: merge in map: {\"$patch\":\"merge\"}",
            ),
            (
                json!({"spec": {}}),
                json!({"spec": {"$patch": "explode"}}),
                422,
                "unknown patch type: explode in map: {\"$patch\":\"explode\"}",
            ),
            (
                json!({}),
                json!({"spec": {"$retainKeys": "a"}}),
                400,
                "invalid patch format of retainKeys",
            ),
            (
                json!({}),
                json!({"spec": {"$retainKeys": ["a"], "b": 1}}),
                400,
                "invalid patch format of retainKeys",
            ),
            (
                json!({}),
                json!({"spec": {"$setElementOrder/x": {}}}),
                400,
                "invalid patch format of setElementOrder list",
            ),
            (
                json!({}),
                json!({"$deleteFromPrimitiveList": ["a"]}),
                400,
                "invalid patch format of primitive list",
            ),
            (
                pod_spec(json!({"containers": [{"name": "a"}]})),
                pod_spec(json!({"containers": [{"image": "x"}]})),
                422,
                "map: {\"image\":\"x\"} does not contain declared merge key: name",
            ),
            (
                pod_spec(json!({"containers": [{"name": "a"}]})),
                pod_spec(json!({"containers": [{"$patch": "merge"}]})),
                422,
                "merging lists cannot yet be specified in the patch",
            ),
            (
                pod_spec(json!({"containers": [{"name": "a"}]})),
                pod_spec(json!({"containers": [{"$patch": "delete"}]})),
                422,
                "map: {\"$patch\":\"delete\"} does not contain declared merge key: name",
            ),
            (
                json!({"metadata": {"finalizers": ["a"]}}),
                json!({"metadata": {"finalizers": [["b"]]}}),
                422,
                "lists of lists are not supported",
            ),
            (
                pod_spec(json!({"containers": [{"name": "a"}, {"name": "b"}]})),
                pod_spec(
                    json!({"$setElementOrder/containers": [{"name": "a"}], "containers": [{"name": "b", "image": "x"}]}),
                ),
                422,
                "The order in patch list:\n[{\"image\":\"x\",\"name\":\"b\"}]\n doesn't match $setElementOrder list:\n[{\"name\":\"a\"}]\n",
            ),
        ];
        for (original, p, code, message) in cases {
            let error = strategic_merge(&original, &p, &deployment()).unwrap_err();
            assert_eq!(
                (error.code(), error.to_string().as_str()),
                (code, message),
                "{p}"
            );
        }
    }

    #[test]
    fn unknown_lists_are_replaced_and_unknown_kinds_still_know_metadata() {
        let schema = MergeSchema::for_builtin("weir.io", "Rollout");
        let merged = strategic_merge(
            &json!({"metadata": {"finalizers": ["a"]}, "spec": {"steps": [{"setWeight": 10}, {"pause": {}}]}}),
            &json!({"metadata": {"finalizers": ["b"]}, "spec": {"steps": [{"setWeight": 50}]}}),
            &schema,
        )
        .unwrap();
        assert_eq!(
            merged,
            json!({"metadata": {"finalizers": ["b", "a"]}, "spec": {"steps": [{"setWeight": 50}]}})
        );
    }

    #[test]
    fn new_list_items_lose_nulls_and_directives() {
        let merged = patch(
            pod_spec(json!({"containers": [{"name": "a"}]})),
            pod_spec(
                json!({"containers": [{"name": "b", "image": null, "env": [{"name": "X", "value": "1"}], "$setElementOrder/env": [{"name": "X"}]}]}),
            ),
        );
        assert_eq!(
            merged["spec"]["template"]["spec"]["containers"],
            json!([{"name": "b", "env": [{"name": "X", "value": "1"}]}, {"name": "a"}])
        );
    }
}
