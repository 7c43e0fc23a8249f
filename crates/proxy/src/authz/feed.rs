//! Where inbound policies come from: the control plane's `InboundServerPolicies/WatchPort`
//! per inbound port (Ferry's, falling back to Linkerd's), through the same stream
//! machinery as discovery ([`crate::discover::Streams`]), and the default policy the proxy
//! was started with until the first answer, or without a control plane.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::Duration,
};

use ferry_api::policy::inbound as ext;
use ipnet::IpNet;
use linkerd2_proxy_api::{
    inbound::{self as pb, inbound_server_policies_client::InboundServerPoliciesClient},
    meta,
};
use tokio::sync::watch;
use tonic::transport::Channel;

use super::{compile, ServerPolicy};
use crate::{
    config::Authority,
    discover::{Feed, NameState, Streams},
};

/// How long the first connection to a port waits for the control plane's first answer
/// (once per port while it stays silent) before the default policy decides it.
pub const POLICY_WAIT: Duration = Duration::from_millis(200);

/// Linkerd's cluster networks, the default of `--cluster-networks`.
pub const DEFAULT_CLUSTER_NETWORKS: &str =
    "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8";

/// A default inbound policy (`--default-inbound-policy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DefaultPolicy {
    /// Every client.
    #[default]
    AllUnauthenticated,
    /// Every meshed (mTLS) client.
    AllAuthenticated,
    /// Every client in the cluster networks.
    ClusterUnauthenticated,
    /// Every meshed client in the cluster networks.
    ClusterAuthenticated,
    /// Nobody.
    Deny,
    /// Every client, each counted (`authz_name="audit"`) and logged as one that would
    /// have been denied.
    Audit,
}

impl DefaultPolicy {
    /// The policy's name (`all-unauthenticated`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::AllUnauthenticated => "all-unauthenticated",
            Self::AllAuthenticated => "all-authenticated",
            Self::ClusterUnauthenticated => "cluster-unauthenticated",
            Self::ClusterAuthenticated => "cluster-authenticated",
            Self::Deny => "deny",
            Self::Audit => "audit",
        }
    }

    /// The `Server` message a control plane would send for this default.
    pub fn server(self, cluster: &[IpNet]) -> ext::Server {
        let everywhere: Vec<IpNet> = vec![
            "0.0.0.0/0".parse().unwrap_or_default(),
            "::/0".parse().unwrap_or_default(),
        ];
        let (nets, mesh, name) = match self {
            Self::AllUnauthenticated => (everywhere, false, self.name()),
            Self::AllAuthenticated => (everywhere, true, self.name()),
            Self::ClusterUnauthenticated => (cluster.to_vec(), false, self.name()),
            Self::ClusterAuthenticated => (cluster.to_vec(), true, self.name()),
            Self::Deny => (Vec::new(), false, ""),
            Self::Audit => (everywhere, false, ext::AUDIT),
        };
        let authorizations = if name.is_empty() {
            Vec::new()
        } else {
            vec![pb::Authz {
                networks: nets
                    .into_iter()
                    .map(|n| pb::Network {
                        net: Some(n.into()),
                        except: Vec::new(),
                    })
                    .collect(),
                authentication: Some(pb::Authn {
                    permit: Some(if mesh {
                        pb::authn::Permit::MeshTls(pb::authn::PermitMeshTls {
                            clients: Some(pb::authn::permit_mesh_tls::Clients::Unauthenticated(
                                pb::authn::PermitUnauthenticated {},
                            )),
                        })
                    } else {
                        pb::authn::Permit::Unauthenticated(pb::authn::PermitUnauthenticated {})
                    }),
                }),
                labels: HashMap::new(),
                metadata: Some(meta::Metadata {
                    kind: Some(meta::metadata::Kind::Default(name.to_string())),
                }),
            }]
        };
        ext::Server {
            protocol: Some(pb::ProxyProtocol {
                kind: Some(pb::proxy_protocol::Kind::Detect(
                    pb::proxy_protocol::Detect::default(),
                )),
            }),
            server_ips: Vec::new(),
            authorizations,
            labels: HashMap::from([
                ("kind".to_string(), "default".to_string()),
                ("name".to_string(), self.name().to_string()),
            ]),
            authz_extensions: Vec::new(),
        }
    }
}

/// The current policy of one inbound port.
#[derive(Clone, Debug)]
pub enum PortState {
    /// The control plane has not answered yet.
    Pending,
    /// The port's policy.
    Server(Arc<ServerPolicy>),
}

/// `InboundServerPolicies.WatchPort`, one stream per port.
#[derive(Clone)]
pub struct InboundFeed {
    channel: Channel,
    workload: String,
    /// Published when the control plane serves no inbound policy for the port.
    default: Arc<ServerPolicy>,
}

/// Inbound policies by port, and the default.
pub struct InboundPolicies {
    default: Arc<ServerPolicy>,
    streams: Option<Streams<InboundFeed>>,
    /// One receiver per port, kept so that the port's stream lasts the proxy's life.
    ports: Mutex<HashMap<u16, PortPolicy>>,
}

/// One port's live policy.
#[derive(Clone)]
pub struct PortPolicy {
    rx: Option<watch::Receiver<PortState>>,
    default: Arc<ServerPolicy>,
    waited_in_vain: Arc<AtomicBool>,
}

impl PortPolicy {
    /// The policy now (the default until the control plane answers).
    pub fn current(&self) -> Arc<ServerPolicy> {
        match self.rx.as_ref().map(|rx| rx.borrow().clone()) {
            Some(PortState::Server(p)) => p,
            _ => self.default.clone(),
        }
    }

    /// The policy, waiting up to [`POLICY_WAIT`] for the control plane's first answer
    /// (once per port while it stays silent).
    pub async fn first(&self) -> Arc<ServerPolicy> {
        let Some(rx) = &self.rx else {
            return self.default.clone();
        };
        if matches!(&*rx.borrow(), PortState::Pending) && !self.waited_in_vain.load(Relaxed) {
            let mut rx = rx.clone();
            let answered = tokio::time::timeout(
                POLICY_WAIT,
                rx.wait_for(|s| !matches!(s, PortState::Pending)),
            )
            .await;
            if !matches!(answered, Ok(Ok(_))) {
                tracing::info!(
                    default = %self.default.server.name,
                    "no inbound policy from the control plane yet; the default policy applies"
                );
                self.waited_in_vain.store(true, Relaxed);
            }
        }
        self.current()
    }

    /// A receiver of the port's changes; `None` when the policy never changes.
    pub fn changes(&self) -> Option<watch::Receiver<PortState>> {
        self.rx.clone()
    }
}

impl InboundPolicies {
    /// Policies from the control plane on `channel` (asked for as `workload`,
    /// `<namespace>:<pod>`), or only `default` without one.
    pub fn new(default: ServerPolicy, channel: Option<(Channel, String)>) -> Self {
        let default = Arc::new(default);
        Self {
            streams: channel.map(|(channel, workload)| {
                Streams::with_feed(InboundFeed {
                    channel,
                    workload,
                    default: default.clone(),
                })
            }),
            default,
            ports: Mutex::default(),
        }
    }

    /// Whether nothing is ever refused: no control plane and a default that admits every
    /// client per connection. The inbound side then skips authorization altogether.
    pub fn is_open(&self) -> bool {
        self.streams.is_none()
            && !self.default.per_request()
            && self.default.authzs.iter().any(|a| {
                !a.audit
                    && matches!(a.authn, super::Authn::Unauthenticated)
                    && a.networks
                        .iter()
                        .any(|(n, e)| n.prefix_len() == 0 && e.is_empty())
                    && a.networks.iter().any(|(n, _)| n.addr().is_ipv4())
                    && a.networks.iter().any(|(n, _)| n.addr().is_ipv6())
            })
    }

    /// The live policy of inbound port `port`, its stream started on first use.
    pub fn port(&self, port: u16) -> PortPolicy {
        let mut ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        ports
            .entry(port)
            .or_insert_with(|| PortPolicy {
                rx: self.streams.as_ref().map(|s| s.resolve(&key(port))),
                default: self.default.clone(),
                waited_in_vain: Arc::default(),
            })
            .clone()
    }

    /// Every port's stream, for `/state`.
    pub fn state(&self) -> Vec<NameState> {
        self.streams
            .as_ref()
            .map(Streams::state)
            .unwrap_or_default()
    }
}

/// A port as a stream's name: `0.0.0.0:<port>`.
fn key(port: u16) -> Authority {
    Authority::from(SocketAddr::from(([0, 0, 0, 0], port)))
}

impl Feed for InboundFeed {
    type Value = PortState;

    fn pending() -> PortState {
        PortState::Pending
    }

    fn describe(value: &PortState) -> &'static str {
        match value {
            PortState::Pending => "pending",
            PortState::Server(_) => "server",
        }
    }

    async fn stream(
        &mut self,
        name: &Authority,
        tx: &watch::Sender<PortState>,
        opened: impl FnOnce() + Send,
    ) -> Result<(), tonic::Status> {
        let spec = pb::PortSpec {
            workload: self.workload.clone(),
            port: u32::from(name.port),
        };
        let mut updates = match self.watch(spec).await {
            Ok(updates) => updates,
            Err(status) => {
                // A control plane without inbound policies (or that does not know the
                // port): the default applies now rather than after the first wait. Asked
                // again after a backoff.
                if matches!(
                    status.code(),
                    tonic::Code::NotFound
                        | tonic::Code::Unimplemented
                        | tonic::Code::InvalidArgument
                ) && matches!(&*tx.borrow(), PortState::Pending)
                {
                    tx.send_replace(PortState::Server(self.default.clone()));
                }
                return Err(status);
            }
        };
        opened();
        while let Some(server) = tokio_stream::StreamExt::next(&mut updates)
            .await
            .transpose()?
        {
            match compile(&server) {
                Ok(policy) => {
                    tracing::debug!(port = name.port, ?policy, "inbound policy");
                    tx.send_replace(PortState::Server(Arc::new(policy)));
                }
                // The last good policy stays.
                Err(error) => {
                    tracing::warn!(port = name.port, %error, "invalid inbound policy ignored")
                }
            }
        }
        Ok(())
    }
}

impl InboundFeed {
    /// Ferry's `WatchPort` (with the JWT extensions), or Linkerd's when the control plane
    /// does not serve Ferry's.
    async fn watch(
        &mut self,
        spec: pb::PortSpec,
    ) -> Result<crate::discover::Answers<ext::Server>, tonic::Status> {
        let mut client = InboundServerPoliciesClient::new(self.channel.clone());
        crate::discover::ferry_or_linkerd(&self.channel, ext::WATCH_PORT, spec, |spec| async move {
            client.watch_port(spec).await
        })
        .await
    }
}

/// Parses `--cluster-networks`.
pub fn parse_networks(s: &str) -> Result<Vec<IpNet>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| {
            n.parse::<IpNet>()
                .or_else(|_| n.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| format!("invalid network {n:?} (want CIDR, e.g. 10.0.0.0/8)"))
        })
        .collect()
}
