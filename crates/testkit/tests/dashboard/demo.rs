//! The judged scenario: with `ferry demo` running, the overview lists every emojivoto
//! workload with the API's success rate, voting's page shows emoji failing among its
//! destinations, and tap streams live rows.

use std::{path::PathBuf, time::Duration};

use ferry_testkit::{
    browser::Browser,
    process::{bin, Proc},
    wait_until,
};

use crate::{assert_checks_pass, get_json, shot, wait_overview_matches, WAIT};

/// Ports `ferry demo` uses from its base.
const DEMO_SPAN: u16 = 70;

/// A base with all the demo's ports free right now, below the kernel's ephemeral range
/// (32768 and up) so that no other test's outgoing connection can take one meanwhile.
fn free_base() -> u16 {
    let seed = std::process::id() as usize;
    for attempt in 0..1200 {
        let base = 20_000 + ((seed * 7919 + attempt * 131) % 1_200) as u16 * 10;
        if (base..base + DEMO_SPAN).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
    panic!("no free range of {DEMO_SPAN} ports between 20000 and 32000");
}

/// Kills whatever the demo recorded in its state directory when dropped, so a failing test
/// leaves no process behind (the demo's own Ctrl-C path is tested in crates/demo).
struct Leftovers(PathBuf);

impl Drop for Leftovers {
    fn drop(&mut self) {
        let pids = std::fs::read_to_string(self.0.join("children.pids")).unwrap_or_default();
        for pid in pids.lines().filter_map(|l| l.split_whitespace().next()) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", pid])
                .status();
        }
    }
}

#[tokio::test]
async fn with_ferry_demo_running_the_dashboard_finds_the_broken_edge() {
    let base = free_base();
    let state = tempfile::tempdir().unwrap();
    let _leftovers = Leftovers(state.path().to_path_buf());
    let args = [
        "demo",
        "--port-base",
        &base.to_string(),
        "--state-dir",
        state.path().to_str().unwrap(),
        "--rate",
        "20",
    ];
    let mut demo = Proc::spawn(bin("ferry"), &args, &[]).unwrap();
    let ready = wait_until(Duration::from_secs(90), "ferry demo to be ready", || {
        let up = demo.logs().iter().any(|l| l.contains("Ready."));
        let exited = !demo.is_running();
        async move { (up || exited).then_some(up) }
    })
    .await
    .unwrap();
    assert!(ready, "ferry demo exited:\n{}", demo.logs().join("\n"));
    let api = format!("http://127.0.0.1:{}", base + 4);

    // The API: every emojivoto workload is listed, and the three called ones have traffic.
    let workloads = ["emoji", "vote-bot", "voting", "web"];
    let last = std::sync::Mutex::new(String::new());
    let measured = wait_until(
        WAIT,
        "the stat API to measure web, emoji and voting",
        || async {
            let v = get_json(&format!(
                "{api}/api/v1/stat?kind=deploy&namespace=emojivoto"
            ))
            .await;
            *last.lock().unwrap() = format!("{v:?}");
            let v = v.ok()?;
            let rows = v["rows"].as_array()?;
            let has = |n: &str| rows.iter().any(|r| r["name"] == n && r["success"].is_f64());
            (has("web") && has("emoji") && has("voting")).then_some(())
        },
    )
    .await;
    if let Err(e) = measured {
        let logs = demo.logs();
        let tail = logs[logs.len().saturating_sub(30)..].join("\n");
        panic!(
            "{e}; last answer: {}\nferry demo logged:\n{tail}",
            last.lock().unwrap()
        );
    }

    // Traces (issue #24): the bot's proxy starts one for every vote, the apps carry it on,
    // so a failed vote's trace crosses bot → web → voting → emoji, with the proxies'
    // spans around each hop (bot client, web server, web's two clients, emoji server,
    // voting server, voting's client, emoji server: at least 8).
    let trace = failed_vote_trace(&api, &workloads).await;
    eprintln!("a failed vote's trace: {trace}");

    let browser = Browser::start(1366, 900).await.unwrap();
    browser.goto(&format!("{api}/#/")).await.unwrap();
    browser
        .wait_for(
            "the overview to list every emojivoto workload with its success rate",
            r#"const has = (n) => { const c = document.querySelector(`tr[data-workload="emojivoto/${n}"] [data-success]`);
                                    return c && (n === 'vote-bot' || c.dataset.success !== ''); };
               return ['emoji', 'vote-bot', 'voting', 'web'].every(has);"#,
            WAIT,
        )
        .await
        .unwrap();
    shot(&browser, "demo-1-overview").await;
    wait_overview_matches(&browser, &api, "emojivoto", &workloads).await;

    // Click through to voting: emoji is among its destinations, failing.
    let voting = browser
        .find("tr[data-workload='emojivoto/voting'] a.wl-link")
        .await
        .unwrap();
    browser.click(&voting).await.unwrap();
    let emoji = browser
        .wait_for(
            "emoji among voting's destinations, with a success rate",
            r#"const r = document.querySelector("table.outbound tr[data-peer='emoji'] [data-success]");
               return r && r.dataset.success !== '' ? [r.dataset.success, r.textContent] : null;"#,
            WAIT,
        )
        .await
        .unwrap();
    let rate: f64 = emoji[0].as_str().unwrap().parse().unwrap();
    assert!(rate < 0.95, "voting → emoji should be failing: {emoji}");
    shot(&browser, "demo-2-voting").await;
    // Its last 15 minutes, drawn from the history API (a line needs two points).
    browser
        .wait_for(
            "voting's success, RPS and latency charts to draw lines",
            r#"const lines = document.querySelectorAll('svg.chart path.series');
               if (lines.length < 5) return null;
               window.scrollTo(0, document.body.scrollHeight);
               return lines.length;"#,
            WAIT,
        )
        .await
        .unwrap();
    shot(&browser, "demo-2b-voting-charts").await;
    browser
        .eval("window.scrollTo(0, 0); return true;", vec![])
        .await
        .unwrap();

    // Tap voting: live rows.
    let tap = browser.find("#tap-this").await.unwrap();
    browser.click(&tap).await.unwrap();
    let seen = browser
        .wait_for(
            "live tap rows for voting",
            r#"const rows = document.querySelectorAll('#tap-rows tr.tap-row');
               const failed = document.querySelectorAll('#tap-rows tr.tap-row.failed');
               return rows.length >= 5 && failed.length >= 1 ? [rows.length, failed.length] : null;"#,
            WAIT,
        )
        .await
        .unwrap();
    eprintln!("tap rows, failed: {seen}");
    shot(&browser, "demo-3-tap-voting").await;

    // Diagnostics: six ready proxies (voting's v2 and v3 run dark) with their identities'
    // certificates, checks passing.
    browser.goto(&format!("{api}/#/proxies")).await.unwrap();
    browser
        .wait_for(
            "six ready proxies, each with a certificate expiry",
            r#"const rows = [...document.querySelectorAll('tr[data-pod]')];
               return rows.length === 6 && rows.every((r) => r.querySelector('.badge.good')
                 && /in \d/.test(r.querySelector('td.cert').textContent));"#,
            WAIT,
        )
        .await
        .unwrap();
    shot(&browser, "demo-4-proxies").await;
    assert_checks_pass(&browser, &api).await;

    // The failed vote's trace as a waterfall: the proxies' spans nested hop by hop, down
    // to emoji's, the failing ones in red.
    // A recent one: the store keeps the last 1000 traces, some 50 s of votes at this rate.
    let trace = failed_vote_trace(&api, &workloads).await;
    let id = trace["traceId"].as_str().unwrap();
    browser.goto(&format!("{api}/#/trace/{id}")).await.unwrap();
    let rows = browser
        .wait_for(
            "the failed vote's waterfall down to emoji's span, the failing ones in red",
            r#"const rows = [...document.querySelectorAll('#waterfall .wf-row[data-span]')];
               if (rows.length < 8) return null;
               const deepest = Math.max(...rows.map((r) => Number(r.dataset.depth)));
               const red = rows.filter((r) => r.classList.contains('wf-error')).length;
               return deepest >= 5 && red >= 4 ? [rows.length, deepest, red] : null;"#,
            WAIT,
        )
        .await
        .unwrap();
    eprintln!("waterfall rows, depth, failed: {rows}");
    shot(&browser, "demo-5-trace").await;
    drop(browser);
    let _ = demo.terminate(Duration::from_secs(20)).await;
}

/// A failed vote's trace that crosses all of `workloads`: the bot's proxy starts one for
/// every vote and the apps carry it on, so it has the proxies' spans around each hop (bot
/// client, web server, web's two clients, emoji server, voting server, voting's client,
/// emoji server: at least 8).
async fn failed_vote_trace(api: &str, workloads: &[&str]) -> serde_json::Value {
    let last = std::sync::Mutex::new(String::new());
    let traced = wait_until(
        WAIT,
        "a failed vote's trace across all four workloads",
        || async {
            let v = get_json(&format!("{api}/api/v1/traces?status=error&workload=voting")).await;
            *last.lock().unwrap() = format!("{v:?}");
            let v = v.ok()?;
            v["traces"].as_array()?.iter().find_map(|t| {
                let names: Vec<&str> = t["workloads"]
                    .as_array()?
                    .iter()
                    .filter_map(|w| w.as_str())
                    .map(|w| w.rsplit('/').next().unwrap_or(w))
                    .collect();
                let all = workloads.iter().all(|w| names.contains(w));
                (all && t["spanCount"].as_u64()? >= 8).then(|| t.clone())
            })
        },
    )
    .await;
    traced.unwrap_or_else(|e| panic!("{e}; last answer: {}", last.lock().unwrap()))
}
