//! The tap relay's route, driven in memory: what it refuses before streaming (unknown
//! resources, nothing tappable, bad parameters) and how an unreachable proxy is reported
//! inside the stream. Relaying real proxies is tested end to end in `ferry-testkit`.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use ferry_api::control_api::ApiError;
use ferry_api::tap::TAP_PATH;
use ferry_control::api::app;
use ferry_control::discovery::StaticDiscovery;
use ferry_control::workloads_file;
use http_body_util::BodyExt;
use tower::ServiceExt;

/// `web` has a proxy whose tap port refuses connections; `db` has none at all.
fn discovery() -> StaticDiscovery {
    let text = r#"
workloads:
  - name: web
    namespace: shop
    instances:
      - { name: web-0, addr: "127.0.0.1:17101", tapAddr: "127.0.0.1:9" }
  - name: db
    namespace: shop
    instances:
      - { name: db-0, addr: "127.0.0.1:17102" }
services:
  - { name: web, namespace: shop, port: 80, workloads: [web] }
"#;
    StaticDiscovery::new(workloads_file::parse(text).unwrap())
}

async fn get(query: &str) -> axum::response::Response {
    let req = Request::get(format!("{TAP_PATH}?{query}"))
        .body(Body::empty())
        .unwrap();
    app(discovery()).oneshot(req).await.unwrap()
}

async fn refused(query: &str) -> (StatusCode, String) {
    let rsp = get(query).await;
    let status = rsp.status();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    let err: ApiError = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{query}: {e}: {}", String::from_utf8_lossy(&body)));
    (status, err.error)
}

#[tokio::test]
async fn refusals_are_json_with_the_reason() {
    let cases = [
        ("resource=deploy/nope&namespace=shop", StatusCode::NOT_FOUND, "deployment/nope not found in namespace shop"),
        ("resource=deploy/web", StatusCode::NOT_FOUND, "deployment/web not found in namespace default"),
        ("resource=ns/elsewhere", StatusCode::NOT_FOUND, "namespace elsewhere not found"),
        ("resource=deploy/db&namespace=shop", StatusCode::CONFLICT, "cannot tap deployment/db in namespace shop: none of its 1 instance(s) is meshed with a tap address"),
        ("resource=bogus/x", StatusCode::BAD_REQUEST, "unknown resource kind \"bogus\""),
        ("resource=", StatusCode::BAD_REQUEST, "missing query parameter `resource`"),
        ("resource=deploy/web&namespace=shop&maxRps=-1", StatusCode::BAD_REQUEST, "invalid maxRps -1"),
        ("resource=deploy/web&namespace=shop&maxRps=lots", StatusCode::BAD_REQUEST, "maxRps"),
        ("resource=deploy/web&namespace=shop&to=svc/nope", StatusCode::NOT_FOUND, "service/nope not found in namespace shop"),
    ];
    for (query, status, want) in cases {
        let (got, error) = refused(query).await;
        assert_eq!(got, status, "{query}: {error}");
        assert!(error.contains(want), "{query}: {error}");
    }
}

#[tokio::test]
async fn an_unreachable_proxy_is_an_error_event_and_the_stream_ends() {
    let rsp = get("resource=svc/web&namespace=shop").await;
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(rsp.headers()[header::CONTENT_TYPE], "text/event-stream");
    let body = tokio::time::timeout(Duration::from_secs(10), rsp.into_body().collect())
        .await
        .expect("the stream ends once its only proxy failed")
        .unwrap()
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(text.starts_with(": tapping shop/web-0\n"), "{text}");
    let error = text
        .split("\n\n")
        .find(|block| block.starts_with("event: tap-error\n"))
        .unwrap_or_else(|| panic!("no tap-error event: {text}"));
    let data = error.strip_prefix("event: tap-error\ndata: ").unwrap();
    let err: ApiError = serde_json::from_str(data).unwrap();
    assert!(
        err.error.starts_with("tapping shop/web-0 at 127.0.0.1:9: "),
        "{}",
        err.error
    );
}
