//! Kubernetes names the mesh's parts agree on: annotations, labels, object and container
//! names, the identity token's audience. `docs/kubernetes.md` explains each one.

/// Annotation (pod template, workload or namespace): `enabled` or `disabled`.
/// `disabled` makes `ferry inject` and the injector webhook leave the pods alone.
pub const ANNOTATION_INJECT: &str = "ferry.io/inject";
/// Annotation written on injected pod templates: the proxy version that was injected.
pub const ANNOTATION_PROXY_VERSION: &str = "ferry.io/proxy-version";
/// Annotation written on injected pod templates: which tool injected the proxy.
pub const ANNOTATION_CREATED_BY: &str = "ferry.io/created-by";
/// Annotation (pod template): extra inbound ports the init step must not redirect (`25,3306`).
pub const ANNOTATION_SKIP_INBOUND_PORTS: &str = "config.ferry.io/skip-inbound-ports";
/// Annotation (pod template): outbound ports the init step must not redirect.
pub const ANNOTATION_SKIP_OUTBOUND_PORTS: &str = "config.ferry.io/skip-outbound-ports";
/// Annotation (pod template): CIDRs the init step must not redirect (`10.0.0.0/8,...`).
pub const ANNOTATION_SKIP_SUBNETS: &str = "config.ferry.io/skip-subnets";
/// Annotation of a namespace or workload: its default inbound policy (docs/authorization.md).
pub const ANNOTATION_DEFAULT_INBOUND_POLICY: &str = "config.ferry.io/default-inbound-policy";
/// Linkerd's name for [`ANNOTATION_DEFAULT_INBOUND_POLICY`], read too.
pub const ANNOTATION_LINKERD_DEFAULT_INBOUND_POLICY: &str =
    "config.linkerd.io/default-inbound-policy";
/// The default inbound policies' names, as the annotation, the control plane's and the
/// proxy's `--default-inbound-policy` spell them.
pub const DEFAULT_INBOUND_POLICIES: [&str; 6] = [
    "all-unauthenticated",
    "all-authenticated",
    "cluster-unauthenticated",
    "cluster-authenticated",
    "deny",
    "audit",
];

/// Annotation (pod template): the OTLP/gRPC collector the proxy exports spans to (`host:port`);
/// empty turns the proxy's tracing off. Default: the control plane's own receiver.
pub const ANNOTATION_TRACE_COLLECTOR: &str = "config.ferry.io/trace-collector";
/// Annotation (pod template): the rate (0.0–1.0) at which the proxy traces requests that
/// arrive without a trace context.
pub const ANNOTATION_TRACE_SAMPLING: &str = "config.ferry.io/trace-sampling";

/// Label on meshed pods: the namespace of the control plane that serves them.
pub const LABEL_CONTROL_PLANE_NS: &str = "ferry.io/control-plane-ns";
/// Label on the control plane's own objects: which component (`control`, ...).
pub const LABEL_CONTROL_PLANE_COMPONENT: &str = "ferry.io/control-plane-component";
/// Label on the control plane's namespace and objects marking them as Ferry's.
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";

/// The proxy's container name in injected pods.
pub const CONTAINER_PROXY: &str = "ferry-proxy";
/// The init container that installs the iptables rules.
pub const CONTAINER_INIT: &str = "ferry-init";
/// The projected volume holding the proxy's service-account token for identity.
pub const VOLUME_IDENTITY_TOKEN: &str = "ferry-identity-token";
/// Where the proxy container mounts [`VOLUME_IDENTITY_TOKEN`].
pub const IDENTITY_TOKEN_DIR: &str = "/var/run/secrets/tokens";
/// The token file inside [`IDENTITY_TOKEN_DIR`].
pub const IDENTITY_TOKEN_FILE: &str = "ferry-identity-token";
/// Audience of the proxy's service-account token; the identity service asks TokenReview for it.
pub const IDENTITY_TOKEN_AUDIENCE: &str = "identity.ferry.cluster.local";
/// UID the proxy runs as; the init step's rules let this UID's traffic out unredirected.
pub const PROXY_UID: i64 = 2102;
/// UID the control plane runs as (the proxy's plus one, so the init rules never exempt it);
/// its image declares it too.
pub const CONTROL_UID: i64 = 2103;

/// Default namespace of the control plane.
pub const CONTROL_NAMESPACE: &str = "ferry";
/// Name of the control plane's Deployment, Service and ServiceAccount.
pub const CONTROL_NAME: &str = "ferry-control";
/// Name of the injector's Service and MutatingWebhookConfiguration.
pub const INJECTOR_NAME: &str = "ferry-proxy-injector";
/// The webhook's name inside the MutatingWebhookConfiguration.
pub const INJECTOR_WEBHOOK: &str = "proxy-injector.ferry.io";
/// The second webhook: pods labelled `ferry.io/inject: enabled` outside enabled namespaces.
pub const INJECTOR_WEBHOOK_PODS: &str = "pods.proxy-injector.ferry.io";
/// The HTTP path the injector webhook serves.
pub const INJECTOR_PATH: &str = "/inject";
/// Secret holding the identity issuer's certificate and key (`tls.crt`, `tls.key`).
pub const SECRET_IDENTITY_ISSUER: &str = "ferry-identity-issuer";
/// ConfigMap holding the trust anchors (`ca-bundle.crt`), public.
pub const CONFIGMAP_TRUST_ROOTS: &str = "ferry-identity-trust-roots";
/// Secret holding the injector webhook's serving certificate.
pub const SECRET_INJECTOR_TLS: &str = "ferry-proxy-injector-tls";
/// ConfigMap of control-plane settings.
pub const CONFIGMAP_CONFIG: &str = "ferry-config";
