//! Reaching a cluster: the Kubernetes API with the user's kubeconfig (`--kubeconfig`,
//! `KUBECONFIG`, `--context`; TLS, tokens and exec plugins as `kube` supports them), and the
//! control plane's public API through a port-forward to a control-plane pod, so no command
//! needs `kubectl proxy` or an exposed port.
//!
//! Every command that talks to the public API takes [`ApiArgs`] and calls
//! [`ApiArgs::connect`]: `--api-addr` / `FERRY_API_ADDR` means a local control plane (the
//! demo, VMs); without it, when a kubeconfig is present (or `--kubeconfig`/`--context` is
//! given), a local ephemeral port on 127.0.0.1 is forwarded to the API port of a ready
//! `ferry-control` pod, one WebSocket port-forward per connection, and the same HTTP client
//! talks to it; with neither, the default local address.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use ferry_api::k8s as names;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::control::{ControlClient, ControlError, DEFAULT_API_ADDR};

/// The environment variable kubectl reads its kubeconfig path(s) from.
const KUBECONFIG_ENV: &str = "KUBECONFIG";

/// Why the cluster could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The kubeconfig could not be read or has no usable context.
    #[error(
        "reading the kubeconfig{} (name one with --kubeconfig or KUBECONFIG, its context with --context; or use --api-addr for a local control plane)",
        context.as_deref().map(|c| format!(" (context {c})")).unwrap_or_default()
    )]
    Kubeconfig {
        /// The context asked for.
        context: Option<String>,
        /// What kube said.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The API token file could not be read.
    #[error("reading the API token file {path} (--api-token-file, FERRY_API_TOKEN_FILE)")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `--api-server` is not a URL.
    #[error("invalid API server address {0:?}: expected a URL like https://10.0.0.1:6443")]
    ServerUrl(String),
    /// The client could not be built (TLS material, exec plugin).
    #[error("connecting to the Kubernetes API")]
    Client(#[source] kube::Error),
    /// Listing the control-plane pods failed.
    #[error("listing the control-plane pods in namespace {namespace}")]
    ListPods {
        /// The control plane's namespace.
        namespace: String,
        /// What the API server said.
        #[source]
        source: kube::Error,
    },
    /// No control-plane pod is ready to forward to.
    #[error("no ready ferry-control pod in namespace {0} (is Ferry installed? try `ferry check`)")]
    NoPod(String),
    /// The local end of the port-forward could not be bound.
    #[error("binding the port-forward's local port")]
    Bind(#[source] std::io::Error),
    /// The public API client.
    #[error(transparent)]
    Control(#[from] ControlError),
}

/// How to reach the Kubernetes API: kubeconfig and context.
#[derive(Args, Debug, Clone, Default)]
pub struct KubeArgs {
    /// The kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
}

impl KubeArgs {
    /// Whether a cluster is meant: a flag given, `KUBECONFIG` set, or `~/.kube/config` present.
    pub fn cluster_configured(&self) -> bool {
        self.kubeconfig.is_some()
            || self.context.is_some()
            || std::env::var_os(KUBECONFIG_ENV).is_some_and(|v| !v.is_empty())
            || std::env::var_os("HOME")
                .is_some_and(|home| PathBuf::from(home).join(".kube/config").is_file())
    }

    /// The client configuration from the kubeconfig (`--kubeconfig`, else `KUBECONFIG` /
    /// `~/.kube/config`), with `--context`.
    pub async fn config(&self) -> Result<kube::Config, ClusterError> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..KubeConfigOptions::default()
        };
        let err = |source| ClusterError::Kubeconfig {
            context: self.context.clone(),
            source,
        };
        match &self.kubeconfig {
            Some(path) => {
                let file = Kubeconfig::read_from(path).map_err(err)?;
                kube::Config::from_custom_kubeconfig(file, &options)
                    .await
                    .map_err(err)
            }
            None => kube::Config::from_kubeconfig(&options).await.map_err(err),
        }
    }

    /// A client for the API server, `server` (a URL, with an optional bearer token)
    /// overriding the kubeconfig.
    pub async fn client(
        &self,
        server: Option<(&str, Option<String>)>,
    ) -> Result<kube::Client, ClusterError> {
        let config = match server {
            Some((url, token)) => {
                let uri: http::Uri = url
                    .parse()
                    .map_err(|_| ClusterError::ServerUrl(url.to_string()))?;
                let mut config = kube::Config::new(uri);
                config.auth_info.token = token.map(Into::into);
                config
            }
            None => self.config().await?,
        };
        kube::Client::try_from(config).map_err(ClusterError::Client)
    }
}

/// How to reach the control plane's public API: locally, or on a cluster.
#[derive(Args, Debug, Clone, Default)]
pub struct ApiArgs {
    /// The control plane's public API, for a local control plane (without it: the cluster of
    /// the kubeconfig through a port-forward, or the default local address).
    #[arg(long, global = true, env = ferry_api::env::CLI_API_ADDR)]
    pub api_addr: Option<String>,
    /// A file holding the bearer token of a local control plane whose API is exposed
    /// (`ferry-control --api-token-file`, or `<identity-dir>/api-token`).
    #[arg(long, global = true, env = ferry_api::env::CLI_API_TOKEN_FILE)]
    pub api_token_file: Option<PathBuf>,
    /// The control plane's namespace on a cluster.
    #[arg(long, global = true, default_value = names::CONTROL_NAMESPACE)]
    pub control_plane_namespace: String,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// A client of the public API, with the port-forward it goes through (if any) kept open.
pub struct Connected {
    /// The client.
    pub client: ControlClient,
    /// The base URL the client talks to (`http://127.0.0.1:PORT` when forwarded).
    pub base: String,
    /// The port-forward, stopped on drop.
    pub forward: Option<Forward>,
}

impl ApiArgs {
    /// Local arguments for `addr`.
    pub fn local(addr: &str) -> Self {
        Self {
            api_addr: Some(addr.to_string()),
            api_token_file: None,
            control_plane_namespace: names::CONTROL_NAMESPACE.to_string(),
            kube: KubeArgs::default(),
        }
    }

    /// Connects: `--api-addr`, else a port-forward on a configured cluster, else the default
    /// address. Must run inside the runtime that will use the client.
    pub async fn connect(&self) -> Result<Connected, ClusterError> {
        let token = match &self.api_token_file {
            Some(path) => Some(read_token(path)?),
            None => None,
        };
        if let Some(addr) = &self.api_addr {
            return local(addr, token);
        }
        if !self.kube.cluster_configured() {
            return local(DEFAULT_API_ADDR, token);
        }
        let kube = self.kube.client(None).await?;
        let forward = Forward::start(kube, &self.control_plane_namespace).await?;
        let base = format!("http://{}", forward.local_addr());
        Ok(Connected {
            client: ControlClient::new(&base)?,
            base,
            forward: Some(forward),
        })
    }
}

/// The token in `path`, trimmed; an empty file is an error.
fn read_token(path: &std::path::Path) -> Result<String, ClusterError> {
    let error = |source| ClusterError::TokenFile {
        path: path.to_path_buf(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(error)?;
    let token = text.trim();
    if token.is_empty() {
        return Err(error(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the file is empty",
        )));
    }
    Ok(token.to_string())
}

fn local(addr: &str, token: Option<String>) -> Result<Connected, ClusterError> {
    Ok(Connected {
        client: ControlClient::new(addr)?.with_token(token),
        base: addr.trim_end_matches('/').to_string(),
        forward: None,
    })
}

/// A local port forwarded to a control-plane pod's public API port.
pub struct Forward {
    addr: SocketAddr,
    pod: String,
    task: JoinHandle<()>,
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether the pod is Running with condition Ready=True.
fn is_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The container port named `api` in the pod, else the default API port.
fn api_port(pod: &Pod) -> u16 {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some("api"))
        .and_then(|p| u16::try_from(p.container_port).ok())
        .unwrap_or(ferry_api::ports::CONTROL_API)
}

impl Forward {
    /// Finds a ready control-plane pod in `namespace` and forwards a local ephemeral port on
    /// 127.0.0.1 to its API port.
    pub async fn start(client: kube::Client, namespace: &str) -> Result<Self, ClusterError> {
        let pods: Api<Pod> = Api::namespaced(client, namespace);
        let selector = format!("{}=control", names::LABEL_CONTROL_PLANE_COMPONENT);
        let list = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|source| ClusterError::ListPods {
                namespace: namespace.to_string(),
                source,
            })?;
        let pod = list
            .items
            .iter()
            .find(|p| is_ready(p))
            .ok_or_else(|| ClusterError::NoPod(namespace.to_string()))?;
        let name = pod.metadata.name.clone().unwrap_or_default();
        let port = api_port(pod);
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(ClusterError::Bind)?;
        let addr = listener.local_addr().map_err(ClusterError::Bind)?;
        let pod_name = name.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((conn, _)) = listener.accept().await {
                conns.spawn(forward_one(pods.clone(), pod_name.clone(), port, conn));
                // Reap finished connections so the set does not grow.
                while conns.try_join_next().is_some() {}
            }
        });
        Ok(Self {
            addr,
            pod: format!("{namespace}/{name}:{port}"),
            task,
        })
    }

    /// The local address that reaches the pod's API port.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `namespace/pod:port`, for messages.
    pub fn target(&self) -> &str {
        &self.pod
    }
}

/// One local connection: its own port-forward stream, copied both ways until either closes.
async fn forward_one(pods: Api<Pod>, pod: String, port: u16, mut conn: tokio::net::TcpStream) {
    let mut forwarder = match pods.portforward(&pod, &[port]).await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("warning: port-forward to {pod}:{port}: {e}");
            return;
        }
    };
    let Some(mut upstream) = forwarder.take_stream(port) else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
    drop(upstream);
    let _ = forwarder.join().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(phase: &str, ready: &str, api_port: Option<i32>) -> Pod {
        let ports = api_port.map(|p| serde_json::json!([{"name": "api", "containerPort": p}]));
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "ferry-control-0"},
            "spec": {"containers": [{"name": "control", "ports": ports.unwrap_or_default()}]},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": ready}]},
        }))
        .unwrap()
    }

    #[test]
    fn only_running_and_ready_pods_are_forwarded_to() {
        assert!(is_ready(&pod("Running", "True", None)));
        assert!(!is_ready(&pod("Running", "False", None)));
        assert!(!is_ready(&pod("Pending", "True", None)));
        assert!(!is_ready(&Pod::default()));
    }

    #[test]
    fn the_api_port_is_the_container_port_named_api() {
        assert_eq!(api_port(&pod("Running", "True", Some(9999))), 9999);
        assert_eq!(
            api_port(&pod("Running", "True", None)),
            ferry_api::ports::CONTROL_API
        );
    }

    #[test]
    fn flags_mean_a_cluster_and_api_addr_means_local() {
        let kube = KubeArgs {
            context: Some("prod".into()),
            ..KubeArgs::default()
        };
        assert!(kube.cluster_configured());
        let kube = KubeArgs {
            kubeconfig: Some("/k".into()),
            ..KubeArgs::default()
        };
        assert!(kube.cluster_configured());
        let local = ApiArgs::local("http://127.0.0.1:9/");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let connected = rt.block_on(local.connect()).unwrap();
        assert_eq!(connected.base, "http://127.0.0.1:9");
        assert!(connected.forward.is_none());
    }
}
