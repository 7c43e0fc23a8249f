//! In-process test servers: HTTP/1 and h2c on one port (hyper's auto builder), each request
//! answered by a handler, and a plain TCP server for opaque tests. Dropping one stops it.

use std::{convert::Infallible, future::Future, net::SocketAddr, pin::Pin, sync::Arc};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

/// The response body type handlers return.
pub type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;
type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync,
>;

/// A body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes.into())
        .map_err(|e| match e {})
        .boxed()
}

/// A running server; stopped (and its connections closed) on drop.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

impl TestServer {
    /// An HTTP server (HTTP/1 and h2c) answering every request with `handler`.
    pub async fn http<F, Fut>(handler: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |req| Box::pin(handler(req)));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind test server");
        Self::http_on(listener, handler)
    }

    /// An HTTP server on an already bound listener (to restart on a known port).
    pub fn http_on_listener<F, Fut>(listener: TcpListener, handler: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |req| Box::pin(handler(req)));
        Self::http_on(listener, handler)
    }

    fn http_on(listener: TcpListener, handler: Handler) -> Self {
        let addr = listener.local_addr().expect("bound");
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let (sock, _) = tokio::select! {
                    _ = &mut stopped => break,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let handler = handler.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let handler = handler.clone();
                        async move { Ok::<_, Infallible>(handler(req).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(sock), svc)
                        .await;
                });
            }
            conns.shutdown().await;
        });
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// A TCP server: each accepted connection is handed to `handler`.
    pub async fn tcp<F, Fut>(handler: F) -> Self
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind test server");
        let addr = listener.local_addr().expect("bound");
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    a = listener.accept() => if let Ok((sock, _)) = a { conns.spawn(handler(sock)); },
                }
            }
            conns.shutdown().await;
        });
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }
}
