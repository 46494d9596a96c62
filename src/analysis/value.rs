//! What a metric provider measured, before any condition is applied to it.

/// The value one measurement produced, in the shape CEL conditions see as `result`.
#[derive(Clone, Debug, PartialEq)]
pub enum MetricValue {
    /// A Prometheus scalar: `result` is a number.
    Scalar(f64),
    /// A Prometheus instant vector, one number per sample: `result` is a list (`result[0]` for
    /// a single sample).
    Vector(Vec<f64>),
    /// The JSON value a web provider's `jsonPath` selected: `result` is that value.
    Json(serde_json::Value),
}

impl MetricValue {
    /// The value as it is stored in `Measurement.value`: `0.07` for a scalar, `[0.07,0.02]` for
    /// a vector and compact JSON text for a web result.
    pub fn display(&self) -> String {
        match self {
            Self::Scalar(number) => format_number(*number),
            Self::Vector(samples) => {
                let mut text = String::from("[");
                for (position, sample) in samples.iter().enumerate() {
                    if position > 0 {
                        text.push(',');
                    }
                    text.push_str(&format_number(*sample));
                }
                text.push(']');
                text
            }
            Self::Json(json) => json.to_string(),
        }
    }

    /// Whether the provider answered without data: an empty vector (the query matched no
    /// series) or a JSON `null` (the `jsonPath` selected nothing). Such a measurement can
    /// neither pass nor fail a condition.
    pub fn no_data(&self) -> bool {
        match self {
            Self::Scalar(_) => false,
            Self::Vector(samples) => samples.is_empty(),
            Self::Json(json) => json.is_null(),
        }
    }

    /// Whether any number in the value is NaN or ±Inf, which Prometheus returns for `0/0` and
    /// `x/0` (e.g. an error rate while the canary receives no traffic).
    pub fn non_finite(&self) -> bool {
        self.first_non_finite().is_some()
    }

    /// The first NaN or ±Inf in the value, if any.
    pub fn first_non_finite(&self) -> Option<f64> {
        match self {
            Self::Scalar(number) => (!number.is_finite()).then_some(*number),
            Self::Vector(samples) => samples.iter().copied().find(|sample| !sample.is_finite()),
            Self::Json(json) => first_non_finite_json(json),
        }
    }
}

impl std::fmt::Display for MetricValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

/// Formats a number the way Prometheus prints special values (`NaN`, `+Inf`, `-Inf`) and
/// finite ones in their shortest exact decimal form.
pub fn format_number(number: f64) -> String {
    if number.is_nan() {
        "NaN".to_owned()
    } else if number == f64::INFINITY {
        "+Inf".to_owned()
    } else if number == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        number.to_string()
    }
}

fn first_non_finite_json(json: &serde_json::Value) -> Option<f64> {
    match json {
        serde_json::Value::Number(number) => number.as_f64().filter(|value| !value.is_finite()),
        serde_json::Value::Array(items) => items.iter().find_map(first_non_finite_json),
        serde_json::Value::Object(fields) => fields.values().find_map(first_non_finite_json),
        serde_json::Value::Null | serde_json::Value::Bool(_) | serde_json::Value::String(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn display_is_what_the_measurement_stores() {
        let cases = [
            (MetricValue::Scalar(0.07), "0.07"),
            (MetricValue::Scalar(1.0), "1"),
            (MetricValue::Scalar(f64::NAN), "NaN"),
            (MetricValue::Scalar(f64::INFINITY), "+Inf"),
            (MetricValue::Scalar(f64::NEG_INFINITY), "-Inf"),
            (MetricValue::Vector(vec![]), "[]"),
            (MetricValue::Vector(vec![0.07]), "[0.07]"),
            (MetricValue::Vector(vec![0.07, 0.02]), "[0.07,0.02]"),
            (MetricValue::Json(json!({"rate": 0.99})), r#"{"rate":0.99}"#),
            (MetricValue::Json(json!("ok")), r#""ok""#),
            (MetricValue::Json(json!(null)), "null"),
        ];
        for (value, expected) in cases {
            assert_eq!(value.display(), expected, "{value:?}");
            assert_eq!(value.to_string(), expected, "{value:?}");
        }
    }

    #[test]
    fn no_data_and_non_finite_are_told_apart() {
        let cases = [
            (MetricValue::Scalar(0.0), false, false),
            (MetricValue::Scalar(f64::NAN), false, true),
            (MetricValue::Scalar(f64::NEG_INFINITY), false, true),
            (MetricValue::Vector(vec![]), true, false),
            (MetricValue::Vector(vec![0.1, f64::INFINITY]), false, true),
            (MetricValue::Vector(vec![0.1, 0.2]), false, false),
            (MetricValue::Json(json!(null)), true, false),
            (MetricValue::Json(json!([])), false, false),
            (MetricValue::Json(json!({"rate": null})), false, false),
            (MetricValue::Json(json!({"rate": 0.5})), false, false),
        ];
        for (value, no_data, non_finite) in cases {
            assert_eq!(value.no_data(), no_data, "no_data {value:?}");
            assert_eq!(value.non_finite(), non_finite, "non_finite {value:?}");
        }
    }
}
