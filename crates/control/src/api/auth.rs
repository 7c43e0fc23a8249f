//! Who may call the public API when it is reachable from more than this host
//! (docs/security.md, docs/kubernetes.md).
//!
//! - Loopback: no credential (only this host, or `kubectl port-forward`, which RBAC on
//!   `pods/portforward` already gates, reaches it).
//! - A token file: callers send `Authorization: Bearer <the file's contents>`; compared in
//!   constant time.
//! - Kubernetes: the caller's bearer token is checked with a TokenReview, then a
//!   SubjectAccessReview asks RBAC whether that user may use the route: verb `watch` on
//!   resource `tap` for the tap relay, verb `update` on resource `rollouts` for a
//!   rollout's actions (`POST /api/v1/rollouts/…`), verb `get` on resource `api` for
//!   everything else, all in the API group [`API_GROUP`]. Answers are cached for [`CACHE_TTL`], at most
//!   [`CACHE_CAPACITY`] of them.
//!
//! Refusals are JSON: 401 when the credential is missing or not valid, 403 when RBAC says
//! no, 503 when the Kubernetes API cannot be asked.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};

use super::server::error;
use crate::identity::tokens::{constant_time_eq, fill_random, write_private};

/// The API group of the resources SubjectAccessReview is asked about.
pub const API_GROUP: &str = "api.ferry.io";
/// The resource a tap is: verb `watch`.
pub const TAP_RESOURCE: &str = "tap";
/// The resource a rollout's actions are: verb `update`.
pub const ROLLOUTS_RESOURCE: &str = "rollouts";
/// The resource every other route is: verb `get`.
pub const API_RESOURCE: &str = "api";
/// How long a review's answer is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(10);
/// How many answers are kept at most.
pub const CACHE_CAPACITY: usize = 1024;

/// How the public API checks callers.
#[derive(Clone)]
pub enum ApiAuth {
    /// Everyone who reaches it may call it.
    Open,
    /// Callers must present this token.
    Token(Arc<str>),
    /// Callers' tokens are reviewed by the Kubernetes API.
    Kubernetes(Box<KubeReviews>),
}

impl std::fmt::Debug for ApiAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Open => f.write_str("Open"),
            Self::Token(_) => f.write_str("Token(..)"),
            Self::Kubernetes(_) => f.write_str("Kubernetes"),
        }
    }
}

/// Reads the token in `path`, or writes a new random one there (mode 0600) when the file
/// does not exist. An empty file is an error, not an open door.
pub fn load_or_create_token(path: &Path) -> io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.trim().to_string();
            if token.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is empty", path.display()),
                ));
            }
            Ok(token)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut secret = [0u8; 32];
            fill_random(&mut secret);
            let token: String = secret.iter().map(|b| format!("{b:02x}")).collect();
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            write_private(path, format!("{token}\n").as_bytes())?;
            tracing::info!(path = %path.display(), "wrote the public API's bearer token");
            Ok(token)
        }
        Err(e) => Err(e),
    }
}

/// Adds `auth`'s check in front of every route of `app`.
pub fn protect(app: Router, auth: ApiAuth) -> Router {
    if matches!(auth, ApiAuth::Open) {
        return app;
    }
    let auth = Arc::new(auth);
    app.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let auth = auth.clone();
            async move {
                let credential = req.headers().get(header::AUTHORIZATION).cloned();
                let access = access_of(req.method(), req.uri().path());
                match check(&auth, credential.as_ref(), access).await {
                    Ok(()) => next.run(req).await,
                    Err(refusal) => *refusal,
                }
            }
        },
    ))
}

/// A refusal, boxed: responses are large and refusals rare.
type Refusal = Box<Response>;

fn unauthorized(message: String) -> Refusal {
    let mut response = error(StatusCode::UNAUTHORIZED, message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"ferry-control\""),
    );
    Box::new(response)
}

fn bearer(credential: Option<&HeaderValue>) -> Result<&str, Refusal> {
    let Some(value) = credential else {
        return Err(unauthorized(
            "this API needs a credential: send `Authorization: Bearer <token>` (the ferry CLI \
             sends the token of --api-token-file or FERRY_API_TOKEN_FILE; on Kubernetes, use \
             the CLI's port-forward)"
                .to_string(),
        ));
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unauthorized("the Authorization header is not `Bearer <token>`".to_string()))
}

/// What RBAC is asked about a request: `(resource, verb)`.
pub fn access_of(method: &axum::http::Method, path: &str) -> (&'static str, &'static str) {
    if path == ferry_api::tap::TAP_PATH {
        (TAP_RESOURCE, "watch")
    } else if method == axum::http::Method::POST
        && path.starts_with(ferry_api::rollout::ROLLOUTS_PATH)
    {
        (ROLLOUTS_RESOURCE, "update")
    } else {
        (API_RESOURCE, "get")
    }
}

async fn check(
    auth: &ApiAuth,
    credential: Option<&HeaderValue>,
    (resource, verb): (&'static str, &'static str),
) -> Result<(), Refusal> {
    match auth {
        ApiAuth::Open => Ok(()),
        ApiAuth::Token(expected) => {
            let token = bearer(credential)?;
            if constant_time_eq(token.as_bytes(), expected.as_bytes()) {
                Ok(())
            } else {
                Err(unauthorized(
                    "the bearer token is not this control plane's API token".to_string(),
                ))
            }
        }
        ApiAuth::Kubernetes(reviews) => {
            let token = bearer(credential)?;
            reviews.check(token, resource, verb).await
        }
    }
}

/// What a review decided, as cached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allowed,
    /// The token did not authenticate: why.
    Unauthenticated(String),
    /// RBAC said no: who, and why.
    Forbidden(String),
}

/// TokenReview + SubjectAccessReview with a small, bounded cache.
#[derive(Clone)]
pub struct KubeReviews {
    tokens: Api<TokenReview>,
    access: Api<SubjectAccessReview>,
    cache: Arc<Mutex<HashMap<CacheKey, (Instant, Decision)>>>,
}

type CacheKey = ([u8; 32], &'static str);

impl KubeReviews {
    /// Reviews through `client`.
    pub fn new(client: Client) -> Self {
        Self {
            tokens: Api::all(client.clone()),
            access: Api::all(client),
            cache: Arc::default(),
        }
    }

    async fn check(&self, token: &str, resource: &'static str, verb: &str) -> Result<(), Refusal> {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut key_bytes = [0u8; 32];
        key_bytes.copy_from_slice(digest.as_ref());
        let key = (key_bytes, resource);
        let cached = {
            let cache = self.cache.lock().expect("cache lock");
            cache
                .get(&key)
                .filter(|(at, _)| at.elapsed() < CACHE_TTL)
                .map(|(_, decision)| decision.clone())
        };
        let decision = match cached {
            Some(decision) => decision,
            None => {
                let decision = self.review(token, resource, verb).await?;
                let mut cache = self.cache.lock().expect("cache lock");
                if cache.len() >= CACHE_CAPACITY {
                    cache.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
                    if cache.len() >= CACHE_CAPACITY {
                        cache.clear();
                    }
                }
                cache.insert(key, (Instant::now(), decision.clone()));
                decision
            }
        };
        match decision {
            Decision::Allowed => Ok(()),
            Decision::Unauthenticated(why) => Err(unauthorized(why)),
            Decision::Forbidden(why) => Err(Box::new(error(StatusCode::FORBIDDEN, why))),
        }
    }

    /// Asks the Kubernetes API; only a failure to ask is not cached.
    async fn review(&self, token: &str, resource: &str, verb: &str) -> Result<Decision, Refusal> {
        let unavailable = |e: kube::Error| {
            tracing::warn!(error = %e, "cannot review an API caller's token");
            Box::new(error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot ask the Kubernetes API to review the credential: {e}"),
            ))
        };
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let reviewed = self
            .tokens
            .create(&PostParams::default(), &review)
            .await
            .map_err(unavailable)?;
        let status = reviewed.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let why = status
                .error
                .unwrap_or_else(|| "not authenticated".to_string());
            return Ok(Decision::Unauthenticated(format!(
                "the Kubernetes API did not authenticate the bearer token: {why}"
            )));
        }
        let user = status.user.unwrap_or_default();
        let name = user.username.clone().unwrap_or_default();
        let sar = SubjectAccessReview {
            spec: access_spec(&user, resource, verb),
            ..SubjectAccessReview::default()
        };
        let answered = self
            .access
            .create(&PostParams::default(), &sar)
            .await
            .map_err(unavailable)?;
        Ok(decide(&name, resource, verb, answered.status.as_ref()))
    }
}

/// The SubjectAccessReview for `user` doing `verb` on `resource`.
pub fn access_spec(
    user: &k8s_openapi::api::authentication::v1::UserInfo,
    resource: &str,
    verb: &str,
) -> SubjectAccessReviewSpec {
    SubjectAccessReviewSpec {
        user: user.username.clone(),
        groups: user.groups.clone(),
        uid: user.uid.clone(),
        extra: user.extra.clone(),
        resource_attributes: Some(ResourceAttributes {
            group: Some(API_GROUP.to_string()),
            resource: Some(resource.to_string()),
            verb: Some(verb.to_string()),
            ..ResourceAttributes::default()
        }),
        ..SubjectAccessReviewSpec::default()
    }
}

/// What a SubjectAccessReview's status means for `user`.
pub fn decide(
    user: &str,
    resource: &str,
    verb: &str,
    status: Option<&k8s_openapi::api::authorization::v1::SubjectAccessReviewStatus>,
) -> Decision {
    match status {
        Some(status) if status.allowed && status.denied != Some(true) => Decision::Allowed,
        other => {
            let reason = other
                .and_then(|s| s.reason.clone().or(s.evaluation_error.clone()))
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "no RBAC rule allows it".to_string());
            let role = match resource {
                TAP_RESOURCE => "tap",
                ROLLOUTS_RESOURCE => "rollout-operator",
                _ => "api-viewer",
            };
            Decision::Forbidden(format!(
                "{user} may not {verb} {resource}.{API_GROUP}: {reason} (bind the ClusterRole \
                 ferry-{role}-<control-plane namespace> that ferry install creates)"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Method;

    use super::*;

    #[test]
    fn rollout_actions_are_asked_about_apart_from_reads() {
        let post = |p| access_of(&Method::POST, p);
        assert_eq!(
            post("/api/v1/rollouts/default/web/abort"),
            (ROLLOUTS_RESOURCE, "update")
        );
        assert_eq!(
            access_of(&Method::GET, "/api/v1/rollouts/default/web"),
            (API_RESOURCE, "get")
        );
        assert_eq!(
            access_of(&Method::GET, ferry_api::tap::TAP_PATH),
            (TAP_RESOURCE, "watch")
        );
        assert_eq!(
            access_of(&Method::GET, "/api/v1/stat"),
            (API_RESOURCE, "get")
        );
        // The policy listing of `ferry check --local` reads like `ferry authz`.
        for path in [
            ferry_api::authz::AUTHZ_PATH,
            ferry_api::authz::POLICY_OBJECTS_PATH,
        ] {
            assert_eq!(access_of(&Method::GET, path), (API_RESOURCE, "get"));
        }
        let refused = decide("alice", ROLLOUTS_RESOURCE, "update", None);
        assert!(
            matches!(refused, Decision::Forbidden(ref why) if why.contains("ferry-rollout-operator-")),
            "{refused:?}"
        );
    }
}
