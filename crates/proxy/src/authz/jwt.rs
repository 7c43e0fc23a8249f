//! JWT requirements of inbound authorizations (Ferry's `JWTAuthentication`): a request
//! carries a token whose signature verifies with one of the issuer's keys (the JWK Set the
//! control plane sends), whose `iss`, `aud`, `exp` and `nbf` hold, and which has the
//! required claims. The keys are parsed once per policy, when it is compiled, not per
//! request; signatures are checked by `jsonwebtoken` (ring).

use ferry_api::{policy::inbound as ext, AuthzFailure};
use http::HeaderName;
use jsonwebtoken::{
    errors::ErrorKind,
    jwk::{AlgorithmParameters, JwkSet},
    Algorithm, DecodingKey, Validation,
};
use serde_json::Value;

/// Clock skew allowed on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;

/// One compiled `JWTAuthentication`.
pub struct JwtCheck {
    /// The resource's `namespace/name`, for logs.
    pub name: String,
    header: HeaderName,
    /// `Authorization: Bearer <token>` rather than a header holding the token alone.
    bearer: bool,
    keys: Vec<Key>,
    issuer: String,
    audiences: Vec<String>,
    claims: Vec<(String, Vec<String>)>,
}

struct Key {
    kid: Option<String>,
    key: DecodingKey,
    /// The algorithms this key's type verifies (never HMAC: a JWK Set is public).
    algs: &'static [Algorithm],
}

const RSA: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const EC: &[Algorithm] = &[Algorithm::ES256, Algorithm::ES384];
const ED: &[Algorithm] = &[Algorithm::EdDSA];

impl JwtCheck {
    /// Compiles a requirement; `Err` names what is wrong with its header name. Keys that
    /// cannot be used (symmetric, malformed) are left out with a warning: a token signed
    /// with them does not verify.
    pub fn new(jwt: &ext::Jwt) -> Result<Self, String> {
        let (header, bearer) = if jwt.from_header.is_empty() {
            (http::header::AUTHORIZATION, true)
        } else {
            let name = HeaderName::try_from(jwt.from_header.as_str())
                .map_err(|_| format!("invalid JWT header name {:?}", jwt.from_header))?;
            let bearer = name == http::header::AUTHORIZATION;
            (name, bearer)
        };
        let keys = match serde_json::from_str::<JwkSet>(&jwt.jwks) {
            Ok(set) => set
                .keys
                .iter()
                .filter_map(|jwk| {
                    let algs = match &jwk.algorithm {
                        AlgorithmParameters::RSA(_) => RSA,
                        AlgorithmParameters::EllipticCurve(_) => EC,
                        AlgorithmParameters::OctetKeyPair(_) => ED,
                        AlgorithmParameters::OctetKey(_) => return None,
                    };
                    match DecodingKey::from_jwk(jwk) {
                        Ok(key) => Some(Key {
                            kid: jwk.common.key_id.clone(),
                            key,
                            algs,
                        }),
                        Err(error) => {
                            tracing::warn!(jwt = %jwt.name, %error, "unusable JWK left out");
                            None
                        }
                    }
                })
                .collect(),
            Err(error) => {
                tracing::warn!(jwt = %jwt.name, %error, "JWK Set does not parse; no key verifies");
                Vec::new()
            }
        };
        Ok(Self {
            name: jwt.name.clone(),
            header,
            bearer,
            keys,
            issuer: jwt.issuer.clone(),
            audiences: jwt.audiences.clone(),
            claims: jwt
                .required_claims
                .iter()
                .map(|c| (c.name.clone(), c.values.clone()))
                .collect(),
        })
    }

    /// The header the token is read from.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// Verifies the token in `value` (the header's value; `None` when absent).
    pub fn verify(&self, value: Option<&[u8]>) -> Result<(), AuthzFailure> {
        let value = value.ok_or(AuthzFailure::JwtMissing)?;
        let value = std::str::from_utf8(value).map_err(|_| AuthzFailure::JwtMalformed)?;
        let token = if self.bearer {
            let value = value.trim();
            let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(AuthzFailure::JwtMalformed);
            }
            token.trim()
        } else {
            value.trim()
        };
        if token.is_empty() {
            return Err(AuthzFailure::JwtMissing);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthzFailure::JwtMalformed)?;
        let candidates: Vec<&Key> = self
            .keys
            .iter()
            .filter(|k| k.algs.contains(&header.alg))
            .filter(|k| match (&header.kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                (Some(_), None) => false,
                (None, _) => true,
            })
            .collect();
        if candidates.is_empty() {
            return Err(AuthzFailure::JwtUnknownKey);
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        if !self.issuer.is_empty() {
            validation.set_issuer(&[&self.issuer]);
        }
        if self.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audiences);
        }
        let mut failure = AuthzFailure::JwtBadSignature;
        for key in candidates {
            match jsonwebtoken::decode::<serde_json::Map<String, Value>>(
                token,
                &key.key,
                &validation,
            ) {
                Ok(data) => return self.check_claims(&data.claims),
                Err(e) => {
                    failure = classify(e.kind());
                    // Only a signature failure may be another key's to pass.
                    if failure != AuthzFailure::JwtBadSignature {
                        return Err(failure);
                    }
                }
            }
        }
        Err(failure)
    }

    fn check_claims(&self, claims: &serde_json::Map<String, Value>) -> Result<(), AuthzFailure> {
        for (name, values) in &self.claims {
            let has = |v: &Value| v.as_str().is_some_and(|s| values.iter().any(|w| w == s));
            let ok = match claims.get(name) {
                None => false,
                Some(Value::Array(items)) => items.iter().any(has),
                Some(v) => values.is_empty() || has(v),
            };
            if !ok {
                return Err(AuthzFailure::JwtMissingClaim);
            }
        }
        Ok(())
    }
}

fn classify(kind: &ErrorKind) -> AuthzFailure {
    match kind {
        ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm | ErrorKind::Crypto(_) => {
            AuthzFailure::JwtBadSignature
        }
        ErrorKind::ExpiredSignature => AuthzFailure::JwtExpired,
        ErrorKind::ImmatureSignature => AuthzFailure::JwtNotYetValid,
        ErrorKind::InvalidIssuer => AuthzFailure::JwtWrongIssuer,
        ErrorKind::InvalidAudience => AuthzFailure::JwtWrongAudience,
        ErrorKind::MissingRequiredClaim(_) => AuthzFailure::JwtMissingClaim,
        ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidKeyFormat => {
            AuthzFailure::JwtUnknownKey
        }
        _ => AuthzFailure::JwtMalformed,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use base64::Engine as _;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

    /// An ES256 signing key made for the test, with its JWK.
    pub(crate) struct TestKey {
        pair: EcdsaKeyPair,
        pub kid: String,
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    pub(crate) fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    impl TestKey {
        pub(crate) fn new(kid: &str) -> Self {
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                    .unwrap();
            Self {
                pair,
                kid: kid.into(),
            }
        }

        /// The public key as a JWK.
        pub(crate) fn jwk(&self) -> Value {
            let point = self.pair.public_key().as_ref();
            serde_json::json!({
                "kty": "EC", "crv": "P-256", "kid": self.kid, "alg": "ES256", "use": "sig",
                "x": b64(&point[1..33]), "y": b64(&point[33..65]),
            })
        }

        /// A token with these claims, signed by this key.
        pub(crate) fn sign(&self, claims: &Value) -> String {
            let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": self.kid});
            let input = format!(
                "{}.{}",
                b64(header.to_string().as_bytes()),
                b64(claims.to_string().as_bytes())
            );
            let rng = ring::rand::SystemRandom::new();
            let sig = self.pair.sign(&rng, input.as_bytes()).unwrap();
            format!("{input}.{}", b64(sig.as_ref()))
        }
    }

    pub(crate) fn jwks(keys: &[&TestKey]) -> String {
        serde_json::json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}).to_string()
    }

    pub(crate) fn requirement(keys: &[&TestKey]) -> ext::Jwt {
        ext::Jwt {
            name: "ns/issuer".into(),
            issuer: "https://issuer.test".into(),
            audiences: vec!["web".into()],
            jwks: jwks(keys),
            required_claims: vec![ext::Claim {
                name: "groups".into(),
                values: vec!["voters".into()],
            }],
            from_header: String::new(),
        }
    }

    pub(crate) fn good_claims() -> Value {
        serde_json::json!({
            "iss": "https://issuer.test", "aud": ["web", "other"], "sub": "alice",
            "exp": now() + 600, "nbf": now() - 10, "groups": ["voters", "admins"],
        })
    }

    fn bearer(t: &str) -> Vec<u8> {
        format!("Bearer {t}").into_bytes()
    }

    #[test]
    fn a_valid_token_passes_and_every_failure_has_its_reason() {
        let key = TestKey::new("k1");
        let other = TestKey::new("k1");
        let check = JwtCheck::new(&requirement(&[&key])).unwrap();
        let good = key.sign(&good_claims());
        assert_eq!(check.verify(Some(&bearer(&good))), Ok(()));
        assert_eq!(
            check.verify(Some(format!("bearer  {good}").as_bytes())),
            Ok(())
        );

        let with = |f: &dyn Fn(&mut Value)| {
            let mut c = good_claims();
            f(&mut c);
            check.verify(Some(&bearer(&key.sign(&c))))
        };
        use AuthzFailure as F;
        assert_eq!(check.verify(None), Err(F::JwtMissing));
        assert_eq!(check.verify(Some(b"Bearer ")), Err(F::JwtMissing));
        assert_eq!(check.verify(Some(b"Basic abc")), Err(F::JwtMalformed));
        assert_eq!(check.verify(Some(b"Bearer a.b")), Err(F::JwtMalformed));
        assert_eq!(
            check.verify(Some(b"Bearer !!!.???.***")),
            Err(F::JwtMalformed)
        );
        // Same kid, another key: the signature does not verify.
        assert_eq!(
            check.verify(Some(&bearer(&other.sign(&good_claims())))),
            Err(F::JwtBadSignature)
        );
        // A tampered payload.
        let mut parts: Vec<&str> = good.split('.').collect();
        let evil = b64(
            serde_json::json!({"iss": "https://issuer.test", "exp": now() + 600})
                .to_string()
                .as_bytes(),
        );
        parts[1] = &evil;
        assert_eq!(
            check.verify(Some(&bearer(&parts.join(".")))),
            Err(F::JwtBadSignature)
        );
        assert_eq!(
            check.verify(Some(&bearer(&TestKey::new("k2").sign(&good_claims())))),
            Err(F::JwtUnknownKey)
        );
        assert_eq!(
            with(&|c| c["exp"] = (now() - 120).into()),
            Err(F::JwtExpired)
        );
        assert_eq!(
            with(&|c| c["exp"] = (now() - 5).into()),
            Ok(()),
            "within the leeway"
        );
        assert_eq!(
            with(&|c| c["nbf"] = (now() + 600).into()),
            Err(F::JwtNotYetValid)
        );
        assert_eq!(
            with(&|c| c["iss"] = "https://evil.test".into()),
            Err(F::JwtWrongIssuer)
        );
        assert_eq!(
            with(&|c| c["aud"] = "mail".into()),
            Err(F::JwtWrongAudience)
        );
        assert_eq!(
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            Err(F::JwtMissingClaim)
        );
        assert_eq!(
            with(&|c| c["groups"] = "admins".into()),
            Err(F::JwtMissingClaim)
        );
        assert_eq!(with(&|c| c["groups"] = "voters".into()), Ok(()));
        // An `alg: none` token names no key that verifies it.
        let none = format!(
            "{}.{}.",
            b64(br#"{"alg":"none"}"#),
            b64(good_claims().to_string().as_bytes())
        );
        assert_ne!(check.verify(Some(&bearer(&none))), Ok(()));
    }

    #[test]
    fn keys_rotate_with_the_policy_and_a_named_header_holds_the_bare_token() {
        let (old, new) = (TestKey::new("old"), TestKey::new("new"));
        let mut req = requirement(&[&old, &new]);
        let both = JwtCheck::new(&req).unwrap();
        let token = old.sign(&good_claims());
        assert_eq!(both.verify(Some(&bearer(&token))), Ok(()));
        req.jwks = jwks(&[&new]);
        let rotated = JwtCheck::new(&req).unwrap();
        assert_eq!(
            rotated.verify(Some(&bearer(&token))),
            Err(AuthzFailure::JwtUnknownKey)
        );

        req.from_header = "x-token".into();
        let named = JwtCheck::new(&req).unwrap();
        assert_eq!(named.header().as_str(), "x-token");
        let token = new.sign(&good_claims());
        assert_eq!(named.verify(Some(token.as_bytes())), Ok(()));

        req.jwks = "not json".into();
        let broken = JwtCheck::new(&req).unwrap();
        assert_eq!(
            broken.verify(Some(token.as_bytes())),
            Err(AuthzFailure::JwtUnknownKey)
        );
        req.from_header = "bad header".into();
        assert!(JwtCheck::new(&req).err().unwrap().contains("bad header"));
    }
}
