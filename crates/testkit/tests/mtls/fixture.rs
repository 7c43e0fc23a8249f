//! The mTLS tests' fixture: a control plane with an identity CA and a workloads file, proxies
//! with identity flags, and small helpers (admin endpoints, `openssl`).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use ferry_testkit::{
    client,
    process::{bin, ControlProc, Proc, ProxyProc},
    server::{full, TestServer},
    wait_until,
};
use http::{Response, StatusCode};

pub const WAIT: Duration = Duration::from_secs(20);

pub fn id(sa: &str) -> String {
    format!("{sa}.default.serviceaccount.identity.ferry.cluster.local")
}

/// A control plane with identity, its state directory and workloads file.
pub struct Mesh {
    pub cp: Proc,
    pub grpc: SocketAddr,
    /// The public API (tap, stat) and dashboard.
    pub api: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Mesh {
    /// Starts a control plane whose workloads are `echo` (service `echo.default:8080`, its
    /// one instance at a placeholder address until [`Mesh::set_echo`]) and `client`, issuing
    /// certificates valid for `lifetime`; waits for both service accounts' tokens.
    pub async fn start(lifetime: &str) -> Self {
        Self::start_with(lifetime, &[]).await
    }

    /// [`Mesh::start`] with more control-plane flags.
    pub async fn start_with(lifetime: &str, flags: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("workloads.yaml");
        std::fs::write(&file, workloads("127.0.0.1:9".parse().unwrap())).unwrap();
        let mesh = Self::start_on(dir, lifetime, flags).await;
        for sa in ["echo", "client"] {
            let token = mesh.token(sa);
            wait_until(WAIT, "token files", || {
                let exists = token.exists();
                async move { exists.then_some(()) }
            })
            .await
            .unwrap();
        }
        mesh
    }

    /// Starts a control plane on the directory of an earlier one (same workloads file, CA
    /// and tokens).
    pub async fn restart_on(dir: tempfile::TempDir, lifetime: &str) -> Self {
        Self::start_on(dir, lifetime, &[]).await
    }

    async fn start_on(dir: tempfile::TempDir, lifetime: &str, flags: &[&str]) -> Self {
        let file = dir.path().join("workloads.yaml");
        let identity = dir.path().join("identity");
        let mut extra = vec![
            "--workloads-poll-interval",
            "100ms",
            "--identity-dir",
            identity.to_str().unwrap(),
            "--identity-cert-lifetime",
            lifetime,
        ];
        extra.extend_from_slice(flags);
        let cp = ControlProc::spawn(&file, &extra).await.unwrap();
        Self {
            grpc: cp.grpc,
            api: cp.api,
            cp: cp.proc,
            dir,
        }
    }

    pub fn token(&self, sa: &str) -> PathBuf {
        self.dir.path().join("identity/tokens/default").join(sa)
    }

    pub fn anchors(&self) -> PathBuf {
        self.dir.path().join("identity/ca/ca-bundle.crt")
    }

    /// Points the `echo` instance at `addr`.
    pub async fn set_echo(&self, addr: SocketAddr) {
        // Callers wait for traffic to flow, which is when the control plane has read it.
        std::fs::write(self.dir.path().join("workloads.yaml"), workloads(addr)).unwrap();
    }

    /// Points the `echo` instance at `proxy`, whose tap server the control plane may relay.
    pub async fn set_echo_tapped(&self, proxy: &ProxyProc) {
        let text = workloads_tapped(proxy.inbound(), Some(proxy.tap()));
        std::fs::write(self.dir.path().join("workloads.yaml"), text).unwrap();
    }

    /// The identity flags of a proxy for service account `sa`.
    pub fn identity_args(&self, sa: &str) -> Vec<String> {
        vec![
            "--identity-addr".into(),
            self.grpc.to_string(),
            "--identity-token-file".into(),
            self.token(sa).display().to_string(),
            "--identity-trust-anchors".into(),
            self.anchors().display().to_string(),
            "--service-account".into(),
            sa.into(),
        ]
    }
}

pub fn workloads(echo: SocketAddr) -> String {
    workloads_tapped(echo, None)
}

/// [`workloads`], with `echo-0`'s tap address when given.
fn workloads_tapped(echo: SocketAddr, tap: Option<SocketAddr>) -> String {
    let tap = tap
        .map(|t| format!(", tapAddr: \"{t}\""))
        .unwrap_or_default();
    format!(
        "workloads:
  - name: echo
    namespace: default
    serviceAccount: echo
    labels: {{ app: echo }}
    instances:
      - {{ name: echo-0, addr: \"{echo}\"{tap} }}
  - name: client
    namespace: default
    serviceAccount: client
    instances:
      - {{ name: client-0, addr: \"127.0.0.1:7\" }}
  - name: bot
    namespace: default
    serviceAccount: bot
    instances:
      - {{ name: bot-0, addr: \"127.0.0.1:6\" }}
services:
  - name: echo
    namespace: default
    port: 8080
    workloads: [echo]
"
    )
}

pub async fn proxy(args: &[String]) -> ProxyProc {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ProxyProc::spawn(bin("ferry-proxy"), &args).await.unwrap()
}

pub async fn app() -> TestServer {
    TestServer::http(|_req| async { Response::new(full("echo")) }).await
}

/// The server proxy (`sa`) in front of `app`, plus any `extra` flags.
pub async fn server_proxy(mesh: &Mesh, sa: &str, app: &TestServer, extra: &[&str]) -> ProxyProc {
    let mut args = vec!["--inbound-forward".to_string(), app.addr.to_string()];
    args.extend(mesh.identity_args(sa));
    args.extend(extra.iter().map(|s| s.to_string()));
    proxy(&args).await
}

/// A client proxy (`client`) with an upstream listener for `echo.default:8080`, resolving
/// through `dest` and certified by `mesh`.
pub async fn client_proxy(mesh: &Mesh, dest: SocketAddr, extra: &[&str]) -> ProxyProc {
    client_proxy_as(mesh, "client", dest, extra).await
}

/// [`client_proxy`] for service account `sa`.
pub async fn client_proxy_as(mesh: &Mesh, sa: &str, dest: SocketAddr, extra: &[&str]) -> ProxyProc {
    let mut args = vec![
        "--upstream".to_string(),
        "127.0.0.1:0=echo.default:8080".into(),
        "--destination-addr".into(),
        dest.to_string(),
    ];
    args.extend(mesh.identity_args(sa));
    args.extend(extra.iter().map(|s| s.to_string()));
    proxy(&args).await
}

pub async fn ready(p: &ProxyProc) {
    wait_ok(&format!("http://{}/ready", p.admin()), "proxy ready").await;
}

/// Waits until a GET of `url` answers 200.
async fn wait_ok(url: &str, what: &str) {
    wait_until(WAIT, what, || async move {
        let r = client::get(url).await.ok()?;
        (r.status == StatusCode::OK).then_some(())
    })
    .await
    .unwrap();
}

pub async fn admin(p: &ProxyProc, path: &str) -> String {
    client::get(&format!("http://{}{path}", p.admin()))
        .await
        .unwrap()
        .text()
}

pub async fn state(p: &ProxyProc) -> serde_json::Value {
    serde_json::from_str(&admin(p, "/state").await).unwrap()
}

pub fn echo_url(p: &ProxyProc) -> String {
    format!("http://{}/", p.upstream("echo.default:8080"))
}

/// Waits until a request through `client` succeeds (discovery and certificates settle).
pub async fn first_ok(client: &ProxyProc) {
    wait_ok(&echo_url(client), "a request through the mesh").await;
}

/// Runs `openssl` (bounded, killed on drop) without blocking the test's runtime, which
/// also runs the app.
pub async fn openssl(args: &[&str], stdin: &[u8]) -> (bool, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl is installed (.ci/setup)");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).await.unwrap();
    drop(input);
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("openssl {args:?} did not finish"))
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

pub fn pem_blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let end = rest[start..].find("-----END CERTIFICATE-----").unwrap() + start + 25;
        out.push(format!("{}\n", &rest[start..end]));
        rest = &rest[end..];
    }
    out
}

/// Checks `text` with `promtool check metrics`: exit 0, or only the lint about
/// `response_latency_ms` (a name Linkerd's dashboards rely on).
pub async fn promtool_accepts(text: &str) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("promtool is installed (.ci/setup)");
    let mut input = child.stdin.take().unwrap();
    input.write_all(text.as_bytes()).await.unwrap();
    drop(input);
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("promtool finished")
        .unwrap();
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let known = "response_latency_ms metric names should not contain abbreviated units";
    let only_known = out.status.code() == Some(3)
        && report
            .lines()
            .all(|l| l.trim().is_empty() || l.trim() == known);
    assert!(
        out.status.success() || only_known,
        "promtool rejected /metrics ({:?}): {report}\n{text}",
        out.status.code()
    );
}
