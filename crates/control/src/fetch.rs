//! Bounded HTTP GETs the control plane makes to others: the proxies' `/metrics` (the
//! scraper) and Prometheus' query API in plaintext, and `jwksURI`s over http or https
//! ([`tls`]). An answer is read whole, within a size limit and a deadline; a failure is one
//! line naming its innermost cause (for TLS, what is wrong with the certificate).

pub mod tls;

use std::time::Duration;

use bytes::Bytes;
use ferry_api::cause::innermost_cause;
use http::{StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A pooled HTTP/1 client for bodiless requests.
pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// How long a connection attempt may take. The client finishes a connection attempt in the
/// background even after its request gave up (to pool the connection), so without this a
/// round of scrapes to pods that no longer answer leaves each attempt, its buffers and its
/// task alive for the kernel's whole SYN retry time (about two minutes).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Returns a new [`HttpClient`] that keeps idle connections for reuse (one server asked
/// often: Prometheus).
pub fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    Client::builder(TokioExecutor::new()).build(connector)
}

/// Returns a new [`HttpClient`] that keeps no idle connections: for many servers each asked
/// once per interval (every proxy's `/metrics`), where a pool would hold one idle
/// connection and its buffers per proxy — tens of MB at 10,000 proxies — to save one
/// handshake every interval.
pub fn client_without_pool() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector)
}

/// GETs `uri` and reads the whole body, at most `limit` bytes, all within `timeout`.
pub async fn get<C>(
    client: &Client<C, Empty<Bytes>>,
    uri: Uri,
    limit: usize,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), String>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let exchange = async {
        let rsp = client
            .get(uri)
            .await
            .map_err(|e| tls::describe(&e).unwrap_or_else(|| innermost_cause(&e)))?;
        let status = rsp.status();
        let body = Limited::new(rsp.into_body(), limit)
            .collect()
            .await
            .map_err(|e| innermost_cause(e.as_ref()))?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}
