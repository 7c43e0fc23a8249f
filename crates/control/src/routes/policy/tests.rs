//! What applies to a Service port: attachment, consumer routes, defaults, annotations.

use super::*;
use crate::routes::parse;
use crate::workloads_file;

fn state() -> ClusterState {
    workloads_file::parse(
        "\
workloads:
  - {name: web, instances: [{name: web-0, addr: 127.0.0.1:17401}]}
  - {name: canary, instances: [{name: canary-0, addr: 127.0.0.1:17402}]}
services:
  - {name: web, port: 8080, workloads: [web]}
  - {name: web, port: 9090, workloads: [web]}
  - {name: canary, port: 8080, workloads: [canary]}
",
    )
    .unwrap()
}

fn target(name: &str, port: u16, caller: Option<&str>) -> Target {
    Target {
        service: ObjectRef::new("default", name),
        port,
        caller_namespace: caller.map(str::to_string),
    }
}

const ROUTE: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{group: \"\", kind: Service, name: web, port: 8080}]
  rules: [{backendRefs: [{name: canary, port: 8080}]}]
";

#[test]
fn a_route_applies_to_its_parent_port_only() {
    let routes = parse(ROUTE).unwrap();
    let p = compile(&state(), &routes, &target("web", 8080, None)).unwrap();
    assert_eq!(p.routes[0].kind, "HTTPRoute");
    let p = compile(&state(), &routes, &target("web", 9090, None)).unwrap();
    assert_eq!(p.routes[0].kind, "default");
    assert!(compile(&state(), &routes, &target("web", 1, None)).is_none());
    assert!(compile(&state(), &routes, &target("nope", 8080, None)).is_none());
}

#[test]
fn consumer_routes_replace_producer_routes_for_their_namespace_only() {
    let consumer = ROUTE
        .replace("name: r}", "name: c, namespace: client}")
        .replace(
            "name: web, port: 8080}",
            "name: web, namespace: default, port: 8080}",
        )
        .replace(
            "name: canary, port: 8080",
            "name: canary, namespace: default, port: 8080",
        );
    let routes = parse(&format!("{ROUTE}---\n{consumer}")).unwrap();
    let p = compile(&state(), &routes, &target("web", 8080, Some("client"))).unwrap();
    assert_eq!((p.routes.len(), p.routes[0].name.as_str()), (1, "c"));
    // Its backend is in another namespace than the route: not permitted.
    assert!(p.routes[0].rules[0].backends[0]
        .error
        .as_deref()
        .unwrap()
        .contains("RefNotPermitted"));
    let p = compile(&state(), &routes, &target("web", 8080, Some("other"))).unwrap();
    assert_eq!(p.routes[0].name, "r");
}

#[test]
fn a_rule_without_backends_sends_to_its_parent() {
    let routes = parse(&ROUTE.replace(
        "rules: [{backendRefs: [{name: canary, port: 8080}]}]",
        "rules: [{}]",
    ))
    .unwrap();
    let p = compile(&state(), &routes, &target("web", 8080, None)).unwrap();
    let b = &p.routes[0].rules[0].backends[0];
    assert_eq!((b.name.as_str(), b.port), ("web", 8080));
    assert_eq!(
        b.authority.as_deref(),
        Some("web.default.svc.cluster.local:8080")
    );
}

#[test]
fn service_annotations_set_the_default_route_and_failure_accrual_and_routes_override_them() {
    let service = "\
apiVersion: v1
kind: Service
metadata:
  name: web
  annotations:
    retry.linkerd.io/http: 5xx,429
    retry.linkerd.io/limit: \"2\"
    timeout.linkerd.io/request: 3s
    balancer.linkerd.io/failure-accrual: consecutive
    balancer.linkerd.io/failure-accrual-consecutive-max-failures: \"5\"
    unrelated.example.com/x: y
";
    let routes = parse(service).unwrap();
    assert_eq!(routes.services[&ObjectRef::new("default", "web")].len(), 5);
    let p = compile(&state(), &routes, &target("web", 8080, None)).unwrap();
    let rule = &p.routes[0].rules[0];
    assert_eq!(rule.timeouts.request, Some(Duration::from_secs(3)));
    let retry = rule.retry.as_ref().unwrap();
    assert_eq!(retry.max_retries, 2);
    assert_eq!(retry.http_statuses, [(500, 599), (429, 429)]);
    let accrual = p.failure_accrual.unwrap();
    assert_eq!(accrual.max_failures, 5);
    assert_eq!(accrual.min_penalty, DEFAULT_MIN_PENALTY);

    let route = ROUTE.replace(
        "metadata: {name: r}",
        "metadata: {name: r, annotations: {timeout.linkerd.io/request: 1s}}",
    );
    let routes = parse(&format!("{service}---\n{route}")).unwrap();
    let p = compile(&state(), &routes, &target("web", 8080, None)).unwrap();
    let rule = &p.routes[0].rules[0];
    assert_eq!(
        rule.timeouts.request,
        Some(Duration::from_secs(1)),
        "the route's wins"
    );
    assert_eq!(
        rule.retry.as_ref().unwrap().max_retries,
        2,
        "the Service's stays"
    );
}

#[test]
fn status_ranges_parse_as_linkerd_writes_them() {
    assert_eq!(
        parse_status_ranges("5xx, 429,500-504").unwrap(),
        [(500, 599), (429, 429), (500, 504)]
    );
    for bad in ["6xx", "abc", "504-500", "99", "600"] {
        assert!(parse_status_ranges(bad).is_err(), "{bad}");
    }
}
