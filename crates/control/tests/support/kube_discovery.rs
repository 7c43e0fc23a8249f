//! The Kubernetes backend against the fake API server serving recorded emojivoto objects:
//! what it publishes, what the index answers from it, and how it survives restarts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_api::identity::dns_name;
use ferry_control::authority::Lookup;
use ferry_control::discovery::kube_build::{
    assemble, build, Changed, Domains, PodChanges, PodsPart, ServiceChanges, ServicesPart,
    Snapshot, LABEL_SERVICE_NAME,
};
use ferry_control::discovery::kube_objects::{
    ContainerName, PodSummary, PodSummarySpec, PodSummaryStatus,
};
use ferry_control::discovery::kubernetes::{client, KubeDiscovery, KubeSource, DEFAULT_COALESCE};
use ferry_control::discovery::Discovery;
use ferry_control::index::{resolve, EndpointSet, Resolution};
use ferry_control::model::{ClusterState, ObjectRef};
use ferry_testkit::kube_api::FakeKubeApi;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{
    ObjectReference, Service as KubeService, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
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

/// A small deterministic generator (xorshift), so the sequence below replays exactly.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// The objects of the incremental test's cluster, by namespace and name.
#[derive(Default)]
struct World {
    pods: BTreeMap<ObjectRef, Arc<PodSummary>>,
    replica_sets: BTreeMap<ObjectRef, Arc<ReplicaSet>>,
    services: BTreeMap<ObjectRef, Arc<KubeService>>,
    slices: BTreeMap<ObjectRef, Arc<EndpointSlice>>,
}

impl World {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            namespaces: Vec::new(),
            services: self.services.values().cloned().collect(),
            endpoint_slices: self.slices.values().cloned().collect(),
            pods: self.pods.values().cloned().collect(),
            replica_sets: self.replica_sets.values().cloned().collect(),
            jobs: Vec::new(),
        }
    }
}

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.into()),
        name: Some(name.into()),
        ..ObjectMeta::default()
    }
}

fn owned_by(kind: &str, name: &str) -> Option<Vec<OwnerReference>> {
    Some(vec![OwnerReference {
        kind: kind.into(),
        name: name.into(),
        controller: Some(true),
        ..OwnerReference::default()
    }])
}

/// One random pod: a few names, IPs, owners, labels, phases and creation times, so that
/// IPs are shared, workloads gain and lose members and labels, pods finish and go.
fn random_pod(rng: &mut Rng, ns: &str, name: &str) -> PodSummary {
    let mut metadata = meta(ns, name);
    let rs = ["a-1", "a-2", "b-1", "c-1"][rng.below(4)];
    metadata.owner_references = match rng.below(6) {
        0 => None,
        1 => owned_by("StatefulSet", "db"),
        _ => owned_by("ReplicaSet", rs),
    };
    let mut labels = BTreeMap::from([("app".to_string(), rs[..1].to_string())]);
    labels.insert("pod-template-hash".into(), rs.into());
    if rng.below(2) == 0 {
        labels.insert("version".into(), format!("v{}", rng.below(2)));
    }
    metadata.labels = Some(labels);
    let created = format!("2026-11-21T15:5{}:00Z", rng.below(3));
    metadata.creation_timestamp = Some(Time(created.parse().unwrap()));
    if rng.below(5) == 0 {
        metadata.deletion_timestamp = metadata.creation_timestamp.clone();
    }
    let proxy = ContainerName {
        name: ferry_api::k8s::CONTAINER_PROXY.into(),
        ports: Vec::new(),
    };
    let app = ContainerName {
        name: "app".into(),
        ports: Vec::new(),
    };
    let containers = if rng.below(3) == 0 {
        vec![app]
    } else {
        vec![app, proxy]
    };
    let phase = ["Running", "Running", "Pending", "Succeeded", "Failed"][rng.below(5)];
    let ip = (rng.below(5) > 0).then(|| format!("10.244.0.{}", rng.below(6)));
    PodSummary {
        metadata,
        spec: Some(PodSummarySpec {
            containers,
            init_containers: None,
            service_account_name: (rng.below(3) > 0).then(|| format!("sa{}", rng.below(2))),
        }),
        status: Some(PodSummaryStatus {
            phase: Some(phase.into()),
            pod_ip: ip,
        }),
    }
}

fn random_replica_set(rng: &mut Rng, ns: &str, name: &str) -> ReplicaSet {
    let mut metadata = meta(ns, name);
    metadata.owner_references = match rng.below(3) {
        0 => None,
        _ => owned_by("Deployment", ["a", "b"][rng.below(2)]),
    };
    ReplicaSet {
        metadata,
        ..ReplicaSet::default()
    }
}

fn random_service(rng: &mut Rng, ns: &str, name: &str) -> KubeService {
    let port = |name: &str, port: i32| ServicePort {
        name: Some(name.into()),
        port,
        protocol: Some("TCP".into()),
        target_port: Some(IntOrString::String("http".into())),
        ..ServicePort::default()
    };
    let ports = match rng.below(3) {
        0 => vec![port("http", 80)],
        1 => vec![port("http", 80), port("admin", 9990)],
        _ => vec![port("", 8080)],
    };
    let type_ = ["ClusterIP", "ClusterIP", "ExternalName"][rng.below(3)];
    KubeService {
        metadata: meta(ns, name),
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            cluster_ip: Some(format!("10.96.0.{}", rng.below(4))),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        ..KubeService::default()
    }
}

fn random_slice(rng: &mut Rng, ns: &str, name: &str) -> EndpointSlice {
    let mut metadata = meta(ns, name);
    let service = ["s0", "s1", "s2"][rng.below(3)];
    metadata.labels = Some(BTreeMap::from([(
        LABEL_SERVICE_NAME.to_string(),
        service.to_string(),
    )]));
    let endpoints = (0..rng.below(4))
        .map(|_| Endpoint {
            addresses: vec![format!("10.244.0.{}", rng.below(6))],
            conditions: Some(EndpointConditions {
                ready: [None, Some(true), Some(false)][rng.below(3)],
                terminating: (rng.below(4) == 0).then_some(true),
                ..EndpointConditions::default()
            }),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                name: Some(format!("p{}", rng.below(8))),
                ..ObjectReference::default()
            }),
            ..Endpoint::default()
        })
        .collect();
    let ports = [("http", 8080), ("admin", 9990), ("", 8081)]
        .into_iter()
        .filter(|_| rng.below(3) > 0)
        .map(|(name, port)| EndpointPort {
            name: Some(name.into()),
            port: Some(port),
            protocol: Some("TCP".into()),
            ..EndpointPort::default()
        })
        .collect();
    EndpointSlice {
        metadata,
        address_type: ["IPv4", "IPv4", "FQDN"][rng.below(3)].into(),
        endpoints: Some(endpoints),
        ports: Some(ports),
    }
}

/// Changes `map[key]` at random (new version, deletion, or an equal copy); notes the key.
fn churn<K>(
    rng: &mut Rng,
    map: &mut BTreeMap<ObjectRef, Arc<K>>,
    changed: &mut Vec<ObjectRef>,
    key: ObjectRef,
    make: impl FnOnce(&mut Rng) -> K,
) where
    K: Clone,
{
    match rng.below(4) {
        0 => {
            map.remove(&key);
        }
        1 => {
            // The same object again (a status-only change, a re-list): equal, not new.
            if let Some(object) = map.get(&key) {
                let copy = K::clone(object);
                map.insert(key.clone(), Arc::new(copy));
            }
        }
        _ => {
            map.insert(key.clone(), Arc::new(make(rng)));
        }
    }
    changed.push(key);
}

fn changes<K>(map: &BTreeMap<ObjectRef, Arc<K>>, keys: Vec<ObjectRef>) -> Changed<K> {
    let with = |key: ObjectRef| {
        let object = map.get(&key).cloned();
        (key, object)
    };
    keys.into_iter().map(with).collect()
}

/// Parts updated object by object through a random sequence of events equal, after every
/// batch, the parts a build from scratch of the same objects gives; and a change costs
/// only the objects it touched.
#[test]
fn incremental_updates_equal_a_build_from_scratch() {
    let domains = Domains {
        cluster_domain: "cluster.local".into(),
        trust_domain: "cluster.local".into(),
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut world = World::default();
    let mut pods = PodsPart::default();
    let mut services = ServicesPart::default();
    let namespaces = ["ns1", "ns2"];
    for round in 0..3000 {
        let (mut pod_keys, mut rs_keys, mut svc_keys, mut slice_keys) = Default::default();
        for _ in 0..1 + rng.below(4) {
            let ns = namespaces[rng.below(2)];
            match rng.below(10) {
                0..=4 => {
                    let key = ObjectRef::new(ns, format!("p{}", rng.below(8)));
                    let name = key.name.clone();
                    churn(&mut rng, &mut world.pods, &mut pod_keys, key, |r| {
                        random_pod(r, ns, &name)
                    });
                }
                5 => {
                    let key = ObjectRef::new(ns, ["a-1", "a-2", "b-1", "c-1"][rng.below(4)]);
                    let name = key.name.clone();
                    churn(&mut rng, &mut world.replica_sets, &mut rs_keys, key, |r| {
                        random_replica_set(r, ns, &name)
                    });
                }
                6 => {
                    let key = ObjectRef::new(ns, format!("s{}", rng.below(3)));
                    let name = key.name.clone();
                    churn(&mut rng, &mut world.services, &mut svc_keys, key, |r| {
                        random_service(r, ns, &name)
                    });
                }
                _ => {
                    let key = ObjectRef::new(ns, format!("slice{}", rng.below(5)));
                    let name = key.name.clone();
                    churn(&mut rng, &mut world.slices, &mut slice_keys, key, |r| {
                        random_slice(r, ns, &name)
                    });
                }
            }
        }
        let touched = pod_keys.len();
        let applied = pods.update(PodChanges {
            pods: changes(&world.pods, pod_keys),
            replica_sets: changes(&world.replica_sets, rs_keys),
            jobs: Vec::new(),
        });
        if round > 0 {
            // A pod costs itself; a ReplicaSet whose owner moved costs its pods.
            assert!(
                applied <= touched + world.pods.len(),
                "{applied} pods applied"
            );
        }
        services.update(ServiceChanges {
            services: changes(&world.services, svc_keys),
            endpoint_slices: changes(&world.slices, slice_keys),
        });
        let incremental = assemble(&domains, &[], &pods, &services);
        let snapshot = world.snapshot();
        let scratch = build(&snapshot, &domains);
        assert_eq!(incremental, scratch, "round {round}");
        // A re-list of the very same objects changes nothing.
        if round % 500 == 499 {
            assert_eq!(pods.resync(&snapshot), 0, "round {round}");
            assert_eq!(services.resync(&snapshot), 0, "round {round}");
        }
    }
    // The sequence did reach the interesting cases.
    let state = build(&world.snapshot(), &domains);
    assert!(!state.instances.is_empty() && !state.services.is_empty());
}

#[test]
fn one_pod_costs_one_pod() {
    let snapshot = Snapshot {
        namespaces: items("namespaces"),
        services: items("services"),
        endpoint_slices: items("endpointslices"),
        pods: items("pods"),
        replica_sets: items("replicasets"),
        jobs: Vec::new(),
    };
    let mut pods = PodsPart::default();
    assert_eq!(pods.resync(&snapshot), snapshot.pods.len());
    let mut services = ServicesPart::default();
    assert_eq!(services.resync(&snapshot), snapshot.services.len());
    // An unchanged re-list costs nothing; one changed pod costs that pod.
    assert_eq!(pods.resync(&snapshot), 0);
    let mut moved = PodSummary::clone(&snapshot.pods[0]);
    moved.status.as_mut().unwrap().pod_ip = Some("10.244.9.9".into());
    let key = ObjectRef::new(NS, moved.metadata.name.clone().unwrap());
    let applied = pods.update(PodChanges {
        pods: vec![(key.clone(), Some(Arc::new(moved)))],
        ..PodChanges::default()
    });
    assert_eq!(applied, 1);
    let domains = Domains {
        cluster_domain: "cluster.local".into(),
        trust_domain: "cluster.local".into(),
    };
    let state = assemble(&domains, &snapshot.namespaces, &pods, &services);
    let ip: std::net::IpAddr = "10.244.9.9".parse().unwrap();
    assert_eq!(state.instance_ips.get(&ip), Some(&key));
    // One slice costs its one Service.
    let slice = snapshot.endpoint_slices[0].clone();
    let slice_key = ObjectRef::new(NS, slice.metadata.name.clone().unwrap());
    let built = services.update(ServiceChanges {
        endpoint_slices: vec![(slice_key, None)],
        ..ServiceChanges::default()
    });
    assert_eq!(built, 1);
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

/// The fake API server pages lists as kube-apiserver does (the watchers list in pages of
/// 500): the same pages as the recorded `?limit=2` ones, a token that outlives nothing
/// compacted, and `410 Expired` for one that does.
#[tokio::test]
async fn the_fake_api_server_pages_lists_as_recorded() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, ListParams};
    let api = FakeKubeApi::emojivoto().await;
    let source = KubeSource {
        kubeconfig: Some(api.kubeconfig().to_path_buf()),
        context: None,
    };
    let pods: Api<Pod> = Api::namespaced(client(&source).await.unwrap(), NS);
    let mut token: Option<String> = None;
    for page in 1..=3 {
        let recorded =
            ferry_testkit::kube_api::fixture(&format!("scenario/pods.list.limit2-page{page}.json"));
        let mut params = ListParams::default().limit(2);
        if let Some(token) = &token {
            params = params.continue_token(token);
        }
        let list = pods.list(&params).await.expect("a page");
        let names = |items: Vec<Option<String>>| items.into_iter().flatten().collect::<Vec<_>>();
        assert_eq!(
            names(list.items.iter().map(|p| p.metadata.name.clone()).collect()),
            names(
                recorded["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["metadata"]["name"].as_str().map(String::from))
                    .collect()
            ),
            "page {page}"
        );
        assert_eq!(
            list.metadata.remaining_item_count,
            recorded["metadata"]["remainingItemCount"].as_i64(),
            "page {page}"
        );
        assert_eq!(
            list.metadata.continue_.is_some(),
            recorded["metadata"].get("continue").is_some(),
            "page {page}"
        );
        token = list.metadata.continue_;
    }
    let first = pods.list(&ListParams::default().limit(2)).await.unwrap();
    api.compact();
    let expired = pods
        .list(
            &ListParams::default()
                .limit(2)
                .continue_token(first.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .expect_err("a token from before the compaction");
    match expired {
        kube::Error::Api(status) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected 410 Expired, got {other}"),
    }
}
