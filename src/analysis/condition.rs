//! `successCondition` and `failureCondition`: CEL expressions over a measurement's `result`.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use cel::common::value::Val;
use cel::objects::{Key, Map};
use cel::{Context, Env, Program, Value};

use super::value::MetricValue;

/// The name under which a condition sees the measured value.
pub const RESULT_VARIABLE: &str = "result";

/// Longest condition accepted. Real conditions are a line; a long one is a generated attack.
pub const MAX_CONDITION_BYTES: usize = 2048;
/// Deepest nesting of `(`, `[` and `{` accepted. CEL's parser recurses through a dozen rules
/// per level, so 20 levels already overflow a 2 MiB thread stack in a debug build.
pub const MAX_CONDITION_NESTING: usize = 16;
/// Most operators accepted. A chain like `a + a + a …` builds a tree as deep as it is long, which
/// the parser and interpreter walk recursively.
pub const MAX_CONDITION_OPERATORS: usize = 100;
/// Stack of the thread that parses and evaluates a condition: ample for the largest conditions
/// the limits above allow, even in a debug build (`tests/fuzz.rs` runs them), and independent of
/// the caller's stack (a tokio worker has 2 MiB).
const CEL_STACK_BYTES: usize = 32 << 20;

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
    /// Parses a CEL expression. Parse errors name the expression. Expressions longer, deeper or
    /// with more operators than [`MAX_CONDITION_BYTES`], [`MAX_CONDITION_NESTING`] and
    /// [`MAX_CONDITION_OPERATORS`] are refused before CEL sees them.
    pub fn compile(expr: &str) -> Result<Condition, ConditionError> {
        let refused = |message: String| ConditionError::Parse {
            expr: expr.to_owned(),
            message,
        };
        check_size(expr).map_err(refused)?;
        let env = Arc::clone(&STANDARD_ENV);
        let compiled = on_cel_stack(|| {
            env.compile(expr).map_err(|errors| {
                errors
                    .errors
                    .iter()
                    .map(|error| format!("{}:{}: {}", error.pos.0, error.pos.1, error.msg))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        });
        let program = compiled.and_then(|program| program).map_err(refused)?;
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
        let evaluated = on_cel_stack(|| {
            let mut context = Context::with_env(Arc::clone(&self.env));
            context.add_variable_as_val(RESULT_VARIABLE, bound);
            match self.program.execute(&context) {
                Ok(Value::Bool(decision)) => Ok(Ok(decision)),
                Ok(other) => Ok(Err(describe(&other))),
                Err(error) => Err(error.to_string()),
            }
        });
        match evaluated.and_then(|outcome| outcome) {
            Ok(Ok(decision)) => Ok(decision),
            Ok(Err(got)) => Err(ConditionError::NotBoolean {
                expr: self.expression.clone(),
                got,
            }),
            Err(message) => Err(ConditionError::Evaluate {
                expr: self.expression.clone(),
                message,
            }),
        }
    }
}

/// Refuses expressions whose parse tree would be too deep for CEL's recursive parser and
/// interpreter. Brackets and operators inside string literals do not count.
fn check_size(expr: &str) -> Result<(), String> {
    if expr.len() > MAX_CONDITION_BYTES {
        return Err(format!(
            "longer than {MAX_CONDITION_BYTES} bytes ({} bytes)",
            expr.len()
        ));
    }
    let (mut depth, mut deepest, mut operators) = (0usize, 0usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in expr.chars() {
        if let Some(open) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == open {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '(' | '[' | '{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            '+' | '-' | '*' | '/' | '%' | '<' | '>' | '=' | '!' | '&' | '|' | '?' | ',' | '.' => {
                operators += 1;
            }
            _ => {}
        }
    }
    if deepest > MAX_CONDITION_NESTING {
        return Err(format!(
            "nested deeper than {MAX_CONDITION_NESTING} levels of brackets"
        ));
    }
    if operators > MAX_CONDITION_OPERATORS {
        return Err(format!(
            "more than {MAX_CONDITION_OPERATORS} operators ({operators})"
        ));
    }
    Ok(())
}

/// Runs CEL on a thread of its own with a known stack, and turns a panic inside CEL into an
/// error: a hostile condition must fail its metric, not take the controller down.
fn on_cel_stack<T: Send>(work: impl FnOnce() -> T + Send) -> Result<T, String> {
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("cel".into())
            .stack_size(CEL_STACK_BYTES)
            .spawn_scoped(scope, work)
            .map_err(|error| format!("could not start the CEL thread: {error}"))?;
        handle
            .join()
            .map_err(|_| "the CEL interpreter failed on this expression".to_owned())
    })
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
    fn size_limits_count_brackets_and_operators_outside_string_literals() {
        let deep = |n: usize| format!("{}1{}", "(".repeat(n), ")".repeat(n));
        let chain = |n: usize| format!("1{}", " + 1".repeat(n));
        let cases: [(String, bool); 8] = [
            (deep(MAX_CONDITION_NESTING), true),
            (deep(MAX_CONDITION_NESTING + 1), false),
            (chain(MAX_CONDITION_OPERATORS), true),
            (chain(MAX_CONDITION_OPERATORS + 1), false),
            (format!("'{}' == ''", "(".repeat(100)), true),
            (format!("\"{}\\\"\" != ''", "+".repeat(200)), true),
            (format!("'{}", "(".repeat(100)), true),
            ("1".repeat(MAX_CONDITION_BYTES + 1), false),
        ];
        for (expr, accepted) in cases {
            assert_eq!(check_size(&expr).is_ok(), accepted, "{expr}");
        }
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
