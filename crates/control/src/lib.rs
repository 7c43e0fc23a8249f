//! Ferry's control plane: discovers what runs in the cluster and tells proxies where to
//! send traffic, over Linkerd's destination API; answers the CLI over HTTP/JSON.
//!
//! # Layout
//! - [`model`]: the cluster as discovery sees it (namespaces, workloads, instances,
//!   services). Plain data.
//! - [`discovery`]: the seam every backend implements ([`discovery::Discovery`]), and the
//!   workloads-file backend ([`discovery::file`]); Kubernetes plugs in beside it.
//! - [`workloads_file`]: the workloads file's format, parsed into a model.
//! - [`authority`]: destination paths and context tokens, parsed into a lookup.
//! - [`index`]: answers a lookup from the model and diffs answers into updates.
//! - [`resolutions`]: one shared answer per distinct lookup, re-resolved only when the
//!   services or instances it depends on change.
//! - [`translate`]: index answers as `io.linkerd.proxy.destination` messages.
//! - [`destination`]: the gRPC `Destination` service (`Get`, `GetProfile`), and the gRPC
//!   server it shares with identity.
//! - [`identity`]: the certificate authority behind `Identity/Certify`, and local tokens.
//! - [`api`]: the public HTTP/JSON API.
//! - [`tap`]: the tap relay: `GET /api/v1/tap` fans out to the proxies' tap servers.
//! - [`metrics`]: proxies' metrics, scraped into memory or asked of Prometheus;
//!   [`stat`] answers `stat`/`edges` over them and [`stat_api`] serves the routes.
//! - [`traces`]: the OTLP trace receiver, the in-memory trace store, forwarding to a
//!   collector, and the traces routes.
//! - [`dashboard`]: the web dashboard and the diagnostics routes it adds to the API.
//! - [`injector`]: the proxy-injector webhook (AdmissionReview over HTTPS), adding what
//!   `ferry inject` adds through the shared `ferry-inject` crate.
//! - [`routes`]: Gateway API routes (local files), validated, served as Linkerd's
//!   `OutboundPolicies` on the gRPC port.
//! - [`rollouts`]: progressive delivery: `Rollout`s run by a controller that moves traffic
//!   through generated routes, judged on the metrics backend.
//! - [`config`]: flags and the validated [`Config`].
//!
//! [`run`] wires them: load discovery, load the identity CA, bind both listeners, serve
//! until shutdown.

pub mod api;
pub mod authority;
pub mod authz;
pub mod config;
pub mod dashboard;
pub mod destination;
pub mod discovery;
pub mod fetch;
pub mod identity;
pub mod index;
pub mod injector;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod resolutions;
pub mod rollouts;
pub mod routes;
pub mod stat;
pub mod stat_api;
pub mod tap;
pub mod traces;
pub mod translate;
pub mod workloads_file;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use api::auth::{ApiAuth, KubeReviews};
pub use config::{ApiAuthConfig, Args, Config, DiscoveryConfig, TokenValidation};
use discovery::file::{FileDiscovery, FileDiscoveryError};
use discovery::kube_build::Domains;
use discovery::kubernetes::{KubeClientError, KubeDiscovery, DEFAULT_COALESCE};
use discovery::{AnyDiscovery, Discovery};
use identity::material::MaterialError;
use identity::tokenreview::TokenReviewer;
use identity::Identity;
use limits::Limits;

/// How long [`run`] lets connections take to close once shutdown has begun. A client that
/// connected and never spoke would otherwise hold the process forever.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the control plane stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Discovery could not start.
    #[error("starting discovery")]
    Discovery(#[from] FileDiscoveryError),
    /// No Kubernetes client could be made (Kubernetes discovery or TokenReview).
    #[error("connecting to the Kubernetes API")]
    Kubernetes(#[from] KubeClientError),
    /// A Kubernetes backend was chosen but no client was made (a wiring bug).
    #[error("no Kubernetes client for the configured backends")]
    NoClient,
    /// The identity CA could not be loaded or generated.
    #[error("starting the identity CA")]
    Identity(#[from] MaterialError),
    /// The control plane could not issue its own certificate.
    #[error("starting the control plane's own identity")]
    OwnIdentity(#[from] identity::own::OwnCertError),
    /// A listener could not be bound.
    #[error("binding the {listener} listener on {addr}")]
    Bind {
        /// Which listener (`grpc`, `api`, `probe`, `trace` or `injector`).
        listener: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The injector webhook's certificate or key could not be loaded.
    #[error("starting the proxy injector")]
    Injector(#[from] injector::InjectorError),
    /// The gRPC server failed.
    #[error("serving gRPC")]
    Grpc(#[from] tonic::transport::Error),
    /// The API server failed.
    #[error("serving the API")]
    Api(#[source] std::io::Error),
    /// The route documents could not be loaded.
    #[error("loading routes")]
    Routes(#[from] routes::file::RoutesFileError),
    /// The rollouts could not be loaded.
    #[error("loading rollouts")]
    Rollouts(#[from] rollouts::RolloutsFileError),
    /// The public API's token file could not be read or written.
    #[error("reading or creating the API token file {path}")]
    ApiToken {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Runs the control plane from `config` until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let wants_client = matches!(config.discovery, DiscoveryConfig::Kubernetes { .. })
        || config.api_auth == ApiAuthConfig::Kubernetes
        || (config.identity.is_some() && config.token_validation == TokenValidation::TokenReview);
    let client = if wants_client {
        Some(discovery::kubernetes::client(&config.kube).await?)
    } else {
        None
    };
    let discovery = match config.discovery {
        DiscoveryConfig::File {
            path,
            poll_interval,
        } => AnyDiscovery::File(FileDiscovery::spawn(path, poll_interval).await?),
        DiscoveryConfig::Kubernetes {
            cluster_domain,
            trust_domain,
        } => {
            let client = client.clone().ok_or(RunError::NoClient)?;
            let domains = Domains {
                cluster_domain,
                trust_domain,
            };
            let kube = KubeDiscovery::spawn(client, domains, DEFAULT_COALESCE);
            tracing::info!("waiting for the first complete list of the Kubernetes API");
            kube.synced().await;
            AnyDiscovery::Kubernetes(kube)
        }
    };
    let identity = match &config.identity {
        Some(identity) => {
            let trust_domain = discovery.watch().borrow().trust_domain.clone();
            let loaded = Identity::load(identity, &trust_domain)?;
            match (config.token_validation, client.clone()) {
                (TokenValidation::TokenReview, Some(client)) => {
                    Some(loaded.with_token_review(TokenReviewer::new(client)))
                }
                (TokenValidation::TokenReview, None) => return Err(RunError::NoClient),
                (TokenValidation::Local, _) => Some(loaded),
            }
        }
        None => None,
    };
    let auth = match &config.api_auth {
        ApiAuthConfig::Loopback => ApiAuth::Open,
        ApiAuthConfig::TokenFile(path) => {
            let token =
                api::auth::load_or_create_token(path).map_err(|source| RunError::ApiToken {
                    path: path.clone(),
                    source,
                })?;
            ApiAuth::Token(token.into())
        }
        ApiAuthConfig::Kubernetes => ApiAuth::Kubernetes(Box::new(KubeReviews::new(
            client.clone().ok_or(RunError::NoClient)?,
        ))),
    };
    let grpc = bind("grpc", config.grpc_listen).await?;
    let api = bind("api", config.api_listen).await?;
    let _probes = match config.probe_listen {
        Some(addr) => Some(start_probes(bind("probe", addr).await?, &config.limits)),
        None => None,
    };
    let _injector = match config.injector {
        Some(mut injector) => {
            // The trust domain the CA names identities in, whichever backend set it.
            injector.proxy.trust_domain = discovery.watch().borrow().trust_domain.clone();
            Some(start_injector(injector, identity.as_ref(), discovery.watch()).await?)
        }
        None => None,
    };
    let traces = traces::store::TraceStore::new(config.traces.store.clone());
    let _trace_receiver = match config.traces.listen {
        Some(addr) => Some(start_trace_receiver(
            bind("trace", addr).await?,
            &config.traces,
            &traces,
        )?),
        None => None,
    };
    let identity = identity.map(|i| i.with_namespace(&config.namespace));
    // Local files when given; else, on Kubernetes, the routes the API server stores.
    let routes = match (&config.routes, &discovery, &client) {
        (Some(path), _, _) => {
            routes::file::spawn(path.clone(), config.routes_poll_interval).await?
        }
        (None, AnyDiscovery::Kubernetes(_), Some(client)) => {
            routes::kubernetes::spawn(client.clone(), discovery.watch(), DEFAULT_COALESCE)
        }
        (None, _, _) => routes::Routes::default(),
    };
    let surfaces = Surfaces {
        limits: config.limits.clone(),
        auth,
        tap: config.tap.clone(),
        grpc_tls: GrpcTls::WithIdentity,
        traces,
        routes,
        inbound: config.inbound.clone(),
        // Local files when given; else, on Kubernetes, the Rollout resources.
        rollouts: match (&config.rollouts, &discovery, &client) {
            (Some(files), _, _) => Some(rollouts::RolloutsSource::Files(files.clone())),
            (None, AnyDiscovery::Kubernetes(_), Some(client)) => {
                let lease = rollouts::lease::LeaseConfig {
                    namespace: config.namespace.clone(),
                    identity: rollouts::lease::own_identity(),
                    duration: rollouts::lease::DEFAULT_DURATION,
                };
                Some(rollouts::RolloutsSource::Kubernetes(client.clone(), lease))
            }
            (None, _, _) => None,
        },
    };
    serve_all(
        grpc,
        api,
        discovery,
        identity,
        &config.metrics,
        &surfaces,
        SHUTDOWN_GRACE,
        shutdown,
    )
    .await
}

/// The servers' limits, who may call the public API, and how the gRPC port and the tap
/// relay speak.
#[derive(Clone, Debug)]
pub struct Surfaces {
    /// Both servers' limits.
    pub limits: Limits,
    /// Who may call the public API.
    pub auth: ApiAuth,
    /// The tap relay's limits and what it may ask proxies for.
    pub tap: tap::RelayConfig,
    /// Whether the gRPC port speaks TLS when the identity CA runs.
    pub grpc_tls: GrpcTls,
    /// The traces the public API lists (filled by the OTLP receiver when it runs).
    pub traces: traces::store::TraceStore,
    /// The routes `OutboundPolicies` serves (none: every Service gets its default route),
    /// and the authorization documents `InboundServerPolicies` serves.
    pub routes: routes::Routes,
    /// The cluster-wide settings of inbound policy.
    pub inbound: authz::InboundConfig,
    /// Rollouts to run (none: the controller is off).
    pub rollouts: Option<rollouts::RolloutsSource>,
}

impl Default for Surfaces {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            auth: ApiAuth::Open,
            tap: tap::RelayConfig::default(),
            grpc_tls: GrpcTls::Plaintext,
            traces: traces::store::TraceStore::default(),
            routes: routes::Routes::default(),
            inbound: authz::InboundConfig::default(),
            rollouts: None,
        }
    }
}

/// Serves the probe routes on `listener` in a task that stops when the guard is dropped.
fn start_probes(listener: TcpListener, limits: &Limits) -> tokio_util::sync::DropGuard {
    let stop = CancellationToken::new();
    let limits = limits.api.clone();
    let until = stop.clone().cancelled_owned();
    tokio::spawn(async move {
        if let Err(error) =
            api::server::serve(listener, api::server::probes(), &limits, until).await
        {
            tracing::error!(%error, "the probe listener failed");
        }
    });
    stop.drop_guard()
}

/// Serves the OTLP trace receiver on `listener` (and forwards when configured) in tasks
/// that stop when the returned guard is dropped.
fn start_trace_receiver(
    listener: TcpListener,
    config: &traces::TraceConfig,
    store: &traces::store::TraceStore,
) -> Result<(tokio_util::sync::DropGuard, Option<AbortOnDrop>), RunError> {
    let (receiver, forwarding) = traces::receiver(config, store).map_err(RunError::Grpc)?;
    let stop = CancellationToken::new();
    let limits = config.limits.clone();
    let until = stop.clone().cancelled_owned();
    tokio::spawn(async move {
        if let Err(error) = traces::receiver::serve(listener, receiver, &limits, until).await {
            tracing::error!(%error, "the trace receiver failed");
        }
    });
    Ok((stop.drop_guard(), forwarding.map(AbortOnDrop)))
}

/// Serves the destination API on `grpc` and the public API on `api` until `shutdown`
/// completes or either server fails (which stops the other); then gives connections
/// `grace` to close before returning regardless.
pub async fn serve<D: Discovery>(
    grpc: TcpListener,
    api: TcpListener,
    discovery: D,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    serve_with_identity(grpc, api, discovery, None, grace, shutdown).await
}

/// Whether the gRPC port speaks TLS when the identity CA runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrpcTls {
    /// TLS with the control plane's own certificate (the binary, always).
    WithIdentity,
    /// Plaintext even with the CA (in-process tests of the CA's gRPC service).
    Plaintext,
}

/// [`serve`], plus the identity CA on the gRPC listener when `identity` is given: with
/// local tokens, they are written for every service account discovery knows before
/// serving starts, and for new ones as they appear. gRPC stays plaintext here (in-process
/// tests); `ferry-control` ([`run`]) serves it over TLS when the CA runs.
pub async fn serve_with_identity<D: Discovery>(
    grpc: TcpListener,
    api: TcpListener,
    discovery: D,
    identity: Option<Identity>,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let metrics = metrics::MetricsConfig::default();
    let surfaces = Surfaces::default();
    serve_all(
        grpc, api, discovery, identity, &metrics, &surfaces, grace, shutdown,
    )
    .await
}

/// [`serve_with_identity`], with metrics from `metrics`: the embedded scraper runs (until
/// this returns) unless a Prometheus URL is configured; `surfaces` bounds both servers and
/// says who may call the public API. With `identity`, the control plane issues itself a
/// certificate (and keeps it renewed) that the tap relay dials proxies with, and that the
/// gRPC port serves when `surfaces.grpc_tls` says so.
#[allow(clippy::too_many_arguments)]
pub async fn serve_all<D: Discovery>(
    grpc: TcpListener,
    api: TcpListener,
    discovery: D,
    identity: Option<Identity>,
    metrics: &metrics::MetricsConfig,
    surfaces: &Surfaces,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let (backend, scraper) = metrics.start(discovery.watch());
    let _scraper = scraper.map(AbortOnDrop);
    // Rollouts and their saved state are loaded before anything is served, so the routes
    // they generate are there from the first answer: a restart moves no traffic.
    let rollouts = match &surfaces.rollouts {
        Some(rollouts::RolloutsSource::Files(config)) => {
            Some(rollouts::spawn(config, backend.clone(), rollouts::Clock::new()).await?)
        }
        Some(rollouts::RolloutsSource::Kubernetes(client, lease)) => Some(
            rollouts::kubernetes::spawn(
                client.clone(),
                backend.clone(),
                rollouts::Clock::new(),
                DEFAULT_COALESCE,
                Some(lease.clone()),
            )
            .await,
        ),
        None => None,
    };
    let routes = match &rollouts {
        Some(running) => surfaces.routes.clone().with_overlay(running.routes.clone()),
        None => surfaces.routes.clone(),
    };
    let rollouts_api = rollouts
        .as_ref()
        .map(|r| r.rollouts.clone())
        .unwrap_or_default();
    // Local rollouts' Deployment backends are Services synthesized from the workloads
    // file; on Kubernetes the controller applies real ones, which discovery watches.
    let discovery = match (&rollouts, &surfaces.rollouts) {
        (Some(running), Some(rollouts::RolloutsSource::Files(_))) => {
            rollouts::fronting::FrontedDiscovery::spawn(discovery, running.defs.clone())
        }
        _ => rollouts::fronting::FrontedDiscovery::plain(discovery),
    };
    // Local tokens are written only when callers present them.
    let _tokens = match &identity {
        Some(identity) if identity.uses_local_tokens() => {
            Some(issue_tokens(identity, &discovery).await)
        }
        _ => None,
    };
    let _reload = identity
        .as_ref()
        .map(|identity| AbortOnDrop(tokio::spawn(identity.follow_files())));
    // Read per request: a reloaded issuer shows in `/api/v1/identity` and the dashboard.
    let info = match &identity {
        Some(identity) => {
            let identity = identity.clone();
            api::IdentitySource::new(move || identity.info())
        }
        None => api::IdentitySource::default(),
    };
    let own = match &identity {
        Some(identity) => Some(identity.own()?),
        None => None,
    };
    let _own_renewal = own.clone().map(|own| AbortOnDrop(tokio::spawn(own.run())));
    let tls = match (&own, surfaces.grpc_tls) {
        (Some(own), GrpcTls::WithIdentity) => Some(own.server_config()?),
        _ => None,
    };
    let relay = tap::Relay::new(surfaces.tap.clone(), own);
    let service = identity.as_ref().map(Identity::service);
    let stop = CancellationToken::new();
    let signal = {
        let stop = stop.clone();
        async move {
            tokio::select! {
                _ = shutdown => tracing::info!("shutting down"),
                _ = stop.cancelled() => {}
            }
            stop.cancel();
        }
    };
    let grpc = {
        let stop = stop.clone();
        let server = destination::serve_limited(
            grpc,
            discovery.clone(),
            service,
            tls,
            &surfaces.limits.grpc,
            &routes,
            &surfaces.inbound,
            stop.clone().cancelled_owned(),
        );
        async move {
            let result = server.await;
            stop.cancel();
            result.map_err(RunError::from)
        }
    };
    let api = {
        let stop = stop.clone();
        let server = api::serve(
            api,
            discovery,
            info,
            backend,
            &surfaces.limits.api,
            surfaces.auth.clone(),
            relay,
            surfaces.traces.clone(),
            routes.clone(),
            surfaces.inbound.clone(),
            rollouts_api,
            stop.clone().cancelled_owned(),
        );
        async move {
            let result = server.await;
            stop.cancel();
            result.map_err(RunError::Api)
        }
    };
    let servers = async {
        let ((), grpc, api) = tokio::join!(signal, grpc, api);
        grpc.and(api)
    };
    // Streams end at shutdown, but a client may hold a connection open regardless; it
    // does not get to keep the process alive.
    let deadline = async {
        stop.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = servers => result,
        () = deadline => {
            tracing::warn!(?grace, "connections still open after shutdown; exiting anyway");
            Ok(())
        }
    }
}

/// Loads the injector's certificate, binds its listener and serves it in a task that stops
/// when the returned guard is dropped. Injected proxies trust the CA's current anchors.
async fn start_injector(
    config: injector::InjectorConfig,
    identity: Option<&Identity>,
    states: tokio::sync::watch::Receiver<std::sync::Arc<model::ClusterState>>,
) -> Result<tokio_util::sync::DropGuard, RunError> {
    let serving = injector::serving_cert(&config.cert_file, &config.key_file)?;
    let tls = injector::server_config(serving.clone())?;
    let anchors = identity.map(Identity::watch_ca);
    let proxy = injector::ProxySettings::new(config.proxy, anchors).with_states(states);
    let listener = bind("injector", config.listen).await?;
    let stop = CancellationToken::new();
    tokio::spawn(injector::serve(
        listener,
        tls,
        proxy,
        stop.clone().cancelled_owned(),
    ));
    let renewals = serving.follow(injector::serving::DEFAULT_INTERVAL);
    let renewals_stop = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = renewals => {}
            () = renewals_stop.cancelled() => {}
        }
    });
    Ok(stop.drop_guard())
}

/// Writes tokens for the service accounts discovery knows now, then follows it in a task
/// that ends when the returned guard is dropped.
async fn issue_tokens<D: Discovery>(identity: &Identity, discovery: &D) -> AbortOnDrop {
    let tokens = identity.tokens().clone();
    let states = discovery.watch();
    let state = states.borrow().clone();
    let first = tokens.clone();
    match tokio::task::spawn_blocking(move || first.ensure_all(&state)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::error!(%error, "cannot write identity tokens"),
        Err(error) => tracing::error!(%error, "identity token task failed"),
    }
    AbortOnDrop(tokio::spawn(tokens.follow(states)))
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Binds a listener and logs `listener bound` with its name and real address, which is
/// how tests that bind port 0 (and `ferry-testkit`) find it.
async fn bind(listener: &'static str, addr: SocketAddr) -> Result<TcpListener, RunError> {
    let bound = TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind {
            listener,
            addr,
            source,
        })?;
    let local = bound.local_addr().map_err(|source| RunError::Bind {
        listener,
        addr,
        source,
    })?;
    tracing::info!(listener, addr = %local, "listener bound");
    Ok(bound)
}
