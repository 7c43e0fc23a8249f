//! Linkerd's inbound authorization families (`inbound_http_authz_*`,
//! `inbound_http_route_not_found_total`, `inbound_http_local_ratelimit_total`,
//! `inbound_tcp_authz_*`; docs/authorization.md), labelled by server, route and
//! authorization.

use std::sync::{
    atomic::{AtomicU64, Ordering::Relaxed},
    Arc,
};

use ferry_api::metrics as names;

use super::{
    lock,
    text::{header, label, sample},
    Registry,
};
use crate::authz::Named;

/// What happened to an inbound connection or request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AuthzEvent {
    /// A request an authorization admitted.
    HttpAllow,
    /// A request no authorization admitted.
    HttpDeny,
    /// A request that matched no route of a server with routes.
    RouteNotFound,
    /// A request the local rate limit refused.
    RateLimited,
    /// A connection an authorization admitted.
    TcpAllow,
    /// A connection no authorization admitted.
    TcpDeny,
    /// A connection closed because a new policy no longer admits it.
    TcpTerminate,
}

impl AuthzEvent {
    const ALL: [(AuthzEvent, &'static str, &'static str); 7] = [
        (
            Self::HttpAllow,
            names::INBOUND_HTTP_AUTHZ_ALLOW_TOTAL,
            "Inbound HTTP requests an authorization admitted.",
        ),
        (
            Self::HttpDeny,
            names::INBOUND_HTTP_AUTHZ_DENY_TOTAL,
            "Inbound HTTP requests no authorization admitted.",
        ),
        (
            Self::RouteNotFound,
            names::INBOUND_HTTP_ROUTE_NOT_FOUND_TOTAL,
            "Inbound HTTP requests that matched no route of their server.",
        ),
        (
            Self::RateLimited,
            names::INBOUND_HTTP_LOCAL_RATELIMIT_TOTAL,
            "Inbound HTTP requests refused by the server's local rate limit.",
        ),
        (
            Self::TcpAllow,
            names::INBOUND_TCP_AUTHZ_ALLOW_TOTAL,
            "Inbound connections an authorization admitted.",
        ),
        (
            Self::TcpDeny,
            names::INBOUND_TCP_AUTHZ_DENY_TOTAL,
            "Inbound connections no authorization admitted.",
        ),
        (
            Self::TcpTerminate,
            names::INBOUND_TCP_AUTHZ_TERMINATE_TOTAL,
            "Inbound connections closed because a new policy no longer admits them.",
        ),
    ];
}

/// The labels of one series.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AuthzLabels {
    /// The server (`srv_kind`, `srv_name`).
    pub server: Named,
    /// The route, for requests on a server with routes.
    pub route: Option<Named>,
    /// The authorization, when one decided.
    pub authz: Option<Named>,
    /// Where the connection goes.
    pub target_addr: Arc<str>,
}

impl Registry {
    /// Counts an authorization event; past the series cap, new label sets are dropped.
    pub fn authz(&self, event: AuthzEvent, labels: AuthzLabels) {
        if let Some(n) = self.authz_counter(event, labels) {
            n.fetch_add(1, Relaxed);
        }
    }

    /// The counter of an event's label set, for callers that count it again and again (a
    /// connection's requests) and keep the handle rather than hash the labels each time.
    /// `None` past the series cap.
    pub fn authz_counter(&self, event: AuthzEvent, labels: AuthzLabels) -> Option<Arc<AtomicU64>> {
        let mut map = lock(&self.authz);
        let key = (event, labels);
        if let Some(n) = map.get(&key) {
            return Some(n.clone());
        }
        if map.len() >= self.limits.max_series {
            return None;
        }
        Some(map.entry(key).or_default().clone())
    }

    pub(super) fn encode_authz(&self, out: &mut String) {
        let series = lock(&self.authz).clone();
        for (event, name, help) in AuthzEvent::ALL {
            header(out, name, "counter", help);
            let mut rows: Vec<_> = series.iter().filter(|((e, _), _)| *e == event).collect();
            rows.sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
            for ((_, l), n) in rows {
                sample(out, name, n.load(Relaxed), |o| {
                    label(o, names::LABEL_SRV_KIND, &l.server.kind);
                    label(o, names::LABEL_SRV_NAME, &l.server.name);
                    if let Some(r) = &l.route {
                        label(o, names::LABEL_ROUTE_KIND, &r.kind);
                        label(o, names::LABEL_ROUTE_NAME, &r.name);
                    }
                    if let Some(a) = &l.authz {
                        label(o, names::LABEL_AUTHZ_KIND, &a.kind);
                        label(o, names::LABEL_AUTHZ_NAME, &a.name);
                    }
                    label(o, names::LABEL_TARGET_ADDR, &l.target_addr);
                });
            }
        }
    }
}
