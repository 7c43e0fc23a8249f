//! The controller on tokio's paused time, judging from the real embedded store fed with
//! the counters callers' proxies would export for the split the controller's route sets.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_api::rollout::{Action, Phase, RolloutView, Verdict};
use tokio::sync::watch;

use crate::metrics::expfmt::Sample;
use crate::metrics::store::Store;
use crate::metrics::Labels;
use crate::rollouts::{spawn, Clock, Rollouts, RolloutsConfig, Running};
use crate::routes::RouteSet;

const SCRAPE: Duration = Duration::from_secs(1);

fn rollout(steps: &str, analysis: &str) -> String {
    format!(
        "apiVersion: ferry.io/v1alpha1
kind: Rollout
metadata: {{name: web}}
spec:
  service: {{name: web, port: 8080}}
  stable: {{name: web-v1}}
  canary: {{name: web-v2}}
  steps:
{steps}
  analysis:
{analysis}
"
    )
}

const STEPS: &str = "  - weight: 10\n    bake: 6s\n  - weight: 50\n    bake: 6s\n";
const ANALYSIS: &str = "    interval: 3s\n    minRequests: 10\n    successRate: {min: 95}\n";

/// The canary's share of requests in the generated route.
fn canary_weight(set: &RouteSet) -> i64 {
    let rule = &set.http[0].spec.rules[0];
    let total: i64 = rule.backend_refs.iter().map(|b| b.weight).sum();
    rule.backend_refs
        .iter()
        .filter(|b| b.name == "web-v2")
        .map(|b| b.weight * 100 / total)
        .sum()
}

/// Callers sending `rps` requests a second split as the routes say; the canary succeeds
/// at `canary_success` (0-1). Counters are ingested once per scrape interval, as the
/// scraper would.
struct Traffic {
    counts: Arc<Mutex<[f64; 4]>>,
    canary_success: Arc<Mutex<f64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn traffic(
    store: Store,
    clock: Clock,
    routes: watch::Receiver<Arc<RouteSet>>,
    rps: f64,
    canary_success: f64,
) -> Traffic {
    let counts = Arc::new(Mutex::new([0.0; 4]));
    let success = Arc::new(Mutex::new(canary_success));
    let (c, s) = (counts.clone(), success.clone());
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(SCRAPE);
        loop {
            ticks.tick().await;
            let w = canary_weight(&routes.borrow()) as f64 / 100.0;
            let ok = *s.lock().unwrap();
            let samples = {
                let mut n = c.lock().unwrap();
                n[0] += rps * (1.0 - w); // stable successes
                n[2] += rps * w * ok; // canary successes
                n[3] += rps * w * (1.0 - ok); // canary failures
                let sample = |svc: &str, class: &str, value: f64| Sample {
                    name: "response_total".into(),
                    labels: Labels::from([
                        ("direction".into(), "outbound".into()),
                        ("dst_namespace".into(), "default".into()),
                        ("dst_service".into(), svc.into()),
                        ("classification".into(), class.into()),
                    ]),
                    value,
                };
                vec![
                    sample("web-v1", "success", n[0]),
                    sample("web-v2", "success", n[2]),
                    sample("web-v2", "failure", n[3]),
                ]
            };
            let now = clock.now();
            store.ingest(
                &Labels::from([("pod".into(), "caller".into())]),
                now,
                samples,
            );
            store.end_round(now);
        }
    });
    Traffic {
        counts,
        canary_success: success,
        task,
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    config: RolloutsConfig,
    store: Store,
    clock: Clock,
}

impl Fixture {
    fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rollouts.yaml");
        std::fs::write(&path, text).unwrap();
        let config = RolloutsConfig {
            state_dir: RolloutsConfig::default_state_dir(&path),
            path,
            poll_interval: Duration::from_millis(250),
        };
        Self {
            _dir: dir,
            config,
            store: Store::new(SCRAPE),
            clock: Clock::new(),
        }
    }

    async fn start(&self) -> Running {
        spawn(&self.config, self.store.clone(), self.clock)
            .await
            .unwrap()
    }
}

fn web(rollouts: &Rollouts) -> RolloutView {
    rollouts.list()[0].clone()
}

/// Waits (in paused time) until the rollout satisfies `done`, at most `limit`.
async fn until(
    rollouts: &Rollouts,
    limit: Duration,
    done: impl Fn(&RolloutView) -> bool,
) -> RolloutView {
    let deadline = tokio::time::Instant::now() + limit;
    let mut views = rollouts.watch();
    loop {
        let view = web(rollouts);
        if done(&view) {
            return view;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not reached within {limit:?}: {view:#?}"
        );
        let _ = tokio::time::timeout_at(deadline, views.changed()).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_good_canary_goes_through_every_step_and_is_promoted() {
    let f = Fixture::new(&rollout(STEPS, ANALYSIS));
    let running = f.start().await;
    let start = tokio::time::Instant::now();
    let _traffic = traffic(f.store.clone(), f.clock, running.routes.clone(), 100.0, 1.0);
    assert_eq!(canary_weight(&running.routes.borrow()), 10);
    let second = until(&running.rollouts, Duration::from_secs(30), |v| {
        v.status.step == 1
    })
    .await;
    // The bake (6s) and a passing analysis, not sooner.
    assert!(
        start.elapsed() >= Duration::from_secs(6),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(second.traffic.canary_weight, 50);
    assert_eq!(canary_weight(&running.routes.borrow()), 50);
    let done = until(&running.rollouts, Duration::from_secs(30), |v| {
        v.status.phase == Phase::Promoted
    })
    .await;
    assert_eq!(canary_weight(&running.routes.borrow()), 100);
    let passed: Vec<_> = done
        .status
        .analyses
        .iter()
        .filter(|a| a.verdict == Verdict::Passed)
        .collect();
    assert!(
        passed.iter().any(|a| a.step == 0) && passed.iter().any(|a| a.step == 1),
        "{:#?}",
        done.status.analyses
    );
    assert_eq!(done.status.history.last().unwrap().outcome, "Promoted");
}

#[tokio::test(start_paused = true)]
async fn a_failing_canary_rolls_back_at_the_first_analysis_with_its_reason() {
    let f = Fixture::new(&rollout(STEPS, ANALYSIS));
    let running = f.start().await;
    let start = tokio::time::Instant::now();
    let traffic = traffic(f.store.clone(), f.clock, running.routes.clone(), 100.0, 0.5);
    let mut routes = running.routes.clone();
    let view = until(&running.rollouts, Duration::from_secs(30), |v| {
        v.status.phase == Phase::RolledBack
    })
    .await;
    // One analysis interval (3s) after the step began, at the first judged window.
    assert!(
        start.elapsed() <= Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    assert!(
        view.status.reason.contains("is below 95%"),
        "{}",
        view.status.reason
    );
    // The route went back to stable with the decision, not later.
    assert!(routes.has_changed().unwrap());
    assert_eq!(canary_weight(&routes.borrow_and_update()), 0);
    let n = *traffic.counts.lock().unwrap();
    let canary_share = (n[2] + n[3]) / (n[0] + n[2] + n[3]);
    assert!(canary_share <= 0.11, "the canary got {canary_share}");
    let _ = &traffic.canary_success;
}

#[tokio::test(start_paused = true)]
async fn too_few_requests_are_not_judged_and_hold_the_step() {
    let f = Fixture::new(&rollout(STEPS, ANALYSIS));
    let running = f.start().await;
    // 10% of 10 rps is 3 canary requests per 3s window, below the 10 needed.
    let _traffic = traffic(f.store.clone(), f.clock, running.routes.clone(), 10.0, 0.0);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let view = web(&running.rollouts);
    assert_eq!(
        (view.status.phase, view.status.step),
        (Phase::Progressing, 0)
    );
    assert!(view.status.analyses.len() >= 15);
    assert!(view
        .status
        .analyses
        .iter()
        .all(|a| a.verdict == Verdict::Inconclusive));
    assert!(
        view.status.analyses[5]
            .reason
            .contains("fewer than the 10 needed"),
        "{}",
        view.status.analyses[5].reason
    );
}

#[tokio::test(start_paused = true)]
async fn a_gate_waits_until_promoted() {
    let f = Fixture::new(&rollout(
        "  - weight: 10\n    bake: 3s\n  - pause: {}\n",
        ANALYSIS,
    ));
    let running = f.start().await;
    let _traffic = traffic(f.store.clone(), f.clock, running.routes.clone(), 100.0, 1.0);
    until(&running.rollouts, Duration::from_secs(30), |v| {
        v.status.step == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    let view = web(&running.rollouts);
    assert_eq!(
        (
            view.status.phase,
            view.status.step,
            view.traffic.canary_weight
        ),
        (Phase::Paused, 1, 10)
    );
    let promoted = running
        .rollouts
        .act("default", "web", Action::Promote)
        .await
        .unwrap();
    assert_eq!(promoted.status.phase, Phase::Promoted);
    assert_eq!(canary_weight(&running.routes.borrow()), 100);
}

#[tokio::test(start_paused = true)]
async fn abort_sends_traffic_to_stable_at_once() {
    let f = Fixture::new(&rollout(STEPS, ANALYSIS));
    let running = f.start().await;
    let aborted = running
        .rollouts
        .act("default", "web", Action::Abort)
        .await
        .unwrap();
    assert_eq!(aborted.status.phase, Phase::Aborted);
    assert_eq!(canary_weight(&running.routes.borrow()), 0);
    let again = running
        .rollouts
        .act("default", "web", Action::Abort)
        .await
        .unwrap_err();
    assert_eq!(
        again.to_string(),
        "cannot abort rollout default/web: it has ended (Aborted)"
    );
    let missing = running
        .rollouts
        .act("default", "nope", Action::Abort)
        .await
        .unwrap_err();
    assert_eq!(missing.to_string(), "rollout default/nope not found");
}

#[tokio::test(start_paused = true)]
async fn a_restart_resumes_where_it_was_without_moving_traffic() {
    let f = Fixture::new(&rollout(STEPS, ANALYSIS));
    let first = f.start().await;
    let traffic_before = traffic(f.store.clone(), f.clock, first.routes.clone(), 100.0, 1.0);
    let before = until(&first.rollouts, Duration::from_secs(30), |v| {
        v.status.step == 1
    })
    .await;
    let routes_before = first.routes.borrow().clone();
    drop(traffic_before);
    drop(first);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = f.start().await;
    // Ready as soon as it is loaded: the same route, the same step.
    assert_eq!(*second.routes.borrow().clone(), *routes_before);
    let after = web(&second.rollouts);
    assert_eq!(
        (
            after.status.phase,
            after.status.step,
            after.status.step_started_ms
        ),
        (Phase::Progressing, 1, before.status.step_started_ms)
    );
    let _traffic = traffic(f.store.clone(), f.clock, second.routes.clone(), 100.0, 1.0);
    until(&second.rollouts, Duration::from_secs(30), |v| {
        v.status.phase == Phase::Promoted
    })
    .await;
}

/// A confirm step holds the previous step's traffic until its webhook answers 200 (real
/// time: the webhook is a real server).
#[tokio::test]
async fn a_confirm_step_waits_for_its_webhook_to_answer_200() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let open = Arc::new(AtomicBool::new(false));
    let asked = Arc::new(AtomicUsize::new(0));
    let hook = {
        let (open, asked) = (open.clone(), asked.clone());
        ferry_testkit::server::TestServer::http(move |_req| {
            asked.fetch_add(1, Ordering::SeqCst);
            let status = if open.load(Ordering::SeqCst) {
                200
            } else {
                503
            };
            async move {
                let mut rsp = http::Response::new(ferry_testkit::server::full("ok"));
                *rsp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                rsp
            }
        })
        .await
    };
    let text = rollout(
        &format!(
            "  - weight: 10\n  - confirm: {{url: \"http://{}/confirm\"}}\n",
            hook.addr
        ),
        ANALYSIS,
    )
    .replace(
        "  analysis:\n    interval: 3s\n    minRequests: 10\n    successRate: {min: 95}\n",
        "",
    );
    let f = Fixture::new(&text);
    let running = f.start().await;
    // Step 0 has no bake and no analysis: on at once, to the confirm step.
    let waiting = until(&running.rollouts, Duration::from_secs(5), |v| {
        v.status.step == 1
    })
    .await;
    assert_eq!(
        (waiting.status.step, waiting.traffic.canary_weight),
        (1, 10)
    );
    assert!(
        waiting.status.reason.contains("answer 200"),
        "{}",
        waiting.status.reason
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(asked.load(Ordering::SeqCst) >= 2, "asked every second");
    assert_eq!(
        web(&running.rollouts).status.step,
        1,
        "held while the webhook says no"
    );
    open.store(true, Ordering::SeqCst);
    let done = until(&running.rollouts, Duration::from_secs(5), |v| {
        v.status.phase == Phase::Promoted
    })
    .await;
    assert!(
        done.status
            .history
            .last()
            .unwrap()
            .reason
            .contains("confirmed by http://"),
        "{:?}",
        done.status.history
    );
}
