//! `ferry check` against a scripted fake API server (never a real cluster), fed with the
//! objects a real kube-apiserver v1.36 returned (`shared/k8s`) and the objects `ferry
//! install` and `ferry inject` produce.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde_json::{json, Value};

fn shared(file: &str) -> Value {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/k8s")
        .join(file);
    serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

/// Answers by exact path (query included); anything else gets the apiserver's 404 Status.
struct FakeApi {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<(String, String, String)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

type Routes = HashMap<(String, String), (u16, Value)>;

impl FakeApi {
    fn start(routes: Routes) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, halt) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    serve_one(conn, &routes, &log);
                }
            }
        });
        Self {
            addr,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<(String, String, String)> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(conn: TcpStream, routes: &Routes, log: &Mutex<Vec<(String, String, String)>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut length = 0;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() || header == "\r\n" || header.is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    log.lock().unwrap().push((
        method.clone(),
        path.clone(),
        String::from_utf8_lossy(&body).into_owned(),
    ));
    let (status, answer) = routes.get(&(method, path)).cloned().unwrap_or_else(|| {
        let mut not_found = shared("scenario/errors/get-missing-pod.404.json");
        not_found["message"] = json!("not found");
        (404, not_found)
    });
    let text = answer.to_string();
    let mut conn = conn;
    let _ = write!(
        conn,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
}

fn get(routes: &mut Routes, path: &str, body: Value) {
    routes.insert(("GET".into(), path.into()), (200, body));
}

fn ferry_check(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("check")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap() + &String::from_utf8_lossy(&out.stderr),
    )
}

const SSAR: &str = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";

fn ssar_answer(allowed: bool) -> Value {
    let review = k8s_openapi::api::authorization::v1::SelfSubjectAccessReview {
        status: Some(
            k8s_openapi::api::authorization::v1::SubjectAccessReviewStatus {
                allowed,
                ..Default::default()
            },
        ),
        ..Default::default()
    };
    serde_json::to_value(review).unwrap()
}

#[test]
fn pre_install_passes_on_a_fresh_cluster() {
    let mut routes = Routes::new();
    get(
        &mut routes,
        "/version",
        shared("openapi/discovery/version.json"),
    );
    routes.insert(("POST".into(), SSAR.into()), (201, ssar_answer(true)));
    let api = FakeApi::start(routes);
    let (ok, out) = ferry_check(&["--pre", "--api-server", &api.url()]);
    assert!(ok, "{out}");
    assert!(
        out.contains("✓ kubernetes-api: the API server answers: v1.36.2 at http://127.0.0.1:"),
        "{out}"
    );
    assert!(
        out.contains("✓ kubernetes-version: at least 1.29: 1.36"),
        "{out}"
    );
    assert!(
        out.contains("✓ pre-install: no control plane in the namespace yet"),
        "{out}"
    );
    assert!(out.contains("all 4 checks passed"), "{out}");
    let reviews: Vec<Value> = api
        .requests()
        .into_iter()
        .filter(|(m, p, _)| m == "POST" && p == SSAR)
        .map(|(_, _, b)| serde_json::from_str(&b).unwrap())
        .collect();
    assert_eq!(reviews.len(), 10);
    assert!(reviews
        .iter()
        .all(|r| r["kind"] == "SelfSubjectAccessReview"
            && r["spec"]["resourceAttributes"]["verb"] == "create"));
    assert!(reviews
        .iter()
        .any(|r| r["spec"]["resourceAttributes"]["resource"] == "mutatingwebhookconfigurations"));
}

#[test]
fn pre_install_fails_with_hints_when_installed_or_forbidden() {
    let mut routes = Routes::new();
    get(
        &mut routes,
        "/version",
        shared("openapi/discovery/version.json"),
    );
    let namespaces = shared("scenario/namespaces.list.json");
    get(
        &mut routes,
        "/api/v1/namespaces/default",
        namespaces["items"][0].clone(),
    );
    routes.insert(("POST".into(), SSAR.into()), (201, ssar_answer(false)));
    let api = FakeApi::start(routes);
    let (ok, out) = ferry_check(&[
        "--pre",
        "--api-server",
        &api.url(),
        "--namespace",
        "default",
    ]);
    assert!(!ok, "{out}");
    assert!(out.contains("× pre-install: no control plane in the namespace yet: namespace default already exists"), "{out}");
    assert!(out.contains("× pre-install: permitted to create the control plane: not permitted to create namespaces,"), "{out}");
    assert!(
        out.contains("    hint: install with cluster-admin rights"),
        "{out}"
    );
    assert!(out.contains("2 of 4 check(s) failed"), "{out}");
}

#[test]
fn unreachable_api_is_fatal() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (ok, out) = ferry_check(&[
        "--api-server",
        &format!("http://127.0.0.1:{port}"),
        "--timeout",
        "2",
    ]);
    assert!(!ok);
    assert!(
        out.contains("× kubernetes-api: the API server answers"),
        "{out}"
    );
    assert!(out.contains("hint: run `kubectl proxy`"), "{out}");
    assert!(
        out.contains("1 check(s) failed; 8 skipped after a fatal failure"),
        "{out}"
    );
    assert_eq!(out.matches('✓').count(), 0);
}

/// The objects of a `ferry install` (identity generated at `now`), by kind/name.
fn installed(now: time::OffsetDateTime) -> HashMap<(String, String), Value> {
    let mut cfg = ferry::install::InstallConfig {
        namespace: "ferry".into(),
        control_image: "c".into(),
        proxy_image: "p".into(),
        version: "v".into(),
        trust_domain: "cluster.local".into(),
        ha: false,
        identity: ferry::identity::generate("ferry", "cluster.local", now).unwrap(),
        webhook: ferry::identity::generate_webhook(
            vec!["ferry-proxy-injector.ferry.svc".into()],
            now,
        )
        .unwrap(),
    };
    cfg.version = env!("CARGO_PKG_VERSION").into();
    ferry::install::render(&cfg)
        .unwrap()
        .into_iter()
        .map(|d| {
            let v: Value = serde_json::to_value(&d).unwrap();
            (
                (
                    v["kind"].as_str().unwrap().to_string(),
                    v["metadata"]["name"].as_str().unwrap().to_string(),
                ),
                v,
            )
        })
        .collect()
}

/// A recorded pod, made a control-plane pod, Ready or not.
fn control_pod(ready: bool) -> Value {
    let mut pod = shared("scenario/pods.list.json")["items"][0].clone();
    pod["metadata"]["namespace"] = json!("ferry");
    pod["metadata"]["labels"] = json!({"ferry.io/control-plane-component": "control", "ferry.io/control-plane-ns": "ferry"});
    for c in pod["status"]["conditions"].as_array_mut().unwrap() {
        if c["type"] == "Ready" {
            c["status"] = json!(if ready { "True" } else { "False" });
        }
    }
    pod
}

/// All recorded pods, plus one recorded pod injected with the given proxy version.
fn cluster_pods(proxy_version: &str) -> Value {
    let mut list = shared("scenario/pods.all-namespaces.list.json");
    let mut pod = list["items"][0].clone();
    pod["kind"] = json!("Pod");
    pod["apiVersion"] = json!("v1");
    pod["metadata"]["name"] = json!("meshed-0");
    let cfg = ferry::sidecar::ProxyConfig {
        version: proxy_version.into(),
        ..Default::default()
    };
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::to_value(&pod).unwrap();
    let (docs, _) = ferry::inject::inject_docs(vec![yaml], &cfg).unwrap();
    list["items"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::to_value(&docs[0]).unwrap());
    list
}

fn post_install_routes(
    objects: &HashMap<(String, String), Value>,
    available: u64,
    ready: bool,
    proxy_version: &str,
) -> Routes {
    let obj = |k: &str, n: &str| objects[&(k.to_string(), n.to_string())].clone();
    let mut routes = Routes::new();
    get(
        &mut routes,
        "/version",
        shared("openapi/discovery/version.json"),
    );
    get(
        &mut routes,
        "/api/v1/namespaces/ferry",
        obj("Namespace", "ferry"),
    );
    let mut deploy = obj("Deployment", "ferry-control");
    deploy["status"] =
        json!({"replicas": 1, "availableReplicas": available, "readyReplicas": available});
    get(
        &mut routes,
        "/apis/apps/v1/namespaces/ferry/deployments/ferry-control",
        deploy,
    );
    get(
        &mut routes,
        "/api/v1/namespaces/ferry/pods?labelSelector=ferry.io/control-plane-component%3Dcontrol",
        json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [control_pod(ready)]}),
    );
    get(
        &mut routes,
        "/api/v1/namespaces/ferry/configmaps/ferry-identity-trust-roots",
        obj("ConfigMap", "ferry-identity-trust-roots"),
    );
    get(
        &mut routes,
        "/api/v1/namespaces/ferry/secrets/ferry-identity-issuer",
        obj("Secret", "ferry-identity-issuer"),
    );
    get(&mut routes, "/api/v1/pods", cluster_pods(proxy_version));
    routes
}

#[test]
fn healthy_install_passes_every_check() {
    let objects = installed(time::OffsetDateTime::now_utc());
    let mut routes = post_install_routes(&objects, 1, true, env!("CARGO_PKG_VERSION"));
    get(
        &mut routes,
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/ferry-proxy-injector-ferry",
        objects[&("MutatingWebhookConfiguration".to_string(), "ferry-proxy-injector-ferry".to_string())].clone(),
    );
    get(
        &mut routes,
        "/api/v1/namespaces/ferry/services/ferry-control:api/proxy/api/v1/health",
        json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}),
    );
    let api = FakeApi::start(routes);
    let (ok, out) = ferry_check(&["--api-server", &api.url()]);
    assert!(ok, "{out}");
    assert_eq!(out.matches('✓').count(), 9, "{out}");
    assert!(out.contains("1/1 replicas available"), "{out}");
    assert!(out.contains("trust anchors 36"), "{out}");
    assert!(out.contains("1 meshed pod(s) of"), "{out}");
}

#[test]
fn broken_install_fails_each_check_with_a_hint() {
    // The issuer was made 364 days and 23 hours ago: one hour of its year is left.
    let now =
        time::OffsetDateTime::now_utc() - time::Duration::days(365) + time::Duration::hours(1);
    let objects = installed(now);
    let routes = post_install_routes(&objects, 0, false, "0.0.1");
    let api = FakeApi::start(routes);
    let (ok, out) = ferry_check(&["--api-server", &api.url()]);
    assert!(!ok, "{out}");
    for expected in [
        "✓ control-plane: namespace exists",
        "× control-plane: ferry-control deployment is available: 0/1 replicas available",
        "    hint: kubectl -n ferry describe deployment ferry-control",
        "× control-plane: pods are ready: not ready: emoji-",
        "× webhook: proxy injector registered with a CA bundle: /apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/ferry-proxy-injector-ferry: HTTP 404",
        "× identity: certificates valid for more than 24 h: issuer expires in ",
        "× data-plane: proxies run this version: 1 of 1 meshed pods run another proxy: emojivoto/meshed-0 (0.0.1)",
        "× control-plane: public API answers through the service proxy: /api/v1/namespaces/ferry/services/ferry-control:api/proxy/api/v1/health: HTTP 404",
        "    hint: kubectl -n ferry logs deploy/ferry-control",
        "6 of 9 check(s) failed",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    let minutes: i64 = out
        .split("issuer expires in ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (50..=60).contains(&minutes),
        "{minutes} min left, expected about an hour"
    );
}

#[test]
fn local_mode_checks_the_control_plane_on_this_machine() {
    let mut routes = Routes::new();
    get(
        &mut routes,
        "/api/v1/health",
        json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}),
    );
    let proxy = |pod: &str, ready: bool, version: &str| {
        json!({"namespace": "emojivoto", "pod": pod, "meshed": true, "ready": ready,
               "adminAddr": "127.0.0.1:4191", "state": {"version": version},
               "error": if ready { None } else { Some("connection refused") }})
    };
    let here = env!("CARGO_PKG_VERSION");
    get(
        &mut routes,
        "/api/v1/proxies",
        json!({"proxies": [proxy("web-0", true, here), proxy("emoji-0", true, here)]}),
    );
    let api = FakeApi::start(routes);
    let (ok, out) = ferry_check(&["--local", "--api-addr", &api.url()]);
    assert!(ok, "{out}");
    assert!(
        out.contains("✓ control-plane: public API answers: ok, version"),
        "{out}"
    );
    assert!(out.contains("✓ control-plane: runs this version"), "{out}");
    assert!(
        out.contains("✓ data-plane: proxies are ready: 2 of 2 ready"),
        "{out}"
    );
    assert!(
        out.contains("✓ data-plane: proxies run this version: 2 proxies, all at"),
        "{out}"
    );
    assert!(out.contains("all 4 checks passed"), "{out}");

    let mut routes = Routes::new();
    get(
        &mut routes,
        "/api/v1/health",
        json!({"status": "ok", "version": "0.0.1"}),
    );
    get(
        &mut routes,
        "/api/v1/proxies",
        json!({"proxies": [proxy("web-0", false, here), proxy("emoji-0", true, "0.0.1")]}),
    );
    let old = FakeApi::start(routes);
    let (ok, out) = ferry_check(&["--local", "--api-addr", &old.url()]);
    assert!(!ok);
    assert!(
        out.contains("× control-plane: runs this version: control plane at 0.0.1"),
        "{out}"
    );
    assert!(
        out.contains("× data-plane: proxies are ready: 1 of 2 not ready: emojivoto/web-0 (connection refused)"),
        "{out}"
    );
    assert!(
        out.contains(&format!("× data-plane: proxies run this version: 1 of 2 proxies run another version: emojivoto/web-0 ({here})")),
        "{out}"
    );
}

#[test]
fn version_prints_the_client_the_control_plane_and_each_proxy_version() {
    let ferry = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let here = ferry_api::version::VERSION;
    let client = format!(
        "Client version: {here} (git {})",
        ferry_api::version::GIT_SHA
    );
    assert_eq!(ferry(&["version", "--client"]), format!("{client}\n"));
    assert_eq!(
        ferry(&["--version"]),
        format!("ferry {}\n", ferry_api::version::LONG)
    );

    let mut routes = Routes::new();
    get(
        &mut routes,
        "/api/v1/health",
        json!({"status": "ok", "version": here, "gitSha": "0123456789ab"}),
    );
    let proxy = |pod: &str, version: &str| {
        json!({"namespace": "emojivoto", "pod": pod, "meshed": true, "ready": true,
               "adminAddr": "127.0.0.1:4191", "state": {"version": version, "git_sha": "0123456789ab"}})
    };
    get(
        &mut routes,
        "/api/v1/proxies",
        json!({"proxies": [proxy("web-0", here), proxy("emoji-0", here), proxy("vote-0", "0.0.1")]}),
    );
    let api = FakeApi::start(routes);
    assert_eq!(
        ferry(&["version", "--api-addr", &api.url()]),
        format!(
            "{client}\nServer version: {here} (git 0123456789ab)\n\
             Proxy version: 0.0.1 (git 0123456789ab) (1 proxy)\n\
             Proxy version: {here} (git 0123456789ab) (2 proxies)\n"
        )
    );

    // Nothing listens: the client's version, and the server's said to be unavailable.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = ferry(&["version", "--api-addr", &format!("http://{closed}")]);
    assert!(
        out.starts_with(&format!(
            "{client}\nServer version: unavailable (cannot reach"
        )),
        "{out}"
    );
}
