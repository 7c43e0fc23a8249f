//! Progressive delivery (docs/rollouts.md): `Rollout` resources move a Service's traffic
//! from a stable backend to a canary in steps, each judged on the mesh's own metrics, and
//! roll back on their own when the canary regresses.
//!
//! - [`spec`]: the resource, parsed and validated (line and field on errors).
//! - [`machine`]: the state machine, pure (time is given).
//! - [`analysis`]: canary against stable from the metrics backend, and the verdict.
//! - [`traffic`]: a rollout's traffic as a generated `HTTPRoute`, served with the others;
//!   [`fronting`]: a Deployment backend as the Service fronting it, synthesized from the
//!   workloads file locally, applied on Kubernetes by [`fronting_kube`].
//! - [`controller`]: the task that runs them; [`state`] persists each rollout's state;
//!   [`hook`] calls the optional webhook; [`events`] publishes transitions as Kubernetes
//!   Events.
//! - [`api`]: `/api/v1/rollouts` and its actions.
//!
//! Rollouts come from `--rollouts PATH` (the files beside the routes), their state lives in
//! `--rollout-state-dir`; or, on Kubernetes, from `Rollout` resources ([`kubernetes`]), their
//! state in each resource's status.

pub mod analysis;
pub mod api;
pub mod controller;
pub mod events;
pub mod fronting;
pub mod fronting_kube;
pub mod hook;
pub mod kubernetes;
pub mod lease;
pub mod machine;
pub mod spec;
pub mod state;
pub mod traffic;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ferry_api::rollout::{Action, RolloutView};
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::MetricsBackend;
use crate::routes::file::{read_all, RoutesFileError};
use crate::routes::{DocumentErrors, RouteSet};
pub use controller::{Clock, CommandError};
use spec::RolloutDef;
use state::{StateDir, StateStore};

/// Where rollouts come from: `--rollouts`, `--rollout-state-dir`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutsConfig {
    /// A file or directory of YAML documents (`Rollout`s; route documents are skipped).
    pub path: PathBuf,
    /// Where each rollout's state is saved.
    pub state_dir: PathBuf,
    /// How often `path` is checked for edits.
    pub poll_interval: Duration,
}

impl RolloutsConfig {
    /// The state directory when none is given: `.rollout-state` in the rollouts'
    /// directory (hidden: the routes loader skips it).
    pub fn default_state_dir(path: &Path) -> PathBuf {
        let dir = if path.is_dir() {
            path
        } else {
            path.parent().unwrap_or(Path::new("."))
        };
        dir.join(".rollout-state")
    }
}

/// Where rollouts come from.
#[derive(Clone)]
pub enum RolloutsSource {
    /// Local files (`--rollouts`).
    Files(RolloutsConfig),
    /// `Rollout` resources, through this client, run while holding this Lease.
    Kubernetes(kube::Client, lease::LeaseConfig),
}

impl std::fmt::Debug for RolloutsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Files(c) => f.debug_tuple("Files").field(c).finish(),
            Self::Kubernetes(_, lease) => f.debug_tuple("Kubernetes").field(lease).finish(),
        }
    }
}

/// Why rollouts could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RolloutsFileError {
    /// A file or the directory could not be read.
    #[error("reading rollouts {path}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A document is invalid.
    #[error("{path}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Each error, with its line and field.
        source: DocumentErrors,
    },
}

async fn load(path: &Path) -> Result<(Vec<(PathBuf, String)>, Vec<RolloutDef>), RolloutsFileError> {
    let texts = read_all(path).await.map_err(|e| match e {
        RoutesFileError::Read { path, source } => RolloutsFileError::Read { path, source },
        RoutesFileError::Invalid { path, source } => RolloutsFileError::Invalid { path, source },
    })?;
    let defs = parse_all(&texts)?;
    Ok((texts, defs))
}

fn parse_all(texts: &[(PathBuf, String)]) -> Result<Vec<RolloutDef>, RolloutsFileError> {
    let mut defs: Vec<RolloutDef> = Vec::new();
    for (path, text) in texts {
        let parsed = spec::parse(text).map_err(|source| RolloutsFileError::Invalid {
            path: path.clone(),
            source,
        })?;
        defs.extend(parsed);
    }
    Ok(defs)
}

/// The API's side of the controller: the rollouts as last published, and a way to ask for
/// actions. The default has no rollouts (the controller is off).
#[derive(Clone, Debug)]
pub struct Rollouts {
    views: watch::Receiver<Arc<Vec<RolloutView>>>,
    commands: Option<mpsc::Sender<controller::Command>>,
}

impl Default for Rollouts {
    fn default() -> Self {
        let (_, views) = watch::channel(Arc::new(Vec::new()));
        Self {
            views,
            commands: None,
        }
    }
}

impl Rollouts {
    /// Every rollout now, by namespace and name.
    pub fn list(&self) -> Arc<Vec<RolloutView>> {
        self.views.borrow().clone()
    }

    /// Notified whenever a rollout changes.
    pub fn watch(&self) -> watch::Receiver<Arc<Vec<RolloutView>>> {
        self.views.clone()
    }

    /// Whether the controller runs.
    pub fn enabled(&self) -> bool {
        self.commands.is_some()
    }

    /// Carries out `action` on a rollout; answers the rollout after it.
    pub async fn act(
        &self,
        namespace: &str,
        name: &str,
        action: Action,
    ) -> Result<RolloutView, CommandError> {
        let Some(commands) = &self.commands else {
            return Err(CommandError::NotFound(namespace.into(), name.into()));
        };
        let (reply, answer) = oneshot::channel();
        let command = controller::Command {
            namespace: namespace.into(),
            name: name.into(),
            action,
            reply,
        };
        commands
            .send(command)
            .await
            .map_err(|_| CommandError::Stopped)?;
        answer.await.map_err(|_| CommandError::Stopped)?
    }
}

/// A running controller: its API handle, the routes it adds, and its tasks (stopped when
/// this is dropped).
pub struct Running {
    /// For the API.
    pub rollouts: Rollouts,
    /// The generated routes, to lay over the user's.
    pub routes: watch::Receiver<Arc<RouteSet>>,
    /// The rollouts run, as last read (their Deployment backends want Services).
    pub defs: watch::Receiver<Arc<Vec<RolloutDef>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Loads the rollouts and their saved state (so that the routes they generate are ready
/// before anything is served: a restart moves no traffic), then starts the controller and
/// the task polling `config.path` for edits.
pub async fn spawn<B: MetricsBackend + Clone>(
    config: &RolloutsConfig,
    backend: B,
    clock: Clock,
) -> Result<Running, RolloutsFileError> {
    let (texts, defs) = load(&config.path).await?;
    tracing::info!(path = %config.path.display(), rollouts = defs.len(), state_dir = %config.state_dir.display(), "loaded rollouts");
    let (defs_tx, defs_rx) = watch::channel(Arc::new(defs));
    let poll = tokio::spawn(follow(
        config.path.clone(),
        config.poll_interval,
        texts,
        defs_tx,
    ));
    let state = StateStore::Dir(StateDir(Some(config.state_dir.clone())));
    Ok(start(defs_rx, state, backend, clock, Lead::default(), vec![poll]).await)
}

/// Who runs rollouts and who hears about it: on Kubernetes, the Lease holder, publishing
/// Events; locally (the default), this process, publishing none.
#[derive(Debug, Default)]
pub struct Lead {
    /// Whether this replica holds the Lease; none: it always runs rollouts.
    pub leader: Option<watch::Receiver<bool>>,
    /// Where transitions are published as Kubernetes Events.
    pub events: Option<events::Publisher>,
}

/// Reconciles the current definitions (their saved state loaded, their routes ready), then
/// starts the controller following `defs`; `tasks` (the definitions' sources) stop with it.
pub async fn start<B: MetricsBackend + Clone>(
    mut defs: watch::Receiver<Arc<Vec<RolloutDef>>>,
    state: StateStore,
    backend: B,
    clock: Clock,
    lead: Lead,
    mut tasks: Vec<tokio::task::JoinHandle<()>>,
) -> Running {
    let (routes_tx, routes) = watch::channel(Arc::new(RouteSet::default()));
    let (views_tx, views) = watch::channel(Arc::new(Vec::new()));
    let mut controller = controller::Controller::new(backend, state, clock, routes_tx, views_tx);
    controller.leader = lead.leader;
    controller.events = lead.events;
    let first = defs.borrow_and_update().clone();
    controller.reconcile(&first).await;
    let watched = defs.clone();
    let (commands_tx, commands_rx) = mpsc::channel(64);
    tasks.push(tokio::spawn(controller.run(defs, commands_rx)));
    Running {
        rollouts: Rollouts {
            views,
            commands: Some(commands_tx),
        },
        routes,
        defs: watched,
        tasks,
    }
}

/// Re-reads `path` every `interval`; a valid edit is published, an invalid one logged
/// (file, line, field) while the last good set stays.
async fn follow(
    path: PathBuf,
    interval: Duration,
    mut last: Vec<(PathBuf, String)>,
    defs: watch::Sender<Arc<Vec<RolloutDef>>>,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let texts = match read_all(&path).await {
            Ok(texts) => texts,
            Err(_) => continue,
        };
        if texts == last {
            continue;
        }
        match parse_all(&texts) {
            Ok(parsed) => {
                tracing::info!(path = %path.display(), rollouts = parsed.len(), "loaded rollouts");
                defs.send_replace(Arc::new(parsed));
            }
            Err(error) => tracing::error!(
                error = %crate::discovery::file::chain(&error),
                "rejected rollouts edit; keeping the last good set"
            ),
        }
        last = texts;
    }
}
