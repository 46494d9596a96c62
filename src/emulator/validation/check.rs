//! Validation of a pruned and defaulted object: the OpenAPI value validations (as kube-openapi runs
//! them for the apiserver), embedded resources' `apiVersion`/`kind`, `x-kubernetes-list-type`
//! uniqueness, and the presence of `metadata.name` or `metadata.generateName`.

use std::cmp::Ordering;
use std::collections::HashMap;

use serde_json::{Number, Value};

use super::render::{go_float, go_json, go_quote};
use super::schema::{AdditionalProperties, Bound, Schema};
use super::{FieldError, child_path, index_path};

/// Relative tolerance when checking `multipleOf` on floats, as kube-openapi uses.
const MULTIPLE_OF_EPSILON: f64 = 1e-9;

/// How many (value, schema) pairs one validation may visit. Nested `anyOf`/`oneOf` re-validate the
/// same value once per branch, so a hostile schema could otherwise take exponential time.
const MAX_CHECKS: usize = 1_000_000;

/// `PATH in body`, the subject of kube-openapi's messages (just `in body` at the root).
pub(super) fn in_body(path: &str) -> String {
    if path.is_empty() {
        "in body".to_string()
    } else {
        format!("{path} in body")
    }
}

/// The JSON type name of a value, as kube-openapi names it in type errors. Integers that do not fit
/// an int64 are floats to Go, so they are `number`.
pub(super) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.as_i64().is_some() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `metadata.name: Required value: name or generateName is required` when neither is set.
pub(super) fn name_presence(obj: &Value) -> Option<FieldError> {
    let meta = obj.get("metadata");
    let set = |key: &str| {
        meta.and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    if set("name") || set("generateName") {
        None
    } else {
        Some(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ))
    }
}

/// All validation errors of `obj` against the root schema: schema value validations first, then
/// embedded resources, then list-type uniqueness, in the apiserver's order.
pub(super) fn validate(obj: &Value, root: &Schema) -> Vec<FieldError> {
    check_value(obj, root, "")
}

/// The validation errors of `value` at `path` against `s`, without the resource-level name check
/// (so also usable for a schema's `default`).
pub(super) fn check_value(value: &Value, s: &Schema, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut checker = Checker {
        remaining_steps: MAX_CHECKS,
    };
    checker.check(value, s, path, &mut errors);
    if checker.remaining_steps == 0 {
        errors.push(FieldError::forbidden(
            path,
            format!("validation needs more than {MAX_CHECKS} steps, which is not supported"),
        ));
    }
    let mut embedded = Vec::new();
    let mut lists = Vec::new();
    check_structure(value, s, path, &mut embedded, &mut lists);
    errors.extend(embedded);
    errors.extend(lists);
    errors
}

/// Runs the OpenAPI value validations, with a cap on the work they may do.
struct Checker {
    /// How many more (value, schema) pairs may be visited; at zero, checks stop.
    remaining_steps: usize,
}

impl Checker {
    /// The OpenAPI value validations of `value` against `s`, appended to `out`.
    fn check(&mut self, value: &Value, s: &Schema, path: &str, out: &mut Vec<FieldError>) {
        if self.remaining_steps == 0 {
            return;
        }
        self.remaining_steps -= 1;
        if value.is_null() {
            check_null(s, path, out);
            return;
        }
        check_type(value, s, path, out);
        self.check_composition(value, s, path, out);
        match value {
            Value::String(text) => check_string(value, text, s, path, out),
            Value::Number(n) => check_number(value, n, s, path, out),
            Value::Array(items) => self.check_array(items, s, path, out),
            _ => {}
        }
        if let Some(allowed) = &s.enumeration
            && !allowed.iter().any(|a| loosely_equal(a, value))
        {
            out.push(FieldError::not_supported(path, value, allowed));
        }
        if let Value::Object(map) = value {
            self.check_object(map, s, path, out);
        }
    }

    fn check_branch(&mut self, value: &Value, branch: &Schema, path: &str) -> Vec<FieldError> {
        let mut errors = Vec::new();
        self.check(value, branch, path, &mut errors);
        errors
    }

    fn check_composition(
        &mut self,
        value: &Value,
        s: &Schema,
        path: &str,
        out: &mut Vec<FieldError>,
    ) {
        if !s.any_of.is_empty() {
            let results: Vec<Vec<FieldError>> = s
                .any_of
                .iter()
                .map(|b| self.check_branch(value, b, path))
                .collect();
            if !results.iter().any(Vec::is_empty) {
                out.push(composite_error(
                    path,
                    format!(
                        "{} must validate at least one schema (anyOf)",
                        go_quote(path)
                    ),
                ));
                out.extend(closest_failure(results));
            }
        }
        if !s.one_of.is_empty() {
            let results: Vec<Vec<FieldError>> = s
                .one_of
                .iter()
                .map(|b| self.check_branch(value, b, path))
                .collect();
            let valid = results.iter().filter(|r| r.is_empty()).count();
            if valid != 1 {
                let found = if valid == 0 {
                    "Found none valid".to_string()
                } else {
                    format!("Found {valid} valid alternatives")
                };
                out.push(composite_error(
                    path,
                    format!(
                        "{} must validate one and only one schema (oneOf). {found}",
                        go_quote(path)
                    ),
                ));
                if valid == 0 {
                    out.extend(closest_failure(results));
                }
            }
        }
        if !s.all_of.is_empty() {
            let mut valid = 0;
            let mut merged = Vec::new();
            for branch in &s.all_of {
                let errors = self.check_branch(value, branch, path);
                if errors.is_empty() {
                    valid += 1;
                }
                merged.extend(errors);
            }
            if valid != s.all_of.len() {
                let none = if valid == 0 { ". None validated" } else { "" };
                out.push(composite_error(
                    path,
                    format!(
                        "{} must validate all the schemas (allOf){none}",
                        go_quote(path)
                    ),
                ));
            }
            out.extend(merged);
        }
        if let Some(not) = &s.not
            && self.check_branch(value, not, path).is_empty()
        {
            out.push(composite_error(
                path,
                format!("{} must not validate the schema (not)", go_quote(path)),
            ));
        }
    }

    fn check_array(&mut self, items: &[Value], s: &Schema, path: &str, out: &mut Vec<FieldError>) {
        let len = items.len();
        if let Some(min) = s.min_items
            && (len as u64) < min
        {
            out.push(FieldError::invalid(
                path,
                &Value::from(len),
                format!("{} should have at least {min} items", in_body(path)),
            ));
        }
        if let Some(max) = s.max_items
            && len as u64 > max
        {
            out.push(FieldError::too_many(path, len, max));
        }
        if s.unique_items && !duplicate_indices(items).is_empty() {
            out.push(FieldError::invalid(
                path,
                &Value::String(String::new()),
                format!("{} shouldn't contain duplicates", in_body(path)),
            ));
        }
        if let Some(item_schema) = s.items.as_deref() {
            for (i, item) in items.iter().enumerate() {
                self.check(item, item_schema, &index_path(path, i), out);
            }
        }
    }

    fn check_object(
        &mut self,
        map: &serde_json::Map<String, Value>,
        s: &Schema,
        path: &str,
        out: &mut Vec<FieldError>,
    ) {
        let len = map.len();
        if let Some(max) = s.max_properties
            && len as u64 > max
        {
            out.push(FieldError::too_many(path, len, max));
        }
        if let Some(min) = s.min_properties
            && (len as u64) < min
        {
            out.push(FieldError::invalid(
                path,
                &Value::from(len),
                format!("{} should have at least {min} properties", in_body(path)),
            ));
        }
        for key in &s.required {
            if !map.contains_key(key) {
                out.push(FieldError::required(child_path(path, key), ""));
            }
        }
        for (key, child) in sorted_entries(map) {
            let child_at = child_path(path, key);
            if let Some(prop) = s.properties.get(key) {
                self.check(child, prop, &child_at, out);
                continue;
            }
            match &s.additional_properties {
                AdditionalProperties::Schema(additional) => {
                    self.check(child, additional, &child_at, out)
                }
                AdditionalProperties::Allowed(false) => out.push(FieldError::invalid(
                    path,
                    &Value::String(key.clone()),
                    format!("{} is a forbidden property", in_body(&child_at)),
                )),
                AdditionalProperties::Allowed(true) | AdditionalProperties::Absent => {}
            }
        }
    }
}

/// A null passes a `nullable` schema outright; otherwise it fails `type` and `enum`.
fn check_null(s: &Schema, path: &str, out: &mut Vec<FieldError>) {
    if s.nullable {
        return;
    }
    let types = &s.allowed_types;
    if !types.is_empty() {
        out.push(type_error(path, types, "null"));
    }
    if let Some(allowed) = &s.enumeration
        && !allowed.iter().any(Value::is_null)
    {
        out.push(FieldError::not_supported(path, &Value::Null, allowed));
    }
}

fn type_error(path: &str, types: &[String], actual: &str) -> FieldError {
    FieldError::type_invalid(
        path,
        actual,
        format!(
            "{} must be of type {}: {}",
            in_body(path),
            types.join(","),
            go_quote(actual)
        ),
    )
}

fn check_type(value: &Value, s: &Schema, path: &str, out: &mut Vec<FieldError>) {
    let types = &s.allowed_types;
    if types.is_empty() {
        return;
    }
    let actual = type_name(value);
    let fits = types.iter().any(|t| match (t.as_str(), actual) {
        (t, a) if t == a => true,
        ("number", "integer") => true,
        ("integer", "number") => value.as_f64().is_some_and(is_json_integer),
        _ => false,
    });
    if !fits {
        out.push(type_error(path, types, actual));
    }
}

/// Whether a float is a whole number within the range where float64 holds integers exactly.
fn is_json_integer(f: f64) -> bool {
    const MAX_EXACT: f64 = 9_007_199_254_740_991.0;
    f.is_finite() && f.fract() == 0.0 && f.abs() <= MAX_EXACT
}

/// The composite error kube-openapi reports for `anyOf`/`oneOf`/`allOf`/`not`. The apiserver puts
/// it on the resource root with an empty value; we put it on the path it is about, keeping the text.
fn composite_error(path: &str, message: String) -> FieldError {
    FieldError::invalid(path, &Value::String(String::new()), message)
}

/// The errors of the branch that came closest to passing (fewest errors, first on a tie), which is
/// what kube-openapi shows alongside a failed `anyOf`/`oneOf` so users learn what to fix.
fn closest_failure(results: Vec<Vec<FieldError>>) -> Vec<FieldError> {
    results
        .into_iter()
        .filter(|r| !r.is_empty())
        .min_by_key(Vec::len)
        .unwrap_or_default()
}

fn check_string(value: &Value, text: &str, s: &Schema, path: &str, out: &mut Vec<FieldError>) {
    let length = text.chars().count() as u64;
    if let Some(max) = s.max_length
        && length > max
    {
        out.push(FieldError::too_long(path, max));
    }
    if let Some(min) = s.min_length
        && length < min
    {
        out.push(FieldError::invalid(
            path,
            value,
            format!("{} should be at least {min} chars long", in_body(path)),
        ));
    }
    if let Some(pattern) = &s.pattern {
        match &pattern.compiled {
            Ok(re) if re.is_match(text) => {}
            Ok(_) => out.push(FieldError::invalid(
                path,
                value,
                format!("{} should match '{}'", in_body(path), pattern.source),
            )),
            Err(e) => out.push(FieldError::invalid(
                path,
                &Value::String(String::new()),
                format!(
                    "{} should match '{}, but pattern is invalid: {e}'",
                    in_body(path),
                    pattern.source
                ),
            )),
        }
    }
}

fn check_number(value: &Value, n: &Number, s: &Schema, path: &str, out: &mut Vec<FieldError>) {
    let subject = in_body(path);
    if let Some(factor) = s.multiple_of {
        if factor <= 0.0 || factor.is_nan() {
            out.push(FieldError::invalid(
                path,
                value,
                format!(
                    "factor MultipleOf declared for {path} must be positive: {}",
                    go_float(factor)
                ),
            ));
        } else if !is_multiple_of(n, factor) {
            out.push(FieldError::invalid(
                path,
                value,
                format!("{subject} should be a multiple of {}", go_float(factor)),
            ));
        }
    }
    if let Some(Bound {
        value: max,
        exclusive,
    }) = s.maximum
        && let Some(order) = compare(n, max)
    {
        if exclusive && order != Ordering::Less {
            out.push(FieldError::invalid(
                path,
                value,
                format!("{subject} should be less than {}", go_float(max)),
            ));
        } else if !exclusive && order == Ordering::Greater {
            out.push(FieldError::invalid(
                path,
                value,
                format!(
                    "{subject} should be less than or equal to {}",
                    go_float(max)
                ),
            ));
        }
    }
    if let Some(Bound {
        value: min,
        exclusive,
    }) = s.minimum
        && let Some(order) = compare(n, min)
    {
        if exclusive && order != Ordering::Greater {
            out.push(FieldError::invalid(
                path,
                value,
                format!("{subject} should be greater than {}", go_float(min)),
            ));
        } else if !exclusive && order == Ordering::Less {
            out.push(FieldError::invalid(
                path,
                value,
                format!(
                    "{subject} should be greater than or equal to {}",
                    go_float(min)
                ),
            ));
        }
    }
}

/// An integer exactly, when a number is one that fits.
fn as_integer(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

/// A float bound as an integer, when it is a whole number in range.
fn float_as_integer(f: f64) -> Option<i128> {
    // 2^64 bounds what any JSON integer we hold can reach, so comparisons stay exact.
    (f.fract() == 0.0 && f.abs() < 1.9e19).then_some(f as i128)
}

/// Compares a value to a bound, exactly for integers (floats lose precision above 2^53).
fn compare(n: &Number, bound: f64) -> Option<Ordering> {
    match (as_integer(n), float_as_integer(bound)) {
        (Some(a), Some(b)) => Some(a.cmp(&b)),
        _ => n.as_f64()?.partial_cmp(&bound),
    }
}

fn is_multiple_of(n: &Number, factor: f64) -> bool {
    if let (Some(a), Some(b)) = (as_integer(n), float_as_integer(factor))
        && b != 0
    {
        return a % b == 0;
    }
    let Some(data) = n.as_f64() else {
        return false;
    };
    // Dividing by a factor below one loses precision; multiplying by its inverse does not, which is
    // how kube-openapi does it.
    let quotient = if factor < 1.0 {
        (1.0 / factor) * data
    } else {
        data / factor
    };
    if !quotient.is_finite() {
        return false;
    }
    let nearest = quotient.round();
    quotient == nearest
        || (quotient - nearest).abs() / (quotient.abs() + nearest.abs()) < MULTIPLE_OF_EPSILON
}

/// Entries in key order, so errors come out in the same order whatever map ordering serde_json was
/// built with.
fn sorted_entries(map: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

/// Equality for `enum`: like JSON equality, except that numbers compare by value (kube-openapi
/// converts the value to the enum entry's Go type, so `1` matches `1.0`).
fn loosely_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (as_integer(x), as_integer(y)) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| loosely_equal(x, y))
        }
        (Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .all(|(k, x)| ys.get(k).is_some_and(|y| loosely_equal(x, y)))
        }
        _ => a == b,
    }
}

/// The index of the second occurrence of every value that occurs more than once. Values are
/// compared by their JSON text, as the apiserver does for lists of sets (`1` and `1.0` differ).
fn duplicate_indices(items: &[Value]) -> Vec<usize> {
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(items.len());
    let mut duplicates = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let count = seen.entry(go_json(item)).or_insert(0);
        *count += 1;
        if *count == 2 {
            duplicates.push(i);
        }
    }
    duplicates
}

/// The checks the apiserver runs on the structural schema only (not inside `anyOf` and friends):
/// embedded resources' `apiVersion`/`kind` and `x-kubernetes-list-type` uniqueness.
fn check_structure(
    value: &Value,
    s: &Schema,
    path: &str,
    embedded: &mut Vec<FieldError>,
    lists: &mut Vec<FieldError>,
) {
    match value {
        Value::Object(map) => {
            if s.embedded_resource {
                check_embedded_resource(map, path, embedded);
            }
            for (key, child) in sorted_entries(map) {
                if let Some(child_schema) = s.field(key) {
                    check_structure(child, child_schema, &child_path(path, key), embedded, lists);
                }
            }
        }
        Value::Array(items) => {
            match s.list_type.as_deref() {
                Some("set") => {
                    for i in duplicate_indices(items) {
                        if let Some(item) = items.get(i) {
                            lists.push(FieldError::duplicate(index_path(path, i), item));
                        }
                    }
                }
                Some("map") => check_list_map(items, &s.list_map_keys, path, lists),
                _ => {}
            }
            if let Some(item_schema) = s.items.as_deref() {
                for (i, item) in items.iter().enumerate() {
                    check_structure(item, item_schema, &index_path(path, i), embedded, lists);
                }
            }
        }
        _ => {}
    }
}

fn check_embedded_resource(
    map: &serde_json::Map<String, Value>,
    path: &str,
    out: &mut Vec<FieldError>,
) {
    for key in ["apiVersion", "kind"] {
        let at = child_path(path, key);
        match map.get(key) {
            None => out.push(FieldError::required(at, "must not be empty")),
            Some(Value::String(s)) if s.is_empty() => {
                out.push(FieldError::invalid(
                    at,
                    &Value::String(String::new()),
                    "must not be empty",
                ));
            }
            Some(Value::String(s)) if key == "apiVersion" && s.matches('/').count() > 1 => {
                out.push(FieldError::invalid(
                    at,
                    &Value::String(s.clone()),
                    format!("unexpected GroupVersion string: {s}"),
                ));
            }
            Some(Value::String(_)) => {}
            Some(other) => out.push(FieldError::invalid(at, other, "must be a string")),
        }
    }
}

/// `x-kubernetes-list-type: map`: items must be objects, unique by their key fields.
fn check_list_map(items: &[Value], keys: &[String], path: &str, out: &mut Vec<FieldError>) {
    for (i, item) in items.iter().enumerate() {
        if !item.is_object() && !item.is_null() {
            // The apiserver stops at the first such item.
            out.push(FieldError::invalid(
                index_path(path, i),
                item,
                "must be an object for an array of list-type map",
            ));
            return;
        }
    }
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::Object(fields) = item else {
            continue;
        };
        // A missing key is a value of its own, distinct from null.
        let identity: Vec<String> = keys
            .iter()
            .map(|k| {
                fields
                    .get(k)
                    .map_or_else(|| "\u{0}unset".to_string(), go_json)
            })
            .collect();
        let count = seen.entry(identity.join("\u{0}")).or_insert(0);
        *count += 1;
        if *count == 2 {
            let key_values: serde_json::Map<String, Value> = keys
                .iter()
                .map(|k| (k.clone(), fields.get(k).cloned().unwrap_or(Value::Null)))
                .collect();
            out.push(FieldError::duplicate(
                index_path(path, i),
                &Value::Object(key_values),
            ));
        }
    }
}
