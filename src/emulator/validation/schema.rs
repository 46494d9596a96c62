//! The parts of an `openAPIV3Schema` that pruning, defaulting and validation act on, read once from
//! JSON. Reading is lenient: a keyword with a value of the wrong shape is ignored here, and
//! `structural_violations` is where such schemas are reported.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::{Map, Value};

/// Patterns are compiled with these limits so that a hostile schema cannot make us build a huge
/// automaton; the apiserver's RE2 has similar limits.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// One schema node.
#[derive(Debug, Default, Clone)]
pub(super) struct Schema {
    /// The types a value may have: `type` (several when given as a list, which a CRD cannot do but
    /// is harmless to honour), or integer and string under `x-kubernetes-int-or-string`. Empty
    /// means any type.
    pub allowed_types: Vec<String>,
    pub nullable: bool,
    pub int_or_string: bool,
    pub preserve_unknown_fields: bool,
    pub embedded_resource: bool,
    pub properties: BTreeMap<String, Schema>,
    pub additional_properties: AdditionalProperties,
    pub items: Option<Box<Schema>>,
    pub required: Vec<String>,
    pub enumeration: Option<Vec<Value>>,
    pub default: Option<Value>,
    pub minimum: Option<Bound>,
    pub maximum: Option<Bound>,
    pub multiple_of: Option<f64>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub pattern: Option<Pattern>,
    pub min_items: Option<u64>,
    pub max_items: Option<u64>,
    pub unique_items: bool,
    pub min_properties: Option<u64>,
    pub max_properties: Option<u64>,
    pub all_of: Vec<Schema>,
    pub any_of: Vec<Schema>,
    pub one_of: Vec<Schema>,
    pub not: Option<Box<Schema>>,
    pub list_type: Option<String>,
    pub list_map_keys: Vec<String>,
}

/// `additionalProperties`.
#[derive(Debug, Default, Clone)]
pub(super) enum AdditionalProperties {
    /// Not given: keys outside `properties` are unknown fields.
    #[default]
    Absent,
    /// `true` or `false`. Either way the apiserver keeps the key (and drops anything nested in it);
    /// `false` then fails validation.
    Allowed(bool),
    /// A schema for every key outside `properties`.
    Schema(Box<Schema>),
}

/// `minimum` or `maximum` with its `exclusive*` flag.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Bound {
    pub value: f64,
    pub exclusive: bool,
}

/// `pattern`, compiled; a pattern that does not compile fails every string it is applied to, as in
/// the apiserver.
#[derive(Debug, Clone)]
pub(super) struct Pattern {
    pub source: String,
    pub compiled: Result<Regex, String>,
}

impl Pattern {
    pub fn new(source: &str) -> Self {
        let compiled = regex::RegexBuilder::new(source)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| regex_error_summary(&e));
        Self {
            source: source.to_string(),
            compiled,
        }
    }
}

/// The one-line gist of a regex compile error (the full text draws the pattern with a caret over
/// several lines, which does not fit in a field error).
fn regex_error_summary(error: &regex::Error) -> String {
    let text = error.to_string();
    let gist = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("error: "))
        .map(str::to_string)
        .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "));
    format!("error parsing regexp: {gist}")
}

impl Schema {
    /// Reads a schema node. Anything that is not a JSON object reads as the empty schema.
    ///
    /// Recursion follows the nesting of `schema`, which the caller bounds before calling.
    pub fn parse(schema: &Value) -> Self {
        let Some(map) = schema.as_object() else {
            return Self::default();
        };
        let mut s = Self {
            allowed_types: match map.get("type") {
                Some(Value::String(t)) if !t.is_empty() => vec![t.clone()],
                Some(Value::Array(ts)) => ts
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
                _ => Vec::new(),
            },
            nullable: flag(map, "nullable"),
            int_or_string: flag(map, "x-kubernetes-int-or-string"),
            preserve_unknown_fields: flag(map, "x-kubernetes-preserve-unknown-fields"),
            embedded_resource: flag(map, "x-kubernetes-embedded-resource"),
            required: strings(map.get("required")),
            enumeration: map.get("enum").and_then(Value::as_array).cloned(),
            default: map.get("default").cloned(),
            multiple_of: map.get("multipleOf").and_then(Value::as_f64),
            min_length: count(map.get("minLength")),
            max_length: count(map.get("maxLength")),
            pattern: map.get("pattern").and_then(Value::as_str).map(Pattern::new),
            min_items: count(map.get("minItems")),
            max_items: count(map.get("maxItems")),
            unique_items: flag(map, "uniqueItems"),
            min_properties: count(map.get("minProperties")),
            max_properties: count(map.get("maxProperties")),
            list_type: map
                .get("x-kubernetes-list-type")
                .and_then(Value::as_str)
                .map(str::to_string),
            list_map_keys: strings(map.get("x-kubernetes-list-map-keys")),
            ..Self::default()
        };
        if s.int_or_string {
            s.allowed_types = vec!["integer".to_string(), "string".to_string()];
        }
        s.minimum = bound(map, "minimum", "exclusiveMinimum", f64::max);
        s.maximum = bound(map, "maximum", "exclusiveMaximum", f64::min);
        if let Some(Value::Object(props)) = map.get("properties") {
            s.properties = props
                .iter()
                .map(|(k, v)| (k.clone(), Self::parse(v)))
                .collect();
        }
        s.additional_properties = match map.get("additionalProperties") {
            Some(Value::Bool(b)) => AdditionalProperties::Allowed(*b),
            Some(v @ Value::Object(_)) => AdditionalProperties::Schema(Box::new(Self::parse(v))),
            _ => AdditionalProperties::Absent,
        };
        s.items = match map.get("items") {
            Some(v @ Value::Object(_)) => Some(Box::new(Self::parse(v))),
            _ => None,
        };
        s.all_of = branches(map.get("allOf"));
        s.any_of = branches(map.get("anyOf"));
        s.one_of = branches(map.get("oneOf"));
        s.not = match map.get("not") {
            Some(v @ Value::Object(_)) => Some(Box::new(Self::parse(v))),
            _ => None,
        };
        s
    }

    /// The schema that applies to the value under `key` of an object this schema describes.
    pub fn field(&self, key: &str) -> Option<&Schema> {
        self.properties
            .get(key)
            .or(match &self.additional_properties {
                AdditionalProperties::Schema(s) => Some(s.as_ref()),
                _ => None,
            })
    }
}

fn flag(map: &Map<String, Value>, key: &str) -> bool {
    map.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// A non-negative integer keyword (`maxLength` and friends), also when written as `3.0`.
pub(super) fn count(value: Option<&Value>) -> Option<u64> {
    let value = value?;
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 1.8e19)
            .map(|f| f as u64)
    })
}

/// `minimum`/`maximum` with the OpenAPI 3.0 boolean `exclusive*` flag. A numeric `exclusive*`
/// (JSON Schema 2019+, which a CRD rejects) is honoured as an exclusive bound; `tighter` picks the
/// stricter of the two when both are given.
fn bound(
    map: &Map<String, Value>,
    inclusive_key: &str,
    exclusive_key: &str,
    tighter: fn(f64, f64) -> f64,
) -> Option<Bound> {
    let plain = map.get(inclusive_key).and_then(Value::as_f64);
    match map.get(exclusive_key) {
        Some(Value::Number(n)) => {
            let exclusive = n.as_f64()?;
            match plain {
                Some(p) if tighter(p, exclusive) == p && p != exclusive => Some(Bound {
                    value: p,
                    exclusive: false,
                }),
                _ => Some(Bound {
                    value: exclusive,
                    exclusive: true,
                }),
            }
        }
        Some(Value::Bool(exclusive)) => plain.map(|value| Bound {
            value,
            exclusive: *exclusive,
        }),
        _ => plain.map(|value| Bound {
            value,
            exclusive: false,
        }),
    }
}

fn branches(value: Option<&Value>) -> Vec<Schema> {
    value
        .and_then(Value::as_array)
        .map(|items| items.iter().map(Schema::parse).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_keywords_and_ignores_malformed_ones() {
        let s = Schema::parse(&json!({
            "type": "object",
            "required": ["a", 1],
            "properties": {"a": {"type": "integer", "minimum": 0, "exclusiveMinimum": true, "maximum": 5}},
            "additionalProperties": false,
            "maxProperties": 3.0,
            "minProperties": -1,
            "pattern": "(",
            "items": [{"type": "string"}],
        }));
        assert_eq!(s.allowed_types, vec!["object"]);
        assert_eq!(s.required, vec!["a"]);
        assert_eq!(s.max_properties, Some(3));
        assert_eq!(s.min_properties, None);
        assert!(
            s.items.is_none(),
            "a list of item schemas is not structural and is ignored"
        );
        assert!(matches!(
            s.additional_properties,
            AdditionalProperties::Allowed(false)
        ));
        assert!(s.pattern.as_ref().is_some_and(|p| p.compiled.is_err()));
        let a = &s.properties["a"];
        assert_eq!(
            a.minimum,
            Some(Bound {
                value: 0.0,
                exclusive: true
            })
        );
        assert_eq!(
            a.maximum,
            Some(Bound {
                value: 5.0,
                exclusive: false
            })
        );
    }

    #[test]
    fn numeric_exclusive_bounds_pick_the_stricter_bound() {
        let cases = [
            (json!({"exclusiveMinimum": 3}), Some((3.0, true))),
            (
                json!({"minimum": 5, "exclusiveMinimum": 3}),
                Some((5.0, false)),
            ),
            (
                json!({"minimum": 2, "exclusiveMinimum": 3}),
                Some((3.0, true)),
            ),
            (
                json!({"minimum": 2, "exclusiveMinimum": false}),
                Some((2.0, false)),
            ),
            (json!({"exclusiveMinimum": true}), None),
        ];
        for (schema, want) in cases {
            let got = Schema::parse(&schema)
                .minimum
                .map(|b| (b.value, b.exclusive));
            assert_eq!(got, want, "{schema}");
        }
    }

    #[test]
    fn non_object_schema_reads_as_empty() {
        for schema in [json!(null), json!("object"), json!([1, 2]), json!(true)] {
            let s = Schema::parse(&schema);
            assert!(
                s.allowed_types.is_empty() && s.properties.is_empty(),
                "{schema}"
            );
        }
    }
}
