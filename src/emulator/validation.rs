//! Placeholder until the validation engine lands.
use serde_json::Value;
pub struct FieldError {
    pub field: String,
    pub message: String,
}
impl FieldError {
    pub fn cause_reason(&self) -> &'static str {
        "FieldValueInvalid"
    }
}
impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}
pub struct Outcome {
    pub pruned: Vec<String>,
}
pub fn validate_object(_schema: &Value, _obj: &mut Value) -> Result<Outcome, Vec<FieldError>> {
    Ok(Outcome { pruned: vec![] })
}
pub fn structural_violations(_schema: &Value) -> Vec<String> {
    vec![]
}
