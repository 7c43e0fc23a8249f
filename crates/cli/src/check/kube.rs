//! The Kubernetes API for `ferry check`: JSON GETs and POSTs by path through a `kube`
//! client (the user's kubeconfig, or `--api-server` with an optional bearer token), and the
//! control plane's public API through a port-forward opened on first use.

use bytes::Bytes;
use ferry_api::cause::error_chain;
use http_body_util::BodyExt;
use hyper::{Method, Request, StatusCode};
use serde_json::Value;
use tokio::sync::OnceCell;

use crate::cluster::Forward;
use crate::control::ControlClient;

/// Errors talking to the API server.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The request never got an answer.
    #[error("requesting {path} from {base}")]
    Request {
        base: String,
        path: String,
        #[source]
        source: kube::Error,
    },
    /// The address or path is not a valid URI.
    #[error("invalid URI {0}")]
    Uri(String),
    /// The answer's body could not be read.
    #[error("reading the answer to {path}")]
    Body {
        path: String,
        #[source]
        source: kube::Error,
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
    timeout: std::time::Duration,
    client: kube::Client,
    /// The public API through a port-forward, opened by the first check that needs it.
    control: OnceCell<Result<(ControlClient, Forward), String>>,
}

impl KubeApi {
    /// A client of the API server `client` talks to (`base` names it in messages).
    pub fn new(client: kube::Client, base: &str, timeout: std::time::Duration) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            timeout,
            client,
            control: OnceCell::new(),
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

    /// `GET path` from the public API of a control-plane pod in `namespace`, through a
    /// port-forward (opened once, reused by later calls): the JSON body, or what went wrong.
    pub async fn control_get(&self, namespace: &str, path: &str) -> Result<Value, String> {
        let control = self
            .control
            .get_or_init(|| async {
                let forward = tokio::time::timeout(
                    self.timeout,
                    Forward::start(self.client.clone(), namespace),
                )
                .await
                .map_err(|_| format!("no answer within {:?}", self.timeout))?
                .map_err(|e| error_chain(&e))?;
                let client = ControlClient::new(&format!("http://{}", forward.local_addr()))
                    .map_err(|e| e.to_string())?;
                Ok((client, forward))
            })
            .await;
        match control {
            Ok((client, forward)) => client
                .get::<Value>(path)
                .await
                .map_err(|e| format!("{path} through a port-forward to {}: {e}", forward.target())),
            Err(e) => Err(format!("port-forward to the control plane: {e}")),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, KubeError> {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("accept", "application/json");
        let (req, payload) = match body {
            Some(b) => (
                req.header("content-type", "application/json"),
                b.to_string().into_bytes(),
            ),
            None => (req, Vec::new()),
        };
        let req = req
            .body(kube::client::Body::from(payload))
            .map_err(|_| KubeError::Uri(path.to_string()))?;
        let exchange = async {
            let resp = self
                .client
                .send(req)
                .await
                .map_err(|source| KubeError::Request {
                    base: self.base.clone(),
                    path: path.to_string(),
                    source,
                })?;
            let status = resp.status();
            let bytes: Bytes = resp
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
