//! Command-line flags (each with its `FERRY_CONTROL_*` twin) and the validated [`Config`]
//! the control plane runs from. Only `main` parses flags; tests build a `Config` directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ferry_api::{env, ports};

use crate::discovery::file::DEFAULT_POLL_INTERVAL;
use crate::identity::material::CaSource;
use crate::identity::{IdentityConfig, TOKENS_DIR};
use crate::metrics::MetricsConfig;

/// The shortest certificate lifetime accepted (tests rotate every few seconds).
pub const MIN_CERT_LIFETIME: Duration = Duration::from_secs(1);
/// The longest certificate lifetime accepted (the generated issuer's own validity).
pub const MAX_CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The flags of `ferry-control`.
#[derive(Debug, Parser)]
#[command(name = "ferry-control", version = ferry_api::version::LONG, about = "Ferry's control plane")]
pub struct Args {
    /// Address of the gRPC server proxies talk to (destination API).
    #[arg(long, env = env::CONTROL_GRPC_LISTEN, default_value_t = SocketAddr::from(([0, 0, 0, 0], ports::CONTROL_GRPC)))]
    pub grpc_listen: SocketAddr,
    /// Address of the public HTTP/JSON API the CLI and dashboard use.
    #[arg(long, env = env::CONTROL_API_LISTEN, default_value_t = SocketAddr::from(([0, 0, 0, 0], ports::CONTROL_API)))]
    pub api_listen: SocketAddr,
    /// Where services and workloads are discovered from.
    #[arg(long, env = env::CONTROL_DISCOVERY, default_value = "file")]
    pub discovery: DiscoveryKind,
    /// The local workloads file to discover services from (see docs/workloads-file.md).
    #[arg(long, env = env::CONTROL_WORKLOADS_FILE)]
    pub workloads_file: Option<PathBuf>,
    /// How often the workloads file is checked for edits.
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
    /// How often the control plane scrapes every proxy's `/metrics` (100ms to 5m). With
    /// --prometheus-url, Prometheus' own scrape interval: the resolution of live stats.
    #[arg(long, env = env::CONTROL_SCRAPE_INTERVAL, default_value = "10s", value_parser = humantime::parse_duration)]
    pub scrape_interval: Duration,
    /// Answer stat and edges with PromQL from this Prometheus (`http://host:9090`)
    /// instead of scraping proxies ourselves.
    #[arg(long, env = env::CONTROL_PROMETHEUS_URL)]
    pub prometheus_url: Option<String>,
    /// Log filter, in `tracing` syntax (e.g. `info` or `warn,ferry_control=debug`).
    #[arg(long, env = env::CONTROL_LOG, default_value = "info")]
    pub log: String,
    /// Log format: `plain` or `json`.
    #[arg(long, env = env::CONTROL_LOG_FORMAT, default_value = "plain")]
    pub log_format: LogFormat,
}

/// The discovery backends `--discovery` chooses from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DiscoveryKind {
    /// The local workloads file (`--workloads-file`).
    File,
    /// The Kubernetes API (not available yet).
    Kubernetes,
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
    /// Which discovery backend runs.
    pub discovery: DiscoveryConfig,
    /// The identity CA, when it runs.
    pub identity: Option<IdentityConfig>,
    /// Where golden metrics come from.
    pub metrics: MetricsConfig,
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
    /// File discovery was chosen without a file.
    #[error("--discovery=file needs --workloads-file PATH")]
    NoWorkloadsFile,
    /// Kubernetes discovery was chosen; it is not built yet.
    #[error(
        "--discovery=kubernetes is not available yet; use --discovery=file with --workloads-file"
    )]
    KubernetesUnavailable,
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
    /// Both servers were given the same fixed address.
    #[error("--grpc-listen and --api-listen are both {0}")]
    SameAddress(SocketAddr),
    /// The scrape interval is out of range.
    #[error("--scrape-interval {0:?} must be between 100ms and 5m")]
    ScrapeInterval(Duration),
    /// The Prometheus URL is not `http://host:port`.
    #[error("--prometheus-url {0:?} must be an http:// URL like http://127.0.0.1:9090")]
    PrometheusUrl(String),
}

impl Config {
    /// Validates flags into a config.
    pub fn from_args(args: &Args) -> Result<Self, ConfigError> {
        if args.grpc_listen == args.api_listen && args.grpc_listen.port() != 0 {
            return Err(ConfigError::SameAddress(args.grpc_listen));
        }
        let interval = args.workloads_poll_interval;
        if !(Duration::from_millis(10)..=Duration::from_secs(10)).contains(&interval) {
            return Err(ConfigError::PollInterval(interval));
        }
        if args.discovery == DiscoveryKind::Kubernetes {
            // TODO(#8): a Kubernetes backend that publishes the same ClusterState.
            return Err(ConfigError::KubernetesUnavailable);
        }
        let path = args
            .workloads_file
            .clone()
            .ok_or(ConfigError::NoWorkloadsFile)?;
        Ok(Self {
            grpc_listen: args.grpc_listen,
            api_listen: args.api_listen,
            discovery: DiscoveryConfig::File {
                path,
                poll_interval: interval,
            },
            identity: identity(args)?,
            metrics: metrics(args)?,
        })
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
    })
}

fn identity(args: &Args) -> Result<Option<IdentityConfig>, ConfigError> {
    let lifetime = args.identity_cert_lifetime;
    if !(MIN_CERT_LIFETIME..=MAX_CERT_LIFETIME).contains(&lifetime) {
        return Err(ConfigError::CertLifetime(lifetime));
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
        return match files {
            // TODO(#8): on Kubernetes, TokenReview needs no directory.
            Some(_) => Err(ConfigError::NoIdentityDir),
            None => Ok(None),
        };
    };
    Ok(Some(IdentityConfig {
        tokens_dir: dir.join(TOKENS_DIR),
        ca: files.unwrap_or(CaSource::Generated { dir }),
        cert_lifetime: lifetime,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(flags: &[&str]) -> Args {
        let argv = std::iter::once("ferry-control").chain(flags.iter().copied());
        Args::try_parse_from(argv).expect("flags parse")
    }

    #[test]
    fn defaults_use_the_documented_ports() {
        let config = Config::from_args(&args(&["--workloads-file", "w.yaml"])).unwrap();
        assert_eq!(config.grpc_listen, "0.0.0.0:8086".parse().unwrap());
        assert_eq!(config.api_listen, "0.0.0.0:8084".parse().unwrap());
        assert_eq!(config.discovery, DiscoveryConfig::file("w.yaml"));
        assert_eq!(config.identity, None);
        assert_eq!(config.metrics, MetricsConfig::default());
        let prom = Config::from_args(&args(&[
            "--workloads-file=w",
            "--scrape-interval=1s",
            "--prometheus-url=http://127.0.0.1:9090/",
        ]))
        .unwrap();
        assert_eq!(prom.metrics.scrape_interval, Duration::from_secs(1));
        assert_eq!(
            prom.metrics.prometheus_url.as_deref(),
            Some("http://127.0.0.1:9090")
        );
        assert!(matches!(
            Config::from_args(&args(&["--workloads-file=w", "--scrape-interval=10ms"])),
            Err(ConfigError::ScrapeInterval(_))
        ));
        assert!(matches!(
            Config::from_args(&args(&[
                "--workloads-file=w",
                "--prometheus-url=localhost:9090"
            ])),
            Err(ConfigError::PrometheusUrl(_))
        ));
    }

    #[test]
    fn identity_flags_make_an_identity_config() {
        let dir = Config::from_args(&args(&["--workloads-file=w", "--identity-dir=/id"]));
        assert_eq!(dir.unwrap().identity, Some(IdentityConfig::in_dir("/id")));
        let files = Config::from_args(&args(&[
            "--workloads-file=w",
            "--identity-dir=/id",
            "--identity-trust-anchors-file=ca.crt",
            "--identity-issuer-certificate-file=tls.crt",
            "--identity-issuer-key-file=tls.key",
            "--identity-cert-lifetime=5s",
        ]))
        .unwrap()
        .identity
        .unwrap();
        assert_eq!(files.cert_lifetime, Duration::from_secs(5));
        assert_eq!(files.tokens_dir, PathBuf::from("/id/tokens"));
        assert!(matches!(files.ca, CaSource::Files { .. }));
        assert_eq!(
            Config::from_args(&args(&[
                "--workloads-file=w",
                "--identity-issuer-key-file=k"
            ])),
            Err(ConfigError::IdentityFiles("--identity-trust-anchors-file"))
        );
        assert_eq!(
            Config::from_args(&args(&[
                "--workloads-file=w",
                "--identity-dir=/id",
                "--identity-cert-lifetime=500ms"
            ])),
            Err(ConfigError::CertLifetime(Duration::from_millis(500)))
        );
    }

    #[test]
    fn invalid_combinations_are_rejected() {
        assert_eq!(
            Config::from_args(&args(&[])),
            Err(ConfigError::NoWorkloadsFile)
        );
        assert_eq!(
            Config::from_args(&args(&["--discovery=kubernetes"])),
            Err(ConfigError::KubernetesUnavailable)
        );
        let same = args(&[
            "--workloads-file=w.yaml",
            "--grpc-listen=127.0.0.1:9000",
            "--api-listen=127.0.0.1:9000",
        ]);
        assert!(matches!(
            Config::from_args(&same),
            Err(ConfigError::SameAddress(_))
        ));
        let slow = args(&["--workloads-file=w.yaml", "--workloads-poll-interval=1m"]);
        assert!(matches!(
            Config::from_args(&slow),
            Err(ConfigError::PollInterval(_))
        ));
    }
}
