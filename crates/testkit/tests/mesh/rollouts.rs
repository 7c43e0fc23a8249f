//! Rollouts end to end (issue #22): a control plane running a `Rollout` from the routes
//! file, a client proxy sending steady traffic to the rolled-out Service, and two versions
//! of the app behind their own Services. Every figure is measured at the client, from the
//! answers' bodies, and printed.

use std::sync::{Arc, Mutex};

use ferry_api::rollout::{Phase, RolloutView};
use tokio::time::Instant;

use super::*;

/// A version of the app: answers its name, with 500 when `failing`.
async fn version(name: &'static str, failing: bool) -> TestServer {
    TestServer::http(move |_req| async move {
        let mut rsp = Response::new(full(name));
        if failing {
            *rsp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        }
        rsp
    })
    .await
}

/// Steady traffic through the client proxy: every answer's body and when it came. Every
/// other request is from a user at example.com (`x-user-email`), the flag a match step
/// targets.
struct Load {
    hits: Arc<Mutex<Vec<(Instant, String)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Load {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|t| t.abort());
    }
}

impl Load {
    fn start(url: String, workers: usize) -> Self {
        let hits: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let tasks = (0..workers)
            .map(|_| {
                let (hits, url) = (hits.clone(), url.clone());
                tokio::spawn(async move {
                    let http = client::http1();
                    for n in 0u64.. {
                        let email = if n % 2 == 0 {
                            "ann@example.com"
                        } else {
                            "bob@example.org"
                        };
                        let req = http::Request::get(&url)
                            .header("x-user-email", email)
                            .body(Default::default())
                            .unwrap();
                        let body = match client::send(&http, req).await {
                            Ok(r) => r.text(),
                            Err(e) => format!("error: {e}"),
                        };
                        hits.lock().unwrap().push((Instant::now(), body));
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
            })
            .collect();
        Self { hits, tasks }
    }

    /// (answers from `who`, all answers) between `from` and `to`.
    fn share(&self, who: &str, from: Instant, to: Instant) -> (usize, usize) {
        let hits = self.hits.lock().unwrap();
        let window: Vec<_> = hits.iter().filter(|(t, _)| *t >= from && *t < to).collect();
        (
            window.iter().filter(|(_, b)| b == who).count(),
            window.len(),
        )
    }

    /// The first instant after `from` from which every answer for `quiet` came from `who`.
    fn settled_on(&self, who: &str, from: Instant) -> Option<Instant> {
        let hits = self.hits.lock().unwrap();
        hits.iter()
            .filter(|(t, _)| *t >= from)
            .rev()
            .take_while(|(_, b)| b == who)
            .last()
            .map(|(t, _)| *t)
    }
}

async fn status(api: SocketAddr) -> RolloutView {
    let url = format!("http://{api}/api/v1/rollouts/default/web");
    let r = client::get(&url).await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    serde_json::from_str(&r.text()).unwrap()
}

async fn until(
    api: SocketAddr,
    what: &str,
    limit: Duration,
    done: impl Fn(&RolloutView) -> bool,
) -> RolloutView {
    let started = Instant::now();
    loop {
        let view = status(api).await;
        if done(&view) {
            return view;
        }
        assert!(
            started.elapsed() < limit,
            "{what}: not within {limit:?}: {:#?}",
            view.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The workloads (the two versions behind `web-v1`/`web-v2`, `web` fronting v1) and the
/// client proxy, once it runs, so the control plane scrapes what it sent.
fn rollout_workloads(v1: SocketAddr, v2: SocketAddr, client_admin: Option<SocketAddr>) -> String {
    let mut yaml = format!(
        "workloads:\n  - name: web-v1\n    instances: [{{name: v1-0, addr: \"{v1}\"}}]\n  - name: web-v2\n    instances: [{{name: v2-0, addr: \"{v2}\"}}]\n"
    );
    if let Some(admin) = client_admin {
        yaml.push_str(&format!(
            "  - name: client\n    instances: [{{name: client-0, addr: \"127.0.0.1:9\", adminAddr: \"{admin}\"}}]\n"
        ));
    }
    yaml.push_str("services:\n  - {name: web, port: 8080, workloads: [web-v1]}\n  - {name: web-v1, port: 8080, workloads: [web-v1]}\n  - {name: web-v2, port: 8080, workloads: [web-v2]}\n");
    yaml
}

fn rollout_doc(steps: &str) -> String {
    rollout_doc_with(steps, "")
}

fn rollout_doc_with(steps: &str, more: &str) -> String {
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
    interval: 3s
    minRequests: 5
    successRate: {{min: 90, maxDrop: 5}}
{more}"
    )
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// A good canary goes through a weighted step, a header-targeted step (exactly the
/// matching requests reach it), a gate that holds until promoted, and a weighted step
/// across a control-plane restart (killed and started again: the rollout resumes at its
/// step and the proxies' split does not move), to promotion.
#[tokio::test]
async fn a_good_canary_is_released_in_steps_across_a_control_plane_restart() {
    let (v1, v2) = (version("v1", false).await, version("v2", false).await);
    let dir = tempfile::tempdir().unwrap();
    let steps = "  - weight: 20\n    bake: 3s\n  - match: {headers: [{name: x-user-email, type: Suffix, value: '@example.com'}]}\n    bake: 3s\n  - pause: {}\n  - weight: 50\n    bake: 4s\n";
    let grpc = free_addr();
    let routes = dir.path().join("routes.yaml");
    let rollouts = routes.to_str().unwrap().to_string();
    let extra = [
        "--scrape-interval",
        "1s",
        "--grpc-listen",
        grpc.as_str(),
        "--rollouts",
        rollouts.as_str(),
    ];
    let (cp, file) = control_with_routes(
        dir.path(),
        &rollout_workloads(v1.addr, v2.addr, None),
        &rollout_doc(steps),
        &extra,
    )
    .await;
    let client_proxy = proxy(&[
        "--upstream",
        "127.0.0.1:0=web.default:8080",
        "--destination-addr",
        &grpc,
    ])
    .await;
    std::fs::write(
        &file,
        rollout_workloads(v1.addr, v2.addr, Some(client_proxy.admin())),
    )
    .unwrap();
    let url = format!("http://{}/", client_proxy.upstream("web.default:8080"));
    let load = Load::start(url.clone(), 4);

    // Step 0: a fifth of the requests.
    let step0 = Instant::now();
    let view = until(cp.api, "step 1", WAIT, |v| v.status.step >= 1).await;
    let (canary, all) = load.share("v2", step0 + Duration::from_millis(500), Instant::now());
    let share = canary as f64 / all as f64;
    println!(
        "weight 20 step: the canary answered {canary} of {all} requests ({:.1}%)",
        share * 100.0
    );
    assert!((0.1..0.3).contains(&share), "{share}");
    assert!(
        view.status
            .analyses
            .iter()
            .any(|a| a.step == 0 && a.verdict == ferry_api::rollout::Verdict::Passed),
        "{:#?}",
        view.status.analyses
    );

    // Step 1: exactly the matching requests.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let http = client::http1();
    let mut seen = HashMap::<(bool, String), usize>::new();
    for i in 0..60 {
        let email = if i % 2 == 0 {
            "ann@example.com"
        } else {
            "bob@example.org"
        };
        let req = http::Request::get(&url)
            .header("x-user-email", email)
            .body(Default::default())
            .unwrap();
        let r = client::send(&http, req).await.unwrap();
        *seen.entry((i % 2 == 0, r.text())).or_default() += 1;
    }
    println!("match step: {seen:?}");
    assert_eq!(seen.get(&(true, "v2".into())), Some(&30), "{seen:?}");
    assert_eq!(seen.get(&(false, "v1".into())), Some(&30), "{seen:?}");
    assert_eq!(
        status(cp.api).await.status.step,
        1,
        "still in the match step while measured"
    );

    // Step 2: the gate holds, with the match step's traffic, until promoted.
    let gate = until(cp.api, "the gate", WAIT, |v| v.status.step == 2).await;
    assert_eq!(gate.status.phase, Phase::Paused);
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        (
            status(cp.api).await.status.phase,
            status(cp.api).await.status.step
        ),
        (Phase::Paused, 2)
    );
    let api = format!("http://{}", cp.api);
    let (ok, out, err) = ferry(&["rollout", "promote", "rollout/web", "--api-addr", &api]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("rollout default/web: Progressing at step 3"),
        "{out}"
    );

    // Step 3, across a restart: half the requests before, while down, and after.
    until(cp.api, "the weight 50 step", WAIT, |v| v.status.step == 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = status(cp.api).await;
    let mut cp = cp;
    let pid = cp.proc.pid().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap()
        .success());
    cp.proc.terminate_wait(WAIT).await.unwrap();
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again: Vec<&str> = ["--routes", rollouts.as_str()]
        .into_iter()
        .chain(extra)
        .collect();
    let cp2 = ControlProc::spawn(&file, &again).await.unwrap();
    let after = status(cp2.api).await;
    assert_eq!(
        (
            after.status.phase,
            after.status.step,
            after.status.step_started_ms,
            after.traffic.canary_weight
        ),
        (Phase::Progressing, 3, before.status.step_started_ms, 50)
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (canary, all) = load.share("v2", down, Instant::now());
    let share = canary as f64 / all as f64;
    println!(
        "weight 50 step across the restart: the canary answered {canary} of {all} ({:.1}%)",
        share * 100.0
    );
    assert!((0.35..0.65).contains(&share), "{share}");
    cp2.proc
        .wait_for_log("resumed a rollout from its saved state", WAIT)
        .await
        .unwrap();

    // Promoted: every request to v2.
    let done = until(cp2.api, "promotion", Duration::from_secs(30), |v| {
        v.status.phase == Phase::Promoted
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (canary, all) = load.share("v2", at, Instant::now());
    assert_eq!(canary, all, "promoted: every request to the canary");
    let api2 = format!("http://{}", cp2.api);
    let (ok, out, err) = ferry(&["rollout", "history", "web", "--api-addr", &api2]).await;
    assert!(ok && out.contains("Promoted"), "{out}{err}");
    assert_eq!(done.status.history.last().unwrap().outcome, "Promoted");
}

/// A failing canary is rolled back on its own within one analysis interval of its
/// failures showing, having had no more than its step's share; `abort` of a new run moves
/// everything back to stable at the proxies in under a second.
#[tokio::test]
async fn a_failing_canary_rolls_back_on_its_own_and_abort_is_immediate() {
    let (v1, v2) = (version("v1", false).await, version("v2", true).await);
    // The webhook: every transition's rollout, as posted.
    let posted: Arc<Mutex<Vec<RolloutView>>> = Arc::default();
    let hook = {
        let posted = posted.clone();
        TestServer::http(move |req| {
            let posted = posted.clone();
            async move {
                let body = http_body_util::BodyExt::collect(req.into_body())
                    .await
                    .unwrap()
                    .to_bytes();
                posted
                    .lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap());
                Response::new(full("ok"))
            }
        })
        .await
    };
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.yaml");
    let rollouts = routes.to_str().unwrap().to_string();
    let grpc = free_addr();
    let extra = [
        "--scrape-interval",
        "1s",
        "--grpc-listen",
        grpc.as_str(),
        "--rollouts",
        rollouts.as_str(),
    ];
    let (cp, file) = control_with_routes(
        dir.path(),
        &rollout_workloads(v1.addr, v2.addr, None),
        &rollout_doc_with(
            "  - weight: 10\n    bake: 60s\n",
            &format!("  webhook: {{url: \"http://{}/rollouts\"}}\n", hook.addr),
        ),
        &extra,
    )
    .await;
    // `status --watch` follows the run until it ends.
    let watch_api = format!("http://{}", cp.api);
    let watching = tokio::spawn(async move {
        ferry(&[
            "rollout",
            "status",
            "web",
            "--watch",
            "--api-addr",
            &watch_api,
        ])
        .await
    });
    let client_proxy = proxy(&[
        "--upstream",
        "127.0.0.1:0=web.default:8080",
        "--destination-addr",
        &grpc,
    ])
    .await;
    std::fs::write(
        &file,
        rollout_workloads(v1.addr, v2.addr, Some(client_proxy.admin())),
    )
    .unwrap();
    let url = format!("http://{}/", client_proxy.upstream("web.default:8080"));
    let started = Instant::now();
    let load = Load::start(url, 4);
    // The failures show from the first answer the canary gives.
    let first_failure = wait_until(WAIT, "a canary answer", || async {
        let hits = load.hits.lock().unwrap();
        hits.iter().find(|(_, b)| b == "v2").map(|(t, _)| *t)
    })
    .await
    .unwrap();
    let view = until(cp.api, "the rollback", WAIT, |v| {
        v.status.phase == Phase::RolledBack
    })
    .await;
    let decided = Instant::now();
    let (canary, all) = load.share("v2", started, decided);
    let share = canary as f64 / all as f64;
    println!(
        "rolled back {:?} after the canary's first failure ({:?} after the start): {}; the canary answered {canary} of {all} requests ({:.1}%)",
        decided - first_failure,
        decided - started,
        view.status.reason,
        share * 100.0
    );
    assert!(
        view.status.reason.contains("below 90%"),
        "{}",
        view.status.reason
    );
    // One interval (3s), plus the scrape and the poll that saw it.
    assert!(
        decided - first_failure < Duration::from_millis(5_500),
        "{:?}",
        decided - first_failure
    );
    assert!(share < 0.2, "bounded by the step's 10%: {share}");
    let (ok, out, err) = watching.await.unwrap();
    assert!(ok, "{err}");
    assert!(
        out.matches("Rollout default/web: Progressing at step 0/1")
            .count()
            >= 2,
        "printed as it went:\n{out}"
    );
    assert!(
        out.contains("Rollout default/web: RolledBack")
            && out.contains("Latest analysis (step 0, 3s window): Failed"),
        "{out}"
    );
    let hooked = wait_until(WAIT, "the webhook to hear of the rollback", || async {
        let posted = posted.lock().unwrap();
        posted
            .iter()
            .find(|v| v.status.phase == Phase::RolledBack)
            .cloned()
    })
    .await
    .unwrap();
    assert!(
        hooked.status.reason.contains("below 90%"),
        "{}",
        hooked.status.reason
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let settled = load
        .settled_on("v1", decided)
        .expect("stable answers after the rollback");
    println!(
        "after the rollback every answer came from stable within {:?}",
        settled.saturating_duration_since(decided)
    );
    assert!(settled.saturating_duration_since(decided) < Duration::from_secs(1));

    // A new run, then abort: stable within a second at the proxies.
    let api = format!("http://{}", cp.api);
    let restart = Instant::now();
    let (ok, _, err) = ferry(&["rollout", "start", "web", "--api-addr", &api]).await;
    assert!(ok, "{err}");
    wait_until(WAIT, "the canary to get traffic again", || async {
        let hits = load.hits.lock().unwrap();
        hits.iter()
            .any(|(t, b)| *t > restart && b == "v2")
            .then_some(())
    })
    .await
    .unwrap();
    let abort = Instant::now();
    let (ok, out, err) =
        ferry(&["rollout", "abort", "web", "--api-addr", &api, "-o", "json"]).await;
    assert!(ok, "{err}");
    let aborted: RolloutView = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (aborted.status.phase, aborted.traffic.canary_weight),
        (Phase::Aborted, 0)
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let settled = load
        .settled_on("v1", abort)
        .expect("stable answers after the abort");
    let took = settled.saturating_duration_since(abort);
    println!("abort: every answer from stable {took:?} after the command was sent");
    assert!(took < Duration::from_secs(1), "{took:?}");
    let (ok, out, _) = ferry(&["rollout", "history", "web", "--api-addr", &api]).await;
    assert!(
        ok && out.contains("RolledBack") && out.contains("Aborted"),
        "{out}"
    );
}

/// Deployment backends in local mode: the rollout names the workloads file's `web-v1` and
/// `web-v2` deployments (no Service of their own), and the control plane fronts each with
/// a Service synthesized from its instances (`web-v1-ferry`, `web-v2-ferry`), which the
/// generated route splits between and the analysis measures.
#[tokio::test]
async fn deployment_backends_are_fronted_by_services_in_local_mode() {
    let (v1, v2) = (version("v1", false).await, version("v2", false).await);
    let dir = tempfile::tempdir().unwrap();
    let workloads = |admin: Option<SocketAddr>| {
        let mut yaml = rollout_workloads(v1.addr, v2.addr, admin);
        // Only the rolled-out Service: the versions are Deployments, not Services.
        let at = yaml.find("services:").unwrap();
        yaml.truncate(at);
        yaml.push_str("services:\n  - {name: web, port: 8080, workloads: [web-v1]}\n");
        yaml
    };
    let doc = rollout_doc("  - weight: 50\n    bake: 3s\n")
        .replace("{name: web-v1}", "{kind: Deployment, name: web-v1}")
        .replace("{name: web-v2}", "{kind: Deployment, name: web-v2}");
    let grpc = free_addr();
    let routes = dir.path().join("routes.yaml");
    let rollouts = routes.to_str().unwrap().to_string();
    let extra = [
        "--scrape-interval",
        "1s",
        "--grpc-listen",
        grpc.as_str(),
        "--rollouts",
        rollouts.as_str(),
    ];
    let (cp, file) = control_with_routes(dir.path(), &workloads(None), &doc, &extra).await;
    let client_proxy = proxy(&[
        "--upstream",
        "127.0.0.1:0=web.default:8080",
        "--destination-addr",
        &grpc,
    ])
    .await;
    std::fs::write(&file, workloads(Some(client_proxy.admin()))).unwrap();
    let url = format!("http://{}/", client_proxy.upstream("web.default:8080"));
    let load = Load::start(url, 4);

    let step0 = Instant::now();
    let view = until(cp.api, "promotion", WAIT, |v| {
        v.status.phase == Phase::Promoted
    })
    .await;
    let (canary, all) = load.share("v2", step0 + Duration::from_millis(500), Instant::now());
    let share = canary as f64 / all as f64;
    println!(
        "weight 50 step over Deployment backends: web-v2 answered {canary} of {all} requests ({:.1}%)",
        share * 100.0
    );
    assert!((0.3..0.7).contains(&share), "{share}");
    // Judged on the fronting Services' own figures.
    let passed = view
        .status
        .analyses
        .iter()
        .find(|a| a.verdict == ferry_api::rollout::Verdict::Passed)
        .unwrap_or_else(|| panic!("{:#?}", view.status.analyses));
    assert!(
        passed.canary.requests >= 5.0 && passed.stable.requests >= 5.0,
        "{passed:?}"
    );

    // Promoted: every request to web-v2.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (canary, all) = load.share("v2", at, Instant::now());
    assert!(all > 0);
    assert_eq!(canary, all, "promoted: every request to the canary");
}
