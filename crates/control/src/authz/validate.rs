//! What serde cannot check in the authorization documents: groups and versions, names,
//! references' kinds, ports, networks, rates, and the choices that exclude each other
//! (`identities` or `identityRefs`, `jwks` or `jwksURI`). Errors name the field as the API
//! server would (`spec.networks[0].cidr`).

use std::sync::LazyLock;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use regex::Regex;

use super::cidr::Cidr;
use super::resources::*;
use super::DefaultPolicy;
use crate::routes::gateway::GATEWAY_GROUP;
use crate::routes::validate::FieldError;

static DNS_SUBDOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$").unwrap()
});
static PORT_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").unwrap());
static HEADER_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$").unwrap());

/// The protocols a `Server` may name.
pub const PROXY_PROTOCOLS: [&str; 6] = ["unknown", "HTTP/1", "HTTP/2", "gRPC", "opaque", "TLS"];

#[derive(Default)]
struct V(Vec<FieldError>);

impl V {
    fn push(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.to_string(),
            message: message.into(),
        });
    }

    fn done(self) -> Result<(), Vec<FieldError>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }

    fn supported(&mut self, field: &str, value: &str, allowed: &[&str]) {
        if !allowed.contains(&value) {
            let list: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
            self.push(
                field,
                format!(
                    "Unsupported value: {value:?}: supported values: {}",
                    list.join(", ")
                ),
            );
        }
    }

    fn header(&mut self, kind: &str, api_version: &str, meta: &ObjectMeta) {
        match api_version.split_once('/') {
            Some((FERRY_GROUP, VERSION)) => {}
            Some((LINKERD_GROUP, v)) if v.starts_with("v1") => {}
            _ => self.push(
                "apiVersion",
                format!(
                    "Unsupported value: {api_version:?}: {kind} is {FERRY_GROUP}/{VERSION} (or {LINKERD_GROUP}/<version>)"
                ),
            ),
        }
        match meta.name.as_deref() {
            None | Some("") => self.push("metadata.name", "Required value: name is required"),
            Some(n) if !DNS_SUBDOMAIN.is_match(n) || n.len() > 253 => self.push(
                "metadata.name",
                format!("Invalid value: {n:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'"),
            ),
            Some(_) => {}
        }
    }

    fn name(&mut self, field: &str, name: &str) {
        if name.is_empty() {
            self.push(field, "Required value");
        } else if name != "*" && !DNS_SUBDOMAIN.is_match(name) {
            self.push(
                field,
                format!("Invalid value: {name:?}: not a valid object name"),
            );
        }
    }

    fn selector(&mut self, field: &str, s: &LabelSelector) {
        for (i, e) in s.match_expressions.iter().flatten().enumerate() {
            let f = format!("{field}.matchExpressions[{i}]");
            let values = e.values.as_deref().unwrap_or_default();
            match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => self.push(
                    &format!("{f}.values"),
                    "Required value: must be specified when `operator` is 'In' or 'NotIn'",
                ),
                "Exists" | "DoesNotExist" if !values.is_empty() => self.push(
                    &format!("{f}.values"),
                    "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                ),
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                other => self.supported(
                    &format!("{f}.operator"),
                    other,
                    &["In", "NotIn", "Exists", "DoesNotExist"],
                ),
            }
        }
    }

    fn rate(&mut self, field: &str, rps: i64) {
        if rps < 1 || rps > i64::from(u32::MAX) {
            self.push(
                field,
                format!("Invalid value: {rps}: must be between 1 and {}", u32::MAX),
            );
        }
    }

    fn target_namespace(&mut self, field: &str, target: &TargetRef, own: Option<&str>) {
        if let (Some(ns), Some(own)) = (&target.namespace, own) {
            if ns != own {
                self.push(
                    field,
                    format!("Invalid value: {ns:?}: a policy targets objects in its own namespace ({own:?})"),
                );
            }
        }
    }
}

/// A `Server`.
pub fn server(s: &Server) -> Result<(), Vec<FieldError>> {
    let mut v = V::default();
    v.header(SERVER, &s.api_version, &s.metadata);
    v.selector("spec.podSelector", &s.spec.pod_selector);
    match &s.spec.port {
        IntOrString::Int(p) if !(1..=65535).contains(p) => v.push(
            "spec.port",
            format!("Invalid value: {p}: must be between 1 and 65535, inclusive"),
        ),
        IntOrString::String(name)
            if name.len() > 15
                || !PORT_NAME.is_match(name)
                || !name.chars().any(|c| c.is_ascii_lowercase()) =>
        {
            v.push(
                "spec.port",
                format!("Invalid value: {name:?}: a port name is at most 15 lowercase letters, digits and '-', with at least one letter"),
            )
        }
        _ => {}
    }
    if let Some(p) = &s.spec.proxy_protocol {
        v.supported("spec.proxyProtocol", p, &PROXY_PROTOCOLS);
    }
    if let Some(p) = &s.spec.access_policy {
        v.supported("spec.accessPolicy", p, &DefaultPolicy::NAMES);
    }
    v.done()
}

/// An `AuthorizationPolicy`.
pub fn authorization_policy(p: &AuthorizationPolicy) -> Result<(), Vec<FieldError>> {
    let mut v = V::default();
    v.header(AUTHORIZATION_POLICY, &p.api_version, &p.metadata);
    let t = &p.spec.target_ref;
    let group_ok = match t.kind.as_str() {
        SERVER => is_policy_group(&t.group),
        "HTTPRoute" => is_policy_group(&t.group) || t.group == GATEWAY_GROUP,
        "GRPCRoute" => t.group == GATEWAY_GROUP,
        "Namespace" => t.group.is_empty() || t.group == "core",
        other => {
            v.supported(
                "spec.targetRef.kind",
                other,
                &[SERVER, "HTTPRoute", "GRPCRoute", "Namespace"],
            );
            true
        }
    };
    if !group_ok {
        v.push(
            "spec.targetRef.group",
            format!(
                "Unsupported value: {:?}: not a group of {}",
                t.group, t.kind
            ),
        );
    }
    v.name("spec.targetRef.name", &t.name);
    v.target_namespace(
        "spec.targetRef.namespace",
        t,
        p.metadata.namespace.as_deref(),
    );
    if p.spec.required_authentication_refs.is_empty() {
        v.push(
            "spec.requiredAuthenticationRefs",
            "Required value: at least one authentication (use a NetworkAuthentication of 0.0.0.0/0 and ::/0 to admit everyone)",
        );
    }
    for (i, r) in p.spec.required_authentication_refs.iter().enumerate() {
        let f = format!("spec.requiredAuthenticationRefs[{i}]");
        let group = r.group.as_deref().unwrap_or_default();
        match r.kind.as_str() {
            MESH_TLS_AUTHENTICATION | NETWORK_AUTHENTICATION | JWT_AUTHENTICATION => {
                if !is_policy_group(group) {
                    v.push(
                        &format!("{f}.group"),
                        format!("Unsupported value: {group:?}: supported values: \"{FERRY_GROUP}\", \"{LINKERD_GROUP}\""),
                    );
                }
            }
            "ServiceAccount" => {
                if !(group.is_empty() || group == "core") {
                    v.push(
                        &format!("{f}.group"),
                        format!("Unsupported value: {group:?}: a ServiceAccount's group is \"\""),
                    );
                }
            }
            other => v.supported(
                &format!("{f}.kind"),
                other,
                &[
                    MESH_TLS_AUTHENTICATION,
                    NETWORK_AUTHENTICATION,
                    JWT_AUTHENTICATION,
                    "ServiceAccount",
                ],
            ),
        }
        v.name(&format!("{f}.name"), &r.name);
    }
    v.done()
}

/// A `MeshTLSAuthentication`.
pub fn mesh_tls(a: &MeshTlsAuthentication) -> Result<(), Vec<FieldError>> {
    let mut v = V::default();
    v.header(MESH_TLS_AUTHENTICATION, &a.api_version, &a.metadata);
    match (&a.spec.identities, &a.spec.identity_refs) {
        (Some(_), Some(_)) | (None, None) => v.push(
            "spec",
            "Invalid value: exactly one of identities and identityRefs must be set",
        ),
        (Some(ids), None) => {
            if ids.is_empty() {
                v.push("spec.identities", "Required value: at least one identity");
            }
            for (i, id) in ids.iter().enumerate() {
                let rest = id.strip_prefix("*.").unwrap_or(id);
                let ok = id == "*" || (!rest.is_empty() && DNS_SUBDOMAIN.is_match(rest));
                if !ok {
                    v.push(
                        &format!("spec.identities[{i}]"),
                        format!("Invalid value: {id:?}: an identity is a DNS name, `*`, or `*.` and a suffix"),
                    );
                }
            }
        }
        (None, Some(refs)) => {
            if refs.is_empty() {
                v.push(
                    "spec.identityRefs",
                    "Required value: at least one reference",
                );
            }
            for (i, r) in refs.iter().enumerate() {
                let f = format!("spec.identityRefs[{i}]");
                v.supported(
                    &format!("{f}.kind"),
                    &r.kind,
                    &["ServiceAccount", "Namespace"],
                );
                v.name(&format!("{f}.name"), &r.name);
                if r.kind == "ServiceAccount" && r.name == "*" {
                    v.push(
                        &format!("{f}.name"),
                        "Invalid value: \"*\": name a ServiceAccount, or use kind Namespace for all of a namespace's",
                    );
                }
            }
        }
    }
    v.done()
}

/// A `NetworkAuthentication`.
pub fn network(a: &NetworkAuthentication) -> Result<(), Vec<FieldError>> {
    let mut v = V::default();
    v.header(NETWORK_AUTHENTICATION, &a.api_version, &a.metadata);
    if a.spec.networks.is_empty() {
        v.push("spec.networks", "Required value: at least one network");
    }
    for (i, n) in a.spec.networks.iter().enumerate() {
        let f = format!("spec.networks[{i}]");
        let cidr = match n.cidr.parse::<Cidr>() {
            Ok(c) => Some(c),
            Err(e) => {
                v.push(&format!("{f}.cidr"), format!("Invalid value: {e}"));
                None
            }
        };
        for (j, e) in n.except.iter().enumerate() {
            let ef = format!("{f}.except[{j}]");
            match e.parse::<Cidr>() {
                Err(err) => v.push(&ef, format!("Invalid value: {err}")),
                Ok(ex) if cidr.is_some_and(|c| !c.contains(&ex)) => v.push(
                    &ef,
                    format!("Invalid value: {e:?}: not inside {:?}", n.cidr),
                ),
                Ok(_) => {}
            }
        }
    }
    v.done()
}

/// A `JWTAuthentication`.
pub fn jwt(a: &JwtAuthentication) -> Result<(), Vec<FieldError>> {
    let mut v = V::default();
    v.header(JWT_AUTHENTICATION, &a.api_version, &a.metadata);
    let s = &a.spec;
    if s.issuer.is_empty() {
        v.push("spec.issuer", "Required value: the tokens' `iss`");
    }
    match (&s.jwks, &s.jwks_uri) {
        (Some(_), Some(_)) | (None, None) => v.push(
            "spec",
            "Invalid value: exactly one of jwks and jwksURI must be set",
        ),
        (Some(jwks), None) => {
            if !jwks.get("keys").is_some_and(serde_json::Value::is_array) {
                v.push(
                    "spec.jwks",
                    "Invalid value: a JWK Set is an object with a `keys` array",
                );
            }
        }
        (None, Some(uri)) => match uri.parse::<http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {}
            _ => v.push(
                "spec.jwksURI",
                format!("Invalid value: {uri:?}: not an absolute http or https URL"),
            ),
        },
    }
    for (i, c) in s.required_claims.iter().enumerate() {
        if c.name.is_empty() {
            v.push(&format!("spec.requiredClaims[{i}].name"), "Required value");
        }
        if c.values.is_empty() {
            v.push(
                &format!("spec.requiredClaims[{i}].values"),
                "Required value: at least one accepted value",
            );
        }
    }
    if let Some(h) = &s.header {
        if !HEADER_NAME.is_match(h) {
            v.push(
                "spec.header",
                format!("Invalid value: {h:?}: not a header name"),
            );
        }
    }
    v.done()
}

/// An `HTTPLocalRateLimitPolicy`.
pub fn rate_limit(p: &HttpLocalRateLimitPolicy) -> Result<(), Vec<FieldError>> {
    let mut v = V::default();
    v.header(HTTP_LOCAL_RATE_LIMIT_POLICY, &p.api_version, &p.metadata);
    let t = &p.spec.target_ref;
    v.supported("spec.targetRef.kind", &t.kind, &[SERVER]);
    if !is_policy_group(&t.group) {
        v.push(
            "spec.targetRef.group",
            format!(
                "Unsupported value: {:?}: supported values: \"{FERRY_GROUP}\", \"{LINKERD_GROUP}\"",
                t.group
            ),
        );
    }
    v.name("spec.targetRef.name", &t.name);
    v.target_namespace(
        "spec.targetRef.namespace",
        t,
        p.metadata.namespace.as_deref(),
    );
    if let Some(l) = &p.spec.total {
        v.rate("spec.total.requestsPerSecond", l.requests_per_second);
    }
    if let Some(l) = &p.spec.identity {
        v.rate("spec.identity.requestsPerSecond", l.requests_per_second);
    }
    for (i, o) in p.spec.overrides.iter().enumerate() {
        let f = format!("spec.overrides[{i}]");
        v.rate(&format!("{f}.requestsPerSecond"), o.requests_per_second);
        if o.client_refs.is_empty() {
            v.push(
                &format!("{f}.clientRefs"),
                "Required value: at least one client",
            );
        }
        for (j, r) in o.client_refs.iter().enumerate() {
            v.supported(
                &format!("{f}.clientRefs[{j}].kind"),
                &r.kind,
                &["ServiceAccount"],
            );
            v.name(&format!("{f}.clientRefs[{j}].name"), &r.name);
        }
    }
    v.done()
}
