//! The admin server: `/metrics` (Prometheus text), `/ready` and `/live` for anyone who can
//! reach the port (scrapers, kubelet probes); `/state` (JSON: every connection's peers and
//! targets) and `/proxy-log-level` (GET or PUT) only from loopback — elsewhere they answer
//! 403 saying so (issue #20; see `docs/security.md`).

use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::{metrics::Registry, state::ProxyState};

/// Changes the log filter at run time.
pub trait LogControl: Send + Sync {
    /// The current filter.
    fn get(&self) -> String;
    /// Replaces the filter, or says why it is invalid.
    fn set(&self, filter: &str) -> Result<(), String>;
}

/// What the admin server reads from.
pub struct Admin {
    /// The metrics to render.
    pub registry: Arc<Registry>,
    /// The state to report.
    pub state: Arc<ProxyState>,
    /// The log filter, if it can be changed.
    pub log: Option<Arc<dyn LogControl>>,
}

/// Serves the admin API on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let (sock, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(admin.handle(req, peer).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(sock), svc);
            if let Err(error) = conn.await {
                tracing::debug!(%error, "admin connection ended with an error");
            }
        });
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(body.into()))
        .expect("static response")
}

impl Admin {
    fn metrics_text(&self) -> String {
        let mut out = self.registry.encode();
        self.state.taps.encode_metrics(&mut out);
        if let Some(identity) = &self.state.identity {
            identity.encode_metrics(&mut out);
        }
        if let Some(trace) = &self.state.trace {
            trace.encode_metrics(&mut out);
        }
        out
    }

    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        if matches!(path, "/state" | "/proxy-log-level") && !peer.ip().to_canonical().is_loopback()
        {
            return text(
                StatusCode::FORBIDDEN,
                format!("{path} only answers on loopback (from inside the pod); /metrics, /ready and /live answer anyone\n"),
            );
        }
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/metrics") => Response::builder()
                .header(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )
                .body(Full::new(self.metrics_text().into()))
                .expect("static response"),
            (&Method::GET, "/live") => text(StatusCode::OK, "live\n"),
            (&Method::GET, "/ready") => match self.state.not_ready() {
                Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
                None => text(StatusCode::OK, "ready\n"),
            },
            (&Method::GET, "/state") => Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(self.state.to_json().into()))
                .expect("static response"),
            (&Method::GET, "/proxy-log-level") => match &self.log {
                Some(log) => text(StatusCode::OK, format!("{}\n", log.get())),
                None => text(StatusCode::NOT_FOUND, "log level control is not enabled\n"),
            },
            (&Method::PUT, "/proxy-log-level") => self.set_log_level(req, peer).await,
            (_, "/metrics" | "/live" | "/ready" | "/state" | "/proxy-log-level") => {
                text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: try /metrics, /ready, /live, /state\n",
            ),
        }
    }

    async fn set_log_level(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Full<Bytes>> {
        if !peer.ip().to_canonical().is_loopback() {
            return text(
                StatusCode::FORBIDDEN,
                "the log level can only be changed from localhost\n",
            );
        }
        let Some(log) = &self.log else {
            return text(StatusCode::NOT_FOUND, "log level control is not enabled\n");
        };
        let body = match Limited::new(req.into_body(), 1024).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "filter too long\n"),
        };
        let filter = String::from_utf8_lossy(&body);
        match log.set(filter.trim()) {
            Ok(()) => text(StatusCode::NO_CONTENT, ""),
            Err(e) => text(
                StatusCode::BAD_REQUEST,
                format!("invalid log filter: {e}\n"),
            ),
        }
    }
}
