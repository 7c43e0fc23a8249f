//! A client for the control plane's public HTTP/JSON API (see `docs/openapi.yaml`): the one
//! way the CLI talks to `ferry-control`. Errors name the address and what to try.

use std::borrow::Borrow;
use std::time::Duration;

use bytes::Bytes;
use ferry_api::cause::innermost_cause;
use ferry_api::control_api::ApiError;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde::de::DeserializeOwned;

/// The default address of the public API.
pub const DEFAULT_API_ADDR: &str = "http://127.0.0.1:8084";
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The address is not an `http://host:port` URL.
    #[error("invalid API address {0:?}: expected a URL like {DEFAULT_API_ADDR}")]
    Address(String),
    /// Nothing answered at the address.
    #[error("cannot reach the control plane at {addr}: {reason} (is ferry-control running? set --api-addr or FERRY_API_ADDR)")]
    Unreachable {
        /// The API address.
        addr: String,
        /// What the connection attempt said.
        reason: String,
    },
    /// The control plane answered with an error.
    #[error("the control plane answered {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// Its `error` message, or the body.
        message: String,
    },
    /// The answer was not the JSON expected.
    #[error("unexpected answer from the control plane at {addr}")]
    Decode {
        /// The API address.
        addr: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

/// A client of one control plane's public API.
pub struct ControlClient {
    base: String,
    /// Sent as `Authorization: Bearer` when the API requires a credential.
    token: Option<String>,
}

impl ControlClient {
    /// A client for the API at `addr` (`http://host:port`).
    pub fn new(addr: &str) -> Result<Self, ControlError> {
        let base = addr.trim_end_matches('/');
        let uri: http::Uri = base
            .parse()
            .map_err(|_| ControlError::Address(addr.to_string()))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(ControlError::Address(addr.to_string()));
        }
        Ok(Self {
            base: base.to_string(),
            token: None,
        })
    }

    /// Sends `token` as a bearer credential with every request.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    fn request(&self, uri: http::Uri) -> Result<http::Request<Empty<Bytes>>, ControlError> {
        let mut req = http::Request::get(uri);
        if let Some(token) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        req.body(Empty::new())
            .map_err(|_| ControlError::Address(self.base.clone()))
    }

    /// `GET path_and_query` for a stream (Server-Sent Events): the open response body once
    /// the status is a success, or the API's error. Only the response head is bounded by
    /// the timeout; the body lasts as long as the stream.
    pub async fn stream(&self, path_and_query: &str) -> Result<Incoming, ControlError> {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let uri: http::Uri = format!("{}{path_and_query}", self.base)
            .parse()
            .map_err(|_| ControlError::Address(self.base.clone()))?;
        let req = self.request(uri)?;
        let rsp = tokio::time::timeout(TIMEOUT, client.request(req))
            .await
            .map_err(|_| self.unreachable(format!("no answer within {TIMEOUT:?}")))?
            .map_err(|e| self.unreachable(innermost_cause(&e)))?;
        if rsp.status().is_success() {
            return Ok(rsp.into_body());
        }
        let status = rsp.status().as_u16();
        let body = tokio::time::timeout(TIMEOUT, rsp.into_body().collect())
            .await
            .map_err(|_| self.unreachable(format!("no answer within {TIMEOUT:?}")))?
            .map_err(|e| self.unreachable(e.to_string()))?
            .to_bytes();
        let message = serde_json::from_slice::<ApiError>(&body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).trim().to_string());
        Err(ControlError::Status { status, message })
    }

    fn unreachable(&self, reason: String) -> ControlError {
        ControlError::Unreachable {
            addr: self.base.clone(),
            reason,
        }
    }

    /// `GET path_and_query`, decoded from JSON.
    pub async fn get<T: DeserializeOwned>(&self, path_and_query: &str) -> Result<T, ControlError> {
        let unreachable = |reason: String| ControlError::Unreachable {
            addr: self.base.clone(),
            reason,
        };
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let uri: http::Uri = format!("{}{path_and_query}", self.base)
            .parse()
            .map_err(|_| ControlError::Address(self.base.clone()))?;
        let req = self.request(uri)?;
        let exchange = async {
            let rsp = client
                .request(req)
                .await
                .map_err(|e| unreachable(innermost_cause(&e)))?;
            let status = rsp.status();
            let body = rsp
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            Ok::<_, ControlError>((status, body))
        };
        let (status, body) = tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer within {TIMEOUT:?}")))??;
        if !status.is_success() {
            let message = serde_json::from_slice::<ApiError>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).trim().to_string());
            return Err(ControlError::Status {
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_slice(&body).map_err(|source| ControlError::Decode {
            addr: self.base.clone(),
            source,
        })
    }
}

impl ControlClient {
    /// `POST path` with the JSON `body`, the answer decoded from JSON (the API's actions).
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, ControlError> {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let uri: http::Uri = format!("{}{path}", self.base)
            .parse()
            .map_err(|_| ControlError::Address(self.base.clone()))?;
        let mut req =
            http::Request::post(uri).header(http::header::CONTENT_TYPE, "application/json");
        if let Some(token) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|_| ControlError::Address(self.base.clone()))?;
        let exchange = async {
            let rsp = client
                .request(req)
                .await
                .map_err(|e| self.unreachable(innermost_cause(&e)))?;
            let status = rsp.status();
            let body = rsp
                .into_body()
                .collect()
                .await
                .map_err(|e| self.unreachable(e.to_string()))?
                .to_bytes();
            Ok::<_, ControlError>((status, body))
        };
        let (status, body) = tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| self.unreachable(format!("no answer within {TIMEOUT:?}")))??;
        if !status.is_success() {
            let message = serde_json::from_slice::<ApiError>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).trim().to_string());
            return Err(ControlError::Status {
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_slice(&body).map_err(|source| ControlError::Decode {
            addr: self.base.clone(),
            source,
        })
    }
}

/// Encodes `pairs` as a query string (`a=1&b=x+y`), the way the API's query extractor
/// decodes it.
pub fn query_string<I, K, V>(pairs: I) -> String
where
    I: IntoIterator,
    I::Item: Borrow<(K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}
