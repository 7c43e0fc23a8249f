//! Kubernetes token validation: the proxy presents its projected service-account token
//! (audience [`IDENTITY_TOKEN_AUDIENCE`]); the control plane asks the API server with a
//! `authentication.k8s.io/v1` TokenReview naming that audience. A token proves a service
//! account only when the review says `authenticated: true`, echoes the audience in
//! `status.audiences`, and names the user `system:serviceaccount:<ns>:<sa>`. Anything
//! else is refused with the API server's own reason.

use ferry_api::k8s::IDENTITY_TOKEN_AUDIENCE;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::PostParams;
use kube::{Api, Client};

use super::tokens::{TokenError, TokenValidator};
use crate::model::ObjectRef;

/// The user-name prefix of service-account tokens.
const SERVICE_ACCOUNT_USER: &str = "system:serviceaccount:";

/// Validates tokens with the TokenReview API.
#[derive(Clone)]
pub struct TokenReviewer {
    api: Api<TokenReview>,
    audience: String,
}

impl std::fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewer")
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl TokenReviewer {
    /// Reviews tokens through `client` for Ferry's identity audience.
    pub fn new(client: Client) -> Self {
        Self {
            api: Api::all(client),
            audience: IDENTITY_TOKEN_AUDIENCE.to_string(),
        }
    }
}

impl TokenValidator for TokenReviewer {
    async fn validate(&self, token: &[u8]) -> Result<ObjectRef, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        let token = std::str::from_utf8(token).map_err(|_| TokenError::Malformed)?;
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.trim().to_string(),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let reviewed = self
            .api
            .create(&PostParams::default(), &review)
            .await
            .map_err(TokenError::Review)?;
        account(&reviewed.status.unwrap_or_default(), &self.audience)
    }
}

/// The service account a review's status proves, for `audience`.
pub fn account(status: &TokenReviewStatus, audience: &str) -> Result<ObjectRef, TokenError> {
    if status.authenticated != Some(true) {
        let reason = status.error.clone();
        return Err(TokenError::Refused(
            reason.unwrap_or_else(|| "not authenticated".to_string()),
        ));
    }
    let audiences = status.audiences.clone().unwrap_or_default();
    if !audiences.iter().any(|a| a == audience) {
        return Err(TokenError::Audience {
            expected: audience.to_string(),
            got: audiences,
        });
    }
    let user = status
        .user
        .as_ref()
        .and_then(|u| u.username.clone())
        .unwrap_or_default();
    let parsed = user
        .strip_prefix(SERVICE_ACCOUNT_USER)
        .and_then(|rest| rest.split_once(':'))
        .filter(|(ns, sa)| !ns.is_empty() && !sa.is_empty() && !sa.contains(':'));
    match parsed {
        Some((ns, sa)) => Ok(ObjectRef::new(ns, sa)),
        None => Err(TokenError::NotServiceAccount(user)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(file: &str) -> TokenReviewStatus {
        let path = format!(
            "{}/../../../shared/k8s/authn/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        let review: TokenReview =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        review.status.unwrap()
    }

    #[test]
    fn recorded_reviews_map_to_accounts_or_reasons() {
        let web = account(
            &status("tokenreview-valid.response.json"),
            IDENTITY_TOKEN_AUDIENCE,
        );
        assert_eq!(web.unwrap(), ObjectRef::new("emojivoto", "web"));
        let bound = status("tokenreview-pod-bound-valid.response.json");
        assert!(account(&bound, IDENTITY_TOKEN_AUDIENCE).is_ok());
        // The audience must be echoed: a review for another audience proves nothing.
        let other = account(&bound, "other.audience");
        assert!(
            matches!(other, Err(TokenError::Audience { .. })),
            "{other:?}"
        );
        for (file, reason) in [
            ("tokenreview-garbage.response.json", "invalid bearer token"),
            (
                "tokenreview-wrong-audience.response.json",
                "wrong.audience.example",
            ),
            (
                "tokenreview-pod-bound-after-pod-deleted.response.json",
                "invalidated",
            ),
        ] {
            let error = account(&status(file), IDENTITY_TOKEN_AUDIENCE).unwrap_err();
            assert!(matches!(error, TokenError::Refused(_)), "{file}: {error:?}");
            assert!(error.to_string().contains(reason), "{file}: {error}");
        }
        let mut user = status("tokenreview-valid.response.json");
        user.user.as_mut().unwrap().username = Some("admin".into());
        let error = account(&user, IDENTITY_TOKEN_AUDIENCE).unwrap_err();
        assert!(
            matches!(error, TokenError::NotServiceAccount(_)),
            "{error:?}"
        );
    }
}
