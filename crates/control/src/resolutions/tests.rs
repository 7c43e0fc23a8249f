use std::time::Duration;

use super::*;
use crate::discovery::{Discovery, StaticDiscovery};
use crate::workloads_file;

/// Two services with one instance each; `meshed` and the echo address vary per test.
fn state(echo_meshed: bool, echo_addr: &str) -> ClusterState {
    let text = format!(
        r#"
workloads:
  - name: echo
    meshed: {echo_meshed}
    instances: [{{name: echo-0, addr: "{echo_addr}"}}]
  - name: other
    instances: [{{name: other-0, addr: "127.0.0.1:17201"}}]
services:
  - {{name: echo, port: 8080, workloads: [echo]}}
  - {{name: other, port: 8080, workloads: [other]}}
"#
    );
    workloads_file::parse(&text).expect("valid workloads file")
}

fn caller() -> ContextToken {
    ContextToken::default()
}

fn endpoints(rx: &watch::Receiver<Arc<Answer>>) -> Vec<SocketAddr> {
    match rx.borrow().resolution.as_ref() {
        Resolution::Found(set) => set.endpoints.keys().copied().collect(),
        Resolution::NotFound => Vec::new(),
    }
}

async fn changed(rx: &mut watch::Receiver<Arc<Answer>>) {
    tokio::time::timeout(Duration::from_secs(5), rx.changed())
        .await
        .expect("an answer within 5s")
        .expect("the answer's channel is open");
}

struct Fixture {
    discovery: StaticDiscovery,
    resolutions: Resolutions,
    _stop: tokio_util::sync::DropGuard,
}

fn fixture() -> Fixture {
    let discovery = StaticDiscovery::new(state(true, "127.0.0.1:17101"));
    let stop = CancellationToken::new();
    let resolutions = Resolutions::spawn(discovery.watch(), stop.clone());
    Fixture {
        discovery,
        resolutions,
        _stop: stop.drop_guard(),
    }
}

#[tokio::test]
async fn streams_asking_the_same_share_one_answer_until_the_last_leaves() {
    let f = fixture();
    let a = f
        .resolutions
        .subscribe("echo.default.svc.cluster.local:8080", &caller());
    let b = f
        .resolutions
        .subscribe("ECHO.default.svc.cluster.local:8080 ", &caller());
    let other = f.resolutions.subscribe("other.default:8080", &caller());
    assert_eq!(f.resolutions.len(), 2);
    assert_eq!(endpoints(&a.rx), ["127.0.0.1:17101".parse().unwrap()]);
    drop(a);
    assert_eq!(f.resolutions.len(), 2, "b still follows echo");
    drop(b);
    assert_eq!(f.resolutions.len(), 1);
    drop(other);
    assert!(f.resolutions.is_empty());
}

#[tokio::test]
async fn a_change_wakes_only_the_lookups_it_touches() {
    let f = fixture();
    let mut echo = f.resolutions.subscribe("echo.default:8080", &caller());
    let mut other = f.resolutions.subscribe("other.default:8080", &caller());
    let mut by_addr = f.resolutions.subscribe("127.0.0.1:17102", &caller());
    echo.rx.borrow_and_update();
    other.rx.borrow_and_update();
    by_addr.rx.borrow_and_update();

    // echo-0 moves to :17102: echo's answer and that address's answer change.
    f.discovery.set(state(true, "127.0.0.1:17102"));
    changed(&mut echo.rx).await;
    assert_eq!(endpoints(&echo.rx), ["127.0.0.1:17102".parse().unwrap()]);
    changed(&mut by_addr.rx).await;
    let instance = match by_addr.rx.borrow().resolution.as_ref() {
        Resolution::Found(set) => set
            .endpoints
            .values()
            .next()
            .and_then(|e| e.instance.clone()),
        Resolution::NotFound => None,
    };
    assert_eq!(instance, Some(ObjectRef::new("default", "echo-0")));
    assert!(
        !other.rx.has_changed().expect("open"),
        "other's answer is shared, untouched and must not wake its streams"
    );

    // An instance-only change (no longer meshed) reaches the services it backs.
    f.discovery.set(state(false, "127.0.0.1:17102"));
    changed(&mut echo.rx).await;
    let identity = match echo.rx.borrow().resolution.as_ref() {
        Resolution::Found(set) => set
            .endpoints
            .values()
            .next()
            .and_then(|e| e.identity.clone()),
        Resolution::NotFound => None,
    };
    assert_eq!(identity, None);
    assert!(!other.rx.has_changed().expect("open"));
}

#[tokio::test]
async fn a_name_that_appears_later_is_followed() {
    let f = fixture();
    let mut later = f.resolutions.subscribe("later.default:80", &caller());
    assert_eq!(*later.rx.borrow().resolution, Resolution::NotFound);
    let mut next = state(true, "127.0.0.1:17101");
    next.services
        .insert(ObjectRef::new("default", "later"), Default::default());
    f.discovery.set(next);
    changed(&mut later.rx).await;
    assert!(matches!(
        *later.rx.borrow().resolution,
        Resolution::Found(_)
    ));
}

#[tokio::test]
async fn stopping_closes_every_answer() {
    let discovery = StaticDiscovery::new(state(true, "127.0.0.1:17101"));
    let stop = CancellationToken::new();
    let resolutions = Resolutions::spawn(discovery.watch(), stop.clone());
    let mut echo = resolutions.subscribe("echo.default:8080", &caller());
    stop.cancel();
    let closed = tokio::time::timeout(Duration::from_secs(5), echo.rx.changed())
        .await
        .expect("closed within 5s");
    assert!(closed.is_err(), "the stream sees its answer end");
}
