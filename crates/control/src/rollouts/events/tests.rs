//! Statuses moved by the real state machine, and the Events each change makes.

use ferry_api::rollout::{Action, AnalysisRecord, Figures, RolloutStatus, Verdict};

use super::*;
use crate::rollouts::machine::{act, analyzed, resume, start, tick};
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
  - weight: 50
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
        canary: Figures {
            requests: 40.0,
            success: Some(90.0),
            p99_ms: Some(12.0),
        },
        stable: Figures {
            requests: 360.0,
            success: Some(100.0),
            p99_ms: Some(8.0),
        },
        verdict,
        reason: "canary success rate 90.00% is below 95%".into(),
    }
}

/// The Events `change` makes of `s`, which it moves.
fn events_of(
    d: &RolloutDef,
    s: &mut RolloutStatus,
    change: impl FnOnce(&mut RolloutStatus),
) -> Vec<RolloutEvent> {
    let before = s.clone();
    change(s);
    between(d, Some(&before), s)
}

fn reasons(events: &[RolloutEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.reason.as_str()).collect()
}

#[test]
fn every_reason_is_camel_case_with_an_action_and_warns_only_when_the_canary_failed() {
    let mut seen = std::collections::BTreeSet::new();
    for reason in Reason::ALL {
        let name = reason.as_str();
        assert!(seen.insert(name), "{name} twice");
        assert!(name.starts_with(|c: char| c.is_ascii_uppercase()), "{name}");
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric()), "{name}");
        let action = reason.action();
        assert!(
            !action.is_empty() && action.len() <= 128,
            "{name}: {action}"
        );
        let warning = matches!(reason, Reason::AnalysisFailed | Reason::RolledBack);
        let want = if warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        assert_eq!(reason.event_type(), want, "{name}");
    }
}

#[test]
fn a_new_rollout_starts_and_each_step_entered_advances() {
    let d = def();
    let mut s = start(&d, 0, Vec::new());
    let first = between(&d, None, &s);
    assert_eq!(reasons(&first), ["RolloutStarted"]);
    assert_eq!(
        first[0].note,
        format!("revision {}: started; step 0", d.revision)
    );

    // An analysis that passed, or could not judge, is no transition.
    let passed = events_of(&d, &mut s, |s| {
        analyzed(&d, s, record(5_000, Verdict::Passed));
    });
    assert_eq!(passed, []);
    let unjudged = events_of(&d, &mut s, |s| {
        analyzed(&d, s, record(6_000, Verdict::Inconclusive));
    });
    assert_eq!(unjudged, []);

    let gate = events_of(&d, &mut s, |s| assert!(tick(&d, s, 10_000)));
    assert_eq!(reasons(&gate), ["StepAdvanced"]);
    assert_eq!(
        gate[0].note,
        "step 0 baked 10s; step 1 is a gate: waiting until promoted"
    );
    let promoted = events_of(&d, &mut s, |s| {
        act(&d, s, Action::Promote, 20_000).unwrap();
    });
    assert_eq!(reasons(&promoted), ["StepAdvanced"]);
    assert_eq!(promoted[0].note, "step 1 promoted by a user; step 2");
    let done = events_of(&d, &mut s, |s| {
        act(&d, s, Action::Promote, 21_000).unwrap();
    });
    assert_eq!(reasons(&done), ["Promoted"]);
    assert_eq!(
        done[0].note,
        "step 2 promoted by a user; all steps done: all traffic to web-v2"
    );
    assert_eq!(done[0].reason.event_type(), EventType::Normal);
}

#[test]
fn each_failed_analysis_warns_with_its_figures_and_the_last_one_rolls_back() {
    let d = def();
    let mut s = start(&d, 0, Vec::new());
    let first = events_of(&d, &mut s, |s| {
        analyzed(&d, s, record(5_000, Verdict::Failed));
    });
    assert_eq!(reasons(&first), ["AnalysisFailed"]);
    assert_eq!(
        first[0].note,
        "analysis failed at step 0 (1 of 2 failures allowed): canary success rate 90.00% is \
         below 95%; canary 40 requests, 90.00% success, p99 12ms, stable 360 requests, \
         100.00% success, p99 8ms over 5s"
    );
    let last = events_of(&d, &mut s, |s| {
        assert!(analyzed(&d, s, record(10_000, Verdict::Failed)));
    });
    assert_eq!(reasons(&last), ["AnalysisFailed", "RolledBack"]);
    assert!(
        last[0].note.contains("(2 of 2 failures allowed)"),
        "{}",
        last[0].note
    );
    assert_eq!(last[1].note, s.reason);
    assert!(
        last[1].note.starts_with(
            "analysis failed at step 0 (2 of 2 failures allowed): canary success rate"
        ),
        "{}",
        last[1].note
    );
    assert_eq!(last[1].reason.event_type(), EventType::Warning);

    // Ended, then started again by a user: a new run.
    let again = events_of(&d, &mut s, |s| {
        act(&d, s, Action::Start, 20_000).unwrap();
    });
    assert_eq!(reasons(&again), ["RolloutStarted"]);
    assert_eq!(
        again[0].note,
        format!(
            "revision {}: started again by a user; started; step 0",
            d.revision
        )
    );
}

#[test]
fn a_users_pause_resume_and_abort_are_told() {
    let d = def();
    let mut s = start(&d, 0, Vec::new());
    let paused = events_of(&d, &mut s, |s| {
        act(&d, s, Action::Pause, 1_000).unwrap();
    });
    assert_eq!(reasons(&paused), ["Paused"]);
    assert_eq!(paused[0].note, "paused by a user at step 0");
    let resumed = events_of(&d, &mut s, |s| {
        act(&d, s, Action::Resume, 2_000).unwrap();
    });
    assert_eq!(reasons(&resumed), ["Resumed"]);
    assert_eq!(resumed[0].note, "resumed by a user at step 0");
    let aborted = events_of(&d, &mut s, |s| {
        act(&d, s, Action::Abort, 3_000).unwrap();
    });
    assert_eq!(reasons(&aborted), ["Aborted"]);
    assert_eq!(aborted[0].note, "aborted by a user at step 0");
    assert_eq!(aborted[0].reason.event_type(), EventType::Normal);
}

#[test]
fn a_changed_spec_supersedes_an_unfinished_run_and_a_resumed_one_tells_nothing() {
    let d = def();
    let mut s = start(&d, 0, Vec::new());
    // The same status found again (a restart, another replica taking over): nothing.
    let same = resume(&d, Some(s.clone()), 50_000);
    assert_eq!(between(&d, Some(&s), &same), []);

    let other = spec::parse(&DEF.replace("web-v2", "web-v3"))
        .unwrap()
        .remove(0);
    let fresh = resume(&other, Some(s.clone()), 60_000);
    let events = between(&other, Some(&s), &fresh);
    assert_eq!(reasons(&events), ["Superseded", "RolloutStarted"]);
    assert_eq!(
        events[0].note,
        format!(
            "revision {} superseded by {} at step 0: the spec changed",
            d.revision, other.revision
        )
    );
    assert_eq!(
        events[1].note,
        format!("revision {}: started; step 0", other.revision)
    );

    // An ended run is not superseded: the new one just starts.
    act(&d, &mut s, Action::Abort, 70_000).unwrap();
    let fresh = resume(&other, Some(s.clone()), 80_000);
    assert_eq!(
        reasons(&between(&other, Some(&s), &fresh)),
        ["RolloutStarted"]
    );
}

#[test]
fn a_long_note_is_cut_to_what_the_api_server_takes() {
    let d = def();
    let mut s = start(&d, 0, Vec::new());
    let mut long = record(5_000, Verdict::Failed);
    long.reason = "é".repeat(MAX_NOTE);
    let events = events_of(&d, &mut s, |s| {
        analyzed(&d, s, long);
    });
    let note = &events[0].note;
    assert!(note.len() <= MAX_NOTE, "{}", note.len());
    assert!(note.len() > MAX_NOTE - 8, "{}", note.len());
    assert!(note.ends_with('…'), "{note}");
    assert_eq!(truncate("short".into()), "short");
}

/// What the publisher logged, as text (a subscriber for this thread only).
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    fn count(&self, message: &str) -> usize {
        self.text().matches(message).count()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

fn started_event(n: usize) -> RolloutEvent {
    RolloutEvent::new(Reason::StepAdvanced, format!("step {n}"))
}

#[test]
fn a_full_queue_drops_and_counts_rather_than_blocks() {
    let (logs, _guard) = capture();
    // Nothing drains the queue: the API server is stuck, say.
    let (queue, mut waiting) = mpsc::channel(QUEUE);
    let publisher = Publisher::with_queue(queue);
    let events: Vec<RolloutEvent> = (0..QUEUE + 3).map(started_event).collect();
    // Synchronous: it cannot wait for room.
    publisher.publish("emojivoto", "voting", events);
    assert_eq!(publisher.dropped(), 3);
    assert_eq!(
        logs.count("too many rollout events waiting to be published; dropping one"),
        3,
        "{}",
        logs.text()
    );
    // The first QUEUE wait, in order; the newest were dropped.
    let mut kept = Vec::new();
    while let Ok(p) = waiting.try_recv() {
        kept.push(p.event.note);
    }
    assert_eq!(kept.len(), QUEUE);
    assert_eq!(kept.first().unwrap(), "step 0");
    assert_eq!(kept.last().unwrap(), &format!("step {}", QUEUE - 1));
    // Room again: the next one is queued.
    publisher.publish("emojivoto", "voting", vec![started_event(999)]);
    assert_eq!(publisher.dropped(), 3);
    assert_eq!(waiting.try_recv().unwrap().event.note, "step 999");
}

/// A store holding the Rollout `emojivoto/voting`.
fn store_with_voting() -> Store<DynamicObject> {
    let ar = crate::rollouts::kubernetes::resource();
    let mut writer = kube::runtime::reflector::store::Writer::new(ar.clone());
    let mut rollout = DynamicObject::new("voting", &ar).within("emojivoto");
    rollout.metadata.uid = Some("uid-voting".into());
    writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(rollout));
    writer.as_reader()
}

#[tokio::test(start_paused = true)]
async fn a_failed_or_stuck_creation_is_logged_and_the_next_events_go_on() {
    let (logs, _guard) = capture();
    let created: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // The API server refuses the first Event and never answers the second.
    let create = {
        let (created, calls) = (created.clone(), calls.clone());
        move |event: Event, regarding: ObjectReference| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            let created = created.clone();
            async move {
                assert_eq!(regarding.uid.as_deref(), Some("uid-voting"));
                match n {
                    0 => Err::<(), CreateError>("events.events.k8s.io is forbidden".into()),
                    1 => std::future::pending().await,
                    _ => {
                        created.lock().unwrap().push(event.note.unwrap_or_default());
                        Ok(())
                    }
                }
            }
        }
    };
    let (queue, pending) = mpsc::channel(QUEUE);
    let publisher = Publisher::with_queue(queue);
    let task = tokio::spawn(run(store_with_voting(), pending, create));
    let begun = tokio::time::Instant::now();
    publisher.publish("emojivoto", "voting", (0..4).map(started_event).collect());
    // An Event about a Rollout the store does not hold is skipped, not sent.
    publisher.publish("emojivoto", "gone", vec![started_event(9)]);
    drop(publisher);
    tokio::time::timeout(TIMEOUT * 3, task)
        .await
        .expect("the publisher finished its queue")
        .unwrap();
    // The stuck creation held the queue for TIMEOUT, no longer.
    assert_eq!(begun.elapsed(), TIMEOUT);
    assert_eq!(*created.lock().unwrap(), ["step 2", "step 3"]);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    let text = logs.text();
    assert_eq!(logs.count("cannot publish a rollout's event"), 1, "{text}");
    assert!(text.contains("events.events.k8s.io is forbidden"), "{text}");
    assert_eq!(
        logs.count("publishing a rollout's event did not finish in time"),
        1,
        "{text}"
    );
    assert_eq!(
        logs.count("the Rollout is gone; not publishing its event"),
        1,
        "{text}"
    );
}
