//! Kubernetes Events for rollouts: which events a change of a rollout's status makes
//! ([`between`], pure: it compares two statuses), and the [`Publisher`] that creates them as
//! events.k8s.io/v1 Events regarding the `Rollout`, in the background, so that `kubectl
//! describe ro NAME` tells the rollout's story. Only the replica running rollouts (the Lease
//! holder) makes changes, so only it publishes.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferry_api::rollout::{AnalysisRecord, Figures, Phase, RolloutStatus, Verdict};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::DynamicObject;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource as _};
use tokio::sync::mpsc;

use super::spec::RolloutDef;

/// The reporting controller named in every Event.
pub const REPORTING_CONTROLLER: &str = "ferry-control";
/// Events waiting to be published at most; more are dropped (and logged).
const QUEUE: usize = 256;
/// How long one Event's creation may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// The longest note the API server takes (events.k8s.io/v1: 1 kB).
pub const MAX_NOTE: usize = 1024;

/// Why an Event is published: its `reason`, its type and its `action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A run began: the rollout is new, its spec changed, or a user started it again.
    RolloutStarted,
    /// The spec changed while a run was unfinished: that run ends.
    Superseded,
    /// The rollout entered a step (baked, confirmed or promoted past the last one).
    StepAdvanced,
    /// A user paused it.
    Paused,
    /// A user resumed it.
    Resumed,
    /// Every step is done: all traffic to the canary.
    Promoted,
    /// An analysis judged the canary worse than its thresholds.
    AnalysisFailed,
    /// Failed analyses reached the failure limit: all traffic back to stable.
    RolledBack,
    /// A user aborted it: all traffic back to stable.
    Aborted,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Self; 9] = [
        Self::RolloutStarted,
        Self::Superseded,
        Self::StepAdvanced,
        Self::Paused,
        Self::Resumed,
        Self::Promoted,
        Self::AnalysisFailed,
        Self::RolledBack,
        Self::Aborted,
    ];

    /// The Event's `reason` (`kubectl describe` shows it).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RolloutStarted => "RolloutStarted",
            Self::Superseded => "Superseded",
            Self::StepAdvanced => "StepAdvanced",
            Self::Paused => "Paused",
            Self::Resumed => "Resumed",
            Self::Promoted => "Promoted",
            Self::AnalysisFailed => "AnalysisFailed",
            Self::RolledBack => "RolledBack",
            Self::Aborted => "Aborted",
        }
    }

    /// Warning when the canary let its callers down; Normal otherwise.
    pub fn event_type(self) -> EventType {
        match self {
            Self::AnalysisFailed | Self::RolledBack => EventType::Warning,
            _ => EventType::Normal,
        }
    }

    /// The Event's `action`: what the controller did.
    pub fn action(self) -> &'static str {
        match self {
            Self::RolloutStarted => "Start",
            Self::Superseded => "Supersede",
            Self::StepAdvanced => "Advance",
            Self::Paused => "Pause",
            Self::Resumed => "Resume",
            Self::Promoted => "Promote",
            Self::AnalysisFailed => "Analyze",
            Self::RolledBack => "RollBack",
            Self::Aborted => "Abort",
        }
    }
}

/// One Event about a rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutEvent {
    /// Why.
    pub reason: Reason,
    /// The step and figures: the reason the state machine recorded, at most [`MAX_NOTE`]
    /// bytes.
    pub note: String,
}

impl RolloutEvent {
    fn new(reason: Reason, note: String) -> Self {
        Self {
            reason,
            note: truncate(note),
        }
    }
}

/// The Events a change of a rollout's status from `before` (none: the controller had no
/// status for it) to `after` makes, oldest first: each failed analysis since `before`, then
/// the transition (a new run, a step entered, a pause or resume by a user, an end). A change
/// that is neither (an analysis that passed or could not judge) makes none.
pub fn between(
    def: &RolloutDef,
    before: Option<&RolloutStatus>,
    after: &RolloutStatus,
) -> Vec<RolloutEvent> {
    let Some(before) = before else {
        return vec![started(after)];
    };
    if before.revision != after.revision {
        let mut events = Vec::new();
        if !before.phase.is_final() {
            let note = format!(
                "revision {} superseded by {} at step {}: the spec changed",
                before.revision, after.revision, before.step
            );
            events.push(RolloutEvent::new(Reason::Superseded, note));
        }
        events.push(started(after));
        return events;
    }
    if before.phase.is_final() {
        return match after.phase.is_final() {
            true => Vec::new(),
            false => vec![started(after)],
        };
    }
    let mut events = failed_analyses(def, before, after);
    let paused = |s: &RolloutStatus| s.paused_ms.is_some();
    let reason = match after.phase {
        Phase::Promoted => Some(Reason::Promoted),
        Phase::RolledBack => Some(Reason::RolledBack),
        Phase::Aborted => Some(Reason::Aborted),
        _ if after.step != before.step => Some(Reason::StepAdvanced),
        _ if paused(after) && !paused(before) => Some(Reason::Paused),
        _ if paused(before) && !paused(after) => Some(Reason::Resumed),
        _ => None,
    };
    if let Some(reason) = reason {
        events.push(RolloutEvent::new(reason, after.reason.clone()));
    }
    events
}

fn started(after: &RolloutStatus) -> RolloutEvent {
    let note = format!("revision {}: {}", after.revision, after.reason);
    RolloutEvent::new(Reason::RolloutStarted, note)
}

/// The failed analyses recorded after `before`'s last one (same run), each with its count
/// against the failure limit and both sides' figures.
fn failed_analyses(
    def: &RolloutDef,
    before: &RolloutStatus,
    after: &RolloutStatus,
) -> Vec<RolloutEvent> {
    let last = before.analyses.last().map(|r| r.at_ms);
    let new: Vec<&AnalysisRecord> = after
        .analyses
        .iter()
        .filter(|r| last.is_none_or(|t| r.at_ms > t))
        .filter(|r| r.verdict == Verdict::Failed)
        .collect();
    let limit = def.analysis.as_ref().map_or(1, |a| a.failure_limit);
    let n = new.len() as u32;
    new.into_iter()
        .enumerate()
        .map(|(i, r)| {
            let count = (after.failures + 1 + i as u32).saturating_sub(n);
            let note = format!(
                "analysis failed at step {} ({count} of {limit} failures allowed): {}; canary {}, stable {} over {}s",
                r.step,
                r.reason,
                figures(&r.canary),
                figures(&r.stable),
                r.window_seconds,
            );
            RolloutEvent::new(Reason::AnalysisFailed, note)
        })
        .collect()
}

/// `120 requests, 97.50% success, p99 12ms`.
fn figures(f: &Figures) -> String {
    let mut text = format!("{:.0} requests", f.requests);
    if let Some(success) = f.success {
        text.push_str(&format!(", {success:.2}% success"));
    }
    if let Some(p99) = f.p99_ms {
        text.push_str(&format!(", p99 {p99:.0}ms"));
    }
    text
}

/// `note` cut to [`MAX_NOTE`] bytes (on a character boundary, ending in `…`).
fn truncate(mut note: String) -> String {
    if note.len() <= MAX_NOTE {
        return note;
    }
    let ellipsis = '…';
    let mut end = MAX_NOTE - ellipsis.len_utf8();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    note.truncate(end);
    note.push(ellipsis);
    note
}

/// Publishes rollouts' Events from a background task: at most [`QUEUE`] waiting (more are
/// dropped), each creation given [`TIMEOUT`]; a failure is logged and changes nothing, so
/// the controller is never held up by the API server.
#[derive(Clone, Debug)]
pub struct Publisher {
    queue: mpsc::Sender<Pending>,
    /// Events dropped because the queue was full.
    dropped: Arc<AtomicU64>,
}

#[derive(Debug)]
struct Pending {
    namespace: String,
    name: String,
    event: RolloutEvent,
}

impl Publisher {
    /// Starts publishing through `client` as `instance` of [`REPORTING_CONTROLLER`]; each
    /// Event regards the `Rollout` as `rollouts` holds it (with its uid, which `kubectl
    /// describe` looks for). The task runs until every `Publisher` is dropped.
    pub fn spawn(
        client: Client,
        rollouts: Store<DynamicObject>,
        instance: String,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, pending) = mpsc::channel(QUEUE);
        let reporter = Reporter {
            controller: REPORTING_CONTROLLER.into(),
            instance: Some(instance),
        };
        let create = move |event: Event, regarding: ObjectReference| {
            // A recorder per Event: a long-lived one folds Events of the same reason into a
            // series that keeps the first note, so "step 2" would show as "step 1 (x2)".
            let recorder = Recorder::new(client.clone(), reporter.clone());
            async move {
                recorder
                    .publish(&event, &regarding)
                    .await
                    .map_err(CreateError::from)
            }
        };
        let task = tokio::spawn(run(rollouts, pending, create));
        (Self::with_queue(queue), task)
    }

    fn with_queue(queue: mpsc::Sender<Pending>) -> Self {
        Self {
            queue,
            dropped: Arc::default(),
        }
    }

    /// How many Events were dropped because [`QUEUE`] were already waiting.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Queues `events` about the rollout `namespace/name`.
    pub fn publish(&self, namespace: &str, name: &str, events: Vec<RolloutEvent>) {
        for event in events {
            let reason = event.reason.as_str();
            let pending = Pending {
                namespace: namespace.into(),
                name: name.into(),
                event,
            };
            if self.queue.try_send(pending).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%namespace, %name, reason, "too many rollout events waiting to be published; dropping one");
            }
        }
    }
}

/// Why an Event was not created (the API server's answer, or the connection's).
type CreateError = Box<dyn std::error::Error + Send + Sync>;

/// Creates each queued Event with `create`, one at a time, each given [`TIMEOUT`]; a
/// failure or a timeout is logged and the next one goes on.
async fn run<C, F>(rollouts: Store<DynamicObject>, mut pending: mpsc::Receiver<Pending>, create: C)
where
    C: Fn(Event, ObjectReference) -> F,
    F: Future<Output = Result<(), CreateError>>,
{
    let ar = super::kubernetes::resource();
    while let Some(Pending {
        namespace,
        name,
        event,
    }) = pending.recv().await
    {
        let reason = event.reason.as_str();
        let key = ObjectRef::new_with(&name, ar.clone()).within(&namespace);
        let Some(rollout) = rollouts.get(&key) else {
            tracing::debug!(%namespace, %name, reason, "the Rollout is gone; not publishing its event");
            continue;
        };
        let regarding = rollout.object_ref(&ar);
        let k8s_event = Event {
            type_: event.reason.event_type(),
            reason: reason.into(),
            note: Some(event.note),
            action: event.reason.action().into(),
            secondary: None,
        };
        match tokio::time::timeout(TIMEOUT, create(k8s_event, regarding)).await {
            Ok(Ok(())) => tracing::debug!(%namespace, %name, reason, "rollout event published"),
            Ok(Err(error)) => {
                tracing::warn!(%namespace, %name, reason, %error, "cannot publish a rollout's event")
            }
            Err(_) => {
                tracing::warn!(%namespace, %name, reason, ?TIMEOUT, "publishing a rollout's event did not finish in time")
            }
        }
    }
}

#[cfg(test)]
mod tests;
