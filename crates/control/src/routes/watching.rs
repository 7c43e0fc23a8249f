//! One policy stream, for `OutboundPolicies` and `InboundServerPolicies` alike: the policy
//! as a compile function makes it from the latest cluster state, route set and fetched
//! keys, then again each time one of them changes and the result differs. No task or
//! channel per stream: the stream is an `unfold` over the shared watch channels.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::RouteSet;
use crate::authz::jwks::Keys;
use crate::model::ClusterState;

/// A stream of policy messages.
pub type Stream<M> = Pin<Box<dyn futures_util::Stream<Item = Result<M, Status>> + Send>>;

/// Makes the message from the current state; `None` while the target is unknown (a
/// stream keeps its last message until it is known again).
pub type Compile<M> = Box<dyn Fn(&ClusterState, &RouteSet, &Keys) -> Option<M> + Send + Sync>;

/// What a stream watches.
#[derive(Clone, Debug)]
pub struct Sources {
    /// Discovery's states.
    pub states: watch::Receiver<Arc<ClusterState>>,
    /// The route (and policy) documents.
    pub routes: watch::Receiver<Arc<RouteSet>>,
    /// Fetched JWK Sets, when the stream's messages carry them.
    pub keys: Option<watch::Receiver<Arc<Keys>>>,
    /// Ends every stream at shutdown.
    pub drain: CancellationToken,
}

/// One stream's state.
struct Watching<M> {
    sources: Sources,
    last: M,
    compile: Compile<M>,
}

/// The stream of `compile`'s messages: the current one (or `missing` when there is none),
/// then each change.
pub fn stream<M: Clone + PartialEq + Send + 'static>(
    mut sources: Sources,
    compile: Compile<M>,
    missing: impl FnOnce() -> Status,
) -> Result<Stream<M>, Status> {
    let first = current(&mut sources, &compile).ok_or_else(missing)?;
    let watching = Watching {
        sources,
        last: first.clone(),
        compile,
    };
    let rest = futures_util::stream::unfold(watching, Watching::next);
    let first = futures_util::stream::once(async move { Ok(first) });
    Ok(Box::pin(futures_util::StreamExt::chain(first, rest)))
}

fn current<M>(sources: &mut Sources, compile: &Compile<M>) -> Option<M> {
    let state = sources.states.borrow_and_update().clone();
    let routes = sources.routes.borrow_and_update().clone();
    let keys = sources
        .keys
        .as_mut()
        .map(|k| k.borrow_and_update().clone())
        .unwrap_or_default();
    compile(&state, &routes, &keys)
}

impl<M: Clone + PartialEq + Send + 'static> Watching<M> {
    async fn next(mut self) -> Option<(Result<M, Status>, Self)> {
        loop {
            let keys = async {
                match self.sources.keys.as_mut() {
                    Some(k) => k.changed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.sources.drain.cancelled() => return None,
                changed = self.sources.states.changed() => changed.ok()?,
                changed = self.sources.routes.changed() => changed.ok()?,
                changed = keys => if changed.is_err() {
                    // The fetcher stopped: the keys held stay as they are.
                    self.sources.keys = None;
                },
            }
            if let Some(message) = current(&mut self.sources, &self.compile) {
                if message != self.last {
                    self.last = message.clone();
                    return Some((Ok(message), self));
                }
            }
        }
    }
}

/// A policy service with one Ferry extension method: a server-streaming `Watch` of `Spec`
/// answered with `Message`s, served beside Linkerd's service on the same port (Ferry's
/// proxies ask it first; docs/routes.md and docs/authorization.md).
pub trait ExtensionWatch: Send + Sync + 'static {
    /// The request.
    type Spec: tonic_prost::prost::Message + Default + Send + 'static;
    /// Each streamed answer.
    type Message: tonic_prost::prost::Message + Send + 'static;
    /// The gRPC service's full name (`ferry.proxy.outbound.OutboundPolicies`).
    const SERVICE: &'static str;
    /// The one method's path (`/<SERVICE>/Watch`).
    const METHOD: &'static str;

    /// The stream for `spec`.
    fn watch(&self, spec: &Self::Spec) -> Result<Stream<Self::Message>, Status>;
}

/// Serves an [`ExtensionWatch`] as a tonic service (the messages are written by hand, so
/// there is no generated server).
pub struct ExtensionServer<S>(Arc<S>);

impl<S> ExtensionServer<S> {
    /// Serves `service`.
    pub fn new(service: S) -> Self {
        Self(Arc::new(service))
    }
}

impl<S> Clone for ExtensionServer<S> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<S: ExtensionWatch> tonic::server::NamedService for ExtensionServer<S> {
    const NAME: &'static str = S::SERVICE;
}

/// One call of an [`ExtensionServer`]'s method.
struct WatchCall<S>(Arc<S>);

impl<S: ExtensionWatch> tonic::server::ServerStreamingService<S::Spec> for WatchCall<S> {
    type Response = S::Message;
    type ResponseStream = Stream<S::Message>;
    type Future = tonic::codegen::BoxFuture<tonic::Response<Self::ResponseStream>, Status>;

    fn call(&mut self, req: tonic::Request<S::Spec>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.watch(req.get_ref()).map(tonic::Response::new) })
    }
}

impl<S, B> tonic::codegen::Service<http::Request<B>> for ExtensionServer<S>
where
    S: ExtensionWatch,
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let service = self.0.clone();
        if req.uri().path() != S::METHOD {
            let method = S::METHOD.rsplit('/').next().unwrap_or(S::METHOD);
            let status = Status::unimplemented(format!("{} has only {method}", S::SERVICE));
            return Box::pin(async move { Ok(status.into_http()) });
        }
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<S::Message, S::Spec>::default();
            Ok(tonic::server::Grpc::new(codec)
                .apply_max_message_size_config(Some(64 * 1024), None)
                .server_streaming(WatchCall(service), req)
                .await)
        })
    }
}
