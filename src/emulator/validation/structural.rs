//! Whether a CRD version's `openAPIV3Schema` is structural, in the sense the apiserver requires
//! before it serves the version: every field typed, value validations (`allOf`, `anyOf`, `oneOf`,
//! `not`) free of structure, and the extensions used consistently.

use serde_json::{Map, Value};

use super::check::check_value;
use super::prune::prune;
use super::schema::{Pattern, Schema, count};
use super::{FieldError, child_path, index_path};

/// The name violations give the schema root.
pub(super) const ROOT: &str = "openAPIV3Schema";

const TYPES: [&str; 6] = ["array", "boolean", "integer", "number", "object", "string"];
const SCALAR_TYPES: [&str; 4] = ["boolean", "integer", "number", "string"];
const LIST_TYPES: [&str; 3] = ["atomic", "set", "map"];
const COMPOSITIONS: [&str; 3] = ["allOf", "anyOf", "oneOf"];

/// JSON Schema keywords a CRD schema may not use.
const UNSUPPORTED_KEYWORDS: [&str; 7] = [
    "$ref",
    "$schema",
    "id",
    "definitions",
    "dependencies",
    "patternProperties",
    "additionalItems",
];

/// Newer JSON Schema keywords that a CRD schema does not have. The apiserver drops them when it
/// decodes the CRD, so whatever they were meant to enforce would silently not be enforced.
const UNKNOWN_KEYWORDS: [&str; 13] = [
    "const",
    "$defs",
    "if",
    "then",
    "else",
    "prefixItems",
    "contains",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
    "dependentRequired",
    "dependentSchemas",
    "examples",
];

/// Where a structural schema node sits, which decides some of the wording and rules.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Position {
    Root,
    Property,
    Items,
    AdditionalProperties,
}

/// Every violation in `schema`, in schema order (properties sorted by name).
pub(super) fn violations(schema: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    structural(schema, ROOT, Position::Root, &mut out);
    out
}

fn property_path(path: &str, key: &str) -> String {
    format!("{path}.properties[{key}]")
}

fn sorted(map: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

fn is_true(map: &Map<String, Value>, key: &str) -> bool {
    map.get(key).and_then(Value::as_bool) == Some(true)
}

fn type_of(map: &Map<String, Value>) -> Option<&str> {
    map.get("type")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
}

/// A node of the structural part of the schema.
fn structural(node: &Value, path: &str, position: Position, out: &mut Vec<FieldError>) {
    let Some(map) = node.as_object() else {
        out.push(FieldError::invalid(path, node, "must be a schema object"));
        return;
    };
    let int_or_string = is_true(map, "x-kubernetes-int-or-string");
    let embedded = is_true(map, "x-kubernetes-embedded-resource");
    let preserve = is_true(map, "x-kubernetes-preserve-unknown-fields");
    let ty = type_of(map);

    check_type(map, path, position, int_or_string || preserve, out);
    if int_or_string && let Some(t) = ty {
        out.push(FieldError::invalid(
            child_path(path, "type"),
            &Value::from(t),
            "must be empty if x-kubernetes-int-or-string is true",
        ));
    }
    match map.get("x-kubernetes-preserve-unknown-fields") {
        None | Some(Value::Bool(true)) => {}
        Some(other) => out.push(FieldError::invalid(
            child_path(path, "x-kubernetes-preserve-unknown-fields"),
            other,
            "must be true or undefined",
        )),
    }
    if embedded {
        if ty != Some("object") {
            out.push(FieldError::invalid(
                child_path(path, "type"),
                &Value::from(ty.unwrap_or("")),
                "must be object if x-kubernetes-embedded-resource is true",
            ));
        }
        let has_properties = map
            .get("properties")
            .and_then(Value::as_object)
            .is_some_and(|p| !p.is_empty());
        if !preserve && !has_properties {
            out.push(FieldError::required(
                child_path(path, "properties"),
                "must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields",
            ));
        }
    }
    if position == Position::Root {
        check_root(map, path, out);
    }

    check_keywords(map, path, out);
    check_default(node, map, path, out);
    check_list_type(map, path, out);

    match map.get("items") {
        None if ty == Some("array") => {
            out.push(FieldError::required(
                child_path(path, "items"),
                "must be specified",
            ));
        }
        None => {}
        Some(items @ Value::Object(_)) => {
            structural(items, &child_path(path, "items"), Position::Items, out);
        }
        Some(Value::Array(_)) => out.push(FieldError::forbidden(
            child_path(path, "items"),
            "items must be a schema object and not an array",
        )),
        Some(other) => out.push(FieldError::invalid(
            child_path(path, "items"),
            other,
            "must be a schema object",
        )),
    }

    let mut has_properties = false;
    match map.get("properties") {
        None => {}
        Some(Value::Object(props)) => {
            has_properties = !props.is_empty();
            for (key, prop) in sorted(props) {
                structural(prop, &property_path(path, key), Position::Property, out);
            }
        }
        Some(other) => out.push(FieldError::invalid(
            child_path(path, "properties"),
            other,
            "must be a map of schema objects",
        )),
    }

    let additional_path = child_path(path, "additionalProperties");
    match map.get("additionalProperties") {
        None => {}
        Some(additional) => {
            if position == Position::Root {
                out.push(FieldError::forbidden(
                    &additional_path,
                    "must not be used at the root",
                ));
            }
            if has_properties && additional != &Value::Bool(true) {
                out.push(FieldError::forbidden(
                    &additional_path,
                    "additionalProperties and properties are mutual exclusive",
                ));
            }
            match additional {
                Value::Bool(_) => {}
                Value::Object(_) => {
                    structural(
                        additional,
                        &additional_path,
                        Position::AdditionalProperties,
                        out,
                    );
                }
                other => out.push(FieldError::invalid(
                    &additional_path,
                    other,
                    "must be a boolean or a schema object",
                )),
            }
        }
    }

    check_compositions(map, path, int_or_string, out);
}

fn check_type(
    map: &Map<String, Value>,
    path: &str,
    position: Position,
    untyped_allowed: bool,
    out: &mut Vec<FieldError>,
) {
    let type_path = child_path(path, "type");
    match map.get("type") {
        Some(Value::String(t)) if !t.is_empty() => {
            if !TYPES.contains(&t.as_str()) {
                let supported: Vec<Value> = TYPES.iter().map(|t| Value::from(*t)).collect();
                out.push(FieldError::not_supported(
                    type_path,
                    &Value::from(t.as_str()),
                    &supported,
                ));
            }
        }
        None | Some(Value::String(_)) => {
            let what = match position {
                // The root's own rule (it must be an object) reports this case.
                Position::Root => return,
                Position::Property => "object fields",
                Position::Items => "array items",
                Position::AdditionalProperties => "additionalProperties",
            };
            if !untyped_allowed {
                out.push(FieldError::required(
                    type_path,
                    format!("must not be empty for specified {what}"),
                ));
            }
        }
        Some(other) => out.push(FieldError::invalid(
            type_path,
            other,
            "must be a single type name",
        )),
    }
}

/// The root must describe an object, and its `metadata` may restrict only `name` and
/// `generateName`.
fn check_root(map: &Map<String, Value>, path: &str, out: &mut Vec<FieldError>) {
    let ty = type_of(map);
    if ty != Some("object") {
        out.push(FieldError::invalid(
            child_path(path, "type"),
            &Value::from(ty.unwrap_or("")),
            "must be object at the root",
        ));
    }
    for key in [
        "nullable",
        "x-kubernetes-int-or-string",
        "x-kubernetes-embedded-resource",
    ] {
        if is_true(map, key) {
            out.push(FieldError::invalid(
                child_path(path, key),
                &Value::Bool(true),
                "must be false at the root",
            ));
        }
    }
    let Some(metadata) = map
        .get("properties")
        .and_then(|p| p.get("metadata"))
        .and_then(Value::as_object)
    else {
        return;
    };
    let allowed_field = |key: &str, field: &Value| {
        matches!(key, "name" | "generateName")
            && field.as_object().is_some_and(|f| {
                type_of(f).is_none_or(|t| t == "string")
                    && !f.contains_key("properties")
                    && !f.contains_key("items")
                    && !f.contains_key("default")
            })
    };
    let only_name_restrictions = metadata.iter().all(|(key, v)| match key.as_str() {
        "type" => v.as_str() == Some("object"),
        "description" => true,
        "properties" => v
            .as_object()
            .is_some_and(|props| props.iter().all(|(k, f)| allowed_field(k, f))),
        _ => false,
    });
    if !only_name_restrictions {
        out.push(FieldError::forbidden(
            property_path(path, "metadata"),
            "must not specify anything other than name and generateName, but metadata is implicitly specified",
        ));
    }
}

/// Keywords whose values must have a certain shape, and keywords a CRD may not use at all.
fn check_keywords(map: &Map<String, Value>, path: &str, out: &mut Vec<FieldError>) {
    for keyword in UNSUPPORTED_KEYWORDS {
        if map.contains_key(keyword) {
            out.push(FieldError::forbidden(
                child_path(path, keyword),
                format!("{keyword} is not supported"),
            ));
        }
    }
    for keyword in UNKNOWN_KEYWORDS {
        if map.contains_key(keyword) {
            out.push(FieldError::forbidden(
                child_path(path, keyword),
                "not a CRD schema keyword; the apiserver would drop it",
            ));
        }
    }
    if is_true(map, "uniqueItems") {
        out.push(FieldError::forbidden(
            child_path(path, "uniqueItems"),
            "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
        ));
    }
    for keyword in [
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
    ] {
        if let Some(v) = map.get(keyword)
            && count(Some(v)).is_none()
        {
            out.push(FieldError::invalid(
                child_path(path, keyword),
                v,
                "must be a non-negative integer",
            ));
        }
    }
    for keyword in ["minimum", "maximum"] {
        if let Some(v) = map.get(keyword)
            && !v.is_number()
        {
            out.push(FieldError::invalid(
                child_path(path, keyword),
                v,
                "must be a number",
            ));
        }
    }
    for keyword in ["exclusiveMinimum", "exclusiveMaximum"] {
        if let Some(v) = map.get(keyword)
            && !v.is_boolean()
        {
            out.push(FieldError::invalid(
                child_path(path, keyword),
                v,
                "must be a boolean (OpenAPI v3.0), with the bound in minimum/maximum",
            ));
        }
    }
    if let Some(v) = map.get("multipleOf")
        && !v.as_f64().is_some_and(|f| f > 0.0)
    {
        out.push(FieldError::invalid(
            child_path(path, "multipleOf"),
            v,
            "must be a number greater than zero",
        ));
    }
    match map.get("pattern") {
        None => {}
        Some(Value::String(p)) => {
            if let Err(e) = Pattern::new(p).compiled {
                out.push(FieldError::invalid(
                    child_path(path, "pattern"),
                    &Value::from(p.as_str()),
                    format!("must be a valid regular expression, but isn't: {e}"),
                ));
            }
        }
        Some(other) => out.push(FieldError::invalid(
            child_path(path, "pattern"),
            other,
            "must be a string",
        )),
    }
    if let Some(v) = map.get("enum")
        && !v.is_array()
    {
        out.push(FieldError::invalid(
            child_path(path, "enum"),
            v,
            "must be a list",
        ));
    }
    if let Some(v) = map.get("required")
        && !v.as_array().is_some_and(|r| r.iter().all(Value::is_string))
    {
        out.push(FieldError::invalid(
            child_path(path, "required"),
            v,
            "must be a list of strings",
        ));
    }
}

/// A `default` must survive pruning unchanged and pass its own schema's validation.
fn check_default(node: &Value, map: &Map<String, Value>, path: &str, out: &mut Vec<FieldError>) {
    let Some(default) = map.get("default") else {
        return;
    };
    let schema = Schema::parse(node);
    let mut pruned_copy = default.clone();
    let mut unknown = Vec::new();
    prune(&mut pruned_copy, Some(&schema), "", false, &mut unknown);
    let default_path = child_path(path, "default");
    if !unknown.is_empty() {
        unknown.sort();
        out.push(FieldError::invalid(
            &default_path,
            default,
            format!("must not have unknown fields: {}", unknown.join(", ")),
        ));
    }
    for error in check_value(&pruned_copy, &schema, "default") {
        out.push(FieldError {
            field: child_path(path, &error.field),
            ..error
        });
    }
}

fn check_list_type(map: &Map<String, Value>, path: &str, out: &mut Vec<FieldError>) {
    let list_type_path = child_path(path, "x-kubernetes-list-type");
    let list_type = match map.get("x-kubernetes-list-type") {
        None => None,
        Some(Value::String(t)) if LIST_TYPES.contains(&t.as_str()) => Some(t.as_str()),
        Some(other) => {
            let supported: Vec<Value> = LIST_TYPES.iter().map(|t| Value::from(*t)).collect();
            out.push(FieldError::not_supported(
                &list_type_path,
                other,
                &supported,
            ));
            None
        }
    };
    let keys_path = child_path(path, "x-kubernetes-list-map-keys");
    if list_type != Some("map") && map.contains_key("x-kubernetes-list-map-keys") {
        out.push(FieldError::forbidden(
            &keys_path,
            "must be empty if x-kubernetes-list-type is not map",
        ));
    }
    let Some(list_type) = list_type else {
        return;
    };
    if type_of(map) != Some("array") {
        out.push(FieldError::invalid(
            &list_type_path,
            &Value::from(list_type),
            "must only be used if type is array",
        ));
        return;
    }
    let Some(items) = map.get("items").and_then(Value::as_object) else {
        // Reported as a missing `items` already.
        return;
    };
    let items_path = child_path(path, "items");
    match list_type {
        "set" => check_set_items(items, &items_path, out),
        "map" => check_map_items(map, items, &keys_path, &items_path, out),
        _ => {}
    }
}

/// Items of a set must be scalars or atomic, so that equality is well defined.
fn check_set_items(items: &Map<String, Value>, items_path: &str, out: &mut Vec<FieldError>) {
    let (extension, actual) = match type_of(items) {
        Some("object") => ("x-kubernetes-map-type", items.get("x-kubernetes-map-type")),
        Some("array") => (
            "x-kubernetes-list-type",
            items.get("x-kubernetes-list-type"),
        ),
        _ => return,
    };
    if actual.and_then(Value::as_str) != Some("atomic") {
        out.push(FieldError::invalid(
            child_path(items_path, extension),
            actual.unwrap_or(&Value::Null),
            "must be atomic as item of a list with x-kubernetes-list-type=set",
        ));
    }
}

/// Items of a map list must be objects with scalar key fields that are always present.
fn check_map_items(
    map: &Map<String, Value>,
    items: &Map<String, Value>,
    keys_path: &str,
    items_path: &str,
    out: &mut Vec<FieldError>,
) {
    if type_of(items) != Some("object") {
        out.push(FieldError::invalid(
            child_path(items_path, "type"),
            &Value::from(type_of(items).unwrap_or("")),
            "must be object if parent array's x-kubernetes-list-type is map",
        ));
    }
    let keys: Vec<&str> = map
        .get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array)
        .map(|ks| ks.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if keys.is_empty() {
        out.push(FieldError::required(
            keys_path,
            "must not be empty if x-kubernetes-list-type is map",
        ));
        return;
    }
    let required: Vec<&str> = items
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let properties = items.get("properties").and_then(Value::as_object);
    for key in keys {
        let Some(prop) = properties
            .and_then(|p| p.get(key))
            .and_then(Value::as_object)
        else {
            out.push(FieldError::invalid(
                keys_path,
                &Value::from(key),
                "entries must all be names of item properties",
            ));
            continue;
        };
        let prop_path = property_path(items_path, key);
        if let Some(t) = type_of(prop)
            && !SCALAR_TYPES.contains(&t)
        {
            out.push(FieldError::invalid(
                child_path(&prop_path, "type"),
                &Value::from(t),
                "must be a scalar type if parent array's x-kubernetes-list-type is map",
            ));
        }
        if !required.contains(&key) && !prop.contains_key("default") {
            out.push(FieldError::invalid(
                keys_path,
                &Value::from(key),
                "entries must all be names of required properties or of properties with a default",
            ));
        }
    }
}

/// `x-kubernetes-int-or-string` may come with `anyOf: [{type: integer}, {type: string}]`, possibly
/// wrapped in an `allOf` entry; those branches may name types.
fn is_int_or_string_pair(value: Option<&Value>) -> bool {
    let Some(Value::Array(branches)) = value else {
        return false;
    };
    let types: Vec<Option<&str>> = branches
        .iter()
        .map(|b| b.as_object().and_then(type_of))
        .collect();
    types == [Some("integer"), Some("string")]
}

fn check_compositions(
    map: &Map<String, Value>,
    path: &str,
    int_or_string: bool,
    out: &mut Vec<FieldError>,
) {
    for keyword in COMPOSITIONS {
        let Some(value) = map.get(keyword) else {
            continue;
        };
        let Some(branches) = value.as_array() else {
            out.push(FieldError::invalid(
                child_path(path, keyword),
                value,
                "must be a list of schema objects",
            ));
            continue;
        };
        let typed_branches_allowed =
            int_or_string && keyword == "anyOf" && is_int_or_string_pair(Some(value));
        for (i, branch) in branches.iter().enumerate() {
            let branch_path = index_path(&child_path(path, keyword), i);
            let nested_pair_allowed =
                int_or_string && keyword == "allOf" && is_int_or_string_pair(branch.get("anyOf"));
            value_validation(
                branch,
                &branch_path,
                typed_branches_allowed,
                nested_pair_allowed,
                out,
            );
            completeness(map, branch, path, &branch_path, out);
        }
    }
    if let Some(not) = map.get("not") {
        let not_path = child_path(path, "not");
        value_validation(not, &not_path, false, false, out);
        completeness(map, not, path, &not_path, out);
    }
}

/// A node inside `allOf`/`anyOf`/`oneOf`/`not`: only value validations belong there.
/// `type_allowed` admits a `type` on this node; `pair_allowed` admits the int-or-string `anyOf`
/// pair directly below it.
fn value_validation(
    node: &Value,
    path: &str,
    type_allowed: bool,
    pair_allowed: bool,
    out: &mut Vec<FieldError>,
) {
    let Some(map) = node.as_object() else {
        out.push(FieldError::invalid(path, node, "must be a schema object"));
        return;
    };
    const MUST_BE_EMPTY: &str = "must be empty to be structural";
    const MUST_BE_UNDEFINED: &str = "must be undefined to be structural";
    const MUST_BE_FALSE: &str = "must be false to be structural";
    let mut forbid = |key: &str, detail: &str| {
        out.push(FieldError::forbidden(child_path(path, key), detail));
    };
    if !type_allowed && map.contains_key("type") {
        forbid("type", MUST_BE_EMPTY);
    }
    for key in ["additionalProperties", "default"] {
        if map.contains_key(key) {
            forbid(key, MUST_BE_UNDEFINED);
        }
    }
    for key in ["title", "description"] {
        if map
            .get(key)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        {
            forbid(key, MUST_BE_EMPTY);
        }
    }
    for key in [
        "nullable",
        "x-kubernetes-embedded-resource",
        "x-kubernetes-int-or-string",
    ] {
        if is_true(map, key) {
            forbid(key, MUST_BE_FALSE);
        }
    }
    for key in [
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-map-type",
    ] {
        if map.contains_key(key) {
            forbid(key, MUST_BE_UNDEFINED);
        }
    }
    if map.contains_key("x-kubernetes-validations") {
        forbid("x-kubernetes-validations", MUST_BE_EMPTY);
    }
    check_keywords(map, path, out);

    if let Some(Value::Object(props)) = map.get("properties") {
        for (key, prop) in sorted(props) {
            value_validation(prop, &property_path(path, key), false, false, out);
        }
    }
    if let Some(items) = map.get("items") {
        value_validation(items, &child_path(path, "items"), false, false, out);
    }
    for keyword in COMPOSITIONS {
        if let Some(Value::Array(branches)) = map.get(keyword) {
            let typed = pair_allowed && keyword == "anyOf";
            for (i, branch) in branches.iter().enumerate() {
                value_validation(
                    branch,
                    &index_path(&child_path(path, keyword), i),
                    typed,
                    false,
                    out,
                );
            }
        }
    }
    if let Some(not) = map.get("not") {
        value_validation(not, &child_path(path, "not"), false, false, out);
    }
}

/// Every property and `items` a value validation mentions must also be specified in the
/// structural schema next to it, or pruning would drop what the validation talks about.
fn completeness(
    structural: &Map<String, Value>,
    branch: &Value,
    structural_path: &str,
    branch_path: &str,
    out: &mut Vec<FieldError>,
) {
    let Some(branch_map) = branch.as_object() else {
        return;
    };
    if let Some(Value::Object(props)) = branch_map.get("properties") {
        let declared = structural.get("properties").and_then(Value::as_object);
        let additional = structural
            .get("additionalProperties")
            .and_then(Value::as_object);
        for (key, prop) in sorted(props) {
            let prop_branch_path = property_path(branch_path, key);
            if let Some(s) = declared.and_then(|d| d.get(key)).and_then(Value::as_object) {
                completeness(
                    s,
                    prop,
                    &property_path(structural_path, key),
                    &prop_branch_path,
                    out,
                );
            } else if let Some(s) = additional {
                let additional_path = child_path(structural_path, "additionalProperties");
                completeness(s, prop, &additional_path, &prop_branch_path, out);
            } else {
                out.push(FieldError::required(
                    property_path(structural_path, key),
                    format!("because it is defined in {prop_branch_path}"),
                ));
            }
        }
    }
    if let Some(items) = branch_map.get("items") {
        let items_branch_path = child_path(branch_path, "items");
        match structural.get("items").and_then(Value::as_object) {
            Some(s) => completeness(
                s,
                items,
                &child_path(structural_path, "items"),
                &items_branch_path,
                out,
            ),
            None => out.push(FieldError::required(
                child_path(structural_path, "items"),
                format!("because it is defined in {items_branch_path}"),
            )),
        }
    }
    for keyword in COMPOSITIONS {
        if let Some(Value::Array(nested)) = branch_map.get(keyword) {
            for (i, n) in nested.iter().enumerate() {
                let nested_path = index_path(&child_path(branch_path, keyword), i);
                completeness(structural, n, structural_path, &nested_path, out);
            }
        }
    }
    if let Some(not) = branch_map.get("not") {
        completeness(
            structural,
            not,
            structural_path,
            &child_path(branch_path, "not"),
            out,
        );
    }
}
