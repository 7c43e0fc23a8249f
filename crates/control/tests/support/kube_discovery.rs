//! The Kubernetes backend against the fake API server serving recorded emojivoto objects:
//! what it publishes, what the index answers from it, and how it survives restarts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_api::identity::dns_name;
use ferry_control::authority::Lookup;
use ferry_control::discovery::kube_build::{build, Domains, Snapshot};
use ferry_control::discovery::kubernetes::{client, KubeDiscovery, KubeSource, DEFAULT_COALESCE};
use ferry_control::discovery::Discovery;
use ferry_control::index::{resolve, EndpointSet, Resolution};
use ferry_control::model::{ClusterState, ObjectRef};
use ferry_testkit::kube_api::FakeKubeApi;
use serde_json::{json, Value};
use tokio::sync::watch;

/// How long a change may take to show: the watch, the coalescing, a loaded machine.
pub const SHOWS: Duration = Duration::from_secs(10);

pub const WEB_SVC: &str = "web-svc";
pub const NS: &str = "emojivoto";

pub async fn discovery(api: &FakeKubeApi) -> KubeDiscovery {
    let source = KubeSource {
        kubeconfig: Some(api.kubeconfig().to_path_buf()),
        context: None,
    };
    let client = client(&source)
        .await
        .expect("client from the fake kubeconfig");
    let domains = Domains {
        cluster_domain: "cluster.local".into(),
        trust_domain: "cluster.local".into(),
    };
    let discovery = KubeDiscovery::spawn(client, domains, DEFAULT_COALESCE);
    tokio::time::timeout(SHOWS, discovery.synced())
        .await
        .expect("discovery syncs with the fake API server");
    discovery
}

/// Waits until the published state satisfies `check`.
pub async fn until(
    rx: &mut watch::Receiver<Arc<ClusterState>>,
    what: &str,
    check: impl Fn(&ClusterState) -> bool,
) -> Arc<ClusterState> {
    let waited = tokio::time::timeout(SHOWS, rx.wait_for(|s| check(s)))
        .await
        .map(|r| r.map(|state| state.clone()));
    match waited {
        Ok(Ok(state)) => state,
        Ok(Err(_)) => panic!("discovery stopped waiting for {what}"),
        Err(_) => panic!("timed out waiting for {what}: {:#?}", rx.borrow().services),
    }
}

pub fn service(name: &str, port: u16) -> Lookup {
    Lookup::Service {
        namespace: NS.into(),
        name: name.into(),
        port,
        instance: None,
    }
}

pub fn found(state: &ClusterState, lookup: &Lookup) -> EndpointSet {
    match resolve(state, lookup) {
        Resolution::Found(set) => set,
        Resolution::NotFound => panic!("{lookup:?} not found"),
    }
}

/// The endpoints' addresses as strings, sorted (none when the name does not exist).
pub fn addrs(state: &ClusterState, lookup: &Lookup) -> Vec<String> {
    match resolve(state, lookup) {
        Resolution::Found(set) => set.endpoints.keys().map(ToString::to_string).collect(),
        Resolution::NotFound => Vec::new(),
    }
}

pub fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// `pod` with Ferry's proxy container added, as the injector would.
pub fn meshed(api: &FakeKubeApi, pod: &str) -> Value {
    let mut object = api.get("Pod", NS, pod).expect("pod exists");
    object["kind"] = json!("Pod");
    let containers = object["spec"]["containers"].as_array_mut().unwrap();
    containers.push(json!({"name": ferry_api::k8s::CONTAINER_PROXY, "image": "ferry-proxy"}));
    object
}

pub fn with_kind(mut object: Value, kind: &str) -> Value {
    object["kind"] = json!(kind);
    object
}

fn items<K: serde::de::DeserializeOwned>(list: &str) -> Vec<Arc<K>> {
    let list = ferry_testkit::kube_api::fixture(&format!("scenario/{list}.list.json"));
    let items = list["items"].as_array().unwrap().iter();
    items
        .map(|item| Arc::new(serde_json::from_value(item.clone()).unwrap()))
        .collect()
}

#[test]
fn the_state_does_not_depend_on_store_order() {
    let mut snapshot = Snapshot {
        namespaces: items("namespaces"),
        services: items("services"),
        endpoint_slices: items("endpointslices"),
        pods: items("pods"),
        replica_sets: items("replicasets"),
        jobs: Vec::new(),
    };
    let domains = Domains {
        cluster_domain: "cluster.local".into(),
        trust_domain: "cluster.local".into(),
    };
    let state = build(&snapshot, &domains);
    snapshot.pods.reverse();
    snapshot.endpoint_slices.reverse();
    snapshot.replica_sets.reverse();
    assert_eq!(build(&snapshot, &domains), state);
    // A workload's labels are those all its pods share: no pod-template-hash.
    let web = &state.workloads[&ObjectRef::new(NS, "web")];
    assert_eq!(web.labels.get("app").map(String::as_str), Some("web-svc"));
    assert_eq!(web.labels.get("version").map(String::as_str), Some("v11"));
    assert!(
        !web.labels.contains_key("pod-template-hash"),
        "{:?}",
        web.labels
    );
}

#[tokio::test]
async fn emojivoto_resolves_with_labels_and_identity_when_meshed() {
    let api = FakeKubeApi::emojivoto().await;
    let discovery = discovery(&api).await;
    let mut rx = discovery.watch();
    let state = rx.borrow_and_update().clone();
    assert!(state.namespaces.contains(NS));
    let web = found(&state, &service(WEB_SVC, 80));
    assert_eq!(
        web.endpoints.keys().copied().collect::<Vec<_>>(),
        [sock("10.244.0.14:8080"), sock("10.244.0.15:8080")]
    );
    assert_eq!(web.labels["namespace"], NS);
    let gb64m = &web.endpoints[&sock("10.244.0.15:8080")];
    let want: BTreeMap<String, String> = [
        ("deployment", "web"),
        ("pod", "web-6fcf748b99-gb64m"),
        ("serviceaccount", "web"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(gb64m.labels, want);
    assert_eq!(gb64m.identity, None, "not meshed yet");
    let key = ObjectRef::new(NS, "web-6fcf748b99-gb64m");
    assert_eq!(state.instances[&key].admin_addr, None);
    assert_eq!(
        state.workloads[&ObjectRef::new(NS, "web")].kind,
        "deployment"
    );

    // Bookmarks (a Pod's carries `"containers":null`) only move the watches' RV on.
    api.bookmark();
    api.apply(meshed(&api, "web-6fcf748b99-gb64m"));
    let state = until(&mut rx, "gb64m meshed", |s| s.instances[&key].meshed).await;
    let web = found(&state, &service(WEB_SVC, 80));
    let identity = dns_name("web", NS, "cluster.local");
    assert_eq!(
        web.endpoints[&sock("10.244.0.15:8080")].identity,
        Some(identity)
    );
    assert_eq!(web.endpoints[&sock("10.244.0.14:8080")].identity, None);
    let instance = &state.instances[&key];
    assert_eq!(instance.admin_addr, Some(sock("10.244.0.15:4191")));
    assert_eq!(instance.tap_addr, Some(sock("10.244.0.15:4190")));
}

/// Replays the recorded watch streams (pods and EndpointSlices, in RV order) up to `rv`.
fn replay(api: &FakeKubeApi, events: &[(u64, Value)], from: u64, to: u64) {
    for (_, event) in events.iter().filter(|(rv, _)| (from..=to).contains(rv)) {
        let object = event["object"].clone();
        let meta = &object["metadata"];
        match event["type"].as_str().unwrap() {
            "DELETED" => {
                let (ns, name) = (meta["namespace"].as_str(), meta["name"].as_str());
                api.delete(object["kind"].as_str().unwrap(), ns.unwrap(), name.unwrap());
            }
            _ => api.apply(object),
        }
    }
}

fn recorded_events() -> Vec<(u64, Value)> {
    let mut events = Vec::new();
    for stream in ["pods", "endpointslices", "replicasets"] {
        let path = ferry_testkit::kube_api::fixtures_dir().join(format!("watch/{stream}.ndjson"));
        for line in std::fs::read_to_string(path).unwrap().lines() {
            let event: Value = serde_json::from_str(line).unwrap();
            let rv = event["object"]["metadata"]["resourceVersion"]
                .as_str()
                .unwrap();
            events.push((rv.parse().unwrap(), event));
        }
    }
    events.sort_by_key(|(rv, _)| *rv);
    events
}

#[tokio::test]
async fn recorded_watch_not_ready_terminating_and_replacement() {
    let api = FakeKubeApi::emojivoto().await;
    let discovery = discovery(&api).await;
    let mut rx = discovery.watch();
    let events = recorded_events();
    // (a) voting's pod turns not ready: its endpoint leaves, the service still exists.
    replay(&api, &events, 0, 385);
    let voting = service("voting-svc", 8080);
    let state = until(&mut rx, "voting not ready", |s| {
        addrs(s, &voting).is_empty()
    })
    .await;
    assert!(matches!(resolve(&state, &voting), Resolution::Found(_)));
    // (b) the scale-up pod's endpoint appears only once ready; (c) the deleted pod's
    // endpoint leaves as soon as it terminates, while still `serving`.
    replay(&api, &events, 386, 413);
    let web = service(WEB_SVC, 80);
    let want = ["10.244.0.15:8080", "10.244.0.16:8080"];
    until(&mut rx, "terminating .14 left out", |s| {
        addrs(s, &web) == want
    })
    .await;
    replay(&api, &events, 414, 10_000);
    let want = ["10.244.0.15:8080", "10.244.0.16:8080", "10.244.0.17:8080"];
    let state = until(&mut rx, "replacement .17 ready", |s| addrs(s, &web) == want).await;
    assert!(!state
        .instances
        .contains_key(&ObjectRef::new(NS, "web-6fcf748b99-4pd44")));
    let s468g = &found(&state, &web).endpoints[&sock("10.244.0.17:8080")];
    assert_eq!(s468g.labels["deployment"], "web");
}

/// A ReplicaSet of `deployment` and one ready pod of it at `ip`, labelled `app`.
pub fn workload(api: &FakeKubeApi, deployment: &str, pod: &str, ip: &str, app: &str) {
    let rs = format!("{deployment}-5d8f");
    api.apply(
        json!({"kind": "ReplicaSet", "metadata": {"name": rs, "namespace": NS,
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment,
            "uid": "u1", "controller": true}]},
        "spec": {"selector": {"matchLabels": {"app": app}}}}),
    );
    api.apply(
        json!({"kind": "Pod", "metadata": {"name": pod, "namespace": NS,
        "creationTimestamp": "2026-11-21T16:00:00Z", "labels": {"app": app},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs,
            "uid": "u2", "controller": true}]},
        "spec": {"serviceAccountName": deployment, "containers": [{"name": "app"}]},
        "status": {"phase": "Running", "podIP": ip}}),
    );
}

pub fn slice_endpoint(ip: &str, pod: &str, ready: bool) -> Value {
    json!({"addresses": [ip], "conditions": {"ready": ready, "serving": ready, "terminating": false},
        "targetRef": {"kind": "Pod", "namespace": NS, "name": pod}})
}

pub fn slice(
    name: &str,
    service: &str,
    port_name: &str,
    port: u16,
    endpoints: Vec<Value>,
) -> Value {
    json!({"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
        "metadata": {"name": name, "namespace": NS,
            "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4", "ports": [{"name": port_name, "protocol": "TCP", "port": port}],
        "endpoints": endpoints})
}

#[tokio::test]
async fn two_deployments_selector_change_and_named_port() {
    let api = FakeKubeApi::emojivoto().await;
    let discovery = discovery(&api).await;
    let mut rx = discovery.watch();
    workload(
        &api,
        "web-canary",
        "web-canary-5d8f-x1",
        "10.244.0.40",
        "web-svc",
    );
    let mut recorded = with_kind(
        api.get("EndpointSlice", NS, "web-svc-qw6cn").unwrap(),
        "EndpointSlice",
    );
    recorded["endpoints"]
        .as_array_mut()
        .unwrap()
        .push(slice_endpoint("10.244.0.40", "web-canary-5d8f-x1", true));
    api.apply(recorded);
    let web = service(WEB_SVC, 80);
    let state = until(&mut rx, "canary endpoint", |s| addrs(s, &web).len() == 3).await;
    let set = found(&state, &web);
    let by_deployment = |d: &str| {
        let n = set
            .endpoints
            .values()
            .filter(|e| e.labels.get("deployment").map(String::as_str) == Some(d));
        n.count()
    };
    assert_eq!((by_deployment("web"), by_deployment("web-canary")), (2, 1));

    // The selector moves to the canary alone, and its port is named: the slice carries
    // the resolved number under the service port's name.
    let mut svc = with_kind(api.get("Service", NS, WEB_SVC).unwrap(), "Service");
    svc["spec"]["selector"] = json!({"app": "web-canary"});
    svc["spec"]["ports"] =
        json!([{"name": "http", "protocol": "TCP", "port": 80, "targetPort": "web-http"}]);
    api.apply(svc);
    let canary = slice_endpoint("10.244.0.40", "web-canary-5d8f-x1", true);
    api.apply(slice("web-svc-qw6cn", WEB_SVC, "http", 9090, vec![canary]));
    let state = until(&mut rx, "selector change", |s| {
        addrs(s, &web) == ["10.244.0.40:9090"]
    })
    .await;
    let port = &state.services[&ObjectRef::new(NS, WEB_SVC)].ports[&80];
    assert_eq!(port.target_port, 9090);
}

#[tokio::test]
async fn addresses_headless_and_reused_pod_ips() {
    let api = FakeKubeApi::emojivoto().await;
    let discovery = discovery(&api).await;
    let mut rx = discovery.watch();
    let state = rx.borrow_and_update().clone();
    // A ClusterIP:port answers with the service port's endpoints, like its name.
    let cluster_ip = Lookup::Addr(sock("10.96.227.82:80"));
    assert_eq!(
        addrs(&state, &cluster_ip),
        ["10.244.0.14:8080", "10.244.0.15:8080"]
    );
    assert_eq!(found(&state, &cluster_ip).labels["service"], WEB_SVC);
    // A pod IP:port answers with that pod.
    let pod_ip = Lookup::Addr(sock("10.244.0.13:8080"));
    let set = found(&state, &pod_ip);
    assert_eq!(set.endpoints.len(), 1);
    assert_eq!(
        set.endpoints.values().next().unwrap().labels["pod"],
        "voting-7c54cbc44c-j2l4p"
    );
    // An unknown address is answered as is, without labels.
    let outside = found(&state, &Lookup::Addr(sock("192.0.2.1:443")));
    assert!(outside.endpoints.values().next().unwrap().labels.is_empty());

    // The voting pod is being deleted and its IP is already given to a new pod.
    let mut old = with_kind(
        api.get("Pod", NS, "voting-7c54cbc44c-j2l4p").unwrap(),
        "Pod",
    );
    old["metadata"]["deletionTimestamp"] = json!("2026-11-21T16:00:00Z");
    api.apply(old);
    workload(&api, "reuser", "reuser-5d8f-a", "10.244.0.13", "reuser");
    let owner = |s: &ClusterState| {
        let set = found(s, &pod_ip);
        set.endpoints
            .values()
            .next()
            .unwrap()
            .labels
            .get("pod")
            .cloned()
    };
    until(&mut rx, "reused IP names the new pod", |s| {
        owner(s).as_deref() == Some("reuser-5d8f-a")
    })
    .await;
    api.delete("Pod", NS, "voting-7c54cbc44c-j2l4p");
    let state = until(&mut rx, "old pod gone", |s| {
        !s.instances
            .contains_key(&ObjectRef::new(NS, "voting-7c54cbc44c-j2l4p"))
    })
    .await;
    assert_eq!(owner(&state).as_deref(), Some("reuser-5d8f-a"));

    // A headless service: `<pod>.<svc>.<ns>.svc...` is that pod alone.
    api.apply(
        json!({"kind": "Service", "metadata": {"name": "web-hl", "namespace": NS},
        "spec": {"clusterIP": "None", "clusterIPs": ["None"],
            "ports": [{"name": "http", "protocol": "TCP", "port": 8080, "targetPort": 8080}]}}),
    );
    let endpoints = vec![
        slice_endpoint("10.244.0.14", "web-6fcf748b99-4pd44", true),
        slice_endpoint("10.244.0.15", "web-6fcf748b99-gb64m", true),
    ];
    api.apply(slice("web-hl-abcde", "web-hl", "http", 8080, endpoints));
    let headless = service("web-hl", 8080);
    let state = until(&mut rx, "headless service", |s| {
        addrs(s, &headless).len() == 2
    })
    .await;
    assert!(state.services[&ObjectRef::new(NS, "web-hl")]
        .cluster_ips
        .is_empty());
    let one = Lookup::Service {
        namespace: NS.into(),
        name: "web-hl".into(),
        port: 8080,
        instance: Some("web-6fcf748b99-gb64m".into()),
    };
    assert_eq!(addrs(&state, &one), ["10.244.0.15:8080"]);
    let missing = Lookup::Service {
        namespace: NS.into(),
        name: "web-hl".into(),
        port: 8080,
        instance: Some("web-0".into()),
    };
    assert_eq!(resolve(&state, &missing), Resolution::NotFound);
}
