//! `ferry install`: prints the control plane as one YAML stream of typed Kubernetes objects.
//!
//! [`InstallConfig`] is everything that varies; [`render`] turns it into objects without IO,
//! so tests (and the Helm chart check) render the same thing the command prints.

mod control;
mod policy_crds;
mod rbac;
mod rollout_crd;
mod webhook;

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use ferry_api::{images, k8s as names};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use serde::Serialize;
use serde_yaml_ng::Value;

use crate::identity::{self, IdentityMaterial, WebhookTls};
use crate::sidecar::VERSION;
use crate::yaml;

/// Default control plane image (without tag).
pub use ferry_api::images::DEFAULT_CONTROL_IMAGE;
/// Replicas of each control-plane Deployment with `--ha`.
pub const HA_REPLICAS: i32 = 3;

/// Flags of `ferry install`.
#[derive(Args, Debug, Clone)]
pub struct InstallArgs {
    /// Print only the CustomResourceDefinitions Ferry defines (apply them first).
    #[arg(long)]
    pub crds: bool,
    /// Namespace of the control plane.
    #[arg(long, default_value = names::CONTROL_NAMESPACE)]
    pub namespace: String,
    /// Registry (and path) of the images: `<registry>/ferry-control:<tag>` and
    /// `<registry>/ferry-proxy:<tag>`, as `scripts/build-images.sh` names them.
    #[arg(long, env = images::REGISTRY_ENV, default_value = images::DEFAULT_REGISTRY)]
    pub registry: String,
    /// Control plane image, without tag (default: from `--registry`).
    #[arg(long)]
    pub control_image: Option<String>,
    /// Proxy image, without tag (default: from `--registry`; recorded in the settings
    /// ConfigMap for the injector).
    #[arg(long)]
    pub proxy_image: Option<String>,
    /// Image tag of the control plane and proxy.
    #[arg(long, visible_alias = "tag", default_value = VERSION)]
    pub version: String,
    /// Identity trust domain.
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// Replicated control plane: 3 replicas, anti-affinity and PodDisruptionBudgets.
    #[arg(long)]
    pub ha: bool,
    /// The rate (0.0–1.0) at which injected proxies trace requests that arrive without a
    /// trace context (their spans go to the control plane's receiver).
    #[arg(long, default_value = "0", value_parser = ferry_inject::sidecar::sampling_rate)]
    pub proxy_trace_sampling: String,
    /// PEM trust anchors; with the two issuer flags, replaces the generated identity CA.
    #[arg(long, requires_all = ["identity_issuer_certificate_file", "identity_issuer_key_file"])]
    pub identity_trust_anchors_file: Option<PathBuf>,
    /// PEM certificate of the identity issuer, signed by one of the trust anchors.
    #[arg(long, requires_all = ["identity_trust_anchors_file", "identity_issuer_key_file"])]
    pub identity_issuer_certificate_file: Option<PathBuf>,
    /// PEM private key of the identity issuer.
    #[arg(long, requires_all = ["identity_trust_anchors_file", "identity_issuer_certificate_file"])]
    pub identity_issuer_key_file: Option<PathBuf>,
}

/// Everything `ferry install` renders from, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallConfig {
    /// Namespace of the control plane.
    pub namespace: String,
    /// Control plane image, without tag.
    pub control_image: String,
    /// Proxy image, without tag.
    pub proxy_image: String,
    /// Image tag of both.
    pub version: String,
    /// Identity trust domain.
    pub trust_domain: String,
    /// Replicated control plane.
    pub ha: bool,
    /// The injected proxies' trace sampling rate.
    pub proxy_trace_sampling: String,
    /// Identity CA material.
    pub identity: IdentityMaterial,
    /// The injector webhook's serving chain.
    pub webhook: WebhookTls,
}

impl InstallConfig {
    /// Builds the configuration from flags, generating certificates that were not supplied.
    pub fn from_args(args: &InstallArgs) -> anyhow::Result<Self> {
        let now = time::OffsetDateTime::now_utc();
        let identity = match (
            &args.identity_trust_anchors_file,
            &args.identity_issuer_certificate_file,
            &args.identity_issuer_key_file,
        ) {
            (Some(anchors), Some(cert), Some(key)) => identity::from_files(anchors, cert, key)?,
            _ => identity::generate(&args.namespace, &args.trust_domain, now)?,
        };
        let webhook = identity::generate_webhook(
            webhook::dns_names(&args.namespace, &args.trust_domain),
            now,
        )?;
        Ok(Self {
            namespace: args.namespace.clone(),
            control_image: args
                .control_image
                .clone()
                .unwrap_or_else(|| images::repository(&args.registry, images::CONTROL)),
            proxy_image: args
                .proxy_image
                .clone()
                .unwrap_or_else(|| images::repository(&args.registry, images::PROXY)),
            version: args.version.clone(),
            trust_domain: args.trust_domain.clone(),
            ha: args.ha,
            proxy_trace_sampling: args.proxy_trace_sampling.clone(),
            identity,
            webhook,
        })
    }

    fn replicas(&self) -> i32 {
        if self.ha {
            HA_REPLICAS
        } else {
            1
        }
    }

    /// Metadata of a namespaced control-plane object.
    fn meta(&self, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels()),
            ..ObjectMeta::default()
        }
    }

    /// Labels every control-plane object carries.
    fn labels(&self) -> std::collections::BTreeMap<String, String> {
        std::collections::BTreeMap::from([
            (names::LABEL_PART_OF.to_string(), "ferry".to_string()),
            (
                names::LABEL_CONTROL_PLANE_NS.to_string(),
                self.namespace.clone(),
            ),
            (
                "app.kubernetes.io/version".to_string(),
                self.version.clone(),
            ),
        ])
    }
}

/// Errors rendering objects.
#[derive(Debug, thiserror::Error)]
#[error("serializing {kind} {name}")]
pub struct RenderError {
    kind: &'static str,
    name: String,
    #[source]
    source: serde_yaml_ng::Error,
}

/// The rendered objects, in the order `kubectl apply` should see them.
#[derive(Default)]
pub struct Objects(pub Vec<Value>);

impl Objects {
    fn push<T: Serialize + k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta>>(
        &mut self,
        object: &T,
    ) -> Result<(), RenderError> {
        let value = serde_yaml_ng::to_value(object).map_err(|source| RenderError {
            kind: T::KIND,
            name: object.metadata().name.clone().unwrap_or_default(),
            source,
        })?;
        self.0.push(value);
        Ok(())
    }
}

/// Renders the control plane.
pub fn render(cfg: &InstallConfig) -> Result<Vec<Value>, RenderError> {
    let mut out = Objects::default();
    out.push(&Namespace {
        metadata: ObjectMeta {
            name: Some(cfg.namespace.clone()),
            labels: Some(cfg.labels()),
            // The control plane runs unmeshed; the injector must never touch it.
            annotations: Some(
                [(names::ANNOTATION_INJECT.to_string(), "disabled".to_string())].into(),
            ),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    })?;
    rbac::render(cfg, &mut out)?;
    out.push(&settings(cfg))?;
    out.push(&ConfigMap {
        metadata: cfg.meta(names::CONFIGMAP_TRUST_ROOTS),
        data: Some(
            [(
                "ca-bundle.crt".to_string(),
                cfg.identity.trust_anchors_pem.clone(),
            )]
            .into(),
        ),
        ..ConfigMap::default()
    })?;
    out.push(&tls_secret(
        cfg,
        names::SECRET_IDENTITY_ISSUER,
        &cfg.identity.issuer_cert_pem,
        &cfg.identity.issuer_key_pem,
    ))?;
    out.push(&tls_secret(
        cfg,
        names::SECRET_INJECTOR_TLS,
        &cfg.webhook.cert_pem,
        &cfg.webhook.key_pem,
    ))?;
    control::render(cfg, &mut out)?;
    webhook::render(cfg, &mut out)?;
    rbac::render_api_roles(cfg, &mut out)?;
    Ok(out.0)
}

/// The settings ConfigMap: what the control plane and its injector need to know.
fn settings(cfg: &InstallConfig) -> ConfigMap {
    let data = [
        ("namespace", cfg.namespace.clone()),
        ("trustDomain", cfg.trust_domain.clone()),
        ("version", cfg.version.clone()),
        ("controlImage", cfg.control_image.clone()),
        ("proxyImage", cfg.proxy_image.clone()),
        ("identityIssuanceLifetime", "24h".to_string()),
        (
            "identityTokenAudience",
            names::IDENTITY_TOKEN_AUDIENCE.to_string(),
        ),
        ("ha", cfg.ha.to_string()),
        ("proxyTraceSampling", cfg.proxy_trace_sampling.clone()),
    ];
    ConfigMap {
        metadata: cfg.meta(names::CONFIGMAP_CONFIG),
        data: Some(data.into_iter().map(|(k, v)| (k.to_string(), v)).collect()),
        ..ConfigMap::default()
    }
}

fn tls_secret(cfg: &InstallConfig, name: &str, cert: &str, key: &str) -> Secret {
    Secret {
        metadata: cfg.meta(name),
        type_: Some("kubernetes.io/tls".to_string()),
        data: Some(
            [
                ("tls.crt".to_string(), ByteString(cert.as_bytes().to_vec())),
                ("tls.key".to_string(), ByteString(key.as_bytes().to_vec())),
            ]
            .into(),
        ),
        ..Secret::default()
    }
}

/// What `--crds` prints: Ferry's custom resources: `HTTPFault` (`policy.ferry.io`), the
/// fault injection routes reference with an `ExtensionRef` filter (docs/routes.md), the
/// authorization resources ([`policy_crds`], docs/authorization.md) and `Rollout`
/// (`ferry.io`, docs/rollouts.md). Their schemas state the rules `ferry-control` checks in
/// local files.
pub fn render_crds() -> Vec<Value> {
    let percent = serde_json::json!({
        "type": "integer", "minimum": 0, "maximum": 100, "default": 100,
        "description": "Share of requests, 0-100.",
    });
    let schema = serde_json::json!({
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "description": "What to inject into requests the referencing route rule selects.",
                "x-kubernetes-validations": [{
                    "rule": "has(self.abort) || has(self.delay)",
                    "message": "at least one of abort and delay must be specified",
                }],
                "properties": {
                    "abort": {
                        "type": "object",
                        "description": "Answer instead of the backend.",
                        "x-kubernetes-validations": [{
                            "rule": "has(self.httpStatus) != has(self.grpcStatus)",
                            "message": "exactly one of httpStatus and grpcStatus must be specified",
                        }],
                        "properties": {
                            "httpStatus": {"type": "integer", "minimum": 100, "maximum": 599},
                            "grpcStatus": {"type": "integer", "minimum": 1, "maximum": 16},
                            "percent": percent,
                        },
                    },
                    "delay": {
                        "type": "object",
                        "description": "Wait before forwarding.",
                        "required": ["fixedDelay"],
                        "properties": {
                            "fixedDelay": {
                                "type": "string",
                                "pattern": "^([0-9]{1,5}(h|m|s|ms)){1,4}$",
                                "description": "A Gateway API duration: 2s, 150ms, 1m30s.",
                            },
                            "percent": percent,
                        },
                    },
                },
            },
        },
    });
    let crd = serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": "httpfaults.policy.ferry.io",
            "labels": {"app.kubernetes.io/part-of": "ferry"},
        },
        "spec": {
            "group": "policy.ferry.io",
            "scope": "Namespaced",
            "names": {
                "kind": "HTTPFault",
                "listKind": "HTTPFaultList",
                "plural": "httpfaults",
                "singular": "httpfault",
            },
            "versions": [{
                "name": "v1alpha1",
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": schema},
            }],
        },
    });
    // Plain JSON data always has a YAML form.
    std::iter::once(crd)
        .chain(policy_crds::render())
        .chain(std::iter::once(rollout_crd::crd()))
        .map(|crd| serde_yaml_ng::to_value(crd).expect("JSON converts to YAML"))
        .collect()
}

/// Runs `ferry install`.
pub fn run(args: &InstallArgs) -> anyhow::Result<()> {
    let docs = if args.crds {
        render_crds()
    } else {
        let cfg = InstallConfig::from_args(args).context("preparing the install")?;
        render(&cfg)?
    };
    std::io::stdout()
        .lock()
        .write_all(yaml::write_stream(&docs).as_bytes())?;
    Ok(())
}
