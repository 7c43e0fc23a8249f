//! Identity on Kubernetes: tokens checked with TokenReview against the fake API server,
//! which answers with the recorded reviews (by token and audience).

use std::time::Duration;

use ferry_api::identity::dns_name;
use ferry_api::k8s::IDENTITY_TOKEN_AUDIENCE;
use ferry_control::discovery::kubernetes::{client, KubeSource};
use ferry_control::discovery::StaticDiscovery;
use ferry_control::identity::tokenreview::TokenReviewer;
use ferry_control::identity::tokens::{TokenError, TokenValidator};
use ferry_control::identity::{Identity, IdentityConfig};
use ferry_control::model::{ClusterState, ObjectRef};
use ferry_testkit::kube_api::{fixture, fixtures_dir, FakeKubeApi};
use linkerd2_proxy_api::identity::identity_client::IdentityClient;
use serde_json::json;
use tonic::Code;

use crate::ca::{csr, request, LIMIT};
use crate::fixture::within;

fn token(file: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(fixtures_dir().join("authn").join(file)).unwrap();
    text.trim().as_bytes().to_vec()
}

async fn reviewer(api: &FakeKubeApi) -> TokenReviewer {
    let source = KubeSource {
        kubeconfig: Some(api.kubeconfig().to_path_buf()),
        context: None,
    };
    TokenReviewer::new(client(&source).await.expect("client"))
}

async fn validate(reviewer: &TokenReviewer, token: &[u8]) -> Result<ObjectRef, TokenError> {
    within(LIMIT, "a TokenReview", reviewer.validate(token)).await
}

#[tokio::test]
async fn tokenreview_allows_denies_and_checks_the_audience() {
    let api = FakeKubeApi::emojivoto().await;
    let reviewer = reviewer(&api).await;
    let web = token("token-web.jwt");
    assert_eq!(
        validate(&reviewer, &web).await.unwrap(),
        ObjectRef::new("emojivoto", "web")
    );
    assert_eq!(
        api.requests("POST /apis/authentication.k8s.io/v1/tokenreviews"),
        1
    );

    let garbage = validate(&reviewer, b"not-a-jwt-garbage-token")
        .await
        .unwrap_err();
    assert!(
        matches!(garbage, TokenError::Refused(ref r) if r == "invalid bearer token"),
        "{garbage:?}"
    );

    // A token minted for another audience: the API server refuses it for ours.
    let other = "eyJother.audience.token";
    let mut refused = fixture("authn/tokenreview-wrong-audience.response.json");
    refused["spec"]["token"] = json!(other);
    api.answer_token_review(other, &[IDENTITY_TOKEN_AUDIENCE], refused);
    let error = validate(&reviewer, other.as_bytes()).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("is invalid for the target audiences"),
        "{error}"
    );
    // An answer that does not echo our audience proves nothing either.
    let mut unechoed = fixture("authn/tokenreview-valid.response.json");
    unechoed["status"]["audiences"] = json!(["https://kubernetes.default.svc.cluster.local"]);
    api.answer_token_review(other, &[IDENTITY_TOKEN_AUDIENCE], unechoed);
    let error = validate(&reviewer, other.as_bytes()).await.unwrap_err();
    assert!(matches!(error, TokenError::Audience { .. }), "{error:?}");
}

#[tokio::test]
async fn an_unreachable_api_server_is_not_a_verdict() {
    let api = FakeKubeApi::emojivoto().await;
    let reviewer = reviewer(&api).await;
    // Stopped for longer than the review waits: the review cannot be made.
    let restart = api.restart(Duration::from_secs(3));
    let review = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        validate(&reviewer, &token("token-web.jwt")).await
    };
    let ((), result) = tokio::join!(restart, review);
    assert!(matches!(result, Err(TokenError::Review(_))), "{result:?}");
}

#[tokio::test]
async fn a_pod_bound_token_dies_with_its_pod() {
    let api = FakeKubeApi::emojivoto().await;
    let reviewer = reviewer(&api).await;
    let bound = token("token-web-pod-bound.jwt");
    assert_eq!(
        validate(&reviewer, &bound).await.unwrap(),
        ObjectRef::new("emojivoto", "web")
    );
    assert!(api.delete("Pod", "emojivoto", "web-6fcf748b99-4pd44"));
    let error = validate(&reviewer, &bound).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("service account token has been invalidated"),
        "{error}"
    );
}

#[tokio::test]
async fn certify_issues_only_for_the_reviewed_service_account() {
    let api = FakeKubeApi::emojivoto().await;
    let dir = tempfile::tempdir().unwrap();
    let trust_domain = "cluster.local";
    let identity = Identity::load(&IdentityConfig::in_dir(dir.path()), trust_domain)
        .unwrap()
        .with_token_review(reviewer(&api).await);
    assert!(!identity.uses_local_tokens());
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = grpc.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ferry_control::serve_with_identity(
        grpc,
        api_listener,
        StaticDiscovery::new(ClusterState::default()),
        Some(identity),
        Duration::from_millis(200),
        async {
            let _ = stopped.await;
        },
    ));
    let mut client = within(
        LIMIT,
        "connect",
        IdentityClient::connect(format!("http://{addr}")),
    )
    .await
    .unwrap();
    let web = dns_name("web", "emojivoto", trust_domain);
    let (_, der) = csr(&[&web]);
    let issued = within(
        LIMIT,
        "Certify",
        client.certify(request(&web, token("token-web.jwt"), der)),
    )
    .await
    .expect("web's token certifies web");
    assert!(!issued.into_inner().leaf_certificate.is_empty());

    let voting = dns_name("voting", "emojivoto", trust_domain);
    let (_, der) = csr(&[&voting]);
    let status = within(
        LIMIT,
        "Certify",
        client.certify(request(&voting, token("token-web.jwt"), der)),
    )
    .await
    .expect_err("web's token never certifies voting");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    let (_, der) = csr(&[&web]);
    let garbage = b"not-a-jwt-garbage-token".to_vec();
    let status = within(
        LIMIT,
        "Certify",
        client.certify(request(&web, garbage, der)),
    )
    .await
    .expect_err("garbage refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("invalid bearer token"),
        "{}",
        status.message()
    );
    // No local token was written in TokenReview mode.
    assert!(!dir.path().join("tokens").exists());
    let _ = stop.send(());
    within(LIMIT, "shutdown", server).await.unwrap().unwrap();
}

/// What a TokenReview of a person's token (no audience: the API server's own) answers,
/// shaped as the recorded `tokenreview-valid.response.json` is.
fn user_review(user: &str) -> serde_json::Value {
    json!({
        "kind": "TokenReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {},
        "spec": {},
        "status": {
            "authenticated": true,
            "user": {"username": user, "groups": ["system:authenticated"]},
            "audiences": ["https://kubernetes.default.svc.cluster.local"]
        }
    })
}

#[tokio::test]
async fn an_exposed_api_checks_callers_with_tokenreview_and_subjectaccessreview() {
    use ferry_control::api::auth::{protect, ApiAuth, KubeReviews};
    use ferry_control::limits::ApiLimits;

    let api = FakeKubeApi::emojivoto().await;
    api.answer_token_review_default_audience("alice-token", user_review("alice"));
    api.answer_token_review_default_audience("bob-token", user_review("bob"));
    api.grant("alice", "api", "get");
    api.grant("alice", "tap", "watch");
    api.grant("bob", "api", "get");
    let source = KubeSource {
        kubeconfig: Some(api.kubeconfig().to_path_buf()),
        context: None,
    };
    let reviews = KubeReviews::new(client(&source).await.expect("client"));
    let app = protect(
        ferry_control::api::app(StaticDiscovery::new(ClusterState::default())),
        ApiAuth::Kubernetes(Box::new(reviews)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn({
        let stop = stop.clone();
        async move {
            let limits = ApiLimits::default();
            ferry_control::api::server::serve(listener, app, &limits, stop.cancelled_owned()).await
        }
    });
    let http = ferry_testkit::client::http1();
    let ask = |path: &str, token: Option<&str>| {
        let mut req = http::Request::get(format!("http://{addr}{path}"));
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let req = req.body(http_body_util::Full::default()).unwrap();
        let http = http.clone();
        async move {
            let reply = ferry_testkit::client::send(&http, req).await.unwrap();
            (reply.status.as_u16(), reply.text())
        }
    };
    let health = "/api/v1/health";
    // No query: past the credential check, the relay refuses it at once (no stream).
    let tap = "/api/v1/tap";

    let (status, text) = ask(health, None).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("Authorization: Bearer"), "{text}");
    // A token the API server does not know: its reason.
    let (status, text) = ask(health, Some("garbage")).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("invalid bearer token"), "{text}");
    // A proxy's identity token is bound to the identity audience: it is no API credential
    // (the recorded review for it without an audience says so).
    let web = String::from_utf8(token("token-web.jwt")).unwrap();
    let (status, text) = ask(health, Some(&web)).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("audiences"), "{text}");

    // RBAC decides: bob may read but not tap, alice may do both.
    let (status, text) = ask(health, Some("bob-token")).await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = ask(tap, Some("bob-token")).await;
    assert_eq!(status, 403, "{text}");
    assert!(
        text.contains("bob may not watch tap.api.ferry.io") && text.contains("ferry-tap-"),
        "{text}"
    );
    let (status, text) = ask(health, Some("alice-token")).await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = ask(tap, Some("alice-token")).await;
    assert!(status != 401 && status != 403, "{status} {text}");

    // Answers are cached briefly: asking again reviews nothing more.
    let reviews_before = api.requests("POST /apis/authentication.k8s.io/v1/tokenreviews");
    let access_before = api.requests("POST /apis/authorization.k8s.io/v1/subjectaccessreviews");
    for _ in 0..5 {
        assert_eq!(ask(health, Some("alice-token")).await.0, 200);
        assert_eq!(ask(tap, Some("bob-token")).await.0, 403);
    }
    assert_eq!(
        api.requests("POST /apis/authentication.k8s.io/v1/tokenreviews"),
        reviews_before
    );
    assert_eq!(
        api.requests("POST /apis/authorization.k8s.io/v1/subjectaccessreviews"),
        access_before
    );
    stop.cancel();
    within(LIMIT, "the API to stop", server)
        .await
        .unwrap()
        .unwrap();
}
