//! Strategic merge patch and server-side apply, as a kube-apiserver performs them, on `serde_json::Value`.
//!
//! The emulator's HTTP handlers call [`strategic_merge`] for `application/strategic-merge-patch+json`,
//! [`server_side_apply`] for `application/apply-patch+yaml`, and [`record_update`] after every other write so
//! that `metadata.managedFields` stays truthful. Merge behaviour comes from a [`MergeSchema`]: a built-in table
//! for core kinds, or the `x-kubernetes-*` extensions of a CRD's OpenAPI v3 schema.
//!
//! Nothing here refers to the rest of weir, so the module can move between crates unchanged.

mod apply;
mod field_set;
mod list_types;
mod managed_fields;
mod strategic;
mod typed_value;

pub use apply::{record_update, server_side_apply};
pub use field_set::{FieldSet, PathElement};
pub use list_types::{ListType, MergeSchema, PatchStrategy};
pub use strategic::strategic_merge;

use serde_json::{Map, Value, json};

/// One field that an apply would take from another manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldConflict {
    /// Name of the manager that owns the field now.
    pub manager: String,
    /// Operation of the owning managedFields entry: `Apply` or `Update`.
    pub operation: String,
    /// `apiVersion` recorded in the owning entry.
    pub api_version: String,
    /// Subresource the owner wrote through (`status`, `scale`), if any.
    pub subresource: Option<String>,
    /// The contested field, written as the apiserver writes it, e.g. `.spec.replicas`.
    pub field: String,
}

impl FieldConflict {
    /// The owner as the apiserver names it in conflict messages, e.g. `"kubectl" using apps/v1`.
    pub fn manager_description(&self) -> String {
        let mut text = go_quote(&self.manager);
        if let Some(subresource) = &self.subresource {
            text.push_str(" with subresource ");
            text.push_str(&go_quote(subresource));
        }
        // Appliers are identified without a version, updaters with one (as in the manager identifier).
        if self.operation == "Update" {
            text.push_str(" using ");
            text.push_str(&self.api_version);
        }
        text
    }

    /// Sort key that groups conflicts by owner the way the apiserver orders them (by manager identifier).
    fn owner_identifier(&self) -> String {
        let mut id = Map::new();
        id.insert("manager".into(), Value::String(self.manager.clone()));
        id.insert("operation".into(), Value::String(self.operation.clone()));
        if self.operation == "Update" {
            id.insert("apiVersion".into(), Value::String(self.api_version.clone()));
        }
        if let Some(subresource) = &self.subresource {
            id.insert("subresource".into(), Value::String(subresource.clone()));
        }
        canonical_json(&Value::Object(id))
    }
}

/// One entry of `details.causes` in a Kubernetes `Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCause {
    /// Machine-readable reason, e.g. `FieldManagerConflict`.
    pub reason: String,
    /// Human-readable description.
    pub message: String,
    /// The field the cause is about, e.g. `.spec.replicas`.
    pub field: String,
}

impl StatusCause {
    /// The cause as it appears in `details.causes`.
    pub fn into_json(self) -> Value {
        json!({"reason": self.reason, "message": self.message, "field": self.field})
    }
}

/// The parts of a Kubernetes `Status` the emulator's error type needs.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusParts {
    /// HTTP status code.
    pub code: u16,
    /// `Status.message`.
    pub message: String,
    /// `Status.details.causes`, already in their JSON form.
    pub causes: Vec<Value>,
}

/// Why a patch or apply was refused. Each variant maps onto a Kubernetes `Status` (see [`MergeError::to_status`]).
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// 409: the apply would change fields other managers own. Retry with `force` to take them over.
    #[error("{}", conflict_message(.conflicts))]
    Conflict {
        /// Every contested field with its current owner.
        conflicts: Vec<FieldConflict>,
    },
    /// 422: the patch is well-formed JSON but cannot be applied (unknown directive, list item without its merge
    /// key, lists of lists ...).
    #[error("{message}")]
    Invalid {
        /// The apiserver's wording of the problem.
        message: String,
    },
    /// 400: the request body is not a patch of the expected shape (bad directive format, non-object patch,
    /// applied configuration that does not fit the schema).
    #[error("{message}")]
    BadRequest {
        /// The apiserver's wording of the problem.
        message: String,
    },
}

impl MergeError {
    /// HTTP status code the apiserver answers with.
    pub fn code(&self) -> u16 {
        match self {
            MergeError::Conflict { .. } => 409,
            MergeError::Invalid { .. } => 422,
            MergeError::BadRequest { .. } => 400,
        }
    }

    /// `Status.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            MergeError::Conflict { .. } => "Conflict",
            MergeError::Invalid { .. } => "Invalid",
            MergeError::BadRequest { .. } => "BadRequest",
        }
    }

    /// `Status.details.causes`: one `FieldManagerConflict` per contested field; empty for other errors.
    pub fn causes(&self) -> Vec<StatusCause> {
        match self {
            MergeError::Conflict { conflicts } => sorted_conflicts(conflicts)
                .into_iter()
                .map(|conflict| StatusCause {
                    reason: "FieldManagerConflict".into(),
                    message: format!("conflict with {}", conflict.manager_description()),
                    field: conflict.field.clone(),
                })
                .collect(),
            MergeError::Invalid { .. } | MergeError::BadRequest { .. } => Vec::new(),
        }
    }

    /// Code, message and causes for a `Status` body. `_api_version` (the served resource's version) is not
    /// needed: every conflict already names the version its owner wrote with.
    pub fn to_status_parts(&self, _api_version: &str) -> StatusParts {
        StatusParts {
            code: self.code(),
            message: self.to_string(),
            causes: self
                .causes()
                .into_iter()
                .map(StatusCause::into_json)
                .collect(),
        }
    }

    /// The complete `Status` object (kind `Status`, apiVersion `v1`) to send as the response body.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code(),
        });
        let causes = self.causes();
        if !causes.is_empty()
            && let Some(body) = status.as_object_mut()
        {
            let causes: Vec<Value> = causes.into_iter().map(StatusCause::into_json).collect();
            body.insert("details".into(), json!({ "causes": causes }));
        }
        status
    }

    fn invalid(message: impl Into<String>) -> MergeError {
        MergeError::Invalid {
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> MergeError {
        MergeError::BadRequest {
            message: message.into(),
        }
    }
}

/// Conflicts grouped by owner, in the apiserver's order (owners sorted by identifier, fields in path order).
fn sorted_conflicts(conflicts: &[FieldConflict]) -> Vec<&FieldConflict> {
    let mut sorted: Vec<&FieldConflict> = conflicts.iter().collect();
    sorted.sort_by_cached_key(|conflict| conflict.owner_identifier());
    sorted
}

/// The apiserver's conflict message: one line for a single conflict, a per-manager list otherwise.
fn conflict_message(conflicts: &[FieldConflict]) -> String {
    let sorted = sorted_conflicts(conflicts);
    if let [only] = sorted.as_slice() {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            only.manager_description(),
            only.field
        );
    }
    let mut lines: Vec<String> = Vec::new();
    let mut current_owner: Option<String> = None;
    for conflict in sorted {
        let owner = conflict.owner_identifier();
        if current_owner.as_deref() != Some(owner.as_str()) {
            lines.push(format!(
                "conflicts with {}:",
                conflict.manager_description()
            ));
            current_owner = Some(owner);
        }
        lines.push(format!("- {}", conflict.field));
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// JSON text with object keys sorted and integral floats written as integers, so equal values (as the
/// apiserver compares them) always print the same. Used for `k:`/`v:` path elements.
fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(number) => {
            if let Some(i) = number.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = number.as_u64() {
                out.push_str(&u.to_string());
            } else {
                match number.as_f64() {
                    // 2^53: beyond it an f64 no longer holds every integer exactly.
                    Some(f)
                        if f.is_finite()
                            && f.fract() == 0.0
                            && f.abs() < 9_007_199_254_740_992.0 =>
                    {
                        out.push_str(&format!("{f:.0}"));
                    }
                    _ => out.push_str(&number.to_string()),
                }
            }
        }
        Value::String(s) => write_json_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(key, out);
                out.push(':');
                if let Some(item) = map.get(key) {
                    write_canonical(item, out);
                }
            }
            out.push('}');
        }
    }
}

fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A string quoted the way Go's `%q` prints it (for the ASCII text managers and fields use).
fn go_quote(s: &str) -> String {
    let mut out = String::new();
    write_json_string(s, &mut out);
    out
}

/// Deep equality in which numbers compare by value, as decoded JSON does in the apiserver (`80` equals `80.0`).
fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(x), Some(y)) => x == y,
                _ => x.as_f64() == y.as_f64(),
            },
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| values_equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, a)| y.get(key).is_some_and(|b| values_equal(a, b)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conflict(
        manager: &str,
        operation: &str,
        subresource: Option<&str>,
        field: &str,
    ) -> FieldConflict {
        FieldConflict {
            manager: manager.into(),
            operation: operation.into(),
            api_version: "apps/v1".into(),
            subresource: subresource.map(str::to_string),
            field: field.into(),
        }
    }

    #[test]
    fn conflict_messages_use_apiserver_wording() {
        let cases: Vec<(Vec<FieldConflict>, &str)> = vec![
            (
                vec![conflict(
                    "kubectl-client-side-apply",
                    "Update",
                    None,
                    ".spec.replicas",
                )],
                "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas",
            ),
            (
                vec![conflict("weir", "Apply", None, ".spec.replicas")],
                "Apply failed with 1 conflict: conflict with \"weir\": .spec.replicas",
            ),
            (
                vec![conflict(
                    "kubectl",
                    "Update",
                    Some("scale"),
                    ".spec.replicas",
                )],
                "Apply failed with 1 conflict: conflict with \"kubectl\" with subresource \"scale\" using apps/v1: .spec.replicas",
            ),
            (
                vec![
                    conflict("b", "Apply", None, ".spec.paused"),
                    conflict("a", "Update", None, ".spec.replicas"),
                    conflict("a", "Update", None, ".metadata.labels.app"),
                ],
                "Apply failed with 3 conflicts: conflicts with \"a\" using apps/v1:\n- .spec.replicas\n- .metadata.labels.app\nconflicts with \"b\":\n- .spec.paused",
            ),
        ];
        for (conflicts, want) in cases {
            assert_eq!(MergeError::Conflict { conflicts }.to_string(), want);
        }
    }

    #[test]
    fn conflict_status_carries_field_manager_causes() {
        let error = MergeError::Conflict {
            conflicts: vec![conflict("kubectl", "Update", None, ".spec.replicas")],
        };
        let status = error.to_status();
        assert_eq!(status["code"], 409);
        assert_eq!(status["reason"], "Conflict");
        assert_eq!(status["status"], "Failure");
        assert_eq!(
            status["details"]["causes"],
            json!([{
                "reason": "FieldManagerConflict",
                "message": "conflict with \"kubectl\" using apps/v1",
                "field": ".spec.replicas"
            }])
        );
    }

    #[test]
    fn status_parts_carry_code_message_and_causes() {
        let error = MergeError::Conflict {
            conflicts: vec![conflict("alice", "Apply", None, ".spec.replicas")],
        };
        let parts = error.to_status_parts("weir.io/v1alpha1");
        assert_eq!(parts.code, 409);
        assert_eq!(
            parts.message,
            "Apply failed with 1 conflict: conflict with \"alice\": .spec.replicas"
        );
        assert_eq!(
            parts.causes,
            [
                json!({"reason": "FieldManagerConflict", "message": "conflict with \"alice\"", "field": ".spec.replicas"})
            ]
        );
        let parts = MergeError::bad_request("no").to_status_parts("v1");
        assert_eq!(
            (parts.code, parts.message.as_str(), parts.causes.len()),
            (400, "no", 0)
        );
    }

    #[test]
    fn other_errors_map_to_their_status_codes() {
        let cases = [
            (MergeError::invalid("bad"), 422, "Invalid"),
            (MergeError::bad_request("worse"), 400, "BadRequest"),
        ];
        for (error, code, reason) in cases {
            let status = error.to_status();
            assert_eq!(status["code"], code);
            assert_eq!(status["reason"], reason);
            assert!(status.get("details").is_none());
        }
    }

    #[test]
    fn canonical_json_is_order_and_number_form_independent() {
        let cases = [
            (
                json!({"protocol": "TCP", "containerPort": 80}),
                r#"{"containerPort":80,"protocol":"TCP"}"#,
            ),
            (json!({"port": 80.0}), r#"{"port":80}"#),
            (json!("a\"b"), r#""a\"b""#),
            (json!([1.5, true, null]), "[1.5,true,null]"),
        ];
        for (value, want) in cases {
            assert_eq!(canonical_json(&value), want);
        }
    }

    #[test]
    fn values_compare_numbers_by_value() {
        assert!(values_equal(&json!({"a": [80]}), &json!({"a": [80.0]})));
        assert!(!values_equal(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!values_equal(&json!("80"), &json!(80)));
    }
}
