//! The web provider: an HTTP GET or POST whose JSON answer is the measurement.
//!
//! `jsonPath` uses kubectl's form (`{$.data.errorRate}`) restricted to what a metric needs:
//! `$`, `.field`, `['field']` and `[index]` (negative counts from the end). Filters, wildcards,
//! slices and recursive descent are rejected rather than half-supported.

use std::fmt;

use futures::future::BoxFuture;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use serde_json::Value;

use super::{
    MetricProvider, ProviderError, SecretSource, header_map, http_client, redacted_url,
    status_text, transport_error,
};
use crate::analysis::value::MetricValue;
use crate::api::analysis::{WebMethod, WebMetric};

/// Measures a `provider.web` metric.
#[derive(Clone, Debug)]
pub struct WebProvider {
    spec: WebMetric,
}

impl WebProvider {
    /// A provider for the spec, with arguments already substituted.
    pub fn new(spec: WebMetric) -> Self {
        Self { spec }
    }

    async fn fetch(&self) -> Result<MetricValue, ProviderError> {
        let spec = &self.spec;
        // A path that cannot work is a spec error: report it without calling anyone.
        let path = spec.json_path.as_deref().map(JsonPath::parse).transpose()?;
        let timeout = spec.timeout();
        let target = redacted_url(&spec.url);
        let url =
            reqwest::Url::parse(&spec.url).map_err(|error| ProviderError::InvalidAddress {
                address: target.clone(),
                reason: error.to_string(),
            })?;
        let client = http_client(timeout)?;
        let mut request = match spec.method() {
            WebMethod::Get => client.get(url),
            WebMethod::Post => {
                let mut post = client.post(url);
                if let Some(body) = &spec.body {
                    post = post
                        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                        .body(body.clone());
                }
                post
            }
        };
        // The spec's headers come last so that they can override the defaults above.
        request = request
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .headers(header_map(&spec.headers)?);
        let response = request
            .send()
            .await
            .map_err(|error| transport_error(&target, timeout, &error))?;
        let status = response.status();
        if !status.is_success() {
            return Err(ProviderError::Status {
                target,
                status: status_text(status),
            });
        }
        let body = response
            .bytes()
            .await
            .map_err(|error| transport_error(&target, timeout, &error))?;
        let document: Value =
            serde_json::from_slice(&body).map_err(|error| ProviderError::InvalidResponse {
                target,
                reason: format!("the body is not JSON: {error}"),
            })?;
        let selected = match path {
            Some(path) => path.select(&document)?,
            None => document,
        };
        Ok(MetricValue::Json(selected))
    }
}

impl MetricProvider for WebProvider {
    fn measure<'a>(
        &'a self,
        _secrets: &'a dyn SecretSource,
        _namespace: &'a str,
    ) -> BoxFuture<'a, Result<MetricValue, ProviderError>> {
        Box::pin(self.fetch())
    }
}

/// A parsed kubectl-style JSONPath that selects one value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonPath {
    text: String,
    steps: Vec<Step>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Field(String),
    Index(i64),
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Field(name) => write!(f, ".{name}"),
            Self::Index(index) => write!(f, "[{index}]"),
        }
    }
}

impl JsonPath {
    /// Parses `{$.a.b[0]}`; the braces and the leading `$` may be left out (`$.a`, `{.a}`).
    pub fn parse(text: &str) -> Result<Self, ProviderError> {
        let error = |reason: String| ProviderError::JsonPath {
            path: text.to_owned(),
            reason,
        };
        let trimmed = text.trim();
        let inner = match trimmed.strip_prefix('{') {
            Some(rest) => rest
                .strip_suffix('}')
                .ok_or_else(|| error("missing the closing '}'".into()))?,
            None => trimmed,
        };
        let inner = inner.trim();
        let mut rest = inner.strip_prefix('$').unwrap_or(inner);
        let mut steps = Vec::new();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('.') {
                let end = after
                    .find(|c: char| !is_field_char(c))
                    .unwrap_or(after.len());
                let (name, remaining) = after.split_at(end);
                if name.is_empty() {
                    return Err(error(unsupported(after)));
                }
                steps.push(Step::Field(name.to_owned()));
                rest = remaining;
            } else if let Some(after) = rest.strip_prefix('[') {
                let (content, remaining) = after
                    .split_once(']')
                    .ok_or_else(|| error("missing the closing ']'".into()))?;
                steps.push(bracket_step(content.trim()).ok_or_else(|| error(unsupported(rest)))?);
                rest = remaining;
            } else {
                return Err(error(unsupported(rest)));
            }
        }
        Ok(Self {
            text: text.to_owned(),
            steps,
        })
    }

    /// The value the path selects. A missing field or an index past the end selects JSON
    /// `null`, which the assessment reads as "no data"; stepping into a value of the wrong
    /// kind (a field of a number) means the response has another shape and is an error.
    pub fn select(&self, document: &Value) -> Result<Value, ProviderError> {
        let mut current = document;
        let mut walked = String::from("$");
        for step in &self.steps {
            let next = match (step, current) {
                (Step::Field(name), Value::Object(fields)) => fields.get(name),
                (Step::Index(index), Value::Array(items)) => {
                    let position = if *index < 0 {
                        usize::try_from(index.unsigned_abs())
                            .ok()
                            .and_then(|back| items.len().checked_sub(back))
                    } else {
                        usize::try_from(*index).ok()
                    };
                    position.and_then(|position| items.get(position))
                }
                (_, Value::Null) => None,
                (step, other) => {
                    return Err(ProviderError::JsonPath {
                        path: self.text.clone(),
                        reason: format!(
                            "cannot apply {step} to {walked}, which is {}",
                            kind_of(other)
                        ),
                    });
                }
            };
            match next {
                Some(value) => current = value,
                None => return Ok(Value::Null),
            }
            walked.push_str(&step.to_string());
        }
        Ok(current.clone())
    }
}

fn is_field_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-'
}

/// `['name']`, `["name"]` or `[n]`; anything else (`*`, `?()`, slices, unions) is unsupported.
fn bracket_step(content: &str) -> Option<Step> {
    for quote in ['\'', '"'] {
        if let Some(name) = content
            .strip_prefix(quote)
            .and_then(|rest| rest.strip_suffix(quote))
        {
            return (!name.contains(quote)).then(|| Step::Field(name.to_owned()));
        }
    }
    content.parse().ok().map(Step::Index)
}

fn unsupported(at: &str) -> String {
    format!(
        "unsupported syntax at {at:?}; weir supports $, .field, ['field'] and [index] \
         (e.g. {{$.data.errorRate}})"
    )
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn document() -> Value {
        json!({
            "data": {
                "errorRate": 0.02,
                "p99": 180,
                "ok": true,
                "name": "canary",
                "buckets": [{"le": "0.1", "count": 7}, {"le": "+Inf", "count": 9}],
                "weird.key": 1,
                "nothing": null
            },
            "items": [1, 2, 3]
        })
    }

    #[test]
    fn paths_select_what_kubectl_would() {
        let cases = [
            ("{$.data.errorRate}", json!(0.02)),
            ("{$.data.p99}", json!(180)),
            ("{.data.ok}", json!(true)),
            ("$.data.name", json!("canary")),
            ("{$.data.buckets[1].count}", json!(9)),
            ("{$.data.buckets[-1].le}", json!("+Inf")),
            ("{$['data']['weird.key']}", json!(1)),
            ("{$.data[\"p99\"]}", json!(180)),
            ("{$.items[0]}", json!(1)),
            ("{$.items}", json!([1, 2, 3])),
            ("{$}", document()),
            // Nothing there: null, which the assessment reads as "no data".
            ("{$.data.missing}", Value::Null),
            ("{$.items[3]}", Value::Null),
            ("{$.items[-4]}", Value::Null),
            ("{$.data.nothing.deeper}", Value::Null),
        ];
        for (path, expected) in cases {
            let parsed = JsonPath::parse(path).unwrap_or_else(|e| panic!("{path}: {e}"));
            let got = parsed
                .select(&document())
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(got, expected, "{path}");
            // Numbers stay numbers: an integer is not turned into a float, nor a float into text.
            assert_eq!(got.is_number(), expected.is_number(), "{path}");
        }
    }

    #[test]
    fn unsupported_syntax_is_an_error_that_says_so() {
        let cases = [
            ("{$.items[*]}", "unsupported syntax"),
            ("{$..errorRate}", "unsupported syntax"),
            ("{$.items[0:2]}", "unsupported syntax"),
            ("{$.items[?(@ > 1)]}", "unsupported syntax"),
            ("{$.data.errorRate", "missing the closing '}'"),
            ("{$.items[0}", "missing the closing ']'"),
            ("{$.a}{$.b}", "unsupported syntax"),
            ("{$.data errorRate}", "unsupported syntax"),
        ];
        for (path, expected) in cases {
            let error = JsonPath::parse(path).expect_err(path).to_string();
            assert!(error.contains(expected), "{path}: {error}");
            assert!(error.contains(path), "{path}: {error}");
        }
    }

    #[test]
    fn a_path_through_a_value_of_the_wrong_kind_is_an_error() {
        let cases = [
            (
                "{$.data.p99.value}",
                "cannot apply .value to $.data.p99, which is a number",
            ),
            (
                "{$.data[0]}",
                "cannot apply [0] to $.data, which is an object",
            ),
            (
                "{$.items.first}",
                "cannot apply .first to $.items, which is an array",
            ),
        ];
        for (path, expected) in cases {
            let error = JsonPath::parse(path)
                .unwrap()
                .select(&document())
                .expect_err(path)
                .to_string();
            assert!(error.contains(expected), "{path}: {error}");
        }
    }
}
