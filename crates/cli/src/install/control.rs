//! The control plane's workload: the `ferry-control` Deployment (destination, identity, tap
//! relay, public API, dashboard and injector webhook in one binary), its Service and, with
//! `--ha`, its PodDisruptionBudget and anti-affinity.

use std::collections::BTreeMap;

use ferry_api::{env, k8s as names, ports};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Affinity, ConfigMapVolumeSource, Container, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SecretVolumeSource, Service, ServicePort, ServiceSpec, Volume,
    VolumeMount, WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{InstallConfig, Objects, RenderError};
use crate::sidecar::{port, resources, restricted, runtime_default};

pub use ferry_api::k8s::CONTROL_UID;
const ISSUER_DIR: &str = "/var/run/ferry/identity/issuer";
const TRUST_ROOTS_DIR: &str = "/var/run/ferry/identity/trust-roots";
const WEBHOOK_TLS_DIR: &str = "/var/run/ferry/webhook";

/// The labels that select the control plane's pods.
pub fn selector_labels(cfg: &InstallConfig) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            names::LABEL_CONTROL_PLANE_COMPONENT.to_string(),
            "control".to_string(),
        ),
        (
            names::LABEL_CONTROL_PLANE_NS.to_string(),
            cfg.namespace.clone(),
        ),
    ])
}

/// Renders the Service, the Deployment and (HA) the PodDisruptionBudget.
pub fn render(cfg: &InstallConfig, out: &mut Objects) -> Result<(), RenderError> {
    out.push(&Service {
        metadata: cfg.meta(names::CONTROL_NAME),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(selector_labels(cfg)),
            ports: Some(vec![
                service_port("grpc", ports::CONTROL_GRPC, "grpc"),
                service_port("api", ports::CONTROL_API, "api"),
                // Injected proxies export their spans here by default (docs/tracing.md).
                service_port("otlp", ports::CONTROL_OTLP, "otlp"),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })?;
    out.push(&deployment(cfg))?;
    if cfg.ha {
        out.push(&PodDisruptionBudget {
            metadata: cfg.meta(names::CONTROL_NAME),
            spec: Some(PodDisruptionBudgetSpec {
                max_unavailable: Some(IntOrString::Int(1)),
                selector: Some(LabelSelector {
                    match_labels: Some(selector_labels(cfg)),
                    ..LabelSelector::default()
                }),
                ..PodDisruptionBudgetSpec::default()
            }),
            ..PodDisruptionBudget::default()
        })?;
    }
    Ok(())
}

/// A Service port targeting a named container port.
pub fn service_port(name: &str, port: u16, target: &str) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port: i32::from(port),
        target_port: Some(IntOrString::String(target.to_string())),
        protocol: Some("TCP".to_string()),
        ..ServicePort::default()
    }
}

fn deployment(cfg: &InstallConfig) -> Deployment {
    let mut pod_labels = cfg.labels();
    pod_labels.extend(selector_labels(cfg));
    Deployment {
        metadata: cfg.meta(names::CONTROL_NAME),
        spec: Some(DeploymentSpec {
            replicas: Some(cfg.replicas()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(cfg)),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_string()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::String("25%".to_string())),
                    max_unavailable: Some(IntOrString::Int(if cfg.ha { 1 } else { 0 })),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(
                        [(names::ANNOTATION_INJECT.to_string(), "disabled".to_string())].into(),
                    ),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(cfg)),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

fn pod_spec(cfg: &InstallConfig) -> PodSpec {
    PodSpec {
        service_account_name: Some(names::CONTROL_NAME.to_string()),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            seccomp_profile: Some(runtime_default()),
            ..PodSecurityContext::default()
        }),
        affinity: cfg.ha.then(|| anti_affinity(cfg)),
        containers: vec![container(cfg)],
        volumes: Some(vec![
            secret_volume("identity-issuer", names::SECRET_IDENTITY_ISSUER),
            Volume {
                name: "trust-roots".to_string(),
                config_map: Some(ConfigMapVolumeSource {
                    name: names::CONFIGMAP_TRUST_ROOTS.to_string(),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            },
            secret_volume("webhook-tls", names::SECRET_INJECTOR_TLS),
        ]),
        ..PodSpec::default()
    }
}

fn container(cfg: &InstallConfig) -> Container {
    let listen = |port: u16| format!("0.0.0.0:{port}");
    let var = |name: &str, value: String| EnvVar {
        name: name.to_string(),
        value: Some(value),
        value_from: None,
    };
    Container {
        name: "control".to_string(),
        image: Some(format!("{}:{}", cfg.control_image, cfg.version)),
        image_pull_policy: Some("IfNotPresent".to_string()),
        env: Some(vec![
            var(env::CONTROL_DISCOVERY, "kubernetes".to_string()),
            var(env::CONTROL_GRPC_LISTEN, listen(ports::CONTROL_GRPC)),
            // The public API on loopback: `ferry` reaches it through a port-forward, which
            // lands on the pod's loopback; nothing else in the cluster can.
            var(
                env::CONTROL_API_LISTEN,
                format!("127.0.0.1:{}", ports::CONTROL_API),
            ),
            // The kubelet's probes get a listener that answers `/ready` and `/live` only.
            var(env::CONTROL_PROBE_LISTEN, listen(ports::CONTROL_PROBE)),
            var(env::CONTROL_INJECTOR_LISTEN, listen(ports::CONTROL_WEBHOOK)),
            var(
                env::CONTROL_INJECTOR_TLS_CERT_FILE,
                format!("{WEBHOOK_TLS_DIR}/tls.crt"),
            ),
            var(
                env::CONTROL_INJECTOR_TLS_KEY_FILE,
                format!("{WEBHOOK_TLS_DIR}/tls.key"),
            ),
            // What the injector adds to pods: the settings `ferry-config` records.
            var(env::CONTROL_PROXY_IMAGE, cfg.proxy_image.clone()),
            var(env::CONTROL_PROXY_VERSION, cfg.version.clone()),
            var(
                env::CONTROL_PROXY_TRACE_SAMPLING,
                cfg.proxy_trace_sampling.clone(),
            ),
            var(
                env::CONTROL_IDENTITY_ISSUER_CERTIFICATE_FILE,
                format!("{ISSUER_DIR}/tls.crt"),
            ),
            var(
                env::CONTROL_IDENTITY_ISSUER_KEY_FILE,
                format!("{ISSUER_DIR}/tls.key"),
            ),
            var(
                env::CONTROL_IDENTITY_TRUST_ANCHORS_FILE,
                format!("{TRUST_ROOTS_DIR}/ca-bundle.crt"),
            ),
            var(env::CONTROL_TRUST_DOMAIN, cfg.trust_domain.clone()),
            EnvVar {
                name: env::CONTROL_NAMESPACE.to_string(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: None,
                        field_path: "metadata.namespace".to_string(),
                    }),
                    ..EnvVarSource::default()
                }),
            },
        ]),
        ports: Some(vec![
            port("grpc", ports::CONTROL_GRPC),
            port("api", ports::CONTROL_API),
            port("webhook", ports::CONTROL_WEBHOOK),
            port("probe", ports::CONTROL_PROBE),
            port("otlp", ports::CONTROL_OTLP),
        ]),
        readiness_probe: Some(probe("/ready")),
        liveness_probe: Some(probe("/live")),
        resources: Some(resources("100m", "50Mi", "250Mi")),
        security_context: Some(restricted(CONTROL_UID)),
        volume_mounts: Some(vec![
            mount("identity-issuer", ISSUER_DIR),
            mount("trust-roots", TRUST_ROOTS_DIR),
            mount("webhook-tls", WEBHOOK_TLS_DIR),
        ]),
        ..Container::default()
    }
}

fn anti_affinity(cfg: &InstallConfig) -> Affinity {
    let term = |topology: &str| PodAffinityTerm {
        label_selector: Some(LabelSelector {
            match_labels: Some(selector_labels(cfg)),
            ..LabelSelector::default()
        }),
        topology_key: topology.to_string(),
        ..PodAffinityTerm::default()
    };
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            // Never two replicas on one node; spread over zones when there are any.
            required_during_scheduling_ignored_during_execution: Some(vec![term(
                "kubernetes.io/hostname",
            )]),
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: term("topology.kubernetes.io/zone"),
                },
            ]),
        }),
        ..Affinity::default()
    }
}

fn probe(path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String("probe".to_string()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(10),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

fn secret_volume(name: &str, secret: &str) -> Volume {
    Volume {
        name: name.to_string(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_string()),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.to_string(),
        mount_path: path.to_string(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}
