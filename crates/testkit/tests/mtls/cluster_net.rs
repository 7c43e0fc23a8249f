//! A fake node for the cluster test: a bridge in the test's own network namespace holding
//! the node address ([`NODE_IP`], where the control plane listens and from where it scrapes)
//! and one network namespace per pod, joined to the bridge by a veth pair and given the pod
//! IP the fake API server reports. Pods reach each other and the node over the bridge (no
//! forwarding on the host, no default route); ClusterIPs have an on-link route that only
//! the pod's iptables rules make useful. Everything — namespaces, veths, bridge — is deleted on drop.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The node's address on the pods' bridge, in the recorded cluster's pod range
/// (`10.244.0.0/24`, used only inside this bridge and the namespaces on it).
pub const NODE_IP: &str = "10.244.0.1";

/// The recorded cluster's service range (kind's default), where ClusterIPs live.
pub const SERVICE_CIDR: &str = "10.96.0.0/12";

/// Runs `args` (bounded), failing the test if it does not succeed.
pub fn must(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Why this machine cannot run the test (not root, a tool missing), if it cannot.
pub fn cannot_run() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root: network namespaces need CAP_NET_ADMIN".into());
    }
    for tool in ["ip", "iptables", "setpriv"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!("`{tool}` is missing (apt-get install -y iptables iproute2)"));
        }
    }
    None
}

/// The bridge and the pod namespaces on it.
pub struct Node {
    id: u32,
    bridge: String,
    namespaces: Vec<String>,
}

impl Node {
    /// Creates the bridge with [`NODE_IP`].
    pub fn new() -> Self {
        let id = std::process::id() % 100_000;
        let node = Self {
            id,
            bridge: format!("fb{id}"),
            namespaces: Vec::new(),
        };
        must(&["ip", "link", "add", &node.bridge, "type", "bridge"]);
        let cidr = format!("{NODE_IP}/24");
        must(&["ip", "addr", "add", &cidr, "dev", &node.bridge]);
        must(&["ip", "link", "set", &node.bridge, "up"]);
        node
    }

    /// A pod namespace with `ip` on the bridge; returns the namespace's name.
    pub fn add_pod(&mut self, ip: &str) -> String {
        let i = self.namespaces.len();
        let ns = format!("ferry-e2e-{}-{i}", self.id);
        let (host, pod) = (format!("fe{}h{i}", self.id), format!("fe{}p{i}", self.id));
        must(&["ip", "netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        must(&[
            "ip", "link", "add", &host, "type", "veth", "peer", "name", &pod, "netns", &ns,
        ]);
        must(&["ip", "link", "set", &host, "master", &self.bridge]);
        must(&["ip", "link", "set", &host, "up"]);
        let cidr = format!("{ip}/24");
        must(&["ip", "-n", &ns, "addr", "add", &cidr, "dev", &pod]);
        must(&["ip", "-n", &ns, "link", "set", &pod, "up"]);
        // ClusterIPs must be routable for the app's connect to reach the OUTPUT rules, but
        // nothing answers for them on the bridge: a connection the proxy sent on as is
        // fails here instead of leaving through the host.
        must(&["ip", "-n", &ns, "route", "add", SERVICE_CIDR, "dev", &pod]);
        ns
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth end, and with it the host end.
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

/// `ip netns exec NS [setpriv --reuid UID …] PROGRAM`: the prefix of a command run in a pod.
pub fn in_pod(ns: &str, uid: Option<&str>, program: &str) -> Vec<String> {
    let mut args: Vec<String> = ["netns", "exec", ns].map(String::from).to_vec();
    if let Some(uid) = uid {
        args.extend(
            ["setpriv", "--reuid", uid, "--regid", uid, "--clear-groups"].map(String::from),
        );
    }
    args.push(program.to_string());
    args
}

/// Runs `ip ARGS` to completion without blocking the runtime (killed after `limit`).
pub async fn ip(args: &[String], limit: Duration) -> Output {
    let child = tokio::process::Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning ip");
    tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("ip {args:?} did not finish in {limit:?}"))
        .expect("ip ran")
}

/// `curl` in pod `ns` as `uid` with `extra` arguments: the body, or `None` on failure.
pub async fn curl(ns: &str, uid: &str, extra: &[&str]) -> Option<String> {
    let mut args = in_pod(ns, Some(uid), "curl");
    args.extend(["-sS", "--max-time", "5"].map(String::from));
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = ip(&args, Duration::from_secs(10)).await;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Copies a binary into `dir` (world-readable) so users without access to the build
/// directory (the proxy's UID 2102, the app's) can run it.
pub fn runnable_copy(dir: &std::path::Path, from: &std::path::Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let to = dir.join(from.file_name().unwrap());
    std::fs::copy(from, &to).unwrap();
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
    to.to_str().unwrap().to_string()
}
