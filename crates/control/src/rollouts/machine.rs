//! The rollout state machine, pure: a [`RolloutStatus`] moved by time, analyses and user
//! actions. No IO and no clock of its own: every call is given `now` (Unix ms), so the
//! controller persists exactly what decides, and tests drive it step by step.

use ferry_api::rollout::{
    Action, AnalysisRecord, Phase, RolloutStatus, RunRecord, Traffic, Verdict, MAX_ANALYSES,
    MAX_HISTORY,
};

use super::spec::{RolloutDef, StepKind};

/// Why an action was refused (the API answers 409 with it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} rollout {namespace}/{name}: {why}")]
pub struct ActionError {
    /// The action.
    pub action: &'static str,
    /// The rollout's namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Why not.
    pub why: String,
}

/// A new run of `def`, starting at its first step.
pub fn start(def: &RolloutDef, now: i64, history: Vec<RunRecord>) -> RolloutStatus {
    let mut status = RolloutStatus {
        revision: def.revision.clone(),
        phase: Phase::Progressing,
        step: 0,
        started_ms: now,
        step_started_ms: now,
        paused_ms: None,
        analyzed_ms: None,
        step_passed: false,
        failures: 0,
        reason: String::new(),
        transition_ms: now,
        analyses: Vec::new(),
        history,
    };
    enter(def, &mut status, 0, now, "started");
    status
}

/// The status to run with after (re)loading `def`: `saved` when it is for the same
/// revision, else a new run (the unfinished one recorded as superseded).
pub fn resume(def: &RolloutDef, saved: Option<RolloutStatus>, now: i64) -> RolloutStatus {
    match saved {
        Some(s) if s.revision == def.revision => s,
        Some(mut s) => {
            if !s.phase.is_final() {
                finish_record(
                    &mut s,
                    "Superseded",
                    "the spec changed",
                    now,
                    &def.spec.canary.name,
                );
            }
            start(def, now, s.history)
        }
        None => start(def, now, Vec::new()),
    }
}

/// Moves to step `i` (promoting past the last).
fn enter(def: &RolloutDef, s: &mut RolloutStatus, i: usize, now: i64, why: &str) {
    s.step = i;
    s.step_started_ms = now;
    s.paused_ms = None;
    s.step_passed = false;
    // The next analysis covers a full window of this step's traffic.
    s.analyzed_ms = Some(now);
    s.transition_ms = now;
    match def.steps.get(i) {
        None => {
            s.phase = Phase::Promoted;
            s.reason = format!(
                "{why}; all steps done: all traffic to {}",
                def.spec.canary.name
            );
            finish_record(s, "Promoted", &s.reason.clone(), now, &def.spec.canary.name);
        }
        Some(StepKind::Pause) => {
            s.phase = Phase::Paused;
            s.reason = format!("{why}; step {i} is a gate: waiting until promoted");
        }
        Some(StepKind::Confirm { url }) => {
            s.phase = Phase::Progressing;
            s.reason = format!("{why}; step {i} waits for {url} to answer 200");
        }
        Some(_) => {
            s.phase = Phase::Progressing;
            s.reason = format!("{why}; step {i}");
        }
    }
}

fn finish_record(s: &mut RolloutStatus, outcome: &str, reason: &str, now: i64, canary: &str) {
    s.history.push(RunRecord {
        revision: s.revision.clone(),
        canary: canary.to_string(),
        outcome: outcome.to_string(),
        reason: reason.to_string(),
        step: s.step,
        started_ms: s.started_ms,
        ended_ms: now,
    });
    if s.history.len() > MAX_HISTORY {
        s.history.remove(0);
    }
}

fn back_to_stable(def: &RolloutDef, s: &mut RolloutStatus, phase: Phase, reason: String, now: i64) {
    s.phase = phase;
    s.paused_ms = None;
    s.reason = reason;
    s.transition_ms = now;
    let outcome = phase.as_str();
    finish_record(s, outcome, &s.reason.clone(), now, &def.spec.canary.name);
}

/// Whether a user paused it (rather than a gate).
pub fn user_paused(s: &RolloutStatus) -> bool {
    s.paused_ms.is_some()
}

/// Goes to the next step when the current one has baked (and, with an analysis, passed
/// one). Returns whether the status changed.
pub fn tick(def: &RolloutDef, s: &mut RolloutStatus, now: i64) -> bool {
    if s.phase != Phase::Progressing {
        return false;
    }
    let Some(bake) = def.steps.get(s.step).and_then(StepKind::bake) else {
        return false;
    };
    let baked = now - s.step_started_ms >= bake.as_millis() as i64;
    let judged = def.analysis.is_none() || s.step_passed;
    if baked && judged {
        let why = format!("step {} baked {}", s.step, humantime::format_duration(bake));
        enter(def, s, s.step + 1, now, &why);
        return true;
    }
    false
}

/// The URL to ask while the rollout waits at a confirm step.
pub fn confirm_url<'a>(def: &'a RolloutDef, s: &RolloutStatus) -> Option<&'a str> {
    match (s.phase, def.steps.get(s.step)) {
        (Phase::Progressing, Some(StepKind::Confirm { url })) => Some(url),
        _ => None,
    }
}

/// The confirm step's webhook answered 200: on to the next step.
pub fn confirmed(def: &RolloutDef, s: &mut RolloutStatus, now: i64) -> bool {
    let Some(url) = confirm_url(def, s) else {
        return false;
    };
    let why = format!("step {} confirmed by {url}", s.step);
    enter(def, s, s.step + 1, now, &why);
    true
}

/// When the next analysis is due (Unix ms), while one can run: the rollout has not ended
/// and the canary gets traffic.
pub fn analysis_due(def: &RolloutDef, s: &RolloutStatus) -> Option<i64> {
    let a = def.analysis.as_ref()?;
    if s.phase.is_final() || !canary_gets_traffic(&traffic(def, s)) {
        return None;
    }
    Some(s.analyzed_ms.unwrap_or(s.step_started_ms) + a.interval.as_millis() as i64)
}

fn canary_gets_traffic(t: &Traffic) -> bool {
    t.canary_weight > 0
}

/// Records an analysis; a failed one counts, and at the failure limit the rollout rolls
/// back. Returns whether the phase changed.
pub fn analyzed(def: &RolloutDef, s: &mut RolloutStatus, record: AnalysisRecord) -> bool {
    s.analyzed_ms = Some(record.at_ms);
    let now = record.at_ms;
    let verdict = record.verdict;
    let reason = record.reason.clone();
    s.analyses.push(record);
    if s.analyses.len() > MAX_ANALYSES {
        s.analyses.remove(0);
    }
    match verdict {
        Verdict::Passed => s.step_passed = true,
        Verdict::Inconclusive => {}
        Verdict::Failed => {
            s.failures += 1;
            let limit = def.analysis.as_ref().map_or(1, |a| a.failure_limit);
            if s.failures >= limit {
                let why = format!(
                    "analysis failed at step {} ({} of {limit} failures allowed): {reason}",
                    s.step, s.failures
                );
                back_to_stable(def, s, Phase::RolledBack, why, now);
                return true;
            }
        }
    }
    false
}

/// Carries out a user's action.
pub fn act(
    def: &RolloutDef,
    s: &mut RolloutStatus,
    action: Action,
    now: i64,
) -> Result<(), ActionError> {
    let refuse = |why: String| ActionError {
        action: action.as_str(),
        namespace: def.namespace.clone(),
        name: def.name.clone(),
        why,
    };
    let ended = s.phase.is_final();
    match action {
        Action::Start if ended => {
            *s = start(def, now, std::mem::take(&mut s.history));
            s.reason = format!("started again by a user; {}", s.reason);
        }
        Action::Start => {
            return Err(refuse(format!(
                "it is {} at step {}; abort it first",
                s.phase.as_str(),
                s.step
            )))
        }
        _ if ended => return Err(refuse(format!("it has ended ({})", s.phase.as_str()))),
        Action::Promote => enter(
            def,
            s,
            s.step + 1,
            now,
            &format!("step {} promoted by a user", s.step),
        ),
        Action::Pause if user_paused(s) => return Err(refuse("it is already paused".into())),
        Action::Pause => {
            s.paused_ms = Some(now);
            s.phase = Phase::Paused;
            s.reason = format!("paused by a user at step {}", s.step);
            s.transition_ms = now;
        }
        Action::Resume => {
            let Some(paused) = s.paused_ms.take() else {
                return Err(refuse(if s.phase == Phase::Paused {
                    format!("step {} is a gate: promote it to go on", s.step)
                } else {
                    "it is not paused".into()
                }));
            };
            // The bake clock stood still while paused.
            s.step_started_ms += now - paused;
            s.phase = match def.steps.get(s.step) {
                Some(StepKind::Pause) => Phase::Paused,
                _ => Phase::Progressing,
            };
            s.reason = format!("resumed by a user at step {}", s.step);
            s.transition_ms = now;
        }
        Action::Abort => back_to_stable(
            def,
            s,
            Phase::Aborted,
            format!("aborted by a user at step {}", s.step),
            now,
        ),
    }
    Ok(())
}

/// Where traffic goes in this state: a pure function of spec and status, so a restarted
/// controller serves exactly what was served.
pub fn traffic(def: &RolloutDef, s: &RolloutStatus) -> Traffic {
    let stable = Traffic {
        canary_weight: 0,
        matches: None,
    };
    match s.phase {
        Phase::RolledBack | Phase::Aborted => return stable,
        Phase::Promoted => {
            return Traffic {
                canary_weight: 100,
                matches: None,
            }
        }
        Phase::Progressing | Phase::Paused => {}
    }
    // A gate holds the traffic of the step before it.
    let step = def.steps[..s.step.min(def.steps.len())]
        .iter()
        .chain(def.steps.get(s.step))
        .rev()
        .find(|k| !matches!(k, StepKind::Pause | StepKind::Confirm { .. }));
    match step {
        Some(StepKind::Weight { weight, .. }) => Traffic {
            canary_weight: i64::from(*weight),
            matches: None,
        },
        Some(StepKind::Match { rules, .. }) => Traffic {
            canary_weight: 100,
            matches: Some(rules.clone()),
        },
        _ => stable,
    }
}

#[cfg(test)]
mod tests;
