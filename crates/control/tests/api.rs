//! The public HTTP/JSON API, driven in memory; and the proxy-injector webhook over HTTPS.

#[path = "support/fixture.rs"]
mod fixture;
#[path = "api/injector.rs"]
mod injector;
#[path = "support/webhook.rs"]
mod webhook;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ferry_api::control_api::{ApiError, Endpoints, Health, ENDPOINTS_PATH, HEALTH_PATH};
use ferry_control::api::app;
use ferry_control::discovery::StaticDiscovery;
use ferry_control::workloads_file;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use tower::ServiceExt;

fn discovery() -> StaticDiscovery {
    let text = fixture::echo(&[("echo-0", 17101), ("echo-1", 17102)]);
    StaticDiscovery::new(workloads_file::parse(&text).unwrap())
}

async fn call<T: DeserializeOwned>(uri: &str) -> (StatusCode, T) {
    let req = Request::get(uri).body(Body::empty()).unwrap();
    let rsp = app(discovery()).oneshot(req).await.unwrap();
    let status = rsp.status();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    let parsed = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{uri}: {e}: {}", String::from_utf8_lossy(&body)));
    (status, parsed)
}

#[tokio::test]
async fn health_says_ok() {
    let (status, health): (_, Health) = call(HEALTH_PATH).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health.status, "ok");
    assert_eq!(health.version, ferry_api::version::VERSION);
    assert_eq!(health.git_sha.as_deref(), Some(ferry_api::version::GIT_SHA));
}

#[tokio::test]
async fn endpoints_answer_what_get_would() {
    let (status, body): (_, Endpoints) =
        call(&format!("{ENDPOINTS_PATH}?authority=echo.default:8080")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.exists);
    assert_eq!(
        body.fully_qualified_name.as_deref(),
        Some("echo.default.svc.cluster.local")
    );
    assert_eq!(body.metric_labels["service"], "echo");
    let addrs: Vec<String> = body.endpoints.iter().map(|e| e.addr.to_string()).collect();
    assert_eq!(addrs, ["127.0.0.1:17101", "127.0.0.1:17102"]);
    assert_eq!(body.endpoints[0].metric_labels["pod"], "echo-0");
    assert_eq!(
        body.endpoints[0].tls_identity.as_deref(),
        Some("echo.default.serviceaccount.identity.ferry.cluster.local")
    );

    // One-label names need the caller's namespace, as with Get.
    let uri = format!("{ENDPOINTS_PATH}?authority=echo:8080&contextToken=ns:default");
    let (_, short): (_, Endpoints) = call(&uri).await;
    assert_eq!(short.endpoints, body.endpoints);
}

#[tokio::test]
async fn unknown_names_do_not_exist() {
    let (status, body): (_, Endpoints) =
        call(&format!("{ENDPOINTS_PATH}?authority=nope.default:8080")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body.exists);
    assert!(body.endpoints.is_empty());
}

#[tokio::test]
async fn bad_queries_are_400_with_a_reason() {
    let (status, body): (_, ApiError) = call(ENDPOINTS_PATH).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.error.contains("authority"), "{}", body.error);
    let (status, body): (_, ApiError) =
        call(&format!("{ENDPOINTS_PATH}?authority=echo.default:http")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.error.contains("echo.default:http"), "{}", body.error);
}

#[tokio::test]
async fn identity_shows_the_ca_as_it_is_now() {
    use ferry_api::control_api::{CertificateInfo, IdentityInfo, IDENTITY_PATH};
    use ferry_control::api::{app_with_identity, IdentitySource};
    use std::sync::{Arc, Mutex};

    let info = |issuer: &str| IdentityInfo {
        trust_domain: "cluster.local".to_string(),
        trust_anchors_pem: String::new(),
        trust_anchors: Vec::new(),
        issuer: CertificateInfo {
            subject: issuer.to_string(),
            sha256: String::new(),
            not_after: String::new(),
        },
        certificate_lifetime_seconds: 60,
    };
    let current = Arc::new(Mutex::new(info("CN=first")));
    let source = {
        let current = current.clone();
        IdentitySource::new(move || current.lock().unwrap().clone())
    };
    let app = app_with_identity(discovery(), source);
    let get = |app: axum::Router| async move {
        let req = Request::get(IDENTITY_PATH).body(Body::empty()).unwrap();
        let rsp = app.oneshot(req).await.unwrap();
        assert_eq!(rsp.status(), StatusCode::OK);
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice::<IdentityInfo>(&body).unwrap()
    };
    assert_eq!(get(app.clone()).await.issuer.subject, "CN=first");
    // The issuer was reloaded: the same running API shows the new one.
    *current.lock().unwrap() = info("CN=second");
    assert_eq!(get(app).await.issuer.subject, "CN=second");
}
