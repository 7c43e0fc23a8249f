//! Rule precedence, as the Gateway API specifies it.
//!
//! `HTTPRoute`: across every rule of every route attached to a parent, the match with an
//! `Exact` path wins; then the `PathPrefix` with the most characters; then one with a
//! method; then the most header matches; then the most query parameter matches. Ties go to
//! the oldest route (`creationTimestamp`), then to the first by `namespace/name`, then to
//! the first rule and match in list order. Where a `RegularExpression` path ranks is left
//! to implementations: Ferry ranks it below `Exact` and above every `PathPrefix`, longer
//! patterns first, as Linkerd's proxy does, so both proxies agree on what the control
//! plane sends.
//!
//! `GRPCRoute`: the most characters of matching service, then of matching method, then the
//! most header matches (host names, which come first in the specification, do not apply
//! to Service parents); then the same route and list-order tie-breaks.

use std::cmp::{Ordering, Reverse};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::gateway::{GrpcRouteMatch, HttpRouteMatch, PathMatchType};

/// Where a match sits: which route (an index into the caller's list), rule and match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatchAt {
    /// The route's index in the list given.
    pub route: usize,
    /// The rule's index in the route.
    pub rule: usize,
    /// The match's index in the rule.
    pub matched: usize,
}

/// How specific an HTTP match is; greater wins.
fn http_rank(m: &HttpRouteMatch) -> (u8, usize, bool, usize, usize) {
    let (class, len) = match m.path.kind {
        PathMatchType::Exact => (2, m.path.value.len()),
        PathMatchType::RegularExpression => (1, m.path.value.len()),
        PathMatchType::PathPrefix => (0, m.path.value.len()),
    };
    (
        class,
        len,
        m.method.is_some(),
        m.headers.len(),
        m.query_params.len(),
    )
}

/// How specific a gRPC match is; greater wins.
fn grpc_rank(m: &GrpcRouteMatch) -> (usize, usize, usize) {
    let (service, method) = match &m.method {
        Some(method) => (
            method.service.as_deref().map_or(0, str::len),
            method.method.as_deref().map_or(0, str::len),
        ),
        None => (0, 0),
    };
    (service, method, m.headers.len())
}

/// Route order for ties: oldest first (routes without a creation time, as in local files,
/// after those with one), then `namespace/name`.
pub fn route_order(a: &ObjectMeta, b: &ObjectMeta) -> Ordering {
    let created = |m: &ObjectMeta| match &m.creation_timestamp {
        Some(t) => (0, Some(t.clone())),
        None => (1, None),
    };
    let key = |m: &ObjectMeta| {
        (
            m.namespace.clone().unwrap_or_default(),
            m.name.clone().unwrap_or_default(),
        )
    };
    created(a)
        .cmp(&created(b))
        .then_with(|| key(a).cmp(&key(b)))
}

/// Sorts indices of `routes` by [`route_order`].
pub fn sort_routes(metas: &[&ObjectMeta]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..metas.len()).collect();
    order.sort_by(|&a, &b| route_order(metas[a], metas[b]));
    order
}

/// Every match of every route, most specific first. `routes[i]` is route `i`'s metadata
/// and its rules' matches.
pub fn http_matches(routes: &[(&ObjectMeta, Vec<&[HttpRouteMatch]>)]) -> Vec<MatchAt> {
    ordered(routes, http_rank)
}

/// Every match of every gRPC route, most specific first. A rule without matches matches
/// every call and ranks as an empty match.
pub fn grpc_matches(routes: &[(&ObjectMeta, Vec<&[GrpcRouteMatch]>)]) -> Vec<MatchAt> {
    let everything = [GrpcRouteMatch::default()];
    let filled: Vec<(&ObjectMeta, Vec<&[GrpcRouteMatch]>)> = routes
        .iter()
        .map(|(meta, rules)| {
            let rules = rules
                .iter()
                .map(|m| if m.is_empty() { &everything[..] } else { *m })
                .collect();
            (*meta, rules)
        })
        .collect();
    ordered(&filled, grpc_rank)
}

fn ordered<M, K: Ord>(routes: &[(&ObjectMeta, Vec<&[M]>)], rank: impl Fn(&M) -> K) -> Vec<MatchAt> {
    let metas: Vec<&ObjectMeta> = routes.iter().map(|(m, _)| *m).collect();
    let route_rank = {
        let order = sort_routes(&metas);
        let mut rank = vec![0; order.len()];
        for (position, route) in order.into_iter().enumerate() {
            rank[route] = position;
        }
        rank
    };
    let mut all: Vec<(MatchAt, K)> = Vec::new();
    for (r, (_, rules)) in routes.iter().enumerate() {
        for (rule, matches) in rules.iter().enumerate() {
            for (matched, m) in matches.iter().enumerate() {
                all.push((
                    MatchAt {
                        route: r,
                        rule,
                        matched,
                    },
                    rank(m),
                ));
            }
        }
    }
    all.sort_by(|(a, ka), (b, kb)| {
        Reverse(ka)
            .cmp(&Reverse(kb))
            .then_with(|| route_rank[a.route].cmp(&route_rank[b.route]))
            .then_with(|| (a.rule, a.matched).cmp(&(b.rule, b.matched)))
    });
    all.into_iter().map(|(at, _)| at).collect()
}

#[cfg(test)]
mod tests;
