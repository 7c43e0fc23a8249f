//! The web dashboard in a real headless Chromium: what the page shows must be what the
//! public API says. Screenshots land in `$CARGO_TARGET_DIR/dashboard-screens/`.
//!
//! - [`mesh`]: `ferry-control`, a `ferry-proxy` per workload and test apps with steady
//!   traffic; every page of the dashboard, clicked through.
//! - [`demo`]: the judged scenario, with `ferry demo` running.
//! - [`traces`]: spans exported over OTLP, read back by `ferry trace` and the Traces pages.
//! - [`rollouts`]: a rollout on real traffic, its pages, and promoting it from the page.
//! - [`denied`]: the tap page telling a proxy's policy denial from an application's 403.
//!
//! Both run alone (`.config/nextest.toml`): a cold Chromium on a busy two-core machine.

mod demo;
mod denied;
mod mesh;
mod rollouts;
mod traces;

use std::{path::PathBuf, time::Duration};

use ferry_testkit::{browser::Browser, client, wait_until};
use http::StatusCode;
use serde_json::Value;

/// Generous: scrapes, rate windows and a cold Chromium on a busy two-core machine.
const WAIT: Duration = Duration::from_secs(60);

/// Where screenshots go: beside the build, so CI keeps them with the target dir.
fn screens_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> → target/dashboard-screens
    exe.ancestors()
        .nth(3)
        .expect("target dir")
        .join("dashboard-screens")
}

async fn get_json(url: &str) -> anyhow::Result<Value> {
    let r = client::get(url).await?;
    anyhow::ensure!(
        r.status == StatusCode::OK,
        "GET {url}: {} {}",
        r.status,
        r.text()
    );
    Ok(serde_json::from_slice(&r.body)?)
}

async fn shot(browser: &Browser, name: &str) {
    let path = screens_dir().join(format!("{name}.png"));
    browser.screenshot(&path).await.unwrap();
    eprintln!("screenshot: {}", path.display());
}

/// The page's success cell of every row of `selector` as `[name, data-success, text]`.
const ROWS_JS: &str = r#"
  const out = [];
  for (const tr of document.querySelectorAll(arguments[0])) {
    const cell = tr.querySelector('[data-success]');
    if (!cell) continue;
    out.push([tr.dataset.workload || tr.dataset.peer, cell.dataset.success, cell.textContent]);
  }
  return out;"#;

async fn page_rows(browser: &Browser, selector: &str) -> Vec<(String, Option<f64>, String)> {
    let v = browser
        .eval(ROWS_JS, vec![Value::String(selector.to_string())])
        .await
        .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap_or("").to_string(),
                r[1].as_str().and_then(|s| s.parse().ok()),
                r[2].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Compares the overview's success cells for `namespace` with the stat API's answer, read
/// right after: every workload the API lists must be on the page, with the same rate (to
/// `TOLERANCE`: the page refreshes every 2 s while traffic flows) printed as `ferry stat`
/// prints it, and `-` where the API says no traffic. `Err` says what differs.
async fn overview_matches_api(
    browser: &Browser,
    api: &str,
    namespace: &str,
    expect: &[&str],
) -> Result<Vec<(String, Option<f64>, String)>, String> {
    const TOLERANCE: f64 = 0.01;
    let page = page_rows(browser, &format!("tr[data-workload^='{namespace}/']")).await;
    let v = get_json(&format!(
        "{api}/api/v1/stat?kind=deploy&namespace={namespace}"
    ))
    .await
    .map_err(|e| e.to_string())?;
    let rows = v["rows"].as_array().cloned().unwrap_or_default();
    for name in expect {
        if !rows.iter().any(|r| r["name"] == *name) {
            return Err(format!("the API does not list {name}: {v}"));
        }
    }
    for r in &rows {
        let name = r["name"].as_str().unwrap_or_default();
        let key = format!("{namespace}/{name}");
        let Some((_, shown, text)) = page.iter().find(|(w, _, _)| *w == key) else {
            return Err(format!("{key} missing from the overview: {page:?}"));
        };
        match (r["success"].as_f64(), shown) {
            (None, None) if text == "-" => {}
            (Some(a), Some(s)) if (a - s).abs() <= TOLERANCE && *text == pct(*s) => {}
            (a, s) => return Err(format!("{key}: page {s:?} ({text}) vs API {a:?}")),
        }
    }
    Ok(page)
}

/// Waits (bounded) until [`overview_matches_api`] holds, failing with the last difference.
async fn wait_overview_matches(
    browser: &Browser,
    api: &str,
    namespace: &str,
    expect: &[&str],
) -> Vec<(String, Option<f64>, String)> {
    let last = std::sync::Mutex::new(String::new());
    let found = wait_until(
        WAIT,
        "the overview to show the API's success rates",
        || async {
            match overview_matches_api(browser, api, namespace, expect).await {
                Ok(page) => Some(page),
                Err(e) => {
                    *last.lock().unwrap() = e;
                    None
                }
            }
        },
    )
    .await;
    found.unwrap_or_else(|e| panic!("{e}: {}", last.lock().unwrap()))
}

/// Opens the check page and asserts that all its checks passed.
async fn assert_checks_pass(browser: &Browser, api: &str) {
    browser.goto(&format!("{api}/#/check")).await.unwrap();
    let summary = browser
        .wait_for(
            "the checks",
            "const s = document.querySelector('#check-summary'); return s && s.textContent;",
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(summary, "all 4 checks passed");
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}
