//! The proxy-injector webhook over real HTTPS on 127.0.0.1, fed the AdmissionReviews a real
//! kube-apiserver v1.36 sent (`shared/k8s/admission`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_control::identity::ca::Ca;
use ferry_control::injector::{self, review::WARNING_PREFIX};
use ferry_inject::{pod, ProxyConfig, SkipReason};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::webhook::{admission_dir, apply, post, recorded, ServingPair};

/// Every recorded `*.request.json`, recursively, in a stable order.
fn recorded_reviews() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("shared/k8s/admission exists") {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.to_string_lossy().ends_with(".request.json") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&admission_dir(), &mut out);
    out.sort();
    out
}

/// A webhook on 127.0.0.1:0 with a fresh CA and serving certificate, until dropped.
struct Webhook {
    addr: SocketAddr,
    pair: ServingPair,
    _stop: oneshot::Sender<()>,
}

impl Webhook {
    async fn start(proxy: impl Into<injector::ProxySettings>) -> Self {
        Self::start_with_limits(proxy, injector::Limits::default()).await
    }

    async fn start_with_limits(
        proxy: impl Into<injector::ProxySettings>,
        limits: injector::Limits,
    ) -> Self {
        let pair = ServingPair::new();
        let tls = injector::tls_config(&pair.cert_file, &pair.key_file).expect("the pair loads");
        Self::start_serving(proxy, limits, tls, pair).await
    }

    async fn start_serving(
        proxy: impl Into<injector::ProxySettings>,
        limits: injector::Limits,
        tls: Arc<rustls::ServerConfig>,
        pair: ServingPair,
    ) -> Self {
        let proxy: injector::ProxySettings = proxy.into();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(injector::serve_with_limits(
            listener,
            tls,
            proxy,
            limits,
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            pair,
            _stop: stop,
        }
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> (http::StatusCode, Value) {
        post(self.addr, &self.pair, path, body).await
    }

    async fn review(&self, review: &Value) -> Value {
        let (status, answer) = self
            .post("/inject?timeout=10s", serde_json::to_vec(review).unwrap())
            .await;
        assert_eq!(status, http::StatusCode::OK, "{answer}");
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["kind"], "AdmissionReview");
        assert_eq!(answer["response"]["allowed"], true, "{answer}");
        answer["response"].clone()
    }
}

fn proxy_config() -> ProxyConfig {
    ProxyConfig {
        image: "registry.example/ferry-proxy".to_string(),
        version: "v9.9.9".to_string(),
        trust_anchors_pem: Some("-----BEGIN CERTIFICATE-----\n...\n".to_string()),
        ..ProxyConfig::default()
    }
}

/// What the shared injection code makes of a pod.
fn injected(pod: &Value, cfg: &ProxyConfig) -> Value {
    let mut pod = pod.clone();
    let skip = pod::inject(&mut pod, cfg, &ferry_inject::created_by_injector()).unwrap();
    assert_eq!(skip, None, "the recorded pod is injectable");
    pod
}

#[tokio::test]
async fn every_recorded_review_gets_what_ferry_inject_gives_that_pod() {
    let cfg = proxy_config();
    let webhook = Webhook::start(cfg.clone()).await;
    let reviews = recorded_reviews();
    assert!(reviews.len() >= 10, "recordings missing: {reviews:?}");
    for path in reviews {
        let review: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let request = &review["request"];
        let response = webhook.review(&review).await;
        assert_eq!(response["uid"], request["uid"], "{}", path.display());
        assert!(response.get("warnings").is_none(), "{response}");
        let object = &request["object"];
        let patched = apply(&response, object);
        assert_eq!(patched, injected(object, &cfg), "{}", path.display());
        // Not only equal to the shared code's answer: actually meshed.
        let inits = patched["spec"]["initContainers"].as_array().unwrap();
        assert_eq!(inits[0]["name"], "ferry-init");
        assert_eq!(inits[1]["name"], "ferry-proxy");
        assert_eq!(inits[1]["image"], "registry.example/ferry-proxy:v9.9.9");
        assert_eq!(
            patched["metadata"]["annotations"]["ferry.io/created-by"],
            ferry_inject::created_by_injector()
        );
        // The user's containers and the API server's defaults are untouched.
        assert_eq!(patched["spec"]["containers"], object["spec"]["containers"]);
        assert_eq!(patched["status"], object["status"]);
    }
}

#[tokio::test]
async fn dry_run_and_generated_names_are_injected_too() {
    let cfg = proxy_config();
    let webhook = Webhook::start(cfg.clone()).await;
    let dry = recorded("pod-create-dry-run.request.json");
    assert_eq!(dry["request"]["dryRun"], true);
    let response = webhook.review(&dry).await;
    assert_eq!(response["uid"], dry["request"]["uid"]);
    let object = &dry["request"]["object"];
    assert_eq!(apply(&response, object), injected(object, &cfg));

    let generated = recorded("pod-from-replicaset.request.json");
    assert!(generated["request"].get("name").is_none());
    assert!(generated["request"]["object"]["metadata"]
        .get("name")
        .is_none());
    let response = webhook.review(&generated).await;
    assert_eq!(response["uid"], generated["request"]["uid"]);
    let object = &generated["request"]["object"];
    let patched = apply(&response, object);
    assert_eq!(patched, injected(object, &cfg));
    assert_eq!(
        patched["metadata"]["generateName"],
        object["metadata"]["generateName"]
    );
}

#[tokio::test]
async fn opted_out_and_already_injected_pods_are_allowed_unchanged() {
    let cfg = proxy_config();
    let webhook = Webhook::start(cfg.clone()).await;
    let mut disabled = recorded("pod-create.request.json");
    disabled["request"]["object"]["metadata"]["annotations"]["ferry.io/inject"] =
        Value::from("disabled");
    let response = webhook.review(&disabled).await;
    assert_eq!(response["uid"], disabled["request"]["uid"]);
    assert!(response.get("patch").is_none(), "{response}");
    assert!(response.get("warnings").is_none(), "{response}");

    let mut again = recorded("pod-create.request.json");
    let object = again["request"]["object"].clone();
    again["request"]["object"] = injected(&object, &cfg);
    let response = webhook.review(&again).await;
    assert!(response.get("patch").is_none(), "{response}");

    let mut host = recorded("pod-create.request.json");
    host["request"]["object"]["spec"]["hostNetwork"] = Value::from(true);
    let response = webhook.review(&host).await;
    assert!(response.get("patch").is_none(), "{response}");

    // The same decisions, named, from the shared code.
    let mut pod = disabled["request"]["object"].clone();
    assert_eq!(
        pod::inject(&mut pod, &cfg, "t").unwrap(),
        Some(SkipReason::Disabled)
    );
    let mut pod = again["request"]["object"].clone();
    assert_eq!(
        pod::inject(&mut pod, &cfg, "t").unwrap(),
        Some(SkipReason::AlreadyInjected)
    );
}

#[tokio::test]
async fn our_own_failures_allow_the_pod_with_a_warning() {
    let webhook = Webhook::start(proxy_config()).await;
    // Not JSON at all: no uid to echo, but still allowed, never an error status.
    let (status, answer) = webhook.post("/inject", b"{not json".to_vec()).await;
    assert_eq!(status, http::StatusCode::OK);
    assert_eq!(answer["response"]["allowed"], true);
    let warning = answer["response"]["warnings"][0].as_str().unwrap();
    assert!(warning.starts_with(WARNING_PREFIX), "{warning}");

    // A review whose pod cannot be edited (spec.initContainers is not a list): its uid is
    // echoed, the pod is allowed as it came, and the client is told why.
    let mut broken = recorded("pod-create.request.json");
    broken["request"]["object"]["spec"]["initContainers"] = Value::from("oops");
    let response = webhook.review(&broken).await;
    assert_eq!(response["uid"], broken["request"]["uid"]);
    assert!(response.get("patch").is_none(), "{response}");
    let warning = response["warnings"][0].as_str().unwrap();
    assert!(warning.contains("spec.initContainers"), "{warning}");

    // A review with a uid but not the AdmissionReview shape.
    let typed_wrong = serde_json::json!({"request": {"uid": "u-1", "operation": 7}});
    let response = webhook.review(&typed_wrong).await;
    assert_eq!(response["uid"], "u-1");
    assert!(response["warnings"][0].is_string(), "{response}");

    // Larger than any pod the API server would send.
    let huge = vec![b' '; injector::MAX_BODY + 1];
    let (status, answer) = webhook.post("/inject", huge).await;
    assert_eq!(status, http::StatusCode::OK);
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"]["warnings"][0].is_string());

    let (status, _) = webhook.post("/other", b"{}".to_vec()).await;
    assert_eq!(status, http::StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn injected_proxies_trust_the_anchors_the_ca_has_now() {
    let now = time::OffsetDateTime::now_utc();
    let ca = |generated: &ferry_api::ca::GeneratedCa| {
        Arc::new(
            Ca::from_pem(
                &generated.trust_anchor_pem,
                &generated.issuer_cert_pem,
                &generated.issuer_key_pem,
            )
            .unwrap(),
        )
    };
    let first = ferry_api::ca::generate("ferry", "cluster.local", now).unwrap();
    let second = ferry_api::ca::generate("ferry", "cluster.local", now).unwrap();
    let (current, anchors) = tokio::sync::watch::channel(ca(&first));
    let settings = injector::ProxySettings::new(ProxyConfig::default(), Some(anchors));
    let webhook = Webhook::start(settings).await;
    let review = recorded("pod-create.request.json");
    let anchors_in = |response: &Value| {
        let pod = apply(response, &review["request"]["object"]);
        let env = pod["spec"]["initContainers"][1]["env"]
            .as_array()
            .unwrap()
            .clone();
        env.into_iter()
            .find(|e| e["name"] == ferry_api::env::PROXY_IDENTITY_TRUST_ANCHORS)
            .map(|e| e["value"].as_str().unwrap().to_string())
    };
    let response = webhook.review(&review).await;
    assert_eq!(anchors_in(&response), Some(first.trust_anchor_pem.clone()));
    // The issuer reload replaced the CA: the next pod gets the new anchors.
    current.send_replace(ca(&second));
    let response = webhook.review(&review).await;
    assert_eq!(anchors_in(&response), Some(second.trust_anchor_pem.clone()));
}

#[tokio::test]
async fn injected_proxies_get_the_namespace_or_cluster_default_inbound_policy() {
    let review = recorded("pod-create.request.json");
    let namespace = review["request"]["namespace"].as_str().unwrap().to_string();
    let cfg = ProxyConfig {
        default_inbound_policy: Some("cluster-authenticated".to_string()),
        ..ProxyConfig::default()
    };
    let mut state = ferry_control::model::ClusterState::default();
    let (states, watch) = tokio::sync::watch::channel(Arc::new(state.clone()));
    let settings = injector::ProxySettings::new(cfg, None).with_states(watch);
    let webhook = Webhook::start(settings).await;
    let policy_in = |response: &Value| {
        let pod = apply(response, &review["request"]["object"]);
        let env = pod["spec"]["initContainers"][1]["env"]
            .as_array()
            .unwrap()
            .clone();
        env.into_iter()
            .find(|e| e["name"] == ferry_api::env::PROXY_DEFAULT_INBOUND_POLICY)
            .map(|e| e["value"].as_str().unwrap().to_string())
    };
    let response = webhook.review(&review).await;
    assert_eq!(
        policy_in(&response).as_deref(),
        Some("cluster-authenticated")
    );
    // The namespace's annotation, as discovery saw it, wins; one naming no policy does not.
    state
        .namespace_defaults
        .insert(namespace.clone(), "deny".to_string());
    states.send_replace(Arc::new(state.clone()));
    let response = webhook.review(&review).await;
    assert_eq!(policy_in(&response).as_deref(), Some("deny"));
    state
        .namespace_defaults
        .insert(namespace, "allow".to_string());
    states.send_replace(Arc::new(state));
    let response = webhook.review(&review).await;
    assert_eq!(
        policy_in(&response).as_deref(),
        Some("cluster-authenticated")
    );
}

#[tokio::test]
async fn a_client_that_stalls_is_answered_or_dropped_within_the_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let limits = injector::Limits {
        read_timeout: std::time::Duration::from_millis(300),
        ..injector::Limits::default()
    };
    let webhook = Webhook::start_with_limits(ProxyConfig::default(), limits).await;

    // Headers promise a body that never finishes: allowed, with a warning, once the
    // timeout passes (not when the API server's own 10 s run out).
    let mut tls = crate::webhook::connect(webhook.addr, &webhook.pair).await;
    tls.write_all(
        b"POST /inject HTTP/1.1\r\nhost: injector\r\ncontent-type: application/json\r\n\
          content-length: 1000\r\n\r\n{\"kind\":",
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = tls.read(&mut buf).await.unwrap_or(0);
            answer.extend_from_slice(&buf[..n]);
            if n == 0 || String::from_utf8_lossy(&answer).contains("\"allowed\":true") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within 5 s");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("took too long"), "{text}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(250));

    // A client that connects and never starts TLS is dropped, not kept forever.
    let mut idle = tokio::net::TcpStream::connect(webhook.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), idle.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the idle connection is still open: {closed:?}"
    );
}

#[tokio::test]
async fn a_renewed_serving_certificate_is_served_without_a_restart() {
    let first = ServingPair::new();
    let serving = injector::serving_cert(&first.cert_file, &first.key_file).unwrap();
    let tls = injector::server_config(serving.clone()).unwrap();
    let webhook = Webhook::start_serving(
        ProxyConfig::default(),
        injector::Limits::default(),
        tls,
        first,
    )
    .await;
    let review = serde_json::to_vec(&recorded("pod-create.request.json")).unwrap();
    let (status, _) = post(webhook.addr, &webhook.pair, "/inject", review.clone()).await;
    assert_eq!(status, http::StatusCode::OK);
    assert!(!serving.reload().unwrap(), "nothing changed yet");

    // The Secret is renewed (a new CA and certificate, written over the mounted files).
    let renewed = ServingPair::new();
    std::fs::copy(&renewed.cert_file, &webhook.pair.cert_file).unwrap();
    std::fs::copy(&renewed.key_file, &webhook.pair.key_file).unwrap();
    assert!(serving.reload().unwrap(), "the renewed pair is loaded");
    let (status, _) = post(webhook.addr, &renewed, "/inject", review.clone()).await;
    assert_eq!(
        status,
        http::StatusCode::OK,
        "served with the renewed certificate"
    );
    let old_ca_rejected = tokio::spawn({
        let (addr, old) = (webhook.addr, webhook.pair.ca_der.clone());
        async move { crate::webhook::handshake_with_ca(addr, old).await }
    });
    assert!(
        old_ca_rejected.await.unwrap().is_err(),
        "the old certificate is no longer served"
    );

    // A broken renewal (a key that is not PEM) is refused and the last good pair stays.
    std::fs::write(&webhook.pair.key_file, "not a key").unwrap();
    assert!(serving.reload().is_err());
    let (status, _) = post(webhook.addr, &renewed, "/inject", review).await;
    assert_eq!(status, http::StatusCode::OK);
}
