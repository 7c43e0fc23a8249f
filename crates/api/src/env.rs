//! Environment variable names: each is the twin of the command-line flag of the same name.

/// `--inbound-listen`: address of the proxy's inbound listener.
pub const PROXY_INBOUND_LISTEN: &str = "FERRY_PROXY_INBOUND_LISTEN";
/// `--inbound-forward`: where the proxy sends inbound traffic (the application).
pub const PROXY_INBOUND_FORWARD: &str = "FERRY_PROXY_INBOUND_FORWARD";
/// `--outbound-listen`: address of the proxy's generic outbound listener.
pub const PROXY_OUTBOUND_LISTEN: &str = "FERRY_PROXY_OUTBOUND_LISTEN";
/// `--admin-listen`: address of the admin server.
pub const PROXY_ADMIN_LISTEN: &str = "FERRY_PROXY_ADMIN_LISTEN";
/// `--tap-listen`: address of the tap server.
pub const PROXY_TAP_LISTEN: &str = "FERRY_PROXY_TAP_LISTEN";
/// `--upstream LOCAL=TARGET`: upstream listeners, comma-separated in the environment.
pub const PROXY_UPSTREAM: &str = "FERRY_PROXY_UPSTREAM";
/// `--opaque-ports`: target ports whose connections skip protocol detection.
pub const PROXY_OPAQUE_PORTS: &str = "FERRY_PROXY_OPAQUE_PORTS";
/// `--detect-timeout`: how long to wait for a client's first bytes before forwarding as TCP.
pub const PROXY_DETECT_TIMEOUT: &str = "FERRY_PROXY_DETECT_TIMEOUT";
/// `--connect-timeout`: how long to wait for a TCP connection to an upstream.
pub const PROXY_CONNECT_TIMEOUT: &str = "FERRY_PROXY_CONNECT_TIMEOUT";
/// `--idle-timeout`: how long a pooled upstream connection may sit unused.
pub const PROXY_IDLE_TIMEOUT: &str = "FERRY_PROXY_IDLE_TIMEOUT";
/// `--destination-idle-timeout`: how long a destination (a name, or a looked-up address)
/// nobody uses keeps its balancer and its stream to the control plane.
pub const PROXY_DESTINATION_IDLE_TIMEOUT: &str = "FERRY_PROXY_DESTINATION_IDLE_TIMEOUT";
/// `--response-head-timeout`: how long an upstream may take to start answering a request.
pub const PROXY_RESPONSE_HEAD_TIMEOUT: &str = "FERRY_PROXY_RESPONSE_HEAD_TIMEOUT";
/// `--stalled-stream-timeout`: how long an upstream HTTP/2 stream's reader may take
/// nothing while the shared connection needs the window it holds.
pub const PROXY_STALLED_STREAM_TIMEOUT: &str = "FERRY_PROXY_STALLED_STREAM_TIMEOUT";
/// `--client-write-timeout`: how long a client may take none of what the proxy writes to it.
pub const PROXY_CLIENT_WRITE_TIMEOUT: &str = "FERRY_PROXY_CLIENT_WRITE_TIMEOUT";
/// `--body-idle-timeout`: how long an upstream's response body may bring nothing.
pub const PROXY_BODY_IDLE_TIMEOUT: &str = "FERRY_PROXY_BODY_IDLE_TIMEOUT";
/// `--http2-idle-timeout`: how long a client's HTTP/2 connection may bring no new request.
pub const PROXY_HTTP2_IDLE_TIMEOUT: &str = "FERRY_PROXY_HTTP2_IDLE_TIMEOUT";
/// `--cores`: how many cores the proxy uses (Linkerd: `LINKERD2_PROXY_CORES`).
pub const PROXY_CORES: &str = "FERRY_PROXY_CORES";
/// `--inbound-forward-loopback`: send redirected inbound traffic to loopback (the old way,
/// for apps that only listen there) rather than to the original destination (the pod IP).
pub const PROXY_INBOUND_FORWARD_LOOPBACK: &str = "FERRY_PROXY_INBOUND_FORWARD_LOOPBACK";
/// `--metrics-max-series`: most metric label sets per family and direction.
pub const PROXY_METRICS_MAX_SERIES: &str = "FERRY_PROXY_METRICS_MAX_SERIES";
/// `--metrics-max-render-bytes`: largest `/metrics` body, in bytes.
pub const PROXY_METRICS_MAX_RENDER_BYTES: &str = "FERRY_PROXY_METRICS_MAX_RENDER_BYTES";
/// `--header-read-timeout`: how long a client may take to send a request's headers.
pub const PROXY_HEADER_READ_TIMEOUT: &str = "FERRY_PROXY_HEADER_READ_TIMEOUT";
/// `--shutdown-grace-period`: how long in-flight work may continue after `SIGTERM`.
pub const PROXY_SHUTDOWN_GRACE_PERIOD: &str = "FERRY_PROXY_SHUTDOWN_GRACE_PERIOD";
/// `--log`: the tracing filter (e.g. `info,ferry_proxy=debug`).
pub const PROXY_LOG: &str = "FERRY_PROXY_LOG";
/// `--log-format`: `plain` or `json`.
pub const PROXY_LOG_FORMAT: &str = "FERRY_PROXY_LOG_FORMAT";
/// `--destination-addr`: the control plane's destination service (`host:port`), which
/// resolves service names to endpoints.
pub const PROXY_DESTINATION_ADDR: &str = "FERRY_PROXY_DESTINATION_ADDR";
/// `--identity-addr`: the control plane's identity service (`host:port`); defaults to the
/// destination address.
pub const PROXY_IDENTITY_ADDR: &str = "FERRY_PROXY_IDENTITY_ADDR";
/// `--control-plane-identity`: the identity the control plane's gRPC server must prove
/// (Linkerd: `LINKERD2_PROXY_IDENTITY_SVC_NAME`, `..._DESTINATION_SVC_NAME`).
pub const PROXY_CONTROL_PLANE_IDENTITY: &str = "FERRY_PROXY_CONTROL_PLANE_IDENTITY";
/// `--tap-authorized-identity`: identities that may tap the proxy (comma-separated).
pub const PROXY_TAP_AUTHORIZED_IDENTITY: &str = "FERRY_PROXY_TAP_AUTHORIZED_IDENTITY";
/// `--tap-max-concurrent`: most taps running at once on the proxy.
pub const PROXY_TAP_MAX_CONCURRENT: &str = "FERRY_PROXY_TAP_MAX_CONCURRENT";
/// `--trace-collector`: the OTLP/gRPC collector the proxy exports spans to (docs/tracing.md).
pub const PROXY_TRACE_COLLECTOR: &str = "FERRY_PROXY_TRACE_COLLECTOR";
/// `--trace-sampling`: the rate (0.0–1.0) at which requests without a context are traced.
pub const PROXY_TRACE_SAMPLING: &str = "FERRY_PROXY_TRACE_SAMPLING";
/// `--trace-resource-attributes`: extra resource attributes of the proxy's spans, `k=v,k=v`.
pub const PROXY_TRACE_RESOURCE_ATTRIBUTES: &str = "FERRY_PROXY_TRACE_RESOURCE_ATTRIBUTES";
/// `--inbound-require-identity`: refuse inbound connections that are not mTLS from a meshed peer.
pub const PROXY_INBOUND_REQUIRE_IDENTITY: &str = "FERRY_PROXY_INBOUND_REQUIRE_IDENTITY";
/// `--default-inbound-policy`: the inbound authorization policy applied until the control plane
/// has answered for a port, or without a control plane (docs/authorization.md).
pub const PROXY_DEFAULT_INBOUND_POLICY: &str = "FERRY_PROXY_DEFAULT_INBOUND_POLICY";
/// `--cluster-networks`: the networks the `cluster-*` default inbound policies admit.
pub const PROXY_CLUSTER_NETWORKS: &str = "FERRY_PROXY_CLUSTER_NETWORKS";
/// `--identity-token-file`: the service-account token the proxy presents to the identity service.
pub const PROXY_IDENTITY_TOKEN_FILE: &str = "FERRY_PROXY_IDENTITY_TOKEN_FILE";
/// `--identity-trust-anchors`: PEM trust anchors the proxy verifies peers and the CA with.
pub const PROXY_IDENTITY_TRUST_ANCHORS: &str = "FERRY_PROXY_IDENTITY_TRUST_ANCHORS";
/// `--pod-namespace`: the proxy's own namespace (downward API on Kubernetes).
pub const PROXY_POD_NAMESPACE: &str = "FERRY_PROXY_POD_NAMESPACE";
/// `--pod-name`: the proxy's own pod name (downward API on Kubernetes).
pub const PROXY_POD_NAME: &str = "FERRY_PROXY_POD_NAME";
/// `--service-account`: the proxy's service account, which its identity derives from.
pub const PROXY_SERVICE_ACCOUNT: &str = "FERRY_PROXY_SERVICE_ACCOUNT";
/// `--trust-domain`: the identity trust domain (`cluster.local`).
pub const PROXY_TRUST_DOMAIN: &str = "FERRY_PROXY_TRUST_DOMAIN";
/// `--grpc-listen`: address of the control plane's gRPC server (destination, identity, tap).
pub const CONTROL_GRPC_LISTEN: &str = "FERRY_CONTROL_GRPC_LISTEN";
/// `--api-listen`: address of the control plane's public HTTP/JSON API and dashboard.
pub const CONTROL_API_LISTEN: &str = "FERRY_CONTROL_API_LISTEN";
/// `--injector-listen`: the proxy-injector webhook's HTTPS listener (off when unset).
pub const CONTROL_INJECTOR_LISTEN: &str = "FERRY_CONTROL_INJECTOR_LISTEN";
/// `--injector-tls-cert-file`: PEM certificate chain the webhook serves (`tls.crt`).
pub const CONTROL_INJECTOR_TLS_CERT_FILE: &str = "FERRY_CONTROL_INJECTOR_TLS_CERT_FILE";
/// `--injector-tls-key-file`: PEM private key of that certificate (`tls.key`).
pub const CONTROL_INJECTOR_TLS_KEY_FILE: &str = "FERRY_CONTROL_INJECTOR_TLS_KEY_FILE";
/// `--proxy-image`: the proxy image (without tag) the injector adds to pods.
pub const CONTROL_PROXY_IMAGE: &str = "FERRY_CONTROL_PROXY_IMAGE";
/// `--proxy-version`: the proxy image tag and `ferry.io/proxy-version` the injector writes.
pub const CONTROL_PROXY_VERSION: &str = "FERRY_CONTROL_PROXY_VERSION";
/// `--proxy-trace-collector`: where injected proxies export spans (default: the control
/// plane's own receiver; empty: no tracing).
pub const CONTROL_PROXY_TRACE_COLLECTOR: &str = "FERRY_CONTROL_PROXY_TRACE_COLLECTOR";
/// `--proxy-trace-sampling`: the rate injected proxies trace requests without a context at.
pub const CONTROL_PROXY_TRACE_SAMPLING: &str = "FERRY_CONTROL_PROXY_TRACE_SAMPLING";
/// `--discovery`: `kubernetes` or `file`.
pub const CONTROL_DISCOVERY: &str = "FERRY_CONTROL_DISCOVERY";
/// `--tap-max-concurrent`: most taps the control plane relays at once.
pub const CONTROL_TAP_MAX_CONCURRENT: &str = "FERRY_CONTROL_TAP_MAX_CONCURRENT";
/// `--trace-listen`: address of the control plane's OTLP/gRPC trace receiver, or `off`.
pub const CONTROL_TRACE_LISTEN: &str = "FERRY_CONTROL_TRACE_LISTEN";
/// `--trace-max-message-bytes`: the largest OTLP export request the receiver decodes.
pub const CONTROL_TRACE_MAX_MESSAGE_BYTES: &str = "FERRY_CONTROL_TRACE_MAX_MESSAGE_BYTES";
/// `--trace-max-concurrent-exports`: OTLP export requests decoded at once.
pub const CONTROL_TRACE_MAX_CONCURRENT_EXPORTS: &str = "FERRY_CONTROL_TRACE_MAX_CONCURRENT_EXPORTS";
/// `--trace-store-max-traces`: traces the in-memory store keeps.
pub const CONTROL_TRACE_STORE_MAX_TRACES: &str = "FERRY_CONTROL_TRACE_STORE_MAX_TRACES";
/// `--trace-store-max-bytes`: bytes of spans the in-memory store keeps.
pub const CONTROL_TRACE_STORE_MAX_BYTES: &str = "FERRY_CONTROL_TRACE_STORE_MAX_BYTES";
/// `--trace-no-store`: forward received spans only, keep none.
pub const CONTROL_TRACE_NO_STORE: &str = "FERRY_CONTROL_TRACE_NO_STORE";
/// `--trace-collector`: an OTLP/gRPC collector received spans are forwarded to.
pub const CONTROL_TRACE_COLLECTOR: &str = "FERRY_CONTROL_TRACE_COLLECTOR";
/// `--trace-collector-queue-spans`: spans queued for the collector at most.
pub const CONTROL_TRACE_COLLECTOR_QUEUE_SPANS: &str = "FERRY_CONTROL_TRACE_COLLECTOR_QUEUE_SPANS";
/// `--trace-collector-timeout`: how long the collector has to accept a batch.
pub const CONTROL_TRACE_COLLECTOR_TIMEOUT: &str = "FERRY_CONTROL_TRACE_COLLECTOR_TIMEOUT";
/// `--tap-allow-unredacted-headers`: let tap callers ask for unredacted header values.
pub const CONTROL_TAP_ALLOW_UNREDACTED_HEADERS: &str = "FERRY_CONTROL_TAP_ALLOW_UNREDACTED_HEADERS";
/// `--namespace`: the control plane's own namespace.
pub const CONTROL_NAMESPACE: &str = "FERRY_CONTROL_NAMESPACE";
/// `--identity-dir`: the identity CA's state directory (generated CA, local tokens).
pub const CONTROL_IDENTITY_DIR: &str = "FERRY_CONTROL_IDENTITY_DIR";
/// `--identity-trust-anchors-file`: PEM file of the trust anchors.
pub const CONTROL_IDENTITY_TRUST_ANCHORS_FILE: &str = "FERRY_CONTROL_IDENTITY_TRUST_ANCHORS_FILE";
/// `--identity-issuer-certificate-file`: PEM certificate of the issuer (`tls.crt`).
pub const CONTROL_IDENTITY_ISSUER_CERTIFICATE_FILE: &str =
    "FERRY_CONTROL_IDENTITY_ISSUER_CERTIFICATE_FILE";
/// `--identity-issuer-key-file`: PEM private key of the issuer (`tls.key`).
pub const CONTROL_IDENTITY_ISSUER_KEY_FILE: &str = "FERRY_CONTROL_IDENTITY_ISSUER_KEY_FILE";
/// `--identity-cert-lifetime`: how long issued workload certificates are valid.
pub const CONTROL_IDENTITY_CERT_LIFETIME: &str = "FERRY_CONTROL_IDENTITY_CERT_LIFETIME";
/// `--trust-domain`: the identity trust domain (`cluster.local`).
pub const CONTROL_TRUST_DOMAIN: &str = "FERRY_CONTROL_TRUST_DOMAIN";
/// `--cluster-domain`: the cluster's DNS domain (`cluster.local`), Kubernetes discovery.
pub const CONTROL_CLUSTER_DOMAIN: &str = "FERRY_CONTROL_CLUSTER_DOMAIN";
/// `--kubeconfig`: a kubeconfig file instead of in-cluster configuration.
pub const CONTROL_KUBECONFIG: &str = "FERRY_CONTROL_KUBECONFIG";
/// `--kube-context`: the kubeconfig context to use instead of its current one.
pub const CONTROL_KUBE_CONTEXT: &str = "FERRY_CONTROL_KUBE_CONTEXT";
/// `--token-validation`: `tokenreview` (Kubernetes) or `local` (local token files).
pub const CONTROL_TOKEN_VALIDATION: &str = "FERRY_CONTROL_TOKEN_VALIDATION";
/// `--workloads-file`: the local workloads file the control plane watches.
pub const CONTROL_WORKLOADS_FILE: &str = "FERRY_CONTROL_WORKLOADS_FILE";
/// `--routes`: a file or directory of route documents (HTTPRoute, GRPCRoute, HTTPFault).
pub const CONTROL_ROUTES: &str = "FERRY_CONTROL_ROUTES";
/// `--default-inbound-policy`: the cluster's default inbound policy (docs/authorization.md).
pub const CONTROL_DEFAULT_INBOUND_POLICY: &str = "FERRY_CONTROL_DEFAULT_INBOUND_POLICY";
/// `--cluster-networks`: the networks the `cluster-*` default inbound policies admit.
pub const CONTROL_CLUSTER_NETWORKS: &str = "FERRY_CONTROL_CLUSTER_NETWORKS";
/// `--jwks-refresh-interval`: how often fetched JWK Sets (`jwksURI`) are fetched again.
pub const CONTROL_JWKS_REFRESH_INTERVAL: &str = "FERRY_CONTROL_JWKS_REFRESH_INTERVAL";
/// `--jwks-ca-file`: PEM CA certificates trusted for `https` `jwksURI`s, beside the platform's.
pub const CONTROL_JWKS_CA_FILE: &str = "FERRY_CONTROL_JWKS_CA_FILE";
/// `--rollouts`: a file or directory of `Rollout` documents (docs/rollouts.md).
pub const CONTROL_ROLLOUTS: &str = "FERRY_CONTROL_ROLLOUTS";
/// `--rollout-state-dir`: where each rollout's state is saved.
pub const CONTROL_ROLLOUT_STATE_DIR: &str = "FERRY_CONTROL_ROLLOUT_STATE_DIR";
/// `--workloads-poll-interval`: how often the workloads file is checked for edits.
pub const CONTROL_WORKLOADS_POLL_INTERVAL: &str = "FERRY_CONTROL_WORKLOADS_POLL_INTERVAL";
/// `--log`: the control plane's tracing filter (e.g. `info,ferry_control=debug`).
pub const CONTROL_LOG: &str = "FERRY_CONTROL_LOG";
/// `--log-format`: `plain` or `json`.
pub const CONTROL_LOG_FORMAT: &str = "FERRY_CONTROL_LOG_FORMAT";
/// `--probe-listen`: the control plane's probe listener (`/ready`, `/live` only).
pub const CONTROL_PROBE_LISTEN: &str = "FERRY_CONTROL_PROBE_LISTEN";
/// `--api-token-file`: the shared secret the public API requires (generated when missing).
pub const CONTROL_API_TOKEN_FILE: &str = "FERRY_CONTROL_API_TOKEN_FILE";
/// `--api-header-read-timeout`: how long a client has to send a request head.
pub const CONTROL_API_HEADER_READ_TIMEOUT: &str = "FERRY_CONTROL_API_HEADER_READ_TIMEOUT";
/// `--api-max-body-bytes`: the largest request body the public API accepts.
pub const CONTROL_API_MAX_BODY_BYTES: &str = "FERRY_CONTROL_API_MAX_BODY_BYTES";
/// `--api-max-connections`: connections the public API holds open at once.
pub const CONTROL_API_MAX_CONNECTIONS: &str = "FERRY_CONTROL_API_MAX_CONNECTIONS";
/// `--api-max-sse-clients`: event streams (tap, stat) open at once.
pub const CONTROL_API_MAX_SSE_CLIENTS: &str = "FERRY_CONTROL_API_MAX_SSE_CLIENTS";
/// `--grpc-max-concurrent-streams`: HTTP/2 streams per gRPC connection.
pub const CONTROL_GRPC_MAX_CONCURRENT_STREAMS: &str = "FERRY_CONTROL_GRPC_MAX_CONCURRENT_STREAMS";
/// `--grpc-max-pending-resets`: streams reset before being answered, per connection.
pub const CONTROL_GRPC_MAX_PENDING_RESETS: &str = "FERRY_CONTROL_GRPC_MAX_PENDING_RESETS";
/// `--grpc-max-connections`: gRPC connections open at once.
pub const CONTROL_GRPC_MAX_CONNECTIONS: &str = "FERRY_CONTROL_GRPC_MAX_CONNECTIONS";
/// `--grpc-max-message-bytes`: the largest gRPC request message decoded.
pub const CONTROL_GRPC_MAX_MESSAGE_BYTES: &str = "FERRY_CONTROL_GRPC_MAX_MESSAGE_BYTES";
/// `--identity-token-lifetime`: how long a local identity token is valid.
pub const CONTROL_IDENTITY_TOKEN_LIFETIME: &str = "FERRY_CONTROL_IDENTITY_TOKEN_LIFETIME";
/// `ferry --api-token-file`: the file holding the public API's bearer token.
pub const CLI_API_TOKEN_FILE: &str = "FERRY_API_TOKEN_FILE";
/// `ferry --api-addr`: where the CLI finds the control plane's public API.
pub const CLI_API_ADDR: &str = "FERRY_API_ADDR";
/// `ferry check --api-server`: the Kubernetes API over plain HTTP (`kubectl proxy`).
pub const CLI_KUBE_API: &str = "FERRY_KUBE_API";
/// `ferry check --token`: bearer token for the Kubernetes API.
pub const CLI_KUBE_TOKEN: &str = "FERRY_KUBE_TOKEN";
/// `--scrape-interval`: how often the control plane scrapes every proxy's `/metrics`.
pub const CONTROL_SCRAPE_INTERVAL: &str = "FERRY_CONTROL_SCRAPE_INTERVAL";
/// `--metrics-max-series-per-target`: series the embedded store keeps per scraped proxy.
pub const CONTROL_METRICS_MAX_SERIES_PER_TARGET: &str =
    "FERRY_CONTROL_METRICS_MAX_SERIES_PER_TARGET";
/// `--metrics-max-series`: series the embedded store keeps in all.
pub const CONTROL_METRICS_MAX_SERIES: &str = "FERRY_CONTROL_METRICS_MAX_SERIES";
/// `--prometheus-url`: answer stat queries with PromQL from this Prometheus instead.
pub const CONTROL_PROMETHEUS_URL: &str = "FERRY_CONTROL_PROMETHEUS_URL";
