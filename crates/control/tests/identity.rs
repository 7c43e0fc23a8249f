//! The identity CA over real gRPC on 127.0.0.1:0: a client builds its CSR the way a proxy
//! does (ECDSA P-256, one DNS SAN), presents its local token, and the chain it gets back
//! is checked by `openssl verify` and by x509-parser. Refusals are in `identity_refusals.rs`.

#[path = "support/ca.rs"]
mod ca;
#[path = "support/fixture.rs"]
mod fixture;

use std::time::Duration;

use ca::*;
use ferry_api::control_api::IdentityInfo;
use ferry_api::identity::{dns_name, spiffe_uri};
use ferry_control::identity::material::{CaSource, MaterialError};
use ferry_control::identity::tokens::DEFAULT_TOKEN_LIFETIME;
use ferry_control::identity::{Identity, IdentityConfig};
use ferry_control::model::ObjectRef;
use fixture::within;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

#[tokio::test]
async fn issues_a_leaf_that_chains_to_the_trust_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(IdentityConfig::in_dir(dir.path().join("identity"))).await;
    let (key, der) = csr(&[&web()]);
    let resp = cp
        .certify(request(&web(), cp.token("emojivoto", "web"), der))
        .await
        .expect("certificate issued");

    // Rust: the chain, the names, the key, the usages and the lifetime.
    let anchors_pem = cp.identity.ca().trust_anchors_pem().to_string();
    let anchor_der = first_cert_der(&anchors_pem);
    let (_, anchor) = X509Certificate::from_der(&anchor_der).unwrap();
    assert_eq!(resp.intermediate_certificates.len(), 1);
    let (_, issuer) = X509Certificate::from_der(&resp.intermediate_certificates[0]).unwrap();
    let (_, leaf) = X509Certificate::from_der(&resp.leaf_certificate).unwrap();
    leaf.verify_signature(Some(issuer.public_key()))
        .expect("leaf signed by the issuer");
    issuer
        .verify_signature(Some(anchor.public_key()))
        .expect("issuer signed by the anchor");
    assert_eq!(
        leaf.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );
    let sans: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => format!("DNS:{d}"),
            GeneralName::URI(u) => format!("URI:{u}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        sans,
        [
            format!("DNS:{}", web()),
            format!("URI:{}", spiffe_uri("web", "emojivoto", TRUST_DOMAIN)),
        ]
    );
    assert_eq!(
        sans[1], "URI:spiffe://example.org/ns/emojivoto/sa/web",
        "the SPIFFE shape of the issue"
    );
    assert!(!leaf.is_ca());
    let usage = leaf.key_usage().unwrap().expect("key usage").value;
    assert!(usage.digital_signature());
    assert!(!usage.key_cert_sign() && !usage.key_encipherment());
    let eku = leaf
        .extended_key_usage()
        .unwrap()
        .expect("extended key usage")
        .value;
    assert!(eku.server_auth && eku.client_auth);
    let validity = leaf.validity();
    let now = unix_now();
    let not_before = validity.not_before.timestamp();
    let not_after = validity.not_after.timestamp();
    assert!(
        (now - 25..=now - 15).contains(&not_before),
        "backdated ~20s: {not_before} vs {now}"
    );
    assert!(
        (now + 86_400 - 5..=now + 86_400 + 1).contains(&not_after),
        "24h: {not_after} vs {now}"
    );
    assert_eq!(resp.valid_until.unwrap().seconds, not_after);
    for ext in leaf.extensions() {
        assert!(!matches!(
            ext.parsed_extension(),
            ParsedExtension::UnsupportedExtension { .. }
        ));
    }

    // OpenSSL: the same chain verifies to the anchor, for both TLS roles.
    for purpose in ["sslserver", "sslclient"] {
        let out = openssl_verify(dir.path(), &anchors_pem, &resp, &["-purpose", purpose]);
        assert!(out.trim_end().ends_with("leaf.pem: OK"), "{purpose}: {out}");
    }
    // ...and not to some other anchor.
    let other = ferry_api::ca::generate("ferry", TRUST_DOMAIN, time::OffsetDateTime::now_utc())
        .unwrap()
        .trust_anchor_pem;
    let out = openssl_verify(dir.path(), &other, &resp, &[]);
    assert!(!out.contains("leaf.pem: OK"), "{out}");

    // The public API tells the same anchor, with a fingerprint OpenSSL agrees with.
    let info: IdentityInfo = get_json(cp.api, "/api/v1/identity").await;
    assert_eq!(info.trust_anchors_pem, anchors_pem);
    assert_eq!(info.trust_domain, TRUST_DOMAIN);
    assert_eq!(info.certificate_lifetime_seconds, 86_400);
    let fingerprint = openssl(
        &["x509", "-noout", "-fingerprint", "-sha256"],
        Some(anchors_pem.as_bytes()),
    );
    let fingerprint = fingerprint
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_lowercase();
    assert_eq!(info.trust_anchors[0].sha256, fingerprint);
    assert!(
        info.issuer.subject.contains("identity.ferry.example.org"),
        "{:?}",
        info.issuer
    );
    cp.stop().await;
}

#[tokio::test]
async fn issues_from_user_supplied_files_and_refuses_inconsistent_ones() {
    let dir = tempfile::tempdir().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let mine = ferry_api::ca::generate("elsewhere", TRUST_DOMAIN, now).unwrap();
    let files = write_files(
        dir.path(),
        &mine.trust_anchor_pem,
        &mine.issuer_cert_pem,
        &mine.issuer_key_pem,
    );
    let config = IdentityConfig {
        ca: files,
        tokens_dir: dir.path().join("tokens"),
        cert_lifetime: Duration::from_secs(3600),
        token_lifetime: DEFAULT_TOKEN_LIFETIME,
    };
    let cp = ControlPlane::start(config).await;
    assert_eq!(cp.identity.ca().trust_anchors_pem(), mine.trust_anchor_pem);
    let (_, der) = csr(&[&web()]);
    let resp = cp
        .certify(request(&web(), cp.token("emojivoto", "web"), der))
        .await
        .unwrap();
    assert_eq!(
        resp.intermediate_certificates[0],
        first_cert_der(&mine.issuer_cert_pem)
    );
    let out = openssl_verify(dir.path(), &mine.trust_anchor_pem, &resp, &[]);
    assert!(out.trim_end().ends_with("leaf.pem: OK"), "{out}");
    cp.stop().await;

    // Another pair's key, and another pair's anchor: both refused with the reason.
    let other = ferry_api::ca::generate("other", TRUST_DOMAIN, now).unwrap();
    let load = |files: CaSource| {
        let config = IdentityConfig {
            ca: files,
            tokens_dir: dir.path().join("tokens"),
            cert_lifetime: Duration::from_secs(60),
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
        };
        let error = Identity::load(&config, TRUST_DOMAIN).expect_err("refused");
        assert!(matches!(error, MaterialError::Invalid { .. }), "{error:?}");
        format!("{:#}", anyhow::Error::from(error))
    };
    let wrong_key = load(write_files(
        dir.path(),
        &mine.trust_anchor_pem,
        &mine.issuer_cert_pem,
        &other.issuer_key_pem,
    ));
    assert!(
        wrong_key.contains("issuer key does not match"),
        "{wrong_key}"
    );
    let wrong_anchor = load(write_files(
        dir.path(),
        &other.trust_anchor_pem,
        &mine.issuer_cert_pem,
        &mine.issuer_key_pem,
    ));
    assert!(
        wrong_anchor.contains("not signed by any of the trust anchors"),
        "{wrong_anchor}"
    );
    let not_pem = load(write_files(
        dir.path(),
        "hello",
        &mine.issuer_cert_pem,
        &mine.issuer_key_pem,
    ));
    assert!(
        not_pem.contains("trust anchors: no PEM certificate found"),
        "{not_pem}"
    );
}

#[tokio::test]
async fn a_restart_keeps_the_generated_anchor_and_the_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let config = IdentityConfig::in_dir(dir.path());
    let first = ControlPlane::start(config.clone()).await;
    let anchors = first.identity.ca().trust_anchors_pem().to_string();
    let token = first.token("emojivoto", "web");
    first.stop().await;

    let second = ControlPlane::start(config).await;
    assert_eq!(second.identity.ca().trust_anchors_pem(), anchors);
    assert_eq!(second.token("emojivoto", "web"), token);
    let (_, der) = csr(&[&web()]);
    let resp = second.certify(request(&web(), token, der)).await.unwrap();
    let out = openssl_verify(dir.path(), &anchors, &resp, &[]);
    assert!(out.trim_end().ends_with("leaf.pem: OK"), "{out}");
    second.stop().await;
}

#[tokio::test]
async fn a_short_lifetime_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let config = IdentityConfig {
        cert_lifetime: Duration::from_secs(3),
        ..IdentityConfig::in_dir(dir.path())
    };
    let cp = ControlPlane::start(config).await;
    let (_, der) = csr(&[&web()]);
    let before = unix_now();
    let resp = cp
        .certify(request(&web(), cp.token("emojivoto", "web"), der))
        .await
        .unwrap();
    let after = unix_now();
    let (_, leaf) = X509Certificate::from_der(&resp.leaf_certificate).unwrap();
    let not_after = leaf.validity().not_after.timestamp();
    assert!(
        (before + 3..=after + 3).contains(&not_after),
        "{before}..{after} +3s vs {not_after}"
    );
    assert_eq!(resp.valid_until.unwrap().seconds, not_after);

    // OpenSSL agrees it is good now and expired a second past not_after, without waiting.
    let anchors = cp.identity.ca().trust_anchors_pem().to_string();
    let at = |t: i64| t.to_string();
    let now = openssl_verify(
        dir.path(),
        &anchors,
        &resp,
        &["-attime", &at(not_after - 1)],
    );
    assert!(now.trim_end().ends_with("leaf.pem: OK"), "{now}");
    let later = openssl_verify(
        dir.path(),
        &anchors,
        &resp,
        &["-attime", &at(not_after + 1)],
    );
    assert!(later.contains("certificate has expired"), "{later}");
    cp.stop().await;
}

#[tokio::test]
async fn tokens_follow_the_workloads_file() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(IdentityConfig::in_dir(dir.path())).await;
    let edited = format!(
        "{WORKLOADS}  - name: vote-bot\n    namespace: emojivoto\n    serviceAccount: bot\n    meshed: false\n    instances: [{{name: bot-0, addr: \"127.0.0.1:17204\"}}]\n  - name: emoji\n    namespace: emojivoto\n    serviceAccount: emoji\n    instances: [{{name: emoji-0, addr: \"127.0.0.1:17203\"}}]\n"
    );
    cp.discovery
        .set(ferry_control::workloads_file::parse(&edited).unwrap());
    let tokens = cp.identity.tokens();
    let emoji = tokens.path(&ObjectRef::new("emojivoto", "emoji"));
    within(LIMIT, "a token for the added service account", async {
        while !emoji.exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // One pass writes every account, `bot` before `emoji`: an unmeshed one gets none.
    assert!(!tokens.path(&ObjectRef::new("emojivoto", "bot")).exists());

    let name = dns_name("emoji", "emojivoto", TRUST_DOMAIN);
    let token = cp.token("emojivoto", "emoji");
    let (_, der) = csr(&[&name]);
    let resp = cp
        .certify(request(&name, token.clone(), der))
        .await
        .expect("the new token works");
    assert!(!resp.leaf_certificate.is_empty());

    // Deleting a token revokes it at once.
    std::fs::remove_file(&emoji).unwrap();
    let (_, der) = csr(&[&name]);
    let status = cp.certify(request(&name, token, der)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    cp.stop().await;
}

/// A Kubernetes volume as the kubelet writes it: the files are symlinks through `..data`,
/// which is swapped atomically to a new timestamped directory on every update.
struct ProjectedVolume {
    dir: std::path::PathBuf,
    generation: u32,
}

impl ProjectedVolume {
    fn new(dir: std::path::PathBuf, files: &[(&str, &str)]) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let mut volume = Self { dir, generation: 0 };
        volume.update(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), volume.dir.join(name)).unwrap();
        }
        volume
    }

    fn update(&mut self, files: &[(&str, &str)]) {
        self.generation += 1;
        let data = format!("..2026_12_06_{}", self.generation);
        std::fs::create_dir(self.dir.join(&data)).unwrap();
        for (name, text) in files {
            std::fs::write(self.dir.join(&data).join(name), text).unwrap();
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&data, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.join(name)
    }
}

/// Asks `service` for a certificate for `web`, in memory; returns the issuer it came from.
async fn issuer_of_a_new_certificate(
    service: &ferry_control::identity::service::IdentityService<ferry_control::identity::Validator>,
    token: Vec<u8>,
) -> Vec<u8> {
    use linkerd2_proxy_api::identity::identity_server::Identity as _;
    let (_, der) = csr(&[&web()]);
    let resp = service
        .certify(tonic::Request::new(request(&web(), token, der)))
        .await
        .expect("certificate issued")
        .into_inner();
    resp.intermediate_certificates[0].clone()
}

#[tokio::test(start_paused = true)]
async fn a_new_issuer_on_disk_is_used_without_a_restart_and_a_corrupt_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let first = ferry_api::ca::generate("ferry", TRUST_DOMAIN, now).unwrap();
    let second = ferry_api::ca::generate("ferry", TRUST_DOMAIN, now).unwrap();
    let mut roots = ProjectedVolume::new(
        dir.path().join("trust-roots"),
        &[("ca-bundle.crt", &first.trust_anchor_pem)],
    );
    let mut issuer = ProjectedVolume::new(
        dir.path().join("issuer"),
        &[
            ("tls.crt", &first.issuer_cert_pem),
            ("tls.key", &first.issuer_key_pem),
        ],
    );
    let config = IdentityConfig {
        ca: CaSource::Files {
            trust_anchors: roots.path("ca-bundle.crt"),
            issuer_cert: issuer.path("tls.crt"),
            issuer_key: issuer.path("tls.key"),
        },
        tokens_dir: dir.path().join("tokens"),
        cert_lifetime: Duration::from_secs(3600),
        token_lifetime: DEFAULT_TOKEN_LIFETIME,
    };
    let interval = Duration::from_secs(10);
    let identity = Identity::load(&config, TRUST_DOMAIN)
        .unwrap()
        .with_reload_interval(interval);
    let state = ferry_control::workloads_file::parse(WORKLOADS).unwrap();
    identity.tokens().ensure_all(&state).unwrap();
    let token = std::fs::read(identity.tokens().path(&ObjectRef::new("emojivoto", "web"))).unwrap();
    let service = identity.service();
    let reload = tokio::spawn(identity.follow_files());
    let a_tick = interval + Duration::from_secs(1);

    let first_issuer = first_cert_der(&first.issuer_cert_pem);
    let second_issuer = first_cert_der(&second.issuer_cert_pem);
    assert_eq!(
        issuer_of_a_new_certificate(&service, token.clone()).await,
        first_issuer
    );

    // The Secret is updated before the ConfigMap: the new issuer is not signed by the old
    // anchors, so the old issuer keeps signing in between.
    issuer.update(&[
        ("tls.crt", &second.issuer_cert_pem),
        ("tls.key", &second.issuer_key_pem),
    ]);
    tokio::time::sleep(a_tick).await;
    assert_eq!(
        issuer_of_a_new_certificate(&service, token.clone()).await,
        first_issuer
    );

    // Then the ConfigMap: the new pair is complete and signs the next certificate.
    roots.update(&[("ca-bundle.crt", &second.trust_anchor_pem)]);
    tokio::time::sleep(a_tick).await;
    assert_eq!(
        issuer_of_a_new_certificate(&service, token.clone()).await,
        second_issuer
    );
    assert_eq!(identity.ca().trust_anchors_pem(), second.trust_anchor_pem);
    assert_eq!(identity.info().trust_anchors_pem, second.trust_anchor_pem);

    // A corrupt key is logged and ignored: the last good issuer stays.
    issuer.update(&[
        ("tls.crt", &first.issuer_cert_pem),
        ("tls.key", "-----BEGIN PRIVATE KEY-----\ngarbage\n"),
    ]);
    tokio::time::sleep(a_tick * 3).await;
    assert_eq!(
        issuer_of_a_new_certificate(&service, token.clone()).await,
        second_issuer
    );
    reload.abort();
}
