//! Pruning of unknown fields and coercion of `metadata` to ObjectMeta, as the apiserver does when it
//! decodes a custom resource.

use serde_json::{Map, Value};

use super::schema::{AdditionalProperties, Schema};
use super::{FieldError, child_path, index_path};

/// Fields a resource root or an embedded resource keeps whatever its schema says.
const RESOURCE_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

/// Removes the fields `schema` does not declare from `value`, recording their paths in `pruned`.
///
/// `is_root` marks the resource root, which keeps `apiVersion`, `kind` and `metadata` like an
/// embedded resource. A `None` schema describes nothing, so every key of an object under it goes
/// (the object itself stays), as for values under `additionalProperties: true`.
pub(super) fn prune(
    value: &mut Value,
    schema: Option<&Schema>,
    path: &str,
    is_root: bool,
    pruned: &mut Vec<String>,
) {
    if let Some(s) = schema
        && s.preserve_unknown_fields
    {
        prune_declared_only(value, s, path, is_root, pruned);
        return;
    }
    match value {
        Value::Object(map) => {
            let Some(s) = schema else {
                pruned.extend(map.keys().map(|k| child_path(path, k)));
                map.clear();
                return;
            };
            let keeps_resource_fields = is_root || s.embedded_resource;
            map.retain(|key, child| {
                if keeps_resource_fields && RESOURCE_FIELDS.contains(&key.as_str()) {
                    return true;
                }
                let child_at = child_path(path, key);
                if let Some(prop) = s.properties.get(key) {
                    prune(child, Some(prop), &child_at, false, pruned);
                    return true;
                }
                match &s.additional_properties {
                    AdditionalProperties::Schema(additional) => {
                        prune(child, Some(additional), &child_at, false, pruned);
                        true
                    }
                    AdditionalProperties::Allowed(_) => {
                        prune(child, None, &child_at, false, pruned);
                        true
                    }
                    AdditionalProperties::Absent => {
                        pruned.push(child_at);
                        false
                    }
                }
            });
        }
        Value::Array(items) => {
            let item_schema = schema.and_then(|s| s.items.as_deref());
            for (i, item) in items.iter_mut().enumerate() {
                prune(item, item_schema, &index_path(path, i), false, pruned);
            }
        }
        _ => {}
    }
}

/// Pruning under `x-kubernetes-preserve-unknown-fields`: unknown fields stay, but fields the schema
/// does declare are still pruned by their own schemas.
fn prune_declared_only(
    value: &mut Value,
    s: &Schema,
    path: &str,
    is_root: bool,
    pruned: &mut Vec<String>,
) {
    match value {
        Value::Object(map) => {
            let keeps_resource_fields = is_root || s.embedded_resource;
            for (key, child) in map.iter_mut() {
                if keeps_resource_fields && RESOURCE_FIELDS.contains(&key.as_str()) {
                    continue;
                }
                let child_at = child_path(path, key);
                if let Some(prop) = s.properties.get(key) {
                    prune(child, Some(prop), &child_at, false, pruned);
                } else {
                    match &s.additional_properties {
                        AdditionalProperties::Schema(additional) => {
                            prune(child, Some(additional), &child_at, false, pruned);
                        }
                        AdditionalProperties::Allowed(_) => {
                            prune(child, None, &child_at, false, pruned);
                        }
                        AdditionalProperties::Absent => {}
                    }
                }
            }
        }
        Value::Array(items) => {
            // The apiserver keeps preserving inside the items of a preserved list.
            if let Some(item_schema) = s.items.as_deref() {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_declared_only(item, item_schema, &index_path(path, i), false, pruned);
                }
            }
        }
        _ => {}
    }
}

/// How an ObjectMeta field is typed, which decides what the Go round trip keeps.
#[derive(Clone, Copy)]
enum MetaField {
    /// `string` with `omitempty`: an empty string disappears.
    Text,
    /// `metav1.Time`: a string; empty or null disappears.
    Time,
    /// `int64` with `omitempty`: zero disappears.
    Count,
    /// `*int64`: zero stays.
    OptionalCount,
    /// `map[string]string` with `omitempty`.
    StringMap,
    /// `[]string` with `omitempty`.
    StringList,
    /// A list of structs with `omitempty`.
    ObjectList,
}

fn meta_field(name: &str) -> Option<MetaField> {
    Some(match name {
        "name" | "generateName" | "namespace" | "selfLink" | "uid" | "resourceVersion" => {
            MetaField::Text
        }
        "creationTimestamp" | "deletionTimestamp" => MetaField::Time,
        "generation" => MetaField::Count,
        "deletionGracePeriodSeconds" => MetaField::OptionalCount,
        "labels" | "annotations" => MetaField::StringMap,
        "finalizers" => MetaField::StringList,
        "ownerReferences" | "managedFields" => MetaField::ObjectList,
        _ => return None,
    })
}

/// Reduces `metadata` at the root and in embedded resources to ObjectMeta's fields, the way the
/// apiserver's round trip through ObjectMeta does, and checks `apiVersion`/`kind` are strings there.
/// Unknown metadata fields are recorded in `pruned`; values of the wrong type are errors.
pub(super) fn coerce_metadata(
    value: &mut Value,
    s: &Schema,
    path: &str,
    is_root: bool,
    pruned: &mut Vec<String>,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    coerce(value, s, path, is_root, pruned, &mut errors);
    errors
}

fn coerce(
    value: &mut Value,
    s: &Schema,
    path: &str,
    is_root: bool,
    pruned: &mut Vec<String>,
    errors: &mut Vec<FieldError>,
) {
    match value {
        Value::Object(map) => {
            if is_root || s.embedded_resource {
                for key in ["apiVersion", "kind"] {
                    if let Some(v) = map.get(key)
                        && !v.is_string()
                    {
                        errors.push(FieldError::invalid(
                            child_path(path, key),
                            v,
                            "must be a string",
                        ));
                    }
                }
                if let Some(meta) = map.get_mut("metadata") {
                    coerce_object_meta(meta, &child_path(path, "metadata"), pruned, errors);
                }
            }
            for (key, child) in map.iter_mut() {
                if let Some(child_schema) = s.field(key) {
                    coerce(
                        child,
                        child_schema,
                        &child_path(path, key),
                        false,
                        pruned,
                        errors,
                    );
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = s.items.as_deref() {
                for (i, item) in items.iter_mut().enumerate() {
                    coerce(
                        item,
                        item_schema,
                        &index_path(path, i),
                        false,
                        pruned,
                        errors,
                    );
                }
            }
        }
        _ => {}
    }
}

fn coerce_object_meta(
    meta: &mut Value,
    path: &str,
    pruned: &mut Vec<String>,
    errors: &mut Vec<FieldError>,
) {
    let map = match meta {
        // A null metadata is as good as none; the name check reports what is missing.
        Value::Null => return,
        Value::Object(map) => map,
        other => {
            errors.push(FieldError::invalid(path, other, "must be an object"));
            return;
        }
    };
    map.retain(|key, field| {
        let Some(kind) = meta_field(key) else {
            pruned.push(child_path(path, key));
            return false;
        };
        coerce_meta_field(field, kind, &child_path(path, key), errors)
    });
}

/// Checks one ObjectMeta field and reports whether it survives the round trip.
fn coerce_meta_field(
    field: &mut Value,
    kind: MetaField,
    path: &str,
    errors: &mut Vec<FieldError>,
) -> bool {
    if field.is_null() {
        return false;
    }
    match kind {
        MetaField::Text | MetaField::Time => match field.as_str() {
            Some(s) => !s.is_empty(),
            None => {
                errors.push(FieldError::invalid(path, field, "must be a string"));
                true
            }
        },
        MetaField::Count | MetaField::OptionalCount => match field.as_i64() {
            Some(n) => n != 0 || matches!(kind, MetaField::OptionalCount),
            None => {
                errors.push(FieldError::invalid(path, field, "must be an integer"));
                true
            }
        },
        MetaField::StringMap => match field {
            Value::Object(entries) => {
                coerce_string_map(entries, path, errors);
                !entries.is_empty()
            }
            other => {
                errors.push(FieldError::invalid(path, other, "must be a map of strings"));
                true
            }
        },
        MetaField::StringList => match field {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if !item.is_string() {
                        errors.push(FieldError::invalid(
                            index_path(path, i),
                            item,
                            "must be a string",
                        ));
                    }
                }
                !items.is_empty()
            }
            other => {
                errors.push(FieldError::invalid(
                    path,
                    other,
                    "must be a list of strings",
                ));
                true
            }
        },
        MetaField::ObjectList => match field {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if !item.is_object() {
                        errors.push(FieldError::invalid(
                            index_path(path, i),
                            item,
                            "must be an object",
                        ));
                    }
                }
                !items.is_empty()
            }
            other => {
                errors.push(FieldError::invalid(
                    path,
                    other,
                    "must be a list of objects",
                ));
                true
            }
        },
    }
}

fn coerce_string_map(entries: &mut Map<String, Value>, path: &str, errors: &mut Vec<FieldError>) {
    for (key, v) in entries.iter_mut() {
        match v {
            Value::String(_) => {}
            // Go decodes a null into a string field as the empty string.
            Value::Null => *v = Value::String(String::new()),
            other => errors.push(FieldError::invalid(
                child_path(path, key),
                other,
                "must be a string",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pruned_copy(schema: &Value, value: &Value, is_root: bool) -> (Value, Vec<String>) {
        let s = Schema::parse(schema);
        let mut v = value.clone();
        let mut pruned = Vec::new();
        prune(&mut v, Some(&s), "", is_root, &mut pruned);
        pruned.sort();
        (v, pruned)
    }

    #[test]
    fn prune_table() {
        struct Case {
            name: &'static str,
            schema: Value,
            input: Value,
            want: Value,
            pruned: &'static [&'static str],
        }
        let cases = [
            Case {
                name: "unknown fields go, declared fields stay",
                schema: json!({"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "string"}}}}}),
                input: json!({"a": {"b": "x", "c": 1}, "d": true}),
                want: json!({"a": {"b": "x"}}),
                pruned: &["a.c", "d"],
            },
            Case {
                name: "list items are pruned by the items schema",
                schema: json!({"properties": {"l": {"type": "array", "items": {"type": "object", "properties": {"k": {"type": "string"}}}}}}),
                input: json!({"l": [{"k": "a", "x": 1}, {"y": 2}]}),
                want: json!({"l": [{"k": "a"}, {}]}),
                pruned: &["l[0].x", "l[1].y"],
            },
            Case {
                name: "preserve-unknown-fields keeps unknown fields but prunes declared ones",
                schema: json!({"properties": {"p": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                    "properties": {"known": {"type": "object", "properties": {"a": {"type": "string"}}}}}}}),
                input: json!({"p": {"free": {"deep": [1, {"x": 2}]}, "known": {"a": "1", "b": "2"}}}),
                want: json!({"p": {"free": {"deep": [1, {"x": 2}]}, "known": {"a": "1"}}}),
                pruned: &["p.known.b"],
            },
            Case {
                name: "additionalProperties schema applies to every key",
                schema: json!({"properties": {"m": {"type": "object", "additionalProperties": {"type": "object", "properties": {"v": {"type": "integer"}}}}}}),
                input: json!({"m": {"one": {"v": 1, "w": 2}, "two": {}}}),
                want: json!({"m": {"one": {"v": 1}, "two": {}}}),
                pruned: &["m.one.w"],
            },
            Case {
                name: "object without properties loses all keys",
                schema: json!({"properties": {"o": {"type": "object"}}}),
                input: json!({"o": {"a": 1}}),
                want: json!({"o": {}}),
                pruned: &["o.a"],
            },
            Case {
                name: "additionalProperties true keeps keys but drops what is nested in them",
                schema: json!({"properties": {"o": {"type": "object", "additionalProperties": true}}}),
                input: json!({"o": {"a": 1, "b": {"c": 2}}}),
                want: json!({"o": {"a": 1, "b": {}}}),
                pruned: &["o.b.c"],
            },
            Case {
                name: "embedded resource keeps apiVersion, kind and metadata",
                schema: json!({"properties": {"e": {"type": "object", "x-kubernetes-embedded-resource": true,
                    "properties": {"spec": {"type": "object", "properties": {"a": {"type": "string"}}}}}}}),
                input: json!({"e": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"a": "1", "b": "2"}, "status": {}}}),
                want: json!({"e": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"a": "1"}}}),
                pruned: &["e.spec.b", "e.status"],
            },
            Case {
                name: "apiVersion and kind are unknown outside resources",
                schema: json!({"properties": {"o": {"type": "object", "properties": {"a": {"type": "string"}}}}}),
                input: json!({"o": {"apiVersion": "v1", "kind": "X"}}),
                want: json!({"o": {}}),
                pruned: &["o.apiVersion", "o.kind"],
            },
            Case {
                name: "scalars under a missing items schema stay, objects are emptied",
                schema: json!({"properties": {"l": {"type": "array"}}}),
                input: json!({"l": [1, {"a": 1}]}),
                want: json!({"l": [1, {}]}),
                pruned: &["l[1].a"],
            },
        ];
        for case in cases {
            let (got, pruned) = pruned_copy(&case.schema, &case.input, false);
            assert_eq!(got, case.want, "{}", case.name);
            assert_eq!(pruned, case.pruned, "{}", case.name);
        }
    }

    #[test]
    fn root_keeps_resource_fields() {
        let (got, pruned) = pruned_copy(
            &json!({"type": "object", "properties": {"spec": {"type": "object"}}}),
            &json!({"apiVersion": "a/v1", "kind": "K", "metadata": {"name": "n", "x": 1}, "spec": {}, "extra": 1}),
            true,
        );
        assert_eq!(
            got,
            json!({"apiVersion": "a/v1", "kind": "K", "metadata": {"name": "n", "x": 1}, "spec": {}})
        );
        assert_eq!(pruned, ["extra"]);
    }

    #[test]
    fn metadata_is_reduced_to_object_meta() {
        let s = Schema::parse(&json!({"type": "object"}));
        let mut v = json!({"metadata": {
            "name": "n", "namespace": "", "labels": {"a": "b", "c": null}, "annotations": {},
            "finalizers": [], "generation": 0, "deletionGracePeriodSeconds": 0,
            "creationTimestamp": null, "uid": "u", "bogus": {"x": 1},
        }});
        let mut pruned = Vec::new();
        let errors = coerce_metadata(&mut v, &s, "", true, &mut pruned);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            v,
            json!({"metadata": {"name": "n", "labels": {"a": "b", "c": ""}, "deletionGracePeriodSeconds": 0, "uid": "u"}})
        );
        assert_eq!(pruned, ["metadata.bogus"]);
    }

    #[test]
    fn malformed_metadata_is_an_error() {
        let s = Schema::parse(&json!({"type": "object"}));
        let cases = [
            (
                json!({"metadata": "x"}),
                vec![r#"metadata: Invalid value: "x": must be an object"#],
            ),
            (
                json!({"metadata": {"labels": {"a": 1}}}),
                vec!["metadata.labels.a: Invalid value: 1: must be a string"],
            ),
            (
                json!({"metadata": {"name": 5, "finalizers": ["a", 2], "generation": "1"}}),
                vec![
                    r#"metadata.finalizers[1]: Invalid value: 2: must be a string"#,
                    r#"metadata.generation: Invalid value: "1": must be an integer"#,
                    "metadata.name: Invalid value: 5: must be a string",
                ],
            ),
            (
                json!({"kind": 3}),
                vec!["kind: Invalid value: 3: must be a string"],
            ),
        ];
        for (input, want) in cases {
            let mut v = input.clone();
            let mut errors: Vec<String> = coerce_metadata(&mut v, &s, "", true, &mut Vec::new())
                .iter()
                .map(ToString::to_string)
                .collect();
            errors.sort();
            assert_eq!(errors, want, "{input}");
        }
    }

    #[test]
    fn embedded_metadata_is_coerced_too() {
        let s = Schema::parse(&json!({"properties": {"t": {"type": "object",
            "x-kubernetes-embedded-resource": true, "x-kubernetes-preserve-unknown-fields": true}}}));
        let mut v = json!({"t": {"metadata": {"name": "a", "junk": 1}, "spec": {"free": 1}}});
        let mut pruned = Vec::new();
        let errors = coerce_metadata(&mut v, &s, "", true, &mut pruned);
        assert!(errors.is_empty());
        assert_eq!(
            v,
            json!({"t": {"metadata": {"name": "a"}, "spec": {"free": 1}}})
        );
        assert_eq!(pruned, ["t.metadata.junk"]);
    }
}
