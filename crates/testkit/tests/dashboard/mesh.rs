//! A mesh built by the test (namespace `shop`): the test, playing `web`, sends through web's
//! proxy to `voting` (whose app fails every other request) and `emoji` (always fine); the
//! dashboard is then walked page by page.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use ferry_testkit::{
    browser::Browser,
    client,
    process::{bin, ControlProc, Proc, ProxyProc},
    server::{full, TestServer},
    wait_until,
};
use http::{Response, StatusCode};

use crate::{assert_checks_pass, get_json, shot, wait_overview_matches, WAIT};

/// One workload's instance: its proxy in front of its app (if any).
struct Instance {
    name: &'static str,
    proxy: ProxyProc,
}

fn workloads_yaml(instances: &[&Instance]) -> String {
    let mut y = String::from("namespaces: [shop]\nworkloads:\n");
    for i in instances {
        let tap = i
            .proxy
            .addrs
            .get("tap")
            .map(|t| format!(", tapAddr: \"{t}\""))
            .unwrap_or_default();
        y.push_str(&format!(
            "  - name: {n}\n    namespace: shop\n    serviceAccount: {n}\n    instances:\n      - {{ name: {n}-0, addr: \"{}\", adminAddr: \"{}\"{tap} }}\n",
            i.proxy.inbound(),
            i.proxy.admin(),
            n = i.name,
        ));
    }
    y.push_str("services:\n");
    for svc in ["voting", "emoji"] {
        y.push_str(&format!(
            "  - {{ name: {svc}, namespace: shop, port: 8080, workloads: [{svc}] }}\n"
        ));
    }
    y
}

/// A running mesh with traffic flowing; everything stops on drop.
struct Mesh {
    api: String,
    control: Proc,
    _instances: Vec<Instance>,
    _apps: Vec<TestServer>,
    _traffic: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn mesh() -> Mesh {
    let emoji_app = TestServer::http(|_req| async { Response::new(full("🍩")) }).await;
    let calls = Arc::new(AtomicU64::new(0));
    let voting_app = TestServer::http(move |_req| {
        let n = calls.fetch_add(1, Ordering::Relaxed);
        async move {
            let mut rsp = Response::new(full(if n.is_multiple_of(2) {
                "voted"
            } else {
                "no such emoji"
            }));
            if n % 2 == 1 {
                *rsp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            }
            rsp
        }
    })
    .await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("workloads.yaml");
    std::fs::write(&file, "namespaces: [shop]\n").unwrap();
    // A route on emoji: a timeout, and all of it to emoji (the workload page shows it).
    let routes = dir.path().join("routes.yaml");
    std::fs::write(
        &routes,
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: emoji-route, namespace: shop}\nspec:\n  parentRefs: [{group: \"\", kind: Service, name: emoji, port: 8080}]\n  rules:\n  - backendRefs: [{name: emoji, port: 8080, weight: 100}]\n    timeouts: {request: 5s}\n",
    )
    .unwrap();
    let routes = routes.to_str().unwrap().to_string();
    let control = ControlProc::spawn(&file, &["--scrape-interval", "1s", "--routes", &routes])
        .await
        .unwrap();
    let (grpc, api) = (control.grpc, control.api);

    let proxy = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ProxyProc::spawn(bin("ferry-proxy"), &args).await.unwrap()
    };
    let voting = Instance {
        name: "voting",
        proxy: proxy(vec![
            "--inbound-forward".into(),
            voting_app.addr.to_string(),
        ])
        .await,
    };
    let emoji = Instance {
        name: "emoji",
        proxy: proxy(vec!["--inbound-forward".into(), emoji_app.addr.to_string()]).await,
    };
    let web = Instance {
        name: "web",
        proxy: proxy(vec![
            "--upstream".into(),
            "127.0.0.1:0=voting.shop:8080".into(),
            "--upstream".into(),
            "127.0.0.1:0=emoji.shop:8080".into(),
            "--destination-addr".into(),
            grpc.to_string(),
        ])
        .await,
    };
    std::fs::write(&file, workloads_yaml(&[&web, &voting, &emoji])).unwrap();
    let api = format!("http://{api}");
    wait_until(WAIT, "discovery to list three workloads", || async {
        let ov = get_json(&format!("{api}/api/v1/overview")).await.ok()?;
        (ov["workloads"].as_array()?.len() == 3).then_some(())
    })
    .await
    .unwrap();

    let urls = [
        format!("http://{}/vote", web.proxy.upstream("voting.shop:8080")),
        format!("http://{}/list", web.proxy.upstream("emoji.shop:8080")),
    ];
    let traffic = tokio::spawn(async move {
        let http = client::http1();
        loop {
            for url in &urls {
                let req = http::Request::get(url.as_str())
                    .body(Default::default())
                    .unwrap();
                let _ = client::send(&http, req).await;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    });
    Mesh {
        api,
        control: control.proc,
        _instances: vec![web, voting, emoji],
        _apps: vec![emoji_app, voting_app],
        _traffic: traffic,
        _dir: dir,
    }
}

/// The API's success rate for each `shop` deployment (`None` = no traffic).
async fn api_success(api: &str) -> anyhow::Result<Vec<(String, Option<f64>)>> {
    let v = get_json(&format!("{api}/api/v1/stat?kind=deploy&namespace=shop")).await?;
    Ok(v["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    (
                        r["name"].as_str().unwrap_or("").to_string(),
                        r["success"].as_f64(),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

#[tokio::test]
async fn the_dashboard_shows_the_apis_numbers_drills_down_and_taps() {
    let mut mesh = mesh().await;
    let api = mesh.api.clone();

    // The API first: traffic has been measured for both called workloads.
    wait_until(WAIT, "the stat API to report voting and emoji", || async {
        let rows = api_success(&api).await.ok()?;
        let has = |n: &str| rows.iter().any(|(name, s)| name == n && s.is_some());
        (has("voting") && has("emoji")).then_some(())
    })
    .await
    .unwrap();

    // `ferry dashboard` finds it and prints the URL the browser then opens.
    let out = tokio::process::Command::new(bin("ferry"))
        .args(["dashboard", "--no-open", "--api-addr", &api])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT, out).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = stdout
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {stdout:?}"))
        .to_string();
    assert_eq!(url, format!("{api}/#/"));

    let browser = Browser::start(1366, 900).await.unwrap();
    browser.goto(&url).await.unwrap();
    browser
        .wait_for(
            "the overview to show success rates for voting and emoji",
            r#"const r = (n) => document.querySelector(`tr[data-workload="shop/${n}"] [data-success]`);
               return r('voting') && r('voting').dataset.success !== '' && r('emoji') && r('emoji').dataset.success !== ''
                 && document.querySelector('tr[data-workload="shop/web"]') !== null;"#,
            WAIT,
        )
        .await
        .unwrap();
    shot(&browser, "1-overview").await;

    // Same numbers as the API, as `ferry stat` prints them.
    let page = wait_overview_matches(&browser, &api, "shop", &["web", "voting", "emoji"]).await;
    let voting = page.iter().find(|(w, _, _)| w == "shop/voting").unwrap();
    assert!(
        (voting.1.unwrap() - 0.5).abs() < 0.1,
        "voting fails every other request: {voting:?}"
    );
    // Sortable: a click on Success sorts best first, a second click worst first; no
    // traffic sorts last both ways.
    for (clicks, want) in [
        (1, "shop/emoji shop/voting shop/web"),
        (2, "shop/voting shop/emoji shop/web"),
    ] {
        let header = browser
            .find("table.workloads th[data-col='success']")
            .await
            .unwrap();
        browser.click(&header).await.unwrap();
        let script = format!(
            r#"const rows = [...document.querySelectorAll("tr[data-workload^='shop/']")].map((r) => r.dataset.workload);
               return rows.join(' ') === '{want}' ? rows : null;"#
        );
        browser
            .wait_for(&format!("{clicks} click(s): {want}"), &script, WAIT)
            .await
            .unwrap();
    }
    let order = browser
        .eval("return document.querySelector('table.workloads th.desc, table.workloads th.asc').className;", vec![])
        .await
        .unwrap();
    eprintln!("sorted: {order}");
    let status = browser.find("#cp-status").await.unwrap();
    assert_eq!(browser.text(&status).await.unwrap(), "ok");

    // Click through: web's destinations are voting (failing) and emoji (fine).
    let web = browser
        .find("tr[data-workload='shop/web'] a.wl-link")
        .await
        .unwrap();
    browser.click(&web).await.unwrap();
    let dests = browser
        .wait_for(
            "web's destinations",
            r#"const rows = [...document.querySelectorAll('table.outbound tr[data-peer]')];
               const get = (n) => rows.find((r) => r.dataset.peer === n);
               if (!get('voting') || !get('emoji')) return null;
               const s = (n) => get(n).querySelector('[data-success]').dataset.success;
               return s('voting') && s('emoji') ? [s('voting'), s('emoji'), get('voting').className] : null;"#,
            WAIT,
        )
        .await
        .unwrap();
    let voting_rate: f64 = dests[0].as_str().unwrap().parse().unwrap();
    let emoji_rate: f64 = dests[1].as_str().unwrap().parse().unwrap();
    assert!(voting_rate < 0.8, "voting from web is failing: {dests}");
    assert!(emoji_rate > 0.99, "emoji from web is fine: {dests}");
    assert!(dests[2].as_str().unwrap().contains("row-bad"), "{dests}");
    // web's routes: the emoji route with its weight, as `ferry routes deploy/web` has it.
    let route = browser
        .wait_for(
            "web's routes",
            r#"const r = document.querySelector('table.routes tr[data-route="HTTPRoute/shop/emoji-route"]');
               if (!r) return null;
               const w = r.querySelector('.weights').textContent;
               return w !== '-' ? [w, r.querySelector('[data-success]').dataset.success] : null;"#,
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(route[0], "emoji 100", "{route}");
    assert!(
        route[1].as_str().unwrap().parse::<f64>().unwrap() > 0.99,
        "{route}"
    );
    assert!(browser
        .url()
        .await
        .unwrap()
        .contains("#/workload/shop/deployment/web"));
    shot(&browser, "2-workload-web").await;

    // And on to voting, whose callers include web.
    let link = browser
        .find("table.outbound tr[data-peer='voting'] a.peer-link")
        .await
        .unwrap();
    browser.click(&link).await.unwrap();
    browser
        .wait_for(
            "voting's callers to include web",
            "return document.querySelector(\"table.inbound tr[data-peer='web']\") !== null;",
            WAIT,
        )
        .await
        .unwrap();
    shot(&browser, "3-workload-voting").await;

    // Tap voting from its page: live rows, and the failures stand out.
    let tap = browser.find("#tap-this").await.unwrap();
    browser.click(&tap).await.unwrap();
    let seen = browser
        .wait_for(
            "live tap rows with a highlighted failure",
            r#"const rows = document.querySelectorAll('#tap-rows tr.tap-row');
               const failed = document.querySelectorAll('#tap-rows tr.tap-row.failed');
               return rows.length >= 5 && failed.length >= 1 ? [rows.length, failed.length] : null;"#,
            WAIT,
        )
        .await
        .unwrap();
    eprintln!("tap rows, failed: {seen}");
    shot(&browser, "4-tap-voting").await;
    let stop = browser.find("#tap-stop").await.unwrap();
    browser.click(&stop).await.unwrap();
    // With a limit the tap ends on its own after that many requests, and stays ended.
    browser
        .goto(&format!(
            "{api}/#/tap?resource=deploy/emoji&namespace=shop&limit=3"
        ))
        .await
        .unwrap();
    let ended = browser
        .wait_for(
            "a limited tap to end after 3 requests",
            r#"const s = document.querySelector('#tap-status').textContent;
               return s.includes('ended after its limit of 3') ? [s, document.querySelectorAll('#tap-rows tr.tap-row').length] : null;"#,
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(ended[1], 3, "{ended}");

    // The namespace page draws the graph web → voting, emoji from the edges.
    browser.goto(&format!("{api}/#/ns/shop")).await.unwrap();
    browser
        .wait_for(
            "the namespace call graph with both edges",
            "return document.querySelectorAll('#ns-graph path.edge').length === 2 && document.querySelectorAll('#ns-graph path.edge.bad').length === 1;",
            WAIT,
        )
        .await
        .unwrap();
    shot(&browser, "4b-namespace").await;

    // Diagnostics: every proxy ready, its endpoints from /state, and the checks pass.
    browser.goto(&format!("{api}/#/proxies")).await.unwrap();
    browser
        .wait_for(
            "three ready proxies, web's knowing voting's endpoint",
            r#"const ps = document.querySelectorAll('details.proxy');
               const web = document.querySelector('details.proxy[data-pod="web-0"]');
               return ps.length === 3 && web && web.textContent.includes('voting.shop') && !document.querySelector('details.proxy .badge.bad');"#,
            WAIT,
        )
        .await
        .unwrap();
    shot(&browser, "5-proxies").await;
    assert_checks_pass(&browser, &api).await;
    shot(&browser, "6-check").await;

    // The control plane going away shows on the open page instead of stale numbers
    // passing for live ones.
    mesh.control.terminate(WAIT).await.unwrap();
    browser
        .wait_for(
            "the page to say it is offline",
            "const l = document.querySelector('#live'); return l.classList.contains('bad') && l.textContent;",
            WAIT,
        )
        .await
        .unwrap();
    shot(&browser, "7-offline").await;
}
