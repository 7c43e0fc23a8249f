//! One test per precedence rule of the Gateway API (HTTPRoute, then GRPCRoute).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::super::gateway::*;
use super::*;

fn meta(ns: &str, name: &str, created: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.to_string()),
        name: Some(name.to_string()),
        creation_timestamp: created.map(|t| Time(t.parse().unwrap())),
        ..ObjectMeta::default()
    }
}

fn m(yaml: &str) -> HttpRouteMatch {
    serde_yaml_ng::from_str(yaml).unwrap()
}

fn g(yaml: &str) -> GrpcRouteMatch {
    serde_yaml_ng::from_str(yaml).unwrap()
}

/// Ranks matches of one route, one rule each: returns the rule order.
fn rank_http(matches: &[HttpRouteMatch]) -> Vec<usize> {
    let meta = meta("ns", "r", None);
    let rules: Vec<&[HttpRouteMatch]> = matches.iter().map(std::slice::from_ref).collect();
    http_matches(&[(&meta, rules)])
        .into_iter()
        .map(|at| at.rule)
        .collect()
}

#[test]
fn exact_path_beats_any_prefix() {
    let order = rank_http(&[
        m("{path: {type: PathPrefix, value: /very/long/prefix/indeed}}"),
        m("{path: {type: Exact, value: /a}}"),
    ]);
    assert_eq!(order, [1, 0]);
}

#[test]
fn the_longer_prefix_wins() {
    let order = rank_http(&[
        m("{path: {value: /}}"),
        m("{path: {value: /api}}"),
        m("{path: {value: /api/v1}}"),
    ]);
    assert_eq!(order, [2, 1, 0]);
}

#[test]
fn a_method_match_breaks_a_path_tie() {
    let order = rank_http(&[
        m("{path: {value: /api}, headers: [{name: a, value: b}]}"),
        m("{path: {value: /api}, method: POST}"),
    ]);
    assert_eq!(order, [1, 0]);
}

#[test]
fn more_headers_break_a_method_tie() {
    let order = rank_http(&[
        m("{headers: [{name: a, value: b}], queryParams: [{name: q, value: 1}, {name: r, value: 2}]}"),
        m("{headers: [{name: a, value: b}, {name: c, value: d}]}"),
    ]);
    assert_eq!(order, [1, 0]);
}

#[test]
fn more_query_params_break_a_header_tie() {
    let order = rank_http(&[
        m("{queryParams: [{name: q, value: 1}]}"),
        m("{queryParams: [{name: q, value: 1}, {name: r, value: 2}]}"),
    ]);
    assert_eq!(order, [1, 0]);
}

#[test]
fn regular_expressions_rank_between_exact_and_prefix() {
    let order = rank_http(&[
        m("{path: {value: /api/v1/long}}"),
        m("{path: {type: RegularExpression, value: \"/a.*\"}}"),
        m("{path: {type: Exact, value: /x}}"),
    ]);
    assert_eq!(order, [2, 1, 0]);
}

#[test]
fn equal_matches_go_to_the_oldest_route() {
    let newer = meta("a", "first-by-name", Some("2026-12-05T22:31:24Z"));
    let older = meta("z", "last-by-name", Some("2026-12-05T22:31:23Z"));
    let same = [m("{path: {value: /api}}")];
    let order = http_matches(&[(&newer, vec![&same[..]]), (&older, vec![&same[..]])]);
    assert_eq!(order[0].route, 1);
    // A route without a creation time (local files) comes after those with one.
    let local = meta("a", "a", None);
    let order = http_matches(&[(&local, vec![&same[..]]), (&newer, vec![&same[..]])]);
    assert_eq!(order[0].route, 1);
}

#[test]
fn then_to_the_first_route_by_namespace_and_name() {
    let t = Some("2026-12-05T22:31:23Z");
    let b = meta("ns", "b", t);
    let a = meta("ns", "a", t);
    let other_ns = meta("aa", "z", t);
    let same = [m("{path: {value: /}}")];
    let order = http_matches(&[
        (&b, vec![&same[..]]),
        (&a, vec![&same[..]]),
        (&other_ns, vec![&same[..]]),
    ]);
    let routes: Vec<usize> = order.iter().map(|at| at.route).collect();
    assert_eq!(routes, [2, 1, 0]);
}

#[test]
fn then_to_the_first_rule_and_match_in_list_order() {
    let r = meta("ns", "r", None);
    let rule0 = [m("{path: {value: /b}}"), m("{path: {value: /a}}")];
    let rule1 = [m("{path: {value: /c}}")];
    let order = http_matches(&[(&r, vec![&rule0[..], &rule1[..]])]);
    let at: Vec<(usize, usize)> = order.iter().map(|a| (a.rule, a.matched)).collect();
    assert_eq!(at, [(0, 0), (0, 1), (1, 0)]);
}

#[test]
fn specificity_beats_age() {
    let older = meta("ns", "old", Some("2020-01-01T00:00:00Z"));
    let newer = meta("ns", "new", Some("2026-01-01T00:00:00Z"));
    let broad = [m("{path: {value: /}}")];
    let narrow = [m("{path: {value: /api}}")];
    let order = http_matches(&[(&older, vec![&broad[..]]), (&newer, vec![&narrow[..]])]);
    assert_eq!(order[0].route, 1);
}

fn rank_grpc(matches: &[Vec<GrpcRouteMatch>]) -> Vec<usize> {
    let meta = meta("ns", "r", None);
    let rules: Vec<&[GrpcRouteMatch]> = matches.iter().map(Vec::as_slice).collect();
    grpc_matches(&[(&meta, rules)])
        .into_iter()
        .map(|at| at.rule)
        .collect()
}

#[test]
fn grpc_the_longer_service_wins() {
    let order = rank_grpc(&[
        vec![g("{method: {service: a.B, method: VeryLongMethodName}}")],
        vec![g("{method: {service: pkg.v1.Service}}")],
    ]);
    assert_eq!(order, [1, 0]);
}

#[test]
fn grpc_then_the_longer_method() {
    let order = rank_grpc(&[
        vec![g(
            "{method: {service: pkg.S, method: A}, headers: [{name: a, value: b}]}",
        )],
        vec![g("{method: {service: pkg.S, method: Abc}}")],
    ]);
    assert_eq!(order, [1, 0]);
}

#[test]
fn grpc_then_more_headers_and_a_rule_without_matches_last() {
    let order = rank_grpc(&[
        vec![],
        vec![g("{method: {service: pkg.S}}")],
        vec![g(
            "{method: {service: pkg.S}, headers: [{name: a, value: b}]}",
        )],
    ]);
    assert_eq!(order, [2, 1, 0]);
}
