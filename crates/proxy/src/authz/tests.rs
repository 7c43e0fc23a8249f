use std::collections::HashMap;

use ferry_api::{policy::inbound as ext, AuthzFailure as F, ProxyErrorReason as R};
use linkerd2_proxy_api::{
    http_route as hr, http_types, inbound as pb, meta,
    net::{IpAddress, IpNetwork},
};

use super::{
    compile,
    feed::{parse_networks, DefaultPolicy},
    jwt::tests::{good_claims, requirement, TestKey},
    Client, Refused, ServerPolicy,
};

fn resource(kind: &str, name: &str) -> Option<meta::Metadata> {
    Some(meta::Metadata {
        kind: Some(meta::metadata::Kind::Resource(meta::Resource {
            group: "policy.ferry.io".into(),
            kind: kind.into(),
            name: name.into(),
            namespace: "ns".into(),
            ..Default::default()
        })),
    })
}

fn net(cidr: &str) -> IpNetwork {
    let n: ipnet::IpNet = cidr.parse().unwrap();
    IpNetwork {
        ip: Some(IpAddress::from(n.addr())),
        prefix_len: u32::from(n.prefix_len()),
    }
}

fn unauthenticated() -> pb::Authn {
    pb::Authn {
        permit: Some(pb::authn::Permit::Unauthenticated(
            pb::authn::PermitUnauthenticated {},
        )),
    }
}

fn mesh(identities: &[&str], suffixes: &[&[&str]]) -> pb::Authn {
    pb::Authn {
        permit: Some(pb::authn::Permit::MeshTls(pb::authn::PermitMeshTls {
            clients: Some(pb::authn::permit_mesh_tls::Clients::Identities(
                pb::authn::permit_mesh_tls::PermitClientIdentities {
                    identities: identities
                        .iter()
                        .map(|i| pb::Identity {
                            name: i.to_string(),
                        })
                        .collect(),
                    suffixes: suffixes
                        .iter()
                        .map(|p| pb::IdentitySuffix {
                            parts: p.iter().map(|s| s.to_string()).collect(),
                        })
                        .collect(),
                },
            )),
        })),
    }
}

fn authz(name: &str, nets: &[(&str, &[&str])], authn: pb::Authn) -> pb::Authz {
    pb::Authz {
        networks: nets
            .iter()
            .map(|(n, except)| pb::Network {
                net: Some(net(n)),
                except: except.iter().map(|e| net(e)).collect(),
            })
            .collect(),
        authentication: Some(authn),
        labels: HashMap::new(),
        metadata: resource("AuthorizationPolicy", name),
    }
}

fn server(authzs: Vec<pb::Authz>, routes: Vec<pb::HttpRoute>) -> ext::Server {
    ext::Server {
        protocol: Some(pb::ProxyProtocol {
            kind: Some(pb::proxy_protocol::Kind::Http1(pb::proxy_protocol::Http1 {
                routes,
                local_rate_limit: None,
            })),
        }),
        authorizations: authzs,
        labels: HashMap::from([
            ("kind".to_string(), "server".to_string()),
            ("name".to_string(), "web-http".to_string()),
        ]),
        ..Default::default()
    }
}

fn route(name: &str, method: Option<&str>, prefix: &str, authzs: Vec<pb::Authz>) -> pb::HttpRoute {
    pb::HttpRoute {
        metadata: resource("HTTPRoute", name),
        authorizations: authzs,
        rules: vec![pb::http_route::Rule {
            matches: vec![hr::HttpRouteMatch {
                path: Some(hr::PathMatch {
                    kind: Some(hr::path_match::Kind::Prefix(prefix.into())),
                }),
                method: method.map(|m| http_types::HttpMethod {
                    r#type: Some(http_types::http_method::Type::Unregistered(m.into())),
                }),
                ..Default::default()
            }],
            filters: Vec::new(),
        }],
        ..Default::default()
    }
}

fn client<'a>(ip: &str, identity: Option<&'a str>) -> Client<'a> {
    Client {
        ip: ip.parse().unwrap(),
        identity,
    }
}

fn req(method: &str, path: &str, token: Option<&str>) -> http::Request<()> {
    let mut b = http::Request::builder().method(method).uri(path);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(()).unwrap()
}

fn check(p: &ServerPolicy, c: Client<'_>, r: &http::Request<()>) -> Result<String, String> {
    let header = |n: &http::HeaderName| r.headers().get(n).map(|v| v.as_bytes().to_vec());
    match p.check(c, r, &header) {
        Ok(a) => Ok(format!(
            "{}{}",
            a.authz.name,
            a.audit.map(|r| format!(" audit:{r}")).unwrap_or_default()
        )),
        Err(Refused::Denied(reason, _)) => Err(reason.to_string()),
        Err(Refused::NoRoute) => Err("no-route".into()),
        Err(Refused::RateLimited(_)) => Err("rate-limited".into()),
    }
}

const WEB: &str = "web.ns.serviceaccount.identity.ferry.cluster.local";
const BOT: &str = "bot.other.serviceaccount.identity.ferry.cluster.local";

#[test]
fn every_authentication_kind_networks_with_exceptions_and_suffixes() {
    let p = compile(&server(
        vec![
            authz("exact", &[], mesh(&[WEB], &[])),
            authz(
                "suffix",
                &[],
                mesh(
                    &[],
                    &[&[
                        "other",
                        "serviceaccount",
                        "identity",
                        "ferry",
                        "cluster",
                        "local",
                    ]],
                ),
            ),
            authz(
                "office",
                &[("10.1.0.0/16", &["10.1.2.0/24"])],
                unauthenticated(),
            ),
        ],
        vec![],
    ))
    .unwrap();
    assert!(!p.per_request(), "no routes, JWT or limits: per connection");
    let admit = |ip, id| p.admit(client(ip, id)).map(|a| a.authz.name.to_string());
    assert_eq!(admit("192.0.2.1", Some(WEB)).unwrap(), "exact");
    assert_eq!(admit("192.0.2.1", Some(BOT)).unwrap(), "suffix");
    assert_eq!(admit("10.1.9.9", None).unwrap(), "office");
    let no = Err(R::Unauthorized(F::NoAuthorization));
    assert_eq!(admit("10.1.2.3", None), no, "excepted network");
    assert_eq!(admit("192.0.2.1", None), no);
    assert_eq!(
        admit(
            "192.0.2.1",
            Some("evil.other.serviceaccount.identity.ferry.cluster.localx")
        ),
        no,
        "a suffix matches whole labels at the end"
    );
    // Any meshed client, and the `*` identity and empty suffix.
    for authn in [
        mesh(&["*"], &[]),
        mesh(&[], &[&[]]),
        pb::Authn {
            permit: Some(pb::authn::Permit::MeshTls(pb::authn::PermitMeshTls {
                clients: Some(pb::authn::permit_mesh_tls::Clients::Unauthenticated(
                    pb::authn::PermitUnauthenticated {},
                )),
            })),
        },
    ] {
        let p = compile(&server(vec![authz("any", &[], authn)], vec![])).unwrap();
        assert!(p.admit(client("127.0.0.1", Some(BOT))).is_ok());
        assert!(p.admit(client("127.0.0.1", None)).is_err());
    }
    let p = compile(&server(vec![], vec![])).unwrap();
    assert!(
        p.admit(client("127.0.0.1", Some(WEB))).is_err(),
        "no authz: deny"
    );
}

#[test]
fn routes_decide_per_request_with_their_own_authorizations() {
    let p = compile(&server(
        vec![authz("admins", &[], mesh(&[WEB], &[]))],
        vec![
            route(
                "read",
                Some("GET"),
                "/api",
                vec![authz("all", &[], unauthenticated())],
            ),
            route("write", Some("POST"), "/api", vec![]),
        ],
    ))
    .unwrap();
    assert!(p.per_request());
    let anon = client("127.0.0.1", None);
    assert_eq!(check(&p, anon, &req("GET", "/api/x", None)).unwrap(), "all");
    assert_eq!(
        check(&p, anon, &req("POST", "/api/x", None)).unwrap_err(),
        "unauthorized"
    );
    assert_eq!(
        check(
            &p,
            client("127.0.0.1", Some(WEB)),
            &req("POST", "/api", None)
        )
        .unwrap(),
        "admins",
        "server-wide authorizations apply to every route"
    );
    assert_eq!(
        check(&p, anon, &req("DELETE", "/api", None)).unwrap_err(),
        "no-route"
    );
    assert_eq!(
        check(&p, anon, &req("GET", "/apix", None)).unwrap_err(),
        "no-route"
    );
    // The refusals as the client sees them.
    let (rsp, ..) = p
        .refusal(&Refused::Denied(R::Unauthorized(F::NoAuthorization), None))
        .to_response(false);
    assert_eq!(rsp.status(), 403);
    assert_eq!(rsp.headers()["l5d-proxy-error"], "unauthorized");
    let (rsp, _, grpc) = p.refusal(&Refused::NoRoute).to_response(true);
    assert_eq!((rsp.status().as_u16(), grpc), (200, Some(12)));
    assert_eq!(p.refusal(&Refused::NoRoute).status(), 404);
}

#[test]
fn a_lone_default_route_leaves_the_server_decided_per_connection() {
    let mut default = route("x", None, "/", vec![authz("all", &[], unauthenticated())]);
    default.metadata = Some(meta::Metadata {
        kind: Some(meta::metadata::Kind::Default("default".into())),
    });
    default.authorizations = vec![authz("all", &[], unauthenticated())];
    let p = compile(&server(
        vec![authz("all", &[], unauthenticated())],
        vec![default.clone()],
    ))
    .unwrap();
    assert!(!p.per_request());
    default
        .authorizations
        .push(authz("more", &[], mesh(&[WEB], &[])));
    let p = compile(&server(
        vec![authz("all", &[], unauthenticated())],
        vec![default],
    ))
    .unwrap();
    assert!(
        p.per_request(),
        "a default route with authorizations of its own decides"
    );
}

#[test]
fn jwt_requirements_apply_to_their_authorization_with_distinct_reasons() {
    let key = TestKey::new("k1");
    let mut s = server(
        vec![],
        vec![route(
            "votes",
            None,
            "/",
            vec![authz("voters", &[], unauthenticated())],
        )],
    );
    s.authz_extensions = vec![ext::AuthzExtension {
        route: 1,
        authz: 0,
        jwt: vec![requirement(&[&key])],
    }];
    let p = compile(&s).unwrap();
    let anon = client("127.0.0.1", None);
    let good = key.sign(&good_claims());
    assert_eq!(
        check(&p, anon, &req("GET", "/", Some(&good))).unwrap(),
        "voters"
    );
    assert_eq!(
        check(&p, anon, &req("GET", "/", None)).unwrap_err(),
        "unauthorized-jwt-missing"
    );
    let mut expired = good_claims();
    expired["exp"] = (super::jwt::tests::now() - 3600).into();
    assert_eq!(
        check(&p, anon, &req("GET", "/", Some(&key.sign(&expired)))).unwrap_err(),
        "unauthorized-jwt-expired"
    );
    // A JWT requirement cannot be met per connection.
    let mut s = server(vec![authz("voters", &[], unauthenticated())], vec![]);
    s.authz_extensions = vec![ext::AuthzExtension {
        route: 0,
        authz: 0,
        jwt: vec![requirement(&[&key])],
    }];
    let p = compile(&s).unwrap();
    assert!(p.per_request());
    assert!(p.admit(anon).is_err());
    assert!(check(&p, anon, &req("GET", "/", Some(&good))).is_ok());
}

#[test]
fn audit_admits_what_would_be_denied_and_says_why() {
    let audit = DefaultPolicy::Audit.server(&[]);
    let mut s = server(vec![authz("web", &[], mesh(&[WEB], &[]))], vec![]);
    s.authorizations.extend(audit.authorizations);
    let p = compile(&s).unwrap();
    let a = p.admit(client("127.0.0.1", Some(WEB))).unwrap();
    assert_eq!((a.authz.name.as_ref(), a.audit), ("web", None));
    let a = p.admit(client("127.0.0.1", None)).unwrap();
    assert_eq!(a.authz.name.as_ref(), "audit");
    assert_eq!(a.authz.kind.as_ref(), "default");
    assert_eq!(a.audit, Some(R::Unauthorized(F::NoAuthorization)));
}

#[test]
fn default_policies() {
    let cluster = parse_networks("10.0.0.0/8, fd00::/8,127.0.0.1").unwrap();
    assert!(parse_networks("10.0.0.0/33")
        .unwrap_err()
        .contains("10.0.0.0/33"));
    let admits = |d: DefaultPolicy, ip: &str, id: Option<&str>| {
        compile(&d.server(&cluster))
            .unwrap()
            .admit(client(ip, id))
            .is_ok()
    };
    use DefaultPolicy as D;
    assert!(admits(D::AllUnauthenticated, "203.0.113.1", None));
    assert!(admits(D::AllUnauthenticated, "2001:db8::1", None));
    assert!(!admits(D::AllAuthenticated, "10.1.1.1", None));
    assert!(admits(D::AllAuthenticated, "203.0.113.1", Some(WEB)));
    assert!(admits(D::ClusterUnauthenticated, "10.1.1.1", None));
    assert!(admits(D::ClusterUnauthenticated, "127.0.0.1", None));
    assert!(!admits(D::ClusterUnauthenticated, "203.0.113.1", None));
    assert!(!admits(D::ClusterAuthenticated, "10.1.1.1", None));
    assert!(admits(D::ClusterAuthenticated, "10.1.1.1", Some(WEB)));
    assert!(!admits(D::Deny, "127.0.0.1", Some(WEB)));
    let audit = compile(&D::Audit.server(&cluster)).unwrap();
    assert!(audit
        .admit(client("203.0.113.1", None))
        .unwrap()
        .audit
        .is_some());
    let open = super::feed::InboundPolicies::new(
        compile(&D::AllUnauthenticated.server(&cluster)).unwrap(),
        None,
    );
    assert!(
        open.is_open(),
        "no control plane and all-unauthenticated: nothing to do"
    );
    for d in [
        D::AllAuthenticated,
        D::Deny,
        D::Audit,
        D::ClusterUnauthenticated,
    ] {
        let p = super::feed::InboundPolicies::new(compile(&d.server(&cluster)).unwrap(), None);
        assert!(!p.is_open(), "{d:?}");
    }
}

#[test]
fn a_jwt_requirement_for_a_missing_authorization_is_an_invalid_policy() {
    let key = TestKey::new("k1");
    let mut s = server(vec![authz("all", &[], unauthenticated())], vec![]);
    s.authz_extensions = vec![ext::AuthzExtension {
        route: 1,
        authz: 0,
        jwt: vec![requirement(&[&key])],
    }];
    let err = compile(&s).unwrap_err();
    assert!(err.contains("authorization 0 of route 1"), "{err}");
}
