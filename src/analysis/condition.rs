//! `successCondition` and `failureCondition`: CEL expressions over a measurement's `result`.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use cel::common::value::Val;
use cel::objects::{Key, Map};
use cel::{Context, Env, Program, Value};

use super::value::MetricValue;

/// The name under which a condition sees the measured value.
pub const RESULT_VARIABLE: &str = "result";

/// CEL's standard environment, built once: building it costs far more than compiling and
/// evaluating a condition, and conditions are compiled on every assessment.
static STANDARD_ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// A compiled condition, ready to be evaluated against measurements.
pub struct Condition {
    expression: String,
    program: Program,
    env: Arc<Env>,
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The program and environment are CEL internals; the expression identifies the condition.
        f.debug_struct("Condition")
            .field("expression", &self.expression)
            .finish_non_exhaustive()
    }
}

/// Why a condition could not decide a measurement. Every variant names the expression, because
/// the message ends up in the run's status where the user has to find which condition is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConditionError {
    /// The expression is not valid CEL.
    #[error("condition {expr:?} does not parse: {message}")]
    Parse {
        /// The expression as written.
        expr: String,
        /// What the CEL parser reported, one `line:column: problem` per error.
        message: String,
    },
    /// The expression parsed but failed while running, e.g. `result.rate` when the JSON has
    /// no `rate` field or `result[1]` on a one-sample vector.
    #[error("condition {expr:?} could not be evaluated: {message}")]
    Evaluate {
        /// The expression as written.
        expr: String,
        /// What the CEL interpreter reported.
        message: String,
    },
    /// The expression evaluated to something other than `true` or `false`.
    #[error("condition {expr:?} evaluated to {got}, not a boolean")]
    NotBoolean {
        /// The expression as written.
        expr: String,
        /// The CEL type (and value, when short) it evaluated to.
        got: String,
    },
}

impl Condition {
    /// Parses a CEL expression. Parse errors name the expression.
    pub fn compile(expr: &str) -> Result<Condition, ConditionError> {
        let env = Arc::clone(&STANDARD_ENV);
        let program = env.compile(expr).map_err(|errors| ConditionError::Parse {
            expr: expr.to_owned(),
            message: errors
                .errors
                .iter()
                .map(|error| format!("{}:{}: {}", error.pos.0, error.pos.1, error.msg))
                .collect::<Vec<_>>()
                .join("; "),
        })?;
        Ok(Condition {
            expression: expr.to_owned(),
            program,
            env,
        })
    }

    /// The expression as written.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// Evaluates the condition with `result` bound to the measured value.
    pub fn evaluate(&self, result: &MetricValue) -> Result<bool, ConditionError> {
        let bound = Box::<dyn Val>::try_from(cel_value(result)).map_err(|error| {
            ConditionError::Evaluate {
                expr: self.expression.clone(),
                message: error.to_string(),
            }
        })?;
        let mut context = Context::with_env(Arc::clone(&self.env));
        context.add_variable_as_val(RESULT_VARIABLE, bound);
        match self.program.execute(&context) {
            Ok(Value::Bool(decision)) => Ok(decision),
            Ok(other) => Err(ConditionError::NotBoolean {
                expr: self.expression.clone(),
                got: describe(&other),
            }),
            Err(error) => Err(ConditionError::Evaluate {
                expr: self.expression.clone(),
                message: error.to_string(),
            }),
        }
    }
}

/// The CEL value a condition sees as `result`.
///
/// Every number becomes a CEL `double`, JSON numbers included. Prometheus values are doubles
/// anyway, and for JSON it keeps `result.errors / result.total` a real division: CEL divides
/// two ints as integers, so `5 / 100` would be `0` and a 5% error rate would pass as 0%.
/// Comparisons with int literals (`result.count > 3`) still work, as CEL compares numbers
/// across types.
pub fn cel_value(value: &MetricValue) -> Value {
    match value {
        MetricValue::Scalar(number) => Value::Float(*number),
        MetricValue::Vector(samples) => Value::List(Arc::new(
            samples.iter().copied().map(Value::Float).collect(),
        )),
        MetricValue::Json(json) => json_to_cel(json),
    }
}

fn json_to_cel(json: &serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(flag) => Value::Bool(*flag),
        serde_json::Value::Number(number) => number.as_f64().map_or(Value::Null, Value::Float),
        serde_json::Value::String(text) => Value::String(Arc::new(text.clone())),
        serde_json::Value::Array(items) => {
            Value::List(Arc::new(items.iter().map(json_to_cel).collect()))
        }
        serde_json::Value::Object(fields) => {
            let map: HashMap<Key, Value> = fields
                .iter()
                .map(|(name, field)| (Key::String(Arc::new(name.clone())), json_to_cel(field)))
                .collect();
            Value::Map(Map { map: Arc::new(map) })
        }
    }
}

/// Longest value text quoted in a [`ConditionError::NotBoolean`] message; longer values are
/// named by type only so a big JSON document does not flood the run's status.
const MAX_DESCRIBED_VALUE: usize = 40;

fn describe(value: &Value) -> String {
    let type_name = match value.type_of().to_string().as_str() {
        // CEL calls its floating-point type `double`, which is what users read in the spec.
        "float" => "double".to_owned(),
        other => other.to_owned(),
    };
    let text = match value {
        Value::Float(number) => super::value::format_number(*number),
        Value::Int(number) => number.to_string(),
        Value::UInt(number) => number.to_string(),
        Value::String(text) => format!("{text:?}"),
        _ => return type_name,
    };
    if text.len() > MAX_DESCRIBED_VALUE {
        type_name
    } else {
        format!("{type_name} {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vector(samples: &[f64]) -> MetricValue {
        MetricValue::Vector(samples.to_vec())
    }

    #[test]
    fn conditions_see_result_in_the_shape_of_the_provider() {
        let cases: [(&str, MetricValue, bool); 17] = [
            ("result[0] < 0.05", vector(&[0.01]), true),
            ("result[0] < 0.05", vector(&[0.07]), false),
            ("result[0] < 1", vector(&[0.5]), true),
            ("size(result) > 0", vector(&[0.5]), true),
            ("size(result) == 2", vector(&[0.5, 0.7]), true),
            ("result.all(x, x < 0.05)", vector(&[0.01, 0.07]), false),
            ("result.exists(x, x >= 0.05)", vector(&[0.01, 0.07]), true),
            ("result < 0.05", MetricValue::Scalar(0.01), true),
            ("result < 0.05", MetricValue::Scalar(0.5), false),
            ("result == 3", MetricValue::Scalar(3.0), true),
            (
                "result.rate >= 0.99",
                MetricValue::Json(json!({"rate": 0.995})),
                true,
            ),
            (
                "result.rate >= 0.99",
                MetricValue::Json(json!({"rate": 1})),
                true,
            ),
            (
                "result.rate >= 0.99",
                MetricValue::Json(json!({"rate": 0.9})),
                false,
            ),
            (
                "result.errors / result.total < 0.1",
                MetricValue::Json(json!({"errors": 5, "total": 100})),
                true,
            ),
            (
                "result.errors / result.total < 0.01",
                MetricValue::Json(json!({"errors": 5, "total": 100})),
                false,
            ),
            ("result == 'true'", MetricValue::Json(json!("true")), true),
            (
                "double(result) >= 0.9",
                MetricValue::Json(json!("0.95")),
                true,
            ),
        ];
        for (expr, value, expected) in cases {
            let condition = Condition::compile(expr).unwrap();
            assert_eq!(
                condition.evaluate(&value),
                Ok(expected),
                "{expr} with {value}"
            );
        }
    }

    #[test]
    fn a_compiled_condition_can_be_shared_between_tasks() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Condition>();
    }

    #[test]
    fn a_condition_that_does_not_parse_names_the_expression() {
        let error = Condition::compile("result[0] <").unwrap_err();
        let ConditionError::Parse { expr, message } = &error else {
            panic!("expected a parse error, got {error:?}");
        };
        assert_eq!(expr, "result[0] <");
        assert!(message.starts_with("1:"), "{message}");
        assert!(!message.contains('\n'), "{message}");
        assert!(error.to_string().contains("\"result[0] <\""), "{error}");
    }

    #[test]
    fn evaluation_errors_name_the_expression() {
        let cases = [
            ("result.rate >= 0.99", MetricValue::Json(json!({"p99": 1}))),
            ("result[1] < 0.05", vector(&[0.01])),
            ("result < 0.05", vector(&[0.01])),
            ("missing < 1", MetricValue::Scalar(0.0)),
        ];
        for (expr, value) in cases {
            let error = Condition::compile(expr)
                .unwrap()
                .evaluate(&value)
                .unwrap_err();
            assert!(
                matches!(&error, ConditionError::Evaluate { expr: named, .. } if named == expr),
                "{expr}: {error:?}"
            );
            assert!(error.to_string().contains(expr), "{error}");
        }
    }

    #[test]
    fn a_condition_that_is_not_boolean_names_the_expression_and_what_it_got() {
        let cases = [
            ("result[0]", vector(&[0.07]), "double 0.07"),
            ("result", MetricValue::Json(json!("ok")), "string \"ok\""),
            ("size(result)", vector(&[1.0, 2.0]), "int 2"),
            ("result", MetricValue::Json(json!({"rate": 1})), "map"),
            ("result", MetricValue::Json(json!(null)), "null"),
        ];
        for (expr, value, got) in cases {
            let error = Condition::compile(expr)
                .unwrap()
                .evaluate(&value)
                .unwrap_err();
            assert_eq!(
                error,
                ConditionError::NotBoolean {
                    expr: expr.to_owned(),
                    got: got.to_owned(),
                },
                "{expr}"
            );
        }
    }
}
