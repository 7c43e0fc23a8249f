use std::net::SocketAddr;

use super::*;
use crate::authority::{ContextToken, Lookup};
use crate::workloads_file;

const ECHO: &str = r#"
trustDomain: example.org
workloads:
  - name: echo
    serviceAccount: echo-sa
    instances:
      - {name: echo-0, addr: "127.0.0.1:17101"}
      - {name: echo-1, addr: "127.0.0.1:17102"}
  - name: plain
    kind: statefulset
    meshed: false
    instances: [{name: plain-0, addr: "127.0.0.1:17201"}]
services:
  - {name: echo, port: 8080, workloads: [echo]}
  - {name: plain, port: 80, workloads: [plain]}
  - {name: empty, port: 80}
"#;

fn state(text: &str) -> ClusterState {
    workloads_file::parse(text).expect("valid file")
}

fn lookup(path: &str) -> Lookup {
    Lookup::parse(path, "cluster.local", &ContextToken::default()).unwrap()
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn found(resolution: Resolution) -> EndpointSet {
    match resolution {
        Resolution::Found(set) => set,
        Resolution::NotFound => panic!("expected the name to exist"),
    }
}

#[test]
fn endpoints_carry_linkerd_labels_and_identity() {
    let set = found(resolve(&state(ECHO), &lookup("echo.default:8080")));
    assert_eq!(
        set.fully_qualified_name.as_deref(),
        Some("echo.default.svc.cluster.local")
    );
    let labels: Vec<_> = set.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    assert_eq!(labels, ["namespace=default", "service=echo"]);
    let ep = &set.endpoints[&addr(17101)];
    let labels: Vec<_> = ep.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    assert_eq!(
        labels,
        ["deployment=echo", "pod=echo-0", "serviceaccount=echo-sa"]
    );
    assert_eq!(
        ep.identity.as_deref(),
        Some("echo-sa.default.serviceaccount.identity.ferry.example.org")
    );
    assert_eq!(ep.weight, 10_000);
}

#[test]
fn unmeshed_instances_have_no_identity() {
    let set = found(resolve(
        &state(ECHO),
        &lookup("plain.default.svc.cluster.local:80"),
    ));
    let ep = &set.endpoints[&addr(17201)];
    assert_eq!(ep.identity, None);
    assert_eq!(ep.labels["statefulset"], "plain");
}

#[test]
fn unknown_names_and_ports_differ() {
    let state = state(ECHO);
    assert_eq!(
        resolve(&state, &lookup("nope.default:8080")),
        Resolution::NotFound
    );
    assert_eq!(
        resolve(&state, &lookup("echo.other:8080")),
        Resolution::NotFound
    );
    // The service exists; the port does not: no endpoints, but the name is real.
    assert!(found(resolve(&state, &lookup("echo.default:9999")))
        .endpoints
        .is_empty());
}

#[test]
fn instance_names_resolve_to_that_instance_only() {
    let state = state(ECHO);
    let set = found(resolve(
        &state,
        &lookup("echo-1.echo.default.svc.cluster.local:8080"),
    ));
    let ports: Vec<u16> = set.endpoints.keys().map(|a| a.port()).collect();
    assert_eq!(ports, [17102]);
    assert_eq!(
        set.fully_qualified_name.as_deref(),
        Some("echo-1.echo.default.svc.cluster.local")
    );
    let missing = lookup("echo-9.echo.default.svc.cluster.local:8080");
    assert_eq!(resolve(&state, &missing), Resolution::NotFound);
    let elsewhere = lookup("plain-0.echo.default.svc:8080");
    assert_eq!(resolve(&state, &elsewhere), Resolution::NotFound);
}

#[test]
fn addresses_resolve_to_their_instance_or_to_themselves() {
    let state = state(ECHO);
    let set = found(resolve(&state, &Lookup::Addr(addr(17102))));
    assert_eq!(set.endpoints[&addr(17102)].labels["pod"], "echo-1");
    let set = found(resolve(&state, &Lookup::Addr(addr(9))));
    assert!(set.endpoints[&addr(9)].labels.is_empty());
}

fn advance(sub: &mut Subscriber, text: &str, path: &str) -> Vec<Change> {
    sub.advance(resolve(&state(text), &lookup(path)))
}

fn added(changes: &[Change]) -> Vec<u16> {
    match changes {
        [Change::Add { endpoints, .. }] => endpoints.keys().map(|a| a.port()).collect(),
        other => panic!("expected one add, got {other:?}"),
    }
}

#[test]
fn first_message_is_the_full_set_or_no_endpoints() {
    let mut sub = Subscriber::default();
    assert_eq!(
        added(&advance(&mut sub, ECHO, "echo.default:8080")),
        [17101, 17102]
    );
    let mut sub = Subscriber::default();
    let changes = advance(&mut sub, ECHO, "nope.default:8080");
    assert_eq!(changes, [Change::NoEndpoints { exists: false }]);
    let mut sub = Subscriber::default();
    let changes = advance(&mut sub, ECHO, "empty.default:80");
    assert_eq!(changes, [Change::NoEndpoints { exists: true }]);
}

#[test]
fn edits_become_adds_and_removes_of_only_what_changed() {
    let path = "echo.default:8080";
    let mut sub = Subscriber::default();
    advance(&mut sub, ECHO, path);
    assert_eq!(advance(&mut sub, ECHO, path), [], "no change, no message");

    let three = ECHO.replace(
        "      - {name: echo-1",
        "      - {name: echo-2, addr: \"127.0.0.1:17103\"}\n      - {name: echo-1",
    );
    assert_eq!(added(&advance(&mut sub, &three, path)), [17103]);

    let one = ECHO.replace("      - {name: echo-1, addr: \"127.0.0.1:17102\"}\n", "");
    let changes = advance(&mut sub, &one, path);
    assert_eq!(changes, [Change::Remove(vec![addr(17102), addr(17103)])]);

    // A changed label is re-sent as an add for that address only.
    let renamed = one.replace("serviceAccount: echo-sa", "serviceAccount: other");
    assert_eq!(added(&advance(&mut sub, &renamed, path)), [17101]);

    // A wholesale replacement adds the new before removing the old.
    let swapped = renamed.replace(
        "echo-0, addr: \"127.0.0.1:17101\"",
        "echo-9, addr: \"127.0.0.1:17109\"",
    );
    match advance(&mut sub, &swapped, path).as_slice() {
        [add @ Change::Add { .. }, Change::Remove(gone)] => {
            assert_eq!(added(std::slice::from_ref(add)), [17109]);
            assert_eq!(gone, &[addr(17101)]);
        }
        other => panic!("expected add then remove, got {other:?}"),
    }

    let none = ECHO.replace("workloads: [echo]", "workloads: []");
    let changes = advance(&mut sub, &none, path);
    assert_eq!(changes, [Change::NoEndpoints { exists: true }]);

    let gone = ECHO.replace("  - {name: echo, port: 8080, workloads: [echo]}\n", "");
    let changes = advance(&mut sub, &gone, path);
    assert_eq!(changes, [Change::NoEndpoints { exists: false }]);

    assert_eq!(added(&advance(&mut sub, ECHO, path)), [17101, 17102]);
}

#[test]
fn endpoint_labels_are_sorted_pairs_that_read_like_a_map() {
    let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
    let labels = EndpointLabels::from_pairs(vec![
        pair("serviceaccount", "web"),
        pair("pod", "web-0"),
        pair("deployment", "old"),
        pair("deployment", "web"),
    ]);
    let keys: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["deployment", "pod", "serviceaccount"]);
    assert_eq!(labels["deployment"], "web", "the later of two pairs wins");
    assert_eq!(labels.get("pod").map(String::as_str), Some("web-0"));
    assert!(!labels.contains_key("namespace"));
    let map: Labels = labels.clone().into_iter().collect();
    assert_eq!(labels, map);
    assert_eq!(labels.len(), 3);
    assert!(EndpointLabels::default().is_empty());
    let collected: EndpointLabels = map.into_iter().collect();
    assert_eq!(collected, labels);
}
