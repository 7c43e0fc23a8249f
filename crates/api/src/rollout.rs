//! Progressive delivery: the `Rollout` resource (`ferry.io/v1alpha1`) as written by users,
//! and the rollout state the public API answers (`/api/v1/rollouts`). `docs/rollouts.md`
//! explains the semantics; the control plane validates and runs them.

use serde::{Deserialize, Serialize};

/// The resource's API group.
pub const GROUP: &str = "ferry.io";
/// The resource's version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of a `Rollout`.
pub const API_VERSION: &str = "ferry.io/v1alpha1";
/// `kind` of a `Rollout`.
pub const KIND: &str = "Rollout";

/// `GET`: every rollout; answers [`RolloutList`].
pub const ROLLOUTS_PATH: &str = "/api/v1/rollouts";

/// `GET {ROLLOUTS_PATH}/{namespace}/{name}`: one rollout ([`RolloutView`]);
/// `POST {ROLLOUTS_PATH}/{namespace}/{name}/{action}` with a JSON body (`{}`): an [`Action`].
pub fn rollout_path(namespace: &str, name: &str) -> String {
    format!("{ROLLOUTS_PATH}/{namespace}/{name}")
}

/// A `Rollout` document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// [`API_VERSION`].
    pub api_version: String,
    /// [`KIND`].
    pub kind: String,
    /// Only `name` and `namespace` are read.
    #[serde(default)]
    pub metadata: Metadata,
    /// What moves, between which backends, in which steps, judged how.
    pub spec: RolloutSpec,
    /// Written by the controller on Kubernetes; ignored when read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

/// The part of `metadata` a rollout uses; other fields are accepted and ignored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// The rollout's name.
    #[serde(default)]
    pub name: String,
    /// Its namespace (`default` when absent), also that of every Service it names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `Rollout.spec`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutSpec {
    /// The Service whose traffic moves: callers address it, the rollout's route splits it.
    pub service: ServiceRef,
    /// The version that runs now (a Service, which may be `service` itself, or a
    /// Deployment).
    pub stable: BackendRef,
    /// The new version (a Service or a Deployment).
    pub canary: BackendRef,
    /// The steps, in order; after the last, all traffic goes to the canary.
    pub steps: Vec<Step>,
    /// How each step is judged; none: steps advance on time (and gates) alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Analysis>,
    /// Called with the rollout's state (JSON `POST`) at every transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Webhook>,
}

/// The Service whose traffic moves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceRef {
    /// The Service's name.
    pub name: String,
    /// The Service port whose traffic moves.
    pub port: i64,
}

/// A backend: a Service, or a Deployment the controller fronts with a Service of its own
/// (`{kind: Deployment, name: voting-v2}`, as Flagger's `targetRef` and Argo Rollouts'
/// `workloadRef` name one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendRef {
    /// [`SERVICE_KIND`] (when absent) or [`DEPLOYMENT_KIND`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The Service's (or Deployment's) name.
    pub name: String,
    /// Its port; the target Service's port when absent. For a Deployment, the port of the
    /// Service fronting it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
}

/// `kind` of a backend that is a Service (the default).
pub const SERVICE_KIND: &str = "Service";
/// `kind` of a backend that is a Deployment, fronted by a Service the controller makes.
pub const DEPLOYMENT_KIND: &str = "Deployment";
/// Added to a Deployment backend's name to name the Service that fronts it.
pub const FRONTING_SUFFIX: &str = "-ferry";

impl BackendRef {
    /// A Service backend.
    pub fn service(name: impl Into<String>) -> Self {
        Self {
            kind: None,
            name: name.into(),
            port: None,
        }
    }

    /// The Deployment this backend names, if it names one.
    pub fn deployment(&self) -> Option<&str> {
        (self.kind.as_deref() == Some(DEPLOYMENT_KIND)).then_some(self.name.as_str())
    }

    /// The Service traffic to this backend goes to: the Service it names, or the one
    /// fronting its Deployment (`<deployment>-ferry`).
    pub fn service_name(&self) -> String {
        match self.deployment() {
            Some(deployment) => format!("{deployment}{FRONTING_SUFFIX}"),
            None => self.name.clone(),
        }
    }
}

/// One step: exactly one of `weight`, `match`, `pause` and `confirm`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Step {
    /// Percent of requests (0-100) sent to the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
    /// Only the requests these rules select go to the canary.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<StepMatch>,
    /// A manual gate: waits until promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<Pause>,
    /// A gate another system opens: waits until its webhook answers 200 (or promoted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm: Option<Webhook>,
    /// How long the step runs before the next ("time to smoke"), e.g. `30s`; with
    /// `weight` or `match` only; default none (one passing analysis is enough).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake: Option<String>,
}

/// A manual gate (no fields yet).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pause {}

/// Flag-style targeting: a request matches when every header rule and every cookie rule
/// holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StepMatch {
    /// Header rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderRule>,
    /// Cookie rules (a cookie of that name with exactly that value).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cookies: Vec<CookieRule>,
}

/// A header rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderRule {
    /// The header's name.
    pub name: String,
    /// `Exact` (default), `Prefix`, `Suffix` or `RegularExpression`.
    #[serde(default = "exact", rename = "type")]
    pub match_type: String,
    /// The value (or pattern).
    pub value: String,
}

fn exact() -> String {
    "Exact".to_string()
}

/// A cookie rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CookieRule {
    /// The cookie's name.
    pub name: String,
    /// Its exact value.
    pub value: String,
}

/// How a step is judged: canary against stable, over the same window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Analysis {
    /// How often, and over which window (e.g. `30s`); default `1m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Fewer canary requests than this in a window: no verdict (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<i64>,
    /// Failed analyses that roll the rollout back (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_limit: Option<i64>,
    /// Success-rate thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<SuccessRate>,
    /// Latency thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p99: Option<LatencyP99>,
}

/// Success-rate thresholds, in percent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SuccessRate {
    /// The canary's success rate must be at least this (0-100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// … and no more than this many points below stable's (0-100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_drop: Option<f64>,
}

/// Latency p99 thresholds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LatencyP99 {
    /// The canary's p99 must be at most this many milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<f64>,
    /// … and at most this multiple of stable's p99.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ratio: Option<f64>,
}

/// The webhook called at transitions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Webhook {
    /// An `http://` URL.
    pub url: String,
}

/// Where a rollout is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Moving through its steps.
    Progressing,
    /// Held: by a `pause` step (until promoted) or by a user (until resumed).
    Paused,
    /// Done: all traffic goes to the canary.
    Promoted,
    /// Failed analysis: all traffic went back to stable.
    RolledBack,
    /// Stopped by a user: all traffic went back to stable.
    Aborted,
}

impl Phase {
    /// Whether the rollout has ended.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Promoted | Self::RolledBack | Self::Aborted)
    }

    /// The name shown (`RolledBack`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Progressing => "Progressing",
            Self::Paused => "Paused",
            Self::Promoted => "Promoted",
            Self::RolledBack => "RolledBack",
            Self::Aborted => "Aborted",
        }
    }
}

/// What a user can ask of a rollout (`POST …/{action}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Starts it again from the first step (after it ended).
    Start,
    /// Goes past the current step now (a `pause` gate, or the bake); after the last step,
    /// promotes.
    Promote,
    /// Holds it at its step, the bake clock stopped.
    Pause,
    /// Lets a user-paused rollout go on.
    Resume,
    /// Sends all traffic back to stable and stops.
    Abort,
}

impl Action {
    /// Every action, in the CLI's order.
    pub const ALL: [Action; 5] = [
        Self::Start,
        Self::Promote,
        Self::Pause,
        Self::Resume,
        Self::Abort,
    ];

    /// The path segment (`promote`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Promote => "promote",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Abort => "abort",
        }
    }

    /// Parses a path segment.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// A rollout's state: what the controller persists and the API shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Which spec this run is for (a digest of service, backends and steps): a different
    /// one starts a new run.
    pub revision: String,
    /// Where it is.
    pub phase: Phase,
    /// The current step's index (`steps.len()` once promoted).
    pub step: usize,
    /// When the run started (Unix ms).
    pub started_ms: i64,
    /// When the current step started (Unix ms), moved forward by time spent user-paused.
    pub step_started_ms: i64,
    /// When a user paused it (Unix ms), while paused by a user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_ms: Option<i64>,
    /// When the last analysis ran (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analyzed_ms: Option<i64>,
    /// Whether an analysis has passed during the current step.
    #[serde(default)]
    pub step_passed: bool,
    /// Failed analyses in this run.
    #[serde(default)]
    pub failures: u32,
    /// Why it is where it is (the last transition's reason).
    #[serde(default)]
    pub reason: String,
    /// When the phase or step last changed (Unix ms).
    pub transition_ms: i64,
    /// The run's analyses, newest last (at most [`MAX_ANALYSES`]).
    #[serde(default)]
    pub analyses: Vec<AnalysisRecord>,
    /// Past runs, newest last (at most [`MAX_HISTORY`]).
    #[serde(default)]
    pub history: Vec<RunRecord>,
}

/// How many analyses a status keeps.
pub const MAX_ANALYSES: usize = 200;
/// How many past runs a status keeps.
pub const MAX_HISTORY: usize = 20;

/// Golden metrics of one backend over an analysis window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Figures {
    /// Responses in the window.
    pub requests: f64,
    /// Success rate in percent; `None` without responses.
    pub success: Option<f64>,
    /// Latency p99 in milliseconds; `None` without responses.
    pub p99_ms: Option<f64>,
}

/// One analysis: what was measured and what was decided.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRecord {
    /// When (Unix ms): the end of the window.
    pub at_ms: i64,
    /// The step it judged.
    pub step: usize,
    /// The window's length in seconds.
    pub window_seconds: f64,
    /// The canary's figures.
    pub canary: Figures,
    /// Stable's figures over the same window.
    pub stable: Figures,
    /// `Passed`, `Failed` or `Inconclusive` (too few requests).
    pub verdict: Verdict,
    /// Why (the failed thresholds, or the request count), empty when passed.
    #[serde(default)]
    pub reason: String,
}

/// What one analysis decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Every threshold held.
    Passed,
    /// A threshold did not hold.
    Failed,
    /// Too few canary requests to judge.
    Inconclusive,
}

/// A finished run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// The run's revision.
    pub revision: String,
    /// The canary Service of that run.
    pub canary: String,
    /// How it ended (`Promoted`, `RolledBack`, `Aborted`), or `Superseded` by a new spec.
    pub outcome: String,
    /// Why.
    pub reason: String,
    /// The step it ended at.
    pub step: usize,
    /// When it started and ended (Unix ms).
    pub started_ms: i64,
    /// When it ended (Unix ms).
    pub ended_ms: i64,
}

/// Where traffic goes now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Traffic {
    /// Percent of the requests the canary gets (of those matched, for a match step).
    pub canary_weight: i64,
    /// Only requests matching this go to the canary (a match step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<StepMatch>,
}

/// One rollout as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutView {
    /// The rollout's namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its spec, as given.
    pub spec: RolloutSpec,
    /// Its state.
    pub status: RolloutStatus,
    /// Where traffic goes now.
    pub traffic: Traffic,
}

/// `GET` [`ROLLOUTS_PATH`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutList {
    /// Every rollout, by namespace and name.
    pub rollouts: Vec<RolloutView>,
}
