//! Transparent proxying for real, as on Kubernetes: a "pod" network namespace and a "client"
//! namespace joined by a veth pair (addresses from TEST-NET-1, only inside namespaces this
//! test makes). The init step installs its rules in the pod, an app and `ferry-proxy` run
//! there (the proxy as UID 2102, the app as another user), and:
//!
//! - the client reaches the app's port only through the proxy, whose metrics count it;
//! - the app's own outbound call is intercepted and routed by its original destination;
//! - with the proxy gone, the app's port is unreachable: nothing bypasses the rules.
//!
//! The app and the remote server are this test binary re-run in server mode
//! (`FERRY_NETNS_SERVE`), so the test needs only `ip`, `setpriv`, `curl` and iptables.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferry_proxy::init::{apply, Firewall, InitArgs};
use ferry_testkit::metric_sum;
use ferry_testkit::netns::{self, must, runnable_copy, serve_http, Netns};

const POD_IP: &str = "192.0.2.2";
const CLIENT_IP: &str = "192.0.2.1";
const APP_UID: &str = "2201";
const SERVE_ENV: &str = "FERRY_NETNS_SERVE";

/// Server mode, run by the test below: answers every HTTP/1 request on
/// `$FERRY_NETNS_SERVE` (`addr=body`) with `body`.
#[test]
#[ignore = "server mode of traffic_reaches_the_app_only_through_the_proxy, which runs it"]
fn serve_mode() {
    let spec = std::env::var(SERVE_ENV).expect("FERRY_NETNS_SERVE=addr=body");
    let (addr, body) = spec.split_once('=').expect("addr=body");
    serve_http(addr, body);
}

/// Two namespaces joined by a veth pair, deleted on drop (after [`Running`] has killed
/// what runs in them).
struct Net {
    pod: String,
    client: String,
    _namespaces: [Netns; 2],
}

impl Net {
    fn new() -> Self {
        let id = std::process::id() % 100_000;
        let namespaces = [Netns::new("ferry-pod"), Netns::new("ferry-cli")];
        let net = Self {
            pod: namespaces[0].name().to_string(),
            client: namespaces[1].name().to_string(),
            _namespaces: namespaces,
        };
        let (vp, vc) = (format!("fp{id}"), format!("fc{id}"));
        must(&[
            "ip",
            "link",
            "add",
            &vp,
            "netns",
            &net.pod,
            "type",
            "veth",
            "peer",
            "name",
            &vc,
            "netns",
            &net.client,
        ]);
        for (ns, dev, ip) in [(&net.pod, &vp, POD_IP), (&net.client, &vc, CLIENT_IP)] {
            must(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                dev,
            ]);
            must(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        net
    }

    /// A command run inside `ns` as `uid`.
    fn command(ns: &str, uid: &str, program: &str) -> Command {
        netns::command(ns, Some(uid), program)
    }

    /// `curl` inside `ns` as `uid`: the body, or `None` if the request failed.
    fn curl(ns: &str, uid: &str, url: &str) -> Option<String> {
        Self::curl_with(ns, uid, url, &[])
    }

    /// [`Net::curl`] with extra arguments (`-H …`, `-i`).
    fn curl_with(ns: &str, uid: &str, url: &str, extra: &[&str]) -> Option<String> {
        let out = Self::command(ns, uid, "curl")
            .args(["-sS", "--max-time", "3"])
            .args(extra)
            .arg(url)
            .output()
            .expect("curl is installed by .ci/setup");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// A directory removed on drop.
struct RemoveDir(std::path::PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A background process killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(mut cmd: Command) -> Running {
    Running(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning"),
    )
}

fn serve(ns: &str, uid: &str, exe: &str, addr: &str, body: &str) -> Running {
    let mut cmd = Net::command(ns, uid, exe);
    cmd.args([
        "--ignored",
        "--exact",
        "serve_mode",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env(SERVE_ENV, format!("{addr}={body}"));
    spawn(cmd)
}

/// Polls until `check` returns `Some`, failing after `timeout`.
fn wait<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        // A plain blocking test with no runtime to stall: sleeping between polls is fine.
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn traffic_reaches_the_app_only_through_the_proxy() {
    let net = Net::new();
    apply(
        &InitArgs {
            firewall_bin_path: Firewall::Auto,
            ..InitArgs::default()
        },
        Some(&net.pod),
    )
    .expect("installing the rules in the pod");

    let bin_dir = std::env::temp_dir().join(format!("ferry-netns-{}", std::process::id()));
    std::fs::create_dir_all(&bin_dir).unwrap();
    let _cleanup = RemoveDir(bin_dir.clone());
    let me = runnable_copy(&bin_dir, &std::env::current_exe().unwrap());
    let proxy_bin = runnable_copy(
        &bin_dir,
        std::path::Path::new(env!("CARGO_BIN_EXE_ferry-proxy")),
    );

    let _app = serve(&net.pod, APP_UID, &me, "0.0.0.0:8080", "hello from the app");
    let _remote = serve(
        &net.client,
        "0",
        &me,
        &format!("{CLIENT_IP}:9090"),
        "hello from outside",
    );
    // A service the app keeps private, bound to loopback in the pod.
    let _private = serve(&net.pod, APP_UID, &me, "127.0.0.1:9999", "private");
    let start_proxy = |extra: &[&str]| {
        let mut proxy_cmd = Net::command(&net.pod, "2102", &proxy_bin);
        proxy_cmd.args([
            "--inbound-listen",
            "0.0.0.0:4143",
            "--inbound-forward",
            "127.0.0.1:8080",
            "--outbound-listen",
            "127.0.0.1:4140",
            "--admin-listen",
            "0.0.0.0:4191",
            "--tap-listen",
            "127.0.0.1:4190",
        ]);
        proxy_cmd.args(extra);
        let proxy = spawn(proxy_cmd);
        // Loopback is never redirected, so root in the pod can probe the admin port.
        wait("the proxy to be ready", Duration::from_secs(20), || {
            Net::curl(&net.pod, "0", "http://127.0.0.1:4191/ready")
        });
        proxy
    };
    let proxy = start_proxy(&[]);
    wait("the app to listen", Duration::from_secs(20), || {
        Net::curl(&net.pod, "0", "http://127.0.0.1:8080/")
    });
    wait(
        "the private service to listen",
        Duration::from_secs(20),
        || Net::curl(&net.pod, "0", "http://127.0.0.1:9999/"),
    );

    // Inbound: the client dials the app's port; PREROUTING hands it to the proxy.
    let body = Net::curl(&net.client, "0", &format!("http://{POD_IP}:8080/"));
    assert_eq!(body.as_deref(), Some("hello from the app"));

    // Outbound: the app (not the proxy's UID) dials a remote address; OUTPUT hands it to
    // the proxy, which connects to the original destination.
    let body = Net::curl(&net.pod, APP_UID, &format!("http://{CLIENT_IP}:9090/"));
    assert_eq!(body.as_deref(), Some("hello from outside"));

    let metrics = Net::curl(&net.pod, "0", "http://127.0.0.1:4191/metrics").expect("metrics");
    let inbound = metric_sum(&metrics, "request_total", &[("direction", "inbound")]);
    let outbound = metric_sum(
        &metrics,
        "request_total",
        &[
            ("direction", "outbound"),
            ("target_addr", &format!("{CLIENT_IP}:9090")),
        ],
    );
    assert!(inbound >= 1.0, "inbound request not counted:\n{metrics}");
    assert!(outbound >= 1.0, "outbound request not counted:\n{metrics}");

    // Issue #20: what the app keeps on loopback stays private. Inbound traffic goes to the
    // original destination (the pod IP), where nothing listens on 9999.
    let private_url = format!("http://{POD_IP}:9999/");
    let body = Net::curl(&net.client, "0", &private_url).unwrap_or_default();
    assert!(
        !body.contains("private"),
        "reached a loopback-only port: {body}"
    );
    assert!(body.contains("connect-refused"), "{body}");
    // Nor through the proxy's own outbound listener: its port is refused, labelled.
    let looped = format!("http://{POD_IP}:4140/");
    let open_proxy = ["-i", "-H", "Host: 127.0.0.1:9999"];
    let body = Net::curl_with(&net.client, "0", &looped, &open_proxy).unwrap_or_default();
    assert!(!body.contains("private"), "an open proxy: {body}");
    assert!(body.contains("l5d-proxy-error: loop-detected"), "{body}");
    // The admin port: probes and scrapers get through; `/state` is for loopback only.
    let admin = |path: &str, ns: &str, host: &str| {
        let url = format!("http://{host}:4191{path}");
        let out = Net::curl_with(ns, "0", &url, &["-o", "/dev/null", "-w", "%{http_code}"]);
        out.unwrap_or_default()
    };
    assert_eq!(admin("/metrics", &net.client, POD_IP), "200");
    assert_eq!(admin("/ready", &net.client, POD_IP), "200");
    assert_eq!(admin("/live", &net.client, POD_IP), "200");
    assert_eq!(admin("/state", &net.client, POD_IP), "403");
    assert_eq!(admin("/proxy-log-level", &net.client, POD_IP), "403");
    assert_eq!(admin("/state", &net.pod, "127.0.0.1"), "200");
    // Opaque bytes for the proxy's own port are refused too: closed, counted as a loop.
    let opaque =
        format!("exec 3<>/dev/tcp/{POD_IP}/4140; printf '\\001\\002opaque\\n' >&3; cat <&3");
    let out = Net::command(&net.client, "0", "timeout")
        .args(["5", "bash", "-c", &opaque])
        .output()
        .expect("bash is installed");
    assert!(out.stdout.is_empty(), "{out:?}");
    let metrics = wait("the refusal to be counted", Duration::from_secs(10), || {
        let text = Net::curl(&net.pod, "0", "http://127.0.0.1:4191/metrics")?;
        let want = [("error", "loop-detected")];
        (metric_sum(&text, "inbound_tcp_errors_total", &want) >= 1.0).then_some(text)
    });
    assert!(metrics.contains("inbound_tcp_errors_total"));

    // The documented opt-in for apps that only listen on loopback reaches them again, and
    // still refuses the proxy's own ports.
    drop(proxy);
    wait("the proxy to stop", Duration::from_secs(10), || {
        Net::curl(&net.pod, "0", "http://127.0.0.1:4191/ready")
            .is_none()
            .then_some(())
    });
    let proxy = start_proxy(&["--inbound-forward-loopback"]);
    let body = Net::curl(&net.client, "0", &private_url);
    assert_eq!(body.as_deref(), Some("private"));
    let body = Net::curl_with(&net.client, "0", &looped, &open_proxy).unwrap_or_default();
    assert!(body.contains("l5d-proxy-error: loop-detected"), "{body}");
    let body = Net::curl(&net.client, "0", &format!("http://{POD_IP}:8080/"));
    assert_eq!(body.as_deref(), Some("hello from the app"));

    // Without the proxy nothing gets through: the rules do not fall back to the app.
    drop(proxy);
    wait(
        "the proxy to stop listening",
        Duration::from_secs(10),
        || {
            Net::curl(&net.pod, "0", "http://127.0.0.1:4191/ready")
                .is_none()
                .then_some(())
        },
    );
    assert_eq!(
        Net::curl(&net.client, "0", &format!("http://{POD_IP}:8080/")),
        None
    );
    assert_eq!(
        Net::curl(&net.pod, APP_UID, &format!("http://{CLIENT_IP}:9090/")),
        None
    );
}
