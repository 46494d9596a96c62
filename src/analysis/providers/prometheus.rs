//! The Prometheus provider: one instant query per measurement.
//!
//! A scalar becomes [`MetricValue::Scalar`], an instant vector [`MetricValue::Vector`] with the
//! samples ordered by their label sets, so that `result[0]` names the same series on every
//! measurement. Prometheus's own error text is kept for rejected queries.

use std::time::Duration;

use futures::future::BoxFuture;
use prometheus_http_query::response::Data;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde::Deserialize;

use super::{
    MetricProvider, ProviderError, SecretSource, header_map, http_client, redacted_url,
    status_text, transport_error,
};
use crate::analysis::value::MetricValue;
use crate::api::analysis::{
    BASIC_AUTH_PASSWORD_KEY, BASIC_AUTH_USERNAME_KEY, PrometheusAuthentication, PrometheusMetric,
};

/// Measures a `provider.prometheus` metric.
#[derive(Clone, Debug)]
pub struct PrometheusProvider {
    spec: PrometheusMetric,
}

impl PrometheusProvider {
    /// A provider for the spec, with arguments already substituted.
    pub fn new(spec: PrometheusMetric) -> Self {
        Self { spec }
    }

    async fn query(
        &self,
        secrets: &dyn SecretSource,
        namespace: &str,
    ) -> Result<MetricValue, ProviderError> {
        let spec = &self.spec;
        let timeout = spec.timeout().map_err(ProviderError::InvalidTimeout)?;
        let target = format!("Prometheus at {}", redacted_url(&spec.address));
        let mut headers = header_map(&spec.headers)?;
        if let Some(authentication) = &spec.authentication {
            headers.insert(
                AUTHORIZATION,
                authorization(authentication, secrets, namespace).await?,
            );
        }
        let client = prometheus_http_query::Client::from(http_client(timeout)?, &spec.address)
            .map_err(|error| ProviderError::InvalidAddress {
                address: redacted_url(&spec.address),
                reason: error.to_string(),
            })?;
        // The same limit goes to Prometheus, so that it stops evaluating a query nobody waits for.
        let mut request = client.query(&spec.query).timeout(millis(timeout));
        for (name, value) in &headers {
            request = request.header(name.clone(), value.clone());
        }
        // POST, as Prometheus's own clients do: long queries do not hit URL length limits.
        let response = request.post_raw().await.map_err(|error| match &error {
            prometheus_http_query::Error::Client(client) => match client.inner() {
                Some(cause) => transport_error(&target, timeout, cause),
                None => ProviderError::Request {
                    target: target.clone(),
                    cause: client.to_string(),
                },
            },
            other => ProviderError::Request {
                target: target.clone(),
                cause: other.to_string(),
            },
        })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|error| transport_error(&target, timeout, &error))?;
        let answer = match serde_json::from_slice::<QueryAnswer>(&body) {
            Ok(answer) => answer,
            // A proxy in front of Prometheus answers errors in its own format; its status is
            // what the user needs.
            Err(_) if !status.is_success() => {
                return Err(ProviderError::Status {
                    target,
                    status: status_text(status),
                });
            }
            Err(error) => {
                return Err(ProviderError::InvalidResponse {
                    target,
                    reason: format!("not a Prometheus API response: {error}"),
                });
            }
        };
        match answer {
            QueryAnswer::Success { data } => {
                let data: Data = serde_json::from_value(data).map_err(|error| {
                    ProviderError::InvalidResponse {
                        target,
                        reason: format!("unsupported query result: {error}"),
                    }
                })?;
                value_of(data)
            }
            QueryAnswer::Error { error_type, error } => Err(ProviderError::Query {
                error_type,
                message: error,
            }),
        }
    }
}

impl MetricProvider for PrometheusProvider {
    fn measure<'a>(
        &'a self,
        secrets: &'a dyn SecretSource,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<MetricValue, ProviderError>> {
        Box::pin(self.query(secrets, namespace))
    }
}

/// The envelope of every Prometheus API answer. Read here rather than by the client crate so
/// that an error type the crate does not know still yields Prometheus's message.
#[derive(Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
enum QueryAnswer {
    Success {
        data: serde_json::Value,
    },
    Error {
        #[serde(rename = "errorType", default)]
        error_type: String,
        #[serde(default)]
        error: String,
    },
}

/// The measurement for a query result.
fn value_of(data: Data) -> Result<MetricValue, ProviderError> {
    match data {
        Data::Scalar(sample) => Ok(MetricValue::Scalar(sample.value())),
        Data::Vector(series) => {
            let mut samples: Vec<(Vec<(String, String)>, f64)> = series
                .into_iter()
                .map(|one| {
                    let (labels, sample) = one.into_inner();
                    let mut labels: Vec<(String, String)> = labels.into_iter().collect();
                    labels.sort();
                    (labels, sample.value())
                })
                .collect();
            samples.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(MetricValue::Vector(
                samples.into_iter().map(|(_, value)| value).collect(),
            ))
        }
        Data::Matrix(_) => Err(ProviderError::RangeVector),
    }
}

/// The `Authorization` header value for the configured scheme, marked sensitive so that it is
/// never printed by the HTTP stack.
async fn authorization(
    authentication: &PrometheusAuthentication,
    secrets: &dyn SecretSource,
    namespace: &str,
) -> Result<HeaderValue, ProviderError> {
    let (text, secret, key) = match authentication {
        PrometheusAuthentication::Bearer(bearer) => {
            let reference = &bearer.secret_ref;
            let token = secrets
                .secret(namespace, &reference.name, &reference.key)
                .await?;
            // Tokens never contain whitespace, but files they were created from end in a newline.
            (
                format!("Bearer {}", token.trim()),
                &reference.name,
                reference.key.as_str(),
            )
        }
        PrometheusAuthentication::Basic(basic) => {
            let name = &basic.secret_ref.name;
            let username = secrets
                .secret(namespace, name, BASIC_AUTH_USERNAME_KEY)
                .await?;
            let password = secrets
                .secret(namespace, name, BASIC_AUTH_PASSWORD_KEY)
                .await?;
            let credentials = base64(format!("{username}:{password}").as_bytes());
            (
                format!("Basic {credentials}"),
                name,
                BASIC_AUTH_PASSWORD_KEY,
            )
        }
    };
    let mut value = HeaderValue::from_str(&text).map_err(|_| ProviderError::SecretValue {
        namespace: namespace.to_owned(),
        name: secret.clone(),
        key: key.to_owned(),
        problem: "cannot be sent in an HTTP header",
    })?;
    value.set_sensitive(true);
    Ok(value)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Standard base64 with padding (RFC 4648), as HTTP basic authentication requires.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let group = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        // A chunk of n bytes fills n + 1 sextets; the rest of the four are padding.
        for position in 0..4 {
            if position <= chunk.len() {
                let sextet = (group >> (18 - 6 * position)) & 0x3f;
                let symbol = ALPHABET.get(sextet as usize).copied().unwrap_or(b'=');
                out.push(char::from(symbol));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("Aladdin:open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ];
        for (input, expected) in cases {
            assert_eq!(base64(input.as_bytes()), expected, "{input:?}");
        }
    }

    fn data(json: &str) -> Data {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn results_become_values_in_label_order() {
        let cases = [
            (
                r#"{"resultType":"scalar","result":[1700000000,"0.25"]}"#,
                Ok(MetricValue::Scalar(0.25)),
            ),
            (
                r#"{"resultType":"vector","result":[
                    {"metric":{"track":"stable"},"value":[1700000000,"0.5"]},
                    {"metric":{"track":"canary"},"value":[1700000000,"0.01"]}]}"#,
                Ok(MetricValue::Vector(vec![0.01, 0.5])),
            ),
            (
                r#"{"resultType":"vector","result":[]}"#,
                Ok(MetricValue::Vector(vec![])),
            ),
            (
                r#"{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"+Inf"]}]}"#,
                Ok(MetricValue::Vector(vec![f64::INFINITY])),
            ),
            (
                r#"{"resultType":"matrix","result":[{"metric":{},"values":[[1700000000,"1"]]}]}"#,
                Err("range vectors are not supported; use an instant query"),
            ),
        ];
        for (json, expected) in cases {
            let got = value_of(data(json)).map_err(|e| e.to_string());
            assert_eq!(got, expected.map_err(String::from), "{json}");
        }
    }

    #[test]
    fn nan_samples_stay_nan() {
        let got = value_of(data(
            r#"{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"NaN"]}]}"#,
        ))
        .unwrap();
        let MetricValue::Vector(samples) = got else {
            panic!("expected a vector, got {got:?}");
        };
        assert!(samples.len() == 1 && samples.iter().all(|s| s.is_nan()));
    }

    #[test]
    fn error_answers_keep_prometheus_message() {
        let answer: QueryAnswer = serde_json::from_str(
            r#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected"}"#,
        )
        .unwrap();
        let QueryAnswer::Error { error_type, error } = answer else {
            panic!("expected an error answer");
        };
        assert_eq!(
            (error_type.as_str(), error.as_str()),
            ("bad_data", "1:5: parse error: unexpected")
        );
    }
}
