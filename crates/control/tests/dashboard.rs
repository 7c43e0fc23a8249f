//! The dashboard's page and routes, driven in memory: the embedded assets, the overview's
//! counts from discovery, and the proxies and checks as a proxy's admin server answers.

use std::net::SocketAddr;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use ferry_api::check::{CheckReport, CHECK_PATH};
use ferry_api::overview::{Overview, Proxies, OVERVIEW_PATH, PROXIES_PATH};
use ferry_control::api::app;
use ferry_control::discovery::StaticDiscovery;
use ferry_control::workloads_file;
use http_body_util::BodyExt;
use tower::ServiceExt;

/// `web` (meshed, its proxy's admin at `admin`), `emoji` (meshed, admin refusing), `legacy`
/// (not meshed) in `emojivoto`, and an empty namespace.
fn discovery(admin: SocketAddr, dead: SocketAddr) -> StaticDiscovery {
    let text = format!(
        r#"
namespaces: [emojivoto, empty]
workloads:
  - name: web
    namespace: emojivoto
    serviceAccount: web
    instances:
      - {{ name: web-0, addr: "127.0.0.1:17201", adminAddr: "{admin}" }}
  - name: emoji
    namespace: emojivoto
    serviceAccount: emoji
    instances:
      - {{ name: emoji-0, addr: "127.0.0.1:17202", adminAddr: "{dead}" }}
  - name: legacy
    namespace: emojivoto
    meshed: false
    instances:
      - {{ name: legacy-0, addr: "127.0.0.1:17203" }}
"#
    );
    StaticDiscovery::new(workloads_file::parse(&text).unwrap())
}

async fn call(d: &StaticDiscovery, uri: &str) -> (StatusCode, String, Vec<u8>) {
    let req = Request::get(uri).body(Body::empty()).unwrap();
    let rsp = app(d.clone()).oneshot(req).await.unwrap();
    let status = rsp.status();
    let ct = rsp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = rsp.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, ct, body)
}

/// A fake proxy admin server answering `/ready` and `/state` like ferry-proxy's.
async fn admin(version: &'static str) -> SocketAddr {
    let router = axum::Router::new()
        .route("/ready", get(|| async { "ready\n" }))
        .route(
            "/state",
            get(move || async move {
                axum::Json(serde_json::json!({
                    "version": version,
                    "uptime_seconds": 12,
                    "destinations": [{"name": "emoji.emojivoto.svc.cluster.local:8080", "state": "endpoints",
                                      "endpoints": [{"addr": "127.0.0.1:17202"}]}],
                }))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// An address nothing listens on.
fn dead() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[tokio::test]
async fn the_page_and_its_assets_are_embedded() {
    let d = discovery(dead(), dead());
    let (status, ct, body) = call(&d, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(ct.starts_with("text/html"), "{ct}");
    let html = String::from_utf8(body).unwrap();
    for asset in ["app.js", "charts.js", "pages.js", "diag.js", "style.css"] {
        let path = format!("/dashboard/{asset}");
        assert!(html.contains(&path), "index.html does not load {path}");
        let (status, ct, body) = call(&d, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let want = if asset.ends_with(".js") {
            "text/javascript"
        } else {
            "text/css"
        };
        assert!(ct.starts_with(want), "{path}: {ct}");
        // Works with no internet: nothing is loaded from elsewhere (the SVG namespace is a
        // name, not a fetch).
        let text = String::from_utf8(body)
            .unwrap()
            .replace("http://www.w3.org/2000/svg", "");
        assert!(
            !text.contains("http://") && !text.contains("https://"),
            "{path} refers to the network"
        );
    }
}

#[tokio::test]
async fn overview_counts_meshed_workloads_and_ready_proxies() {
    let d = discovery(admin(env!("CARGO_PKG_VERSION")).await, dead());
    let (status, _, body) = call(&d, OVERVIEW_PATH).await;
    assert_eq!(status, StatusCode::OK);
    let ov: Overview = serde_json::from_slice(&body).unwrap();
    assert_eq!(ov.status, "ok");
    assert_eq!(ov.version, env!("CARGO_PKG_VERSION"));
    assert_eq!((ov.proxies_known, ov.proxies_ready), (2, 1));
    let ns: Vec<(&str, usize, usize)> = ov
        .namespaces
        .iter()
        .map(|n| (n.name.as_str(), n.workloads, n.meshed))
        .collect();
    assert_eq!(ns, [("emojivoto", 3, 2), ("empty", 0, 0)]);
    let identity = ov.components.iter().find(|c| c.name == "identity").unwrap();
    assert_eq!(identity.status, "off");
    assert_eq!(ov.workloads.len(), 3);
}

#[tokio::test]
async fn proxies_carry_their_state_or_the_reason_they_could_not_be_read() {
    let (up, down) = (admin(env!("CARGO_PKG_VERSION")).await, dead());
    let d = discovery(up, down);
    let (status, _, body) = call(&d, &format!("{PROXIES_PATH}?namespace=emojivoto")).await;
    assert_eq!(status, StatusCode::OK);
    let Proxies { proxies } = serde_json::from_slice(&body).unwrap();
    let pods: Vec<&str> = proxies.iter().map(|p| p.pod.as_str()).collect();
    assert_eq!(pods, ["emoji-0", "legacy-0", "web-0"]);
    let web = &proxies[2];
    assert!(web.ready);
    assert_eq!(
        web.identity.as_deref(),
        Some("web.emojivoto.serviceaccount.identity.ferry.cluster.local")
    );
    assert_eq!(
        web.state.as_ref().unwrap()["destinations"][0]["state"],
        "endpoints"
    );
    let emoji = &proxies[0];
    assert!(!emoji.ready);
    let error = emoji.error.as_deref().unwrap();
    assert!(error.contains(&down.to_string()), "{error}");
    let legacy = &proxies[1];
    assert!(!legacy.meshed && legacy.identity.is_none());
    assert_eq!(legacy.error.as_deref(), Some("no adminAddr in discovery"));

    let (_, _, body) = call(&d, &format!("{PROXIES_PATH}?namespace=empty")).await;
    let Proxies { proxies } = serde_json::from_slice(&body).unwrap();
    assert!(proxies.is_empty());
}

#[tokio::test]
async fn checks_name_the_proxy_that_is_down_and_the_one_that_is_old() {
    let d = discovery(admin("0.0.1").await, dead());
    let (status, _, body) = call(&d, CHECK_PATH).await;
    assert_eq!(status, StatusCode::OK);
    let report: CheckReport = serde_json::from_slice(&body).unwrap();
    assert_eq!(report.planned, 4);
    let line = |name: &str| report.checks.iter().find(|c| c.name == name).unwrap();
    assert!(line(ferry_api::check::API_ANSWERS).ok);
    assert!(line(ferry_api::check::RUNS_THIS_VERSION).ok);
    let ready = line(ferry_api::check::PROXIES_READY);
    assert!(!ready.ok);
    assert!(
        ready
            .text
            .starts_with("1 of 2 not ready: emojivoto/emoji-0"),
        "{}",
        ready.text
    );
    let version = line(ferry_api::check::PROXIES_VERSION);
    assert!(!version.ok);
    assert_eq!(
        version.text,
        "1 of 1 proxies run another version: emojivoto/web-0 (0.0.1)"
    );
    assert!(version.hint.is_some());
}
