//! The tap page marks the responses a proxy made itself. `voting`'s proxy denies every
//! request (`--default-inbound-policy deny`, with no control plane to say otherwise) and
//! `emoji`'s app answers 403 on its own: both rows read 403, only voting's says "denied by
//! policy: unauthorized".

use std::time::Duration;

use ferry_testkit::{
    browser::Browser,
    client,
    process::{bin, ControlProc, ProxyProc},
    server::{full, TestServer},
};
use http::{Response, StatusCode};

use crate::{shot, WAIT};

#[tokio::test]
async fn the_tap_page_marks_policy_denials_apart_from_the_apps_403() {
    let app = TestServer::http(|_req| async {
        let mut rsp = Response::new(full("forbidden by the app"));
        *rsp.status_mut() = StatusCode::FORBIDDEN;
        rsp
    })
    .await;
    let target = app.addr.to_string();
    let voting = ProxyProc::spawn(
        bin("ferry-proxy"),
        &[
            "--inbound-forward",
            &target,
            "--default-inbound-policy",
            "deny",
        ],
    )
    .await
    .unwrap();
    let emoji = ProxyProc::spawn(bin("ferry-proxy"), &["--inbound-forward", &target])
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("workloads.yaml");
    let mut workloads = String::from("namespaces: [shop]\nworkloads:\n");
    for (name, p) in [("voting", &voting), ("emoji", &emoji)] {
        workloads.push_str(&format!(
            "  - {{name: {name}, namespace: shop, instances: [{{name: {name}-0, addr: \"{}\", adminAddr: \"{}\", tapAddr: \"{}\"}}]}}\n",
            p.inbound(),
            p.admin(),
            p.tap()
        ));
    }
    std::fs::write(&file, workloads).unwrap();
    let control = ControlProc::spawn(&file, &[]).await.unwrap();
    let api = format!("http://{}", control.api);

    let urls = [voting.inbound(), emoji.inbound()].map(|a| format!("http://{a}/vote"));
    let _traffic = tokio::spawn(async move {
        loop {
            for url in &urls {
                let _ = client::get(url).await;
            }
            // Pacing, not waiting: a few requests a second keep the page's rows coming.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });

    let browser = Browser::start(1366, 900).await.unwrap();
    browser
        .goto(&format!("{api}/#/tap?resource=ns/shop&namespace=shop"))
        .await
        .unwrap();
    // [pod, status cell, data-proxy-error, class] of a voting row with its response and an
    // emoji row with its response.
    let seen = browser
        .wait_for(
            "a denied voting row and an answered emoji row",
            r#"const rows = [...document.querySelectorAll('#tap-rows tr.tap-row')].map((tr) =>
                 [tr.children[2].textContent, tr.children[7].textContent, tr.dataset.proxyError || '', tr.className]);
               const voting = rows.find((r) => r[0] === 'voting-0' && r[2]);
               const emoji = rows.find((r) => r[0] === 'emoji-0' && r[1] !== '…');
               const marked = rows.filter((r) => r[0] === 'emoji-0' && r[2]);
               return voting && emoji ? [voting, emoji, marked.length] : null;"#,
            WAIT,
        )
        .await
        .unwrap();
    eprintln!("tap rows: {seen}");
    let (voting_row, emoji_row) = (&seen[0], &seen[1]);
    assert_eq!(
        voting_row[1], "403 denied by policy: unauthorized",
        "{seen}"
    );
    assert_eq!(voting_row[2], "unauthorized", "{seen}");
    assert!(voting_row[3].as_str().unwrap().contains("denied"), "{seen}");
    assert_eq!(
        emoji_row[1], "403",
        "the app's own 403 is not marked: {seen}"
    );
    assert_eq!(seen[2], 0, "no emoji row is marked: {seen}");
    shot(&browser, "tap-denied").await;
}
