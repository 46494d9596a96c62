//! Metric providers: where a measurement comes from.
//!
//! Each provider turns one metric spec (arguments already substituted) into one
//! [`MetricValue`]. Providers only measure; whether a value passes, fails or is inconclusive
//! (empty vector, NaN) is decided by the assessment, so such values come back as `Ok`.

pub mod prometheus;
pub mod web;

use std::error::Error as StdError;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::value::MetricValue;
use crate::api::analysis::{Header, MetricProvider as MetricSpec};
use crate::api::duration::DurationError;

pub use prometheus::PrometheusProvider;
pub use web::{JsonPath, WebProvider};

/// Reads Secret values for a provider (authentication, secret arguments).
pub trait SecretSource: Send + Sync {
    /// The value of `key` in the Secret `namespace/name`, as UTF-8 text.
    fn secret<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<String, ProviderError>>;
}

/// A source of measurements for one metric.
pub trait MetricProvider: Send + Sync {
    /// Takes one measurement.
    ///
    /// Returns `Ok` for every answer the source gave, including an empty vector or NaN (the
    /// assessment decides what those mean), and `Err` when there is no answer to judge: the
    /// source is unreachable or timed out, rejected the query, answered with a non-2xx status,
    /// or the spec itself is unusable.
    fn measure<'a>(
        &'a self,
        secrets: &'a dyn SecretSource,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<MetricValue, ProviderError>>;
}

/// The provider for a metric's `provider` field.
pub fn provider_for(metric: &MetricSpec) -> Box<dyn MetricProvider> {
    match metric {
        MetricSpec::Prometheus(spec) => Box::new(PrometheusProvider::new(spec.clone())),
        MetricSpec::Web(spec) => Box::new(WebProvider::new(spec.clone())),
    }
}

/// Why a measurement could not be taken.
///
/// Messages name Secrets and keys but never contain their values. Each message is complete on
/// its own, cause included, because a measurement records only the message. Transport failures
/// keep their cause as text rather than as a source: the underlying HTTP errors carry the full
/// request URL, which may hold credentials or secret arguments.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The address or URL cannot be used.
    #[error("invalid address {address}: {reason}")]
    InvalidAddress {
        /// The address, without credentials or query.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The Prometheus `timeout` is not a duration.
    #[error("invalid Prometheus timeout: {0}")]
    InvalidTimeout(#[source] DurationError),
    /// A header name or value is not valid HTTP.
    #[error("header {name:?} is not a valid HTTP header name and value")]
    InvalidHeader {
        /// The header name as written in the spec.
        name: String,
    },
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client: {cause}")]
    HttpClient {
        /// Why.
        cause: String,
    },
    /// Nothing answered: connection refused, DNS failure, TLS failure.
    #[error("{target} is unreachable: {cause}")]
    Unreachable {
        /// What was called, e.g. `Prometheus at http://prometheus:9090/`.
        target: String,
        /// The underlying failure.
        cause: String,
    },
    /// No complete answer within the timeout.
    #[error("{target} did not answer within {after:?}")]
    Timeout {
        /// What was called.
        target: String,
        /// The timeout that elapsed.
        after: Duration,
    },
    /// The request failed for another transport reason.
    #[error("request to {target} failed: {cause}")]
    Request {
        /// What was called.
        target: String,
        /// The underlying failure.
        cause: String,
    },
    /// The server answered with a non-2xx status.
    #[error("{target} answered HTTP {status}")]
    Status {
        /// What was called.
        target: String,
        /// Status code and reason, e.g. `401 Unauthorized`.
        status: String,
    },
    /// Prometheus rejected the query; the message is Prometheus's own.
    #[error("Prometheus rejected the query: {error_type}: {message}")]
    Query {
        /// Prometheus's `errorType`, e.g. `bad_data`.
        error_type: String,
        /// Prometheus's `error`, e.g. `1:9: parse error: unexpected end of input`.
        message: String,
    },
    /// The query produced a range vector, which no condition can compare.
    #[error("range vectors are not supported; use an instant query")]
    RangeVector,
    /// The answer is not in the expected form.
    #[error("unexpected answer from {target}: {reason}")]
    InvalidResponse {
        /// What was called.
        target: String,
        /// What is wrong with the answer.
        reason: String,
    },
    /// The `jsonPath` cannot be used, or does not fit the response's shape.
    #[error("jsonPath {path:?}: {reason}")]
    JsonPath {
        /// The path as written in the spec.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The Secret does not exist.
    #[error("Secret {namespace}/{name} not found")]
    SecretNotFound {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
    },
    /// The Secret exists but has no such key.
    #[error("Secret {namespace}/{name} has no key {key:?}")]
    SecretKeyMissing {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
        /// The key.
        key: String,
    },
    /// The Secret's value cannot be used as text or in an HTTP header.
    #[error("the value of key {key:?} in Secret {namespace}/{name} {problem}")]
    SecretValue {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
        /// The key.
        key: String,
        /// What is wrong with it, never the value itself.
        problem: &'static str,
    },
    /// Reading the Secret from the API server failed.
    #[error("reading Secret {namespace}/{name}: {source}")]
    SecretRead {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// Reads Secrets from the Kubernetes API (core/v1).
#[derive(Clone)]
pub struct KubeSecrets(pub kube::Client);

impl SecretSource for KubeSecrets {
    fn secret<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(async move {
            let api: Api<Secret> = Api::namespaced(self.0.clone(), namespace);
            let secret = api
                .get_opt(name)
                .await
                .map_err(|source| ProviderError::SecretRead {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    source,
                })?
                .ok_or_else(|| ProviderError::SecretNotFound {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                })?;
            secret_text(&secret, namespace, name, key)
        })
    }
}

/// The text under `key` in a Secret read from the API.
fn secret_text(
    secret: &Secret,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<String, ProviderError> {
    // `stringData` is write-only on a real API server, but a Secret read back from a store that
    // does not merge it (an emulator, a fixture) may still carry the value there.
    let bytes = secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .map(|bytes| bytes.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|data| data.get(key))
                .map(|text| text.clone().into_bytes())
        })
        .ok_or_else(|| ProviderError::SecretKeyMissing {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            key: key.to_owned(),
        })?;
    String::from_utf8(bytes).map_err(|_| ProviderError::SecretValue {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        key: key.to_owned(),
        problem: "is not UTF-8 text",
    })
}

/// An HTTP client whose every request, body included, must finish within `timeout`.
///
/// A client is built per measurement because the timeout comes from the metric, and
/// measurements are seconds to minutes apart, so a connection pool would buy nothing.
fn http_client(timeout: Duration) -> Result<reqwest::Client, ProviderError> {
    // reqwest is compiled without a crypto provider (the aws-lc one would clash with kube's
    // ring) and panics when building a client while no process default exists. Installing
    // ring, which kube already links, is a no-op when someone else installed a provider first.
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _already_installed = rustls::crypto::ring::default_provider().install_default();
    }
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|error| ProviderError::HttpClient {
            cause: root_cause(&error.without_url()),
        })
}

/// The spec's headers as an HTTP header map. Errors name the header, never its value.
fn header_map(headers: &[Header]) -> Result<HeaderMap, ProviderError> {
    let mut map = HeaderMap::new();
    for header in headers {
        let invalid = || ProviderError::InvalidHeader {
            name: header.key.clone(),
        };
        let name = HeaderName::from_bytes(header.key.as_bytes()).map_err(|_| invalid())?;
        let value = HeaderValue::from_str(&header.value).map_err(|_| invalid())?;
        map.append(name, value);
    }
    Ok(map)
}

/// Maps a failed HTTP exchange to the error a user can act on.
fn transport_error(target: &str, timeout: Duration, error: &reqwest::Error) -> ProviderError {
    let target = target.to_owned();
    if error.is_timeout() {
        return ProviderError::Timeout {
            target,
            after: timeout,
        };
    }
    let cause = root_cause(error);
    if error.is_connect() {
        ProviderError::Unreachable { target, cause }
    } else {
        ProviderError::Request { target, cause }
    }
}

/// The innermost error's message: "Connection refused (os error 111)" tells a user more than
/// "error sending request", and, unlike reqwest's own message, carries no URL.
fn root_cause(error: &(dyn StdError + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// A URL as it may appear in messages: scheme, host, port and path, without credentials, query
/// or fragment, which may carry secrets.
fn redacted_url(text: &str) -> String {
    match reqwest::Url::parse(text) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => String::from("(not a URL)"),
    }
}

/// The status as `401 Unauthorized`.
fn status_text(status: reqwest::StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    #[test]
    fn messages_never_show_credentials_from_urls() {
        let cases = [
            (
                "http://user:hunter2@prometheus:9090/api?token=s3cret#frag",
                "http://prometheus:9090/api",
            ),
            ("https://example.com", "https://example.com/"),
            ("not a url with secret", "(not a URL)"),
        ];
        for (input, expected) in cases {
            assert_eq!(redacted_url(input), expected, "{input}");
        }
    }

    #[test]
    fn invalid_headers_are_named_without_their_value() {
        let cases = [
            ("X-Ok", "fine", None),
            ("bad name", "v", Some("bad name")),
            ("Authorization", "Bearer s3cret\n", Some("Authorization")),
        ];
        for (key, value, error_names) in cases {
            let result = header_map(&[Header {
                key: key.into(),
                value: value.into(),
            }]);
            match (result, error_names) {
                (Ok(map), None) => {
                    assert_eq!(map.get(key).map(|v| v.as_bytes()), Some(value.as_bytes()))
                }
                (Err(error), Some(name)) => {
                    let message = error.to_string();
                    assert!(message.contains(name), "{message}");
                    assert!(!message.contains("s3cret"), "{message}");
                }
                (result, _) => panic!("{key}: unexpected {result:?}"),
            }
        }
    }

    #[test]
    fn secret_text_reads_data_then_string_data() {
        let secret = Secret {
            data: Some(BTreeMap::from([
                ("token".to_owned(), ByteString(b"abc".to_vec())),
                ("binary".to_owned(), ByteString(vec![0xff, 0xfe])),
            ])),
            string_data: Some(BTreeMap::from([("plain".to_owned(), "xyz".to_owned())])),
            ..Secret::default()
        };
        let cases = [
            ("token", Ok("abc")),
            ("plain", Ok("xyz")),
            ("missing", Err("has no key \"missing\"")),
            ("binary", Err("is not UTF-8 text")),
        ];
        for (key, expected) in cases {
            let result = secret_text(&secret, "demo", "prom", key);
            match (result, expected) {
                (Ok(text), Ok(want)) => assert_eq!(text, want),
                (Err(error), Err(want)) => {
                    let message = error.to_string();
                    assert!(message.contains(want), "{message}");
                    assert!(message.contains("demo/prom"), "{message}");
                }
                (result, _) => panic!("{key}: unexpected {result:?}"),
            }
        }
    }

    #[test]
    fn status_text_has_code_and_reason() {
        assert_eq!(
            status_text(reqwest::StatusCode::UNAUTHORIZED),
            "401 Unauthorized"
        );
        let unusual = reqwest::StatusCode::from_u16(599).unwrap();
        assert_eq!(status_text(unusual), "599");
    }
}
