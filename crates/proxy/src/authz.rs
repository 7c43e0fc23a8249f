//! Inbound authorization (docs/authorization.md): an inbound port's `Server` policy,
//! compiled once per update into the checks connections and requests go through.
//!
//! A connection is decided once, when it is accepted, from the client's address and mTLS
//! identity, unless the server needs to see requests (routes, a JWT requirement, a rate
//! limit); then each request is decided on the general HTTP path ([`crate::forward`]).
//! Where the policies come from and how connections are watched is [`feed`]'s and
//! [`conn`]'s; JWTs are [`jwt`]'s, rate limits [`rate`]'s.

pub mod conn;
pub mod feed;
pub mod jwt;
pub mod rate;

use std::{
    collections::HashSet,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use ferry_api::{policy as ext, AuthzFailure, ProxyErrorReason};
use http::StatusCode;
use ipnet::IpNet;
use linkerd2_proxy_api::inbound::{self as pb, authn::permit_mesh_tls::Clients, proxy_protocol};

use crate::{
    errors::ProxyError,
    policy::{grpc_match, http_match, Match, ObjectLabels, Rank, RequestView},
};

use self::{jwt::JwtCheck, rate::RateLimit};

/// Who is asking: the client's address and its mTLS identity, if it has one.
#[derive(Clone, Copy, Debug)]
pub struct Client<'a> {
    /// The client's IP address.
    pub ip: IpAddr,
    /// The identity the client proved over mTLS.
    pub identity: Option<&'a str>,
}

/// An authorization's or route's name in metrics: `kind` and `name`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Named {
    /// `kind` (`default` for defaults).
    pub kind: Arc<str>,
    /// `name` (the resource's, or the default's).
    pub name: Arc<str>,
}

impl Named {
    /// The resource's kind and name, as Linkerd labels them (its namespace is the
    /// workload's own).
    fn of(meta: Option<&linkerd2_proxy_api::meta::Metadata>) -> Self {
        let o = ObjectLabels::from_meta(meta);
        Self {
            kind: o.kind,
            name: o.name,
        }
    }

    /// A default's name.
    pub fn default_named(name: &str) -> Self {
        Self {
            kind: "default".into(),
            name: name.into(),
        }
    }
}

/// Which identities an authorization admits.
#[derive(Debug)]
enum Authn {
    /// Anyone, TLS or not.
    Unauthenticated,
    /// Any meshed client.
    AnyMesh,
    /// Meshed clients with one of these identities, or ending in one of these suffixes
    /// (each `.`-prefixed; an empty suffix is any identity).
    Mesh {
        identities: Vec<String>,
        suffixes: Vec<String>,
    },
}

/// One compiled authorization.
pub struct Authz {
    /// Its name in metrics.
    pub named: Named,
    networks: Vec<(IpNet, Vec<IpNet>)>,
    authn: Authn,
    jwt: Vec<Arc<JwtCheck>>,
    /// The audited server's catch-all (`Default("audit")`).
    pub audit: bool,
}

impl Authz {
    /// Whether the client's address and identity are admitted (JWTs aside).
    fn admits(&self, client: Client<'_>) -> bool {
        let in_network = self.networks.is_empty()
            || self.networks.iter().any(|(net, except)| {
                net.contains(&client.ip) && !except.iter().any(|e| e.contains(&client.ip))
            });
        in_network
            && match &self.authn {
                Authn::Unauthenticated => true,
                Authn::AnyMesh => client.identity.is_some(),
                Authn::Mesh {
                    identities,
                    suffixes,
                } => client.identity.is_some_and(|id| {
                    identities.iter().any(|i| i == id || i == "*")
                        || suffixes
                            .iter()
                            .any(|s| s.is_empty() || id.ends_with(s.as_str()))
                }),
            }
    }
}

/// One inbound route: when it applies, and who may use it.
pub struct InboundRoute {
    /// Its name in metrics.
    pub named: Named,
    /// The matches of each rule (a rule without matches matches everything).
    rules: Vec<Vec<Match>>,
    authzs: Vec<Authz>,
}

/// The compiled policy of one inbound port.
pub struct ServerPolicy {
    /// The `Server` (or default policy) in metrics.
    pub server: Named,
    /// Server-wide authorizations, the audit catch-all last.
    authzs: Vec<Authz>,
    /// Routes (HTTP or gRPC); empty when the server has none that decides anything.
    routes: Vec<InboundRoute>,
    /// The server's local rate limit.
    pub rate_limit: Option<RateLimit>,
    /// Whether requests must be seen: routes, JWT requirements or a rate limit.
    per_request: bool,
    /// Audit reasons already logged (once per reason and policy).
    audit_logged: Mutex<HashSet<ProxyErrorReason>>,
}

impl std::fmt::Debug for ServerPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerPolicy")
            .field("server", &self.server)
            .field("authzs", &self.authzs.len())
            .field("routes", &self.routes.len())
            .field("per_request", &self.per_request)
            .finish()
    }
}

/// What admitted a connection or request.
#[derive(Clone, Debug)]
pub struct Allowed {
    /// The route (for requests on a server with routes).
    pub route: Option<Named>,
    /// The authorization.
    pub authz: Named,
    /// Admitted only by the audit catch-all: this is why it would have been denied.
    pub audit: Option<ProxyErrorReason>,
}

/// Why a request was refused.
#[derive(Debug)]
pub enum Refused {
    /// No authorization admits it (the reason says which failure), on this route.
    Denied(ProxyErrorReason, Option<Named>),
    /// The server has routes and none matches.
    NoRoute,
    /// The rate limit refused it, after this authorization admitted it.
    RateLimited(Allowed),
}

impl ServerPolicy {
    /// Whether requests must be decided one by one.
    pub fn per_request(&self) -> bool {
        self.per_request
    }

    /// The connection-level decision: the first server-wide authorization without a JWT
    /// requirement that admits the client. `Err` with the reason otherwise.
    pub fn admit(&self, client: Client<'_>) -> Result<Allowed, ProxyErrorReason> {
        decide(&self.authzs, &[], client, &|_| None).map(|a| self.audited(a, None))
    }

    /// The request-level decision: its route, then the authorizations (server-wide and the
    /// route's, the audit catch-all last) with their JWTs, then the rate limit.
    pub fn check(
        &self,
        client: Client<'_>,
        req: &dyn RequestView,
        header: &dyn Fn(&http::HeaderName) -> Option<Vec<u8>>,
    ) -> Result<Allowed, Refused> {
        let route = if self.routes.is_empty() {
            None
        } else {
            Some(self.select(req).ok_or(Refused::NoRoute)?)
        };
        let route_authzs = route.map_or(&[][..], |r| &r.authzs[..]);
        let named = route.map(|r| r.named.clone());
        let allowed = decide(&self.authzs, route_authzs, client, &|j: &JwtCheck| {
            Some(j.verify(header(j.header()).as_deref()))
        })
        .map_err(|reason| Refused::Denied(reason, named.clone()))?;
        let allowed = self.audited(allowed, named);
        if let Some(rl) = &self.rate_limit {
            if !rl.check(client.identity) {
                return Err(Refused::RateLimited(allowed));
            }
        }
        Ok(allowed)
    }

    fn audited(&self, mut allowed: Allowed, route: Option<Named>) -> Allowed {
        allowed.route = route;
        if let Some(reason) = allowed.audit {
            let first = self
                .audit_logged
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(reason);
            if first {
                tracing::info!(server = %self.server.name, %reason, "audit: admitted what would have been denied (logged once per reason)");
            }
        }
        allowed
    }

    /// The most specific matching rule's route (ties to the earlier route).
    fn select(&self, req: &dyn RequestView) -> Option<&InboundRoute> {
        let mut best: Option<(Rank, &InboundRoute)> = None;
        for route in &self.routes {
            for matches in &route.rules {
                let rank = if matches.is_empty() {
                    Some((1, 1, false, 0, 0))
                } else {
                    matches
                        .iter()
                        .filter(|m| m.is_match(req))
                        .map(Match::rank)
                        .max()
                };
                if let Some(rank) = rank {
                    if best.as_ref().is_none_or(|(b, _)| rank > *b) {
                        best = Some((rank, route));
                    }
                }
            }
        }
        best.map(|(_, r)| r)
    }

    /// The proxy-made response for a refusal.
    pub fn refusal(&self, refused: &Refused) -> ProxyError {
        match refused {
            Refused::Denied(reason, route) => ProxyError::new(
                *reason,
                format!(
                    "server {}{}: {}",
                    self.server.name,
                    route
                        .as_ref()
                        .map(|r| format!(" route {}", r.name))
                        .unwrap_or_default(),
                    describe(*reason)
                ),
            ),
            Refused::NoRoute => ProxyError::new(
                ProxyErrorReason::NoRoute,
                format!(
                    "no route of server {} matches the request",
                    self.server.name
                ),
            )
            .with_statuses(StatusCode::NOT_FOUND, 12),
            Refused::RateLimited(_) => ProxyError::new(
                ProxyErrorReason::RateLimited,
                format!(
                    "server {}: local rate limit {} exceeded",
                    self.server.name,
                    self.rate_limit
                        .as_ref()
                        .map(|r| r.labels.name.clone())
                        .unwrap_or_default()
                ),
            ),
        }
    }
}

/// What a reason means, for the response body.
pub fn describe(reason: ProxyErrorReason) -> &'static str {
    match reason {
        ProxyErrorReason::Unauthorized(f) => match f {
            AuthzFailure::NoAuthorization => "no authorization admits this client",
            AuthzFailure::JwtMissing => "JWT missing",
            AuthzFailure::JwtMalformed => "JWT invalid: malformed",
            AuthzFailure::JwtBadSignature => "JWT invalid: bad signature",
            AuthzFailure::JwtUnknownKey => "JWT invalid: unknown signing key",
            AuthzFailure::JwtExpired => "JWT invalid: expired",
            AuthzFailure::JwtNotYetValid => "JWT invalid: not yet valid",
            AuthzFailure::JwtWrongIssuer => "JWT invalid: wrong issuer",
            AuthzFailure::JwtWrongAudience => "JWT invalid: wrong audience",
            AuthzFailure::JwtMissingClaim => "JWT invalid: a required claim is missing",
        },
        _ => "denied",
    }
}

/// The first authorization (of `server`, then `route`; the audit catch-all last) that
/// admits the client and whose JWTs verify (`jwt` returns `None` where requests are not
/// seen: such authorizations then admit nothing). `Err`: the first JWT failure of an
/// authorization that admitted the client otherwise, or `NoAuthorization`.
fn decide(
    server: &[Authz],
    route: &[Authz],
    client: Client<'_>,
    jwt: &dyn Fn(&JwtCheck) -> Option<Result<(), AuthzFailure>>,
) -> Result<Allowed, ProxyErrorReason> {
    let mut failure = AuthzFailure::NoAuthorization;
    let all = || server.iter().chain(route);
    for authz in all().filter(|a| !a.audit).chain(all().filter(|a| a.audit)) {
        if !authz.admits(client) {
            continue;
        }
        let verified = authz.jwt.iter().try_for_each(|j| match jwt(j) {
            None => Err(None),
            Some(r) => r.map_err(Some),
        });
        match verified {
            Ok(()) => {
                return Ok(Allowed {
                    route: None,
                    authz: authz.named.clone(),
                    audit: authz
                        .audit
                        .then_some(ProxyErrorReason::Unauthorized(failure)),
                })
            }
            Err(Some(f)) if failure == AuthzFailure::NoAuthorization => failure = f,
            Err(_) => {}
        }
    }
    Err(ProxyErrorReason::Unauthorized(failure))
}

// ---- compiling ----

fn networks(nets: &[pb::Network]) -> Result<Vec<(IpNet, Vec<IpNet>)>, String> {
    let net = |n: &linkerd2_proxy_api::net::IpNetwork| {
        IpNet::try_from(*n).map_err(|e| format!("invalid network {n:?}: {e}"))
    };
    nets.iter()
        .map(|n| {
            let Some(main) = &n.net else {
                return Err("network without an address".to_string());
            };
            Ok((
                net(main)?,
                n.except.iter().map(net).collect::<Result<_, _>>()?,
            ))
        })
        .collect()
}

fn authz(a: &pb::Authz, jwt: Vec<Arc<JwtCheck>>) -> Result<Authz, String> {
    let named = Named::of(a.metadata.as_ref());
    let authn = match a.authentication.as_ref().and_then(|a| a.permit.as_ref()) {
        None => {
            return Err(format!(
                "authorization {} without authentication",
                named.name
            ))
        }
        Some(pb::authn::Permit::Unauthenticated(_)) => Authn::Unauthenticated,
        Some(pb::authn::Permit::MeshTls(m)) => match &m.clients {
            None | Some(Clients::Unauthenticated(_)) => Authn::AnyMesh,
            Some(Clients::Identities(ids)) => Authn::Mesh {
                identities: ids.identities.iter().map(|i| i.name.clone()).collect(),
                suffixes: ids
                    .suffixes
                    .iter()
                    .map(|s| {
                        if s.parts.is_empty() {
                            String::new()
                        } else {
                            format!(".{}", s.parts.join("."))
                        }
                    })
                    .collect(),
            },
        },
    };
    Ok(Authz {
        audit: named.kind.as_ref() == "default" && named.name.as_ref() == ext::inbound::AUDIT,
        named,
        networks: networks(&a.networks)?,
        authn,
        jwt,
    })
}

/// Compiles a `Server` message (with Ferry's extensions).
pub fn compile(server: &ext::inbound::Server) -> Result<ServerPolicy, String> {
    let named = Named {
        kind: server
            .labels
            .get("kind")
            .map_or("server", String::as_str)
            .into(),
        name: server
            .labels
            .get("name")
            .map_or("unknown", String::as_str)
            .into(),
    };
    // JWT requirements by (route, authz): route 0 is the server-wide list.
    let mut jwts: std::collections::HashMap<(u32, u32), Vec<Arc<JwtCheck>>> = Default::default();
    for x in &server.authz_extensions {
        let checks = x
            .jwt
            .iter()
            .map(|j| JwtCheck::new(j).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        jwts.entry((x.route, x.authz)).or_default().extend(checks);
    }
    let mut take = |route: u32, i: usize| {
        jwts.remove(&(route, u32::try_from(i).unwrap_or(u32::MAX)))
            .unwrap_or_default()
    };
    let authzs = server
        .authorizations
        .iter()
        .enumerate()
        .map(|(i, a)| authz(a, take(0, i)))
        .collect::<Result<Vec<_>, _>>()?;

    let (http, grpc, rl) = match server.protocol.as_ref().and_then(|p| p.kind.as_ref()) {
        Some(proxy_protocol::Kind::Detect(d)) => (
            &d.http_routes[..],
            &[][..],
            d.http_local_rate_limit.as_ref(),
        ),
        Some(proxy_protocol::Kind::Http1(h)) => {
            (&h.routes[..], &[][..], h.local_rate_limit.as_ref())
        }
        Some(proxy_protocol::Kind::Http2(h)) => {
            (&h.routes[..], &[][..], h.local_rate_limit.as_ref())
        }
        Some(proxy_protocol::Kind::Grpc(g)) => (&[][..], &g.routes[..], None),
        _ => (&[][..], &[][..], None),
    };
    let mut routes = Vec::new();
    // HTTP and gRPC routes alike (one of the two lists is empty): route n ≥ 1 is the
    // (n−1)-th, as the JWT extensions count them.
    macro_rules! compile_routes {
        ($list:expr, $matcher:expr) => {
            for (i, r) in $list.iter().enumerate() {
                let rules = r
                    .rules
                    .iter()
                    .map(|rule| rule.matches.iter().map($matcher).collect())
                    .collect::<Result<Vec<Vec<Match>>, String>>()?;
                let route = (i + 1) as u32;
                let authzs = r
                    .authorizations
                    .iter()
                    .enumerate()
                    .map(|(j, a)| authz(a, take(route, j)))
                    .collect::<Result<Vec<_>, _>>()?;
                routes.push((
                    Named::of(r.metadata.as_ref()),
                    rules,
                    authzs,
                    &r.authorizations,
                ));
            }
        };
    }
    compile_routes!(http, http_match);
    compile_routes!(grpc, grpc_match);
    // A lone default route that matches everything and adds no authorization of its own
    // (Linkerd's control plane sends one for servers without routes) decides nothing:
    // without it, the server can be decided per connection.
    let decides_nothing = routes.len() == 1
        && {
            let (named, rules, authzs, raw) = &routes[0];
            named.kind.as_ref() == "default"
            && rules.iter().any(|m| {
                m.is_empty()
                    || m.iter().any(|m| {
                        matches!(m, Match::Http { path: Some(crate::policy::PathMatch::Prefix(p)), headers, query, method: None }
                            if p.trim_end_matches('/').is_empty() && headers.is_empty() && query.is_empty())
                    })
            })
            && authzs.iter().all(|a| a.jwt.is_empty())
            && (raw.is_empty() || **raw == server.authorizations)
        };
    if decides_nothing {
        routes.clear();
    }
    let routes: Vec<InboundRoute> = routes
        .into_iter()
        .map(|(named, rules, authzs, _)| InboundRoute {
            named,
            rules,
            authzs,
        })
        .collect();
    if let Some((route, authz)) = jwts.keys().next() {
        // Requirements for an authorization that is not there: the message is inconsistent.
        return Err(format!(
            "a JWT requirement names authorization {authz} of route {route}, which does not exist"
        ));
    }
    let rate_limit = rl.and_then(RateLimit::new);
    let per_request =
        !routes.is_empty() || rate_limit.is_some() || authzs.iter().any(|a| !a.jwt.is_empty());
    Ok(ServerPolicy {
        server: named,
        authzs,
        routes,
        rate_limit,
        per_request,
        audit_logged: Mutex::default(),
    })
}

#[cfg(test)]
mod tests;
