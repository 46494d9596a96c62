//! A chat service stand-in: an HTTP server on a free loopback port that records every request
//! (method, path, headers, body, arrival time) and answers from a script.
//!
//! Include it next to `mod support;` with `#[path = "support/receiver.rs"] mod receiver;`.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::support::wait_for;

/// How the receiver answers one request.
#[derive(Clone, Debug)]
pub enum Answer {
    /// This status, empty body.
    Status(u16),
    /// 429 with `Retry-After: <seconds>`.
    TooManyRequests { retry_after_secs: u64 },
    /// Never answer.
    Hang,
}

/// One recorded request.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
    /// The status it was answered with (None: it hung).
    pub answered: Option<u16>,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header").to_owned())
    }

    /// Whether `X-Weir-Signature-256` is the HMAC-SHA256 of `body` under `key`, checked as a
    /// receiver should: on the raw bytes, before parsing, in constant time (`ring::hmac::verify`).
    pub fn signature_valid(&self, key: &[u8], body: &[u8]) -> bool {
        let Some(header) = self.header("x-weir-signature-256") else {
            return false;
        };
        let Some(hex) = header.strip_prefix("sha256=") else {
            return false;
        };
        if hex.len() % 2 != 0 || !hex.is_ascii() {
            return false;
        }
        let tag: Option<Vec<u8>> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
            .collect();
        let Some(tag) = tag else {
            return false;
        };
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
        ring::hmac::verify(&key, body, &tag).is_ok()
    }
}

#[derive(Default)]
struct State {
    script: VecDeque<Answer>,
    requests: Vec<Recorded>,
}

/// The running receiver; stops when dropped.
pub struct Receiver {
    state: Arc<Mutex<State>>,
    addr: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Receiver {
    /// A receiver that answers 200 to everything.
    pub async fn start() -> Self {
        Self::scripted(Vec::new()).await
    }

    /// A receiver that answers the first requests from `script`, in order, then 200.
    pub async fn scripted(script: Vec<Answer>) -> Self {
        Self::scripted_at(0, script).await
    }

    /// Like [`Receiver::scripted`], on loopback port `port` (0: any free one). With a port from
    /// [`unused_port`] a test can refuse connections first and start the receiver later.
    pub async fn scripted_at(port: u16, script: Vec<Answer>) -> Self {
        let state = Arc::new(Mutex::new(State {
            script: script.into(),
            requests: Vec::new(),
        }));
        let handler_state = state.clone();
        let handler = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let state = handler_state.clone();
            async move {
                let answer = {
                    let mut s = state.lock().unwrap();
                    let answer = s.script.pop_front().unwrap_or(Answer::Status(200));
                    let answered = match &answer {
                        Answer::Status(c) => Some(*c),
                        Answer::TooManyRequests { .. } => Some(429),
                        Answer::Hang => None,
                    };
                    s.requests.push(Recorded {
                        method,
                        path: uri.path().to_owned(),
                        headers,
                        body,
                        at: Instant::now(),
                        answered,
                    });
                    answer
                };
                match answer {
                    Answer::Status(c) => StatusCode::from_u16(c).unwrap().into_response(),
                    Answer::TooManyRequests { retry_after_secs } => Response::builder()
                        .status(429)
                        .header("retry-after", retry_after_secs.to_string())
                        .body(axum::body::Body::empty())
                        .unwrap(),
                    Answer::Hang => std::future::pending::<Response>().await,
                }
            }
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let app = axum::Router::new().fallback(handler);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            state,
            addr,
            server,
        }
    }

    /// The URL of `path` on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Requests answered with a 2xx.
    pub fn accepted(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.answered.is_some_and(|c| (200..300).contains(&c)))
            .collect()
    }

    /// Waits until `n` requests were accepted, and returns them.
    pub async fn wait_accepted(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        wait_for(&format!("{n} accepted requests"), timeout, || async {
            let got = self.accepted();
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

/// A loopback port that nothing listens on: connections to it are refused until a receiver is
/// started on it with [`Receiver::scripted_at`].
pub fn unused_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
