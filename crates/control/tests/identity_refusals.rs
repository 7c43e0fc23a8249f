//! What the identity CA refuses, and how it says so: a token that is not the caller's, and
//! CSRs that are malformed, badly signed, of the wrong key type or misnamed.

#[path = "support/ca.rs"]
mod ca;
#[path = "support/fixture.rs"]
mod fixture;
/// TokenReview validation (Kubernetes), in this binary to save a link.
#[path = "support/tokenreview.rs"]
mod tokenreview;

use ca::*;
use ferry_api::identity::dns_name;
use ferry_control::identity::IdentityConfig;
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P384_SHA384};
use tonic::Code;

#[tokio::test]
async fn refuses_a_token_that_does_not_match_the_identity() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(IdentityConfig::in_dir(dir.path())).await;
    let voting = dns_name("voting", "emojivoto", TRUST_DOMAIN);

    // web's token, asking for voting's name (with a CSR for voting's name).
    let (_, der) = csr(&[&voting]);
    let status = cp
        .certify(request(&voting, cp.token("emojivoto", "web"), der.clone()))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status
            .message()
            .contains(&format!("identity \"{voting}\" does not match the token"))
            && status
                .message()
                .contains("service account web in namespace emojivoto"),
        "{}",
        status.message()
    );

    // A token with the right shape but the wrong secret.
    let mut forged = cp.token("emojivoto", "voting");
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    let status = cp
        .certify(request(&voting, forged, der.clone()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("does not match the one issued"),
        "{}",
        status.message()
    );

    // A token for an account that was never issued one, and no token at all.
    let unknown = format!("ferry-local-v1:emojivoto:nobody:{}", "0".repeat(64));
    let status = cp
        .certify(request(&voting, unknown.into_bytes(), der.clone()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status
            .message()
            .contains("no identity token is issued for service account emojivoto/nobody"),
        "{}",
        status.message()
    );
    let status = cp
        .certify(request(&voting, Vec::new(), der))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    cp.stop().await;
}

#[tokio::test]
async fn refuses_csrs_that_are_malformed_unsigned_or_misnamed() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(IdentityConfig::in_dir(dir.path())).await;
    let token = cp.token("emojivoto", "web");
    let refuse = |csr: Vec<u8>| {
        let req = request(&web(), token.clone(), csr);
        let cp = &cp;
        async move {
            let status = cp.certify(req).await.expect_err("refused");
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            status.message().to_string()
        }
    };

    let message = refuse(b"not a csr".to_vec()).await;
    assert!(message.contains("not a DER-encoded PKCS#10"), "{message}");

    let (_, mut tampered) = csr(&[&web()]);
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let message = refuse(tampered).await;
    assert!(message.contains("signature does not verify"), "{message}");

    let (_, two) = csr(&[&web(), "evil.example.org"]);
    let message = refuse(two).await;
    assert!(message.contains("exactly one SAN"), "{message}");
    assert!(message.contains("DNS:evil.example.org"), "{message}");

    let voting = dns_name("voting", "emojivoto", TRUST_DOMAIN);
    let (_, misnamed) = csr(&[&voting]);
    let message = refuse(misnamed).await;
    assert!(message.contains(&format!("[DNS:{voting}]")), "{message}");

    let (_, none) = csr(&[]);
    let message = refuse(none).await;
    assert!(message.contains("it has []"), "{message}");

    let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
    let p384 = CertificateParams::new(vec![web()])
        .unwrap()
        .serialize_request(&key)
        .unwrap();
    let message = refuse(p384.der().to_vec()).await;
    assert!(message.contains("ECDSA P-256"), "{message}");
    cp.stop().await;
}
