//! Issue #19 end to end: a mesh on a (fake) cluster, with real processes. The fake API
//! server serves the recorded emojivoto cluster, with the `web` pods (2, deployment `web`)
//! and the `vote-bot` pod meshed and their tokens answered by TokenReview; `ferry-control
//! --discovery kubernetes` runs against it on the node's bridge address; each meshed pod is
//! a network namespace with its recorded pod IP, `ferry-proxy init`'s rules, a
//! `ferry-proxy` (UID 2102) and, for `web`, an app. vote-bot's curl calls `web-svc` by
//! ClusterIP and by name, transparently: the outbound proxy looks the ClusterIP up, balances
//! over both web pods and talks mTLS. Checked: TokenReviews seen and certificates issued,
//! both pods answered, the servers saw `tls="true"` from vote-bot's identity, and
//! `ferry stat deploy` groups the pods by deployment.
//!
//! The web pods' app is `ferry-bench-backend --body <pod name>`, so an answer names its pod.

use std::time::Duration;

use ferry_api::k8s::{CONTAINER_PROXY, IDENTITY_TOKEN_AUDIENCE};
use ferry_api::stat::StatRow;
use ferry_testkit::kube_api::{fixture, FakeKubeApi};
use ferry_testkit::netns::{exec_args, missing_tool, runnable_copy};
use ferry_testkit::process::{bin, Proc};
use ferry_testkit::{client, metric, metric_sum, wait_until};
use serde_json::{json, Value};

use super::cluster_net::{curl, run_in, Node, NODE_IP};

const NS: &str = "emojivoto";
const APP_UID: &str = "2201";
const PROXY_UID: &str = "2102";
const WEB_CLUSTER_IP: &str = "10.96.227.82";
const WEB_NAME: &str = "web-svc.emojivoto.svc.cluster.local";
/// The bound of each wait (the whole test takes a few seconds when nothing is wrong).
const SETTLE: Duration = Duration::from_secs(20);

/// A meshed pod of the recorded cluster: name, service account, pod IP.
struct Pod {
    name: &'static str,
    sa: &'static str,
    ip: &'static str,
}

const WEB: [Pod; 2] = [
    Pod {
        name: "web-6fcf748b99-4pd44",
        sa: "web",
        ip: "10.244.0.14",
    },
    Pod {
        name: "web-6fcf748b99-gb64m",
        sa: "web",
        ip: "10.244.0.15",
    },
];
const BOT: Pod = Pod {
    name: "vote-bot-d5cc9bbc5-rlhlk",
    sa: "vote-bot",
    ip: "10.244.0.12",
};

fn identity(sa: &str) -> String {
    format!("{sa}.{NS}.serviceaccount.identity.ferry.cluster.local")
}

fn token(pod: &Pod) -> String {
    format!("e2e-projected-token-{}", pod.name)
}

/// The recorded emojivoto cluster with `pods` meshed (the injector's container added) and
/// a TokenReview answer for each one's token, as kube-apiserver gives for a valid
/// projected token of its service account.
async fn cluster(pods: &[&Pod]) -> FakeKubeApi {
    let api = FakeKubeApi::emojivoto().await;
    for pod in pods {
        let mut object = api.get("Pod", NS, pod.name).expect("a recorded pod");
        assert_eq!(object["status"]["podIP"], pod.ip, "{}", pod.name);
        assert_eq!(object["spec"]["serviceAccountName"], pod.sa, "{}", pod.name);
        object["kind"] = json!("Pod");
        object["apiVersion"] = json!("v1");
        let containers = object["spec"]["containers"].as_array_mut().unwrap();
        containers.push(json!({"name": CONTAINER_PROXY, "image": "ferry-proxy"}));
        api.apply(object);
        let mut review: Value = fixture("authn/tokenreview-valid.response.json");
        review["spec"]["token"] = json!(token(pod));
        let user = format!("system:serviceaccount:{NS}:{}", pod.sa);
        review["status"]["user"]["username"] = json!(user);
        api.answer_token_review(&token(pod), &[IDENTITY_TOKEN_AUDIENCE], review);
    }
    api
}

/// Makes `file` readable by every user (the proxies' UID is not the test's).
fn readable(file: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// A process in pod namespace `ns` as `uid`, killed on drop.
fn spawn_in(ns: &str, uid: &str, program: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut all = exec_args(ns, Some(uid), program);
    all.extend(args.iter().map(|s| s.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    Proc::spawn("ip", &all, env).expect("spawning in the pod")
}

async fn get_ok(url: &str) -> Option<String> {
    let reply = client::get(url).await.ok()?;
    (reply.status == http::StatusCode::OK).then(|| reply.text())
}

/// `ferry stat deploy -n emojivoto -o json --api-addr API` as rows.
async fn stat(api: &str) -> Option<Vec<StatRow>> {
    let run = tokio::process::Command::new(bin("ferry"))
        .args(["stat", "deploy", "-n", NS, "-o", "json", "--api-addr", api])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .ok()?
        .ok()?;
    assert!(
        out.status.success(),
        "ferry stat: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).ok()
}

/// Panics with every process's logs when `what` timed out.
fn or_logs<T>(r: anyhow::Result<T>, what: &str, procs: &[(&str, &Proc)]) -> T {
    r.unwrap_or_else(|e| {
        let logs: Vec<String> = procs
            .iter()
            .map(|(name, p)| format!("--- {name}:\n{}", p.logs().join("\n")))
            .collect();
        panic!("{what}: {e}\n{}", logs.join("\n"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_on_a_fake_cluster() {
    if let Some(why) = missing_tool(&["ip", "iptables", "setpriv", "curl"]) {
        eprintln!("skipping a_mesh_on_a_fake_cluster: {why}");
        return;
    }
    let pods = [&WEB[0], &WEB[1], &BOT];
    let api = cluster(&pods).await;
    let mut node = Node::new(SETTLE).await;
    let namespaces: Vec<String> = pods.iter().map(|p| node.add_pod(p.ip)).collect();

    // Files the proxies' and apps' users can read: binaries, tokens, trust anchors.
    let share = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let open = std::fs::Permissions::from_mode(0o755);
        std::fs::set_permissions(share.path(), open).unwrap();
    }
    let proxy_bin = runnable_copy(share.path(), &bin("ferry-proxy"));
    // The web pods' app: an HTTP server answering with its pod's name.
    let app_bin = runnable_copy(share.path(), &bin("ferry-bench-backend"));
    for pod in pods {
        let token_file = share.path().join(pod.name);
        std::fs::write(&token_file, token(pod)).unwrap();
        readable(&token_file);
    }

    let state = tempfile::tempdir().unwrap();
    let identity_dir = state.path().join("identity");
    let kubeconfig = api.kubeconfig().to_str().unwrap().to_string();
    let grpc_listen = format!("{NODE_IP}:0");
    let cp = Proc::spawn(
        bin("ferry-control"),
        &[
            "--discovery",
            "kubernetes",
            "--kubeconfig",
            &kubeconfig,
            "--grpc-listen",
            &grpc_listen,
            "--api-listen",
            "127.0.0.1:0",
            "--trace-listen",
            "127.0.0.1:0",
            "--identity-dir",
            identity_dir.to_str().unwrap(),
            "--scrape-interval",
            "1s",
            "--log-format",
            "json",
        ],
        &[],
    )
    .unwrap();
    node.track(cp.pid());
    let addrs = or_logs(
        cp.bound_addrs(2, SETTLE).await,
        "control plane",
        &[("cp", &cp)],
    );
    let (grpc, api_addr) = (
        addrs["grpc"].to_string(),
        format!("http://{}", addrs["api"]),
    );
    let anchors_src = identity_dir.join("ca/ca-bundle.crt");
    let anchors = share.path().join("ca-bundle.crt");
    let found = wait_until(SETTLE, "the generated trust anchors", || {
        let found = std::fs::copy(&anchors_src, &anchors).is_ok();
        async move { found.then_some(()) }
    })
    .await;
    or_logs(found, "trust anchors", &[("cp", &cp)]);
    // The copy keeps the control plane's owner-only mode; the proxies' user reads it.
    readable(&anchors);
    let anchors = anchors.to_str().unwrap().to_string();

    let mut running: Vec<(String, Proc)> = Vec::new();
    for (pod, ns) in pods.iter().zip(&namespaces) {
        let init = ["init", "--firewall-bin-path", "auto"];
        let out = run_in(ns, None, &proxy_bin, &init, Duration::from_secs(30)).await;
        assert!(out.status.success(), "init in {}: {out:?}", pod.name);
        let token_file = share.path().join(pod.name);
        let args = [
            "--log-format",
            "json",
            "--destination-addr",
            &grpc,
            "--pod-namespace",
            NS,
            "--pod-name",
            pod.name,
            "--service-account",
            pod.sa,
            "--identity-token-file",
            token_file.to_str().unwrap(),
            "--identity-trust-anchors",
            &anchors,
        ];
        let proxy = spawn_in(ns, PROXY_UID, &proxy_bin, &args, &[]);
        running.push((format!("proxy {}", pod.name), proxy));
        if pod.sa == "web" {
            let serve = ["--http1", "0.0.0.0:8080", "--body", pod.name];
            let app = spawn_in(ns, APP_UID, &app_bin, &serve, &[]);
            running.push((format!("app {}", pod.name), app));
        }
    }
    let mut all: Vec<(&str, &Proc)> = vec![("control plane", &cp)];
    all.extend(running.iter().map(|(n, p)| (n.as_str(), p)));

    // Ready means certified: `/ready` is 503 until the identity's first certificate. The
    // admin port is reached from the node, off the pod's loopback, as a kubelet would.
    for pod in pods {
        let ready = format!("http://{}:4191/ready", pod.ip);
        let r = wait_until(SETTLE, "a proxy to be ready", || get_ok(&ready)).await;
        or_logs(r, &format!("{} ready", pod.name), &all);
    }
    let reviews = api.requests("POST /apis/authentication.k8s.io/v1/tokenreviews");
    assert!(reviews >= pods.len(), "{reviews} TokenReviews");
    for (pod, ns) in pods.iter().zip(&namespaces) {
        // Each proxy holds a certificate for its pod's service account (the proxy checks
        // that what it was issued names it). `/state` answers on the pod's loopback only.
        let state = curl(ns, "0", &["http://127.0.0.1:4191/state"]).await;
        let state: Value = serde_json::from_str(&state.expect("/state")).unwrap();
        let id = &state["identity"];
        assert_eq!(id["name"], identity(pod.sa), "{}: {state}", pod.name);
        assert_eq!(id["ready"], true, "{}: {state}", pod.name);
        assert_eq!(id["last_renewal"]["result"], "ok", "{}: {state}", pod.name);
        // From the node, where the control plane scrapes it, the certificate is reported.
        let text = get_ok(&format!("http://{}:4191/metrics", pod.ip))
            .await
            .unwrap();
        let expiry = metric(&text, "identity_cert_expiration_timestamp_seconds", &[]);
        assert!(expiry.is_some(), "{}: no certificate\n{text}", pod.name);
    }

    // vote-bot calls web-svc by ClusterIP: its app (UID 2201) dials 10.96.227.82:80, the
    // OUTPUT rules hand that to the proxy, which resolves the ClusterIP and balances.
    let bot_ns = &namespaces[2];
    let by_ip = format!("http://{WEB_CLUSTER_IP}/");
    let first = wait_until(SETTLE, "a request by ClusterIP", || async {
        curl(bot_ns, APP_UID, &[&by_ip]).await
    })
    .await;
    or_logs(first, "vote-bot → web-svc ClusterIP", &all);
    let mut answered = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let body = curl(bot_ns, APP_UID, &[&by_ip]).await;
        answered.insert(body.expect("a request by ClusterIP failed"));
    }
    let want: std::collections::BTreeSet<String> = WEB.iter().map(|p| p.name.to_string()).collect();
    assert_eq!(answered, want, "balanced over both web pods");
    // And by name, as cluster DNS would resolve it: the Host is the service's name, and the
    // original destination (the ClusterIP) decides, as docs/proxy.md says.
    let resolve = format!("{WEB_NAME}:80:{WEB_CLUSTER_IP}");
    let by_name = format!("http://{WEB_NAME}/");
    for _ in 0..4 {
        let body = curl(bot_ns, APP_UID, &["--resolve", &resolve, &by_name]).await;
        assert!(want.contains(&body.expect("a request by name failed")));
    }

    // The servers saw mTLS from vote-bot's identity; vote-bot verified web's.
    let client_id = identity(BOT.sa);
    let mut inbound = 0.0;
    for pod in &WEB {
        let text = get_ok(&format!("http://{}:4191/metrics", pod.ip))
            .await
            .unwrap();
        let want = [
            ("direction", "inbound"),
            ("tls", "true"),
            ("client_id", &client_id),
        ];
        let n = metric_sum(&text, "request_total", &want);
        assert!(
            n >= 1.0,
            "{}: no mTLS request from vote-bot\n{text}",
            pod.name
        );
        inbound += n;
    }
    assert!(inbound >= 25.0, "{inbound} mTLS requests from vote-bot");
    let text = get_ok(&format!("http://{}:4191/metrics", BOT.ip))
        .await
        .unwrap();
    let server_id = identity("web");
    let want = [
        ("direction", "outbound"),
        ("tls", "true"),
        ("server_id", &server_id),
    ];
    assert!(metric_sum(&text, "request_total", &want) >= 25.0, "{text}");

    // `ferry stat deploy`: the control plane found the admin ports through discovery and
    // scraped them; rows are deployments. Traffic keeps flowing so rates have two samples.
    let rows = wait_until(SETTLE, "stat rows for web with requests", || async {
        curl(bot_ns, APP_UID, &[&by_ip]).await?;
        let rows = stat(&api_addr).await?;
        let web = rows.iter().find(|r| r.name == "web")?;
        (web.requests.is_some_and(|n| n > 0.0) && web.success.is_some()).then_some(rows)
    })
    .await;
    let rows = or_logs(rows, "ferry stat deploy", &all);
    let row = |name: &str| rows.iter().find(|r| r.name == name).cloned();
    let web = row("web").unwrap();
    assert_eq!(web.kind, "deployment", "{web:?}");
    assert_eq!((web.meshed.ready, web.meshed.total), (2, 2), "{web:?}");
    assert_eq!(web.success, Some(1.0), "{web:?}");
    let bot = row("vote-bot").unwrap_or_else(|| panic!("no vote-bot row: {rows:#?}"));
    assert_eq!((bot.meshed.ready, bot.meshed.total), (1, 1), "{bot:?}");
    let emoji = row("emoji").unwrap_or_else(|| panic!("no emoji row: {rows:#?}"));
    assert_eq!((emoji.meshed.ready, emoji.meshed.total), (0, 1), "unmeshed");
}
