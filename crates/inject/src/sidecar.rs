//! The objects injected into every meshed pod, built as typed `k8s-openapi` values: the
//! `ferry-init` container (iptables), the `ferry-proxy` container and their volumes.
//!
//! Where they go in a pod spec, and how they are removed again, is [`crate::pod`]'s business.

use std::collections::BTreeMap;

use ferry_api::{env, k8s as names, ports};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, Probe, ProjectedVolumeSource, ResourceRequirements,
    SeccompProfile, SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount,
    VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The version written into injected pods and used as the default image tag.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Default proxy image (without tag).
pub use ferry_api::images::DEFAULT_PROXY_IMAGE;
/// Volume backing `/run` in the init container, so iptables can take its lock file
/// under a read-only root filesystem.
pub const VOLUME_INIT_RUN: &str = "ferry-init-xtables-lock";
/// How long a projected identity token lives before the kubelet rotates it.
const TOKEN_EXPIRATION_SECONDS: i64 = 24 * 60 * 60;

/// Everything that decides what `ferry inject` adds to a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Proxy image, without tag.
    pub image: String,
    /// Image tag and the value of the proxy-version annotation.
    pub version: String,
    /// Namespace of the control plane.
    pub control_namespace: String,
    /// Identity trust domain.
    pub trust_domain: String,
    /// DNS suffix of the cluster's services, for the control plane's address.
    pub cluster_domain: String,
    /// Run the proxy as a native sidecar (an init container with `restartPolicy: Always`).
    pub native_sidecar: bool,
    /// `iptables-nft`, `iptables-legacy` or `auto`.
    pub firewall: String,
    /// Inbound ports the init step leaves alone, besides the proxy's own.
    pub skip_inbound_ports: Vec<String>,
    /// Outbound ports the init step leaves alone.
    pub skip_outbound_ports: Vec<String>,
    /// CIDRs the init step leaves alone.
    pub skip_subnets: Vec<String>,
    /// PEM trust anchors handed to the proxy, when known at inject time.
    pub trust_anchors_pem: Option<String>,
    /// The OTLP/gRPC collector proxies export spans to: `None` is the control plane's own
    /// receiver, `Some("")` no tracing.
    pub trace_collector: Option<String>,
    /// The rate at which proxies trace requests without a context (checked: 0.0–1.0).
    pub trace_sampling: String,
    /// The proxy's default inbound policy (`FERRY_PROXY_DEFAULT_INBOUND_POLICY`) unless the
    /// pod's annotation names one: the namespace's or the cluster's, when known (the webhook).
    pub default_inbound_policy: Option<String>,
    /// Namespaces' `default-inbound-policy` annotations, when known (the webhook): they
    /// replace `default_inbound_policy` for pods in them.
    pub namespace_inbound_policies: std::collections::BTreeMap<String, String>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            image: DEFAULT_PROXY_IMAGE.to_string(),
            version: VERSION.to_string(),
            control_namespace: names::CONTROL_NAMESPACE.to_string(),
            trust_domain: "cluster.local".to_string(),
            cluster_domain: ferry_api::destination::DEFAULT_CLUSTER_DOMAIN.to_string(),
            native_sidecar: true,
            firewall: "auto".to_string(),
            skip_inbound_ports: Vec::new(),
            skip_outbound_ports: Vec::new(),
            skip_subnets: Vec::new(),
            trust_anchors_pem: None,
            trace_collector: None,
            trace_sampling: "0".to_string(),
            default_inbound_policy: None,
            namespace_inbound_policies: std::collections::BTreeMap::new(),
        }
    }
}

/// Per-pod additions to the skip lists, read from the pod template's annotations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodOverrides {
    /// From `config.ferry.io/skip-inbound-ports`.
    pub skip_inbound_ports: Vec<String>,
    /// From `config.ferry.io/skip-outbound-ports`.
    pub skip_outbound_ports: Vec<String>,
    /// From `config.ferry.io/skip-subnets`.
    pub skip_subnets: Vec<String>,
    /// From `config.ferry.io/trace-collector`.
    pub trace_collector: Option<String>,
    /// From `config.ferry.io/trace-sampling` (checked: 0.0–1.0).
    pub trace_sampling: Option<String>,
    /// From `config.ferry.io/default-inbound-policy` (or Linkerd's), when it names a policy.
    pub default_inbound_policy: Option<String>,
}

/// A sampling rate, 0.0–1.0, as the proxy's `--trace-sampling` reads it (trimmed); the
/// error says what is wrong (a flag's value parser).
pub fn sampling_rate(s: &str) -> Result<String, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(s.trim().to_string()),
        _ => Err(format!("{s:?} is not a sampling rate from 0.0 to 1.0")),
    }
}

impl ProxyConfig {
    fn image_ref(&self) -> String {
        format!("{}:{}", self.image, self.version)
    }

    /// The control plane's gRPC address as proxies dial it.
    pub fn control_addr(&self) -> String {
        format!(
            "{}.{}.svc.{}:{}",
            names::CONTROL_NAME,
            self.control_namespace,
            self.cluster_domain,
            ports::CONTROL_GRPC
        )
    }

    /// The control plane's OTLP/gRPC trace receiver as proxies dial it.
    pub fn control_otlp_addr(&self) -> String {
        format!(
            "{}.{}.svc.{}:{}",
            names::CONTROL_NAME,
            self.control_namespace,
            self.cluster_domain,
            ports::CONTROL_OTLP
        )
    }

    /// The `ferry-init` container: runs `ferry-proxy init` with NET_ADMIN to install the rules.
    pub fn init_container(&self, pod: &PodOverrides) -> Container {
        let mut inbound_ignore = vec![ports::PROXY_TAP.to_string(), ports::PROXY_ADMIN.to_string()];
        inbound_ignore.extend(self.skip_inbound_ports.iter().cloned());
        inbound_ignore.extend(pod.skip_inbound_ports.iter().cloned());
        let outbound_ignore: Vec<String> = self
            .skip_outbound_ports
            .iter()
            .chain(&pod.skip_outbound_ports)
            .cloned()
            .collect();
        let subnets: Vec<String> = self
            .skip_subnets
            .iter()
            .chain(&pod.skip_subnets)
            .cloned()
            .collect();
        let mut args = vec![
            "init".to_string(),
            "--incoming-proxy-port".to_string(),
            ports::PROXY_INBOUND.to_string(),
            "--outgoing-proxy-port".to_string(),
            ports::PROXY_OUTBOUND.to_string(),
            "--proxy-uid".to_string(),
            names::PROXY_UID.to_string(),
            "--inbound-ports-to-ignore".to_string(),
            inbound_ignore.join(","),
        ];
        if !outbound_ignore.is_empty() {
            args.push("--outbound-ports-to-ignore".to_string());
            args.push(outbound_ignore.join(","));
        }
        if !subnets.is_empty() {
            args.push("--subnets-to-ignore".to_string());
            args.push(subnets.join(","));
        }
        args.push("--firewall-bin-path".to_string());
        args.push(self.firewall.clone());
        Container {
            name: names::CONTAINER_INIT.to_string(),
            image: Some(self.image_ref()),
            image_pull_policy: Some("IfNotPresent".to_string()),
            command: Some(vec!["ferry-proxy".to_string()]),
            args: Some(args),
            resources: Some(resources("10m", "10Mi", "50Mi")),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                capabilities: Some(Capabilities {
                    add: Some(vec!["NET_ADMIN".to_string(), "NET_RAW".to_string()]),
                    drop: Some(vec!["ALL".to_string()]),
                }),
                privileged: Some(false),
                read_only_root_filesystem: Some(true),
                run_as_non_root: Some(false),
                run_as_user: Some(0),
                seccomp_profile: Some(runtime_default()),
                ..SecurityContext::default()
            }),
            volume_mounts: Some(vec![VolumeMount {
                name: VOLUME_INIT_RUN.to_string(),
                mount_path: "/run".to_string(),
                ..VolumeMount::default()
            }]),
            termination_message_policy: Some("FallbackToLogsOnError".to_string()),
            ..Container::default()
        }
    }

    /// The `ferry-proxy` container.
    pub fn proxy_container(&self, pod: &PodOverrides) -> Container {
        let mut env = vec![
            value(
                env::PROXY_INBOUND_LISTEN,
                format!("0.0.0.0:{}", ports::PROXY_INBOUND),
            ),
            value(
                env::PROXY_OUTBOUND_LISTEN,
                format!("127.0.0.1:{}", ports::PROXY_OUTBOUND),
            ),
            value(
                env::PROXY_ADMIN_LISTEN,
                format!("0.0.0.0:{}", ports::PROXY_ADMIN),
            ),
            value(env::PROXY_DESTINATION_ADDR, self.control_addr()),
            value(env::PROXY_TRUST_DOMAIN, self.trust_domain.clone()),
            value(
                env::PROXY_IDENTITY_TOKEN_FILE,
                format!(
                    "{}/{}",
                    names::IDENTITY_TOKEN_DIR,
                    names::IDENTITY_TOKEN_FILE
                ),
            ),
            field(env::PROXY_POD_NAMESPACE, "metadata.namespace"),
            field(env::PROXY_POD_NAME, "metadata.name"),
            field(env::PROXY_SERVICE_ACCOUNT, "spec.serviceAccountName"),
            value(env::PROXY_LOG, "warn,ferry_proxy=info".to_string()),
        ];
        // The control plane's identity, in its namespace: what the proxy's gRPC to it must
        // prove, and the one identity allowed to tap.
        let control_id =
            ferry_api::identity::control_plane_name(&self.control_namespace, &self.trust_domain);
        env.push(value(env::PROXY_CONTROL_PLANE_IDENTITY, control_id.clone()));
        env.push(value(env::PROXY_TAP_AUTHORIZED_IDENTITY, control_id));
        // Tracing: the pod's annotations over the injector's settings; an empty collector
        // is none.
        let collector = pod
            .trace_collector
            .clone()
            .or_else(|| self.trace_collector.clone())
            .unwrap_or_else(|| self.control_otlp_addr());
        if !collector.trim().is_empty() {
            let sampling = pod.trace_sampling.as_ref().unwrap_or(&self.trace_sampling);
            env.push(value(
                env::PROXY_TRACE_COLLECTOR,
                collector.trim().to_string(),
            ));
            env.push(value(
                env::PROXY_TRACE_SAMPLING,
                sampling.trim().to_string(),
            ));
        }
        let policy = pod
            .default_inbound_policy
            .as_ref()
            .or(self.default_inbound_policy.as_ref());
        if let Some(policy) = policy {
            env.push(value(env::PROXY_DEFAULT_INBOUND_POLICY, policy.clone()));
        }
        if let Some(pem) = &self.trust_anchors_pem {
            env.push(value(env::PROXY_IDENTITY_TRUST_ANCHORS, pem.clone()));
            // With identity the tap server is mTLS-only and authorised by identity, so the
            // control plane may reach it across the network; without, it stays on loopback.
            env.push(value(
                env::PROXY_TAP_LISTEN,
                format!("0.0.0.0:{}", ports::PROXY_TAP),
            ));
        }
        Container {
            name: names::CONTAINER_PROXY.to_string(),
            image: Some(self.image_ref()),
            image_pull_policy: Some("IfNotPresent".to_string()),
            env: Some(env),
            ports: Some(vec![
                port("ferry-proxy", ports::PROXY_INBOUND),
                port("ferry-admin", ports::PROXY_ADMIN),
                port("ferry-tap", ports::PROXY_TAP),
            ]),
            readiness_probe: Some(probe("/ready", 2, 10, 3)),
            liveness_probe: Some(probe("/live", 10, 10, 3)),
            // A native sidecar must be listening before the app starts, or the app's first
            // outbound connections are redirected to nothing.
            startup_probe: self.native_sidecar.then(|| probe("/live", 0, 1, 120)),
            resources: Some(resources("100m", "20Mi", "250Mi")),
            restart_policy: self.native_sidecar.then(|| "Always".to_string()),
            security_context: Some(SecurityContext {
                seccomp_profile: Some(runtime_default()),
                ..restricted(names::PROXY_UID)
            }),
            termination_message_policy: Some("FallbackToLogsOnError".to_string()),
            volume_mounts: Some(vec![VolumeMount {
                name: names::VOLUME_IDENTITY_TOKEN.to_string(),
                mount_path: names::IDENTITY_TOKEN_DIR.to_string(),
                read_only: Some(true),
                ..VolumeMount::default()
            }]),
            ..Container::default()
        }
    }

    /// The volumes the two containers mount.
    pub fn volumes(&self) -> Vec<Volume> {
        vec![
            Volume {
                name: names::VOLUME_IDENTITY_TOKEN.to_string(),
                projected: Some(ProjectedVolumeSource {
                    sources: Some(vec![VolumeProjection {
                        service_account_token: Some(ServiceAccountTokenProjection {
                            audience: Some(names::IDENTITY_TOKEN_AUDIENCE.to_string()),
                            expiration_seconds: Some(TOKEN_EXPIRATION_SECONDS),
                            path: names::IDENTITY_TOKEN_FILE.to_string(),
                        }),
                        ..VolumeProjection::default()
                    }]),
                    ..ProjectedVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: VOLUME_INIT_RUN.to_string(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            },
        ]
    }
}

fn value(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value),
        value_from: None,
    }
}

fn field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: path.to_string(),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// A named TCP container port.
pub fn port(name: &str, number: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_string()),
        container_port: i32::from(number),
        protocol: Some("TCP".to_string()),
        ..ContainerPort::default()
    }
}

fn probe(path: &str, initial_delay: i32, period: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::Int(i32::from(ports::PROXY_ADMIN)),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(period),
        failure_threshold: Some(failure_threshold),
        timeout_seconds: Some(1),
        ..Probe::default()
    }
}

/// A container that runs as `uid`, never as root, with no capabilities, no privilege
/// escalation and a read-only root filesystem (the Pod Security "restricted" profile).
pub fn restricted(uid: i64) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_string()]),
            ..Capabilities::default()
        }),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        ..SecurityContext::default()
    }
}

/// Requests and limits: CPU is requested but not limited, so the proxy is never throttled.
pub fn resources(cpu: &str, memory_request: &str, memory_limit: &str) -> ResourceRequirements {
    let requests = BTreeMap::from([
        ("cpu".to_string(), Quantity(cpu.to_string())),
        ("memory".to_string(), Quantity(memory_request.to_string())),
    ]);
    let limits = BTreeMap::from([("memory".to_string(), Quantity(memory_limit.to_string()))]);
    ResourceRequirements {
        requests: Some(requests),
        limits: Some(limits),
        ..ResourceRequirements::default()
    }
}

/// The container runtime's default seccomp profile.
pub fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_string(),
        localhost_profile: None,
    }
}
