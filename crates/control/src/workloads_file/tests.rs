use super::*;

/// The issue's example: `echo` in `default` on 8080, two instances behind proxies.
const ECHO: &str = r#"
workloads:
  - name: echo
    kind: deployment
    serviceAccount: echo
    labels: { app: echo }
    instances:
      - name: echo-0
        addr: 127.0.0.1:17101
      - name: echo-1
        addr: 127.0.0.1:17102
services:
  - name: echo
    port: 8080
    workloads: [echo]
"#;

fn echo() -> ObjectRef {
    ObjectRef::new("default", "echo")
}

#[test]
fn the_echo_example_declares_one_service_with_two_endpoints() {
    let state = parse(ECHO).expect("valid file");
    assert_eq!(state.cluster_domain, "cluster.local");
    assert_eq!(state.trust_domain, "cluster.local");
    assert!(state.namespaces.contains("default"));
    let port = &state.services[&echo()].ports[&8080];
    assert_eq!(port.target_port, 8080, "targetPort defaults to port");
    let addrs: Vec<String> = port.endpoints.keys().map(|a| a.to_string()).collect();
    assert_eq!(addrs, ["127.0.0.1:17101", "127.0.0.1:17102"]);
    let instance = &state.instances[&ObjectRef::new("default", "echo-0")];
    assert_eq!(instance.service_account, "echo");
    assert!(instance.meshed);
    assert_eq!(
        instance.owner.as_ref().map(|o| o.kind.as_str()),
        Some("deployment")
    );
}

#[test]
fn defaults_fill_namespace_kind_and_service_account() {
    let state = parse(
        "workloads: [{name: w, instances: [{name: w-0, addr: '127.0.0.1:1'}]}]\n\
         namespaces: [empty]\nclusterDomain: Example.COM.\n",
    )
    .unwrap();
    let instance = &state.instances[&ObjectRef::new("default", "w-0")];
    assert_eq!(instance.service_account, "default");
    assert_eq!(instance.owner.as_ref().unwrap().kind, "deployment");
    assert_eq!(state.cluster_domain, "example.com");
    assert!(state.namespaces.contains("empty"));
}

#[test]
fn selectors_pick_workloads_by_label_in_the_same_namespace() {
    let text = r#"
workloads:
  - {name: a, labels: {app: x}, instances: [{name: a-0, addr: "127.0.0.1:1"}]}
  - {name: b, labels: {app: y}, instances: [{name: b-0, addr: "127.0.0.1:2"}]}
  - {name: c, namespace: other, labels: {app: x}, instances: [{name: c-0, addr: "127.0.0.1:3"}]}
services:
  - {name: x, port: 80, targetPort: 8080, selector: {app: x}}
  - {name: x, port: 81, workloads: [b]}
"#;
    let state = parse(text).unwrap();
    let service = &state.services[&ObjectRef::new("default", "x")];
    let port80: Vec<_> = service.ports[&80]
        .endpoints
        .keys()
        .map(|a| a.port())
        .collect();
    assert_eq!(port80, [1]);
    assert_eq!(service.ports[&80].target_port, 8080);
    let port81: Vec<_> = service.ports[&81]
        .endpoints
        .keys()
        .map(|a| a.port())
        .collect();
    assert_eq!(port81, [2]);
}

#[test]
fn instances_may_listen_on_ipv6() {
    let state = parse(
        "workloads: [{name: w, instances: [{name: w-0, addr: '[::1]:17101'}]}]\n\
         services: [{name: s, port: 80, workloads: [w]}]\n",
    )
    .unwrap();
    let port = &state.services[&ObjectRef::new("default", "s")].ports[&80];
    let addrs: Vec<String> = port.endpoints.keys().map(|a| a.to_string()).collect();
    assert_eq!(addrs, ["[::1]:17101"]);
}

#[test]
fn empty_text_is_an_empty_cluster() {
    assert_eq!(parse("").unwrap(), ClusterState::default());
    assert_eq!(parse("# nothing yet\n").unwrap(), ClusterState::default());
}

#[test]
fn mistakes_are_rejected_with_what_failed() {
    let cases = [
        ("workloads: [", "invalid workloads file"),
        ("servces: []", "invalid workloads file"),
        (
            "services: [{name: s, port: 80, workloads: [nope]}]",
            "service default/s is backed by workload \"nope\", which is not declared in namespace default",
        ),
        ("services: [{name: S, port: 80}]", "invalid service name \"S\""),
        ("services: [{name: s, port: 0}]", "service default/s has port 0"),
        (
            "services: [{name: s, port: 80}, {name: s, port: 80}]",
            "service default/s declares port 80 twice",
        ),
        ("workloads: [{name: w}, {name: w}]", "workload default/w is declared twice"),
        (
            "workloads: [{name: w, instances: [{name: i, addr: '127.0.0.1:1'}, {name: j, addr: '127.0.0.1:1'}]}]",
            "instances default/i and default/j both listen on 127.0.0.1:1",
        ),
        (
            "workloads: [{name: w, instances: [{name: i, addr: '127.0.0.1:1'}, {name: i, addr: '127.0.0.1:2'}]}]",
            "instance default/i is declared twice",
        ),
        (
            "workloads: [{name: w, instances: [{name: i, addr: 'localhost:1'}]}]",
            "invalid workloads file",
        ),
    ];
    for (text, expected) in cases {
        let error = parse(text).expect_err(text).to_string();
        assert!(error.starts_with(expected), "{text}: got {error:?}");
    }
}

#[test]
fn syntax_errors_say_where() {
    let error = parse("workloads:\n  - name: w\n    instances: 3\n").unwrap_err();
    let cause = std::error::Error::source(&error)
        .expect("has a cause")
        .to_string();
    assert!(cause.contains("line 3"), "{cause}");
}
