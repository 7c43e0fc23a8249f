//! The Kubernetes backend's publishing: coalesced under bursts, nothing before the first
//! complete list, and known endpoints kept through an API-server restart and a `410`.

use std::net::SocketAddr;
use std::time::Duration;

use ferry_control::discovery::kube_build::Domains;
use ferry_control::discovery::kubernetes::{client, KubeDiscovery, KubeSource, DEFAULT_COALESCE};
use ferry_control::discovery::Discovery;
use ferry_testkit::kube_api::FakeKubeApi;
use linkerd2_proxy_api::destination as pb;
use linkerd2_proxy_api::destination::destination_client::DestinationClient;
use serde_json::json;

use crate::kube_discovery::{
    addrs, discovery, service, slice_endpoint, sock, until, with_kind, workload, NS, SHOWS, WEB_SVC,
};

#[tokio::test]
async fn a_burst_of_events_is_published_coalesced() {
    let api = FakeKubeApi::emojivoto().await;
    let discovery = discovery(&api).await;
    let mut rx = discovery.watch();
    let before = discovery.published();
    let started = tokio::time::Instant::now();
    for i in 0..400u32 {
        let ip = format!("10.244.{}.{}", 1 + i / 250, 1 + i % 250);
        workload(
            &api,
            &format!("burst{i}"),
            &format!("burst{i}-5d8f-a"),
            &ip,
            "burst",
        );
    }
    until(&mut rx, "the whole burst", |s| s.instances.len() >= 405).await;
    let elapsed = started.elapsed();
    let published = discovery.published() - before;
    let bound = elapsed.as_millis() / DEFAULT_COALESCE.as_millis() + 2;
    assert!(
        published as u128 <= bound,
        "{published} states for 800 events in {elapsed:?} (at most {bound})"
    );
}

#[tokio::test]
async fn each_change_rebuilds_only_the_part_it_touches() {
    let api = FakeKubeApi::emojivoto().await;
    let discovery = discovery(&api).await;
    let mut rx = discovery.watch();
    let web = service(WEB_SVC, 80);
    let (pods, services) = discovery.rebuilds();
    let applied = discovery.applied();

    // One more endpoint in a slice: the services' part is built again, the pods' is not.
    let mut recorded = with_kind(
        api.get("EndpointSlice", NS, "web-svc-qw6cn").unwrap(),
        "EndpointSlice",
    );
    let endpoint = slice_endpoint("10.244.0.41", "web-extra", true);
    recorded["endpoints"].as_array_mut().unwrap().push(endpoint);
    api.apply(recorded);
    until(&mut rx, "the new endpoint", |s| addrs(s, &web).len() == 3).await;
    let after_slice = discovery.rebuilds();
    assert_eq!(
        after_slice.0, pods,
        "an EndpointSlice change rebuilt the pods' part"
    );
    // ...and of the services, only the one the slice belongs to.
    let applied_slice = discovery.applied();
    assert_eq!(applied_slice.0, applied.0, "pods applied for a slice");
    assert_eq!(
        applied_slice.1,
        applied.1 + 1,
        "Services built for one slice"
    );
    assert!(
        after_slice.1 > services,
        "the services' part was not rebuilt"
    );

    // A new pod: the pods' part is built again, the services' is not.
    workload(&api, "web-extra", "web-extra", "10.244.0.41", "web-svc");
    let pod = ferry_control::model::ObjectRef::new(NS, "web-extra");
    until(&mut rx, "the new pod", |s| s.instances.contains_key(&pod)).await;
    let after_pod = discovery.rebuilds();
    assert!(
        after_pod.0 > after_slice.0,
        "the pods' part was not rebuilt"
    );
    assert_eq!(
        after_pod.1, after_slice.1,
        "a pod change rebuilt the services' part"
    );
    // That pod applied, not the emojivoto's every pod: once, or twice when its
    // ReplicaSet's owner arrives after it (the watches are separate streams).
    let applied_pod = discovery.applied().0 - applied_slice.0;
    assert!(
        (1..=2).contains(&applied_pod),
        "{applied_pod} pods applied for one"
    );
}

#[tokio::test]
async fn nothing_is_published_before_every_list_completes() {
    let api = FakeKubeApi::emojivoto().await;
    // Jobs are served; the recorded lists are loaded; so sync completes...
    let synced = discovery(&api).await;
    assert!(synced.published() >= 1);
    // ...while a server that never answers leaves the initial, empty state in place.
    let silent = ferry_testkit::server::TestServer::http(|_req| async {
        std::future::pending::<()>().await;
        unreachable!()
    })
    .await;
    let kubeconfig = api.kubeconfig().to_path_buf();
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    let text = text.replace(&api.addr.to_string(), &silent.addr.to_string());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    std::fs::write(&path, text).unwrap();
    let source = KubeSource {
        kubeconfig: Some(path),
        context: None,
    };
    let domains = Domains {
        cluster_domain: "cluster.local".into(),
        trust_domain: "cluster.local".into(),
    };
    let blind = KubeDiscovery::spawn(client(&source).await.unwrap(), domains, DEFAULT_COALESCE);
    let waited = tokio::time::timeout(Duration::from_millis(500), blind.synced()).await;
    assert!(waited.is_err(), "synced without any list");
    assert_eq!(blind.published(), 0);
    assert!(blind.watch().borrow().services.is_empty());
}

/// The next update on a Get stream, if one comes within `limit`.
async fn update_within(
    stream: &mut tonic::Streaming<pb::Update>,
    limit: Duration,
) -> Option<pb::update::Update> {
    match tokio::time::timeout(limit, stream.message()).await {
        Err(_) => None,
        Ok(message) => Some(
            message
                .expect("stream healthy")
                .expect("stream open")
                .update
                .expect("update set"),
        ),
    }
}

fn ips(update: &pb::update::Update) -> Vec<SocketAddr> {
    let pb::update::Update::Add(set) = update else {
        panic!("expected an add, got {update:?}");
    };
    let mut out: Vec<SocketAddr> = set
        .addrs
        .iter()
        .map(|a| SocketAddr::try_from(a.addr.unwrap()).unwrap())
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn restart_and_410_resync_never_drop_a_streams_endpoints() {
    let api = FakeKubeApi::emojivoto().await;
    let discovery = discovery(&api).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ferry_control::destination::serve(
        listener,
        discovery.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    let _server = AbortOnDrop(server);
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let mut client = DestinationClient::new(channel);
    let request = pb::GetDestination {
        scheme: String::new(),
        path: "web-svc.emojivoto.svc.cluster.local:80".into(),
        context_token: ferry_api::destination::context_token(NS, "node-a", "client-0"),
    };
    let mut stream = tokio::time::timeout(SHOWS, client.get(request))
        .await
        .expect("Get answers")
        .expect("Get accepted")
        .into_inner();
    let first = update_within(&mut stream, SHOWS)
        .await
        .expect("first update");
    assert_eq!(
        ips(&first),
        [sock("10.244.0.14:8080"), sock("10.244.0.15:8080")]
    );

    // The API server goes away for a while and comes back: the watches re-list.
    let lists_before = api.requests("GET /api/v1/pods");
    api.restart(Duration::from_millis(700)).await;
    // History is compacted: the next watch from a known RV gets 410 and must re-list.
    api.compact();
    let relisted = ferry_testkit::wait_until(SHOWS, "pods re-listed after a 410", || async {
        let relisted = api.requests("GET /api/v1/pods") > lists_before;
        (relisted && api.gone_answers() >= 1).then_some(())
    });
    relisted.await.unwrap();
    // Nothing was removed in between.
    assert_eq!(
        update_within(&mut stream, Duration::from_millis(1500)).await,
        None
    );
    assert!(api.requests("GET /api/v1/pods?watch") >= 2);

    // After the resync, changes flow again.
    let mut recorded = with_kind(
        api.get("EndpointSlice", NS, "web-svc-qw6cn").unwrap(),
        "EndpointSlice",
    );
    recorded["endpoints"]
        .as_array_mut()
        .unwrap()
        .push(slice_endpoint("10.244.0.15", "web-6fcf748b99-gb64m", true));
    recorded["endpoints"][2]["addresses"] = json!(["10.244.0.99"]);
    api.apply(recorded);
    let next = update_within(&mut stream, SHOWS)
        .await
        .expect("an update after resync");
    assert_eq!(ips(&next), [sock("10.244.0.99:8080")]);
    let _ = stop.send(());
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[tokio::test]
async fn the_fake_serves_streaming_lists_as_the_api_server_does() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::watcher;
    use tokio_stream::StreamExt;

    let api = FakeKubeApi::emojivoto().await;
    let source = KubeSource {
        kubeconfig: Some(api.kubeconfig().to_path_buf()),
        context: None,
    };
    let pods: kube::Api<Pod> = kube::Api::all(client(&source).await.unwrap());
    let config = watcher::Config::default().streaming_lists();
    let mut events = std::pin::pin!(watcher(pods, config));
    let mut listed = Vec::new();
    let initial = async {
        while let Some(event) = events.next().await {
            match event.expect("watch event") {
                watcher::Event::InitApply(pod) => listed.push(pod.metadata.name.unwrap()),
                watcher::Event::InitDone => return,
                _ => {}
            }
        }
    };
    tokio::time::timeout(SHOWS, initial)
        .await
        .expect("initial events end with the bookmark");
    listed.sort();
    assert_eq!(listed.len(), 5, "{listed:?}");
    assert_eq!(
        api.requests("GET /api/v1/pods"),
        0,
        "no list: the watch sent them"
    );
}
