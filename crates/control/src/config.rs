//! Command-line flags (each with its `FERRY_CONTROL_*` twin) and the validated [`Config`]
//! the control plane runs from. Only `main` parses flags; tests build a `Config` directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ferry_api::{env, ports};

use ferry_api::destination::DEFAULT_CLUSTER_DOMAIN;
use ferry_api::identity::DEFAULT_TRUST_DOMAIN;

use crate::discovery::file::DEFAULT_POLL_INTERVAL;
pub use crate::discovery::kubernetes::KubeSource;
use crate::identity::material::CaSource;
use crate::identity::{IdentityConfig, TOKENS_DIR};
use crate::injector::InjectorConfig;
use crate::limits::{ApiLimits, GrpcLimits, Limits};
use crate::metrics::store::SeriesLimits;
use crate::metrics::MetricsConfig;
use crate::traces::forward::ForwardConfig;
use crate::traces::store::StoreLimits;
use crate::traces::{ReceiverLimits, TraceConfig};

/// The shortest certificate lifetime accepted (tests rotate every few seconds).
pub const MIN_CERT_LIFETIME: Duration = Duration::from_secs(1);
/// The file under `--identity-dir` holding the public API's bearer token when it is exposed.
pub const API_TOKEN_FILE: &str = "api-token";

/// The longest certificate lifetime accepted (the generated issuer's own validity).
pub const MAX_CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The flags of `ferry-control`.
#[derive(Debug, Parser)]
#[command(name = "ferry-control", version = ferry_api::version::LONG, about = "Ferry's control plane")]
pub struct Args {
    /// Address of the gRPC server proxies talk to (destination API).
    #[arg(long, env = env::CONTROL_GRPC_LISTEN, default_value_t = SocketAddr::from(([0, 0, 0, 0], ports::CONTROL_GRPC)))]
    pub grpc_listen: SocketAddr,
    /// Address of the public HTTP/JSON API the CLI and dashboard use. Loopback by default;
    /// any other address requires a credential (see docs/security.md).
    #[arg(long, env = env::CONTROL_API_LISTEN, default_value_t = SocketAddr::from(([127, 0, 0, 1], ports::CONTROL_API)))]
    pub api_listen: SocketAddr,
    /// Address of a listener that answers only `/ready` and `/live` (for the kubelet, which
    /// cannot reach a loopback API). Off without it.
    #[arg(long, env = env::CONTROL_PROBE_LISTEN)]
    pub probe_listen: Option<SocketAddr>,
    /// A file holding the bearer token the public API requires (created, mode 0600, when
    /// missing). Defaults to `<identity-dir>/api-token` when the API binds a non-loopback
    /// address without Kubernetes discovery; with it, TokenReview checks callers instead.
    #[arg(long, env = env::CONTROL_API_TOKEN_FILE)]
    pub api_token_file: Option<PathBuf>,
    /// How long an API client has to send a whole request head.
    #[arg(long, env = env::CONTROL_API_HEADER_READ_TIMEOUT, default_value = "10s", value_parser = humantime::parse_duration)]
    pub api_header_read_timeout: Duration,
    /// The largest request body the API accepts.
    #[arg(long, env = env::CONTROL_API_MAX_BODY_BYTES, default_value_t = ApiLimits::default().max_body_bytes)]
    pub api_max_body_bytes: usize,
    /// API connections open at once.
    #[arg(long, env = env::CONTROL_API_MAX_CONNECTIONS, default_value_t = ApiLimits::default().max_connections)]
    pub api_max_connections: usize,
    /// Event streams (tap, stat stream) open at once.
    #[arg(long, env = env::CONTROL_API_MAX_SSE_CLIENTS, default_value_t = ApiLimits::default().max_sse_clients)]
    pub api_max_sse_clients: usize,
    /// HTTP/2 streams one gRPC connection may have open at once.
    #[arg(long, env = env::CONTROL_GRPC_MAX_CONCURRENT_STREAMS, default_value_t = GrpcLimits::default().max_concurrent_streams)]
    pub grpc_max_concurrent_streams: u32,
    /// Streams a gRPC client may reset before they are answered (HTTP/2 rapid reset).
    #[arg(long, env = env::CONTROL_GRPC_MAX_PENDING_RESETS, default_value_t = GrpcLimits::default().max_pending_resets)]
    pub grpc_max_pending_resets: usize,
    /// gRPC connections open at once.
    #[arg(long, env = env::CONTROL_GRPC_MAX_CONNECTIONS, default_value_t = GrpcLimits::default().max_connections)]
    pub grpc_max_connections: usize,
    /// The largest gRPC request message decoded.
    #[arg(long, env = env::CONTROL_GRPC_MAX_MESSAGE_BYTES, default_value_t = GrpcLimits::default().max_message_bytes)]
    pub grpc_max_message_bytes: usize,
    /// Where services and workloads are discovered from.
    #[arg(long, env = env::CONTROL_DISCOVERY, default_value = "file")]
    pub discovery: DiscoveryKind,
    /// The local workloads file to discover services from (see docs/workloads-file.md).
    #[arg(long, env = env::CONTROL_WORKLOADS_FILE)]
    pub workloads_file: Option<PathBuf>,
    /// Kubernetes discovery: a kubeconfig file instead of in-cluster configuration.
    #[arg(long, env = env::CONTROL_KUBECONFIG)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubernetes discovery: the kubeconfig context to use instead of its current one.
    #[arg(long, env = env::CONTROL_KUBE_CONTEXT)]
    pub kube_context: Option<String>,
    /// Kubernetes discovery: the cluster's DNS domain (`<svc>.<ns>.svc.<domain>`).
    /// The workloads file names its own.
    #[arg(long, env = env::CONTROL_CLUSTER_DOMAIN)]
    pub cluster_domain: Option<String>,
    /// Kubernetes discovery: the identity trust domain. The workloads file names its own.
    #[arg(long, env = env::CONTROL_TRUST_DOMAIN)]
    pub trust_domain: Option<String>,
    /// How `Certify` callers prove their service account: `tokenreview` (projected
    /// service-account tokens, the default with Kubernetes discovery) or `local` (token
    /// files under --identity-dir, the default with the workloads file).
    #[arg(long, env = env::CONTROL_TOKEN_VALIDATION)]
    pub token_validation: Option<TokenValidation>,
    /// Route documents (Gateway API HTTPRoute / GRPCRoute, Ferry's HTTPFault): a YAML file,
    /// or a directory of them; checked for edits as often as the workloads file
    /// (docs/routes.md).
    #[arg(long, env = env::CONTROL_ROUTES)]
    pub routes: Option<PathBuf>,
    /// What a pod port admits when no `Server` selects it and no annotation says otherwise:
    /// all-unauthenticated, all-authenticated, cluster-unauthenticated,
    /// cluster-authenticated, deny or audit (docs/authorization.md).
    #[arg(long, env = env::CONTROL_DEFAULT_INBOUND_POLICY, default_value = "all-unauthenticated")]
    pub default_inbound_policy: crate::authz::DefaultPolicy,
    /// The networks the cluster-* default policies admit, comma-separated (loopback is
    /// added with the workloads file).
    #[arg(long, env = env::CONTROL_CLUSTER_NETWORKS, default_value = crate::authz::DEFAULT_CLUSTER_NETWORKS)]
    pub cluster_networks: String,
    /// How often a JWTAuthentication's jwksURI is fetched again.
    #[arg(long, env = env::CONTROL_JWKS_REFRESH_INTERVAL, default_value = "5m", value_parser = humantime::parse_duration)]
    pub jwks_refresh_interval: Duration,
    /// PEM CA certificates trusted for `https` jwksURIs beside the platform's roots: the
    /// CAs of private issuers (read at start).
    #[arg(long, env = env::CONTROL_JWKS_CA_FILE)]
    pub jwks_ca_file: Option<PathBuf>,
    /// Rollouts (`ferry.io/v1alpha1` `Rollout`): a YAML file, or a directory of them (the
    /// routes' directory may hold both); checked for edits as often as the workloads file
    /// (docs/rollouts.md).
    #[arg(long, env = env::CONTROL_ROLLOUTS)]
    pub rollouts: Option<PathBuf>,
    /// Where each rollout's state is saved, so that a restart resumes it (default:
    /// `.rollout-state` in the rollouts' directory).
    #[arg(long, env = env::CONTROL_ROLLOUT_STATE_DIR)]
    pub rollout_state_dir: Option<PathBuf>,
    /// How often the workloads file (and --routes) is checked for edits.
    #[arg(long, env = env::CONTROL_WORKLOADS_POLL_INTERVAL, default_value = "250ms", value_parser = humantime::parse_duration)]
    pub workloads_poll_interval: Duration,
    /// Directory of the identity CA's state: turns the CA on. Holds the trust anchor and
    /// issuer generated on first start (unless the three files below are given) and the
    /// local per-service-account tokens (see docs/identity.md).
    #[arg(long, env = env::CONTROL_IDENTITY_DIR)]
    pub identity_dir: Option<PathBuf>,
    /// PEM trust anchors; with the two issuer files, replaces the generated CA.
    #[arg(long, env = env::CONTROL_IDENTITY_TRUST_ANCHORS_FILE)]
    pub identity_trust_anchors_file: Option<PathBuf>,
    /// PEM certificate of the issuer, signed by a trust anchor (intermediates may follow).
    #[arg(long, env = env::CONTROL_IDENTITY_ISSUER_CERTIFICATE_FILE)]
    pub identity_issuer_certificate_file: Option<PathBuf>,
    /// PEM private key of the issuer.
    #[arg(long, env = env::CONTROL_IDENTITY_ISSUER_KEY_FILE)]
    pub identity_issuer_key_file: Option<PathBuf>,
    /// How long issued workload certificates are valid (1s to 365d).
    #[arg(long, env = env::CONTROL_IDENTITY_CERT_LIFETIME, default_value = "24h", value_parser = humantime::parse_duration)]
    pub identity_cert_lifetime: Duration,
    /// How long local identity tokens (`--token-validation=local`) are valid (1s to 365d);
    /// they are rewritten at half-life.
    #[arg(long, env = env::CONTROL_IDENTITY_TOKEN_LIFETIME, default_value = "24h", value_parser = humantime::parse_duration)]
    pub identity_token_lifetime: Duration,
    /// How often the control plane scrapes every proxy's `/metrics` (100ms to 5m). With
    /// --prometheus-url, Prometheus' own scrape interval: the resolution of live stats.
    #[arg(long, env = env::CONTROL_SCRAPE_INTERVAL, default_value = "10s", value_parser = humantime::parse_duration)]
    pub scrape_interval: Duration,
    /// Answer stat and edges with PromQL from this Prometheus (`http://host:9090`)
    /// instead of scraping proxies ourselves.
    #[arg(long, env = env::CONTROL_PROMETHEUS_URL)]
    pub prometheus_url: Option<String>,
    /// Series the embedded metrics store keeps from one proxy's scrape; the rest of a
    /// scrape is left out.
    #[arg(long, env = env::CONTROL_METRICS_MAX_SERIES_PER_TARGET, default_value_t = SeriesLimits::default().per_target)]
    pub metrics_max_series_per_target: usize,
    /// Series the embedded metrics store keeps in all; no new one past it.
    #[arg(long, env = env::CONTROL_METRICS_MAX_SERIES, default_value_t = SeriesLimits::default().total)]
    pub metrics_max_series: usize,
    /// Address of the proxy-injector webhook's HTTPS server (8443 on Kubernetes); the
    /// webhook is off without it. Needs the two --injector-tls files.
    #[arg(long, env = env::CONTROL_INJECTOR_LISTEN)]
    pub injector_listen: Option<SocketAddr>,
    /// PEM certificate chain the injector serves (the Secret `ferry-proxy-injector-tls`).
    #[arg(long, env = env::CONTROL_INJECTOR_TLS_CERT_FILE)]
    pub injector_tls_cert_file: Option<PathBuf>,
    /// PEM private key of the injector's certificate.
    #[arg(long, env = env::CONTROL_INJECTOR_TLS_KEY_FILE)]
    pub injector_tls_key_file: Option<PathBuf>,
    /// Proxy image, without tag, that the injector adds to pods.
    #[arg(long, env = env::CONTROL_PROXY_IMAGE, default_value = ferry_inject::DEFAULT_PROXY_IMAGE)]
    pub proxy_image: String,
    /// Proxy version the injector adds: the image tag and `ferry.io/proxy-version`.
    #[arg(long, env = env::CONTROL_PROXY_VERSION, default_value = ferry_inject::VERSION)]
    pub proxy_version: String,
    /// OTLP/gRPC collector injected proxies export spans to (default: this control plane's
    /// receiver, `ferry-control.<namespace>.svc.<cluster domain>:4317`; empty: no
    /// tracing). A pod's `config.ferry.io/trace-collector` annotation overrides it.
    #[arg(long, env = env::CONTROL_PROXY_TRACE_COLLECTOR)]
    pub proxy_trace_collector: Option<String>,
    /// The rate (0.0–1.0) at which injected proxies trace requests without a trace context.
    /// A pod's `config.ferry.io/trace-sampling` annotation overrides it.
    #[arg(long, env = env::CONTROL_PROXY_TRACE_SAMPLING, default_value = "0", value_parser = ferry_inject::sidecar::sampling_rate)]
    pub proxy_trace_sampling: String,
    /// The control plane's own namespace, where injected proxies find it; also names its
    /// own identity, `ferry-control.<namespace>.serviceaccount.identity.ferry.<td>`.
    #[arg(long, env = env::CONTROL_NAMESPACE, default_value = ferry_api::k8s::CONTROL_NAMESPACE)]
    pub namespace: String,
    /// Most taps relayed at once; more are answered 429.
    #[arg(long, env = env::CONTROL_TAP_MAX_CONCURRENT, default_value_t = crate::tap::DEFAULT_MAX_CONCURRENT)]
    pub tap_max_concurrent: usize,
    /// Let tap callers ask for unredacted header values (`ferry tap --show-headers`):
    /// `Authorization`, `Cookie` and every header off the allow-list. Off by default.
    #[arg(long, env = env::CONTROL_TAP_ALLOW_UNREDACTED_HEADERS)]
    pub tap_allow_unredacted_headers: bool,
    /// Address of the OTLP/gRPC trace receiver proxies export spans to, or `off`.
    #[arg(long, env = env::CONTROL_TRACE_LISTEN, default_value_t = ListenAddr::On(SocketAddr::from(([0, 0, 0, 0], ports::CONTROL_OTLP))))]
    pub trace_listen: ListenAddr,
    /// The largest OTLP export request the trace receiver decodes.
    #[arg(long, env = env::CONTROL_TRACE_MAX_MESSAGE_BYTES, default_value_t = ReceiverLimits::default().max_message_bytes)]
    pub trace_max_message_bytes: usize,
    /// OTLP export requests decoded at once; more wait their turn.
    #[arg(long, env = env::CONTROL_TRACE_MAX_CONCURRENT_EXPORTS, default_value_t = ReceiverLimits::default().max_concurrent_exports)]
    pub trace_max_concurrent_exports: usize,
    /// Traces the in-memory trace store keeps; the oldest are evicted.
    #[arg(long, env = env::CONTROL_TRACE_STORE_MAX_TRACES, default_value_t = StoreLimits::default().max_traces)]
    pub trace_store_max_traces: usize,
    /// Bytes of spans the in-memory trace store keeps; the oldest traces are evicted.
    #[arg(long, env = env::CONTROL_TRACE_STORE_MAX_BYTES, default_value_t = StoreLimits::default().max_bytes)]
    pub trace_store_max_bytes: usize,
    /// Keep no traces in memory: forward received spans to --trace-collector only.
    #[arg(long, env = env::CONTROL_TRACE_NO_STORE)]
    pub trace_no_store: bool,
    /// An OTLP/gRPC collector (`http://host:4317` or `host:4317`) received spans are
    /// forwarded to, in batches; spans it cannot take in time are dropped and counted.
    #[arg(long, env = env::CONTROL_TRACE_COLLECTOR)]
    pub trace_collector: Option<String>,
    /// Spans queued for --trace-collector at most; more are dropped and counted.
    #[arg(long, env = env::CONTROL_TRACE_COLLECTOR_QUEUE_SPANS, default_value_t = ForwardConfig::new("").max_queue_spans)]
    pub trace_collector_queue_spans: usize,
    /// How long --trace-collector has to accept a batch (and a connection).
    #[arg(long, env = env::CONTROL_TRACE_COLLECTOR_TIMEOUT, default_value = "5s", value_parser = humantime::parse_duration)]
    pub trace_collector_timeout: Duration,
    /// Log filter, in `tracing` syntax (e.g. `info` or `warn,ferry_control=debug`).
    #[arg(long, env = env::CONTROL_LOG, default_value = "info")]
    pub log: String,
    /// Log format: `plain` or `json`.
    #[arg(long, env = env::CONTROL_LOG_FORMAT, default_value = "plain")]
    pub log_format: LogFormat,
}

/// A listener's address, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    /// Listen here.
    On(SocketAddr),
    /// Do not listen.
    Off,
}

impl ListenAddr {
    /// The address, when on.
    pub fn addr(self) -> Option<SocketAddr> {
        match self {
            Self::On(addr) => Some(addr),
            Self::Off => None,
        }
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::On(addr) => addr.fmt(f),
            Self::Off => f.write_str("off"),
        }
    }
}

impl std::str::FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "off" {
            return Ok(Self::Off);
        }
        s.trim()
            .parse()
            .map(Self::On)
            .map_err(|_| format!("{s:?} is neither an address like 0.0.0.0:4317 nor `off`"))
    }
}

/// The discovery backends `--discovery` chooses from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DiscoveryKind {
    /// The local workloads file (`--workloads-file`).
    File,
    /// The Kubernetes API (in-cluster, or --kubeconfig / --kube-context).
    Kubernetes,
}

/// How identity tokens are validated (`--token-validation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TokenValidation {
    /// The Kubernetes TokenReview API.
    #[value(name = "tokenreview")]
    TokenReview,
    /// Local token files the control plane writes.
    Local,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// Everything the control plane runs from, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Where the gRPC server listens.
    pub grpc_listen: SocketAddr,
    /// Where the public API listens.
    pub api_listen: SocketAddr,
    /// Where the probe listener listens, when it runs.
    pub probe_listen: Option<SocketAddr>,
    /// Who may call the public API.
    pub api_auth: ApiAuthConfig,
    /// The limits of both servers.
    pub limits: Limits,
    /// Which discovery backend runs.
    pub discovery: DiscoveryConfig,
    /// The identity CA, when it runs.
    pub identity: Option<IdentityConfig>,
    /// How the identity CA validates tokens.
    pub token_validation: TokenValidation,
    /// Where the Kubernetes client's configuration comes from (used by Kubernetes
    /// discovery and TokenReview).
    pub kube: KubeSource,
    /// Where golden metrics come from.
    pub metrics: MetricsConfig,
    /// The proxy-injector webhook, when it runs.
    pub injector: Option<InjectorConfig>,
    /// The control plane's own namespace (names its own identity).
    pub namespace: String,
    /// The tap relay's limits.
    pub tap: crate::tap::RelayConfig,
    /// The trace receiver, store and forwarder.
    pub traces: TraceConfig,
    /// Route documents to serve (`--routes`).
    pub routes: Option<PathBuf>,
    /// How often `routes` is checked for edits.
    pub routes_poll_interval: Duration,
    /// Inbound policy's cluster-wide settings.
    pub inbound: crate::authz::InboundConfig,
    /// The rollout controller's rollouts (`--rollouts`), when it runs.
    pub rollouts: Option<crate::rollouts::RolloutsConfig>,
}

/// Who may call the public API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiAuthConfig {
    /// Anyone who reaches it: the API binds loopback.
    Loopback,
    /// Callers presenting the bearer token kept in this file (created when missing).
    TokenFile(PathBuf),
    /// Callers whose Kubernetes bearer token passes TokenReview, and whom
    /// SubjectAccessReview allows the route's verb (docs/kubernetes.md).
    Kubernetes,
}

/// The discovery backend and its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiscoveryConfig {
    /// A local workloads file, polled for edits.
    File {
        /// The file.
        path: PathBuf,
        /// How often it is checked.
        poll_interval: Duration,
    },
    /// The Kubernetes API, watched.
    Kubernetes {
        /// The cluster's DNS domain.
        cluster_domain: String,
        /// The identity trust domain.
        trust_domain: String,
    },
}

impl DiscoveryConfig {
    /// A workloads file checked at the default interval.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self::File {
            path: path.into(),
            poll_interval: DEFAULT_POLL_INTERVAL,
        }
    }
}

/// Why flags do not make a valid [`Config`].
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `--cluster-networks` has something that is not a network.
    #[error("--cluster-networks: {0}")]
    ClusterNetworks(#[from] crate::authz::cidr::CidrError),
    /// `--jwks-ca-file` cannot be read or holds no usable certificate.
    #[error("--jwks-ca-file: {0}")]
    JwksCaFile(#[from] crate::fetch::tls::CaFileError),
    /// File discovery was chosen without a file.
    #[error("--discovery=file needs --workloads-file PATH")]
    NoWorkloadsFile,
    /// A Kubernetes-only flag was given with file discovery.
    #[error("{0} applies to --discovery=kubernetes; the workloads file sets its own")]
    KubernetesOnly(&'static str),
    /// A domain flag is not a DNS name.
    #[error("{flag} {value:?} is not a DNS name")]
    Domain {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: String,
    },

    /// The poll interval is zero or longer than edits may take to apply.
    #[error("--workloads-poll-interval {0:?} must be between 10ms and 10s")]
    PollInterval(Duration),
    /// Some but not all of the three identity files were given.
    #[error("--identity-trust-anchors-file, --identity-issuer-certificate-file and --identity-issuer-key-file go together; {0} is missing")]
    IdentityFiles(&'static str),
    /// Identity files were given without a directory for local tokens.
    #[error("the identity files need --identity-dir DIR, where local tokens are written")]
    NoIdentityDir,
    /// The certificate lifetime is out of range.
    #[error("--identity-cert-lifetime {0:?} must be between 1s and 365d")]
    CertLifetime(Duration),
    /// The token lifetime is out of range.
    #[error("--identity-token-lifetime {0:?} must be between 1s and 365d")]
    TokenLifetime(Duration),
    /// Both servers were given the same fixed address.
    #[error("two listeners (--grpc-listen, --api-listen, --probe-listen, --injector-listen) would both bind {0}")]
    SameAddress(SocketAddr),
    /// The scrape interval is out of range.
    #[error("--scrape-interval {0:?} must be between 100ms and 5m")]
    ScrapeInterval(Duration),
    /// Some but not all of the injector's listener and TLS files were given.
    #[error("--injector-listen, --injector-tls-cert-file and --injector-tls-key-file go together; {0} is missing")]
    InjectorFlags(&'static str),
    /// The public API binds a non-loopback address with nothing to check callers against.
    #[error("--api-listen {0} is not a loopback address: callers need a credential, so give --api-token-file FILE (or --identity-dir DIR, where api-token is kept), or bind 127.0.0.1")]
    ApiExposed(SocketAddr),
    /// A limit is zero.
    #[error("{0} must be at least 1")]
    ZeroLimit(&'static str),
    /// `--trace-no-store` without anywhere to forward to.
    #[error(
        "--trace-no-store keeps no traces, so it needs --trace-collector ADDR to send them to"
    )]
    NoTraceDestination,
    /// The trace collector is not an OTLP/gRPC address.
    #[error("--trace-collector {0:?} must be host:port or an http:// URL like http://otel-collector:4317 (TLS is not supported)")]
    TraceCollector(String),
    /// The Prometheus URL is not `http://host:port`.
    #[error("--prometheus-url {0:?} must be an http:// URL like http://127.0.0.1:9090")]
    PrometheusUrl(String),
}

impl Config {
    /// Validates flags into a config.
    pub fn from_args(args: &Args) -> Result<Self, ConfigError> {
        if clash(args.grpc_listen, args.api_listen) {
            return Err(ConfigError::SameAddress(args.grpc_listen));
        }
        let fixed = [
            Some(args.grpc_listen),
            Some(args.api_listen),
            args.probe_listen,
        ];
        if let Some(trace) = args.trace_listen.addr() {
            if fixed.iter().flatten().any(|other| clash(trace, *other)) {
                return Err(ConfigError::SameAddress(trace));
            }
        }
        if let Some(probe) = args.probe_listen {
            if clash(probe, args.grpc_listen) || clash(probe, args.api_listen) {
                return Err(ConfigError::SameAddress(probe));
            }
        }
        let interval = args.workloads_poll_interval;
        if !(Duration::from_millis(10)..=Duration::from_secs(10)).contains(&interval) {
            return Err(ConfigError::PollInterval(interval));
        }
        let (discovery, default_validation) = match args.discovery {
            DiscoveryKind::Kubernetes => {
                let domain = |flag, value: &Option<String>, default: &str| match value {
                    None => Ok(default.to_string()),
                    Some(v) if is_domain(v) => Ok(v.trim_end_matches('.').to_lowercase()),
                    Some(v) => Err(ConfigError::Domain {
                        flag,
                        value: v.clone(),
                    }),
                };
                let discovery = DiscoveryConfig::Kubernetes {
                    cluster_domain: domain(
                        "--cluster-domain",
                        &args.cluster_domain,
                        DEFAULT_CLUSTER_DOMAIN,
                    )?,
                    trust_domain: domain(
                        "--trust-domain",
                        &args.trust_domain,
                        DEFAULT_TRUST_DOMAIN,
                    )?,
                };
                (discovery, TokenValidation::TokenReview)
            }
            DiscoveryKind::File => {
                if args.cluster_domain.is_some() {
                    return Err(ConfigError::KubernetesOnly("--cluster-domain"));
                }
                if args.trust_domain.is_some() {
                    return Err(ConfigError::KubernetesOnly("--trust-domain"));
                }
                let path = args
                    .workloads_file
                    .clone()
                    .ok_or(ConfigError::NoWorkloadsFile)?;
                let discovery = DiscoveryConfig::File {
                    path,
                    poll_interval: interval,
                };
                (discovery, TokenValidation::Local)
            }
        };
        let token_validation = args.token_validation.unwrap_or(default_validation);
        let inbound = inbound(args, &discovery)?;
        Ok(Self {
            grpc_listen: args.grpc_listen,
            api_listen: args.api_listen,
            probe_listen: args.probe_listen,
            api_auth: api_auth(args)?,
            limits: limits(args)?,
            identity: identity(args, token_validation)?,
            token_validation,
            kube: KubeSource {
                kubeconfig: args.kubeconfig.clone(),
                context: args.kube_context.clone(),
            },
            metrics: metrics(args)?,
            injector: injector(args, &discovery)?,
            discovery,
            namespace: args.namespace.clone(),
            routes: args.routes.clone(),
            routes_poll_interval: interval,
            inbound,
            rollouts: args
                .rollouts
                .as_ref()
                .map(|path| crate::rollouts::RolloutsConfig {
                    path: path.clone(),
                    state_dir: args.rollout_state_dir.clone().unwrap_or_else(|| {
                        crate::rollouts::RolloutsConfig::default_state_dir(path)
                    }),
                    poll_interval: interval,
                }),
            tap: crate::tap::RelayConfig {
                max_concurrent: args.tap_max_concurrent,
                allow_unredacted: args.tap_allow_unredacted_headers,
            },
            traces: traces(args)?,
        })
    }
}

/// Inbound policy's settings; with the workloads file, loopback counts as the cluster.
fn inbound(
    args: &Args,
    discovery: &DiscoveryConfig,
) -> Result<crate::authz::InboundConfig, ConfigError> {
    let mut cluster_networks = crate::authz::cidr::parse_list(&args.cluster_networks)?;
    if matches!(discovery, DiscoveryConfig::File { .. }) {
        for local in ["127.0.0.0/8", "::1/128"] {
            if let Ok(net) = local.parse() {
                cluster_networks.push(net);
            }
        }
    }
    Ok(crate::authz::InboundConfig {
        default_policy: args.default_inbound_policy,
        cluster_networks,
        jwks_refresh: args.jwks_refresh_interval,
        jwks_ca: match &args.jwks_ca_file {
            Some(path) => crate::fetch::tls::read_ca_file(path)?,
            None => Vec::new(),
        },
    })
}

fn injector(
    args: &Args,
    discovery: &DiscoveryConfig,
) -> Result<Option<InjectorConfig>, ConfigError> {
    let (listen, cert_file, key_file) = match (
        args.injector_listen,
        &args.injector_tls_cert_file,
        &args.injector_tls_key_file,
    ) {
        (None, None, None) => return Ok(None),
        (Some(listen), Some(cert), Some(key)) => (listen, cert.clone(), key.clone()),
        (None, _, _) => return Err(ConfigError::InjectorFlags("--injector-listen")),
        (_, None, _) => return Err(ConfigError::InjectorFlags("--injector-tls-cert-file")),
        (_, _, None) => return Err(ConfigError::InjectorFlags("--injector-tls-key-file")),
    };
    for other in [args.grpc_listen, args.api_listen] {
        if clash(listen, other) {
            return Err(ConfigError::SameAddress(listen));
        }
    }
    let mut proxy = ferry_inject::ProxyConfig {
        image: args.proxy_image.clone(),
        version: args.proxy_version.clone(),
        control_namespace: args.namespace.clone(),
        trace_collector: args.proxy_trace_collector.clone(),
        trace_sampling: args.proxy_trace_sampling.clone(),
        // Everything else as `ferry inject`'s defaults; the trust anchors are the CA's,
        // filled in per review, and a workloads file's trust domain when it loads.
        // The cluster's default inbound policy, until a namespace or pod names another.
        default_inbound_policy: Some(args.default_inbound_policy.to_string()),
        ..ferry_inject::ProxyConfig::default()
    };
    if let DiscoveryConfig::Kubernetes {
        cluster_domain,
        trust_domain,
    } = discovery
    {
        proxy.cluster_domain = cluster_domain.clone();
        proxy.trust_domain = trust_domain.clone();
    }
    Ok(Some(InjectorConfig {
        listen,
        cert_file,
        key_file,
        proxy,
    }))
}

/// Whether two fixed listen addresses cannot both be bound: the same port on the same
/// address, or on any address when one of them is the unspecified one.
fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn api_auth(args: &Args) -> Result<ApiAuthConfig, ConfigError> {
    if let Some(file) = &args.api_token_file {
        return Ok(ApiAuthConfig::TokenFile(file.clone()));
    }
    if args.api_listen.ip().is_loopback() {
        return Ok(ApiAuthConfig::Loopback);
    }
    match (args.discovery, &args.identity_dir) {
        (DiscoveryKind::Kubernetes, _) => Ok(ApiAuthConfig::Kubernetes),
        (DiscoveryKind::File, Some(dir)) => Ok(ApiAuthConfig::TokenFile(dir.join(API_TOKEN_FILE))),
        (DiscoveryKind::File, None) => Err(ConfigError::ApiExposed(args.api_listen)),
    }
}

/// `n`, unless it is 0: a limit of nothing is a mistake, not a way to turn a limit off.
fn nonzero(flag: &'static str, n: usize) -> Result<usize, ConfigError> {
    if n == 0 {
        Err(ConfigError::ZeroLimit(flag))
    } else {
        Ok(n)
    }
}

fn limits(args: &Args) -> Result<Limits, ConfigError> {
    if args.api_header_read_timeout.is_zero() {
        return Err(ConfigError::ZeroLimit("--api-header-read-timeout"));
    }
    if args.grpc_max_concurrent_streams == 0 {
        return Err(ConfigError::ZeroLimit("--grpc-max-concurrent-streams"));
    }
    Ok(Limits {
        api: ApiLimits {
            header_read_timeout: args.api_header_read_timeout,
            max_body_bytes: args.api_max_body_bytes,
            max_connections: nonzero("--api-max-connections", args.api_max_connections)?,
            max_sse_clients: nonzero("--api-max-sse-clients", args.api_max_sse_clients)?,
        },
        grpc: GrpcLimits {
            max_concurrent_streams: args.grpc_max_concurrent_streams,
            max_pending_resets: nonzero("--grpc-max-pending-resets", args.grpc_max_pending_resets)?,
            max_connections: nonzero("--grpc-max-connections", args.grpc_max_connections)?,
            max_message_bytes: nonzero("--grpc-max-message-bytes", args.grpc_max_message_bytes)?,
            ..GrpcLimits::default()
        },
    })
}

fn traces(args: &Args) -> Result<TraceConfig, ConfigError> {
    let forward = match &args.trace_collector {
        Some(addr) => Some(ForwardConfig {
            collector: collector_url(addr)?,
            max_queue_spans: nonzero(
                "--trace-collector-queue-spans",
                args.trace_collector_queue_spans,
            )?,
            timeout: if args.trace_collector_timeout.is_zero() {
                return Err(ConfigError::ZeroLimit("--trace-collector-timeout"));
            } else {
                args.trace_collector_timeout
            },
            ..ForwardConfig::new("")
        }),
        None if args.trace_no_store => return Err(ConfigError::NoTraceDestination),
        None => None,
    };
    Ok(TraceConfig {
        listen: args.trace_listen.addr(),
        limits: ReceiverLimits {
            max_message_bytes: nonzero("--trace-max-message-bytes", args.trace_max_message_bytes)?,
            max_concurrent_exports: nonzero(
                "--trace-max-concurrent-exports",
                args.trace_max_concurrent_exports,
            )?,
            ..ReceiverLimits::default()
        },
        keep: !args.trace_no_store,
        store: StoreLimits {
            max_traces: nonzero("--trace-store-max-traces", args.trace_store_max_traces)?,
            max_bytes: nonzero("--trace-store-max-bytes", args.trace_store_max_bytes)?,
            ..StoreLimits::default()
        },
        forward,
    })
}

/// `host:port` or `http://host:port[/]` as the URL tonic dials.
fn collector_url(addr: &str) -> Result<String, ConfigError> {
    let url = if addr.contains("://") {
        addr.trim_end_matches('/').to_string()
    } else {
        format!("http://{addr}")
    };
    let ok = url.parse::<axum::http::Uri>().is_ok_and(|u| {
        u.scheme_str() == Some("http")
            && u.authority().is_some_and(|a| a.port_u16().is_some())
            && u.path().trim_matches('/').is_empty()
    });
    if ok {
        Ok(url)
    } else {
        Err(ConfigError::TraceCollector(addr.to_string()))
    }
}

fn metrics(args: &Args) -> Result<MetricsConfig, ConfigError> {
    let interval = args.scrape_interval;
    if !(Duration::from_millis(100)..=Duration::from_secs(300)).contains(&interval) {
        return Err(ConfigError::ScrapeInterval(interval));
    }
    let prometheus_url = match &args.prometheus_url {
        Some(url) => {
            let ok = url
                .parse::<axum::http::Uri>()
                .is_ok_and(|u| u.scheme_str() == Some("http") && u.authority().is_some());
            if !ok {
                return Err(ConfigError::PrometheusUrl(url.clone()));
            }
            Some(url.trim_end_matches('/').to_string())
        }
        None => None,
    };
    Ok(MetricsConfig {
        scrape_interval: interval,
        prometheus_url,
        series: SeriesLimits {
            per_target: nonzero(
                "--metrics-max-series-per-target",
                args.metrics_max_series_per_target,
            )?,
            total: nonzero("--metrics-max-series", args.metrics_max_series)?,
        },
    })
}

fn is_domain(s: &str) -> bool {
    let s = s.trim_end_matches('.');
    !s.is_empty()
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn identity(
    args: &Args,
    validation: TokenValidation,
) -> Result<Option<IdentityConfig>, ConfigError> {
    let lifetime = args.identity_cert_lifetime;
    if !(MIN_CERT_LIFETIME..=MAX_CERT_LIFETIME).contains(&lifetime) {
        return Err(ConfigError::CertLifetime(lifetime));
    }
    let token_lifetime = args.identity_token_lifetime;
    if !(MIN_CERT_LIFETIME..=MAX_CERT_LIFETIME).contains(&token_lifetime) {
        return Err(ConfigError::TokenLifetime(token_lifetime));
    }
    let files = match (
        &args.identity_trust_anchors_file,
        &args.identity_issuer_certificate_file,
        &args.identity_issuer_key_file,
    ) {
        (None, None, None) => None,
        (Some(anchors), Some(cert), Some(key)) => Some(CaSource::Files {
            trust_anchors: anchors.clone(),
            issuer_cert: cert.clone(),
            issuer_key: key.clone(),
        }),
        (None, _, _) => return Err(ConfigError::IdentityFiles("--identity-trust-anchors-file")),
        (_, None, _) => {
            return Err(ConfigError::IdentityFiles(
                "--identity-issuer-certificate-file",
            ))
        }
        (_, _, None) => return Err(ConfigError::IdentityFiles("--identity-issuer-key-file")),
    };
    let Some(dir) = args.identity_dir.clone() else {
        return match (files, validation) {
            // TokenReview needs no directory: nothing is written.
            (Some(ca), TokenValidation::TokenReview) => Ok(Some(IdentityConfig {
                tokens_dir: PathBuf::new(),
                ca,
                cert_lifetime: lifetime,
                token_lifetime,
            })),
            (Some(_), TokenValidation::Local) => Err(ConfigError::NoIdentityDir),
            (None, _) => Ok(None),
        };
    };
    Ok(Some(IdentityConfig {
        tokens_dir: dir.join(TOKENS_DIR),
        ca: files.unwrap_or(CaSource::Generated { dir }),
        cert_lifetime: lifetime,
        token_lifetime,
    }))
}

#[cfg(test)]
mod tests;
