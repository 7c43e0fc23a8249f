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
const SPAN: u16 = 70;
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

/// Runs `ferry tap … -o json` (`args` complete) and returns its output and its events,
/// one JSON object a line.
async fn tap_events(args: &[&str]) -> (String, Vec<serde_json::Value>) {
    let (ok, text) = ferry(&bin("ferry"), args).await;
    assert!(ok, "{text}");
    let events = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (text, events)
}

/// `ferry <args> -o json --api-addr <the demo's>`, parsed (stat: the rows, edges: the edges).
async fn ferry_json(base: u16, args: &[&str]) -> serde_json::Value {
    let api = format!("http://{}", at(base + 4));
    let mut all = args.to_vec();
    all.extend(["-o", "json", "--api-addr", &api]);
    let (ok, text) = ferry(&bin("ferry"), &all).await;
    assert!(ok, "ferry {all:?}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("ferry {all:?}: {e}: {text}"))
}

/// Success rate by row name of `ferry stat deploy -n emojivoto <filter>`, once every row
/// that should have traffic has some.
async fn stat(base: u16, filter: &[&str], names: &[&str]) -> Vec<(String, f64)> {
    let mut args = vec!["stat", "deploy", "-n", "emojivoto"];
    args.extend_from_slice(filter);
    wait_until(Duration::from_secs(30), "stat rows with traffic", || {
        let args = args.clone();
        async move {
            let answer = ferry_json(base, &args).await;
            let rows: Vec<(String, f64)> = answer
                .as_array()?
                .iter()
                .filter_map(|r| Some((r["name"].as_str()?.to_string(), r["success"].as_f64()?)))
                .collect();
            let all = names.iter().all(|n| rows.iter().any(|(name, _)| name == n));
            all.then_some(rows)
        }
    })
    .await
    .unwrap()
}

fn success_of(rows: &[(String, f64)], name: &str) -> f64 {
    rows.iter()
        .find(|(n, _)| n == name)
        .map(|(_, s)| *s)
        .unwrap()
}

/// MISSION.md's story through `ferry stat`, `ferry edges` and `ferry tap`.
async fn story(base: u16) {
    // Every deployment is meshed; web and voting show failures.
    let rows = stat(base, &[], &["web", "voting", "emoji"]).await;
    assert!(success_of(&rows, "web") < 0.9, "{rows:?}");
    assert!(success_of(&rows, "voting") < 0.9, "{rows:?}");
    let all = ferry_json(base, &["stat", "deploy", "-n", "emojivoto"]).await;
    let meshed: Vec<(&str, &serde_json::Value)> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), &r["meshed"]))
        .collect();
    let one_of_one = serde_json::json!({ "ready": 1, "total": 1 });
    assert_eq!(
        meshed,
        [
            ("emoji", &one_of_one),
            ("vote-bot", &one_of_one),
            ("voting", &one_of_one),
            ("voting-v2", &one_of_one),
            ("voting-v3", &one_of_one),
            ("web", &one_of_one)
        ],
        "{all}"
    );
    // --from deploy/web: emoji at 100 %, voting well below.
    let rows = stat(base, &["--from", "deploy/web"], &["emoji", "voting"]).await;
    assert_eq!(success_of(&rows, "emoji"), 1.0, "{rows:?}");
    assert!(success_of(&rows, "voting") < 0.9, "{rows:?}");
    // --from deploy/voting: its calls to emoji fail.
    let rows = stat(base, &["--from", "deploy/voting"], &["emoji"]).await;
    assert!(success_of(&rows, "emoji") < 0.9, "{rows:?}");
    // --to deploy/emoji: fine from web, about half failing from voting.
    let rows = stat(base, &["--to", "deploy/emoji"], &["web", "voting"]).await;
    assert_eq!(success_of(&rows, "web"), 1.0, "{rows:?}");
    let from_voting = success_of(&rows, "voting");
    assert!((0.2..=0.8).contains(&from_voting), "{rows:?}");

    // Every edge is mTLS.
    let edges = ferry_json(base, &["edges", "deploy", "-n", "emojivoto"]).await;
    let edges = edges.as_array().unwrap();
    for (src, dst) in [
        ("web", "emoji"),
        ("web", "voting"),
        ("voting", "emoji"),
        ("vote-bot", "web"),
        ("vote-bot", "voting"),
    ] {
        let edge = edges
            .iter()
            .find(|e| e["src"] == src && e["dst"] == dst)
            .unwrap_or_else(|| panic!("no edge {src} → {dst}: {edges:?}"));
        assert_eq!(edge["secured"], true, "{edge}");
    }

    // tap deploy/voting: 500s from the old HTTP/1 endpoint, naming a bottom-half emoji.
    let api = format!("http://{}", at(base + 4));
    let args = [
        "tap",
        "deploy/voting",
        "-n",
        "emojivoto",
        "--path",
        "/api/FindByShortcode",
        "--limit",
        "20",
        "-o",
        "json",
        "--api-addr",
        &api,
    ];
    let (text, events) = tap_events(&args).await;
    let failed_paths: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "rsp" && e["status"] == 500)
        .filter_map(|rsp| {
            let req = events
                .iter()
                .find(|e| e["type"] == "req" && e["id"] == rsp["id"])?;
            assert_eq!(req["authority"], "emoji-svc.emojivoto:8080", "{req}");
            assert_eq!(req["tls"], "true", "{req}");
            req["path"].as_str()
        })
        .collect();
    assert!(
        !failed_paths.is_empty(),
        "tap shows failing lookups: {text}"
    );
    for path in failed_paths {
        let shortcode = path.rsplit('=').next().unwrap();
        assert!(
            !ferry_demo::emojis::old_endpoint_serves(shortcode),
            "only bottom-half emojis fail: {path}"
        );
    }

    // tap deploy/web --to deploy/emoji: web's calls are gRPC FindByShortcode, and they work.
    let args = [
        "tap",
        "deploy/web",
        "-n",
        "emojivoto",
        "--to",
        "deploy/emoji",
        "--path",
        "/emojivoto.v1.EmojiService/FindByShortcode",
        "--limit",
        "5",
        "-o",
        "json",
        "--api-addr",
        &api,
    ];
    let (text, events) = tap_events(&args).await;
    let ends: Vec<&serde_json::Value> = events.iter().filter(|e| e["type"] == "end").collect();
    assert!(!ends.is_empty(), "{text}");
    for end in ends {
        assert_eq!(end["grpcStatus"], 0, "web's lookups succeed: {end}");
    }
}

/// `ferry rollout status voting -n emojivoto -o json` once `check` holds for it (bounded).
async fn rollout_until(
    base: u16,
    within: Duration,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let last = std::sync::Mutex::new(serde_json::Value::Null);
    let api = format!("http://{}", at(base + 4));
    let args = [
        "rollout",
        "status",
        "voting",
        "-n",
        "emojivoto",
        "-o",
        "json",
        "--api-addr",
        &api,
    ];
    let found = wait_until(within, what, || async {
        // Not found until the control plane has read the copied file.
        let (ok, text) = ferry(&bin("ferry"), &args).await;
        let view: serde_json::Value = match serde_json::from_str(&text) {
            Ok(view) if ok => view,
            _ => serde_json::Value::String(text),
        };
        let done = view.is_object() && check(&view);
        *last.lock().unwrap() = view.clone();
        done.then_some(view)
    })
    .await;
    found.unwrap_or_else(|e| panic!("{e}; the rollout last read: {:#}", last.lock().unwrap()))
}

/// Copies the example `name` into the demo's config directory as `to`, the way the demo's
/// hints tell a user to.
fn apply(state: &Path, name: &str, to: &str) {
    std::fs::copy(
        state.join("examples").join(name),
        state.join("config").join(to),
    )
    .unwrap_or_else(|e| panic!("copying the example {name}: {e}"));
}

/// The story's second act, as docs/demo.md tells it: voting v2 released in steps and
/// promoted, v3 rolled back on its own, then voting locked to web.
async fn second_act(base: u16, state: &Path) {
    // v2 and v3 run dark: meshed, but nobody calls them.
    let v2_admin = base + 53;
    let inbound_requests =
        |text: &str| metric_sum(text, "request_total", &[("direction", "inbound")]);
    assert_eq!(
        inbound_requests(&metrics(v2_admin).await),
        0.0,
        "v2 is dark"
    );

    // Release v2: 20 %, then 50 %, each judged; it promotes.
    apply(state, "voting-v2-rollout.yaml", "voting-rollout.yaml");
    let view = rollout_until(base, Duration::from_secs(150), "v2 promoted", |v| {
        assert_ne!(
            v["status"]["phase"], "RolledBack",
            "v2 must not roll back: {v:#}"
        );
        v["status"]["phase"] == "Promoted"
    })
    .await;
    let passed: Vec<&serde_json::Value> = view["status"]["analyses"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["verdict"] == "Passed")
        .collect();
    assert!(
        passed.iter().any(|a| a["step"] == 0) && passed.iter().any(|a| a["step"] == 1),
        "each step was judged: {view:#}"
    );
    for analysis in &passed {
        let (canary, stable) = (&analysis["canary"], &analysis["stable"]);
        assert!(
            canary["success"].as_f64().unwrap() > stable["success"].as_f64().unwrap(),
            "v2 fixed what v1 got wrong: {analysis}"
        );
    }
    assert_eq!(view["traffic"]["canaryWeight"], 100, "{view:#}");
    // All of voting's traffic now reaches v2, and it all succeeds.
    let rows = stat(base, &["--from", "deploy/web"], &["voting-v2"]).await;
    assert!(success_of(&rows, "voting-v2") > 0.95, "{rows:?}");

    // v3 over v2: it loses votes and is slower, so the first analysis rolls it back.
    apply(state, "voting-v3-rollout.yaml", "voting-rollout.yaml");
    let view = rollout_until(base, Duration::from_secs(90), "v3 rolled back", |v| {
        v["spec"]["canary"]["name"] == "voting-v3-svc"
            && v["status"]["phase"]
                .as_str()
                .is_some_and(|p| p != "Progressing")
    })
    .await;
    assert_eq!(view["status"]["phase"], "RolledBack", "{view:#}");
    let reason = view["status"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("success"),
        "the reason names the success rate: {reason}"
    );
    assert_eq!(view["traffic"]["canaryWeight"], 0, "{view:#}");
    let history = ferry_json(base, &["rollout", "history", "voting", "-n", "emojivoto"]).await;
    let outcomes: Vec<(&str, &str)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["canary"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("voting-v2-svc", "Promoted"),
            ("voting-v3-svc", "RolledBack")
        ],
        "{history:#}"
    );

    // Lock voting to web: the bot's direct reads (now on v2, the stable) are refused by
    // v2's proxy, web's calls still go through.
    let denied = |text: &str| metric_sum(text, "inbound_http_authz_deny_total", &[]);
    let web_to_v2 = |text: &str| {
        metric_sum(
            text,
            "response_total",
            &[
                ("direction", "outbound"),
                ("dst_deployment", "voting-v2"),
                ("classification", "success"),
            ],
        )
    };
    let before = web_to_v2(&metrics(base + 13).await);
    apply(state, "voting-policy.yaml", "voting-policy.yaml");
    wait_until(
        Duration::from_secs(30),
        "the bot's reads refused",
        || async { (denied(&metrics(v2_admin).await) >= 2.0).then_some(()) },
    )
    .await
    .unwrap();
    let after = wait_until(
        Duration::from_secs(30),
        "web's votes still counted",
        || async {
            let n = web_to_v2(&metrics(base + 13).await);
            (n > before + 20.0).then_some(n)
        },
    )
    .await
    .unwrap();
    assert!(after > before, "web is allowed");
    // ferry tap shows the refusals: the bot's Results calls, PERMISSION_DENIED.
    let api = format!("http://{}", at(base + 4));
    let args = [
        "tap",
        "deploy/voting-v2",
        "-n",
        "emojivoto",
        "--path",
        "/emojivoto.v1.VotingService/Results",
        "--limit",
        "6",
        "-o",
        "json",
        "--api-addr",
        &api,
    ];
    let (text, events) = tap_events(&args).await;
    let refused = events
        .iter()
        .filter(|e| e["type"] == "end" && e["grpcStatus"] == 7 && e["proxyError"] == "unauthorized")
        .count();
    assert!(
        refused > 0,
        "tap shows the bot's reads refused by voting's proxy: {text}"
    );
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
    // The same story from the CLI, as docs/demo.md tells it.
    story(base).await;
    second_act(base, state.path()).await;

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
    assert_eq!(pids.len(), 13, "control, 5 apps, 6 proxies, the bot");
    assert!(pids.iter().all(|p| alive(*p)));
    Command::new("kill")
        .args(["-INT", &demo.pid().to_string()])
        .status()
        .unwrap();
    let status = demo.terminate_wait(Duration::from_secs(20)).await.unwrap();
    assert!(status.success(), "{status}: {}", demo.logs().join("\n"));
    // The output is read by another task: wait for its last line.
    demo.wait_for_log("Stopped 13 processes.", Duration::from_secs(5))
        .await
        .unwrap();
    let output = demo.logs().join("\n");
    assert!(output.contains("Ctrl-C: stopping"), "{output}");
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

#[tokio::test]
async fn after_a_sigkill_the_apps_exit_and_the_next_demo_cleans_up() {
    let base = free_base();
    let state = tempfile::tempdir().unwrap();
    let leftovers = Leftovers(state.path().to_path_buf());
    let mut first = demo(base, state.path());
    first.wait_for_log("Ready.", START).await.unwrap();
    let pids = leftovers.pids();
    Command::new("kill")
        .args(["-KILL", &first.pid().to_string()])
        .status()
        .unwrap();
    first.terminate_wait(Duration::from_secs(5)).await.unwrap();

    // The apps see their stdin close and exit; the proxies and control plane cannot know.
    let apps: Vec<u32> = std::fs::read_to_string(state.path().join("children.pids"))
        .unwrap()
        .lines()
        .filter(|l| {
            [
                " emoji",
                " voting",
                " voting-v2",
                " voting-v3",
                " web",
                " vote-bot",
            ]
            .iter()
            .any(|s| l.ends_with(s))
        })
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(apps.len(), 6, "{pids:?}");
    wait_until(Duration::from_secs(10), "the apps to exit", || async {
        apps.iter().all(|p| !alive(*p)).then_some(())
    })
    .await
    .unwrap();

    // The next demo on the same state stops what is left, says so, and starts.
    let mut second = demo(base, state.path());
    second.wait_for_log("Ready.", START).await.unwrap();
    let output = second.logs().join("\n");
    assert!(
        output.contains("Stopped processes a killed ferry demo left behind: control ("),
        "{output}"
    );
    assert!(
        pids.iter().all(|p| !alive(*p)),
        "the first demo's children are gone"
    );
    Command::new("kill")
        .args(["-TERM", &second.pid().to_string()])
        .status()
        .unwrap();
    assert!(second
        .terminate_wait(Duration::from_secs(20))
        .await
        .unwrap()
        .success());
}

/// The pid the demo recorded for its child `name`.
fn child_pid(state: &Path, name: &str) -> Option<u32> {
    std::fs::read_to_string(state.join("children.pids"))
        .ok()?
        .lines()
        .rev()
        .find_map(|l| {
            let (pid, n) = l.split_once(' ')?;
            (n == name).then(|| pid.parse().ok())?
        })
}

#[tokio::test]
async fn the_demo_survives_its_control_plane() {
    let base = free_base();
    let state = tempfile::tempdir().unwrap();
    let _leftovers = Leftovers(state.path().to_path_buf());
    let mut demo = demo(base, state.path());
    demo.wait_for_log("Ready.", START).await.unwrap();
    // web (inbound base+10) lists emojis from emoji, through both proxies.
    let list = format!("http://{}/api/list", at(base + 10));
    let through_the_mesh = || async {
        client::get(&list)
            .await
            .map(|r| r.status.as_u16())
            .unwrap_or(0)
    };
    assert_eq!(through_the_mesh().await, 200);

    // Kill the control plane, and keep it down a while: its gRPC port is taken, so its
    // restarts fail until the port is free again.
    let control = child_pid(state.path(), "control").expect("control's pid");
    Command::new("kill")
        .args(["-KILL", &control.to_string()])
        .status()
        .unwrap();
    let grpc = wait_until(
        Duration::from_secs(5),
        "the gRPC port to be free",
        || async { std::net::TcpListener::bind(at(base + 6)).ok() },
    )
    .await
    .unwrap();
    let said = demo
        .wait_for_log("ferry-control exited", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        said.contains("the proxies keep routing on its last answers"),
        "{said}"
    );
    // Traffic keeps flowing on the proxies' last known state while there is no control
    // plane at all.
    for _ in 0..20 {
        assert_eq!(through_the_mesh().await, 200, "{}", demo.logs().join("\n"));
    }
    let api = client::get(&format!("http://{}/api/v1/health", at(base + 4))).await;
    assert!(api.is_err(), "the control plane answered while down");
    // The failed restarts are reported, each with a longer wait.
    demo.wait_for_log("Restarting it in 1s", Duration::from_secs(20))
        .await
        .unwrap();
    assert!(demo.is_running(), "{}", demo.logs().join("\n"));

    // Once the port is free, a restart succeeds and the demo says so.
    drop(grpc);
    demo.wait_for_log("ferry-control is back", Duration::from_secs(60))
        .await
        .unwrap();
    let api = client::get(&format!("http://{}/api/v1/health", at(base + 4)))
        .await
        .unwrap();
    assert_eq!(api.status.as_u16(), 200);
    assert_eq!(through_the_mesh().await, 200);
    // Other children are restarted too: kill emoji's proxy.
    let emoji_proxy = child_pid(state.path(), "emoji-proxy").expect("emoji-proxy's pid");
    Command::new("kill")
        .args(["-KILL", &emoji_proxy.to_string()])
        .status()
        .unwrap();
    demo.wait_for_log("emoji's ferry-proxy exited", Duration::from_secs(10))
        .await
        .unwrap();
    wait_until(Duration::from_secs(60), "emoji-proxy restarted", || async {
        child_pid(state.path(), "emoji-proxy")
            .filter(|pid| *pid != emoji_proxy && alive(*pid))
            .map(|_| ())
    })
    .await
    .unwrap();
    wait_until(
        Duration::from_secs(60),
        "traffic to emoji again",
        || async { (through_the_mesh().await == 200).then_some(()) },
    )
    .await
    .unwrap();

    // Ctrl-C still stops everything, the restarted children included.
    Command::new("kill")
        .args(["-INT", &demo.pid().to_string()])
        .status()
        .unwrap();
    let status = demo.terminate_wait(Duration::from_secs(20)).await.unwrap();
    assert!(status.success(), "{status}: {}", demo.logs().join("\n"));
    demo.wait_for_log("Stopped 13 processes.", Duration::from_secs(5))
        .await
        .unwrap();
}
