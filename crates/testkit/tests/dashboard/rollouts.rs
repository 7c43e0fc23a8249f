//! The Rollouts pages: a rollout run by `ferry-control` on real traffic (a client proxy
//! sending to `web`, split between two versions), listed with its phase and step, then its
//! page: canary vs stable against the thresholds, the step timeline, the analyses, and the
//! Promote button taking it past its gate to promotion, into its history.

use std::time::Duration;

use ferry_testkit::{
    browser::Browser,
    client,
    process::{bin, ControlProc, ProxyProc},
    server::{full, TestServer},
};
use http::Response;

use crate::{get_json, shot, WAIT};

#[tokio::test]
async fn the_rollouts_pages_show_a_rollout_and_promote_it_past_its_gate() {
    let v1 = TestServer::http(|_req| async { Response::new(full("v1")) }).await;
    let v2 = TestServer::http(|_req| async { Response::new(full("v2")) }).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("workloads.yaml");
    let workloads = |client: Option<std::net::SocketAddr>| {
        let mut y = format!(
            "namespaces: [shop]\nworkloads:\n  - {{name: web-v1, namespace: shop, instances: [{{name: v1-0, addr: \"{}\"}}]}}\n  - {{name: web-v2, namespace: shop, instances: [{{name: v2-0, addr: \"{}\"}}]}}\n",
            v1.addr, v2.addr
        );
        if let Some(admin) = client {
            y.push_str(&format!("  - {{name: client, namespace: shop, instances: [{{name: client-0, addr: \"127.0.0.1:9\", adminAddr: \"{admin}\"}}]}}\n"));
        }
        y.push_str("services:\n  - {name: web, namespace: shop, port: 8080, workloads: [web-v1]}\n  - {name: web-v1, namespace: shop, port: 8080, workloads: [web-v1]}\n  - {name: web-v2, namespace: shop, port: 8080, workloads: [web-v2]}\n");
        y
    };
    std::fs::write(&file, workloads(None)).unwrap();
    let rollouts = dir.path().join("rollouts.yaml");
    std::fs::write(
        &rollouts,
        "apiVersion: ferry.io/v1alpha1\nkind: Rollout\nmetadata: {name: web, namespace: shop}\nspec:\n  service: {name: web, port: 8080}\n  stable: {name: web-v1}\n  canary: {name: web-v2}\n  steps:\n  - weight: 30\n    bake: 2s\n  - pause: {}\n  analysis:\n    interval: 2s\n    minRequests: 3\n    successRate: {min: 95}\n    latencyP99: {maxMs: 1000}\n",
    )
    .unwrap();
    let rollouts = rollouts.to_str().unwrap().to_string();
    let control = ControlProc::spawn(&file, &["--scrape-interval", "1s", "--rollouts", &rollouts])
        .await
        .unwrap();
    let grpc = control.grpc.to_string();
    let proxy = ProxyProc::spawn(
        bin("ferry-proxy"),
        &[
            "--upstream",
            "127.0.0.1:0=web.shop:8080",
            "--destination-addr",
            &grpc,
        ],
    )
    .await
    .unwrap();
    std::fs::write(&file, workloads(Some(proxy.admin()))).unwrap();
    let url = format!("http://{}/", proxy.upstream("web.shop:8080"));
    let _traffic = tokio::spawn(async move {
        let http = client::http1();
        loop {
            let req = http::Request::get(url.as_str())
                .body(Default::default())
                .unwrap();
            let _ = client::send(&http, req).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let api = format!("http://{}", control.api);

    let browser = Browser::start(1366, 1000).await.unwrap();
    browser.goto(&format!("{api}/#/rollouts")).await.unwrap();
    let row = browser
        .wait_for(
            "the rollout listed, waiting at its gate",
            r#"const r = document.querySelector('table.rollouts tr[data-rollout="shop/web"]');
               const p = r && r.querySelector('[data-phase]');
               return p && p.dataset.phase === 'Paused' ? r.textContent : null;"#,
            WAIT,
        )
        .await
        .unwrap();
    assert!(
        row.as_str().unwrap().contains("1/2") && row.as_str().unwrap().contains("30% canary"),
        "{row}"
    );
    shot(&browser, "8-rollouts").await;

    let link = browser
        .find("table.rollouts tr[data-rollout='shop/web'] a")
        .await
        .unwrap();
    browser.click(&link).await.unwrap();
    let page = browser
        .wait_for(
            "the rollout's page: charts, timeline and a passed analysis",
            r#"const charts = document.querySelectorAll('#rollout-charts svg.chart').length;
               const canary = document.querySelectorAll('#rollout-charts path.s-canary').length;
               const floor = document.querySelectorAll('#rollout-charts path.s-threshold').length;
               const current = document.querySelector('#rollout-steps li.current');
               const passed = [...document.querySelectorAll('#rollout-analyses td')].some((td) => td.textContent === 'Passed');
               return charts === 3 && canary >= 1 && floor === 2 && current && passed ? [current.dataset.step, document.querySelector('#rollout-reason').textContent] : null;"#,
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(page[0], "1", "{page}");
    assert!(
        page[1].as_str().unwrap().contains("waiting until promoted"),
        "{page}"
    );
    shot(&browser, "9-rollout").await;

    let promote = browser.find("#rollout-promote").await.unwrap();
    browser.click(&promote).await.unwrap();
    browser
        .wait_for(
            "promoted, and in the history",
            r#"const p = document.querySelector('#rollout-head [data-phase]');
               return p && p.dataset.phase === 'Promoted' && document.querySelector('#rollout-history tr[data-outcome="Promoted"]') !== null;"#,
            WAIT,
        )
        .await
        .unwrap();
    let view = get_json(&format!("{api}/api/v1/rollouts/shop/web"))
        .await
        .unwrap();
    assert_eq!(view["status"]["phase"], "Promoted");
    assert_eq!(view["traffic"]["canaryWeight"], 100);
    shot(&browser, "10-rollout-promoted").await;
}
