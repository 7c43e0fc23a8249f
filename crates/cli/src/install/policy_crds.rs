//! The CustomResourceDefinitions of Ferry's authorization resources (`policy.ferry.io`,
//! docs/authorization.md): `Server`, `AuthorizationPolicy`, `MeshTLSAuthentication`,
//! `NetworkAuthentication`, `JWTAuthentication`, `HTTPLocalRateLimitPolicy`. Their schemas
//! state what `ferry-control` checks in local files, as far as OpenAPI and CEL can say it;
//! the control plane checks again (networks, names) and leaves out what fails.

use serde_json::{json, Value};

fn string() -> Value {
    json!({"type": "string"})
}

fn name() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": 253})
}

/// A reference to a target or an authentication.
fn reference(description: &str) -> Value {
    json!({
        "type": "object",
        "description": description,
        "required": ["kind", "name"],
        "properties": {
            "group": string(),
            "kind": {"type": "string", "minLength": 1},
            "name": name(),
            "namespace": string(),
        },
    })
}

fn rate() -> Value {
    json!({"type": "integer", "format": "int64", "minimum": 1, "maximum": 4294967295_u64})
}

fn limit() -> Value {
    json!({
        "type": "object",
        "required": ["requestsPerSecond"],
        "properties": {"requestsPerSecond": rate()},
    })
}

fn exactly_one(a: &str, b: &str) -> Value {
    json!([{
        "rule": format!("has(self.{a}) != has(self.{b})"),
        "message": format!("exactly one of {a} and {b} must be set"),
    }])
}

fn specs() -> Vec<(&'static str, &'static str, Value)> {
    let policies = ferry_api::k8s::DEFAULT_INBOUND_POLICIES;
    vec![
        (
            "Server",
            "servers",
            json!({
                "type": "object",
                "description": "A port of the pods a selector picks.",
                "required": ["podSelector", "port"],
                "properties": {
                    "podSelector": {
                        "type": "object",
                        "properties": {
                            "matchLabels": {"type": "object", "additionalProperties": string()},
                            "matchExpressions": {"type": "array", "items": {
                                "type": "object",
                                "required": ["key", "operator"],
                                "properties": {
                                    "key": string(),
                                    "operator": {"type": "string", "enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                                    "values": {"type": "array", "items": string()},
                                },
                            }},
                        },
                    },
                    "port": {"x-kubernetes-int-or-string": true, "description": "A port number, or a container port name."},
                    "proxyProtocol": {"type": "string", "enum": ["unknown", "HTTP/1", "HTTP/2", "gRPC", "opaque", "TLS"], "default": "unknown"},
                    "accessPolicy": {"type": "string", "enum": policies, "default": "deny"},
                },
            }),
        ),
        (
            "AuthorizationPolicy",
            "authorizationpolicies",
            json!({
                "type": "object",
                "description": "Who may call a Server, a route, or every Server of a namespace.",
                "required": ["targetRef", "requiredAuthenticationRefs"],
                "properties": {
                    "targetRef": reference("A Server, HTTPRoute, GRPCRoute or Namespace, in the policy's namespace."),
                    "requiredAuthenticationRefs": {
                        "type": "array",
                        "minItems": 1,
                        "items": reference("A MeshTLSAuthentication, NetworkAuthentication, JWTAuthentication or ServiceAccount."),
                    },
                },
            }),
        ),
        (
            "MeshTLSAuthentication",
            "meshtlsauthentications",
            json!({
                "type": "object",
                "description": "Mesh identities, by name (`*`, `*.<suffix>`) or by reference.",
                "x-kubernetes-validations": exactly_one("identities", "identityRefs"),
                "properties": {
                    "identities": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
                    "identityRefs": {"type": "array", "minItems": 1, "items": reference("A ServiceAccount or a Namespace.")},
                },
            }),
        ),
        (
            "NetworkAuthentication",
            "networkauthentications",
            json!({
                "type": "object",
                "description": "Client networks.",
                "required": ["networks"],
                "properties": {
                    "networks": {"type": "array", "minItems": 1, "items": {
                        "type": "object",
                        "required": ["cidr"],
                        "properties": {
                            "cidr": {"type": "string", "minLength": 1},
                            "except": {"type": "array", "items": string()},
                        },
                    }},
                },
            }),
        ),
        (
            "JWTAuthentication",
            "jwtauthentications",
            json!({
                "type": "object",
                "description": "A bearer token from an issuer.",
                "required": ["issuer"],
                "x-kubernetes-validations": exactly_one("jwks", "jwksURI"),
                "properties": {
                    "issuer": {"type": "string", "minLength": 1},
                    "audiences": {"type": "array", "items": string()},
                    "jwks": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "description": "A JWK Set."},
                    "jwksURI": {"type": "string", "pattern": "^https?://", "description": "Where the control plane fetches the JWK Set (https or http)."},
                    "requiredClaims": {"type": "array", "items": {
                        "type": "object",
                        "required": ["name", "values"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "values": {"type": "array", "minItems": 1, "items": string()},
                        },
                    }},
                    "header": string(),
                },
            }),
        ),
        (
            "HTTPLocalRateLimitPolicy",
            "httplocalratelimitpolicies",
            json!({
                "type": "object",
                "description": "Per-proxy request rates on a Server.",
                "required": ["targetRef"],
                "properties": {
                    "targetRef": reference("The Server."),
                    "total": limit(),
                    "identity": limit(),
                    "overrides": {"type": "array", "items": {
                        "type": "object",
                        "required": ["requestsPerSecond", "clientRefs"],
                        "properties": {
                            "requestsPerSecond": rate(),
                            "clientRefs": {"type": "array", "minItems": 1, "items": reference("A ServiceAccount.")},
                        },
                    }},
                },
            }),
        ),
    ]
}

/// The six CRDs.
pub fn render() -> Vec<Value> {
    specs()
        .into_iter()
        .map(|(kind, plural, spec)| {
            json!({
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {
                    "name": format!("{plural}.policy.ferry.io"),
                    "labels": {"app.kubernetes.io/part-of": "ferry"},
                },
                "spec": {
                    "group": "policy.ferry.io",
                    "scope": "Namespaced",
                    "names": {
                        "kind": kind,
                        "listKind": format!("{kind}List"),
                        "plural": plural,
                        "singular": kind.to_ascii_lowercase(),
                    },
                    "versions": [{
                        "name": "v1alpha1",
                        "served": true,
                        "storage": true,
                        "schema": {"openAPIV3Schema": {
                            "type": "object",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": string(),
                                "kind": string(),
                                "metadata": {"type": "object"},
                                "spec": spec,
                            },
                        }},
                    }],
                },
            })
        })
        .collect()
}
