//! Moving traffic through the route machinery: each rollout's current traffic becomes one
//! generated `HTTPRoute` on its Service, served with the user's routes (no second
//! mechanism: proxies see an ordinary route change).

use std::collections::BTreeMap;

use ferry_api::rollout::{StepMatch, Traffic};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::spec::RolloutDef;
use crate::routes::gateway::{
    BackendRef, HeaderMatch, HttpRoute, HttpRouteMatch, HttpRouteRule, HttpRouteSpec, ParentRef,
    StringMatchType, GATEWAY_GROUP,
};

/// The generated route's name: `rollout.<rollout>` (a dot cannot clash with a DNS-label
/// route name users pick for the same Service).
pub fn route_name(rollout: &str) -> String {
    format!("rollout.{rollout}")
}

fn backend(name: &str, port: u16, weight: i64) -> BackendRef {
    BackendRef {
        group: String::new(),
        kind: "Service".into(),
        name: name.to_string(),
        namespace: None,
        port: Some(i64::from(port)),
        weight,
        filters: Vec::new(),
    }
}

/// The header matches a match step becomes: headers as written (prefix and suffix as
/// regular expressions over the whole value), a cookie as a pattern over `cookie`.
pub fn header_matches(rules: &StepMatch) -> Vec<HeaderMatch> {
    let mut out: Vec<HeaderMatch> = rules
        .headers
        .iter()
        .map(|h| {
            let (kind, value) = match h.match_type.as_str() {
                "Prefix" => (
                    StringMatchType::RegularExpression,
                    format!("{}.*", regex::escape(&h.value)),
                ),
                "Suffix" => (
                    StringMatchType::RegularExpression,
                    format!(".*{}", regex::escape(&h.value)),
                ),
                "RegularExpression" => (StringMatchType::RegularExpression, h.value.clone()),
                _ => (StringMatchType::Exact, h.value.clone()),
            };
            HeaderMatch {
                kind,
                name: h.name.clone(),
                value,
            }
        })
        .collect();
    // One cookie rule at most (validation): a header name may be matched once per match.
    out.extend(rules.cookies.iter().map(|c| HeaderMatch {
        kind: StringMatchType::RegularExpression,
        name: "cookie".into(),
        value: format!(
            "(.*;\\s*)?{}={}(;.*)?",
            regex::escape(&c.name),
            regex::escape(&c.value)
        ),
    }));
    out
}

/// The route that carries `traffic` for `def`.
pub fn route(def: &RolloutDef, traffic: &Traffic) -> HttpRoute {
    // A Deployment backend is its fronting Service (made on Kubernetes, synthesized from
    // the workloads file locally): the route names Services either way.
    let (stable_service, canary_service) = (def.stable_service(), def.canary_service());
    let stable = || backend(&stable_service, def.stable_port, 1);
    let split = |w: i64| match w {
        0 => vec![stable()],
        100 => vec![backend(&canary_service, def.canary_port, 1)],
        w => vec![
            backend(&stable_service, def.stable_port, 100 - w),
            backend(&canary_service, def.canary_port, w),
        ],
    };
    let mut rules = Vec::new();
    if let Some(m) = &traffic.matches {
        rules.push(HttpRouteRule {
            name: Some("canary-match".into()),
            matches: vec![HttpRouteMatch {
                headers: header_matches(m),
                ..HttpRouteMatch::default()
            }],
            backend_refs: split(traffic.canary_weight),
            ..HttpRouteRule::default()
        });
        rules.push(HttpRouteRule {
            name: Some("stable".into()),
            matches: vec![HttpRouteMatch::default()],
            backend_refs: vec![stable()],
            ..HttpRouteRule::default()
        });
    } else {
        rules.push(HttpRouteRule {
            name: Some("split".into()),
            matches: vec![HttpRouteMatch::default()],
            backend_refs: split(traffic.canary_weight),
            ..HttpRouteRule::default()
        });
    }
    HttpRoute {
        api_version: format!("{GATEWAY_GROUP}/v1"),
        kind: "HTTPRoute".into(),
        metadata: ObjectMeta {
            name: Some(route_name(&def.name)),
            namespace: Some(def.namespace.clone()),
            labels: Some(BTreeMap::from([(
                "rollouts.ferry.io/rollout".to_string(),
                def.name.clone(),
            )])),
            ..ObjectMeta::default()
        },
        spec: HttpRouteSpec {
            parent_refs: vec![ParentRef {
                group: String::new(),
                kind: "Service".into(),
                name: def.spec.service.name.clone(),
                namespace: None,
                port: Some(i64::from(def.port)),
                section_name: None,
            }],
            hostnames: Vec::new(),
            rules,
            use_default_gateways: None,
        },
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollouts::spec;

    const DEF: &str = "\
apiVersion: ferry.io/v1alpha1
kind: Rollout
metadata: {name: web}
spec:
  service: {name: web, port: 8080}
  stable: {name: web-v1}
  canary: {name: web-v2, port: 9090}
  steps:
  - weight: 10
  - match: {headers: [{name: x-user-email, type: Suffix, value: '@example.com'}], cookies: [{name: beta, value: '1'}]}
";

    #[test]
    fn a_weight_step_is_a_valid_split_of_the_service() {
        let def = &spec::parse(DEF).unwrap()[0];
        let r = route(
            def,
            &Traffic {
                canary_weight: 10,
                matches: None,
            },
        );
        crate::routes::validate::http_route(&r).unwrap();
        let b = &r.spec.rules[0].backend_refs;
        assert_eq!(
            (b[0].name.as_str(), b[0].weight, b[0].port),
            ("web-v1", 90, Some(8080))
        );
        assert_eq!(
            (b[1].name.as_str(), b[1].weight, b[1].port),
            ("web-v2", 10, Some(9090))
        );
        let all_stable = route(
            def,
            &Traffic {
                canary_weight: 0,
                matches: None,
            },
        );
        assert_eq!(all_stable.spec.rules[0].backend_refs.len(), 1);
        assert_eq!(all_stable.spec.rules[0].backend_refs[0].name, "web-v1");
    }

    #[test]
    fn a_match_step_sends_only_matching_requests_to_the_canary() {
        let def = &spec::parse(DEF).unwrap()[0];
        let spec::StepKind::Match { rules, .. } = &def.steps[1] else {
            panic!()
        };
        let r = route(
            def,
            &Traffic {
                canary_weight: 100,
                matches: Some(rules.clone()),
            },
        );
        crate::routes::validate::http_route(&r).unwrap();
        let headers = &r.spec.rules[0].matches[0].headers;
        let email = regex::Regex::new(&format!("^(?:{})$", headers[0].value)).unwrap();
        assert!(email.is_match("ann@example.com"));
        assert!(!email.is_match("ann@example.com.evil"));
        let cookie = regex::Regex::new(&format!("^(?:{})$", headers[1].value)).unwrap();
        for yes in ["beta=1", "a=b; beta=1", "beta=1; c=d", "a=b;beta=1;c=d"] {
            assert!(cookie.is_match(yes), "{yes}");
        }
        for no in ["beta=10", "xbeta=1", "a=beta=1", "beta=2"] {
            assert!(!cookie.is_match(no), "{no}");
        }
        assert_eq!(r.spec.rules[0].backend_refs[0].name, "web-v2");
        assert_eq!(r.spec.rules[1].backend_refs[0].name, "web-v1");
    }
}
