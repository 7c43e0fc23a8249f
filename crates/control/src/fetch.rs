//! Bounded plaintext HTTP GETs the control plane makes to others: the proxies' `/metrics`
//! (the scraper) and Prometheus' query API. An answer is read whole, within a size limit
//! and a deadline; a failure is one line naming its innermost cause.

use std::time::Duration;

use bytes::Bytes;
use ferry_api::cause::innermost_cause;
use http::{StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

/// A pooled HTTP/1 client for bodiless requests.
pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// Returns a new [`HttpClient`].
pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// GETs `uri` and reads the whole body, at most `limit` bytes, all within `timeout`.
pub async fn get(
    client: &HttpClient,
    uri: Uri,
    limit: usize,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), String> {
    let exchange = async {
        let rsp = client.get(uri).await.map_err(|e| innermost_cause(&e))?;
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
