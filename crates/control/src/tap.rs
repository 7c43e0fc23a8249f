//! The tap relay: `GET /api/v1/tap` as Server-Sent Events. It resolves the tapped resource
//! to its instances ([`select`]), calls `tap.Tap/Observe` on every instance's proxy at
//! once, merges their events ([`convert`] makes them JSON), shows at most `maxRps`
//! requests a second (token bucket over requests: a request skipped skips its response
//! events too) and stops after `limit` requests. A response a proxy made keeps its
//! `proxyError` from its `rsp` on its `end`. When the client goes away, every upstream
//! stream is dropped, which ends the taps on the proxies.
//!
//! With the identity CA on, the relay dials each proxy over mTLS with the control plane's
//! own certificate ([`crate::identity::own`]) and requires the proxy to prove the identity
//! discovery gives its instance. Header values come redacted by the proxies; `showHeaders`
//! asks for them unredacted, which only a control plane started with
//! `--tap-allow-unredacted-headers` relays (else `403`). At most
//! [`RelayConfig::max_concurrent`] taps are relayed at once (else `429`).

pub mod convert;
pub mod select;

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ferry_api::control_api::ApiError;
use ferry_api::tap::{
    TapEventKind, TapQuery, DEFAULT_MAX_RPS, SSE_EVENT_ERROR, TAP_PATH, UNREDACTED_METADATA,
};
use linkerd2_proxy_api::tap::{tap_client::TapClient, ObserveRequest, TapEvent as PbEvent};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::discovery::Discovery;
use crate::identity::own::OwnIdentity;
use select::{SelectError, Target};

/// Taps the control plane relays at once unless configured (`--tap-max-concurrent`).
pub const DEFAULT_MAX_CONCURRENT: usize = 32;

/// How the relay runs (flags of `ferry-control`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayConfig {
    /// Most taps relayed at once; more are answered `429`.
    pub max_concurrent: usize,
    /// Whether callers may ask for unredacted header values (`showHeaders=true`).
    pub allow_unredacted: bool,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            allow_unredacted: false,
        }
    }
}

/// The relay's settings and state, shared by its requests.
#[derive(Clone)]
pub struct Relay {
    config: RelayConfig,
    /// The control plane's own identity: with it, proxies are tapped over mTLS.
    own: Option<Arc<OwnIdentity>>,
    slots: Arc<Semaphore>,
}

impl Default for Relay {
    fn default() -> Self {
        Self::new(RelayConfig::default(), None)
    }
}

impl Relay {
    /// A relay as `config` says, tapping over mTLS as `own` when given.
    pub fn new(config: RelayConfig, own: Option<Arc<OwnIdentity>>) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(config.max_concurrent)),
            config,
            own,
        }
    }
}

#[derive(Clone)]
struct RelayState<D> {
    discovery: D,
    relay: Relay,
}

/// How long connecting to one proxy's tap server and starting the tap may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How often an idle stream gets an SSE comment, which is also how a gone client is noticed.
pub const KEEP_ALIVE: Duration = Duration::from_secs(1);
/// Events buffered between the proxies and the relay, and between the relay and the client.
const BUFFER: usize = 1024;

/// The tap routes, for merging into the public API (of any state type).
pub fn router<D: Discovery, S: Clone + Send + Sync + 'static>(
    discovery: D,
    relay: Relay,
) -> Router<S> {
    Router::new()
        .route(TAP_PATH, get(tap::<D>))
        .with_state(RelayState { discovery, relay })
}

async fn tap<D: Discovery>(
    State(RelayState { discovery, relay }): State<RelayState<D>>,
    query: Result<Query<TapQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let unredacted = query.show_headers == Some(true);
    if unredacted && !relay.config.allow_unredacted {
        return error(
            StatusCode::FORBIDDEN,
            "unredacted header values are not allowed by this control plane (it must be started with --tap-allow-unredacted-headers); without showHeaders, values outside the allow-list read [redacted]".to_string(),
        );
    }
    let Ok(slot) = relay.slots.clone().try_acquire_owned() else {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "the control plane already relays {} taps, its limit (--tap-max-concurrent); try again when one ends",
                relay.config.max_concurrent
            ),
        );
    };
    let max_rps = query.max_rps.unwrap_or(DEFAULT_MAX_RPS);
    if !max_rps.is_finite() || max_rps < 0.0 {
        return error(
            StatusCode::BAD_REQUEST,
            format!("invalid maxRps {max_rps}: expected a number of requests per second ≥ 0 (0: no limit)"),
        );
    }
    let state = discovery.watch().borrow().clone();
    let selected = select::targets(&state, &query)
        .and_then(|t| Ok((t, select::observe_match(&state, &query)?)));
    let (targets, r#match) = match selected {
        Ok(s) => s,
        Err(e) => {
            let status = match e {
                SelectError::BadRequest(_) => StatusCode::BAD_REQUEST,
                SelectError::NotFound(_) => StatusCode::NOT_FOUND,
                SelectError::NotTappable(_) => StatusCode::CONFLICT,
            };
            return error(status, e.to_string());
        }
    };
    let request = ObserveRequest {
        limit: query.limit.unwrap_or(0),
        r#match,
        extract: Some(extract_headers()),
    };
    tracing::debug!(resource = %query.resource, proxies = targets.len(), "tap started");
    let (out, rx) = mpsc::channel(BUFFER);
    let upstream = Upstreams {
        request,
        unredacted,
        tls: relay.own.clone(),
    };
    tokio::spawn(async move {
        run_relay(state, targets, upstream, max_rps, query.limit, out).await;
        drop(slot);
    });
    Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

fn error(status: StatusCode, error: String) -> Response {
    (status, Json(ApiError { error })).into_response()
}

/// Asks proxies for request, response and trailer headers.
fn extract_headers() -> linkerd2_proxy_api::tap::observe_request::Extract {
    use linkerd2_proxy_api::tap::observe_request::{extract, Extract};
    Extract {
        extract: Some(extract::Extract::Http(extract::Http {
            extract: Some(extract::http::Extract::Headers(
                extract::http::Headers::default(),
            )),
        })),
    }
}

/// How every proxy of one tap is called.
#[derive(Clone)]
struct Upstreams {
    request: ObserveRequest,
    /// Ask for unredacted header values.
    unredacted: bool,
    /// Dial over mTLS as this identity.
    tls: Option<Arc<OwnIdentity>>,
}

/// What an upstream task tells the relay.
enum Upstream {
    Event(usize, Box<PbEvent>),
    Error(String),
}

/// Merges the proxies' events into `out` until the client goes away, the limit is met,
/// or every proxy's stream ended; then stops every upstream stream.
async fn run_relay(
    state: std::sync::Arc<crate::model::ClusterState>,
    targets: Vec<Target>,
    request: Upstreams,
    max_rps: f64,
    limit: Option<u32>,
    out: mpsc::Sender<Result<Event, Infallible>>,
) {
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let (tx, mut rx) = mpsc::channel(BUFFER);
    for (i, target) in targets.iter().enumerate() {
        tokio::spawn(observe(
            i,
            target.clone(),
            request.clone(),
            tx.clone(),
            stop.clone(),
        ));
    }
    drop(tx);
    let names: Vec<String> = targets.iter().map(|t| t.instance.to_string()).collect();
    let comment = format!("tapping {}", names.join(", "));
    if out
        .send(Ok(Event::default().comment(comment)))
        .await
        .is_err()
    {
        return;
    }
    let wants_headers = request.request.extract.is_some();
    let mut bucket = Bucket::new(max_rps);
    // Requests shown, with the proxy error their `rsp` named, for their `end`.
    let (mut shown, mut skipped) = (HashMap::new(), HashSet::new());
    let mut passed = 0u32;
    loop {
        let msg = tokio::select! {
            _ = out.closed() => break,
            msg = rx.recv() => msg,
        };
        let event = match msg {
            None => break,
            Some(Upstream::Error(e)) => {
                tracing::debug!(error = %e, "tap upstream failed");
                let body = ApiError { error: e };
                Event::default().event(SSE_EVENT_ERROR).json_data(body)
            }
            Some(Upstream::Event(i, e)) => {
                let Some(mut e) = convert::convert(&state, &targets[i], *e, wants_headers) else {
                    continue;
                };
                let key = (i, e.id.clone());
                match e.kind {
                    TapEventKind::Req => {
                        let full = limit.is_some_and(|l| passed >= l);
                        if full || !bucket.take() {
                            skipped.insert(key);
                            continue;
                        }
                        passed += 1;
                        shown.insert(key, None);
                    }
                    TapEventKind::Rsp => match shown.get_mut(&key) {
                        None => continue,
                        Some(reason) => reason.clone_from(&e.proxy_error),
                    },
                    TapEventKind::End => {
                        skipped.remove(&key);
                        match shown.remove(&key) {
                            None => continue,
                            // The proxy marks the response's head; its end is the same response.
                            Some(reason) => e.proxy_error = e.proxy_error.take().or(reason),
                        }
                    }
                }
                Event::default().json_data(&e)
            }
        };
        let Ok(event) = event else { continue };
        if out.send(Ok(event)).await.is_err() {
            break;
        }
        if limit.is_some_and(|l| passed >= l) && shown.is_empty() {
            break;
        }
        if skipped.len() > 100_000 {
            // Ends lost with their streams would otherwise pile up forever.
            skipped.clear();
        }
    }
    tracing::debug!("tap ended; stopping upstream taps");
}

/// Taps one proxy, forwarding its events until told to stop.
async fn observe(
    i: usize,
    target: Target,
    upstream: Upstreams,
    tx: mpsc::Sender<Upstream>,
    stop: CancellationToken,
) {
    let what = format!("tapping {} at {}", target.instance, target.tap_addr);
    let start = async {
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{}", target.tap_addr))
                .map_err(|e| e.to_string())?
                .connect_timeout(CONNECT_TIMEOUT);
        let channel = match &upstream.tls {
            None => endpoint.connect().await,
            Some(own) => {
                let config = own.client_config().map_err(|e| e.to_string())?;
                let connector = MtlsConnector {
                    config,
                    addr: target.tap_addr,
                    server_id: target.identity.clone().into(),
                };
                endpoint.connect_with_connector(connector).await
            }
        }
        .map_err(|e| ferry_api::cause::innermost_cause(&e))?;
        let mut request = tonic::Request::new(upstream.request);
        if upstream.unredacted {
            request.metadata_mut().insert(
                UNREDACTED_METADATA,
                tonic::metadata::MetadataValue::from_static("true"),
            );
        }
        let rsp = TapClient::new(channel)
            .observe(request)
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
        Ok::<_, String>(rsp.into_inner())
    };
    let started = tokio::select! {
        _ = stop.cancelled() => return,
        r = tokio::time::timeout(CONNECT_TIMEOUT, start) => r,
    };
    let mut stream = match started {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let _ = tx.send(Upstream::Error(format!("{what}: {e}"))).await;
            return;
        }
        Err(_) => {
            let _ = tx
                .send(Upstream::Error(format!(
                    "{what}: no answer within {CONNECT_TIMEOUT:?}"
                )))
                .await;
            return;
        }
    };
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => return,
            msg = stream.message() => msg,
        };
        match msg {
            Ok(Some(e)) => {
                if tx.send(Upstream::Event(i, Box::new(e))).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(status) => {
                let e = format!("{what}: stream ended: {}", status.message());
                let _ = tx.send(Upstream::Error(e)).await;
                return;
            }
        }
    }
}

/// Dials one proxy's tap server over mTLS, requiring it to be `server_id`.
#[derive(Clone)]
struct MtlsConnector {
    config: Arc<rustls::ClientConfig>,
    addr: std::net::SocketAddr,
    server_id: Arc<str>,
}

type Connecting = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = std::io::Result<
                    hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
                >,
            > + Send,
    >,
>;

impl tonic::codegen::Service<http::Uri> for MtlsConnector {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tls = crate::identity::own::connect(this.config, this.addr, &this.server_id)
                .await
                .map_err(|e| {
                    std::io::Error::other(format!("mTLS to the proxy as {}: {e}", this.server_id))
                })?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

/// Admits at most `rate` requests a second, with bursts up to one second's worth.
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// `rate` 0 admits everything.
    fn new(rate: f64) -> Self {
        Self {
            rate,
            tokens: rate.max(1.0),
            last: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        self.take_at(Instant::now())
    }

    fn take_at(&mut self, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let capacity = self.rate.max(1.0);
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_admits_rate_per_second() {
        let mut b = Bucket::new(5.0);
        let t0 = b.last;
        let admitted = (0..20).filter(|_| b.take_at(t0)).count();
        assert_eq!(admitted, 5, "a burst is one second's worth");
        let t1 = t0 + Duration::from_millis(400);
        let admitted = (0..20).filter(|_| b.take_at(t1)).count();
        assert_eq!(admitted, 2);
        let mut open = Bucket::new(0.0);
        assert!((0..1000).all(|_| open.take()));
    }
}
