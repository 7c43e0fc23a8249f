//! A minimal Kubernetes API client for `ferry check`: JSON GETs and POSTs over plain HTTP
//! (`kubectl proxy`, or a test's fake server), with an optional bearer token.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Errors talking to the API server.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The request never got an answer.
    #[error("requesting {path} from {base}")]
    Request {
        base: String,
        path: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The address or path is not a valid URI.
    #[error("invalid URI {0}")]
    Uri(String),
    /// The answer's body could not be read.
    #[error("reading the answer to {path}")]
    Body {
        path: String,
        #[source]
        source: hyper::Error,
    },
    /// The answer is not JSON.
    #[error("the answer to {path} is not JSON")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    /// The request took longer than the timeout.
    #[error("{path}: no answer within {timeout:?}")]
    Timeout {
        path: String,
        timeout: std::time::Duration,
    },
}

/// The API server's answer: status and JSON body (a `Status` object on errors).
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// Parsed body (`Value::Null` when empty).
    pub body: Value,
}

/// A connection to one API server.
pub struct KubeApi {
    base: String,
    token: Option<String>,
    timeout: std::time::Duration,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl KubeApi {
    /// A client for `base` (`http://127.0.0.1:8001`).
    pub fn new(base: &str, token: Option<String>, timeout: std::time::Duration) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            token,
            timeout,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// The base address, for messages.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Answer, KubeError> {
        self.send(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Answer, KubeError> {
        self.send(Method::POST, path, Some(body)).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, KubeError> {
        let uri: Uri = format!("{}{path}", self.base)
            .parse()
            .map_err(|_| KubeError::Uri(format!("{}{path}", self.base)))?;
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("accept", "application/json");
        if let Some(token) = &self.token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let payload = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Bytes::from(b.to_string())
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(payload))
            .map_err(|_| KubeError::Uri(path.to_string()))?;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|source| KubeError::Request {
                    base: self.base.clone(),
                    path: path.to_string(),
                    source,
                })?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|source| KubeError::Body {
                    path: path.to_string(),
                    source,
                })?
                .to_bytes();
            let body = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).map_err(|source| KubeError::Json {
                    path: path.to_string(),
                    source,
                })?
            };
            Ok(Answer { status, body })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| KubeError::Timeout {
                path: path.to_string(),
                timeout: self.timeout,
            })?
    }
}
