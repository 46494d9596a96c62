//! Null handling and defaulting, as the apiserver does after pruning and before validation.

use serde_json::Value;

use super::prune::prune;
use super::schema::{AdditionalProperties, Schema};

/// Drops object fields whose value is null when their schema is neither `nullable` nor has a
/// `default` (a defaulted null is replaced by its default later). List items are never dropped.
pub(super) fn prune_nulls(value: &mut Value, schema: Option<&Schema>) {
    match value {
        Value::Object(map) => map.retain(|key, child| {
            let child_schema = schema.and_then(|s| s.field(key));
            if child.is_null() && child_schema.is_some_and(|c| !c.nullable && c.default.is_none()) {
                return false;
            }
            prune_nulls(child, child_schema);
            true
        }),
        Value::Array(items) => {
            let item_schema = schema.and_then(|s| s.items.as_deref());
            for item in items {
                prune_nulls(item, item_schema);
            }
        }
        _ => {}
    }
}

/// Fills in `default`s: a property that is missing (or null without being nullable) gets its
/// default, then defaulting descends into every value the schema describes, so nested defaults apply
/// only where their parent object exists.
pub(super) fn apply(value: &mut Value, s: &Schema) {
    match value {
        Value::Object(map) => {
            for (key, prop) in &s.properties {
                let Some(default) = &prop.default else {
                    continue;
                };
                let missing = match map.get(key) {
                    None => true,
                    Some(v) => v.is_null() && !prop.nullable,
                };
                if missing {
                    map.insert(key.clone(), pruned_default(default, prop));
                }
            }
            for (key, child) in map.iter_mut() {
                if let Some(prop) = s.properties.get(key) {
                    apply(child, prop);
                } else if let AdditionalProperties::Schema(additional) = &s.additional_properties {
                    replace_null_with_default(child, additional);
                    apply(child, additional);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = s.items.as_deref() {
                for item in items {
                    replace_null_with_default(item, item_schema);
                    apply(item, item_schema);
                }
            }
        }
        _ => {}
    }
}

fn replace_null_with_default(value: &mut Value, s: &Schema) {
    if value.is_null()
        && !s.nullable
        && let Some(default) = &s.default
    {
        *value = pruned_default(default, s);
    }
}

/// A copy of `default` without fields its schema does not declare: the apiserver prunes defaults
/// when it loads a CRD, so unknown fields in them never reach objects (and are not reported).
fn pruned_default(default: &Value, s: &Schema) -> Value {
    let mut copy = default.clone();
    prune(&mut copy, Some(s), "", false, &mut Vec::new());
    copy
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn null_pruning_table() {
        let schema = Schema::parse(&json!({"properties": {
            "plain": {"type": "string"},
            "nullable": {"type": "string", "nullable": true},
            "defaulted": {"type": "string", "default": "d"},
            "list": {"type": "array", "items": {"type": "string"}},
            "map": {"type": "object", "additionalProperties": {"type": "string"}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
        }}));
        let mut v = json!({
            "plain": null, "nullable": null, "defaulted": null, "list": [null, "a"],
            "map": {"k": null, "j": "x"}, "free": {"unknown": null},
        });
        prune_nulls(&mut v, Some(&schema));
        assert_eq!(
            v,
            json!({"nullable": null, "defaulted": null, "list": [null, "a"], "map": {"j": "x"}, "free": {"unknown": null}})
        );
    }

    #[test]
    fn defaulting_table() {
        let schema = json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {
                "replicas": {"type": "integer", "default": 1},
                "strategy": {"type": "object", "properties": {
                    "type": {"type": "string", "default": "Canary"},
                    "maxSurge": {"x-kubernetes-int-or-string": true, "default": "25%"},
                }},
                "withDefaultObject": {"type": "object", "default": {"a": {}, "junk": 1}, "properties": {
                    "a": {"type": "object", "properties": {"b": {"type": "integer", "default": 2}}},
                }},
                "nullableDefaulted": {"type": "string", "nullable": true, "default": "x"},
                "steps": {"type": "array", "items": {"type": "object", "default": {"pause": {}},
                    "properties": {"pause": {"type": "object", "properties": {"duration": {"type": "string", "default": "10s"}}}}}},
                "map": {"type": "object", "additionalProperties": {"type": "string", "default": "v"}},
            }},
        }});
        let s = Schema::parse(&schema);
        let cases = [
            (
                "missing fields get defaults, absent parents stay absent",
                json!({"spec": {"nullableDefaulted": null}}),
                json!({"spec": {"replicas": 1, "withDefaultObject": {"a": {"b": 2}}, "nullableDefaulted": null}}),
            ),
            (
                "present parents get their children's defaults",
                json!({"spec": {"replicas": 3, "strategy": {}, "nullableDefaulted": "y"}}),
                json!({"spec": {"replicas": 3, "strategy": {"type": "Canary", "maxSurge": "25%"},
                    "withDefaultObject": {"a": {"b": 2}}, "nullableDefaulted": "y"}}),
            ),
            (
                "a non-nullable null takes the default",
                json!({"spec": {"replicas": null, "strategy": {"type": null}}}),
                json!({"spec": {"replicas": 1, "strategy": {"type": "Canary", "maxSurge": "25%"},
                    "withDefaultObject": {"a": {"b": 2}}, "nullableDefaulted": "x"}}),
            ),
            (
                "list items and map values are defaulted",
                json!({"spec": {"steps": [{"pause": {}}, null, {}], "map": {"k": null, "j": "x"}}}),
                json!({"spec": {"replicas": 1, "withDefaultObject": {"a": {"b": 2}}, "nullableDefaulted": "x",
                    "steps": [{"pause": {"duration": "10s"}}, {"pause": {"duration": "10s"}}, {}],
                    "map": {"k": "v", "j": "x"}}}),
            ),
        ];
        for (name, input, want) in cases {
            let mut v = input;
            apply(&mut v, &s);
            assert_eq!(v, want, "{name}");
        }
    }
}
