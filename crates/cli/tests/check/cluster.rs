//! The CLI on a cluster, through the fake API server only: the kubeconfig's context and
//! token are used, and `ferry stat`, `ferry diagnostics` and `ferry check` reach a real
//! `ferry-control` process solely through the API server's pod port-forward.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use super::{control_pod, fake, fake_api, get, shared, Routes, SSAR};

/// Runs `ferry ARGS` with a clean environment for the cluster variables plus `envs`:
/// (success, stdout, stderr).
fn ferry(args: &[&str], envs: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    for var in [
        "KUBECONFIG",
        "FERRY_API_ADDR",
        "FERRY_KUBE_API",
        "FERRY_KUBE_TOKEN",
    ] {
        cmd.env_remove(var);
    }
    // No ~/.kube/config of the machine's user can be picked up.
    cmd.env("HOME", "/nonexistent");
    let out = cmd
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn check_uses_the_kubeconfig_context_and_its_token() {
    let mut routes = Routes::new();
    get(
        &mut routes,
        "/version",
        shared("openapi/discovery/version.json"),
    );
    let allowed = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {}, "status": {"allowed": true}});
    routes.insert(("POST".into(), SSAR.into()), (201, allowed));
    let api = fake(routes, None);
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config", &api.kubeconfig("s3cret"));

    let (ok, out, err) = ferry(
        &[
            "check",
            "--pre",
            "--kubeconfig",
            &config,
            "--context",
            "fake",
        ],
        &[],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("all 4 checks passed"), "{out}");
    let seen = api.seen();
    assert!(seen.len() >= 12, "{seen:?}");
    assert!(
        seen.iter()
            .all(|s| s.authorization.as_deref() == Some("Bearer s3cret")),
        "{seen:?}"
    );

    // KUBECONFIG is read too; its current context points elsewhere until --context.
    let (ok, out, _) = ferry(
        &["check", "--pre", "--timeout", "2"],
        &[("KUBECONFIG", &config)],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("× kubernetes-api: the API server answers"),
        "{out}"
    );
    let (ok, out, err) = ferry(
        &["check", "--pre", "--context", "fake"],
        &[("KUBECONFIG", &config)],
    );
    assert!(ok, "{out}{err}");

    // An unknown context is an error naming it.
    let (ok, _, err) = ferry(
        &["check", "--pre", "--context", "nope"],
        &[("KUBECONFIG", &config)],
    );
    assert!(!ok);
    assert!(err.contains("context nope"), "{err}");

    // With the cluster configured and no --api-addr, stat looks for the control plane's pod.
    let (ok, _, err) = ferry(
        &["stat", "deploy", "--context", "fake"],
        &[("KUBECONFIG", &config)],
    );
    assert!(!ok);
    assert!(
        err.contains("listing the control-plane pods in namespace ferry"),
        "{err}"
    );
    // --api-addr still means a local control plane: no request reaches the API server.
    let before = api.seen().len();
    let (ok, _, err) = ferry(
        &[
            "stat",
            "deploy",
            "--api-addr",
            "http://127.0.0.1:1",
            "--context",
            "fake",
        ],
        &[("KUBECONFIG", &config)],
    );
    assert!(!ok);
    assert!(
        err.contains("cannot reach the control plane at http://127.0.0.1:1"),
        "{err}"
    );
    assert_eq!(api.seen().len(), before);
}

/// A workloads file: one deployment with one instance, behind one service.
const WORKLOADS: &str = "workloads:
  - name: web
    namespace: emojivoto
    serviceAccount: web
    instances:
      - { name: web-0, addr: \"127.0.0.2:8080\" }
services:
  - { name: web-svc, namespace: emojivoto, port: 80, workloads: [web] }
";

#[test]
fn commands_reach_a_real_control_plane_only_through_the_port_forward() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "workloads.yaml", WORKLOADS);
    let identity = dir.path().join("identity");
    let control = rt
        .block_on(ferry_testkit::process::ControlProc::spawn(
            Path::new(&file),
            &["--identity-dir", identity.to_str().unwrap()],
        ))
        .unwrap();

    let mut routes = Routes::new();
    let pods = json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "377"},
        "items": [control_pod(false), control_pod(true)]});
    get(
        &mut routes,
        "/api/v1/namespaces/ferry/pods?labelSelector=ferry.io/control-plane-component%3Dcontrol",
        pods,
    );
    get(
        &mut routes,
        "/version",
        shared("openapi/discovery/version.json"),
    );
    let mut namespace = shared("scenario/namespaces.list.json")["items"][0].clone();
    namespace["metadata"]["name"] = json!("ferry");
    get(&mut routes, "/api/v1/namespaces/ferry", namespace);
    let api = fake(routes, Some(control.api));
    let config = write(dir.path(), "config", &api.kubeconfig("e2e"));
    let cluster = [("KUBECONFIG", config.as_str())];

    let (ok, out, err) = ferry(
        &[
            "stat",
            "deploy",
            "-n",
            "emojivoto",
            "-o",
            "json",
            "--context",
            "fake",
        ],
        &cluster,
    );
    assert!(ok, "{out}{err}");
    let rows: Value = serde_json::from_str(&out).unwrap();
    assert!(rows.is_array(), "{out}");

    let (ok, out, err) = ferry(
        &[
            "diagnostics",
            "endpoints",
            "web-svc.emojivoto.svc.cluster.local:80",
            "--context",
            "fake",
        ],
        &cluster,
    );
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("127.0.0.2   8080   web-0   web-svc.emojivoto"),
        "{out}"
    );

    let (_, out, err) = ferry(&["check", "--context", "fake"], &cluster);
    for expected in [
        "✓ kubernetes-api: the API server answers: v1.36.2",
        "✓ control-plane: public API answers through a port-forward: ok, version",
        "✓ identity: the control plane issues certificates: issuer ",
        "✓ data-plane: proxies are ready with certificates not near expiry",
    ] {
        assert!(
            out.contains(expected),
            "missing {expected:?} in:\n{out}{err}"
        );
    }

    // `ferry version` reaches the control plane the same way: its version and revision.
    let (ok, out, err) = ferry(&["version", "--context", "fake"], &cluster);
    assert!(ok, "{out}{err}");
    let server = format!("Server version: {}\n", ferry_api::version::LONG);
    assert!(out.contains(&server), "missing {server:?} in:\n{out}{err}");

    // The dashboard's URL works while `ferry dashboard` keeps the forward open.
    let health = dashboard_health(&config);
    assert!(health.contains("\"status\":\"ok\""), "{health}");

    // Every call went through a port-forward to the ready pod, with the kubeconfig's token.
    let seen = api.seen();
    let forwards: Vec<_> = seen
        .iter()
        .filter(|s| s.path.contains("/portforward"))
        .collect();
    assert!(forwards.len() >= 5, "{seen:?}");
    let ready = control_pod(true)["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    for f in &forwards {
        assert_eq!(
            fake_api::normalize(&f.path),
            format!("/api/v1/namespaces/ferry/pods/{ready}/portforward?ports=8084")
        );
        assert_eq!(f.authorization.as_deref(), Some("Bearer e2e"));
    }
    drop(control);
}

/// Kills the child when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `ferry dashboard --no-open` on the fake cluster, reads the URL it prints, and
/// GETs `/api/v1/health` through it (the forward it keeps open): the response.
fn dashboard_health(kubeconfig: &str) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"));
    child
        .env_remove("FERRY_API_ADDR")
        .env("HOME", "/nonexistent");
    let mut child = Killed(
        child
            .args(["dashboard", "--no-open", "--context", "fake"])
            .env("KUBECONFIG", kubeconfig)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("ferry dashboard printed no URL");
    let url = line.split(": ").nth(1).expect("a URL").trim();
    let authority = url
        .strip_prefix("http://")
        .and_then(|u| u.split('/').next())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(authority.starts_with("127.0.0.1:"), "{line}");
    assert_ne!(authority, "127.0.0.1:8084", "{line}");
    let mut conn = std::net::TcpStream::connect(authority).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "GET /api/v1/health HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    let _ = conn.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}
