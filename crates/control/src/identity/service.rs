//! The gRPC `io.linkerd.proxy.identity.Identity` service: checks who is asking (the
//! token), that they ask for their own name, and has the CA sign their CSR.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ferry_api::cause::error_chain;
use ferry_api::identity::dns_name;
use linkerd2_proxy_api::identity as pb;
use linkerd2_proxy_api::identity::identity_server::{Identity, IdentityServer};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::ca::Ca;
use super::tokens::{TokenError, TokenValidator};

/// The identity CA over gRPC.
pub struct IdentityService<V> {
    /// The current CA: a reloaded issuer replaces it for the next request.
    ca: watch::Receiver<Arc<Ca>>,
    tokens: V,
    trust_domain: String,
    lifetime: Duration,
}

impl<V: TokenValidator> IdentityService<V> {
    /// Issues certificates from the latest `ca` for names in `trust_domain`, valid for
    /// `lifetime`, to callers whose token `tokens` accepts.
    pub fn new(
        ca: watch::Receiver<Arc<Ca>>,
        tokens: V,
        trust_domain: String,
        lifetime: Duration,
    ) -> Self {
        Self {
            ca,
            tokens,
            trust_domain,
            lifetime,
        }
    }

    /// Wraps the service for a tonic server.
    pub fn into_server(self) -> IdentityServer<Self> {
        IdentityServer::new(self)
    }

    async fn certify(&self, req: pb::CertifyRequest) -> Result<pb::CertifyResponse, Status> {
        if req.identity.is_empty() {
            return Err(Status::invalid_argument("identity is empty"));
        }
        if req.certificate_signing_request.is_empty() {
            return Err(Status::invalid_argument(
                "certificate_signing_request is empty",
            ));
        }
        let account = self
            .tokens
            .validate(&req.token)
            .await
            .map_err(|e| match e {
                // The API server could not be asked: retryable, not a verdict on the token.
                TokenError::Review(_) => Status::unavailable(error_chain(&e)),
                _ => Status::unauthenticated(error_chain(&e)),
            })?;
        let expected = dns_name(&account.name, &account.namespace, &self.trust_domain);
        if req.identity != expected {
            return Err(Status::permission_denied(format!(
                "identity {:?} does not match the token, which is for service account {} in namespace {} (identity {expected:?})",
                req.identity, account.name, account.namespace
            )));
        }
        let ca = self.ca.borrow().clone();
        let issued = ca
            .issue(
                &req.certificate_signing_request,
                &account.name,
                &account.namespace,
                &self.trust_domain,
                self.lifetime,
                SystemTime::now(),
            )
            .map_err(|e| Status::invalid_argument(error_chain(&e)))?;
        tracing::info!(
            identity = %req.identity,
            valid_until = %humantime::format_rfc3339_seconds(issued.valid_until),
            "issued a workload certificate"
        );
        Ok(pb::CertifyResponse {
            leaf_certificate: issued.leaf_der,
            intermediate_certificates: issued.intermediates_der,
            valid_until: Some(issued.valid_until.into()),
        })
    }
}

#[tonic::async_trait]
impl<V: TokenValidator> Identity for IdentityService<V> {
    async fn certify(
        &self,
        request: Request<pb::CertifyRequest>,
    ) -> Result<Response<pb::CertifyResponse>, Status> {
        let req = request.into_inner();
        let identity = req.identity.clone();
        match IdentityService::certify(self, req).await {
            Ok(response) => Ok(Response::new(response)),
            Err(status) => {
                tracing::warn!(%identity, code = ?status.code(), reason = status.message(), "refused a certificate request");
                Err(status)
            }
        }
    }
}
