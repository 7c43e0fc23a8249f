//! The proxy injector's front door: its Service and the MutatingWebhookConfiguration that
//! sends it pod creations in `ferry.io/inject=enabled` namespaces, and pods labelled
//! `ferry.io/inject=enabled` in other namespaces (a selector cannot say "namespace or pod",
//! so that takes two webhooks). The webhook injects every pod it is sent unless the pod is
//! annotated `ferry.io/inject: disabled`.

use ferry_api::k8s as names;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    WebhookClientConfig,
};
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::ByteString;

use super::control::{selector_labels, service_port};
use super::{InstallConfig, Objects, RenderError};

/// The DNS names the webhook's serving certificate must carry.
pub fn dns_names(namespace: &str, trust_domain: &str) -> Vec<String> {
    let svc = format!("{}.{namespace}.svc", names::INJECTOR_NAME);
    vec![svc.clone(), format!("{svc}.{trust_domain}")]
}

/// Renders the injector Service and the MutatingWebhookConfiguration.
pub fn render(cfg: &InstallConfig, out: &mut Objects) -> Result<(), RenderError> {
    out.push(&Service {
        metadata: cfg.meta(names::INJECTOR_NAME),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(selector_labels(cfg)),
            // 443 → the container's named `webhook` port (`ports::CONTROL_WEBHOOK`).
            ports: Some(vec![service_port("webhook", 443, "webhook")]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })?;
    out.push(&MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            // Cluster-scoped: the namespace in the name keeps two installs apart.
            name: Some(format!("{}-{}", names::INJECTOR_NAME, cfg.namespace)),
            labels: Some(cfg.labels()),
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![
            webhook(
                cfg,
                names::INJECTOR_WEBHOOK,
                LabelSelector {
                    match_labels: Some(enabled()),
                    ..LabelSelector::default()
                },
                None,
            ),
            webhook(
                cfg,
                names::INJECTOR_WEBHOOK_PODS,
                LabelSelector {
                    // Enabled namespaces are the first webhook's; the control plane's own
                    // and the system namespaces are never meshed.
                    match_expressions: Some(vec![
                        LabelSelectorRequirement {
                            key: names::ANNOTATION_INJECT.to_string(),
                            operator: "NotIn".to_string(),
                            values: Some(vec!["enabled".to_string()]),
                        },
                        LabelSelectorRequirement {
                            key: "kubernetes.io/metadata.name".to_string(),
                            operator: "NotIn".to_string(),
                            values: Some(vec![
                                cfg.namespace.clone(),
                                "kube-system".to_string(),
                                "kube-public".to_string(),
                            ]),
                        },
                    ]),
                    ..LabelSelector::default()
                },
                Some(LabelSelector {
                    match_labels: Some(enabled()),
                    ..LabelSelector::default()
                }),
            ),
        ]),
    })
}

fn enabled() -> std::collections::BTreeMap<String, String> {
    [(names::ANNOTATION_INJECT.to_string(), "enabled".to_string())].into()
}

fn webhook(
    cfg: &InstallConfig,
    name: &str,
    namespace_selector: LabelSelector,
    object_selector: Option<LabelSelector>,
) -> MutatingWebhook {
    MutatingWebhook {
        name: name.to_string(),
        admission_review_versions: vec!["v1".to_string()],
        client_config: WebhookClientConfig {
            ca_bundle: Some(ByteString(cfg.webhook.ca_pem.as_bytes().to_vec())),
            service: Some(ServiceReference {
                name: names::INJECTOR_NAME.to_string(),
                namespace: cfg.namespace.clone(),
                path: Some(names::INJECTOR_PATH.to_string()),
                port: Some(443),
            }),
            url: None,
        },
        // A control plane that is down must not stop pods from being created: they
        // start unmeshed, and `ferry check` reports the control plane down. The webhook
        // answers its own errors the same way (allowed, with a warning).
        failure_policy: Some("Ignore".to_string()),
        namespace_selector: Some(namespace_selector),
        object_selector,
        rules: Some(vec![RuleWithOperations {
            api_groups: Some(vec![String::new()]),
            api_versions: Some(vec!["v1".to_string()]),
            operations: Some(vec!["CREATE".to_string()]),
            resources: Some(vec!["pods".to_string()]),
            scope: Some("Namespaced".to_string()),
        }]),
        side_effects: "None".to_string(),
        timeout_seconds: Some(10),
        reinvocation_policy: Some("Never".to_string()),
        ..MutatingWebhook::default()
    }
}
