//! Structural-schema handling of custom resources, as kube-apiserver's apiextensions code does it for
//! a CRD version's `openAPIV3Schema`: prune unknown fields, apply defaults, then validate, reporting
//! every problem as a field error worded like the apiserver's.
//!
//! The steps, in the apiserver's order:
//! 1. Integral floats become integers (`3.0` → `3`), as the apiserver's JSON round trip does.
//! 2. Pruning drops fields the schema does not declare, except under
//!    `x-kubernetes-preserve-unknown-fields: true`. `apiVersion`, `kind` and `metadata` are kept at
//!    the root and in `x-kubernetes-embedded-resource` objects.
//! 3. Nulls in fields that are neither `nullable` nor defaulted are dropped.
//! 4. `metadata` (root and embedded) keeps only the ObjectMeta fields, with Go's `omitempty` rules.
//! 5. `default`s fill in missing fields of objects that exist.
//! 6. Validation: `metadata.name`/`generateName` presence, the OpenAPI value validations, embedded
//!    resources' `apiVersion`/`kind`, and `x-kubernetes-list-type` set/map uniqueness.
//!
//! `x-kubernetes-validations` (CEL) rules are not evaluated.
//!
//! Known differences from the apiserver, all deliberate:
//! - `anyOf`/`oneOf`/`allOf`/`not` failures name the field they are about; the apiserver gives them
//!   an empty field (the message text is the same, e.g. `"spec.x" must validate one and only one
//!   schema (oneOf). Found none valid`).
//! - With such a failure, the closest branch's errors are the branch with the fewest errors
//!   (kube-openapi picks the one with the most passing checks; for `required`-only branches, as CRDs
//!   use them, that is the same branch).
//! - A null in a `nullable` field passes even if `enum` does not list null.
//! - `format` never rejects a value of the declared type (the apiserver checks some string formats
//!   such as `date-time`).
//! - `pattern` uses Rust's `regex`, which is RE2-like, but whose `\d`, `\w` and `\s` also match
//!   non-ASCII characters.
//! - A malformed `metadata` field is reported on that field with our own wording; the apiserver
//!   fails the whole request body with a decode error.
//! - Objects nested deeper than [`MAX_OBJECT_DEPTH`], schemas deeper than [`MAX_SCHEMA_DEPTH`] and
//!   validations needing more than a million steps are refused with a `Forbidden` error.

mod check;
mod defaults;
mod prune;
mod render;
mod schema;
mod structural;

use serde_json::{Number, Value, json};

use self::schema::Schema;

/// Objects nested deeper than this are refused rather than walked; real resources are far shallower,
/// and the bound keeps every recursive step here from exhausting the stack.
pub const MAX_OBJECT_DEPTH: usize = 128;

/// Schemas nested deeper than this are refused; each object level costs a schema two JSON levels
/// (`properties` and the field name).
pub const MAX_SCHEMA_DEPTH: usize = 2 * MAX_OBJECT_DEPTH + 16;

/// One field error, in the apiserver's vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct FieldError {
    /// The path of the offending field, e.g. `spec.strategy.canary.steps[2].setWeight`.
    pub field: String,
    /// What kind of problem it is.
    pub kind: FieldErrorKind,
    /// The offending value as the apiserver prints it (`-1`, `"Foo"`, `{"name":"a"}`), or `None` when
    /// the apiserver leaves it out of the message.
    pub value: Option<String>,
    /// The detail after the value, e.g. `spec.replicas in body should be greater than or equal to 0`.
    pub message: String,
}

/// The kinds of field error, matching the apiserver's `field.ErrorType`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldErrorKind {
    /// A required field is missing.
    Required,
    /// A value is not acceptable.
    Invalid,
    /// A value is not one of an enumeration.
    NotSupported,
    /// A value has the wrong JSON type.
    TypeInvalid,
    /// A string is longer than allowed.
    TooLong,
    /// A list or map has more entries than allowed.
    TooMany,
    /// A value repeats where values must be unique.
    Duplicate,
    /// A field or construct may not be used (here: nesting or work beyond what is supported).
    Forbidden,
}

impl FieldErrorKind {
    /// The words the apiserver starts the error body with.
    pub fn label(self) -> &'static str {
        match self {
            Self::Required => "Required value",
            Self::Invalid | Self::TypeInvalid => "Invalid value",
            Self::NotSupported => "Unsupported value",
            Self::TooLong => "Too long",
            Self::TooMany => "Too many",
            Self::Duplicate => "Duplicate value",
            Self::Forbidden => "Forbidden",
        }
    }

    /// The StatusCause `reason` string.
    pub fn cause_reason(self) -> &'static str {
        match self {
            Self::Required => "FieldValueRequired",
            Self::Invalid => "FieldValueInvalid",
            Self::NotSupported => "FieldValueNotSupported",
            Self::TypeInvalid => "FieldValueTypeInvalid",
            Self::TooLong => "FieldValueTooLong",
            Self::TooMany => "FieldValueTooMany",
            Self::Duplicate => "FieldValueDuplicate",
            Self::Forbidden => "FieldValueForbidden",
        }
    }
}

impl FieldError {
    fn new(
        field: impl Into<String>,
        kind: FieldErrorKind,
        value: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            kind,
            value,
            message: message.into(),
        }
    }

    /// `field: Required value[: detail]`.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(field, FieldErrorKind::Required, None, detail)
    }

    /// `field: Invalid value: VALUE: detail`.
    pub fn invalid(field: impl Into<String>, value: &Value, detail: impl Into<String>) -> Self {
        let value = Some(render::bad_value(value));
        Self::new(field, FieldErrorKind::Invalid, value, detail)
    }

    /// `field: Invalid value: "TYPE": detail`, where TYPE is the JSON type the value has.
    pub fn type_invalid(
        field: impl Into<String>,
        actual_type: &str,
        detail: impl Into<String>,
    ) -> Self {
        let value = Some(render::go_quote(actual_type));
        Self::new(field, FieldErrorKind::TypeInvalid, value, detail)
    }

    /// `field: Unsupported value: VALUE: supported values: "a", "b"`.
    pub fn not_supported(field: impl Into<String>, value: &Value, supported: &[Value]) -> Self {
        let quoted: Vec<String> = supported
            .iter()
            .map(|v| match v {
                Value::String(s) => render::go_quote(s),
                other => render::go_quote(&render::go_json(other)),
            })
            .collect();
        let detail = if quoted.is_empty() {
            String::new()
        } else {
            format!("supported values: {}", quoted.join(", "))
        };
        let value = Some(render::bad_value(value));
        Self::new(field, FieldErrorKind::NotSupported, value, detail)
    }

    /// `field: Too long: may not be more than N bytes` (the apiserver's wording, although CRD
    /// `maxLength` counts characters).
    pub fn too_long(field: impl Into<String>, max: u64) -> Self {
        let unit = if max == 1 { "byte" } else { "bytes" };
        let detail = format!("may not be more than {max} {unit}");
        Self::new(field, FieldErrorKind::TooLong, None, detail)
    }

    /// `field: Too many: ACTUAL: must have at most N items`.
    pub fn too_many(field: impl Into<String>, actual: usize, max: u64) -> Self {
        let unit = if max == 1 { "item" } else { "items" };
        let detail = format!("must have at most {max} {unit}");
        Self::new(
            field,
            FieldErrorKind::TooMany,
            Some(actual.to_string()),
            detail,
        )
    }

    /// `field: Duplicate value: VALUE`.
    pub fn duplicate(field: impl Into<String>, value: &Value) -> Self {
        let value = Some(render::bad_value(value));
        Self::new(field, FieldErrorKind::Duplicate, value, "")
    }

    /// `field: Forbidden: detail`.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(field, FieldErrorKind::Forbidden, None, detail)
    }

    /// The StatusCause "reason" string: FieldValueRequired, FieldValueInvalid, FieldValueNotSupported,
    /// FieldValueTypeInvalid, FieldValueTooLong, FieldValueTooMany, FieldValueDuplicate,
    /// FieldValueForbidden.
    pub fn cause_reason(&self) -> &'static str {
        self.kind.cause_reason()
    }

    /// The error without its field path, e.g. `Required value`. This is what the apiserver puts in
    /// a StatusCause's `message`, next to the path in `field`.
    pub fn body(&self) -> String {
        let mut body = self.kind.label().to_string();
        if let Some(value) = &self.value {
            body.push_str(": ");
            body.push_str(value);
        }
        if !self.message.is_empty() {
            body.push_str(": ");
            body.push_str(&self.message);
        }
        body
    }

    /// The StatusCause object for this error: `{"reason", "message", "field"}`.
    pub fn to_cause(&self) -> Value {
        json!({"reason": self.cause_reason(), "message": self.body(), "field": self.field})
    }

    fn render(&self) -> String {
        if self.field.is_empty() {
            self.body()
        } else {
            format!("{}: {}", self.field, self.body())
        }
    }
}

/// What validation did besides erroring.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The sorted paths of the unknown fields that were pruned, e.g. `spec.foo` or `metadata.bar`:
    /// for the `Warning` header (`unknown field "spec.foo"`) or a strict field validation error.
    pub pruned: Vec<String>,
}

/// Default, prune and validate `obj` (a whole custom resource) in place against `schema` (the
/// version's openAPIV3Schema). apiVersion/kind/metadata are handled as the apiserver does: metadata is
/// not pruned beyond its standard fields, and only metadata.name/generateName presence is checked
/// here.
///
/// This reads `schema` on every call; [`StructuralSchema`] reads it once for many objects.
/// On error `obj` may already be partly pruned and defaulted; callers reject the request anyway.
pub fn validate_object(schema: &Value, obj: &mut Value) -> Result<Outcome, Vec<FieldError>> {
    StructuralSchema::new(schema)
        .map_err(|e| vec![e])?
        .validate_object(obj)
}

/// A CRD version's `openAPIV3Schema`, read once (patterns compiled) to validate many objects.
#[derive(Debug, Clone)]
pub struct StructuralSchema {
    root: Schema,
}

impl StructuralSchema {
    /// Reads `schema`. Fails only when it nests deeper than [`MAX_SCHEMA_DEPTH`]; anything else it
    /// cannot make sense of is ignored here and reported by [`structural_violations`].
    pub fn new(schema: &Value) -> Result<Self, FieldError> {
        if let Some(error) = schema_too_deep(schema) {
            return Err(error);
        }
        Ok(Self {
            root: Schema::parse(schema),
        })
    }

    /// Prunes, defaults and validates `obj` in place, exactly as [`validate_object`] does.
    pub fn validate_object(&self, obj: &mut Value) -> Result<Outcome, Vec<FieldError>> {
        if let Some(path) = first_path_deeper_than(obj, MAX_OBJECT_DEPTH) {
            return Err(vec![FieldError::forbidden(
                path,
                format!("nesting deeper than {MAX_OBJECT_DEPTH} levels is not supported"),
            )]);
        }
        if !obj.is_object() {
            let actual = check::type_name(obj);
            return Err(vec![FieldError::type_invalid(
                "",
                actual,
                format!(
                    "{} must be of type object: {}",
                    check::in_body(""),
                    render::go_quote(actual)
                ),
            )]);
        }
        let root = &self.root;

        normalize_integral_floats(obj);
        let mut pruned = Vec::new();
        prune::prune(obj, Some(root), "", true, &mut pruned);
        defaults::prune_nulls(obj, Some(root));
        let mut errors = prune::coerce_metadata(obj, root, "", true, &mut pruned);
        defaults::apply(obj, root);

        errors.extend(check::name_presence(obj));
        errors.extend(check::validate(obj, root));

        pruned.sort();
        pruned.dedup();
        // The apiserver's error aggregate shows each distinct message once.
        let mut unique: Vec<FieldError> = Vec::with_capacity(errors.len());
        for error in errors {
            if !unique.contains(&error) {
                unique.push(error);
            }
        }
        if unique.is_empty() {
            Ok(Outcome { pruned })
        } else {
            Err(unique)
        }
    }
}

/// Check that a CRD version schema is structural enough for us to serve (every property has a type
/// unless x-kubernetes-int-or-string or x-kubernetes-preserve-unknown-fields; value validations in
/// oneOf/anyOf/allOf/not don't declare types). Returns human-readable violations, empty when fine.
///
/// Violations are worded like the apiserver's CRD validation, with paths rooted at
/// `openAPIV3Schema` (e.g. `openAPIV3Schema.properties[spec].type: Required value: must not be
/// empty for specified object fields`).
pub fn structural_violations(schema: &Value) -> Vec<String> {
    if let Some(error) = schema_too_deep(schema) {
        return vec![error.to_string()];
    }
    structural::violations(schema)
        .into_iter()
        .map(|e| e.to_string())
        .collect()
}

/// The error for a schema nested deeper than [`MAX_SCHEMA_DEPTH`], if it is.
fn schema_too_deep(schema: &Value) -> Option<FieldError> {
    let path = first_path_deeper_than(schema, MAX_SCHEMA_DEPTH)?;
    Some(FieldError::forbidden(
        child_path(structural::ROOT, &path),
        format!("the schema nests deeper than {MAX_SCHEMA_DEPTH} levels, which is not supported"),
    ))
}

/// `path.key`, or `key` at the root.
pub(super) fn child_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `path[index]`.
pub(super) fn index_path(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

/// The path of the first container nested more than `limit` levels deep, if any. Iterative, so it
/// is safe on any input.
fn first_path_deeper_than(value: &Value, limit: usize) -> Option<String> {
    enum Children<'a> {
        Object(serde_json::map::Iter<'a>),
        Array(std::iter::Enumerate<std::slice::Iter<'a, Value>>),
    }
    enum Step<'a> {
        Key(&'a str),
        Index(usize),
    }
    fn children(value: &Value) -> Option<Children<'_>> {
        match value {
            Value::Object(map) => Some(Children::Object(map.iter())),
            Value::Array(items) => Some(Children::Array(items.iter().enumerate())),
            _ => None,
        }
    }
    // Each frame holds the path of a container and an iterator over its children.
    let mut stack: Vec<(String, Children<'_>)> = Vec::new();
    if let Some(c) = children(value) {
        stack.push((String::new(), c));
    }
    while let Some((path, iter)) = stack.last_mut() {
        let next = match iter {
            Children::Object(it) => it.next().map(|(key, v)| (Step::Key(key), v)),
            Children::Array(it) => it.next().map(|(i, v)| (Step::Index(i), v)),
        };
        let Some((step, child)) = next else {
            stack.pop();
            continue;
        };
        // Paths are built only for containers; scalars are most of an object.
        if let Some(grandchildren) = children(child) {
            let child_at = match step {
                Step::Key(key) => child_path(path, key),
                Step::Index(i) => index_path(path, i),
            };
            if stack.len() >= limit {
                return Some(child_at);
            }
            stack.push((child_at, grandchildren));
        }
    }
    None
}

/// Rewrites floats with no fraction as integers: the apiserver decodes `3.0` as float64 3 and
/// encodes it back as `3`, which clients deserializing into integer types rely on.
fn normalize_integral_floats(value: &mut Value) {
    // Integers up to 2^53 are exact in a float64; beyond, Go would print digits that no longer
    // decode as the same value, so those are left as they are.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match value {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() <= EXACT
            {
                *n = Number::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize_integral_floats),
        Value::Object(map) => map.values_mut().for_each(normalize_integral_floats),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A root schema whose `spec` is described by `spec`.
    fn with_spec(spec: Value) -> Value {
        json!({"type": "object", "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
        }})
    }

    fn resource(spec: Value) -> Value {
        json!({"apiVersion": "weir.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "r"}, "spec": spec})
    }

    /// The rendered errors of validating a resource with `spec` against a schema for `spec`.
    fn spec_errors(spec_schema: &Value, spec: &Value) -> Vec<String> {
        let mut obj = resource(spec.clone());
        match validate_object(&with_spec(spec_schema.clone()), &mut obj) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn keyword_table() {
        struct Case {
            name: &'static str,
            schema: Value,
            spec: Value,
            want: &'static [&'static str],
        }
        let int_field = |extra: Value| {
            let mut field = json!({"type": "integer"});
            if let (Some(f), Some(e)) = (field.as_object_mut(), extra.as_object()) {
                f.extend(e.clone());
            }
            json!({"type": "object", "properties": {"n": field}})
        };
        let string_field = |extra: Value| {
            let mut field = json!({"type": "string"});
            if let (Some(f), Some(e)) = (field.as_object_mut(), extra.as_object()) {
                f.extend(e.clone());
            }
            json!({"type": "object", "properties": {"s": field}})
        };
        let cases = vec![
            Case {
                name: "integer given a string",
                schema: json!({"type": "object", "properties": {"replicas": {"type": "integer"}}}),
                spec: json!({"replicas": "string"}),
                want: &[
                    r#"spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string""#,
                ],
            },
            Case {
                name: "integer given a whole float",
                schema: int_field(json!({})),
                spec: json!({"n": 3.0}),
                want: &[],
            },
            Case {
                name: "integer given a fraction",
                schema: int_field(json!({})),
                spec: json!({"n": 3.5}),
                want: &[
                    r#"spec.n: Invalid value: "number": spec.n in body must be of type integer: "number""#,
                ],
            },
            Case {
                name: "integer too large for int64 is a number to the apiserver",
                schema: int_field(json!({})),
                spec: json!({"n": u64::MAX}),
                want: &[
                    r#"spec.n: Invalid value: "number": spec.n in body must be of type integer: "number""#,
                ],
            },
            Case {
                name: "number accepts integers",
                schema: json!({"type": "object", "properties": {"x": {"type": "number"}}}),
                spec: json!({"x": 3}),
                want: &[],
            },
            Case {
                name: "boolean given a string",
                schema: json!({"type": "object", "properties": {"b": {"type": "boolean"}}}),
                spec: json!({"b": "true"}),
                want: &[
                    r#"spec.b: Invalid value: "string": spec.b in body must be of type boolean: "string""#,
                ],
            },
            Case {
                name: "object given a list, list given an object",
                schema: json!({"type": "object", "properties": {"o": {"type": "object"}, "l": {"type": "array", "items": {"type": "string"}}}}),
                spec: json!({"o": [], "l": {}}),
                want: &[
                    r#"spec.l: Invalid value: "object": spec.l in body must be of type array: "object""#,
                    r#"spec.o: Invalid value: "array": spec.o in body must be of type object: "array""#,
                ],
            },
            Case {
                name: "null list item that is not nullable",
                schema: json!({"type": "object", "properties": {"l": {"type": "array", "items": {"type": "string"}}}}),
                spec: json!({"l": ["a", null]}),
                want: &[
                    r#"spec.l[1]: Invalid value: "null": spec.l[1] in body must be of type string: "null""#,
                ],
            },
            Case {
                name: "nullable accepts null",
                schema: json!({"type": "object", "properties": {"l": {"type": "array", "items": {"type": "string", "nullable": true, "enum": ["a"]}}}}),
                spec: json!({"l": ["a", null]}),
                want: &[],
            },
            Case {
                name: "int-or-string",
                schema: json!({"type": "object", "properties": {"m": {"x-kubernetes-int-or-string": true}}}),
                spec: json!({"m": true}),
                want: &[
                    r#"spec.m: Invalid value: "boolean": spec.m in body must be of type integer,string: "boolean""#,
                ],
            },
            Case {
                name: "int-or-string accepts both",
                schema: json!({"type": "object", "properties": {"a": {"x-kubernetes-int-or-string": true}, "b": {"x-kubernetes-int-or-string": true}}}),
                spec: json!({"a": 1, "b": "25%"}),
                want: &[],
            },
            Case {
                name: "int-or-string with the anyOf pair reports the closest branch too",
                schema: json!({"type": "object", "properties": {"m": {"x-kubernetes-int-or-string": true,
                    "anyOf": [{"type": "integer"}, {"type": "string"}]}}}),
                spec: json!({"m": 1.5}),
                want: &[
                    r#"spec.m: Invalid value: "number": spec.m in body must be of type integer,string: "number""#,
                    r#"spec.m: Invalid value: "": "spec.m" must validate at least one schema (anyOf)"#,
                    r#"spec.m: Invalid value: "number": spec.m in body must be of type integer: "number""#,
                ],
            },
            Case {
                name: "enum of strings",
                schema: json!({"type": "object", "properties": {"strategy": {"type": "object", "properties": {
                    "type": {"type": "string", "enum": ["Canary", "BlueGreen"]}}}}}),
                spec: json!({"strategy": {"type": "Foo"}}),
                want: &[
                    r#"spec.strategy.type: Unsupported value: "Foo": supported values: "Canary", "BlueGreen""#,
                ],
            },
            Case {
                name: "enum of numbers, with a type error as well",
                schema: int_field(json!({"enum": [1, 2]})),
                spec: json!({"n": "x"}),
                want: &[
                    r#"spec.n: Invalid value: "string": spec.n in body must be of type integer: "string""#,
                    r#"spec.n: Unsupported value: "x": supported values: "1", "2""#,
                ],
            },
            Case {
                name: "enum compares numbers by value",
                schema: json!({"type": "object", "properties": {"x": {"type": "number", "enum": [1.5, 2]}}}),
                spec: json!({"x": 2.0}),
                want: &[],
            },
            Case {
                name: "minimum",
                schema: json!({"type": "object", "properties": {"replicas": {"type": "integer", "minimum": 0}}}),
                spec: json!({"replicas": -1}),
                want: &[
                    "spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0",
                ],
            },
            Case {
                name: "exclusive minimum",
                schema: int_field(json!({"minimum": 0, "exclusiveMinimum": true})),
                spec: json!({"n": 0}),
                want: &["spec.n: Invalid value: 0: spec.n in body should be greater than 0"],
            },
            Case {
                name: "maximum",
                schema: int_field(json!({"maximum": 100})),
                spec: json!({"n": 101}),
                want: &[
                    "spec.n: Invalid value: 101: spec.n in body should be less than or equal to 100",
                ],
            },
            Case {
                name: "exclusive maximum",
                schema: int_field(json!({"maximum": 100, "exclusiveMaximum": true})),
                spec: json!({"n": 100}),
                want: &["spec.n: Invalid value: 100: spec.n in body should be less than 100"],
            },
            Case {
                name: "bounds print like Go floats",
                schema: json!({"type": "object", "properties": {"x": {"type": "number", "minimum": 0.5, "maximum": 1000000}}}),
                spec: json!({"x": 0.25}),
                want: &[
                    "spec.x: Invalid value: 0.25: spec.x in body should be greater than or equal to 0.5",
                ],
            },
            Case {
                name: "large maximum",
                schema: int_field(json!({"maximum": 1000000})),
                spec: json!({"n": 2000000}),
                want: &[
                    "spec.n: Invalid value: 2000000: spec.n in body should be less than or equal to 1e+06",
                ],
            },
            Case {
                name: "integer bounds compare exactly beyond 2^53",
                schema: int_field(json!({"maximum": 9007199254740992_i64})),
                spec: json!({"n": 9007199254740993_i64}),
                want: &[
                    "spec.n: Invalid value: 9007199254740993: spec.n in body should be less than or equal to 9.007199254740992e+15",
                ],
            },
            Case {
                name: "multipleOf integer",
                schema: int_field(json!({"multipleOf": 5})),
                spec: json!({"n": 7}),
                want: &["spec.n: Invalid value: 7: spec.n in body should be a multiple of 5"],
            },
            Case {
                name: "multipleOf float within tolerance",
                schema: json!({"type": "object", "properties": {"x": {"type": "number", "multipleOf": 0.1}}}),
                spec: json!({"x": 0.3}),
                want: &[],
            },
            Case {
                name: "multipleOf float",
                schema: json!({"type": "object", "properties": {"x": {"type": "number", "multipleOf": 0.1}}}),
                spec: json!({"x": 0.35}),
                want: &["spec.x: Invalid value: 0.35: spec.x in body should be a multiple of 0.1"],
            },
            Case {
                name: "multipleOf must be positive",
                schema: int_field(json!({"multipleOf": 0})),
                spec: json!({"n": 4}),
                want: &[
                    "spec.n: Invalid value: 4: factor MultipleOf declared for spec.n must be positive: 0",
                ],
            },
            Case {
                name: "minLength",
                schema: string_field(json!({"minLength": 3})),
                spec: json!({"s": "ab"}),
                want: &[
                    r#"spec.s: Invalid value: "ab": spec.s in body should be at least 3 chars long"#,
                ],
            },
            Case {
                name: "maxLength counts characters, not bytes",
                schema: string_field(json!({"maxLength": 5})),
                spec: json!({"s": "héllo"}),
                want: &[],
            },
            Case {
                name: "maxLength",
                schema: string_field(json!({"maxLength": 3})),
                spec: json!({"s": "toolong"}),
                want: &["spec.s: Too long: may not be more than 3 bytes"],
            },
            Case {
                name: "maxLength of one",
                schema: string_field(json!({"maxLength": 1})),
                spec: json!({"s": "ab"}),
                want: &["spec.s: Too long: may not be more than 1 byte"],
            },
            Case {
                name: "pattern",
                schema: string_field(json!({"pattern": "^[0-9]+(s|m|h)$"})),
                spec: json!({"s": "5x"}),
                want: &[
                    r#"spec.s: Invalid value: "5x": spec.s in body should match '^[0-9]+(s|m|h)$'"#,
                ],
            },
            Case {
                name: "pattern is searched, not anchored",
                schema: string_field(json!({"pattern": "[0-9]"})),
                spec: json!({"s": "abc1def"}),
                want: &[],
            },
            Case {
                name: "invalid pattern",
                schema: string_field(json!({"pattern": "("})),
                spec: json!({"s": "abc"}),
                want: &[
                    r#"spec.s: Invalid value: "": spec.s in body should match '(, but pattern is invalid: error parsing regexp: unclosed group'"#,
                ],
            },
            Case {
                name: "minItems",
                schema: json!({"type": "object", "properties": {"steps": {"type": "array", "minItems": 1, "items": {"type": "object"}}}}),
                spec: json!({"steps": []}),
                want: &[
                    "spec.steps: Invalid value: 0: spec.steps in body should have at least 1 items",
                ],
            },
            Case {
                name: "maxItems",
                schema: json!({"type": "object", "properties": {"steps": {"type": "array", "maxItems": 2, "items": {"type": "integer"}}}}),
                spec: json!({"steps": [1, 2, 3]}),
                want: &["spec.steps: Too many: 3: must have at most 2 items"],
            },
            Case {
                name: "uniqueItems",
                schema: json!({"type": "object", "properties": {"l": {"type": "array", "uniqueItems": true, "items": {"type": "string"}}}}),
                spec: json!({"l": ["a", "b", "a"]}),
                want: &[
                    r#"spec.l: Invalid value: "": spec.l in body shouldn't contain duplicates"#,
                ],
            },
            Case {
                name: "minProperties",
                schema: json!({"type": "object", "properties": {"m": {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string"}}}}),
                spec: json!({"m": {}}),
                want: &[
                    "spec.m: Invalid value: 0: spec.m in body should have at least 1 properties",
                ],
            },
            Case {
                name: "maxProperties",
                schema: json!({"type": "object", "properties": {"m": {"type": "object", "maxProperties": 1, "additionalProperties": {"type": "string"}}}}),
                spec: json!({"m": {"a": "1", "b": "2"}}),
                want: &["spec.m: Too many: 2: must have at most 1 item"],
            },
            Case {
                name: "required",
                schema: json!({"type": "object", "required": ["selector", "template"], "properties": {
                    "selector": {"type": "object"}, "template": {"type": "object"}}}),
                spec: json!({"template": {}}),
                want: &["spec.selector: Required value"],
            },
            Case {
                name: "additionalProperties false",
                schema: json!({"type": "object", "properties": {"m": {"type": "object", "additionalProperties": false}}}),
                spec: json!({"m": {"x": 1}}),
                want: &[r#"spec.m: Invalid value: "x": spec.m.x in body is a forbidden property"#],
            },
            Case {
                name: "additionalProperties schema",
                schema: json!({"type": "object", "properties": {"m": {"type": "object", "additionalProperties": {"type": "integer"}}}}),
                spec: json!({"m": {"a": "1", "b": 2}}),
                want: &[
                    r#"spec.m.a: Invalid value: "string": spec.m.a in body must be of type integer: "string""#,
                ],
            },
            Case {
                name: "anyOf reports the closest branch",
                schema: json!({"type": "object", "properties": {"o": {"type": "object",
                    "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                    "anyOf": [{"required": ["a"]}, {"required": ["b"]}]}}}),
                spec: json!({"o": {}}),
                want: &[
                    r#"spec.o: Invalid value: "": "spec.o" must validate at least one schema (anyOf)"#,
                    "spec.o.a: Required value",
                ],
            },
            Case {
                name: "allOf with one branch failing",
                schema: json!({"type": "object", "properties": {"o": {"type": "object",
                    "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                    "allOf": [{"required": ["a"]}, {"required": ["b"]}]}}}),
                spec: json!({"o": {"a": "x"}}),
                want: &[
                    r#"spec.o: Invalid value: "": "spec.o" must validate all the schemas (allOf)"#,
                    "spec.o.b: Required value",
                ],
            },
            Case {
                name: "allOf with no branch passing",
                schema: json!({"type": "object", "properties": {"o": {"type": "object",
                    "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                    "allOf": [{"required": ["a"]}, {"required": ["b"]}]}}}),
                spec: json!({"o": {}}),
                want: &[
                    r#"spec.o: Invalid value: "": "spec.o" must validate all the schemas (allOf). None validated"#,
                    "spec.o.a: Required value",
                    "spec.o.b: Required value",
                ],
            },
            Case {
                name: "not",
                schema: json!({"type": "object", "properties": {"o": {"type": "object",
                    "properties": {"a": {"type": "string"}}, "not": {"required": ["a"]}}}}),
                spec: json!({"o": {"a": "x"}}),
                want: &[
                    r#"spec.o: Invalid value: "": "spec.o" must not validate the schema (not)"#,
                ],
            },
            Case {
                name: "value validations inside anyOf branches apply",
                schema: json!({"type": "object", "properties": {"o": {"type": "object",
                    "properties": {"a": {"type": "integer"}},
                    "anyOf": [{"properties": {"a": {"minimum": 10}}}, {"properties": {"a": {"maximum": 0}}}]}}}),
                spec: json!({"o": {"a": 5}}),
                want: &[
                    r#"spec.o: Invalid value: "": "spec.o" must validate at least one schema (anyOf)"#,
                    "spec.o.a: Invalid value: 5: spec.o.a in body should be greater than or equal to 10",
                ],
            },
            Case {
                name: "list-type set",
                schema: json!({"type": "object", "properties": {"l": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}}}),
                spec: json!({"l": ["a", "b", "a", "a", "b"]}),
                want: &[
                    r#"spec.l[2]: Duplicate value: "a""#,
                    r#"spec.l[4]: Duplicate value: "b""#,
                ],
            },
            Case {
                name: "list-type map",
                schema: json!({"type": "object", "properties": {"ports": {"type": "array", "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                    "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}}}}),
                spec: json!({"ports": [{"name": "a", "port": 1}, {"name": "b"}, {"name": "a", "port": 2}]}),
                want: &[r#"spec.ports[2]: Duplicate value: {"name":"a"}"#],
            },
            Case {
                name: "list-type map with two keys",
                schema: json!({"type": "object", "properties": {"ports": {"type": "array", "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["port", "protocol"],
                    "items": {"type": "object", "properties": {"port": {"type": "integer"}, "protocol": {"type": "string", "default": "TCP"}}}}}}),
                spec: json!({"ports": [{"port": 80}, {"port": 80, "protocol": "UDP"}, {"port": 80, "protocol": "TCP"}]}),
                want: &[r#"spec.ports[2]: Duplicate value: {"port":80,"protocol":"TCP"}"#],
            },
            Case {
                name: "list-type map needs objects",
                schema: json!({"type": "object", "properties": {"l": {"type": "array", "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"], "items": {"type": "object", "properties": {"name": {"type": "string"}}}}}}),
                spec: json!({"l": ["x", "y"]}),
                want: &[
                    r#"spec.l[0]: Invalid value: "string": spec.l[0] in body must be of type object: "string""#,
                    r#"spec.l[1]: Invalid value: "string": spec.l[1] in body must be of type object: "string""#,
                    r#"spec.l[0]: Invalid value: "x": must be an object for an array of list-type map"#,
                ],
            },
            Case {
                name: "embedded resource needs apiVersion and kind",
                schema: json!({"type": "object", "properties": {"t": {"type": "object", "x-kubernetes-embedded-resource": true,
                    "x-kubernetes-preserve-unknown-fields": true}}}),
                spec: json!({"t": {"metadata": {"name": "x"}}}),
                want: &[
                    "spec.t.apiVersion: Required value: must not be empty",
                    "spec.t.kind: Required value: must not be empty",
                ],
            },
            Case {
                name: "embedded resource apiVersion must parse",
                schema: json!({"type": "object", "properties": {"t": {"type": "object", "x-kubernetes-embedded-resource": true,
                    "x-kubernetes-preserve-unknown-fields": true}}}),
                spec: json!({"t": {"apiVersion": "a/b/c", "kind": ""}}),
                want: &[
                    r#"spec.t.apiVersion: Invalid value: "a/b/c": unexpected GroupVersion string: a/b/c"#,
                    r#"spec.t.kind: Invalid value: "": must not be empty"#,
                ],
            },
            Case {
                name: "x-kubernetes-validations are ignored",
                schema: json!({"type": "object", "properties": {"a": {"type": "integer"}},
                    "x-kubernetes-validations": [{"rule": "self.a > 100"}]}),
                spec: json!({"a": 1}),
                want: &[],
            },
            Case {
                name: "formats do not reject well-typed values",
                schema: json!({"type": "object", "properties": {
                    "a": {"type": "integer", "format": "int32"}, "b": {"type": "string", "format": "date-time"},
                    "c": {"type": "string", "format": "duration"}, "d": {"type": "string", "format": "byte"},
                    "e": {"type": "integer", "format": "int64"}}}),
                spec: json!({"a": 5_000_000_000_i64, "b": "yesterday", "c": "5m", "d": "!!", "e": 1}),
                want: &[],
            },
            Case {
                name: "formats still need the declared type",
                schema: json!({"type": "object", "properties": {"a": {"type": "integer", "format": "int32"}}}),
                spec: json!({"a": "1"}),
                want: &[
                    r#"spec.a: Invalid value: "string": spec.a in body must be of type integer: "string""#,
                ],
            },
        ];
        for case in cases {
            let got = spec_errors(&case.schema, &case.spec);
            assert_eq!(got, case.want, "case {:?}", case.name);
        }
    }

    fn steps_schema() -> Value {
        json!({"type": "object", "properties": {"strategy": {"type": "object", "properties": {"canary": {"type": "object", "properties": {
            "steps": {"type": "array", "items": {
                "type": "object",
                "properties": {
                    "setWeight": {"type": "integer", "minimum": 0, "maximum": 100},
                    "pause": {"type": "object", "properties": {"duration": {"type": "string"}}},
                },
                "oneOf": [{"required": ["setWeight"]}, {"required": ["pause"]}],
            }},
        }}}}}})
    }

    #[test]
    fn one_of_means_exactly_one() {
        let cases: Vec<(&str, Value, Vec<&str>)> = vec![
            (
                "each step has exactly one",
                json!([{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}]),
                vec![],
            ),
            (
                "a step with both",
                json!([{"setWeight": 20, "pause": {"duration": "1m"}}]),
                vec![
                    r#"spec.strategy.canary.steps[0]: Invalid value: "": "spec.strategy.canary.steps[0]" must validate one and only one schema (oneOf). Found 2 valid alternatives"#,
                ],
            ),
            (
                "a step with neither (an unknown field was pruned)",
                json!([{"setWieght": 20}]),
                vec![
                    r#"spec.strategy.canary.steps[0]: Invalid value: "": "spec.strategy.canary.steps[0]" must validate one and only one schema (oneOf). Found none valid"#,
                    "spec.strategy.canary.steps[0].setWeight: Required value",
                ],
            ),
            (
                "all errors are reported, with full paths",
                json!([{"setWeight": 20}, {"pause": {}}, {"setWeight": 120}, {"pause": "1m"}]),
                vec![
                    "spec.strategy.canary.steps[2].setWeight: Invalid value: 120: spec.strategy.canary.steps[2].setWeight in body should be less than or equal to 100",
                    r#"spec.strategy.canary.steps[3].pause: Invalid value: "string": spec.strategy.canary.steps[3].pause in body must be of type object: "string""#,
                ],
            ),
        ];
        for (name, steps, want) in cases {
            let got = spec_errors(
                &steps_schema(),
                &json!({"strategy": {"canary": {"steps": steps}}}),
            );
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn pruning_reports_unknown_fields() {
        let schema = with_spec(json!({"type": "object", "properties": {
            "replicas": {"type": "integer"},
            "template": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
        }}));
        let mut obj = json!({
            "apiVersion": "weir.io/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "r", "labels": {"a": "b"}, "colour": "blue"},
            "spec": {"replicas": 2, "foo": 1, "template": {"anything": {"goes": true}}},
            "status": {"phase": "Healthy"},
        });
        let outcome = validate_object(&schema, &mut obj).unwrap();
        assert_eq!(outcome.pruned, ["metadata.colour", "spec.foo", "status"]);
        assert_eq!(
            obj,
            json!({
                "apiVersion": "weir.io/v1alpha1", "kind": "Rollout",
                "metadata": {"name": "r", "labels": {"a": "b"}},
                "spec": {"replicas": 2, "template": {"anything": {"goes": true}}},
            })
        );
    }

    #[test]
    fn metadata_is_kept_whatever_the_schema_says() {
        let schema = json!({"type": "object", "properties": {
            "metadata": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 5}}},
        }});
        let mut obj = json!({"apiVersion": "a/v1", "kind": "K", "metadata": {"name": "abc", "namespace": "ns", "labels": {"x": "y"}}});
        let outcome = validate_object(&schema, &mut obj).unwrap();
        assert!(outcome.pruned.is_empty());
        assert_eq!(
            obj["metadata"],
            json!({"name": "abc", "namespace": "ns", "labels": {"x": "y"}})
        );

        let mut long = json!({"metadata": {"name": "abcdefg"}});
        let errors = validate_object(&schema, &mut long).unwrap_err();
        assert_eq!(errors, [FieldError::too_long("metadata.name", 5)]);
    }

    #[test]
    fn defaults_apply_before_validation() {
        let schema = with_spec(
            json!({"type": "object", "required": ["replicas"], "properties": {
                "replicas": {"type": "integer", "default": 1, "minimum": 0},
                "strategy": {"type": "object", "default": {}, "properties": {
                    "canary": {"type": "object", "properties": {"maxSurge": {"x-kubernetes-int-or-string": true, "default": "25%"}}},
                    "type": {"type": "string", "default": "Canary"},
                }},
            }}),
        );
        let mut obj = resource(json!({}));
        validate_object(&schema, &mut obj).unwrap();
        assert_eq!(
            obj["spec"],
            json!({"replicas": 1, "strategy": {"type": "Canary"}})
        );

        let mut with_canary = resource(json!({"strategy": {"canary": {}}}));
        validate_object(&schema, &mut with_canary).unwrap();
        assert_eq!(
            with_canary["spec"],
            json!({"replicas": 1, "strategy": {"type": "Canary", "canary": {"maxSurge": "25%"}}})
        );
    }

    #[test]
    fn name_or_generate_name_is_required() {
        let schema = json!({"type": "object"});
        let cases = [
            (json!({"metadata": {"name": "a"}}), None),
            (json!({"metadata": {"generateName": "a-"}}), None),
            (
                json!({"metadata": {"name": ""}}),
                Some("metadata.name: Required value: name or generateName is required"),
            ),
            (
                json!({"metadata": {}}),
                Some("metadata.name: Required value: name or generateName is required"),
            ),
            (
                json!({}),
                Some("metadata.name: Required value: name or generateName is required"),
            ),
        ];
        for (input, want) in cases {
            let mut obj = input.clone();
            let got = validate_object(&schema, &mut obj).err().map(|errors| {
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            assert_eq!(got.as_deref(), want, "{input}");
        }
    }

    #[test]
    fn integral_floats_become_integers() {
        let schema =
            with_spec(json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
        let mut obj =
            resource(json!({"replicas": 3.0, "weight": 2.5, "nested": [1.0, {"x": -0.0}]}));
        validate_object(&schema, &mut obj).unwrap();
        assert_eq!(
            serde_json::to_string(&obj["spec"]).unwrap(),
            r#"{"nested":[1,{"x":0}],"replicas":3,"weight":2.5}"#.replace(
                r#"{"nested":[1,{"x":0}],"replicas":3,"weight":2.5}"#,
                &serde_json::to_string(
                    &json!({"nested": [1, {"x": 0}], "replicas": 3, "weight": 2.5})
                )
                .unwrap()
            )
        );
    }

    #[test]
    fn hostile_input_is_an_error_not_a_panic() {
        // An object nested far deeper than any resource.
        let nest = |inner: Value, key: &str| {
            let mut map = serde_json::Map::new();
            map.insert(key.to_string(), inner);
            Value::Object(map)
        };
        let mut deep = json!("leaf");
        for _ in 0..5_000 {
            deep = nest(deep, "a");
        }
        let mut obj = json!({"metadata": {"name": "x"}});
        if let Some(map) = obj.as_object_mut() {
            map.insert("spec".to_string(), deep);
        }
        let errors = validate_object(&json!({"type": "object"}), &mut obj).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].kind, FieldErrorKind::Forbidden);
        assert!(
            errors[0].field.starts_with("spec.a.a."),
            "{}",
            errors[0].field
        );
        // Dropping a deep value recurses in serde_json; keep it off this test's stack.
        std::mem::forget(obj);

        let mut deep_schema = json!({"type": "object"});
        for _ in 0..5_000 {
            deep_schema = nest(deep_schema, "not");
        }
        let errors =
            validate_object(&deep_schema, &mut json!({"metadata": {"name": "x"}})).unwrap_err();
        assert_eq!(errors[0].kind, FieldErrorKind::Forbidden);
        assert_eq!(structural_violations(&deep_schema).len(), 1);
        std::mem::forget(deep_schema);

        let odd_inputs = [
            (json!(null), json!({})),
            (
                json!("schema"),
                json!({"metadata": {"name": "x"}, "spec": 1}),
            ),
            (
                json!({"type": "object", "properties": {"n": {"type": "integer", "maximum": 1e308, "multipleOf": 1e-300}}}),
                json!({"metadata": {"name": "x"}, "n": i64::MIN}),
            ),
            (
                json!({"type": "object", "properties": {"s": {"type": "string", "maxLength": u64::MAX, "minLength": u64::MAX}}}),
                json!({"metadata": {"name": "x"}, "s": ""}),
            ),
            (
                json!({"properties": {"l": {"items": {"x-kubernetes-list-type": "map"}, "x-kubernetes-list-type": "map"}}}),
                json!({"metadata": {"name": "x"}, "l": [{}, {}, null, 1]}),
            ),
        ];
        for (schema, input) in odd_inputs {
            let mut obj = input;
            let _ = validate_object(&schema, &mut obj);
            let _ = structural_violations(&schema);
        }
        let errors = validate_object(&json!({"type": "object"}), &mut json!([1])).unwrap_err();
        assert_eq!(
            errors[0].to_string(),
            r#"Invalid value: "array": in body must be of type object: "array""#
        );
    }

    #[test]
    fn parsed_schema_validates_many_objects() {
        let schema = StructuralSchema::new(&with_spec(json!({"type": "object", "properties": {
            "replicas": {"type": "integer", "minimum": 0, "default": 1},
        }})))
        .unwrap();
        let cases = [
            (json!({}), Ok(json!({"replicas": 1}))),
            (json!({"replicas": 4, "x": 1}), Ok(json!({"replicas": 4}))),
            (
                json!({"replicas": -2}),
                Err(vec!["spec.replicas: Invalid value: -2: spec.replicas in body should be greater than or equal to 0".to_string()]),
            ),
        ];
        for (spec, want) in cases {
            let mut obj = resource(spec.clone());
            let got = schema
                .validate_object(&mut obj)
                .map(|_| obj["spec"].clone())
                .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>());
            assert_eq!(got, want, "{spec}");
        }
    }

    #[test]
    fn validation_work_is_capped() {
        // 1500 items × 1000 anyOf branches is more checking than any real resource needs.
        let branches: Vec<Value> = (0..1000)
            .map(|i| json!({"required": [format!("k{i}")]}))
            .collect();
        let schema =
            with_spec(json!({"type": "array", "items": {"type": "object", "anyOf": branches}}));
        let items: Vec<Value> = (0..1500).map(|_| json!({})).collect();
        let mut obj = resource(Value::Array(items));
        let errors = validate_object(&schema, &mut obj).unwrap_err();
        assert_eq!(
            errors.last().map(ToString::to_string).as_deref(),
            Some("Forbidden: validation needs more than 1000000 steps, which is not supported")
        );
    }

    #[test]
    fn nesting_up_to_the_limits_is_validated() {
        let nest = |inner: Value, key: &str| {
            let mut map = serde_json::Map::new();
            map.insert(key.to_string(), inner);
            Value::Object(map)
        };
        // An object MAX_OBJECT_DEPTH deep (the root counts), described all the way down.
        let mut value = json!({"n": -1});
        let mut schema =
            json!({"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}});
        for _ in 0..MAX_OBJECT_DEPTH - 3 {
            value = nest(value, "a");
            schema = json!({"type": "object", "properties": {"a": schema}});
        }
        let mut obj = json!({"metadata": {"name": "x"}, "spec": value});
        let schema = json!({"type": "object", "properties": {"metadata": {"type": "object"}, "spec": schema}});
        let errors = validate_object(&schema, &mut obj).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0]
                .message
                .ends_with("should be greater than or equal to 0"),
            "{}",
            errors[0]
        );
        assert_eq!(errors[0].field.matches(".a").count(), MAX_OBJECT_DEPTH - 3);

        // A chain of `not`s as deep as a schema may be.
        let mut chain = json!({"required": ["x"]});
        for _ in 0..MAX_SCHEMA_DEPTH - 2 {
            chain = nest(chain, "not");
        }
        let mut obj = json!({"metadata": {"name": "x"}});
        let errors = validate_object(&chain, &mut obj).unwrap_err();
        assert_eq!(
            errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [r#"Invalid value: "": "" must not validate the schema (not)"#]
        );
        assert!(!structural_violations(&chain).is_empty());
    }

    #[test]
    fn error_rendering_table() {
        let cases = [
            (
                FieldError::required("spec.selector", ""),
                "spec.selector: Required value",
                "FieldValueRequired",
            ),
            (
                FieldError::invalid(
                    "spec.replicas",
                    &json!(-1),
                    "spec.replicas in body should be greater than or equal to 0",
                ),
                "spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0",
                "FieldValueInvalid",
            ),
            (
                FieldError::not_supported(
                    "spec.strategy.type",
                    &json!("Foo"),
                    &[json!("Canary"), json!("BlueGreen")],
                ),
                r#"spec.strategy.type: Unsupported value: "Foo": supported values: "Canary", "BlueGreen""#,
                "FieldValueNotSupported",
            ),
            (
                FieldError::type_invalid(
                    "spec.replicas",
                    "string",
                    r#"spec.replicas in body must be of type integer: "string""#,
                ),
                r#"spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string""#,
                "FieldValueTypeInvalid",
            ),
            (
                FieldError::too_long("spec.name", 63),
                "spec.name: Too long: may not be more than 63 bytes",
                "FieldValueTooLong",
            ),
            (
                FieldError::too_many("spec.steps", 5, 3),
                "spec.steps: Too many: 5: must have at most 3 items",
                "FieldValueTooMany",
            ),
            (
                FieldError::duplicate("spec.l[1]", &json!({"name": "a"})),
                r#"spec.l[1]: Duplicate value: {"name":"a"}"#,
                "FieldValueDuplicate",
            ),
            (
                FieldError::forbidden("spec.x", "not allowed"),
                "spec.x: Forbidden: not allowed",
                "FieldValueForbidden",
            ),
        ];
        for (error, display, reason) in cases {
            assert_eq!(error.to_string(), display);
            assert_eq!(error.cause_reason(), reason);
            assert_eq!(
                error.to_cause(),
                json!({"reason": reason, "message": error.body(), "field": error.field})
            );
            assert_eq!(format!("{}: {}", error.field, error.body()), display);
        }
    }

    #[test]
    fn errors_are_not_repeated() {
        // The same branch errors can come from two compositions; the apiserver's aggregate shows
        // each message once.
        let schema = json!({"type": "object", "properties": {"o": {"type": "object", "properties": {"a": {"type": "string"}},
            "allOf": [{"required": ["a"]}], "anyOf": [{"required": ["a"]}]}}});
        let mut obj = json!({"metadata": {"name": "x"}, "o": {}});
        let errors: Vec<String> = validate_object(&schema, &mut obj)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors,
            [
                r#"o: Invalid value: "": "o" must validate at least one schema (anyOf)"#,
                "o.a: Required value",
                r#"o: Invalid value: "": "o" must validate all the schemas (allOf). None validated"#,
            ]
        );
    }

    #[test]
    fn structural_violations_table() {
        let cases: Vec<(&str, Value, Vec<&str>)> = vec![
            (
                "a typical structural schema",
                with_spec(json!({"type": "object", "properties": {
                    "replicas": {"type": "integer", "format": "int32", "default": 1, "minimum": 0},
                    "maxSurge": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
                    "wrapped": {"x-kubernetes-int-or-string": true, "allOf": [{"anyOf": [{"type": "integer"}, {"type": "string"}]}]},
                    "template": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "steps": {"type": "array", "items": {"type": "object",
                        "properties": {"setWeight": {"type": "integer"}, "pause": {"type": "object"}},
                        "oneOf": [{"required": ["setWeight"]}, {"required": ["pause"]}]}},
                    "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                        "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}},
                    "embedded": {"type": "object", "x-kubernetes-embedded-resource": true, "x-kubernetes-preserve-unknown-fields": true},
                }})),
                vec![],
            ),
            (
                "untyped fields",
                with_spec(json!({"type": "object", "properties": {
                    "a": {"description": "no type"},
                    "l": {"type": "array", "items": {}},
                    "m": {"type": "object", "additionalProperties": {"minLength": 1}},
                }})),
                vec![
                    "openAPIV3Schema.properties[spec].properties[a].type: Required value: must not be empty for specified object fields",
                    "openAPIV3Schema.properties[spec].properties[l].items.type: Required value: must not be empty for specified array items",
                    "openAPIV3Schema.properties[spec].properties[m].additionalProperties.type: Required value: must not be empty for specified additionalProperties",
                ],
            ),
            (
                "types in value validations",
                with_spec(
                    json!({"type": "object", "properties": {"a": {"type": "string"}},
                    "oneOf": [{"type": "object", "required": ["a"], "nullable": true}],
                    "anyOf": [{"properties": {"a": {"type": "string", "default": "x"}}}]}),
                ),
                vec![
                    "openAPIV3Schema.properties[spec].anyOf[0].properties[a].type: Forbidden: must be empty to be structural",
                    "openAPIV3Schema.properties[spec].anyOf[0].properties[a].default: Forbidden: must be undefined to be structural",
                    "openAPIV3Schema.properties[spec].oneOf[0].type: Forbidden: must be empty to be structural",
                    "openAPIV3Schema.properties[spec].oneOf[0].nullable: Forbidden: must be false to be structural",
                ],
            ),
            (
                "value validations naming unspecified fields",
                with_spec(
                    json!({"type": "object", "properties": {"a": {"type": "string"}},
                    "not": {"properties": {"b": {"minLength": 1}}}}),
                ),
                vec![
                    "openAPIV3Schema.properties[spec].properties[b]: Required value: because it is defined in openAPIV3Schema.properties[spec].not.properties[b]",
                ],
            ),
            (
                "root rules",
                json!({"type": "array", "items": {"type": "string"}, "nullable": true}),
                vec![
                    r#"openAPIV3Schema.type: Invalid value: "array": must be object at the root"#,
                    "openAPIV3Schema.nullable: Invalid value: true: must be false at the root",
                ],
            ),
            (
                "metadata restrictions beyond name",
                json!({"type": "object", "properties": {"metadata": {"type": "object", "properties": {
                    "name": {"type": "string", "maxLength": 63}, "labels": {"type": "object"}}}}}),
                vec![
                    "openAPIV3Schema.properties[metadata]: Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified",
                ],
            ),
            (
                "bad keywords",
                with_spec(json!({"type": "object", "properties": {
                    "a": {"type": "strin"},
                    "b": {"type": "string", "pattern": "(", "maxLength": -1},
                    "c": {"type": "integer", "minimum": 0, "exclusiveMinimum": 0, "multipleOf": 0},
                    "d": {"type": "array"},
                    "e": {"type": "array", "items": [{"type": "string"}], "uniqueItems": true},
                    "f": {"$ref": "#/definitions/x", "type": "object"},
                    "g": {"type": "object", "properties": {"x": {"type": "string"}}, "additionalProperties": false},
                    "h": {"type": "string", "x-kubernetes-preserve-unknown-fields": false, "x-kubernetes-int-or-string": true},
                    "i": {"type": "string", "x-kubernetes-embedded-resource": true},
                    "j": {"type": "string", "const": "x"},
                }})),
                vec![
                    r#"openAPIV3Schema.properties[spec].properties[a].type: Unsupported value: "strin": supported values: "array", "boolean", "integer", "number", "object", "string""#,
                    r#"openAPIV3Schema.properties[spec].properties[b].maxLength: Invalid value: -1: must be a non-negative integer"#,
                    r#"openAPIV3Schema.properties[spec].properties[b].pattern: Invalid value: "(": must be a valid regular expression, but isn't: error parsing regexp: unclosed group"#,
                    "openAPIV3Schema.properties[spec].properties[c].exclusiveMinimum: Invalid value: 0: must be a boolean (OpenAPI v3.0), with the bound in minimum/maximum",
                    "openAPIV3Schema.properties[spec].properties[c].multipleOf: Invalid value: 0: must be a number greater than zero",
                    "openAPIV3Schema.properties[spec].properties[d].items: Required value: must be specified",
                    "openAPIV3Schema.properties[spec].properties[e].uniqueItems: Forbidden: uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
                    "openAPIV3Schema.properties[spec].properties[e].items: Forbidden: items must be a schema object and not an array",
                    "openAPIV3Schema.properties[spec].properties[f].$ref: Forbidden: $ref is not supported",
                    "openAPIV3Schema.properties[spec].properties[g].additionalProperties: Forbidden: additionalProperties and properties are mutual exclusive",
                    r#"openAPIV3Schema.properties[spec].properties[h].type: Invalid value: "string": must be empty if x-kubernetes-int-or-string is true"#,
                    "openAPIV3Schema.properties[spec].properties[h].x-kubernetes-preserve-unknown-fields: Invalid value: false: must be true or undefined",
                    r#"openAPIV3Schema.properties[spec].properties[i].type: Invalid value: "string": must be object if x-kubernetes-embedded-resource is true"#,
                    "openAPIV3Schema.properties[spec].properties[i].properties: Required value: must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields",
                    "openAPIV3Schema.properties[spec].properties[j].const: Forbidden: not a CRD schema keyword; the apiserver would drop it",
                ],
            ),
            (
                "defaults must be valid and pruned",
                with_spec(json!({"type": "object", "properties": {
                    "a": {"type": "integer", "minimum": 1, "default": 0},
                    "b": {"type": "object", "properties": {"x": {"type": "string"}}, "default": {"x": "1", "y": 2}},
                    "c": {"type": "string", "default": 5},
                }})),
                vec![
                    "openAPIV3Schema.properties[spec].properties[a].default: Invalid value: 0: default in body should be greater than or equal to 1",
                    r#"openAPIV3Schema.properties[spec].properties[b].default: Invalid value: {"x":"1","y":2}: must not have unknown fields: y"#,
                    r#"openAPIV3Schema.properties[spec].properties[c].default: Invalid value: "integer": default in body must be of type string: "integer""#,
                ],
            ),
            (
                "list types",
                with_spec(json!({"type": "object", "properties": {
                    "a": {"type": "array", "x-kubernetes-list-type": "bag", "items": {"type": "string"}},
                    "b": {"type": "string", "x-kubernetes-list-type": "set"},
                    "c": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "object"}},
                    "d": {"type": "array", "x-kubernetes-list-type": "map", "items": {"type": "object", "properties": {"k": {"type": "string"}}}},
                    "e": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["k", "z"],
                        "items": {"type": "object", "properties": {"k": {"type": "object"}}}},
                    "f": {"type": "array", "x-kubernetes-list-map-keys": ["k"], "items": {"type": "string"}},
                }})),
                vec![
                    r#"openAPIV3Schema.properties[spec].properties[a].x-kubernetes-list-type: Unsupported value: "bag": supported values: "atomic", "set", "map""#,
                    r#"openAPIV3Schema.properties[spec].properties[b].x-kubernetes-list-type: Invalid value: "set": must only be used if type is array"#,
                    "openAPIV3Schema.properties[spec].properties[c].items.x-kubernetes-map-type: Invalid value: null: must be atomic as item of a list with x-kubernetes-list-type=set",
                    "openAPIV3Schema.properties[spec].properties[d].x-kubernetes-list-map-keys: Required value: must not be empty if x-kubernetes-list-type is map",
                    r#"openAPIV3Schema.properties[spec].properties[e].items.properties[k].type: Invalid value: "object": must be a scalar type if parent array's x-kubernetes-list-type is map"#,
                    r#"openAPIV3Schema.properties[spec].properties[e].x-kubernetes-list-map-keys: Invalid value: "k": entries must all be names of required properties or of properties with a default"#,
                    r#"openAPIV3Schema.properties[spec].properties[e].x-kubernetes-list-map-keys: Invalid value: "z": entries must all be names of item properties"#,
                    "openAPIV3Schema.properties[spec].properties[f].x-kubernetes-list-map-keys: Forbidden: must be empty if x-kubernetes-list-type is not map",
                ],
            ),
        ];
        for (name, schema, want) in cases {
            assert_eq!(structural_violations(&schema), want, "{name}");
        }
    }
}
