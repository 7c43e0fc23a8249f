//! Service discovery from the control plane: one `Destination.Get` stream per service name
//! (or per `IP:port` a redirected connection went to), folded into its current endpoint set
//! and published on a `watch` channel.
//!
//! The last known set survives the control plane: when a stream breaks, the proxy keeps
//! routing with what it knew, reconnects with backoff, and takes the first message of the
//! new stream as the whole new state. Balancing over the set is [`crate::balance`]'s job.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use linkerd2_proxy_api::destination::{
    self as api, destination_client::DestinationClient, update::Update,
};
use serde::Serialize;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use crate::config::Authority;

/// Backoff between reconnects to the control plane: doubles from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// What discovery knows about one endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointMeta {
    /// Labels for the proxy's outbound metrics (`dst_` is prepended there).
    pub labels: BTreeMap<String, String>,
    /// The peer's expected TLS identity, when it is meshed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

/// The current answer for one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Nothing heard from the control plane yet.
    Pending,
    /// The name has these endpoints (never empty).
    Endpoints(Arc<BTreeMap<SocketAddr, EndpointMeta>>),
    /// The name has no endpoints; `exists` says whether the name is known at all.
    NoEndpoints {
        /// Whether the control plane knows the name.
        exists: bool,
    },
}

/// The connection to the control plane, as `/state` shows it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StreamState {
    /// Whether the name's stream is open now.
    pub connected: bool,
    /// Streams opened so far (reconnects show as more than one).
    pub streams_opened: u64,
    /// Why the last stream ended, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// What one kind of control-plane stream carries: how to open it for a name, and how its
/// messages fold into the name's current value. Destinations ([`DestinationFeed`]) and
/// outbound policies ([`crate::policy::PolicyFeed`]) share the rest: one stream per name,
/// reconnects with backoff keeping the last value, and the stream closed when nobody
/// listens any more.
pub trait Feed: Clone + Send + Sync + 'static {
    /// The current answer for one name.
    type Value: Clone + Send + Sync + std::fmt::Debug + 'static;
    /// The answer before the control plane has said anything.
    fn pending() -> Self::Value;
    /// The answer's state word for `/state`.
    fn describe(value: &Self::Value) -> &'static str;
    /// Opens `name`'s stream and publishes each new answer on `tx` until it ends; `opened`
    /// is called once the control plane has accepted the stream.
    fn stream(
        &mut self,
        name: &Authority,
        tx: &watch::Sender<Self::Value>,
        opened: impl FnOnce() + Send,
    ) -> impl std::future::Future<Output = Result<(), tonic::Status>> + Send;
}

/// One name's live answer. The map holds a sender, not a receiver, so that the name's
/// stream ends when the last user (a balancer) lets its receiver go: its task then removes
/// the entry and the stream to the control plane is closed (issue #20: idle destinations
/// are freed).
struct Name<V> {
    tx: watch::Sender<V>,
    stream: Arc<Mutex<StreamState>>,
}

type Names<V> = Arc<Mutex<HashMap<Authority, Name<V>>>>;

/// One stream per name to the control plane, of one [`Feed`].
pub struct Streams<F: Feed> {
    feed: F,
    names: Names<F::Value>,
}

/// Resolves service names through the control plane's destination service.
pub type Resolver = Streams<DestinationFeed>;

/// The destination service's `Get`: endpoints of a name.
#[derive(Clone)]
pub struct DestinationFeed {
    client: DestinationClient<Channel>,
    context_token: String,
}

/// A name's entry in `/state`.
#[derive(Serialize)]
pub struct NameState {
    /// The name, or the `IP:port` of a redirected connection's original destination.
    pub name: String,
    /// `name` or `address`.
    pub kind: &'static str,
    /// For destinations `pending`, `endpoints`, `no-endpoints` or `unknown-name`; for
    /// policies `pending`, `routes` or `none`.
    pub state: &'static str,
    /// The stream to the control plane.
    pub stream: StreamState,
}

/// The control plane's gRPC channel at `addr` (lazy; with `tls`, verifying its identity).
pub fn channel(
    addr: &Authority,
    connect_timeout: Duration,
    tls: Option<crate::tls::ControlTls>,
) -> Result<Channel, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(connect_timeout)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10));
    Ok(match tls {
        Some(tls) => endpoint.connect_with_connector_lazy(tls.connector(addr.clone())),
        None => endpoint.connect_lazy(),
    })
}

impl Resolver {
    /// A resolver using the destination service on `channel` (see [`channel`]).
    pub fn new(channel: Channel, context_token: String) -> Self {
        Self::with_feed(DestinationFeed {
            client: DestinationClient::new(channel),
            context_token,
        })
    }
}

impl<F: Feed> Streams<F> {
    /// Streams of `feed`.
    pub fn with_feed(feed: F) -> Self {
        Self {
            feed,
            names: Arc::default(),
        }
    }

    /// The live answer for `name`, starting its stream on first use. The stream lasts while
    /// a receiver for the name does: when the last one is dropped, the stream is closed and
    /// the name forgotten.
    pub fn resolve(&self, name: &Authority) -> watch::Receiver<F::Value> {
        let mut names = lock(&self.names);
        if let Some(n) = names.get(name) {
            return n.tx.subscribe();
        }
        let (tx, rx) = watch::channel(F::pending());
        let stream = Arc::new(Mutex::new(StreamState::default()));
        let task = Watch {
            feed: self.feed.clone(),
            name: name.clone(),
            tx: tx.clone(),
            stream: stream.clone(),
            names: self.names.clone(),
        };
        tokio::spawn(task.run());
        names.insert(name.clone(), Name { tx, stream });
        rx
    }

    /// How many names (and addresses) have a stream to the control plane now.
    pub fn len(&self) -> usize {
        lock(&self.names).len()
    }

    /// Whether no name has a stream.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every name resolved so far, for `/state`.
    pub fn state(&self) -> Vec<NameState> {
        let names = lock(&self.names);
        let mut out: Vec<NameState> = names
            .iter()
            .map(|(name, n)| NameState {
                name: name.to_string(),
                kind: match name.socket_addr() {
                    Some(_) => "address",
                    None => "name",
                },
                state: F::describe(&n.tx.borrow()),
                stream: n.stream.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

fn lock<V>(names: &Names<V>) -> std::sync::MutexGuard<'_, HashMap<Authority, Name<V>>> {
    names.lock().unwrap_or_else(|e| e.into_inner())
}

/// One name's stream, reopened with backoff until nobody listens any more.
struct Watch<F: Feed> {
    feed: F,
    name: Authority,
    tx: watch::Sender<F::Value>,
    stream: Arc<Mutex<StreamState>>,
    names: Names<F::Value>,
}

impl<F: Feed> Watch<F> {
    /// Whether nobody listens any more; if so the name is forgotten (under the map's lock,
    /// so a `resolve` racing with this either subscribed before, and keeps the stream, or
    /// comes after and starts a new one).
    fn release(&self) -> bool {
        let mut names = lock(&self.names);
        if self.tx.receiver_count() > 0 {
            return false;
        }
        names.remove(&self.name);
        tracing::debug!(name = %self.name, "unused; stream closed");
        true
    }

    async fn run(mut self) {
        let mut backoff = BACKOFF.0;
        loop {
            let tx = self.tx.clone();
            let stream = self.stream.clone();
            let opened = move || {
                let mut s = stream.lock().unwrap_or_else(|e| e.into_inner());
                s.connected = true;
                s.streams_opened += 1;
            };
            let ended = tokio::select! {
                ended = self.feed.stream(&self.name, &tx, opened) => ended,
                _ = tx.closed() => {
                    if self.release() {
                        return;
                    }
                    continue;
                }
            };
            let healthy = ended.is_ok();
            let reason = match ended {
                Ok(()) => "stream ended by the control plane".to_string(),
                Err(status) => format!("{}: {}", status.code(), status.message()),
            };
            tracing::debug!(name = %self.name, %reason, ?backoff, "control-plane stream lost; keeping the last answer");
            {
                let mut s = self.stream.lock().unwrap_or_else(|e| e.into_inner());
                s.connected = false;
                s.last_error = Some(reason);
            }
            backoff = if healthy {
                BACKOFF.0
            } else {
                (backoff * 2).min(BACKOFF.1)
            };
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.tx.closed() => if self.release() { return },
            }
        }
    }
}

impl Feed for DestinationFeed {
    type Value = Resolution;

    fn pending() -> Resolution {
        Resolution::Pending
    }

    fn describe(value: &Resolution) -> &'static str {
        match value {
            Resolution::Pending => "pending",
            Resolution::Endpoints(_) => "endpoints",
            Resolution::NoEndpoints { exists: true } => "no-endpoints",
            Resolution::NoEndpoints { exists: false } => "unknown-name",
        }
    }

    /// Opens a `Get` stream and applies its updates until it ends.
    async fn stream(
        &mut self,
        name: &Authority,
        tx: &watch::Sender<Resolution>,
        opened: impl FnOnce() + Send,
    ) -> Result<(), tonic::Status> {
        let req = api::GetDestination {
            scheme: String::new(),
            path: name.to_string(),
            context_token: self.context_token.clone(),
        };
        let mut updates = self.client.get(req).await?.into_inner();
        opened();
        // The first message of a stream is the whole state, not a change to the old one.
        let mut current: Option<BTreeMap<SocketAddr, EndpointMeta>> = None;
        while let Some(update) = updates.message().await? {
            let Some(update) = update.update else {
                continue;
            };
            let next = apply(current.take().unwrap_or_default(), update);
            let resolution = match &next {
                Ok(endpoints) => Resolution::Endpoints(Arc::new(endpoints.clone())),
                Err(exists) => Resolution::NoEndpoints { exists: *exists },
            };
            current = Some(next.unwrap_or_default());
            tracing::debug!(%name, ?resolution, "destination update");
            tx.send_replace(resolution);
        }
        Ok(())
    }
}

/// Applies one update to an endpoint set: `Ok` with the new, non-empty set, or `Err(exists)`
/// when the name has no endpoints.
pub fn apply(
    mut endpoints: BTreeMap<SocketAddr, EndpointMeta>,
    update: Update,
) -> Result<BTreeMap<SocketAddr, EndpointMeta>, bool> {
    match update {
        Update::Add(set) => {
            for addr in set.addrs {
                let Some(Ok(sa)) = addr.addr.map(SocketAddr::try_from) else {
                    continue;
                };
                let mut labels: BTreeMap<String, String> =
                    set.metric_labels.clone().into_iter().collect();
                labels.extend(addr.metric_labels);
                let identity = addr.tls_identity.and_then(|t| match t.strategy {
                    Some(api::tls_identity::Strategy::DnsLikeIdentity(d)) => Some(d.name),
                    Some(api::tls_identity::Strategy::UriLikeIdentity(u)) => Some(u.uri),
                    None => None,
                });
                endpoints.insert(sa, EndpointMeta { labels, identity });
            }
        }
        Update::Remove(set) => {
            for addr in set.addrs {
                if let Ok(sa) = SocketAddr::try_from(addr) {
                    endpoints.remove(&sa);
                }
            }
        }
        Update::NoEndpoints(ne) => return Err(ne.exists),
    }
    if endpoints.is_empty() {
        Err(true)
    } else {
        Ok(endpoints)
    }
}

/// A stream of a control plane's answers, as one of its streaming calls returns them.
pub type Answers<T> =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, tonic::Status>> + Send>>;

/// Calls Ferry's streaming method `path` (Linkerd's message with Ferry's extensions) on
/// `channel`; when the control plane does not serve it (`Unimplemented`), calls Linkerd's
/// own with `linkerd` and reads its messages as Ferry's without extensions.
pub async fn ferry_or_linkerd<Req, Ferry, Linkerd, Fut>(
    channel: &Channel,
    path: &'static str,
    req: Req,
    linkerd: impl FnOnce(Req) -> Fut,
) -> Result<Answers<Ferry>, tonic::Status>
where
    Req: tonic_prost::prost::Message + Clone + 'static,
    Ferry: tonic_prost::prost::Message + Default + From<Linkerd> + 'static,
    Linkerd: Send + 'static,
    Fut: std::future::Future<
        Output = Result<tonic::Response<tonic::Streaming<Linkerd>>, tonic::Status>,
    >,
{
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("control plane: {e}")))?;
    let codec = tonic_prost::ProstCodec::<Req, Ferry>::default();
    let call = tonic::Request::new(req.clone());
    match grpc
        .server_streaming(call, http::uri::PathAndQuery::from_static(path), codec)
        .await
    {
        Ok(rsp) => Ok(Box::pin(rsp.into_inner())),
        Err(status) if status.code() == tonic::Code::Unimplemented => {
            let rsp = linkerd(req).await?;
            Ok(Box::pin(tokio_stream::StreamExt::map(
                rsp.into_inner(),
                |m| m.map(Ferry::from),
            )))
        }
        Err(status) => Err(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linkerd2_proxy_api::net::TcpAddress;

    fn add(addrs: &[&str], pod: &str) -> Update {
        Update::Add(api::WeightedAddrSet {
            addrs: addrs
                .iter()
                .map(|a| api::WeightedAddr {
                    addr: Some(TcpAddress::from(a.parse::<SocketAddr>().unwrap())),
                    weight: 10_000,
                    metric_labels: [("pod".to_string(), pod.to_string())].into(),
                    ..Default::default()
                })
                .collect(),
            metric_labels: [("service".to_string(), "echo".to_string())].into(),
        })
    }

    fn remove(addrs: &[&str]) -> Update {
        Update::Remove(api::AddrSet {
            addrs: addrs
                .iter()
                .map(|a| TcpAddress::from(a.parse::<SocketAddr>().unwrap()))
                .collect(),
        })
    }

    #[test]
    fn adds_removes_and_no_endpoints_fold_into_a_set() {
        let set = apply(BTreeMap::new(), add(&["127.0.0.1:1", "127.0.0.1:2"], "a")).unwrap();
        assert_eq!(set.len(), 2);
        let meta = &set[&"127.0.0.1:1".parse().unwrap()];
        assert_eq!(meta.labels["pod"], "a");
        assert_eq!(
            meta.labels["service"], "echo",
            "set labels apply to every endpoint"
        );

        // An add for a known address replaces its metadata.
        let set = apply(set, add(&["127.0.0.1:2"], "b")).unwrap();
        assert_eq!(set[&"127.0.0.1:2".parse().unwrap()].labels["pod"], "b");

        let set = apply(set, remove(&["127.0.0.1:1"])).unwrap();
        assert_eq!(
            set.keys().map(|a| a.to_string()).collect::<Vec<_>>(),
            ["127.0.0.1:2"]
        );
        assert_eq!(
            apply(set.clone(), remove(&["127.0.0.1:2"])),
            Err(true),
            "the last one gone: no endpoints"
        );
        assert_eq!(
            apply(set, Update::NoEndpoints(api::NoEndpoints { exists: false })),
            Err(false)
        );
    }
}
