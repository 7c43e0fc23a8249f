//! On Kubernetes: the authorization resources watched beside the routes, by
//! [`crate::routes::kubernetes`]'s reflectors, and read into a [`PolicySet`]: Ferry's
//! (`policy.ferry.io/v1alpha1`) and Linkerd's (`policy.linkerd.io`, when its CRDs are
//! installed: a missing one is watched for quietly). An object that cannot be read or is
//! invalid is left out and logged, as an invalid route is: one bad object does not stop
//! the others. Namespaces' default-policy annotations come from discovery's watch of
//! Namespaces.
//!
//! The two groups' objects are distinct even when kind, namespace and name are the same:
//! both are read and both apply; a reference resolves in the group it names first
//! ([`super::resolve`]).

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::Store;

use super::resources::*;
use super::validate as check;
use crate::routes::validate::FieldError;

/// Linkerd's kinds (it has no JWTAuthentication), each in the version read: `Server`'s
/// newest, which Linkerd's CRD serves beside `v1beta1`/`v1beta2` (the API server converts).
const LINKERD: [(&str, &str, &str); 5] = [
    (SERVER, "v1beta3", "servers"),
    (AUTHORIZATION_POLICY, "v1alpha1", "authorizationpolicies"),
    (
        MESH_TLS_AUTHENTICATION,
        "v1alpha1",
        "meshtlsauthentications",
    ),
    (NETWORK_AUTHENTICATION, "v1alpha1", "networkauthentications"),
    (
        HTTP_LOCAL_RATE_LIMIT_POLICY,
        "v1alpha1",
        "httplocalratelimitpolicies",
    ),
];

/// The watched resources: Ferry's kinds, then Linkerd's.
pub fn resources() -> Vec<ApiResource> {
    let ferry = [
        (SERVER, "servers"),
        (AUTHORIZATION_POLICY, "authorizationpolicies"),
        (MESH_TLS_AUTHENTICATION, "meshtlsauthentications"),
        (NETWORK_AUTHENTICATION, "networkauthentications"),
        (JWT_AUTHENTICATION, "jwtauthentications"),
        (HTTP_LOCAL_RATE_LIMIT_POLICY, "httplocalratelimitpolicies"),
    ]
    .map(|(kind, plural)| (FERRY_GROUP, kind, VERSION, plural));
    let linkerd = LINKERD.map(|(kind, version, plural)| (LINKERD_GROUP, kind, version, plural));
    ferry
        .into_iter()
        .chain(linkerd)
        .map(|(group, kind, version, plural)| {
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
        })
        .collect()
}

/// Whether `ar`'s CRD may be missing without that being a fault: Linkerd's, present only
/// where Linkerd's CRDs were installed.
pub fn optional(ar: &ApiResource) -> bool {
    ar.group == LINKERD_GROUP
}

fn read<S: serde::de::DeserializeOwned>(
    object: &DynamicObject,
    ar: &ApiResource,
    check: fn(&Document<S>) -> Result<(), Vec<FieldError>>,
) -> Option<Document<S>> {
    let typed = crate::routes::kubernetes::read::<Document<S>>(object, ar).and_then(|d| {
        check(&d)
            .map_err(|e| crate::routes::validate::Invalid(e).to_string())
            .map(|()| d)
    });
    match typed {
        Ok(d) => Some(d),
        Err(error) => {
            tracing::warn!(
                kind = %ar.kind,
                namespace = ?object.metadata.namespace,
                name = ?object.metadata.name,
                %error,
                "ignoring an invalid policy object"
            );
            None
        }
    }
}

fn all<S: serde::de::DeserializeOwned>(
    store: &Store<DynamicObject>,
    ar: &ApiResource,
    check: fn(&Document<S>) -> Result<(), Vec<FieldError>>,
) -> Vec<Document<S>> {
    let mut objects = store.state();
    objects.sort_by(|a, b| {
        let key = |o: &DynamicObject| (o.metadata.namespace.clone(), o.metadata.name.clone());
        key(a).cmp(&key(b))
    });
    objects.iter().filter_map(|o| read(o, ar, check)).collect()
}

/// The valid objects of `stores` (in [`resources`]' order: Ferry's before Linkerd's).
pub fn policy_set(stores: &[(ApiResource, Store<DynamicObject>)]) -> PolicySet {
    let mut set = PolicySet::default();
    for (ar, store) in stores {
        match ar.kind.as_str() {
            SERVER => set.servers.extend(all(store, ar, check::server)),
            AUTHORIZATION_POLICY => {
                set.authorization_policies
                    .extend(all(store, ar, check::authorization_policy))
            }
            MESH_TLS_AUTHENTICATION => set.mesh_tls.extend(all(store, ar, check::mesh_tls)),
            NETWORK_AUTHENTICATION => set.networks.extend(all(store, ar, check::network)),
            JWT_AUTHENTICATION => set.jwt.extend(all(store, ar, check::jwt)),
            _ => set.rate_limits.extend(all(store, ar, check::rate_limit)),
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_groups_are_watched_and_only_linkerds_is_optional() {
        let all = resources();
        let names: Vec<String> = all
            .iter()
            .map(|ar| format!("{}/{}", ar.api_version, ar.plural))
            .collect();
        assert_eq!(names.len(), 11);
        assert!(names.contains(&"policy.ferry.io/v1alpha1/jwtauthentications".to_string()));
        assert!(names.contains(&"policy.linkerd.io/v1beta3/servers".to_string()));
        assert!(
            names.contains(&"policy.linkerd.io/v1alpha1/httplocalratelimitpolicies".to_string())
        );
        assert_eq!(all.iter().filter(|ar| optional(ar)).count(), 5);
    }
}
