//! The destination service: Linkerd's `io.linkerd.proxy.destination.Destination`, served
//! over gRPC from whatever [`Discovery`] backend runs. The identity service shares its
//! port ([`serve_with_identity`]).
//!
//! Each `Get` or `GetProfile` call gets a task that follows its lookup's shared answer
//! ([`crate::resolutions`]) and sends what changed. Streams end when the client goes away or the server shuts
//! down; a client that reconnects receives the full current state as its first message.

pub mod grpc;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use linkerd2_proxy_api::destination as pb;
use linkerd2_proxy_api::destination::destination_server::Destination;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Response, Status};

use crate::authority::{ContextToken, Lookup};
use crate::discovery::Discovery;
use crate::identity::service::IdentityService;
use crate::identity::tokens::{LocalTokens, TokenValidator};
use crate::index::{Resolution, Subscriber};
use crate::limits::{GrpcLimits, LimitedListener};
use crate::resolutions::{Answer, Resolutions, Subscription};
use crate::translate;

/// Serves the destination API on `listener` until `shutdown` completes, then ends every
/// open stream and returns once connections have closed.
pub async fn serve<D: Discovery>(
    listener: TcpListener,
    discovery: D,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    serve_with_identity::<D, LocalTokens>(listener, discovery, None, None, shutdown).await
}

/// Serves the destination API, and the identity service when given one, on the same
/// `listener` (the control plane's one gRPC port) until `shutdown` completes; over TLS
/// with `tls` (the control plane's own certificate, see [`crate::identity::own`]).
pub async fn serve_with_identity<D: Discovery, V: TokenValidator>(
    listener: TcpListener,
    discovery: D,
    identity: Option<IdentityService<V>>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let limits = GrpcLimits::default();
    let routes = crate::routes::Routes::default();
    let inbound = crate::authz::InboundConfig::default();
    serve_limited(
        listener, discovery, identity, tls, &limits, &routes, &inbound, shutdown,
    )
    .await
}

/// [`serve_with_identity`] within `limits` (docs/security.md, "Limits"), with
/// `OutboundPolicies` serving `routes` (docs/routes.md) and `InboundServerPolicies` the
/// authorization documents among them (docs/authorization.md).
#[allow(clippy::too_many_arguments)]
pub async fn serve_limited<D: Discovery, V: TokenValidator>(
    listener: TcpListener,
    discovery: D,
    identity: Option<IdentityService<V>>,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: &GrpcLimits,
    routes: &crate::routes::Routes,
    inbound: &crate::authz::InboundConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let drain = CancellationToken::new();
    let inbound_policies = crate::authz::inbound::InboundService::new(
        discovery.watch(),
        routes,
        inbound.clone(),
        drain.clone(),
    );
    let ferry_inbound = crate::authz::inbound::FerryInboundServer::new(inbound_policies.clone());
    let inbound_policies = inbound_policies
        .into_server()
        .max_decoding_message_size(limits.max_message_bytes);
    let policies =
        crate::routes::outbound::OutboundService::new(discovery.watch(), routes, drain.clone());
    let ferry_outbound = crate::routes::outbound::FerryOutboundServer::new(policies.clone());
    let outbound = policies
        .into_server()
        .max_decoding_message_size(limits.max_message_bytes);
    let service = DestinationService::new(discovery, drain.clone());
    let signal = async move {
        shutdown.await;
        drain.cancel();
    };
    let listener = LimitedListener::new(listener, limits.max_connections);
    let destination =
        grpc::Server::new(service).max_decoding_message_size(limits.max_message_bytes);
    let identity = identity.map(|identity| {
        identity
            .into_server()
            .max_decoding_message_size(limits.max_message_bytes)
    });
    let router = tonic::transport::Server::builder()
        // Pings find proxies that vanished without closing (a killed VM, a partition), so
        // their stream tasks do not linger until TCP gives up.
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_max_pending_accept_reset_streams(Some(limits.max_pending_resets))
        .add_service(destination)
        .add_service(outbound)
        .add_service(ferry_outbound)
        .add_service(inbound_policies)
        .add_service(ferry_inbound)
        .add_optional_service(identity);
    // Either way, connections count against the limit from accept to close.
    match tls {
        Some(config) => {
            let incoming = crate::identity::own::tls_incoming(listener, config);
            router.serve_with_incoming_shutdown(incoming, signal).await
        }
        None => {
            let incoming = listener.into_stream();
            router.serve_with_incoming_shutdown(incoming, signal).await
        }
    }
}

/// The destination service over a discovery backend.
#[derive(Clone, Debug)]
pub struct DestinationService<D> {
    discovery: D,
    /// One answer per distinct lookup, shared by every stream asking for it.
    resolutions: Resolutions,
    /// Cancelled at shutdown so that endless streams end and the server can drain.
    drain: CancellationToken,
}

impl<D: Discovery> DestinationService<D> {
    /// Serves lookups from `discovery`; streams end when `drain` is cancelled.
    pub fn new(discovery: D, drain: CancellationToken) -> Self {
        let resolutions = Resolutions::spawn(discovery.watch(), drain.clone());
        Self {
            discovery,
            resolutions,
            drain,
        }
    }

    /// Parses a request, rejecting paths that are not authorities at all, and subscribes
    /// to its shared answer.
    fn subscribe(&self, req: &pb::GetDestination) -> Result<(Query, Subscription), Status> {
        let caller = ContextToken::parse(&req.context_token);
        let domain = self.discovery.watch().borrow().cluster_domain.clone();
        Lookup::parse(&req.path, &domain, &caller)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let subscription = self.resolutions.subscribe(&req.path, &caller);
        let query = Query {
            path: req.path.clone(),
            caller,
        };
        Ok((query, subscription))
    }
}

/// A parsed request, for the stream's log span.
struct Query {
    path: String,
    caller: ContextToken,
}

impl Query {
    fn span(&self, rpc: &'static str) -> tracing::Span {
        tracing::info_span!(
            "destination",
            rpc,
            path = %self.path,
            ns = self.caller.ns.as_deref().unwrap_or(""),
            pod = self.caller.pod.as_deref().unwrap_or(""),
        )
    }
}

type Stream<T> = Pin<Box<dyn futures_util::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl<D: Discovery> Destination for DestinationService<D> {
    type GetStream = Stream<pb::Update>;
    type GetProfileStream = Stream<pb::DestinationProfile>;

    async fn get(
        &self,
        req: tonic::Request<pb::GetDestination>,
    ) -> Result<Response<Self::GetStream>, Status> {
        let (req, subscription) = self.subscribe(req.get_ref())?;
        let span = req.span("Get");
        let mut subscriber = Subscriber::default();
        let step = move |answer: &Answer| {
            let changes = subscriber.advance(answer.resolution.clone());
            for change in &changes {
                tracing::debug!(?change, "sending");
            }
            changes.into_iter().map(translate::update).collect()
        };
        Ok(Response::new(self.stream(subscription, step, span)))
    }

    async fn get_profile(
        &self,
        req: tonic::Request<pb::GetDestination>,
    ) -> Result<Response<Self::GetProfileStream>, Status> {
        let (req, subscription) = self.subscribe(req.get_ref())?;
        // Linkerd's convention: a name that is not a known service is rejected, which
        // tells the proxy to go on without a profile.
        let known = *subscription.rx.borrow().resolution != Resolution::NotFound;
        if !known {
            return Err(Status::invalid_argument(format!(
                "unknown destination {:?}",
                req.path
            )));
        }
        let span = req.span("GetProfile");
        let mut last = None;
        let step = move |answer: &Answer| {
            let profile = match (answer.resolution.as_ref(), &answer.lookup) {
                // An instance's own name: Linkerd answers with that endpoint.
                (
                    Resolution::Found(set),
                    Lookup::Service {
                        instance: Some(_), ..
                    },
                ) => set
                    .endpoints
                    .iter()
                    .next()
                    .map(|(addr, ep)| translate::endpoint_profile(*addr, ep)),
                (Resolution::Found(set), Lookup::Service { port, .. }) => {
                    let fqn = set.fully_qualified_name.clone().unwrap_or_default();
                    set.service
                        .as_ref()
                        .map(|svc| translate::service_profile(fqn, svc, *port))
                }
                (Resolution::Found(set), Lookup::Addr(addr)) => set
                    .endpoints
                    .get(addr)
                    .map(|ep| translate::endpoint_profile(*addr, ep)),
                _ => None,
            };
            // A service that disappears keeps its last profile: it has no routes anyway.
            match profile {
                Some(p) if last.as_ref() != Some(&p) => {
                    last = Some(p.clone());
                    vec![p]
                }
                _ => Vec::new(),
            }
        };
        Ok(Response::new(self.stream(subscription, step, span)))
    }
}

impl<D: Discovery> DestinationService<D> {
    /// The stream of what `step` returns for each answer the subscription sees, first the
    /// current one. No task or channel per stream: the server polls it when the client's
    /// connection can take more, and dropping it (the client went away) unsubscribes.
    fn stream<T, F>(&self, subscription: Subscription, step: F, span: tracing::Span) -> Stream<T>
    where
        T: Send + 'static,
        F: FnMut(&Answer) -> Vec<T> + Send + 'static,
    {
        span.in_scope(|| tracing::debug!("subscribed"));
        let state = Streaming {
            subscription,
            step,
            queue: VecDeque::new(),
            started: false,
            drain: self.drain.clone(),
            span,
        };
        Box::pin(futures_util::stream::unfold(state, Streaming::next))
    }
}

/// One destination stream's state between messages.
struct Streaming<F, T> {
    subscription: Subscription,
    step: F,
    /// Messages made from the last answer, not yet sent.
    queue: VecDeque<T>,
    started: bool,
    drain: CancellationToken,
    span: tracing::Span,
}

impl<F, T> Streaming<F, T>
where
    F: FnMut(&Answer) -> Vec<T>,
{
    async fn next(mut self) -> Option<(Result<T, Status>, Self)> {
        loop {
            if let Some(message) = self.queue.pop_front() {
                return Some((Ok(message), self));
            }
            if self.started {
                tokio::select! {
                    _ = self.drain.cancelled() => {
                        self.span.in_scope(|| tracing::debug!("ending stream for shutdown"));
                        return None;
                    }
                    changed = self.subscription.rx.changed() => if changed.is_err() {
                        // Discovery stopped: the last answer stands until the client
                        // reconnects to a control plane that has one.
                        self.span.in_scope(|| tracing::warn!("discovery stopped; ending stream"));
                        return None;
                    },
                }
            }
            self.started = true;
            let answer = Arc::clone(&self.subscription.rx.borrow_and_update());
            let _entered = self.span.enter();
            self.queue.extend((self.step)(&answer));
        }
    }
}

/// Wraps a service for a tonic router, for callers that build their own server.
pub fn server<D: Discovery>(service: DestinationService<D>) -> grpc::Server<DestinationService<D>> {
    grpc::Server::new(service)
}
