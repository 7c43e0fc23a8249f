//! One AdmissionReview in, one out: decides whether a pod gets the proxy and answers with the
//! JSON patch that turns `request.object` into what `ferry inject` makes of that pod (both
//! use `ferry_inject::pod`). Pure: no IO, so tests drive it with recorded reviews.
//!
//! Every answer allows the request. A failure of ours (a body we cannot read, a pod we cannot
//! edit) becomes a `warnings` entry the client sees, never a denial: see docs/kubernetes.md.

use base64::Engine as _;
use ferry_inject::{pod, ProxyConfig, SkipReason};
use kube::core::admission::{AdmissionRequest, AdmissionReview, Operation};
use kube::core::DynamicObject;
use serde::Serialize;
use serde_json::Value;

/// What the webhook did with one review, for logs and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The pod gets the proxy: the answer carries a patch.
    Injected,
    /// The pod is left alone, for this reason.
    Skipped(SkipReason),
    /// Not a pod creation (the registration sends only those; anything else is allowed as is).
    NotPodCreate,
    /// Our own failure: allowed unchanged, with this warning.
    Failed(String),
}

/// The AdmissionReview sent back.
///
/// Written here rather than with kube's `AdmissionResponse`, which serializes `patch` as an
/// array of numbers (kube-rs/kube#1781); the API server decodes `[]byte` from base64.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Review {
    /// `admission.k8s.io/v1`, or the request's own version.
    pub api_version: String,
    /// `AdmissionReview`.
    pub kind: String,
    /// The answer.
    pub response: Response,
}

/// The `response` of a [`Review`].
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    /// The request's uid, which the API server matches.
    pub uid: String,
    /// Always true: see the module docs.
    pub allowed: bool,
    /// `JSONPatch` when there is a patch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    /// The RFC 6902 patch, base64 of its JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// Shown to the client (kubectl prints them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The answer to a review and what was decided.
#[derive(Debug)]
pub struct Answer {
    /// The AdmissionReview to send back.
    pub review: Review,
    /// What was decided.
    pub decision: Decision,
}

/// Prefix of every warning the webhook returns, so users know who is talking.
pub const WARNING_PREFIX: &str = "ferry-proxy-injector";

const API_VERSION: &str = "admission.k8s.io/v1";

/// Answers an AdmissionReview body.
pub fn answer(body: &[u8], cfg: &ProxyConfig) -> Answer {
    let raw: Value = match serde_json::from_slice(body) {
        Ok(raw) => raw,
        Err(error) => return failed("", format!("unreadable AdmissionReview: {error}")),
    };
    // The uid first, from the raw JSON: even a review we cannot type must be answered with
    // its uid, or the API server discards the answer.
    let uid = raw
        .pointer("/request/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let request: AdmissionRequest<DynamicObject> =
        match serde_json::from_value::<AdmissionReview<DynamicObject>>(raw.clone())
            .map_err(|e| e.to_string())
            .and_then(|r| r.try_into().map_err(|_| "no request".to_string()))
        {
            Ok(request) => request,
            Err(error) => return failed(&uid, format!("unreadable AdmissionReview: {error}")),
        };
    if request.operation != Operation::Create || request.kind.kind != "Pod" {
        return allowed(&uid, None, Decision::NotPodCreate);
    }
    // The pod exactly as the API server sent it: the patch must apply to these bytes, not to
    // a typed round trip of them.
    let Some(object) = raw.pointer("/request/object").filter(|o| o.is_object()) else {
        return failed(&uid, "the review carries no pod".to_string());
    };
    let mut pod = object.clone();
    // The namespace's default inbound policy, when it names one, replaces the cluster's.
    let namespaced;
    let cfg = match request
        .namespace
        .as_ref()
        .and_then(|ns| cfg.namespace_inbound_policies.get(ns))
    {
        Some(policy) => {
            namespaced = ProxyConfig {
                default_inbound_policy: Some(policy.clone()),
                ..cfg.clone()
            };
            &namespaced
        }
        None => cfg,
    };
    match pod::inject(&mut pod, cfg, &ferry_inject::created_by_injector()) {
        Ok(Some(why)) => allowed(&uid, None, Decision::Skipped(why)),
        Ok(None) => match serde_json::to_vec(&json_patch::diff(object, &pod)) {
            Ok(patch) => allowed(&uid, Some(patch), Decision::Injected),
            Err(error) => failed(&uid, format!("serializing the patch: {error}")),
        },
        Err(error) => failed(&uid, format!("pod not injected: {error}")),
    }
}

/// The answer to a body that could not be read at all (too large, too slow).
pub fn answer_unreadable(why: &str) -> Answer {
    failed("", why.to_string())
}

fn allowed(uid: &str, patch: Option<Vec<u8>>, decision: Decision) -> Answer {
    let warnings = match &decision {
        Decision::Failed(why) => vec![format!("{WARNING_PREFIX}: {why}")],
        _ => Vec::new(),
    };
    Answer {
        review: Review {
            api_version: API_VERSION.to_string(),
            kind: "AdmissionReview".to_string(),
            response: Response {
                uid: uid.to_string(),
                allowed: true,
                patch_type: patch.is_some().then_some("JSONPatch"),
                patch: patch.map(|p| base64::engine::general_purpose::STANDARD.encode(p)),
                warnings,
            },
        },
        decision,
    }
}

/// Allows the request unchanged and tells the client why it was not injected.
fn failed(uid: &str, why: String) -> Answer {
    allowed(uid, None, Decision::Failed(why))
}
