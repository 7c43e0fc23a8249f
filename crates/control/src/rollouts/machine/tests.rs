use std::time::SystemTime;

use ferry_api::rollout::{Action, AnalysisRecord, Figures, Phase, Verdict};

use super::*;
use crate::rollouts::spec;

const DEF: &str = "\
apiVersion: ferry.io/v1alpha1
kind: Rollout
metadata: {name: web}
spec:
  service: {name: web, port: 8080}
  stable: {name: web-v1}
  canary: {name: web-v2}
  steps:
  - weight: 10
    bake: 10s
  - pause: {}
  - match: {headers: [{name: x-beta, value: '1'}]}
    bake: 10s
  analysis:
    interval: 5s
    minRequests: 10
    failureLimit: 2
    successRate: {min: 95}
";

fn def() -> RolloutDef {
    spec::parse(DEF).unwrap().remove(0)
}

fn record(at_ms: i64, verdict: Verdict) -> AnalysisRecord {
    AnalysisRecord {
        at_ms,
        step: 0,
        window_seconds: 5.0,
        canary: Figures::default(),
        stable: Figures::default(),
        verdict,
        reason: "because".into(),
    }
}

#[test]
fn a_step_goes_on_only_once_baked_and_passed() {
    let d = def();
    let mut s = start(&d, 0, Vec::new());
    assert_eq!(traffic(&d, &s).canary_weight, 10);
    assert_eq!(analysis_due(&d, &s), Some(5_000));
    assert!(!tick(&d, &mut s, 10_000), "baked but not judged");
    analyzed(&d, &mut s, record(10_000, Verdict::Inconclusive));
    assert!(!tick(&d, &mut s, 10_000), "no verdict is not a pass");
    analyzed(&d, &mut s, record(15_000, Verdict::Passed));
    assert!(tick(&d, &mut s, 15_000));
    assert_eq!((s.phase, s.step), (Phase::Paused, 1));
    // The gate holds the previous step's traffic and is not left on time.
    assert_eq!(traffic(&d, &s).canary_weight, 10);
    assert!(!tick(&d, &mut s, 1_000_000));
    act(&d, &mut s, Action::Promote, 1_000_000).unwrap();
    assert_eq!((s.phase, s.step), (Phase::Progressing, 2));
    let t = traffic(&d, &s);
    assert_eq!((t.canary_weight, t.matches.is_some()), (100, true));
}

#[test]
fn failures_up_to_the_limit_roll_back_and_are_recorded() {
    let d = def();
    let mut s = start(&d, 0, Vec::new());
    assert!(!analyzed(&d, &mut s, record(5_000, Verdict::Failed)));
    assert_eq!(s.phase, Phase::Progressing);
    assert!(analyzed(&d, &mut s, record(10_000, Verdict::Failed)));
    assert_eq!(s.phase, Phase::RolledBack);
    assert_eq!(traffic(&d, &s).canary_weight, 0);
    assert_eq!(analysis_due(&d, &s), None);
    assert!(
        s.reason.contains("2 of 2 failures allowed): because"),
        "{}",
        s.reason
    );
    let last = s.history.last().unwrap();
    assert_eq!(
        (last.outcome.as_str(), last.ended_ms),
        ("RolledBack", 10_000)
    );
    // Ended: only `start` applies, and it begins a new run keeping the history.
    assert!(act(&d, &mut s, Action::Promote, 11_000).is_err());
    act(&d, &mut s, Action::Start, 12_000).unwrap();
    assert_eq!(
        (s.phase, s.step, s.failures, s.history.len()),
        (Phase::Progressing, 0, 0, 1)
    );
}

#[test]
fn a_user_pause_stops_the_bake_clock() {
    let d = def();
    let mut s = start(&d, 0, Vec::new());
    analyzed(&d, &mut s, record(5_000, Verdict::Passed));
    act(&d, &mut s, Action::Pause, 6_000).unwrap();
    assert_eq!(s.phase, Phase::Paused);
    assert!(!tick(&d, &mut s, 60_000));
    assert!(act(&d, &mut s, Action::Pause, 60_000).is_err());
    act(&d, &mut s, Action::Resume, 60_000).unwrap();
    // 4s of bake were left when paused.
    assert!(!tick(&d, &mut s, 63_999));
    assert!(tick(&d, &mut s, 64_000));
    assert_eq!(s.step, 1);
    // A gate is not resumed, it is promoted.
    let e = act(&d, &mut s, Action::Resume, 65_000).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot resume rollout default/web: step 1 is a gate: promote it to go on"
    );
}

#[test]
fn abort_sends_everything_to_stable_and_promote_past_the_end_promotes() {
    let d = def();
    let mut s = start(&d, 0, Vec::new());
    act(&d, &mut s, Action::Abort, 1_000).unwrap();
    assert_eq!(
        (s.phase, traffic(&d, &s).canary_weight),
        (Phase::Aborted, 0)
    );
    let mut s = start(&d, 0, Vec::new());
    for _ in 0..3 {
        act(&d, &mut s, Action::Promote, 1_000).unwrap();
    }
    assert_eq!(
        (s.phase, traffic(&d, &s).canary_weight),
        (Phase::Promoted, 100)
    );
    assert_eq!(s.history.last().unwrap().outcome, "Promoted");
}

#[test]
fn a_saved_state_resumes_as_it_was_and_another_revision_starts_over() {
    let d = def();
    let mut s = start(&d, 0, Vec::new());
    act(&d, &mut s, Action::Promote, 1_000).unwrap();
    let resumed = resume(&d, Some(s.clone()), 99_000);
    assert_eq!(resumed, s);
    let other = spec::parse(&DEF.replace("web-v2", "web-v3"))
        .unwrap()
        .remove(0);
    let fresh = resume(&other, Some(s), 99_000);
    assert_eq!((fresh.step, fresh.started_ms), (0, 99_000));
    assert_eq!(fresh.history[0].outcome, "Superseded");
    let _ = SystemTime::UNIX_EPOCH;
}
