//! `ferry check` against a scripted fake API server (never a real cluster), fed with the
//! objects a real kube-apiserver v1.36 returned (`shared/k8s`) and the objects `ferry
//! install` and `ferry inject` produce; and the commands that read a real local control
//! plane's policy (`check/authz.rs`).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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

#[path = "support/fake_api.rs"]
mod fake_api;
use fake_api::Routes;

#[path = "check/authz.rs"]
mod authz;
#[path = "check/cluster.rs"]
mod cluster;
#[path = "check/post_install.rs"]
mod post_install;

/// The fake API server with `routes`, port-forwarding to `forward_to`.
fn fake(routes: Routes, forward_to: Option<SocketAddr>) -> fake_api::FakeApi {
    fake_api::FakeApi::start(routes, fake_api::not_found(shared), forward_to)
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
    let api = fake(routes, None);
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
    let api = fake(routes, None);
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
    assert!(out.contains("hint: check the kubeconfig"), "{out}");
    assert!(
        out.contains("1 check(s) failed; 12 skipped after a fatal failure"),
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
        proxy_trace_sampling: "0".into(),
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

/// A recorded pod, made a control-plane pod, Ready (named `ferry-control-7c9d-ready`) or not
/// (keeping its recorded name).
fn control_pod(ready: bool) -> Value {
    let mut pod = shared("scenario/pods.list.json")["items"][0].clone();
    if ready {
        pod["metadata"]["name"] = json!("ferry-control-7c9d-ready");
    }
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
    // The control plane's policy documents: a Server selecting web-0's workload.
    get(
        &mut routes,
        ferry_api::authz::POLICY_OBJECTS_PATH,
        json!({
            "pods": [{"metadata": {"namespace": "emojivoto", "name": "web-0", "labels": {"app": "web"}}}],
            "items": {"Server": [{"kind": "Server", "metadata": {"namespace": "emojivoto", "name": "web-http"},
                                   "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "port": 8080}}]},
        }),
    );
    let api = fake(routes, None);
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
    assert!(
        out.contains("✓ policy: every Server, AuthorizationPolicy and authentication matches something: 1 Server(s), 0 AuthorizationPolicy(ies)"),
        "{out}"
    );
    assert!(out.contains("all 5 checks passed"), "{out}");

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
    let old = fake(routes, None);
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
    // A control plane that does not list its policy documents is an older release.
    assert!(
        out.contains("× policy: every Server, AuthorizationPolicy and authentication matches something: /api/v1/policy/objects: HTTP 404"),
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
    let api = fake(routes, None);
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
