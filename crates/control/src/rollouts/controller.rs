//! The controller task: runs every rollout's state machine on a clock, judges steps with
//! the metrics backend, carries out users' actions, persists each change and publishes the
//! routes that carry the traffic.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ferry_api::rollout::{Action, Figures, RolloutStatus, RolloutView, Verdict};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::spec::RolloutDef;
use super::state::StateStore;
use super::{analysis, events, hook, machine, traffic};
use crate::metrics::{unix_ms, MetricsBackend};
use crate::routes::RouteSet;

/// The longest the controller sleeps without looking (it wakes earlier for due work).
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// How often a confirm step's webhook is asked.
pub const CONFIRM_EVERY: Duration = Duration::from_secs(1);

/// Wall-clock time that advances with tokio's clock, so paused-time tests move it too.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    wall: SystemTime,
    mono: Instant,
}

impl Clock {
    /// Starts at the wall clock's now.
    pub fn new() -> Self {
        Self {
            wall: SystemTime::now(),
            mono: Instant::now(),
        }
    }

    /// Now.
    pub fn now(&self) -> SystemTime {
        self.wall + self.mono.elapsed()
    }

    /// Now, in Unix ms.
    pub fn now_ms(&self) -> i64 {
        unix_ms(self.now())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a user's action was not carried out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No such rollout.
    #[error("rollout {0}/{1} not found")]
    NotFound(String, String),
    /// The state machine refused it.
    #[error(transparent)]
    Refused(#[from] machine::ActionError),
    /// The controller is not running.
    #[error("the rollout controller is not running")]
    Stopped,
    /// Another replica holds the rollouts Lease.
    #[error("this control-plane replica does not run rollouts now (another holds the ferry-rollouts Lease); try again")]
    NotLeader,
}

/// A user's action, with where to answer.
pub struct Command {
    /// The rollout's namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// What to do.
    pub action: Action,
    /// The rollout after the action, or why not.
    pub reply: oneshot::Sender<Result<RolloutView, CommandError>>,
}

struct Entry {
    def: RolloutDef,
    status: RolloutStatus,
}

/// Every rollout and what it needs to run them.
pub struct Controller<B> {
    entries: BTreeMap<(String, String), Entry>,
    backend: B,
    state: StateStore,
    clock: Clock,
    routes: watch::Sender<Arc<RouteSet>>,
    views: watch::Sender<Arc<Vec<RolloutView>>>,
    hooks: hook::Hooks,
    /// When each rollout waiting at a confirm step asks its webhook next (Unix ms).
    confirm_at: BTreeMap<(String, String), i64>,
    /// Whether this replica runs rollouts (holds the Lease); none: always.
    pub leader: Option<watch::Receiver<bool>>,
    /// Where transitions are published as Kubernetes Events; none: not published.
    pub events: Option<events::Publisher>,
}

impl<B: MetricsBackend> Controller<B> {
    /// A controller with no rollouts yet, publishing on `routes` and `views`.
    pub fn new(
        backend: B,
        state: StateStore,
        clock: Clock,
        routes: watch::Sender<Arc<RouteSet>>,
        views: watch::Sender<Arc<Vec<RolloutView>>>,
    ) -> Self {
        Self {
            entries: BTreeMap::new(),
            backend,
            state,
            clock,
            routes,
            views,
            hooks: hook::Hooks::default(),
            confirm_at: BTreeMap::new(),
            leader: None,
            events: None,
        }
    }

    /// Takes in a new set of definitions: new rollouts resume from their saved state (or
    /// start), changed ones go on or start a new run (another revision), removed ones stop
    /// being served. Publishes the result.
    pub async fn reconcile(&mut self, defs: &[RolloutDef]) {
        if !self.leading() {
            return self.follow(defs).await;
        }
        let now = self.clock.now_ms();
        let mut entries = BTreeMap::new();
        for def in defs {
            let key = (def.namespace.clone(), def.name.clone());
            let (saved, fresh) = match self.entries.remove(&key) {
                Some(e) => (Some(e.status), false),
                None => (self.state.load(&def.namespace, &def.name).await, true),
            };
            let before = saved.clone();
            let mut status = machine::resume(def, saved, now);
            if fresh && before.as_ref() == Some(&status) && !status.phase.is_final() {
                // After a restart the metrics behind the last analysis are gone: the next
                // one covers a full window from now. Traffic stays exactly as it was.
                status.analyzed_ms = Some(now);
                tracing::info!(rollout = %format!("{}/{}", def.namespace, def.name), phase = status.phase.as_str(), step = status.step, "resumed a rollout from its saved state");
            }
            if before.as_ref() != Some(&status) {
                self.state.save(&def.namespace, &def.name, &status).await;
                if before
                    .as_ref()
                    .is_none_or(|b| b.revision != status.revision)
                {
                    tracing::info!(rollout = %format!("{}/{}", def.namespace, def.name), revision = %status.revision, "rollout started");
                }
                self.tell(def, before.as_ref(), &status);
            }
            entries.insert(
                key,
                Entry {
                    def: def.clone(),
                    status,
                },
            );
        }
        self.entries = entries;
        self.publish();
    }

    /// Whether this replica runs rollouts now.
    fn leading(&self) -> bool {
        self.leader.as_ref().is_none_or(|l| *l.borrow())
    }

    /// Not leading: serve what the saved states (written by the leader) say, as they are
    /// now; write nothing.
    async fn follow(&mut self, defs: &[RolloutDef]) {
        let now = self.clock.now_ms();
        let mut entries = BTreeMap::new();
        for def in defs {
            let saved = self.state.load(&def.namespace, &def.name).await;
            let status = match saved {
                Some(s) if s.revision == def.revision => s,
                // The leader has not written this run yet: what it will start with.
                _ => machine::start(def, now, Vec::new()),
            };
            let key = (def.namespace.clone(), def.name.clone());
            entries.insert(
                key,
                Entry {
                    def: def.clone(),
                    status,
                },
            );
        }
        self.entries = entries;
        self.publish();
    }

    /// Runs until `defs` closes: reconciles on every new definition set, carries out
    /// commands, and advances rollouts as their analyses and bakes come due.
    pub async fn run(
        mut self,
        mut defs: watch::Receiver<Arc<Vec<RolloutDef>>>,
        mut commands: mpsc::Receiver<Command>,
    ) {
        let mut saved = self.state.changes();
        let mut leader = self.leader.clone();
        loop {
            let wake = self.next_wake();
            tokio::select! {
                changed = defs.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let current = defs.borrow_and_update().clone();
                    self.reconcile(&current).await;
                }
                Some(command) = commands.recv() => self.command(command).await,
                () = tokio::time::sleep_until(wake) => self.advance().await,
                // Another replica wrote a state: a follower serves it.
                Some(()) = changed(&mut saved), if !self.leading() => {
                    let current = defs.borrow().clone();
                    self.follow(&current).await;
                }
                // Taking over, or handing over: start from what the resources say.
                Some(()) = changed(&mut leader) => {
                    tracing::info!(leading = self.leading(), "rollouts leadership changed");
                    let current = defs.borrow().clone();
                    self.entries.clear();
                    self.reconcile(&current).await;
                }
            }
        }
    }

    /// When there may be something to do: the earliest due analysis or finished bake.
    fn next_wake(&self) -> Instant {
        let now = self.clock.now_ms();
        let mut next = now + MAX_SLEEP.as_millis() as i64;
        for (key, e) in &self.entries {
            if let Some(due) = machine::analysis_due(&e.def, &e.status) {
                next = next.min(due);
            }
            if machine::confirm_url(&e.def, &e.status).is_some() {
                next = next.min(self.confirm_at.get(key).copied().unwrap_or(now));
            }
            let judged = e.def.analysis.is_none() || e.status.step_passed;
            if let (true, ferry_api::rollout::Phase::Progressing, Some(bake)) = (
                judged,
                e.status.phase,
                e.def.steps.get(e.status.step).and_then(|s| s.bake()),
            ) {
                next = next.min(e.status.step_started_ms + bake.as_millis() as i64);
            }
        }
        Instant::now() + Duration::from_millis((next - now).max(0) as u64)
    }

    /// Runs due analyses and finished bakes (only while leading).
    pub async fn advance(&mut self) {
        if !self.leading() {
            return;
        }
        let mut changed = Vec::new();
        let keys: Vec<_> = self.entries.keys().cloned().collect();
        for key in keys {
            let now = self.clock.now_ms();
            let before = self.entries[&key].status.clone();
            let due = {
                let e = &self.entries[&key];
                machine::analysis_due(&e.def, &e.status).filter(|due| *due <= now)
            };
            if due.is_some() {
                let record = self.analyze(&self.entries[&key].def, &before).await;
                let e = self.entries.get_mut(&key).expect("entry");
                let rolled_back = machine::analyzed(&e.def, &mut e.status, record.clone());
                let rollout = format!("{}/{}", key.0, key.1);
                match record.verdict {
                    Verdict::Failed => {
                        tracing::warn!(%rollout, step = record.step, reason = %record.reason, "a rollout's analysis failed")
                    }
                    Verdict::Inconclusive => {
                        tracing::info!(%rollout, step = record.step, reason = %record.reason, "a rollout's analysis could not judge")
                    }
                    Verdict::Passed => {
                        tracing::debug!(%rollout, step = record.step, "a rollout's analysis passed")
                    }
                }
                if rolled_back {
                    tracing::warn!(%rollout, reason = %e.status.reason, "rolled back: all traffic to stable");
                }
            }
            let ask = {
                let e = &self.entries[&key];
                machine::confirm_url(&e.def, &e.status).map(str::to_string)
            };
            let due = self.confirm_at.get(&key).is_none_or(|at| *at <= now);
            if let (Some(url), true) = (ask, due) {
                let view = view(&self.entries[&key].def, &self.entries[&key].status);
                let yes = self.hooks.confirm(&url, &view).await;
                let now = self.clock.now_ms();
                self.confirm_at
                    .insert(key.clone(), now + CONFIRM_EVERY.as_millis() as i64);
                if yes {
                    let e = self.entries.get_mut(&key).expect("entry");
                    machine::confirmed(&e.def, &mut e.status, now);
                    self.confirm_at.remove(&key);
                }
            }
            let e = self.entries.get_mut(&key).expect("entry");
            machine::tick(&e.def, &mut e.status, self.clock.now_ms());
            if e.status != before {
                changed.push((key, before));
            }
        }
        if changed.is_empty() {
            return;
        }
        // Saved before served: traffic a restart would not restore is never served. Saving
        // is one small file write (or status patch), so a rollback still reaches the
        // proxies within milliseconds of the decision.
        for (key, _) in &changed {
            self.persist(key).await;
        }
        self.publish();
        for (key, before) in changed {
            self.announce(&key, &before);
        }
    }

    async fn analyze(
        &self,
        def: &RolloutDef,
        status: &RolloutStatus,
    ) -> ferry_api::rollout::AnalysisRecord {
        let t = def
            .analysis
            .as_ref()
            .expect("analysis_due implies an analysis");
        let at = self.clock.now();
        let ns = &def.namespace;
        let (canary, stable) = (def.canary_service(), def.stable_service());
        let canary = analysis::measure(&self.backend, ns, &canary, t.interval, at);
        let stable = analysis::measure(&self.backend, ns, &stable, t.interval, at);
        match tokio::join!(canary, stable) {
            (Ok(canary), Ok(stable)) => analysis::judge(t, status.step, at, canary, stable),
            (Err(e), _) | (_, Err(e)) => {
                let mut record =
                    analysis::judge(t, status.step, at, Figures::default(), Figures::default());
                record.verdict = Verdict::Inconclusive;
                record.reason = format!("metrics unavailable: {e}");
                record
            }
        }
    }

    /// Persists a rollout's state.
    async fn persist(&self, key: &(String, String)) {
        if let Some(e) = self.entries.get(key) {
            self.state.save(&key.0, &key.1, &e.status).await;
        }
    }

    /// Logs a transition, tells the webhook about it and publishes its Events (and those
    /// of failed analyses).
    fn announce(&self, key: &(String, String), before: &RolloutStatus) {
        let Some(e) = self.entries.get(key) else {
            return;
        };
        self.tell(&e.def, Some(before), &e.status);
        let transition = e.status.phase != before.phase || e.status.step != before.step;
        if transition {
            tracing::info!(rollout = %format!("{}/{}", key.0, key.1), phase = e.status.phase.as_str(), step = e.status.step, reason = %e.status.reason, "rollout transition");
            if let Some(hook) = &e.def.spec.webhook {
                self.hooks.send(&hook.url, view(&e.def, &e.status));
            }
        }
    }

    /// Publishes the Events of a change of a rollout's status (in the background).
    fn tell(&self, def: &RolloutDef, before: Option<&RolloutStatus>, after: &RolloutStatus) {
        if let Some(publisher) = &self.events {
            publisher.publish(
                &def.namespace,
                &def.name,
                events::between(def, before, after),
            );
        }
    }

    async fn command(&mut self, c: Command) {
        if !self.leading() {
            let _ = c.reply.send(Err(CommandError::NotLeader));
            return;
        }
        let key = (c.namespace.clone(), c.name.clone());
        let now = self.clock.now_ms();
        let Some(e) = self.entries.get_mut(&key) else {
            let _ = c
                .reply
                .send(Err(CommandError::NotFound(c.namespace, c.name)));
            return;
        };
        let before = e.status.clone();
        let result = machine::act(&e.def, &mut e.status, c.action, now);
        let answer = view(&e.def, &e.status);
        if result.is_ok() {
            tracing::info!(rollout = %format!("{}/{}", key.0, key.1), action = c.action.as_str(), "rollout action");
            self.persist(&key).await;
            self.publish();
            self.announce(&key, &before);
        }
        let _ = c
            .reply
            .send(result.map(|()| answer).map_err(CommandError::from));
    }

    /// Publishes every rollout's route and view.
    fn publish(&self) {
        let mut set = RouteSet::default();
        let mut views = Vec::new();
        for e in self.entries.values() {
            let t = machine::traffic(&e.def, &e.status);
            set.http.push(traffic::route(&e.def, &t));
            views.push(view(&e.def, &e.status));
        }
        self.routes.send_if_modified(|current| {
            let differs = **current != set;
            if differs {
                *current = Arc::new(set);
            }
            differs
        });
        self.views.send_replace(Arc::new(views));
    }
}

/// Waits for a change of an optional watch: `None` once it is closed (or absent), so a
/// `select!` branch on it is disabled.
async fn changed<T>(rx: &mut Option<watch::Receiver<T>>) -> Option<()> {
    match rx {
        Some(r) => match r.changed().await {
            Ok(()) => Some(()),
            Err(_) => {
                *rx = None;
                None
            }
        },
        None => std::future::pending().await,
    }
}

/// A rollout as the API shows it.
pub fn view(def: &RolloutDef, status: &RolloutStatus) -> RolloutView {
    RolloutView {
        namespace: def.namespace.clone(),
        name: def.name.clone(),
        spec: def.spec.clone(),
        status: status.clone(),
        traffic: machine::traffic(def, status),
    }
}

#[cfg(test)]
mod tests;
