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
    assert_eq!(config.api_listen, "0.0.0.0:8084".parse().unwrap());
    assert_eq!(config.discovery, DiscoveryConfig::file("w.yaml"));
    assert_eq!(config.identity, None);
    assert_eq!(config.metrics, MetricsConfig::default());
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
