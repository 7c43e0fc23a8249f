//! The one server loop every demo workload uses: HTTP/1 and h2c (gRPC) on the same port,
//! told apart per connection, until shutdown. Also small response builders.

use std::{convert::Infallible, future::Future, io, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{net::TcpListener, task::JoinSet};
use tonic::body::Body;

/// Why a workload could not listen.
#[derive(Debug, thiserror::Error)]
#[error("{workload}: cannot listen on {addr}{hint}")]
pub struct BindError {
    /// The workload (`web`, `emoji`, `voting`).
    pub workload: &'static str,
    /// The address asked for.
    pub addr: SocketAddr,
    /// A hint for the common case (the port is taken).
    hint: &'static str,
    /// The operating system's reason.
    #[source]
    pub source: io::Error,
}

/// Binds `addr` for `workload`, saying which workload and port when it cannot.
pub async fn bind(workload: &'static str, addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|source| BindError {
        workload,
        addr,
        hint: if source.kind() == io::ErrorKind::AddrInUse {
            " (the port is taken by another process)"
        } else {
            ""
        },
        source,
    })
}

/// The trace-context headers (W3C and B3) an instrumented app carries from the request it
/// serves to the calls it makes for it, so that its proxies' spans join one trace.
pub const CONTEXT_HEADERS: [&str; 8] = [
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
];

tokio::task_local! {
    /// The context headers of the request being served (see [`context`]).
    static CONTEXT: Vec<(&'static str, String)>;
}

/// The trace-context headers of the request this task serves, to copy onto the calls it
/// makes (empty outside a request, or when it carried none).
pub fn context() -> Vec<(&'static str, String)> {
    CONTEXT.try_with(Clone::clone).unwrap_or_default()
}

fn context_of(headers: &http::HeaderMap) -> Vec<(&'static str, String)> {
    CONTEXT_HEADERS
        .iter()
        .filter_map(|name| Some((*name, headers.get(*name)?.to_str().ok()?.to_string())))
        .collect()
}

/// A request handler: one request in, one response out.
pub trait Handler: Send + Sync + 'static {
    /// Answers `req`.
    fn handle(
        &self,
        req: http::Request<Incoming>,
    ) -> impl Future<Output = http::Response<Body>> + Send;
}

/// Serves `handler` on `listener` (HTTP/1 and h2c) until `shutdown` completes, then closes
/// every connection.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
) {
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let handler = handler.clone();
                let context = context_of(req.headers());
                async move { Ok::<_, Infallible>(CONTEXT.scope(context, handler.handle(req)).await) }
            });
            if let Err(error) = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    connections.shutdown().await;
}

/// A response with `status`, a content type and a body.
pub fn respond(
    status: http::StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> http::Response<Body> {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Body::new(Full::new(body.into())))
        .expect("a status and a static header make a valid response")
}

/// A JSON response.
pub fn json(status: http::StatusCode, value: &serde_json::Value) -> http::Response<Body> {
    respond(status, "application/json", value.to_string())
}

/// The value of `key` in a URI's query, percent-decoded (`%3Abacon%3A` → `:bacon:`).
pub fn query_param(uri: &http::Uri, key: &str) -> Option<String> {
    form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// Percent-encodes a query value (everything but unreserved characters and `:`, which
/// stays readable so that tap shows `shortcode=:bacon:`).
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_query_values() {
        let uri: http::Uri = "/api/vote?x=1&choice=%3Abacon%3A".parse().unwrap();
        assert_eq!(query_param(&uri, "choice").as_deref(), Some(":bacon:"));
        let uri: http::Uri = "/api/vote?choice=:joy:".parse().unwrap();
        assert_eq!(query_param(&uri, "choice").as_deref(), Some(":joy:"));
        assert_eq!(query_param(&uri, "nope"), None);
        let uri: http::Uri = "/a?c=50%".parse().unwrap();
        assert_eq!(query_param(&uri, "c").as_deref(), Some("50%"));
        assert_eq!(percent_encode(":a b:"), ":a%20b:");
    }
}
