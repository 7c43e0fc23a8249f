//! Command-line flags (each with its `FERRY_PROXY_*` twin) and the validated [`Config`]
//! every component is built from. Only `main` parses flags; tests build a `Config` directly.

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr, sync::Arc, time::Duration};

use clap::Parser;
use ferry_api::{env, ports};

use crate::{identity::IdentityConfig, orig_dst::OrigDst};

/// The ports whose connections skip protocol detection: protocols where the server speaks
/// first or that are never HTTP (SMTP, MySQL, Galera, PostgreSQL, Redis, Elasticsearch,
/// memcached). Linkerd's default list, so users' expectations carry over.
pub const DEFAULT_OPAQUE_PORTS: &str = "25,587,3306,4444,5432,6379,9300,11211";

/// The flags of `ferry-proxy`.
#[derive(Debug, Parser)]
#[command(
    name = "ferry-proxy",
    version = ferry_api::version::LONG,
    about = "Ferry's sidecar proxy",
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    /// A one-shot step instead of running the proxy.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address of the inbound listener (traffic for the application).
    #[arg(long, env = env::PROXY_INBOUND_LISTEN, default_value_t = SocketAddr::from(([0, 0, 0, 0], ports::PROXY_INBOUND)))]
    pub inbound_listen: SocketAddr,
    /// Where inbound traffic goes: the application's address.
    #[arg(long, env = env::PROXY_INBOUND_FORWARD, default_value_t = SocketAddr::from(([127, 0, 0, 1], ports::APP_DEFAULT)))]
    pub inbound_forward: SocketAddr,
    /// Send redirected inbound traffic to the original port on `--inbound-forward`'s host
    /// (loopback) instead of to the original destination (the pod IP). Only for apps that
    /// listen on loopback alone: it makes every loopback-only port of the pod reachable
    /// from the network (see `docs/security.md`).
    #[arg(long, env = env::PROXY_INBOUND_FORWARD_LOOPBACK)]
    pub inbound_forward_loopback: bool,
    /// Most metric label sets per family (HTTP, TCP) and direction; past it new ones are
    /// not created and `proxy_metrics_series_dropped_total` counts them.
    #[arg(long, env = env::PROXY_METRICS_MAX_SERIES, default_value_t = crate::metrics::Limits::DEFAULT_MAX_SERIES)]
    pub metrics_max_series: usize,
    /// Largest `/metrics` body in bytes; series past it are left out of that scrape.
    #[arg(long, env = env::PROXY_METRICS_MAX_RENDER_BYTES, default_value_t = crate::metrics::Limits::DEFAULT_MAX_RENDER_BYTES)]
    pub metrics_max_render_bytes: usize,
    /// Address of the generic outbound listener (routes HTTP by authority, TCP by original
    /// destination).
    #[arg(long, env = env::PROXY_OUTBOUND_LISTEN, default_value_t = SocketAddr::from(([127, 0, 0, 1], ports::PROXY_OUTBOUND)))]
    pub outbound_listen: SocketAddr,
    /// Address of the admin server (`/metrics`, `/ready`, `/live`, `/state`).
    #[arg(long, env = env::PROXY_ADMIN_LISTEN, default_value_t = SocketAddr::from(([0, 0, 0, 0], ports::PROXY_ADMIN)))]
    pub admin_listen: SocketAddr,
    /// Address of the tap server. Default: `0.0.0.0:4190` with identity (mTLS, only
    /// --tap-authorized-identity may tap), `127.0.0.1:4190` without (plaintext).
    #[arg(long, env = env::PROXY_TAP_LISTEN)]
    pub tap_listen: Option<SocketAddr>,
    /// With identity, the identity the control plane's gRPC server (identity and
    /// destination) must prove over TLS. Default: `ferry-control.ferry.serviceaccount.identity.ferry.<td>`.
    #[arg(long, env = env::PROXY_CONTROL_PLANE_IDENTITY)]
    pub control_plane_identity: Option<String>,
    /// Identities that may tap this proxy over mTLS (repeatable; comma-separated in the
    /// environment). Default: the control plane's, `ferry-control.ferry.serviceaccount.identity.ferry.<td>`.
    #[arg(long = "tap-authorized-identity", env = env::PROXY_TAP_AUTHORIZED_IDENTITY, value_delimiter = ',')]
    pub tap_authorized_identities: Vec<String>,
    /// Most taps running at once; more are refused with `RESOURCE_EXHAUSTED`.
    #[arg(long, env = env::PROXY_TAP_MAX_CONCURRENT, default_value_t = crate::tap::DEFAULT_MAX_TAPS, value_parser = clap::value_parser!(usize))]
    pub tap_max_concurrent: usize,
    /// An upstream listener `LOCAL_ADDR=TARGET`: what the app sends to LOCAL_ADDR goes to
    /// TARGET (`host:port`). Repeatable; comma-separated in the environment.
    #[arg(long = "upstream", env = env::PROXY_UPSTREAM, value_delimiter = ',')]
    pub upstreams: Vec<UpstreamSpec>,
    /// The control plane's destination service (`host:port`). With it, upstream targets and
    /// authorities that are names are resolved there and balanced across their endpoints.
    #[arg(long, env = env::PROXY_DESTINATION_ADDR)]
    pub destination_addr: Option<Authority>,
    /// The proxy's own namespace: sent to discovery so short names resolve in it.
    #[arg(long, env = env::PROXY_POD_NAMESPACE, default_value = "default")]
    pub pod_namespace: String,
    /// The proxy's own pod (or instance) name, sent to discovery for its logs.
    #[arg(long, env = env::PROXY_POD_NAME, default_value = "")]
    pub pod_name: String,
    /// The control plane's identity service (`host:port`); defaults to `--destination-addr`.
    #[arg(long, env = env::PROXY_IDENTITY_ADDR)]
    pub identity_addr: Option<Authority>,
    /// The token proving this proxy's service account to the identity service (read on each
    /// renewal). With `--identity-trust-anchors`, turns identity and mTLS on.
    #[arg(long, env = env::PROXY_IDENTITY_TOKEN_FILE)]
    pub identity_token_file: Option<PathBuf>,
    /// PEM trust anchors that peers' and our own certificates must chain to: a file, or the
    /// PEM itself (as Kubernetes injection passes it in the environment).
    #[arg(long, env = env::PROXY_IDENTITY_TRUST_ANCHORS)]
    pub identity_trust_anchors: Option<PathBuf>,
    /// The proxy's service account: its identity is `<sa>.<ns>.serviceaccount.identity.ferry.<td>`.
    #[arg(long, env = env::PROXY_SERVICE_ACCOUNT, default_value = "default")]
    pub service_account: String,
    /// The identity trust domain.
    #[arg(long, env = env::PROXY_TRUST_DOMAIN, default_value = ferry_api::identity::DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// Refuse inbound connections that are not mTLS from a meshed peer (plaintext HTTP gets
    /// a 403 with `l5d-proxy-error: identity-required`; other plaintext is closed).
    #[arg(long, env = env::PROXY_INBOUND_REQUIRE_IDENTITY)]
    pub inbound_require_identity: bool,
    /// The inbound authorization policy applied until the control plane has answered for a
    /// port (at most 200 ms is waited for it), and without a control plane
    /// (docs/authorization.md).
    #[arg(long, env = env::PROXY_DEFAULT_INBOUND_POLICY, value_enum, default_value = "all-unauthenticated")]
    pub default_inbound_policy: crate::authz::feed::DefaultPolicy,
    /// The networks the `cluster-*` default inbound policies admit (comma-separated CIDRs).
    #[arg(long, env = env::PROXY_CLUSTER_NETWORKS, value_delimiter = ',', default_value = crate::authz::feed::DEFAULT_CLUSTER_NETWORKS)]
    pub cluster_networks: Vec<ipnet::IpNet>,
    /// Target ports whose connections are forwarded as opaque TCP without detection.
    #[arg(long, env = env::PROXY_OPAQUE_PORTS, value_delimiter = ',', default_value = DEFAULT_OPAQUE_PORTS)]
    pub opaque_ports: Vec<u16>,
    /// How long a client that has started sending may take to show its protocol.
    #[arg(long, env = env::PROXY_DETECT_TIMEOUT, default_value = "10s", value_parser = humantime::parse_duration)]
    pub detect_timeout: Duration,
    /// How long to wait for a TCP connection to an upstream.
    #[arg(long, env = env::PROXY_CONNECT_TIMEOUT, default_value = "1s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// How long a pooled upstream HTTP connection may sit unused before it is closed.
    #[arg(long, env = env::PROXY_IDLE_TIMEOUT, default_value = "10s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// How long a destination (a name, or an address looked up for a redirected
    /// connection) that no connection holds and no request asked for keeps its balancer
    /// and its stream to the control plane.
    #[arg(long, env = env::PROXY_DESTINATION_IDLE_TIMEOUT, default_value = "60s", value_parser = humantime::parse_duration)]
    pub destination_idle_timeout: Duration,
    /// How long an upstream that has the whole request may take to send the response's
    /// head; past it the client gets 504 `response-head-timeout`. `0s` turns it off.
    #[arg(long, env = env::PROXY_RESPONSE_HEAD_TIMEOUT, default_value = "60s", value_parser = humantime::parse_duration)]
    pub response_head_timeout: Duration,
    /// How long a response stream on a shared upstream HTTP/2 connection may go unread
    /// (its client takes nothing) while the connection needs the window it holds; then
    /// the stream is reset so the connection's other streams proceed.
    #[arg(long, env = env::PROXY_STALLED_STREAM_TIMEOUT, default_value = "10s", value_parser = parse_positive_duration)]
    pub stalled_stream_timeout: Duration,
    /// How long a client may take none of what the proxy is writing to it (its socket does
    /// not drain) before its connection is closed. `0s` turns it off.
    #[arg(long, env = env::PROXY_CLIENT_WRITE_TIMEOUT, default_value = "60s", value_parser = humantime::parse_duration)]
    pub client_write_timeout: Duration,
    /// How long a response body from an upstream may bring nothing (once the request has
    /// gone whole) before the response is cut off, counted `body-idle-timeout`. `0s` turns
    /// it off.
    #[arg(long, env = env::PROXY_BODY_IDLE_TIMEOUT, default_value = "5m", value_parser = humantime::parse_duration)]
    pub body_idle_timeout: Duration,
    /// How long a client's HTTP/2 connection may bring no new request before it gets
    /// GOAWAY (streams already open go on to their end). `0s` turns it off.
    #[arg(long, env = env::PROXY_HTTP2_IDLE_TIMEOUT, default_value = "10m", value_parser = humantime::parse_duration)]
    pub http2_idle_timeout: Duration,
    /// How many cores the proxy uses: 1 runs everything on one thread (tokio's
    /// single-threaded scheduler, no cross-thread wake-ups); more runs that many worker
    /// threads. Default: the cores the process may run on (its CPU affinity).
    #[arg(long, env = env::PROXY_CORES, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub cores: Option<u16>,
    /// How long an HTTP/1 client may take to send a request's headers (slowloris guard).
    #[arg(long, env = env::PROXY_HEADER_READ_TIMEOUT, default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,
    /// After SIGTERM, how long in-flight requests and connections may take to finish.
    #[arg(long, env = env::PROXY_SHUTDOWN_GRACE_PERIOD, default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace_period: Duration,
    /// An OTLP/gRPC collector (`host:port` or `http://host:port`, plaintext) the proxy
    /// exports spans to (docs/tracing.md). Tracing is off without it; empty turns it off.
    #[arg(long, env = env::PROXY_TRACE_COLLECTOR)]
    pub trace_collector: Option<String>,
    /// The rate, 0.0 to 1.0, at which requests that arrive without a trace context are
    /// traced; requests with one follow its sampled flag.
    #[arg(long, env = env::PROXY_TRACE_SAMPLING, default_value = "0", value_parser = crate::trace::parse_sampling)]
    pub trace_sampling: f64,
    /// Extra resource attributes of the proxy's spans, `k=v,k=v` (as
    /// `OTEL_RESOURCE_ATTRIBUTES`); `service.name` also names the workload.
    #[arg(long, env = env::PROXY_TRACE_RESOURCE_ATTRIBUTES, default_value = "")]
    pub trace_resource_attributes: String,
    /// Log filter, in `tracing` syntax (e.g. `info` or `warn,ferry_proxy=debug`).
    #[arg(long, env = env::PROXY_LOG, default_value = "info")]
    pub log: String,
    /// Log format: `plain` or `json`.
    #[arg(long, env = env::PROXY_LOG_FORMAT, default_value = "plain")]
    pub log_format: LogFormat,
}

/// The tracing flags: `None` without a collector.
fn trace_config(args: &Args) -> Result<Option<crate::trace::TraceConfig>, ConfigError> {
    let resource = crate::trace::parse_resource(&args.trace_resource_attributes)?;
    let Some(raw) = args.trace_collector.as_deref().map(str::trim) else {
        return Ok(None);
    };
    if raw.is_empty() {
        return Ok(None);
    }
    let addr = raw
        .strip_prefix("http://")
        .unwrap_or(raw)
        .trim_end_matches('/');
    let collector = addr
        .parse()
        .map_err(|_| ConfigError::TraceCollector(raw.to_string()))?;
    Ok(Some(crate::trace::TraceConfig {
        collector,
        sampling: args.trace_sampling,
        resource,
    }))
}

/// A duration that is not zero.
fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be more than zero".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// One-shot steps `ferry-proxy` can run instead of proxying.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Install the iptables rules that redirect a pod's traffic through its proxy, then exit.
    Init(crate::init::InitArgs),
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// Where a proxy forwards: a name or socket address with a port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Authority {
    /// A host name or an IP address (IPv6 without brackets).
    pub host: Arc<str>,
    /// The port.
    pub port: u16,
}

impl Authority {
    /// The socket address, when the host is an IP address.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.host
            .parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }
}

impl From<SocketAddr> for Authority {
    fn from(addr: SocketAddr) -> Self {
        Self {
            host: addr.ip().to_string().into(),
            port: addr.port(),
        }
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for Authority {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ConfigError::Authority(s.to_string());
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(addr.into());
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let valid_host = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid_host || port == 0 {
            return Err(bad());
        }
        Ok(Self {
            host: host.to_ascii_lowercase().into(),
            port,
        })
    }
}

/// One `--upstream LOCAL=TARGET` flag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamSpec {
    /// Where the proxy listens for the application.
    pub local: SocketAddr,
    /// Where that traffic goes.
    pub target: Authority,
}

impl FromStr for UpstreamSpec {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (local, target) = s
            .split_once('=')
            .ok_or_else(|| ConfigError::Upstream(s.to_string()))?;
        let local = local
            .trim()
            .parse()
            .map_err(|_| ConfigError::Upstream(s.to_string()))?;
        Ok(Self {
            local,
            target: target.trim().parse()?,
        })
    }
}

/// Why flags could not become a [`Config`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An `--upstream` value is not `LOCAL_ADDR=HOST:PORT`.
    #[error("upstream {0:?} is not LOCAL_ADDR=HOST:PORT (e.g. 127.0.0.1:7001=web.emojivoto:80)")]
    Upstream(String),
    /// A target is not `host:port`.
    #[error("target {0:?} is not HOST:PORT")]
    Authority(String),
    /// Two listeners were given the same address.
    #[error("listen address {0} is used twice")]
    DuplicateListen(SocketAddr),
    /// The inbound side would forward to the proxy's own listener.
    #[error("inbound forward address {0} is the proxy's own listener")]
    ForwardLoop(SocketAddr),
    /// Identity is on but there is no address to ask for certificates.
    #[error("identity needs --identity-addr or --destination-addr")]
    IdentityAddr,
    /// `--inbound-require-identity` without identity.
    #[error("--inbound-require-identity needs identity (--identity-token-file and --identity-trust-anchors)")]
    RequireWithoutIdentity,
    /// The trust anchors cannot be used.
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    /// `--trace-collector` is not `host:port`.
    #[error("trace collector {0:?} is not HOST:PORT or http://HOST:PORT")]
    TraceCollector(String),
    /// Another `--trace-*` flag is invalid.
    #[error(transparent)]
    Trace(#[from] crate::trace::TraceConfigError),
}

/// Timeouts, applied on both sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// See [`Args::detect_timeout`].
    pub detect: Duration,
    /// See [`Args::connect_timeout`].
    pub connect: Duration,
    /// See [`Args::idle_timeout`].
    pub idle: Duration,
    /// See [`Args::header_read_timeout`].
    pub header_read: Duration,
    /// See [`Args::destination_idle_timeout`].
    pub destination_idle: Duration,
    /// See [`Args::response_head_timeout`]; `None` when off.
    pub response_head: Option<Duration>,
    /// See [`Args::stalled_stream_timeout`].
    pub stalled_stream: Duration,
    /// See [`Args::client_write_timeout`]; `None` when off.
    pub client_write: Option<Duration>,
    /// See [`Args::body_idle_timeout`]; `None` when off.
    pub body_idle: Option<Duration>,
    /// See [`Args::http2_idle_timeout`]; `None` when off.
    pub http2_idle: Option<Duration>,
}

/// The flags' defaults (docs/proxy.md).
impl Default for Timeouts {
    fn default() -> Self {
        Self {
            detect: Duration::from_secs(10),
            connect: Duration::from_secs(1),
            idle: Duration::from_secs(10),
            header_read: Duration::from_secs(10),
            destination_idle: Duration::from_secs(60),
            response_head: Some(Duration::from_secs(60)),
            stalled_stream: Duration::from_secs(10),
            client_write: Some(Duration::from_secs(60)),
            body_idle: Some(Duration::from_secs(300)),
            http2_idle: Some(Duration::from_secs(600)),
        }
    }
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// See [`Args::inbound_listen`].
    pub inbound_listen: SocketAddr,
    /// See [`Args::inbound_forward`].
    pub inbound_forward: SocketAddr,
    /// See [`Args::inbound_forward_loopback`].
    pub inbound_forward_loopback: bool,
    /// Bounds on the metrics (see [`Args::metrics_max_series`]).
    pub metrics: crate::metrics::Limits,
    /// See [`Args::outbound_listen`].
    pub outbound_listen: SocketAddr,
    /// See [`Args::admin_listen`].
    pub admin_listen: SocketAddr,
    /// See [`Args::tap_listen`].
    pub tap_listen: SocketAddr,
    /// See [`Args::tap_authorized_identities`] (the default filled in).
    pub tap_authorized: Vec<String>,
    /// See [`Args::tap_max_concurrent`].
    pub tap_max_concurrent: usize,
    /// See [`Args::upstreams`].
    pub upstreams: Vec<UpstreamSpec>,
    /// See [`Args::destination_addr`].
    pub destination_addr: Option<Authority>,
    /// See [`Args::pod_namespace`].
    pub pod_namespace: String,
    /// See [`Args::pod_name`].
    pub pod_name: String,
    /// See [`Args::opaque_ports`].
    pub opaque_ports: Vec<u16>,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// See [`Args::shutdown_grace_period`].
    pub shutdown_grace_period: Duration,
    /// Identity and mTLS, when on.
    pub identity: Option<IdentityConfig>,
    /// See [`Args::inbound_require_identity`].
    pub inbound_require_identity: bool,
    /// See [`Args::default_inbound_policy`].
    pub default_inbound_policy: crate::authz::feed::DefaultPolicy,
    /// See [`Args::cluster_networks`].
    pub cluster_networks: Vec<ipnet::IpNet>,
    /// Why identity is off although one of its flags was given, for `run` to log.
    pub identity_off_reason: Option<&'static str>,
    /// How the generic outbound listener's connections learn their original destination:
    /// `SO_ORIGINAL_DST` always, except in in-process tests (no flag sets it).
    pub outbound_orig_dst: OrigDst,
    /// Tracing, when a collector is configured (see [`Args::trace_collector`]).
    pub trace: Option<crate::trace::TraceConfig>,
}

impl Config {
    /// Validates flags.
    pub fn from_args(args: &Args) -> Result<Self, ConfigError> {
        let config = Self {
            inbound_listen: args.inbound_listen,
            inbound_forward: args.inbound_forward,
            inbound_forward_loopback: args.inbound_forward_loopback,
            metrics: crate::metrics::Limits {
                max_series: args.metrics_max_series,
                max_render_bytes: args.metrics_max_render_bytes,
            },
            outbound_listen: args.outbound_listen,
            admin_listen: args.admin_listen,
            tap_listen: args.tap_listen.unwrap_or_else(|| {
                let ip = if identity_config(args).ok().flatten().is_some() {
                    [0, 0, 0, 0]
                } else {
                    [127, 0, 0, 1]
                };
                SocketAddr::from((ip, ports::PROXY_TAP))
            }),
            tap_authorized: if args.tap_authorized_identities.is_empty() {
                vec![ferry_api::identity::control_plane_name(
                    ferry_api::k8s::CONTROL_NAMESPACE,
                    &args.trust_domain,
                )]
            } else {
                args.tap_authorized_identities.clone()
            },
            tap_max_concurrent: args.tap_max_concurrent,
            upstreams: args.upstreams.clone(),
            destination_addr: args.destination_addr.clone(),
            pod_namespace: args.pod_namespace.clone(),
            pod_name: args.pod_name.clone(),
            opaque_ports: args.opaque_ports.clone(),
            timeouts: Timeouts {
                detect: args.detect_timeout,
                connect: args.connect_timeout,
                idle: args.idle_timeout,
                header_read: args.header_read_timeout,
                destination_idle: args.destination_idle_timeout,
                response_head: (!args.response_head_timeout.is_zero())
                    .then_some(args.response_head_timeout),
                stalled_stream: args.stalled_stream_timeout,
                client_write: (!args.client_write_timeout.is_zero())
                    .then_some(args.client_write_timeout),
                body_idle: (!args.body_idle_timeout.is_zero()).then_some(args.body_idle_timeout),
                http2_idle: (!args.http2_idle_timeout.is_zero()).then_some(args.http2_idle_timeout),
            },
            shutdown_grace_period: args.shutdown_grace_period,
            identity: identity_config(args)?,
            inbound_require_identity: args.inbound_require_identity,
            default_inbound_policy: args.default_inbound_policy,
            cluster_networks: args.cluster_networks.clone(),
            identity_off_reason: match (&args.identity_token_file, &args.identity_trust_anchors) {
                (Some(_), None) => {
                    Some("--identity-token-file is set but --identity-trust-anchors is not")
                }
                (None, Some(_)) => {
                    Some("--identity-trust-anchors is set but --identity-token-file is not")
                }
                _ => None,
            },
            outbound_orig_dst: OrigDst::Socket,
            trace: trace_config(args)?,
        };
        config.validate()?;
        if let Some(identity) = &config.identity {
            // Fail at start, naming the file, rather than run without working mTLS.
            crate::identity::Identity::new(identity.clone())?;
        }
        Ok(config)
    }

    /// A configuration for tests: every listener on `127.0.0.1:0`, short timeouts.
    pub fn for_tests(inbound_forward: SocketAddr) -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            inbound_listen: any,
            inbound_forward,
            inbound_forward_loopback: false,
            metrics: crate::metrics::Limits::default(),
            outbound_listen: any,
            admin_listen: any,
            tap_listen: any,
            tap_authorized: vec![ferry_api::identity::control_plane_name(
                ferry_api::k8s::CONTROL_NAMESPACE,
                ferry_api::identity::DEFAULT_TRUST_DOMAIN,
            )],
            tap_max_concurrent: crate::tap::DEFAULT_MAX_TAPS,
            upstreams: Vec::new(),
            destination_addr: None,
            pod_namespace: "default".into(),
            pod_name: String::new(),
            opaque_ports: DEFAULT_OPAQUE_PORTS
                .split(',')
                .map(|p| p.parse().expect("default opaque ports parse"))
                .collect(),
            timeouts: Timeouts::default(),
            shutdown_grace_period: Duration::from_secs(5),
            identity: None,
            inbound_require_identity: false,
            default_inbound_policy: crate::authz::feed::DefaultPolicy::AllUnauthenticated,
            cluster_networks: crate::authz::feed::parse_networks(
                crate::authz::feed::DEFAULT_CLUSTER_NETWORKS,
            )
            .expect("the default cluster networks parse"),
            identity_off_reason: None,
            outbound_orig_dst: OrigDst::Socket,
            trace: None,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let mut seen = Vec::new();
        let listens = [self.inbound_listen, self.outbound_listen, self.admin_listen]
            .into_iter()
            .chain(self.upstreams.iter().map(|u| u.local));
        for addr in listens {
            if addr.port() != 0 && seen.contains(&addr) {
                return Err(ConfigError::DuplicateListen(addr));
            }
            seen.push(addr);
        }
        // The proxy never forwards to itself: not to the inbound listener, nor to any other
        // of its listeners (an inbound forward to the outbound listener would be an open
        // proxy carrying the pod's identity).
        let own = [
            self.inbound_listen,
            self.outbound_listen,
            self.admin_listen,
            self.tap_listen,
        ];
        let forward = self.inbound_forward;
        let is_own = |l: &SocketAddr| {
            l.port() == forward.port()
                && (l.ip() == forward.ip()
                    || (l.ip().is_unspecified() && forward.ip().is_loopback()))
        };
        if forward == self.inbound_listen
            || own
                .iter()
                .chain(self.upstreams.iter().map(|u| &u.local))
                .any(|l| l.port() != 0 && is_own(l))
        {
            return Err(ConfigError::ForwardLoop(forward));
        }
        if self.inbound_require_identity && self.identity.is_none() {
            return Err(ConfigError::RequireWithoutIdentity);
        }
        Ok(())
    }
}

fn identity_config(args: &Args) -> Result<Option<IdentityConfig>, ConfigError> {
    let (token_file, trust_anchors) =
        match (&args.identity_token_file, &args.identity_trust_anchors) {
            (Some(t), Some(a)) => (t.clone(), a.clone()),
            // One without the other (injection sets the token file even when no anchors are
            // configured): identity stays off, as `run` logs.
            _ => return Ok(None),
        };
    let addr = args
        .identity_addr
        .clone()
        .or_else(|| args.destination_addr.clone())
        .ok_or(ConfigError::IdentityAddr)?;
    Ok(Some(IdentityConfig {
        addr,
        token_file,
        trust_anchors,
        control_plane: Some(args.control_plane_identity.clone().unwrap_or_else(|| {
            ferry_api::identity::control_plane_name(
                ferry_api::k8s::CONTROL_NAMESPACE,
                &args.trust_domain,
            )
        })),
        name: ferry_api::identity::dns_name(
            &args.service_account,
            &args.pod_namespace,
            &args.trust_domain,
        ),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upstreams_by_ip_and_name() {
        let u: UpstreamSpec = "127.0.0.1:7001=127.0.0.1:4143".parse().unwrap();
        assert_eq!(u.local, "127.0.0.1:7001".parse().unwrap());
        assert_eq!(
            u.target.socket_addr(),
            Some("127.0.0.1:4143".parse().unwrap())
        );

        let u: UpstreamSpec = "127.0.0.1:7002=Emoji.EmojiVoto:8080".parse().unwrap();
        assert_eq!(&*u.target.host, "emoji.emojivoto");
        assert_eq!(u.target.port, 8080);
        assert_eq!(u.target.socket_addr(), None);
        assert_eq!(u.target.to_string(), "emoji.emojivoto:8080");

        let u: UpstreamSpec = "[::1]:7003=[::1]:80".parse().unwrap();
        assert_eq!(u.target.to_string(), "[::1]:80");
    }

    #[test]
    fn inbound_never_forwards_to_the_proxys_own_listeners() {
        let app: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let mut config = Config::for_tests(app);
        config.admin_listen = "0.0.0.0:4191".parse().unwrap();
        config.outbound_listen = "127.0.0.1:4140".parse().unwrap();
        assert!(config.validate().is_ok());
        for own in ["127.0.0.1:4140", "127.0.0.1:4191"] {
            config.inbound_forward = own.parse().unwrap();
            assert!(
                matches!(config.validate(), Err(ConfigError::ForwardLoop(_))),
                "{own}"
            );
        }
    }

    #[test]
    fn rejects_bad_upstreams_naming_the_value() {
        for bad in [
            "127.0.0.1:7001",
            "nope=web:80",
            "127.0.0.1:1=web",
            "127.0.0.1:1=we b:80",
            "127.0.0.1:1=web:0",
        ] {
            let err = bad.parse::<UpstreamSpec>().unwrap_err().to_string();
            assert!(err.contains('"'), "{bad}: {err}");
        }
    }

    #[test]
    fn flags_have_env_twins_and_validate() {
        let args = Args::try_parse_from([
            "ferry-proxy",
            "--upstream",
            "127.0.0.1:7001=127.0.0.1:4143",
            "--upstream",
            "127.0.0.1:7001=127.0.0.1:4144",
        ])
        .unwrap();
        assert!(matches!(
            Config::from_args(&args),
            Err(ConfigError::DuplicateListen(_))
        ));

        // The flags' defaults and `Timeouts::default()` are one set of values.
        let defaults = Config::from_args(&Args::try_parse_from(["ferry-proxy"]).unwrap());
        assert_eq!(defaults.unwrap().timeouts, Timeouts::default());

        let args = Args::try_parse_from(["ferry-proxy", "--detect-timeout", "250ms"]).unwrap();
        let config = Config::from_args(&args).unwrap();
        assert_eq!(config.timeouts.detect, Duration::from_millis(250));
        assert_eq!(
            config.opaque_ports,
            vec![25, 587, 3306, 4444, 5432, 6379, 9300, 11211]
        );
        for arg in Args::command_for_tests()
            .get_arguments()
            .filter(|a| !a.is_positional())
        {
            if arg.get_id() != "help" && arg.get_id() != "version" {
                assert!(
                    arg.get_env().is_some(),
                    "--{} has no environment twin",
                    arg.get_id()
                );
            }
        }
    }

    #[test]
    fn identity_is_on_only_with_both_files() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["ferry-proxy", "--destination-addr", "127.0.0.1:8086"];
            argv.extend_from_slice(extra);
            Config::from_args(&Args::try_parse_from(argv).unwrap())
        };
        // A token without anchors (as injection writes when no anchors are configured).
        let config = parse(&["--identity-token-file", "/nonexistent/token"]).unwrap();
        assert!(config.identity.is_none());
        assert!(config
            .identity_off_reason
            .unwrap()
            .contains("trust-anchors"));
        let err = parse(&["--inbound-require-identity"]).unwrap_err();
        assert!(matches!(err, ConfigError::RequireWithoutIdentity), "{err}");
        let err = parse(&[
            "--identity-token-file",
            "/nonexistent/token",
            "--identity-trust-anchors",
            "/nonexistent/anchors.pem",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("/nonexistent/anchors.pem"), "{err}");
    }

    impl Args {
        fn command_for_tests() -> clap::Command {
            <Self as clap::CommandFactory>::command()
        }
    }
}
