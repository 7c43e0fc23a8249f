//! Authorization end to end (issue #23): the control plane reads `Server`,
//! `MeshTLSAuthentication` and `AuthorizationPolicy` documents beside the routes, serves them
//! as inbound policy, and the server proxy enforces them on real mTLS identities. `ferry tap`
//! marks the denials as the proxy's (`proxy-error=unauthorized`), not the allowed requests.
//! An edit applies to new requests within a second; the control plane killed, the last
//! policy holds.

use std::time::{Duration, Instant};

use ferry_testkit::{
    client,
    process::{bin, Proc, ProxyProc},
    wait_until,
};
use http::StatusCode;

use super::fixture::*;

/// `echo`'s port `port` admits the listed service accounts only.
fn policy(port: u16, accounts: &[&str]) -> String {
    let refs: Vec<String> = accounts
        .iter()
        .map(|sa| format!("{{kind: ServiceAccount, name: {sa}}}"))
        .collect();
    format!(
        "\
apiVersion: policy.ferry.io/v1alpha1
kind: Server
metadata: {{name: echo-http}}
spec:
  podSelector: {{matchLabels: {{app: echo}}}}
  port: {port}
  accessPolicy: deny
---
apiVersion: policy.ferry.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {{name: callers}}
spec:
  identityRefs: [{}]
---
apiVersion: policy.ferry.io/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: callers-to-echo}}
spec:
  targetRef: {{group: policy.ferry.io, kind: Server, name: echo-http}}
  requiredAuthenticationRefs:
  - {{group: policy.ferry.io, kind: MeshTLSAuthentication, name: callers}}
",
        refs.join(", ")
    )
}

async fn status(url: &str) -> (StatusCode, String) {
    let r = client::get(url).await.unwrap();
    let reason = r
        .headers
        .get("ferry-proxy-error")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (r.status, reason)
}

#[tokio::test]
async fn identities_are_allowed_and_denied_by_policy_and_edits_apply_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("policy.yaml");
    let app = app().await;
    std::fs::write(&routes, policy(app.addr.port(), &["client"])).unwrap();
    let routes_arg = routes.display().to_string();
    let mesh = Mesh::start_with("1h", &["--routes", &routes_arg]).await;
    let bot_token = mesh.token("bot");
    wait_until(WAIT, "bot's token", || {
        let exists = bot_token.exists();
        async move { exists.then_some(()) }
    })
    .await
    .unwrap();
    let grpc = mesh.grpc.to_string();
    let server = server_proxy(
        &mesh,
        "echo",
        &app,
        &[
            "--destination-addr",
            &grpc,
            "--pod-namespace",
            "default",
            "--pod-name",
            "echo-0",
        ],
    )
    .await;
    mesh.set_echo_tapped(&server).await;
    let web = client_proxy(&mesh, mesh.grpc, &[]).await;
    let bot = client_proxy_as(&mesh, "bot", mesh.grpc, &[]).await;
    for p in [&server, &web, &bot] {
        ready(p).await;
    }

    // `client` is admitted, `bot` is refused with the proxy's reason.
    first_ok(&web).await;
    let denied = wait_until(WAIT, "bot refused", || async {
        let (code, reason) = status(&echo_url(&bot)).await;
        (code == StatusCode::FORBIDDEN).then_some(reason)
    })
    .await
    .unwrap();
    assert_eq!(denied, "unauthorized");
    for _ in 0..5 {
        assert_eq!(status(&echo_url(&web)).await.0, StatusCode::OK);
        assert_eq!(status(&echo_url(&bot)).await.0, StatusCode::FORBIDDEN);
    }
    let metrics = admin(&server, "/metrics").await;
    let denials = ferry_testkit::metric_sum(
        &metrics,
        "inbound_http_authz_deny_total",
        &[("srv_name", "echo-http")],
    );
    assert!(denials >= 6.0, "{denials} denials counted:\n{metrics}");

    // `ferry tap` tells the proxy's denial from the application's answer.
    tap_marks_the_denial(&mesh, &server, &web, &bot).await;

    // An edit that admits `bot` and drops `client` applies within a second of being read.
    let edited = Instant::now();
    std::fs::write(&routes, policy(app.addr.port(), &["bot"])).unwrap();
    wait_until(WAIT, "bot admitted", || async {
        (status(&echo_url(&bot)).await.0 == StatusCode::OK).then_some(())
    })
    .await
    .unwrap();
    let took = edited.elapsed();
    // The control plane polls the file every 100 ms; the rest is the push and the proxy.
    assert!(took < Duration::from_millis(1500), "applied after {took:?}");
    assert_eq!(status(&echo_url(&web)).await.0, StatusCode::FORBIDDEN);

    // Without the control plane, the proxy keeps enforcing what it last had.
    drop(mesh);
    for _ in 0..3 {
        assert_eq!(status(&echo_url(&bot)).await.0, StatusCode::OK);
        assert_eq!(status(&echo_url(&web)).await.0, StatusCode::FORBIDDEN);
    }
}

/// Taps `echo` with `ferry tap -o wide` while `web` (admitted) and `bot` (denied) each send
/// a request: bot's `rsp` and `end` lines end in `proxy-error=unauthorized`, web's have none.
async fn tap_marks_the_denial(mesh: &Mesh, server: &ProxyProc, web: &ProxyProc, bot: &ProxyProc) {
    let api = format!("http://{}", mesh.api);
    let args = ["tap", "deploy/echo", "-o", "wide", "--api-addr", &api];
    let tap = Proc::spawn(bin("ferry"), &args, &[]).unwrap();
    wait_until(WAIT, "the tap to reach echo's proxy", || async {
        (state(server).await["tap"]["active"] == 1).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(status(&echo_url(web)).await.0, StatusCode::OK);
    assert_eq!(status(&echo_url(bot)).await.0, StatusCode::FORBIDDEN);
    // Each caller's `rsp` and `end` lines, by the service account its identity names.
    let lines = |sa: &'static str| {
        let lines: Vec<String> = tap
            .logs()
            .into_iter()
            .filter(|l| l.contains(&format!(" src_serviceaccount={sa} ")))
            .filter(|l| l.starts_with("rsp ") || l.starts_with("end "))
            .collect();
        async move { (lines.len() >= 2).then_some(lines) }
    };
    let denied = wait_until(WAIT, "bot's rsp and end lines", || lines("bot"))
        .await
        .unwrap();
    for line in &denied {
        assert!(line.contains(" proxy-error=unauthorized "), "{line}");
    }
    assert!(
        denied.iter().any(|l| l.contains(":status=403")),
        "{denied:?}"
    );
    let allowed = wait_until(WAIT, "client's rsp and end lines", || lines("client"))
        .await
        .unwrap();
    for line in &allowed {
        assert!(!line.contains("proxy-error"), "{line}");
    }
    assert!(
        allowed.iter().any(|l| l.contains(":status=200")),
        "{allowed:?}"
    );
    drop(tap);
    wait_until(WAIT, "the tap to end", || async {
        (state(server).await["tap"]["active"] == 0).then_some(())
    })
    .await
    .unwrap();
}
