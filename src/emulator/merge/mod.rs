//! Placeholder until the merge engine lands.
use serde_json::Value;

/// How a list merges.
#[derive(Debug, Clone, PartialEq)]
pub enum ListType {
    Atomic,
    Set,
    Map(Vec<String>),
}
/// Merge metadata.
#[derive(Debug, Clone, Default)]
pub struct MergeSchema;
impl MergeSchema {
    pub fn for_builtin(_g: &str, _k: &str) -> Self {
        Self
    }
    pub fn from_openapi_v3(_s: &Value) -> Self {
        Self
    }
}
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("conflict")]
    Conflict { conflicts: Vec<String> },
    #[error("{message}")]
    Invalid { message: String },
}
pub fn strategic_merge(
    original: &Value,
    patch: &Value,
    _s: &MergeSchema,
) -> Result<Value, MergeError> {
    let mut o = original.clone();
    json_patch::merge(&mut o, patch);
    Ok(o)
}
pub fn server_side_apply(
    live: Option<&Value>,
    applied: &Value,
    _m: &str,
    _f: bool,
    _s: &MergeSchema,
    _now: &str,
    _sub: Option<&str>,
) -> Result<Value, MergeError> {
    let mut o = live.cloned().unwrap_or(serde_json::json!({}));
    json_patch::merge(&mut o, applied);
    Ok(o)
}
pub fn record_update(
    _old: Option<&Value>,
    _new: &mut Value,
    _m: &str,
    _s: &MergeSchema,
    _now: &str,
    _sub: Option<&str>,
) {
}
/// Status parts.
pub struct StatusParts {
    pub code: u16,
    pub message: String,
    pub causes: Vec<Value>,
}
impl MergeError {
    pub fn to_status_parts(&self, _av: &str) -> StatusParts {
        StatusParts {
            code: 409,
            message: self.to_string(),
            causes: vec![],
        }
    }
}
