//! On Kubernetes: the authorization resources (`policy.ferry.io/v1alpha1`) watched beside
//! the routes, by [`crate::routes::kubernetes`]'s reflectors, and read into a
//! [`PolicySet`]. An object that cannot be read or is invalid is left out and logged, as an
//! invalid route is: one bad object does not stop the others. Namespaces' default-policy
//! annotations come from discovery's watch of Namespaces.

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::Store;

use super::resources::*;
use super::validate as check;
use crate::routes::validate::FieldError;

/// The watched resources, by kind.
pub fn resources() -> Vec<ApiResource> {
    [
        (SERVER, "servers"),
        (AUTHORIZATION_POLICY, "authorizationpolicies"),
        (MESH_TLS_AUTHENTICATION, "meshtlsauthentications"),
        (NETWORK_AUTHENTICATION, "networkauthentications"),
        (JWT_AUTHENTICATION, "jwtauthentications"),
        (HTTP_LOCAL_RATE_LIMIT_POLICY, "httplocalratelimitpolicies"),
    ]
    .into_iter()
    .map(|(kind, plural)| {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(FERRY_GROUP, VERSION, kind),
            plural,
        )
    })
    .collect()
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

/// The valid objects of `stores` (in [`resources`]' order).
pub fn policy_set(stores: &[(ApiResource, Store<DynamicObject>)]) -> PolicySet {
    let mut set = PolicySet::default();
    for (ar, store) in stores {
        match ar.kind.as_str() {
            SERVER => set.servers = all(store, ar, check::server),
            AUTHORIZATION_POLICY => {
                set.authorization_policies = all(store, ar, check::authorization_policy)
            }
            MESH_TLS_AUTHENTICATION => set.mesh_tls = all(store, ar, check::mesh_tls),
            NETWORK_AUTHENTICATION => set.networks = all(store, ar, check::network),
            JWT_AUTHENTICATION => set.jwt = all(store, ar, check::jwt),
            _ => set.rate_limits = all(store, ar, check::rate_limit),
        }
    }
    set
}
