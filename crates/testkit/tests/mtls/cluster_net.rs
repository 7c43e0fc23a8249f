//! A fake node for the cluster test: a bridge in the test's own network namespace holding
//! the node address ([`NODE_IP`], where the control plane listens and from where it scrapes)
//! and one network namespace per pod, joined to the bridge by a veth pair and given the pod
//! IP the fake API server reports. Pods reach each other and the node over the bridge (no
//! forwarding on the host, no default route); ClusterIPs have an on-link route that only
//! the pod's iptables rules make useful. Everything — namespaces, veths, bridge — is deleted
//! on drop.

use std::process::{Output, Stdio};
use std::time::Duration;

use ferry_testkit::netns::{command, must, Netns};

/// The node's address on the pods' bridge, in the recorded cluster's pod range
/// (`10.244.0.0/24`, used only inside this bridge and the namespaces on it).
pub const NODE_IP: &str = "10.244.0.1";

/// The recorded cluster's service range (kind's default), where ClusterIPs live.
pub const SERVICE_CIDR: &str = "10.96.0.0/12";

/// The bridge and the pod namespaces on it.
pub struct Node {
    id: u32,
    bridge: String,
    pods: Vec<Netns>,
}

impl Node {
    /// Creates the bridge with [`NODE_IP`].
    pub fn new() -> Self {
        let id = std::process::id() % 100_000;
        let node = Self {
            id,
            bridge: format!("fb{id}"),
            pods: Vec::new(),
        };
        must(&["ip", "link", "add", &node.bridge, "type", "bridge"]);
        let cidr = format!("{NODE_IP}/24");
        must(&["ip", "addr", "add", &cidr, "dev", &node.bridge]);
        must(&["ip", "link", "set", &node.bridge, "up"]);
        node
    }

    /// A pod namespace with `ip` on the bridge; returns the namespace's name.
    pub fn add_pod(&mut self, ip: &str) -> String {
        let i = self.pods.len();
        self.pods.push(Netns::new("ferry-e2e"));
        let ns = self.pods[i].name().to_string();
        let (host, pod) = (format!("fe{}h{i}", self.id), format!("fe{}p{i}", self.id));
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
        // The pods' namespaces (and with them the veths) go when `pods` drops.
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stdin(Stdio::null())
            .status();
    }
}

/// Runs `program args` in pod `ns` (as `uid`, else root) to completion without blocking
/// the runtime; killed if it takes longer than `limit`.
pub async fn run_in(
    ns: &str,
    uid: Option<&str>,
    program: &str,
    args: &[&str],
    limit: Duration,
) -> Output {
    let mut cmd = tokio::process::Command::from(command(ns, uid, program));
    let child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning ip netns exec");
    tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} in {ns} did not finish in {limit:?}"))
        .expect("ip netns exec ran")
}

/// `curl` in pod `ns` as `uid` with `extra` arguments: the body of a 2xx answer, or `None`
/// when the request failed or the answer was an error.
pub async fn curl(ns: &str, uid: &str, extra: &[&str]) -> Option<String> {
    let mut args = vec!["-sSf", "--max-time", "5"];
    args.extend_from_slice(extra);
    let out = run_in(ns, Some(uid), "curl", &args, Duration::from_secs(10)).await;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
