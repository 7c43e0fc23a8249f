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
