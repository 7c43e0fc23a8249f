//! The metrics API over the embedded store, driven in memory: a minute of synthetic
//! scrapes of three proxies (web calling emoji and voting, voting calling emoji), then
//! every stat question the CLI and dashboard ask, and the errors.

use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ferry_api::control_api::ApiError;
use ferry_api::stat::{EdgesAnswer, PrometheusTargetGroup, StatAnswer, StatHistory, StatRow};
use ferry_control::discovery::StaticDiscovery;
use ferry_control::metrics::{expfmt, store::Store, targets, Backend};
use ferry_control::{stat_api, workloads_file};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use tower::ServiceExt;

const WORKLOADS: &str = r#"
namespaces: [emojivoto]
workloads:
  - name: web
    namespace: emojivoto
    serviceAccount: web
    instances:
      - { name: web-0, addr: "127.0.0.1:17201", adminAddr: "127.0.0.1:17291" }
  - name: emoji
    namespace: emojivoto
    serviceAccount: emoji
    instances:
      - { name: emoji-0, addr: "127.0.0.1:17101", adminAddr: "127.0.0.1:17191" }
  - name: emoji-old
    namespace: emojivoto
    meshed: false
    instances:
      - { name: emoji-old-0, addr: "127.0.0.1:17102" }
  - name: voting
    namespace: emojivoto
    serviceAccount: voting
    instances:
      - { name: voting-0, addr: "127.0.0.1:17301", adminAddr: "127.0.0.1:17391" }
services:
  - { name: emoji, namespace: emojivoto, port: 8080, workloads: [emoji, emoji-old] }
  - { name: voting, namespace: emojivoto, port: 8080, workloads: [voting] }
"#;

const EMOJI_ID: &str = "emoji.emojivoto.serviceaccount.identity.ferry.cluster.local";

/// Outbound HTTP series to `dst` at second `i`: `ok` and `failed` responses per second,
/// every one in the 5–10 ms latency bucket.
fn outbound(dst: &str, ok: f64, failed: f64, i: f64) -> String {
    let base = format!(
        r#"direction="outbound",authority="{dst}.emojivoto:8080",tls="true",server_id="{dst}.emojivoto.serviceaccount.identity.ferry.cluster.local",dst_namespace="emojivoto",dst_service="{dst}",dst_deployment="{dst}",dst_pod="{dst}-0""#
    );
    http(&base, ok, failed, i)
}

fn http(base: &str, ok: f64, failed: f64, i: f64) -> String {
    let (ok, failed) = (ok * i, failed * i);
    let mut text = format!(
        "request_total{{{base}}} {}\n\
         response_total{{{base},status_code=\"200\",classification=\"success\"}} {ok}\n\
         response_total{{{base},status_code=\"500\",classification=\"failure\"}} {failed}\n",
        ok + failed
    );
    for (status, n) in [("200", ok), ("500", failed)] {
        for (le, v) in [("5", 0.0), ("10", n), ("20", n), ("+Inf", n)] {
            text.push_str(&format!(
                "response_latency_ms_bucket{{{base},status_code=\"{status}\",le=\"{le}\"}} {v}\n"
            ));
        }
    }
    text
}

fn inbound(ok: f64, failed: f64, i: f64) -> String {
    let base = r#"direction="inbound",authority="x",tls="true""#;
    http(base, ok, failed, i)
        + &format!(
            "tcp_open_connections{{direction=\"inbound\",peer=\"src\",target_addr=\"127.0.0.1:1\",tls=\"true\"}} 2\n\
             tcp_read_bytes_total{{direction=\"inbound\",peer=\"src\",target_addr=\"127.0.0.1:1\",tls=\"true\"}} {}\n",
            100.0 * i
        )
}

/// A store holding 61 one-second scrapes ending now.
fn store() -> (StaticDiscovery, Store) {
    let state = workloads_file::parse(WORKLOADS).unwrap();
    let store = Store::new(Duration::from_secs(1));
    let by_pod = |pod: &str| {
        targets::targets(&state)
            .find(|t| t.labels["pod"] == pod)
            .unwrap()
            .labels
    };
    let now = SystemTime::now();
    for s in 0..=60u64 {
        let at = now - Duration::from_secs(60 - s);
        let i = s as f64;
        let web = outbound("emoji", 6.0, 0.0, i)
            + &outbound("voting", 2.0, 2.0, i)
            + "tcp_open_connections{direction=\"outbound\",peer=\"dst\",target_addr=\"127.0.0.1:17101\",tls=\"true\"} 3\n";
        let voting = outbound("emoji", 1.0, 1.0, i) + &inbound(2.0, 2.0, i);
        let emoji = inbound(7.0, 1.0, i);
        for (pod, text) in [("web-0", web), ("voting-0", voting), ("emoji-0", emoji)] {
            store.ingest(&by_pod(pod), at, expfmt::parse(&text).unwrap());
        }
        store.end_round(at);
    }
    (StaticDiscovery::new(state), store)
}

async fn get<T: DeserializeOwned>(uri: &str) -> (StatusCode, Result<T, ApiError>) {
    let (discovery, store) = store();
    let app = stat_api::router(discovery, Backend::Embedded(store));
    let rsp = app
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = rsp.status();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    let parsed = if status.is_success() {
        Ok(serde_json::from_slice(&body).unwrap())
    } else {
        Err(serde_json::from_slice(&body).unwrap())
    };
    (status, parsed)
}

async fn stat_rows(uri: &str) -> Vec<StatRow> {
    let (status, answer) = get::<StatAnswer>(uri).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {answer:?}");
    let answer = answer.unwrap();
    assert_eq!(answer.backend, "embedded");
    answer.rows
}

fn row<'a>(rows: &'a [StatRow], name: &str) -> &'a StatRow {
    rows.iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no row {name} in {rows:#?}"))
}

fn near(got: Option<f64>, want: f64) -> bool {
    got.is_some_and(|g| (g - want).abs() <= want.abs() * 0.03 + 1e-9)
}

#[tokio::test]
async fn stat_without_from_or_to_is_each_resources_inbound_traffic() {
    let rows = stat_rows("/api/v1/stat?kind=deploy&namespace=emojivoto").await;
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["emoji", "emoji-old", "voting", "web"]);
    let emoji = row(&rows, "emoji");
    assert_eq!((emoji.meshed.ready, emoji.meshed.total), (1, 1));
    assert!(near(emoji.rps, 8.0), "{emoji:?}");
    assert!(near(emoji.success, 7.0 / 8.0), "{emoji:?}");
    assert!(near(emoji.requests, 8.0 * 60.0), "{emoji:?}");
    assert!(near(emoji.latency_ms.p50, 7.5), "{emoji:?}");
    assert!(near(emoji.latency_ms.p99, 9.9), "{emoji:?}");
    assert_eq!(emoji.tcp_connections, Some(2.0));
    assert!(near(emoji.read_bytes_per_sec, 100.0), "{emoji:?}");
    let old = row(&rows, "emoji-old");
    assert_eq!((old.meshed.ready, old.meshed.total), (0, 1));
    // No traffic is no answer, not zero.
    let web = row(&rows, "web");
    assert_eq!(
        (web.success, web.rps, web.latency_ms.p50),
        (None, None, None)
    );
    assert!(near(row(&rows, "voting").success, 0.5));

    let pods = stat_rows("/api/v1/stat?kind=po&name=emoji-0&namespace=emojivoto").await;
    assert_eq!(pods.len(), 1);
    assert!(near(pods[0].rps, 8.0));
    let ns = stat_rows("/api/v1/stat?kind=ns&allNamespaces=true").await;
    assert!(near(row(&ns, "emojivoto").rps, 12.0), "{ns:?}");
    assert_eq!(row(&ns, "emojivoto").meshed.total, 4);
}

#[tokio::test]
async fn from_and_to_isolate_edges() {
    let rows = stat_rows("/api/v1/stat?kind=deploy&namespace=emojivoto&from=deploy/web").await;
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["emoji", "voting"]);
    assert!(near(row(&rows, "emoji").success, 1.0));
    assert!(near(row(&rows, "emoji").rps, 6.0));
    assert_eq!(row(&rows, "emoji").tcp_connections, Some(3.0));
    assert!(near(row(&rows, "voting").success, 0.5));
    assert!(near(row(&rows, "voting").rps, 4.0));

    let rows = stat_rows("/api/v1/stat?kind=deploy&namespace=emojivoto&to=deploy/emoji").await;
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["voting", "web"], "one row per caller");
    assert!(near(row(&rows, "web").success, 1.0));
    assert_eq!(row(&rows, "web").tcp_connections, Some(3.0));
    assert!(near(row(&rows, "voting").success, 0.5));
    assert!(near(row(&rows, "voting").rps, 2.0));

    // A service is measured on its callers' side.
    let svc = stat_rows("/api/v1/stat?kind=svc&namespace=emojivoto").await;
    assert!(near(row(&svc, "emoji").rps, 8.0), "{svc:?}");
    assert_eq!(row(&svc, "emoji").meshed.total, 2);
    assert_eq!(row(&svc, "emoji").tcp_connections, Some(3.0));
    let to_svc = stat_rows("/api/v1/stat?kind=deploy&namespace=emojivoto&to=svc/voting").await;
    assert_eq!(to_svc.len(), 1);
    assert!(near(to_svc[0].rps, 4.0));
}

#[tokio::test]
async fn bad_questions_name_what_is_wrong() {
    let cases = [
        (
            "/api/v1/stat?kind=bogus",
            400,
            "unknown resource kind \"bogus\"",
        ),
        (
            "/api/v1/stat?kind=deploy&name=nope&namespace=emojivoto",
            404,
            "deployment/nope not found in namespace emojivoto",
        ),
        (
            "/api/v1/stat?kind=deploy&namespace=emojivoto&to=deploy/nope",
            404,
            "deployment/nope not found",
        ),
        (
            "/api/v1/stat?kind=deploy&window=5s",
            400,
            "invalid window \"5s\"",
        ),
        (
            "/api/v1/stat?kind=deploy&from=deploy/web&to=deploy/emoji&namespace=emojivoto",
            400,
            "cannot be combined",
        ),
        (
            "/api/v1/stat?kind=deploy&namespace=emojivoto&from=svc/emoji",
            400,
            "a service sends no traffic",
        ),
        ("/api/v1/stat", 400, "kind"),
        (
            "/api/v1/stat/history?resource=deploy",
            400,
            "history needs one resource",
        ),
    ];
    for (uri, status, message) in cases {
        let (got, body) = get::<StatAnswer>(uri).await;
        let error = body.expect_err(uri).error;
        assert_eq!(got.as_u16(), status, "{uri}: {error}");
        assert!(error.contains(message), "{uri}: {error}");
    }
}

#[tokio::test]
async fn edges_history_and_prometheus_targets() {
    let (status, edges) = get::<EdgesAnswer>("/api/v1/edges?kind=deploy&namespace=emojivoto").await;
    assert_eq!(status, StatusCode::OK);
    let edges = edges.unwrap().edges;
    let pairs: Vec<(&str, &str)> = edges
        .iter()
        .map(|e| (e.src.as_str(), e.dst.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [("voting", "emoji"), ("web", "emoji"), ("web", "voting")]
    );
    let web_emoji = &edges[1];
    assert!(web_emoji.secured);
    assert_eq!(web_emoji.server_id.as_deref(), Some(EMOJI_ID));
    assert_eq!(
        web_emoji.client_id.as_deref(),
        Some("web.emojivoto.serviceaccount.identity.ferry.cluster.local")
    );

    let uri = "/api/v1/stat/history?resource=deploy/emoji&namespace=emojivoto&range=30s&step=5s&window=15s";
    let (status, history) = get::<StatHistory>(uri).await;
    assert_eq!(status, StatusCode::OK);
    let history = history.unwrap();
    assert_eq!((history.step_seconds, history.points.len()), (5, 7));
    let last = history
        .points
        .iter()
        .rev()
        .find(|p| p.rps.is_some())
        .unwrap();
    assert!(near(last.rps, 8.0), "{history:?}");
    assert!(near(last.success, 7.0 / 8.0));
    assert!(history
        .points
        .windows(2)
        .all(|w| w[1].timestamp_ms - w[0].timestamp_ms == 5000));
    assert!(
        history.points.iter().all(|p| p.timestamp_ms % 5000 == 0),
        "aligned to the step"
    );

    let (_, groups) = get::<Vec<PrometheusTargetGroup>>("/api/v1/prometheus/targets").await;
    let groups = groups.unwrap();
    assert_eq!(
        groups.len(),
        3,
        "instances without adminAddr are not scraped"
    );
    let web = groups.iter().find(|g| g.labels["pod"] == "web-0").unwrap();
    assert_eq!(web.targets, ["127.0.0.1:17291"]);
    assert_eq!(web.labels["deployment"], "web");
    assert_eq!(web.labels["namespace"], "emojivoto");
    assert_eq!(web.labels["serviceaccount"], "web");
}

/// Reads SSE frames until one holds a whole `stat` event; returns its JSON data.
async fn next_event(body: &mut Body) -> StatAnswer {
    let mut text = String::new();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("an event within 5 s")
            .expect("the stream is open")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
        if let Some(event) = text.split("\n\n").find(|e| e.contains("event: stat")) {
            let data = event
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .expect("a data line");
            return serde_json::from_str(data).unwrap();
        }
    }
}

#[tokio::test]
async fn the_stream_pushes_a_fresh_answer_after_every_scrape() {
    let (discovery, store) = store();
    let app = stat_api::router(discovery, Backend::Embedded(store.clone()));
    let uri = "/api/v1/stat/stream?kind=deploy&name=emoji&namespace=emojivoto";
    let rsp = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(rsp.headers()["content-type"], "text/event-stream");
    let mut body = rsp.into_body();
    let first = next_event(&mut body).await;
    assert!(near(first.rows[0].rps, 8.0), "{first:?}");
    // The next scrape round brings the next answer, computed afresh.
    store.end_round(SystemTime::now());
    let second = next_event(&mut body).await;
    assert!(second.timestamp_ms >= first.timestamp_ms);
    assert_eq!(second.rows[0].name, "emoji");

    // A wrong question fails before streaming, with the usual error body.
    let uri = "/api/v1/stat/stream?kind=deploy&name=nope&namespace=emojivoto";
    let rsp = app
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_unreachable_prometheus_is_a_502_naming_it() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (discovery, _) = store();
    let prometheus = ferry_control::metrics::promql::Prometheus::new(&url, Duration::from_secs(1));
    let app = stat_api::router(discovery, Backend::Prometheus(Box::new(prometheus)));
    let uri = "/api/v1/stat?kind=deploy&namespace=emojivoto";
    let rsp = app
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::BAD_GATEWAY);
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    let error: ApiError = serde_json::from_slice(&body).unwrap();
    assert!(
        error
            .error
            .starts_with(&format!("querying Prometheus at {url}: ")),
        "{error:?}"
    );
}

/// A Server on every pod's port 8080 and one authorization of it.
const VOTING_POLICY: &str = "\
apiVersion: policy.ferry.io/v1alpha1
kind: Server
metadata: {name: voting-http, namespace: emojivoto}
spec: {podSelector: {}, port: 8080, proxyProtocol: HTTP/1}
---
apiVersion: policy.ferry.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-to-voting, namespace: emojivoto}
spec:
  targetRef: {group: policy.ferry.io, kind: Server, name: voting-http}
  requiredAuthenticationRefs: [{kind: ServiceAccount, name: web}]
";

#[tokio::test]
async fn authz_lists_servers_routes_and_authorizations_with_what_they_allowed_and_denied() {
    use ferry_api::authz::{AuthzAnswer, AuthzRow};
    let (discovery, store) = store();
    let state = workloads_file::parse(WORKLOADS).unwrap();
    let labels = targets::targets(&state)
        .find(|t| t.labels["pod"] == "voting-0")
        .unwrap()
        .labels;
    // The proxy's authz families, at 3 allowed and 1 denied requests a second (kinds as
    // the proxy writes them, whatever their case).
    let now = SystemTime::now();
    for s in 0..=60u64 {
        let at = now - Duration::from_secs(60 - s) + Duration::from_millis(500);
        let i = s as f64;
        let text = format!(
            "inbound_http_authz_allow_total{{srv_kind=\"server\",srv_name=\"voting-http\",route_kind=\"default\",route_name=\"default\",authz_kind=\"authorizationpolicy\",authz_name=\"web-to-voting\"}} {}\n\
             inbound_http_authz_deny_total{{srv_kind=\"server\",srv_name=\"voting-http\",route_kind=\"default\",route_name=\"default\",authz_kind=\"\",authz_name=\"\"}} {}\n",
            3.0 * i,
            i
        );
        store.ingest(&labels, at, expfmt::parse(&text).unwrap());
        store.end_round(at);
    }
    let routes =
        ferry_control::routes::Routes::new(ferry_control::routes::parse(VOTING_POLICY).unwrap());
    let app = ferry_control::authz::api::router(
        discovery,
        routes,
        Backend::Embedded(store),
        ferry_control::authz::InboundConfig::default(),
    );
    let ask = |uri: &str| {
        let app = app.clone();
        let uri = uri.to_string();
        async move {
            let rsp = app
                .oneshot(Request::get(&uri).body(Body::empty()).unwrap())
                .await
                .unwrap();
            let status = rsp.status();
            let body = rsp.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            )
        }
    };
    let (status, body) = ask("/api/v1/authz?resource=deploy/voting&namespace=emojivoto").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: AuthzAnswer = serde_json::from_value(body).unwrap();
    assert_eq!(answer.resource, "deployment/voting");
    assert_eq!(answer.window, "1m");
    let row = |r: &AuthzRow| {
        format!(
            "{}/{} {}/{} {}/{} {} {}",
            r.route.kind,
            r.route.name,
            r.server.kind,
            r.server.name,
            r.authorization.kind,
            r.authorization.name,
            r.allowed,
            r.denied
        )
    };
    let rows: Vec<String> = answer.rows.iter().map(row).collect();
    let near = |text: &str, prefix: &str, allowed: u64, denied: u64| {
        let Some(rest) = text.strip_prefix(prefix) else {
            return false;
        };
        let n: Vec<u64> = rest.split(' ').filter_map(|n| n.parse().ok()).collect();
        n.len() == 2 && n[0].abs_diff(allowed) <= 6 && n[1].abs_diff(denied) <= 3
    };
    assert_eq!(rows.len(), 3, "{rows:#?}");
    assert!(
        near(
            &rows[0],
            "default/default Server/voting-http AuthorizationPolicy/web-to-voting ",
            180,
            0
        ),
        "{rows:#?}"
    );
    assert_eq!(
        rows[1], "default/default default/all-unauthenticated default/all-unauthenticated 0 0",
        "ports no Server selects"
    );
    assert!(
        near(&rows[2], "default/default server/voting-http / ", 0, 60),
        "denials name no authorization: {rows:#?}"
    );

    // The inbound policy itself, for `ferry diagnostics policy po/NAME:PORT`.
    let (status, body) = ask("/api/v1/policy/inbound?workload=emojivoto:voting-0&port=8080").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["server"]["name"], "voting-http");
    assert_eq!(body["protocol"], "HTTP/1");
    assert_eq!(
        body["routes"][0]["authorizations"][0]["authentication"]["meshTls"]["identities"][0],
        "web.emojivoto.serviceaccount.identity.ferry.cluster.local"
    );
    let (status, _) = ask("/api/v1/policy/inbound?workload=emojivoto:nope&port=8080").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = ask("/api/v1/policy/inbound?workload=voting-0&port=8080").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, body) = ask("/api/v1/authz?resource=deploy/nope&namespace=emojivoto").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = ask("/api/v1/authz?resource=deploy&namespace=emojivoto").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn policy_objects_lists_the_documents_and_the_pods_they_may_select() {
    use ferry_api::authz::{PolicyObjectList, POLICY_OBJECTS_PATH};
    let workloads = "\
workloads:
  - name: voting
    namespace: emojivoto
    labels: { app: voting }
    instances:
      - { name: voting-0, addr: \"127.0.0.1:17301\" }
  - name: bare
    namespace: other
    instances:
      - { name: bare-0, addr: \"127.0.0.1:17302\" }
";
    let documents = format!(
        "{VOTING_POLICY}---
apiVersion: policy.ferry.io/v1alpha1
kind: JWTAuthentication
metadata: {{name: issuer, namespace: emojivoto}}
spec: {{issuer: https://issuer.example, jwks: {{keys: []}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: private}}
spec:
  parentRefs: [{{group: policy.ferry.io, kind: Server, name: voting-http}}]
"
    );
    let discovery = StaticDiscovery::new(workloads_file::parse(workloads).unwrap());
    let routes = ferry_control::routes::Routes::new(
        ferry_control::routes::parse(&documents).unwrap_or_else(|e| panic!("{e}")),
    );
    let app = ferry_control::authz::api::router(
        discovery,
        routes,
        Backend::Embedded(Store::new(Duration::from_secs(1))),
        ferry_control::authz::InboundConfig::default(),
    );
    let rsp = app
        .oneshot(
            Request::get(POLICY_OBJECTS_PATH)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    let list: PolicyObjectList = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        list.pods,
        [
            serde_json::json!({"metadata": {"namespace": "emojivoto", "name": "voting-0", "labels": {"app": "voting"}}}),
            serde_json::json!({"metadata": {"namespace": "other", "name": "bare-0", "labels": {}}}),
        ]
    );
    let kinds: Vec<(&str, usize)> = list
        .items
        .iter()
        .map(|(k, v)| (k.as_str(), v.len()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("AuthorizationPolicy", 1),
            ("GRPCRoute", 0),
            ("HTTPLocalRateLimitPolicy", 0),
            ("HTTPRoute", 1),
            ("JWTAuthentication", 1),
            ("MeshTLSAuthentication", 0),
            ("NetworkAuthentication", 0),
            ("Server", 1),
        ]
    );
    let server = &list.items["Server"][0];
    assert_eq!(server["kind"], "Server");
    assert_eq!(server["metadata"]["namespace"], "emojivoto");
    assert_eq!(server["metadata"]["name"], "voting-http");
    assert_eq!(server["spec"]["podSelector"], serde_json::json!({}));
    let policy = &list.items["AuthorizationPolicy"][0]["spec"];
    assert_eq!(policy["targetRef"]["name"], "voting-http");
    assert_eq!(
        policy["requiredAuthenticationRefs"][0]["kind"],
        "ServiceAccount"
    );
    // The route's namespace is filled in (the default); inline keys are left out.
    assert_eq!(
        list.items["HTTPRoute"][0]["metadata"]["namespace"],
        "default"
    );
    let jwt = &list.items["JWTAuthentication"][0]["spec"];
    assert_eq!(jwt["issuer"], "https://issuer.example");
    assert!(jwt.get("jwks").is_none(), "{jwt}");
}
