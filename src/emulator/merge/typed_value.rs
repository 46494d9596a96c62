//! Walks over an object guided by its [`Node`] schema, the way structured-merge-diff walks typed values:
//! the field set an applied configuration claims, the comparison of two objects, the apply merge, and pruning
//! of fields an applier gave up.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::field_set::{EMPTY_FIELD_SET, FieldSet, PathElement};
use super::list_types::{ListType, Node};
use super::values_equal;

/// The path element naming `item` in the granular list described by `list`.
pub(super) fn item_path_element(list: &Node, item: &Value) -> Result<PathElement, String> {
    match list.list_type() {
        ListType::Map(keys) => {
            let fields = match item {
                Value::Object(fields) => fields,
                Value::Null => {
                    return Err("associative list with keys may not have a null element".into());
                }
                _ => return Err("associative list with keys may not have non-map elements".into()),
            };
            let mut key = Map::new();
            for name in keys {
                let value = fields
                    .get(name)
                    .filter(|value| !value.is_null())
                    .or_else(|| list.key_default(name));
                let Some(value) = value else {
                    return Err(format!(
                        "associative list with keys has an element that omits key field {name:?} (and doesn't have default value)"
                    ));
                };
                key.insert(name.clone(), value.clone());
            }
            Ok(PathElement::key(&key))
        }
        ListType::Set => match item {
            Value::Object(_) => {
                Err("associative list without keys has an element that's a map type".into())
            }
            Value::Array(_) => Err("not supported: associative list with lists as elements".into()),
            scalar => Ok(PathElement::value(scalar)),
        },
        ListType::Atomic => Err("atomic lists have no item identity".into()),
    }
}

/// Path elements of all items, in order. `strict` refuses duplicates, as the apiserver does for an applied
/// configuration (live objects may hold duplicates; the first one wins there).
pub(super) fn item_path_elements(
    list: &Node,
    items: &[Value],
    strict: bool,
) -> Result<Vec<PathElement>, String> {
    let mut seen = BTreeSet::new();
    let mut elements = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let element =
            item_path_element(list, item).map_err(|error| format!("element {index}: {error}"))?;
        if strict && !seen.insert(element.clone()) {
            return Err(format!("duplicate entries for key {element}"));
        }
        elements.push(element);
    }
    Ok(elements)
}

/// The fields an applied configuration claims: every scalar, atomic value, list item and map entry it sets.
/// Struct fields that only lead to other fields are not claimed themselves (they are implied).
pub(super) fn to_field_set(value: &Value, node: &Node) -> Result<FieldSet, String> {
    let mut set = FieldSet::new();
    let mut path = Vec::new();
    collect_fields(value, node, &mut path, &mut set)?;
    Ok(set)
}

fn collect_fields(
    value: &Value,
    node: &Node,
    path: &mut Vec<PathElement>,
    set: &mut FieldSet,
) -> Result<(), String> {
    match value {
        Value::Object(map) => {
            if node.is_atomic_map() {
                set.insert(path);
                return Ok(());
            }
            for (name, child_value) in map {
                let (child, declared) = node.child(name);
                path.push(PathElement::Field(name.clone()));
                collect_fields(child_value, child, path, set)?;
                let empty_object = child_value.as_object().is_some_and(Map::is_empty);
                if !declared || child_value.is_null() || empty_object {
                    set.insert(path);
                }
                path.pop();
            }
        }
        Value::Array(items) => {
            if *node.list_type() == ListType::Atomic {
                set.insert(path);
                return Ok(());
            }
            let elements = item_path_elements(node, items, true)
                .map_err(|error| format!("{}: {error}", FieldSet::path_string(path)))?;
            for (item, element) in items.iter().zip(elements) {
                path.push(element);
                collect_fields(item, node.item(), path, set)?;
                set.insert(path);
                path.pop();
            }
        }
        _ => set.insert(path),
    }
    Ok(())
}

/// What changed between two versions of an object, path by path.
#[derive(Debug, Default)]
pub(super) struct Comparison {
    /// Paths present only in the new object.
    pub added: FieldSet,
    /// Leaves present in both with different values.
    pub modified: FieldSet,
    /// Paths present only in the old object.
    pub removed: FieldSet,
}

/// Compares `old` with `new`. Leaves (scalars, atomic values, empty containers) are added, modified or removed;
/// list items and map entries are also recorded as added or removed themselves. Struct fields of Go types are
/// not: they exist in every zero value, so the apiserver never sees them appear.
pub(super) fn compare(old: &Value, new: &Value, node: &Node) -> Comparison {
    let mut comparison = Comparison::default();
    let mut path = Vec::new();
    compare_at(Some(old), Some(new), node, &mut path, &mut comparison);
    comparison
}

/// Compares one value; returns whether it was descended into rather than compared as a leaf.
fn compare_at(
    old: Option<&Value>,
    new: Option<&Value>,
    node: &Node,
    path: &mut Vec<PathElement>,
    out: &mut Comparison,
) -> bool {
    if let Some((old_map, new_map)) = both_or_absent(old, new, Value::as_object) {
        let empty = old_map.is_none_or(Map::is_empty) && new_map.is_none_or(Map::is_empty);
        if !node.is_atomic_map() && !empty {
            let names: BTreeSet<&String> = old_map
                .into_iter()
                .chain(new_map)
                .flat_map(Map::keys)
                .collect();
            for name in names {
                let (child, declared) = node.child(name);
                let old_child = old_map.and_then(|map| map.get(name));
                let new_child = new_map.and_then(|map| map.get(name));
                path.push(PathElement::Field(name.clone()));
                let descended = compare_at(old_child, new_child, child, path, out);
                if descended && (!declared || !child.is_typed() || child.is_free_form()) {
                    record_presence(old_child, new_child, path, out);
                }
                path.pop();
            }
            return true;
        }
    } else if let Some((old_items, new_items)) = both_or_absent(old, new, Value::as_array) {
        let empty = old_items.is_none_or(Vec::is_empty) && new_items.is_none_or(Vec::is_empty);
        if *node.list_type() != ListType::Atomic
            && !empty
            && compare_items(old_items, new_items, node, path, out)
        {
            return true;
        }
    }
    match (old, new) {
        (None, Some(_)) => out.added.insert(path),
        (Some(_), None) => out.removed.insert(path),
        (Some(old), Some(new)) if !values_equal(old, new) => out.modified.insert(path),
        _ => {}
    }
    false
}

/// Both sides viewed as the same container type (one side may be absent); `None` when they differ in type.
fn both_or_absent<'a, T: ?Sized>(
    old: Option<&'a Value>,
    new: Option<&'a Value>,
    view: fn(&'a Value) -> Option<&'a T>,
) -> Option<(Option<&'a T>, Option<&'a T>)> {
    let old_view = match old {
        None => None,
        Some(value) => Some(view(value)?),
    };
    let new_view = match new {
        None => None,
        Some(value) => Some(view(value)?),
    };
    Some((old_view, new_view))
}

/// Compares the items of a granular list by identity; false when items cannot be identified (then the list is
/// compared as a whole).
fn compare_items(
    old: Option<&Vec<Value>>,
    new: Option<&Vec<Value>>,
    list: &Node,
    path: &mut Vec<PathElement>,
    out: &mut Comparison,
) -> bool {
    let (Some(old_index), Some(new_index)) = (index_items(list, old), index_items(list, new))
    else {
        return false;
    };
    let elements: BTreeSet<&PathElement> = old_index.keys().chain(new_index.keys()).collect();
    for element in elements {
        let old_item = old_index.get(element).copied();
        let new_item = new_index.get(element).copied();
        path.push(element.clone());
        if compare_at(old_item, new_item, list.item(), path, out) {
            record_presence(old_item, new_item, path, out);
        }
        path.pop();
    }
    true
}

/// Items by identity (first occurrence wins); `None` when some item has no identity.
fn index_items<'a>(
    list: &Node,
    items: Option<&'a Vec<Value>>,
) -> Option<BTreeMap<PathElement, &'a Value>> {
    let mut index = BTreeMap::new();
    let Some(items) = items else {
        return Some(index);
    };
    let elements = item_path_elements(list, items, false).ok()?;
    for (element, item) in elements.into_iter().zip(items) {
        index.entry(element).or_insert(item);
    }
    Some(index)
}

fn record_presence(
    old: Option<&Value>,
    new: Option<&Value>,
    path: &[PathElement],
    out: &mut Comparison,
) {
    match (old, new) {
        (None, Some(_)) => out.added.insert(path),
        (Some(_), None) => out.removed.insert(path),
        _ => {}
    }
}

/// Merges an applied configuration into the live object: the configuration wins on every field it sets,
/// granular maps and lists merge entry by entry, atomic ones are replaced.
pub(super) fn merge_applied(live: Option<&Value>, applied: &Value, node: &Node) -> Value {
    match (live, applied) {
        (Some(Value::Object(live_map)), Value::Object(applied_map))
            if !node.is_atomic_map() && (!live_map.is_empty() || !applied_map.is_empty()) =>
        {
            let mut out = live_map.clone();
            for (name, applied_value) in applied_map {
                let merged = merge_applied(live_map.get(name), applied_value, node.child(name).0);
                out.insert(name.clone(), merged);
            }
            Value::Object(out)
        }
        (Some(Value::Array(live_items)), Value::Array(applied_items))
            if *node.list_type() != ListType::Atomic
                && !(live_items.is_empty() && applied_items.is_empty()) =>
        {
            merge_items(live_items, applied_items, node).unwrap_or_else(|| applied.clone())
        }
        _ => applied.clone(),
    }
}

/// Merges granular list items. Shared items follow the applied order; live-only items keep their place next to
/// the items they followed. `None` when some item has no identity.
fn merge_items(live: &[Value], applied: &[Value], list: &Node) -> Option<Value> {
    let live_elements = item_path_elements(list, live, false).ok()?;
    let applied_elements = item_path_elements(list, applied, false).ok()?;
    let mut live_first: BTreeMap<&PathElement, &Value> = BTreeMap::new();
    for (element, item) in live_elements.iter().zip(live) {
        live_first.entry(element).or_insert(item);
    }
    let applied_set: BTreeSet<&PathElement> = applied_elements.iter().collect();
    let mut shared = applied_elements
        .iter()
        .filter(|element| live_first.contains_key(element));
    let mut next_shared = shared.next();
    let mut emitted: BTreeSet<&PathElement> = BTreeSet::new();
    let item_node = list.item();
    let mut out = Vec::with_capacity(live.len() + applied.len());
    let (mut li, mut ai) = (0, 0);
    while li < live.len() || ai < applied.len() {
        let live_element = live_elements.get(li);
        let applied_element = applied_elements.get(ai);
        if let (Some(l), Some(a)) = (live_element, applied_element) {
            if l == a {
                emitted.insert(a);
                if let Some(item) = applied.get(ai) {
                    out.push(merge_applied(live_first.get(l).copied(), item, item_node));
                }
                li += 1;
                ai += 1;
                next_shared = shared.next();
                continue;
            }
            if applied_set.contains(l) && next_shared.is_some_and(|wanted| wanted != l) {
                // A shared item, but not the one due next: it is emitted when the applied list reaches it.
                li += 1;
                continue;
            }
        }
        if let Some(l) = live_element {
            if !applied_set.contains(l) {
                out.extend(live.get(li).cloned());
                li += 1;
                continue;
            }
            if emitted.contains(l) {
                li += 1;
                continue;
            }
        }
        match (applied_element, applied.get(ai)) {
            (Some(a), Some(item)) => {
                emitted.insert(a);
                out.push(merge_applied(live_first.get(a).copied(), item, item_node));
                ai += 1;
                if next_shared == Some(a) {
                    next_shared = shared.next();
                }
            }
            // Unreachable while both element lists match their items; guarantees progress regardless.
            _ => li += 1,
        }
    }
    Some(Value::Array(out))
}

/// Removes from `value` what the applier owned last time (`last`) that nobody owns any more (`owned`, the
/// union of every manager's set including the applier's new one). A struct field counts as owned when anything
/// below it is; list items and map entries only when owned themselves.
pub(super) fn prune(value: &mut Value, last: &FieldSet, owned: &FieldSet, node: &Node) {
    match value {
        Value::Object(map) if !node.is_atomic_map() => {
            for (element, last_child) in last.children() {
                let PathElement::Field(name) = element else {
                    continue;
                };
                let (child, declared) = node.child(name);
                let owned_child = owned.child(element);
                let still_owned = owned_child.is_some_and(|set| claims(set, declared));
                if claims(last_child, declared) && !still_owned {
                    map.remove(name);
                } else if last_child.has_children()
                    && let Some(child_value) = map.get_mut(name)
                {
                    prune(
                        child_value,
                        last_child,
                        owned_child.unwrap_or(&EMPTY_FIELD_SET),
                        child,
                    );
                }
            }
        }
        Value::Array(items) if *node.list_type() != ListType::Atomic => {
            let Ok(elements) = item_path_elements(node, items, false) else {
                return;
            };
            let mut doomed = vec![false; items.len()];
            for (element, last_child) in last.children() {
                let Some(index) = elements.iter().position(|candidate| candidate == element) else {
                    continue;
                };
                let owned_child = owned.child(element);
                if last_child.is_member() && !owned_child.is_some_and(FieldSet::is_member) {
                    if let Some(flag) = doomed.get_mut(index) {
                        *flag = true;
                    }
                } else if last_child.has_children()
                    && let Some(item) = items.get_mut(index)
                {
                    // Key fields identify the item; an item someone still owns keeps them.
                    let keys = key_fields(node, item);
                    prune(
                        item,
                        last_child,
                        owned_child.unwrap_or(&EMPTY_FIELD_SET),
                        node.item(),
                    );
                    if let Value::Object(fields) = item {
                        for (name, value) in keys {
                            fields.entry(name).or_insert(value);
                        }
                    }
                }
            }
            let mut flags = doomed.into_iter();
            items.retain(|_| !flags.next().unwrap_or(false));
        }
        _ => {}
    }
}

/// The key fields a list-map item carries itself.
fn key_fields(list: &Node, item: &Value) -> Vec<(String, Value)> {
    let (ListType::Map(keys), Value::Object(fields)) = (list.list_type(), item) else {
        return Vec::new();
    };
    keys.iter()
        .filter_map(|name| Some((name.clone(), fields.get(name)?.clone())))
        .collect()
}

/// Whether `set` claims the node it describes: as a member, or (for a struct field) through anything below it.
fn claims(set: &FieldSet, declared: bool) -> bool {
    set.is_member() || (declared && set.has_children())
}

/// Drops from `merged` the fields the applied configuration set to `null`: they are owned by the applier but
/// have no value, as after the apiserver decodes `null` into a Go struct.
pub(super) fn strip_applied_nulls(merged: &mut Value, applied: &Value, node: &Node) {
    match (merged, applied) {
        (Value::Object(merged_map), Value::Object(applied_map)) => {
            for (name, applied_value) in applied_map {
                if applied_value.is_null() {
                    merged_map.remove(name);
                } else if let Some(merged_value) = merged_map.get_mut(name) {
                    strip_applied_nulls(merged_value, applied_value, node.child(name).0);
                }
            }
        }
        (Value::Array(merged_items), Value::Array(applied_items)) => {
            if *node.list_type() == ListType::Atomic {
                for (merged_item, applied_item) in merged_items.iter_mut().zip(applied_items) {
                    strip_applied_nulls(merged_item, applied_item, node.item());
                }
                return;
            }
            let (Ok(merged_elements), Ok(applied_elements)) = (
                item_path_elements(node, merged_items, false),
                item_path_elements(node, applied_items, false),
            ) else {
                return;
            };
            for (applied_item, element) in applied_items.iter().zip(&applied_elements) {
                if let Some(index) = merged_elements
                    .iter()
                    .position(|candidate| candidate == element)
                    && let Some(merged_item) = merged_items.get_mut(index)
                {
                    strip_applied_nulls(merged_item, applied_item, node.item());
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::super::list_types::MergeSchema;
    use super::*;
    use serde_json::json;

    fn deployment() -> MergeSchema {
        MergeSchema::for_builtin("apps", "Deployment")
    }

    #[test]
    fn applied_field_sets_match_apiserver_managed_fields() {
        let applied = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "app", "image": "nginx", "ports": [{"containerPort": 80}], "args": ["-v"]}]}
                }
            }
        });
        let set = to_field_set(&applied, deployment().root()).unwrap();
        assert_eq!(
            set.to_fields_v1(),
            json!({
                "f:apiVersion": {},
                "f:kind": {},
                "f:metadata": {"f:labels": {"f:app": {}}, "f:name": {}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {
                            ".": {},
                            "f:args": {},
                            "f:image": {},
                            "f:name": {},
                            "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                        }}}
                    }
                }
            })
        );
    }

    #[test]
    fn applied_configurations_with_unidentifiable_items_are_refused() {
        let schema = MergeSchema::for_builtin("", "Service");
        let cases = [
            (
                json!({"spec": {"ports": [{"targetPort": 80}]}}),
                ".spec.ports: element 0: associative list with keys has an element that omits key field \"port\" (and doesn't have default value)",
            ),
            (
                json!({"spec": {"ports": [{"port": 80}, {"port": 80, "protocol": "TCP"}]}}),
                ".spec.ports: duplicate entries for key [port=80,protocol=\"TCP\"]",
            ),
            (
                json!({"spec": {"ports": ["http"]}}),
                ".spec.ports: element 0: associative list with keys may not have non-map elements",
            ),
            (
                json!({"metadata": {"finalizers": [{"a": 1}]}}),
                ".metadata.finalizers: element 0: associative list without keys has an element that's a map type",
            ),
        ];
        for (applied, want) in cases {
            assert_eq!(to_field_set(&applied, schema.root()).unwrap_err(), want);
        }
    }

    #[test]
    fn comparison_records_leaves_items_and_map_entries() {
        let old = json!({
            "metadata": {"labels": {"a": "1"}},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "app", "image": "v1"}]}}}
        });
        let new = json!({
            "metadata": {"labels": {"a": "1"}, "annotations": {"x": "y"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "app", "image": "v1"}, {"name": "side", "image": "s"}]}}}
        });
        let comparison = compare(&old, &new, deployment().root());
        assert_eq!(
            comparison.added.to_fields_v1(),
            json!({
                "f:metadata": {"f:annotations": {".": {}, "f:x": {}}},
                "f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"side\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}
            })
        );
        assert_eq!(
            comparison.modified.to_fields_v1(),
            json!({"f:spec": {"f:replicas": {}}})
        );
        assert!(comparison.removed.is_empty());
        let reverse = compare(&new, &old, deployment().root());
        assert_eq!(
            reverse.removed.to_fields_v1(),
            comparison.added.to_fields_v1()
        );
    }

    #[test]
    fn comparison_of_schemaless_objects_records_every_new_object() {
        let schema = MergeSchema::from_openapi_v3(
            &json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {"a": {"type": "object"}}}}}),
        );
        let comparison = compare(&json!({}), &json!({"spec": {"a": {"b": 1}}}), schema.root());
        assert_eq!(
            comparison.added.to_fields_v1(),
            json!({"f:spec": {".": {}, "f:a": {".": {}, "f:b": {}}}})
        );
    }

    #[test]
    fn merge_applied_orders_list_items_like_structured_merge_diff() {
        let schema = MergeSchema::for_builtin("", "Pod");
        let node = schema.root().child("spec").0.child("containers").0;
        let names =
            |list: &[&str]| Value::Array(list.iter().map(|name| json!({"name": name})).collect());
        let cases = [
            (names(&["a", "b"]), names(&["a", "b"]), names(&["a", "b"])),
            (names(&["a", "b"]), names(&["c"]), names(&["a", "b", "c"])),
            (
                names(&["a", "x", "b"]),
                names(&["b", "a"]),
                names(&["x", "b", "a"]),
            ),
            (
                names(&["x", "a", "y"]),
                names(&["a", "c"]),
                names(&["x", "a", "y", "c"]),
            ),
            (names(&[]), names(&["a"]), names(&["a"])),
        ];
        for (live, applied, want) in cases {
            assert_eq!(
                merge_applied(Some(&live), &applied, node),
                want,
                "{live} + {applied}"
            );
        }
    }

    #[test]
    fn prune_removes_only_what_nobody_owns() {
        let schema = deployment();
        let object = json!({"metadata": {"labels": {"a": "1", "b": "2", "c": "3"}}, "spec": {"paused": true, "replicas": 2}});
        let last = FieldSet::from_fields_v1(&json!({
            "f:metadata": {"f:labels": {"f:a": {}, "f:b": {}}},
            "f:spec": {"f:paused": {}}
        }))
        .unwrap();
        let cases = [
            (
                "co-owned label and a struct someone else owns part of survive",
                json!({"f:metadata": {"f:labels": {"f:b": {}}}, "f:spec": {"f:replicas": {}}}),
                json!({"metadata": {"labels": {"b": "2", "c": "3"}}, "spec": {"replicas": 2}}),
            ),
            (
                // As in structured-merge-diff: a struct nobody claims any more goes as a whole.
                "a struct nobody owns anything in is removed with its unowned fields",
                json!({"f:metadata": {"f:labels": {"f:b": {}}}}),
                json!({"metadata": {"labels": {"b": "2", "c": "3"}}}),
            ),
        ];
        for (name, owned, want) in cases {
            let owned = FieldSet::from_fields_v1(&owned).unwrap();
            let mut pruned = object.clone();
            prune(&mut pruned, &last, &owned, schema.root());
            assert_eq!(pruned, want, "{name}");
        }
    }

    #[test]
    fn prune_removes_list_items_unless_owned_as_items() {
        let schema = deployment();
        let object = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a"}, {"name": "b", "image": "b"}, {"name": "c", "image": "c"}
        ]}}}});
        let item = |name: &str| format!("k:{{\"name\":\"{name}\"}}");
        let wrap = |containers: Map<String, Value>| {
            FieldSet::from_fields_v1(
                &json!({"f:spec": {"f:template": {"f:spec": {"f:containers": containers}}}}),
            )
            .unwrap()
        };
        let mut last = Map::new();
        for name in ["a", "b", "c"] {
            last.insert(item(name), json!({".": {}, "f:image": {}, "f:name": {}}));
        }
        let cases = [
            // `b` is co-owned with its fields and stays whole; owning only a field of `c` does not keep the item.
            (
                json!({".": {}, "f:image": {}, "f:name": {}}),
                json!([{"name": "b", "image": "b"}]),
            ),
            // `b` itself is owned, its image is not: the image goes, the key field stays.
            (json!({".": {}}), json!([{"name": "b"}])),
        ];
        for (owned_b, want) in cases {
            let mut owned = Map::new();
            owned.insert(item("b"), owned_b);
            owned.insert(item("c"), json!({"f:image": {}}));
            let mut pruned = object.clone();
            prune(
                &mut pruned,
                &wrap(last.clone()),
                &wrap(owned),
                schema.root(),
            );
            assert_eq!(pruned["spec"]["template"]["spec"]["containers"], want);
        }
    }
}
