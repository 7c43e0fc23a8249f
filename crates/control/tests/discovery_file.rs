//! Discovery backends: the workloads file (loads, follows edits, survives bad ones) and,
//! in [`kube_discovery`], Kubernetes against the fake API server.

#[path = "support/fixture.rs"]
mod fixture;
/// The Kubernetes backend, in this binary to save a link.
#[path = "support/kube_discovery.rs"]
mod kube_discovery;
#[path = "support/kube_resync.rs"]
mod kube_resync;
/// Rollouts from the Kubernetes API, their state in their status, in this binary to save a link.
#[path = "support/kube_rollouts.rs"]
mod kube_rollouts;
/// Routes from the Kubernetes API and their status, in this binary to save a link.
#[path = "support/kube_routes.rs"]
mod kube_routes;

use std::sync::Arc;
use std::time::Duration;

use ferry_control::discovery::file::{FileDiscovery, FileDiscoveryError};
use ferry_control::discovery::Discovery;
use ferry_control::model::{ClusterState, ObjectRef};
use fixture::{echo, within, WorkloadsFile, PROMPT};
use tokio::sync::watch;

const POLL: Duration = Duration::from_millis(20);

fn endpoint_ports(state: &ClusterState) -> Vec<u16> {
    let service = &state.services[&ObjectRef::new("default", "echo")];
    service.ports[&8080]
        .endpoints
        .keys()
        .map(|a| a.port())
        .collect()
}

async fn next_state(rx: &mut watch::Receiver<Arc<ClusterState>>) -> Arc<ClusterState> {
    within(PROMPT, "a new state", rx.changed())
        .await
        .expect("discovery running");
    rx.borrow_and_update().clone()
}

#[tokio::test]
async fn edits_are_published_and_bad_edits_ignored() {
    let file = WorkloadsFile::new(&echo(&[("echo-0", 17101)]));
    let discovery = FileDiscovery::spawn(file.path().to_path_buf(), POLL)
        .await
        .unwrap();
    let mut rx = discovery.watch();
    assert_eq!(endpoint_ports(&rx.borrow_and_update()), [17101]);

    file.write(&echo(&[("echo-0", 17101), ("echo-1", 17102)]));
    assert_eq!(endpoint_ports(&*next_state(&mut rx).await), [17101, 17102]);

    // Invalid YAML, then a valid file with a dangling reference, then a deleted file:
    // each is seen by several polls, and none replaces the state.
    for bad in [
        "services: [",
        "services: [{name: s, port: 80, workloads: [ghost]}]",
    ] {
        file.write(bad);
        let changed = tokio::time::timeout(POLL * 10, rx.changed()).await;
        assert!(changed.is_err(), "{bad:?} replaced the state");
    }
    std::fs::remove_file(file.path()).unwrap();
    assert!(tokio::time::timeout(POLL * 10, rx.changed()).await.is_err());
    assert_eq!(endpoint_ports(&rx.borrow()), [17101, 17102]);

    // Still watching: the next good edit applies.
    file.write(&echo(&[("echo-1", 17102)]));
    assert_eq!(endpoint_ports(&*next_state(&mut rx).await), [17102]);
}

#[tokio::test]
async fn rewriting_the_same_content_publishes_nothing() {
    let text = echo(&[("echo-0", 17101)]);
    let file = WorkloadsFile::new(&text);
    let discovery = FileDiscovery::spawn(file.path().to_path_buf(), POLL)
        .await
        .unwrap();
    let mut rx = discovery.watch();
    rx.borrow_and_update();
    // Same meaning, different text: parsed, but equal, so not fanned out.
    file.write(&format!("# a comment\n{text}"));
    assert!(tokio::time::timeout(POLL * 10, rx.changed()).await.is_err());
}

#[tokio::test]
async fn a_missing_or_invalid_file_fails_at_start() {
    let file = WorkloadsFile::new("workloads: [");
    let error = FileDiscovery::spawn(file.path().to_path_buf(), POLL)
        .await
        .expect_err("invalid file");
    assert!(
        matches!(error, FileDiscoveryError::Invalid { .. }),
        "{error}"
    );
    let missing = file.path().with_file_name("missing.yaml");
    let error = FileDiscovery::spawn(missing, POLL)
        .await
        .expect_err("missing file");
    assert!(matches!(error, FileDiscoveryError::Read { .. }), "{error}");
}

#[tokio::test]
async fn the_watch_stops_when_discovery_is_dropped() {
    let file = WorkloadsFile::new(&echo(&[("echo-0", 17101)]));
    let discovery = FileDiscovery::spawn(file.path().to_path_buf(), POLL)
        .await
        .unwrap();
    let mut rx = discovery.watch();
    drop(discovery);
    // Readers keep the last state and learn that no more will come.
    let closed = within(PROMPT, "the watch to close", rx.changed()).await;
    assert!(closed.is_err());
    assert_eq!(endpoint_ports(&rx.borrow()), [17101]);
}

#[tokio::test]
async fn editors_that_save_by_renaming_are_followed() {
    let file = WorkloadsFile::new(&echo(&[("echo-0", 17101)]));
    let discovery = FileDiscovery::spawn(file.path().to_path_buf(), POLL)
        .await
        .unwrap();
    let mut rx = discovery.watch();
    rx.borrow_and_update();
    // Write a sibling, then rename it over the file: the path now names a new inode.
    let sibling = file.path().with_extension("yaml.swp");
    std::fs::write(&sibling, echo(&[("echo-0", 17101), ("echo-1", 17102)])).unwrap();
    std::fs::rename(&sibling, file.path()).unwrap();
    assert_eq!(endpoint_ports(&*next_state(&mut rx).await), [17101, 17102]);
}
