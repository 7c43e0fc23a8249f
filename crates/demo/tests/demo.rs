//! `ferry demo` end to end, as a user runs it: the real binary starts the control plane, four
//! proxies, the app and the bot; the story shows in the proxies' metrics; Ctrl-C leaves no
//! process behind; a second demo, a taken port and a missing binary are each refused with
//! the reason.
//!
//! Needs every workspace binary built (`cargo nextest run --workspace` does that).

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use ferry_testkit::{client, metric_sum, process::bin, process::Proc, wait_until};

/// Ports the demo uses from its base.
const SPAN: u16 = 50;
/// Debug binaries on a busy machine: starting everything can take a while.
const START: Duration = Duration::from_secs(90);

/// A base with all `SPAN` ports free right now.
fn free_base() -> u16 {
    for _ in 0..200 {
        let base = 20_000 + 10 * fastrand::u16(0..4_000);
        let free = (base..base + SPAN).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no free range of {SPAN} ports");
}

fn at(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Kills whatever a demo recorded in its state directory when dropped, so a failing test
/// leaves nothing behind either.
struct Leftovers(PathBuf);

impl Leftovers {
    fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.0.join("children.pids"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect()
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for pid in self.pids() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// Whether `pid` still runs (a zombie counts as gone: it has exited).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

async fn metrics(admin: u16) -> String {
    client::get(&format!("http://{}/metrics", at(admin)))
        .await
        .map(|r| r.text())
        .unwrap_or_default()
}

fn demo(base: u16, state: &Path) -> Proc {
    let args = [
        "demo",
        "--port-base",
        &base.to_string(),
        "--state-dir",
        state.to_str().unwrap(),
        "--rate",
        "20",
    ];
    Proc::spawn(bin("ferry"), &args, &[]).unwrap()
}

/// Runs `ferry` to completion (bounded) and returns (success, stdout + stderr).
async fn ferry(exe: &Path, args: &[&str]) -> (bool, String) {
    let run = tokio::process::Command::new(exe)
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("ferry finished")
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test]
async fn the_demo_tells_the_story_and_ctrl_c_leaves_nothing_behind() {
    let base = free_base();
    let state = tempfile::tempdir().unwrap();
    let leftovers = Leftovers(state.path().to_path_buf());
    let mut demo = demo(base, state.path());
    let ready = wait_until(START, "the demo to be ready", || {
        let up = demo.logs().iter().any(|l| l.contains("Ready."));
        let exited = !demo.is_running();
        async move { (up || exited).then_some(up) }
    })
    .await
    .unwrap();
    assert!(ready, "ferry demo exited:\n{}", demo.logs().join("\n"));
    let output = demo.logs().join("\n");
    for part in ["control plane", "emoji", "voting", "web", "vote-bot"] {
        assert!(
            output.contains(&format!("  {part} ")),
            "progress for {part}:\n{output}"
        );
    }
    assert!(
        output.contains(&format!(
            "stat deploy -n emojivoto --from deploy/web --api-addr http://127.0.0.1:{}",
            base + 4
        )),
        "{output}"
    );

    // Admin ports: web base+13, emoji +23, voting +33, vote-bot +43.
    let (web, emoji, voting) = (base + 13, base + 23, base + 33);
    let outbound_to = |text: &str, dst: &str, class: &str| {
        metric_sum(
            text,
            "response_total",
            &[
                ("direction", "outbound"),
                ("dst_deployment", dst),
                ("classification", class),
            ],
        )
    };
    // Enough votes to judge a ratio: 60 lookups from voting to emoji.
    let voting_text = wait_until(Duration::from_secs(60), "60 voting→emoji calls", || async {
        let text = metrics(voting).await;
        let calls = outbound_to(&text, "emoji", "success") + outbound_to(&text, "emoji", "failure");
        (calls >= 60.0).then_some(text)
    })
    .await
    .unwrap();
    let web_text = metrics(web).await;
    let emoji_text = metrics(emoji).await;

    // web → emoji (gRPC ListAll/FindByShortcode): all good.
    assert!(
        outbound_to(&web_text, "emoji", "success") > 0.0,
        "{web_text}"
    );
    assert_eq!(
        outbound_to(&web_text, "emoji", "failure"),
        0.0,
        "{web_text}"
    );
    // web → voting: well below 100 %.
    assert!(
        outbound_to(&web_text, "voting", "failure") > 0.0,
        "{web_text}"
    );
    assert!(
        outbound_to(&web_text, "voting", "success") > 0.0,
        "{web_text}"
    );
    // voting → emoji (the old HTTP/1 endpoint): about half fail, with 500.
    let ok = outbound_to(&voting_text, "emoji", "success");
    let failed = outbound_to(&voting_text, "emoji", "failure");
    let rate = failed / (ok + failed);
    assert!(
        (0.25..=0.75).contains(&rate),
        "voting→emoji fails about half the time: {failed} of {}",
        ok + failed
    );
    let status_500 = metric_sum(
        &voting_text,
        "response_total",
        &[("direction", "outbound"), ("status_code", "500")],
    );
    assert_eq!(
        status_500, failed,
        "the failures are emoji's 500s, not the mesh's"
    );
    // Every deployment that serves shows its failures inbound: web and voting fail, emoji's
    // old endpoint answers 500.
    let inbound_failures = |text: &str| {
        metric_sum(
            text,
            "response_total",
            &[("direction", "inbound"), ("classification", "failure")],
        )
    };
    assert!(inbound_failures(&web_text) > 0.0, "{web_text}");
    assert!(inbound_failures(&voting_text) > 0.0, "{voting_text}");
    assert!(inbound_failures(&emoji_text) > 0.0, "{emoji_text}");
    // TODO(#6): once `ferry stat -o json` and `ferry tap` are in main, assert the same story
    // through them (stat deploy --from/--to, tap deploy/voting shows a 500 on
    // /api/FindByShortcode?shortcode=:…:), and tls="true" on every edge once mTLS lands.

    // The control plane knows the demo's services.
    let endpoints = client::get(&format!(
        "http://{}/api/v1/endpoints?authority=emoji-svc.emojivoto:8080",
        at(base + 4)
    ))
    .await
    .unwrap();
    assert!(
        endpoints
            .text()
            .contains("emoji.emojivoto.serviceaccount.identity.ferry.cluster.local"),
        "{}",
        endpoints.text()
    );

    // A second demo on the same state is refused, naming the first.
    let (ok, text) = ferry(
        &bin("ferry"),
        &[
            "demo",
            "--port-base",
            &base.to_string(),
            "--state-dir",
            state.path().to_str().unwrap(),
        ],
    )
    .await;
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!(
            "a ferry demo is already running (pid {}",
            demo.pid()
        )),
        "{text}"
    );
    // One with its own state but the same ports names the taken API port.
    let other = tempfile::tempdir().unwrap();
    let (ok, text) = ferry(
        &bin("ferry"),
        &[
            "demo",
            "--port-base",
            &base.to_string(),
            "--state-dir",
            other.path().to_str().unwrap(),
        ],
    )
    .await;
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!(
            "port {} (the control plane's API) is not free",
            base + 4
        )),
        "{text}"
    );

    // Ctrl-C: everything stops, nothing is left.
    let pids = leftovers.pids();
    assert_eq!(pids.len(), 9, "control, 3 apps, 4 proxies, the bot");
    assert!(pids.iter().all(|p| alive(*p)));
    Command::new("kill")
        .args(["-INT", &demo.pid().to_string()])
        .status()
        .unwrap();
    let status = demo.terminate_wait(Duration::from_secs(20)).await.unwrap();
    assert!(status.success(), "{status}: {}", demo.logs().join("\n"));
    let output = demo.logs().join("\n");
    assert!(
        output.contains("Ctrl-C: stopping") && output.contains("Stopped 9 processes."),
        "{output}"
    );
    assert!(
        !output.contains("were killed"),
        "every child stops on SIGTERM: {output}"
    );
    let alive: Vec<u32> = pids.into_iter().filter(|p| alive(*p)).collect();
    assert!(alive.is_empty(), "still running after Ctrl-C: {alive:?}");
    assert!(
        !state.path().join("demo.pid").exists(),
        "the lock is released"
    );
}

#[tokio::test]
async fn a_taken_port_is_named_and_nothing_starts() {
    let base = free_base();
    let state = tempfile::tempdir().unwrap();
    let _leftovers = Leftovers(state.path().to_path_buf());
    // voting's app port.
    let _taken = TcpListener::bind(at(base + 31)).unwrap();
    let (ok, text) = ferry(
        &bin("ferry"),
        &[
            "demo",
            "--port-base",
            &base.to_string(),
            "--state-dir",
            state.path().to_str().unwrap(),
        ],
    )
    .await;
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!("port {} (the voting app) is not free", base + 31)),
        "{text}"
    );
    assert!(!text.contains("Ready."), "{text}");
}

#[tokio::test]
async fn a_missing_binary_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let lonely = dir.path().join("ferry");
    std::fs::copy(bin("ferry"), &lonely).unwrap();
    let state = dir.path().join("state");
    let (ok, text) = ferry(
        &lonely,
        &[
            "demo",
            "--port-base",
            &free_base().to_string(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
    )
    .await;
    assert!(!ok, "{text}");
    assert!(text.contains("ferry-control is missing"), "{text}");
    assert!(
        text.contains(&dir.path().display().to_string()),
        "says where it looked: {text}"
    );
    assert!(
        text.contains("cargo build --release"),
        "says how to fix it: {text}"
    );
}
