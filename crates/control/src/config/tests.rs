//! Flag parsing and validation.

use super::*;

fn args(flags: &[&str]) -> Args {
    let argv = std::iter::once("ferry-control").chain(flags.iter().copied());
    Args::try_parse_from(argv).expect("flags parse")
}

#[test]
fn defaults_use_the_documented_ports() {
    let config = Config::from_args(&args(&["--workloads-file", "w.yaml"])).unwrap();
    assert_eq!(config.grpc_listen, "0.0.0.0:8086".parse().unwrap());
    // The public API is reachable from this host only, without a credential.
    assert_eq!(config.api_listen, "127.0.0.1:8084".parse().unwrap());
    assert_eq!(config.api_auth, ApiAuthConfig::Loopback);
    assert_eq!(config.probe_listen, None);
    assert_eq!(config.limits, Limits::default());
    assert_eq!(config.discovery, DiscoveryConfig::file("w.yaml"));
    assert_eq!(config.identity, None);
    assert_eq!(config.metrics, MetricsConfig::default());
    assert_eq!(config.injector, None);
    let prom = Config::from_args(&args(&[
        "--workloads-file=w",
        "--scrape-interval=1s",
        "--prometheus-url=http://127.0.0.1:9090/",
    ]))
    .unwrap();
    assert_eq!(prom.metrics.scrape_interval, Duration::from_secs(1));
    assert_eq!(
        prom.metrics.prometheus_url.as_deref(),
        Some("http://127.0.0.1:9090")
    );
    assert!(matches!(
        Config::from_args(&args(&["--workloads-file=w", "--scrape-interval=10ms"])),
        Err(ConfigError::ScrapeInterval(_))
    ));
    assert!(matches!(
        Config::from_args(&args(&[
            "--workloads-file=w",
            "--prometheus-url=localhost:9090"
        ])),
        Err(ConfigError::PrometheusUrl(_))
    ));
}

#[test]
fn identity_flags_make_an_identity_config() {
    let dir = Config::from_args(&args(&["--workloads-file=w", "--identity-dir=/id"]));
    assert_eq!(dir.unwrap().identity, Some(IdentityConfig::in_dir("/id")));
    let files = Config::from_args(&args(&[
        "--workloads-file=w",
        "--identity-dir=/id",
        "--identity-trust-anchors-file=ca.crt",
        "--identity-issuer-certificate-file=tls.crt",
        "--identity-issuer-key-file=tls.key",
        "--identity-cert-lifetime=5s",
    ]))
    .unwrap()
    .identity
    .unwrap();
    assert_eq!(files.cert_lifetime, Duration::from_secs(5));
    assert_eq!(files.tokens_dir, PathBuf::from("/id/tokens"));
    assert!(matches!(files.ca, CaSource::Files { .. }));
    assert_eq!(
        Config::from_args(&args(&[
            "--workloads-file=w",
            "--identity-issuer-key-file=k"
        ])),
        Err(ConfigError::IdentityFiles("--identity-trust-anchors-file"))
    );
    assert_eq!(
        Config::from_args(&args(&[
            "--workloads-file=w",
            "--identity-dir=/id",
            "--identity-cert-lifetime=500ms"
        ])),
        Err(ConfigError::CertLifetime(Duration::from_millis(500)))
    );
}

#[test]
fn kubernetes_flags_make_a_kubernetes_config() {
    let config = Config::from_args(&args(&["--discovery=kubernetes"])).unwrap();
    assert_eq!(
        config.discovery,
        DiscoveryConfig::Kubernetes {
            cluster_domain: "cluster.local".into(),
            trust_domain: "cluster.local".into(),
        }
    );
    assert_eq!(config.token_validation, TokenValidation::TokenReview);
    assert_eq!(config.kube, KubeSource::default());
    let custom = Config::from_args(&args(&[
        "--discovery=kubernetes",
        "--kubeconfig=/k/config",
        "--kube-context=kind-ferry",
        "--cluster-domain=Example.COM.",
        "--trust-domain=mesh.example.org",
        "--identity-trust-anchors-file=ca.crt",
        "--identity-issuer-certificate-file=tls.crt",
        "--identity-issuer-key-file=tls.key",
    ]))
    .unwrap();
    assert_eq!(
        custom.kube,
        KubeSource {
            kubeconfig: Some("/k/config".into()),
            context: Some("kind-ferry".into()),
        }
    );
    assert_eq!(
        custom.discovery,
        DiscoveryConfig::Kubernetes {
            cluster_domain: "example.com".into(),
            trust_domain: "mesh.example.org".into(),
        }
    );
    // TokenReview needs no directory: the issuer files alone turn identity on.
    assert!(matches!(
        custom.identity.unwrap().ca,
        CaSource::Files { .. }
    ));
    assert!(matches!(
        Config::from_args(&args(&["--discovery=kubernetes", "--cluster-domain=a..b"])),
        Err(ConfigError::Domain { .. })
    ));
    let local = Config::from_args(&args(&[
        "--discovery=kubernetes",
        "--token-validation=local",
        "--identity-issuer-key-file=k",
        "--identity-issuer-certificate-file=c",
        "--identity-trust-anchors-file=a",
    ]));
    assert_eq!(local, Err(ConfigError::NoIdentityDir));
    let file = Config::from_args(&args(&["--workloads-file=w"])).unwrap();
    assert_eq!(file.token_validation, TokenValidation::Local);
    let reviewed = args(&["--workloads-file=w", "--token-validation=tokenreview"]);
    assert_eq!(
        Config::from_args(&reviewed).unwrap().token_validation,
        TokenValidation::TokenReview
    );
}

#[test]
fn injector_flags_make_an_injector_config() {
    let injector = Config::from_args(&args(&[
        "--discovery=kubernetes",
        "--injector-listen=127.0.0.1:8443",
        "--injector-tls-cert-file=tls.crt",
        "--injector-tls-key-file=tls.key",
        "--proxy-image=registry.example/ferry-proxy",
        "--proxy-version=v9",
        "--namespace=mesh",
        "--trust-domain=example.org",
        "--cluster-domain=example.com",
    ]))
    .unwrap()
    .injector
    .unwrap();
    assert_eq!(injector.listen, "127.0.0.1:8443".parse().unwrap());
    assert_eq!(injector.cert_file, PathBuf::from("tls.crt"));
    assert_eq!(injector.proxy.image, "registry.example/ferry-proxy");
    assert_eq!(injector.proxy.version, "v9");
    assert_eq!(
        injector.proxy.control_addr(),
        "ferry-control.mesh.svc.example.com:8086"
    );
    assert_eq!(injector.proxy.trust_domain, "example.org");
    assert_eq!(
        Config::from_args(&args(&[
            "--workloads-file=w",
            "--injector-listen=127.0.0.1:8443",
            "--injector-tls-cert-file=tls.crt",
        ])),
        Err(ConfigError::InjectorFlags("--injector-tls-key-file"))
    );
    assert_eq!(
        Config::from_args(&args(&[
            "--workloads-file=w",
            "--injector-listen=0.0.0.0:8084",
            "--injector-tls-cert-file=c",
            "--injector-tls-key-file=k",
        ])),
        Err(ConfigError::SameAddress("0.0.0.0:8084".parse().unwrap()))
    );
}

#[test]
fn invalid_combinations_are_rejected() {
    assert_eq!(
        Config::from_args(&args(&[])),
        Err(ConfigError::NoWorkloadsFile)
    );
    assert_eq!(
        Config::from_args(&args(&["--workloads-file=w", "--trust-domain=example.org"])),
        Err(ConfigError::KubernetesOnly("--trust-domain"))
    );
    let same = args(&[
        "--workloads-file=w.yaml",
        "--grpc-listen=127.0.0.1:9000",
        "--api-listen=127.0.0.1:9000",
    ]);
    assert!(matches!(
        Config::from_args(&same),
        Err(ConfigError::SameAddress(_))
    ));
    let slow = args(&["--workloads-file=w.yaml", "--workloads-poll-interval=1m"]);
    assert!(matches!(
        Config::from_args(&slow),
        Err(ConfigError::PollInterval(_))
    ));
}

#[test]
fn an_exposed_api_needs_a_credential() {
    let exposed = ["--workloads-file=w", "--api-listen=0.0.0.0:8084"];
    assert_eq!(
        Config::from_args(&args(&exposed)),
        Err(ConfigError::ApiExposed("0.0.0.0:8084".parse().unwrap()))
    );
    let with_dir = [&exposed[..], &["--identity-dir=/state"]].concat();
    assert_eq!(
        Config::from_args(&args(&with_dir)).unwrap().api_auth,
        ApiAuthConfig::TokenFile(PathBuf::from("/state/api-token"))
    );
    let with_file = [&exposed[..], &["--api-token-file=/t"]].concat();
    assert_eq!(
        Config::from_args(&args(&with_file)).unwrap().api_auth,
        ApiAuthConfig::TokenFile(PathBuf::from("/t"))
    );
    // A token file applies on loopback too.
    let loopback = ["--workloads-file=w", "--api-token-file=/t"];
    assert_eq!(
        Config::from_args(&args(&loopback)).unwrap().api_auth,
        ApiAuthConfig::TokenFile(PathBuf::from("/t"))
    );
    let kube = ["--discovery=kubernetes", "--api-listen=[::]:8084"];
    assert_eq!(
        Config::from_args(&args(&kube)).unwrap().api_auth,
        ApiAuthConfig::Kubernetes
    );
}

#[test]
fn limits_come_from_flags_and_zero_is_refused() {
    let config = Config::from_args(&args(&[
        "--workloads-file=w",
        "--api-header-read-timeout=2s",
        "--api-max-body-bytes=10",
        "--api-max-connections=3",
        "--api-max-sse-clients=4",
        "--grpc-max-concurrent-streams=6",
        "--grpc-max-pending-resets=7",
        "--grpc-max-connections=8",
        "--grpc-max-message-bytes=9",
    ]))
    .unwrap();
    assert_eq!(
        config.limits.api,
        ApiLimits {
            header_read_timeout: Duration::from_secs(2),
            max_body_bytes: 10,
            max_connections: 3,
            max_sse_clients: 4,
        }
    );
    assert_eq!(config.limits.grpc.max_concurrent_streams, 6);
    assert_eq!(config.limits.grpc.max_pending_resets, 7);
    assert_eq!(config.limits.grpc.max_connections, 8);
    assert_eq!(config.limits.grpc.max_message_bytes, 9);
    for flag in [
        "--api-header-read-timeout=0s",
        "--api-max-connections=0",
        "--api-max-sse-clients=0",
        "--grpc-max-concurrent-streams=0",
        "--grpc-max-pending-resets=0",
        "--grpc-max-connections=0",
        "--grpc-max-message-bytes=0",
        "--metrics-max-series=0",
        "--metrics-max-series-per-target=0",
    ] {
        let error = Config::from_args(&args(&["--workloads-file=w", flag])).unwrap_err();
        let name = flag.split('=').next().unwrap();
        assert_eq!(error.to_string(), format!("{name} must be at least 1"));
    }
}

#[test]
fn traces_default_to_the_otlp_port_and_validate_their_flags() {
    let config = Config::from_args(&args(&["--workloads-file=w"])).unwrap();
    assert_eq!(config.traces.listen, Some("0.0.0.0:4317".parse().unwrap()));
    assert!(config.traces.keep);
    assert_eq!(config.traces.forward, None);
    assert_eq!(config.traces.store, StoreLimits::default());
    let off = Config::from_args(&args(&["--workloads-file=w", "--trace-listen=off"])).unwrap();
    assert_eq!(off.traces.listen, None);
    let forward = Config::from_args(&args(&[
        "--workloads-file=w",
        "--trace-collector=otel.observability:4317",
        "--trace-no-store",
        "--trace-collector-timeout=2s",
    ]))
    .unwrap();
    let f = forward.traces.forward.unwrap();
    assert_eq!(f.collector, "http://otel.observability:4317");
    assert_eq!(f.timeout, Duration::from_secs(2));
    assert!(!forward.traces.keep);
    assert_eq!(
        Config::from_args(&args(&[
            "--workloads-file=w",
            "--trace-listen=0.0.0.0:8086"
        ])),
        Err(ConfigError::SameAddress("0.0.0.0:8086".parse().unwrap()))
    );
    for (flag, error) in [
        ("--trace-no-store", ConfigError::NoTraceDestination),
        (
            "--trace-collector=https://otel:4317",
            ConfigError::TraceCollector("https://otel:4317".into()),
        ),
        (
            "--trace-collector=http://otel:4317/v1/traces",
            ConfigError::TraceCollector("http://otel:4317/v1/traces".into()),
        ),
        (
            "--trace-max-concurrent-exports=0",
            ConfigError::ZeroLimit("--trace-max-concurrent-exports"),
        ),
    ] {
        assert_eq!(
            Config::from_args(&args(&["--workloads-file=w", flag])),
            Err(error),
            "{flag}"
        );
    }
    assert!(Args::try_parse_from(["ferry-control", "--trace-listen=somewhere"]).is_err());
}

#[test]
fn inbound_policy_flags_make_the_inbound_config() {
    let config = Config::from_args(&args(&["--workloads-file=w"])).unwrap();
    assert_eq!(
        config.inbound.default_policy,
        crate::authz::DefaultPolicy::AllUnauthenticated
    );
    let nets: Vec<String> = config
        .inbound
        .cluster_networks
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        nets,
        [
            "10.0.0.0/8",
            "100.64.0.0/10",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "fd00::/8",
            "127.0.0.0/8",
            "::1/128"
        ],
        "Linkerd's, and loopback in local mode"
    );
    let config = Config::from_args(&args(&[
        "--workloads-file=w",
        "--default-inbound-policy=deny",
        "--cluster-networks=10.1.0.0/16",
        "--jwks-refresh-interval=2s",
    ]))
    .unwrap();
    assert_eq!(
        config.inbound.default_policy,
        crate::authz::DefaultPolicy::Deny
    );
    assert_eq!(config.inbound.cluster_networks.len(), 3);
    assert_eq!(config.inbound.jwks_refresh, Duration::from_secs(2));
    assert!(matches!(
        Config::from_args(&args(&["--workloads-file=w", "--cluster-networks=ten"])),
        Err(ConfigError::ClusterNetworks(_))
    ));
    assert!(Args::try_parse_from(["ferry-control", "--default-inbound-policy=allow"]).is_err());
    assert!(
        config.inbound.jwks_ca.is_empty(),
        "only the platform's roots"
    );
}

#[test]
fn jwks_ca_file_is_read_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .self_signed(&rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let file = dir.path().join("ca.pem");
    std::fs::write(&file, ca.pem()).unwrap();
    let flag = format!("--jwks-ca-file={}", file.display());
    let config = Config::from_args(&args(&["--workloads-file=w", &flag])).unwrap();
    assert_eq!(config.inbound.jwks_ca, vec![ca.der().clone()]);
    let missing = format!("--jwks-ca-file={}", dir.path().join("none.pem").display());
    let e = Config::from_args(&args(&["--workloads-file=w", &missing])).unwrap_err();
    assert!(matches!(e, ConfigError::JwksCaFile(_)), "{e}");
    assert!(e.to_string().starts_with("--jwks-ca-file: reading "), "{e}");
}
