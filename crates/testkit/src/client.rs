//! A small HTTP client for tests: HTTP/1 or h2c prior knowledge, responses read whole.

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    /// The trailers, if any.
    pub trailers: Option<HeaderMap>,
}

impl Reply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An HTTP/1 client with keep-alive.
pub fn http1() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An h2c (prior knowledge) client.
pub fn h2c() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// Sends `req` with `client` and reads the whole response, within 10 seconds.
pub async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> anyhow::Result<Reply> {
    let fut = async { read_reply(client.request(req).await?).await };
    tokio::time::timeout(std::time::Duration::from_secs(10), fut).await?
}

/// `GET url` over HTTP/1.
pub async fn get(url: &str) -> anyhow::Result<Reply> {
    let req = Request::get(url).body(Full::default())?;
    send(&http1(), req).await
}

/// `GET url` with `version` over a fresh client of that version.
pub async fn get_version(url: &str, version: Version) -> anyhow::Result<Reply> {
    let client = if version == Version::HTTP_2 {
        h2c()
    } else {
        http1()
    };
    let req = Request::get(url).version(version).body(Full::default())?;
    send(&client, req).await
}

/// POSTs `count` copies of `chunk` to `url` as a streamed body (never held whole), and
/// reads the whole response, within `timeout`.
pub async fn upload_stream(
    url: &str,
    chunk: Bytes,
    count: usize,
    timeout: std::time::Duration,
) -> anyhow::Result<Reply> {
    type Frame = Result<http_body::Frame<Bytes>, std::convert::Infallible>;
    let (tx, rx) = tokio::sync::mpsc::channel::<Frame>(2);
    tokio::spawn(async move {
        for _ in 0..count {
            if tx
                .send(Ok(http_body::Frame::data(chunk.clone())))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let body = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let client = Client::builder(TokioExecutor::new()).build_http();
    let fut = async { read_reply(client.request(Request::post(url).body(body)?).await?).await };
    tokio::time::timeout(timeout, fut).await?
}

async fn read_reply(rsp: http::Response<hyper::body::Incoming>) -> anyhow::Result<Reply> {
    let (parts, body) = rsp.into_parts();
    let collected = body.collect().await?;
    let trailers = collected.trailers().cloned();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    })
}
