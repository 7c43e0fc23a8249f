//! JWK Sets named by `JWTAuthentication.spec.jwksURI`: fetched by the control plane when a
//! document names them, fetched again every refresh interval (sooner after a failure), and
//! published on a watch channel that wakes every inbound policy stream. A failed fetch
//! keeps the last good keys; a URI that no document names any more is forgotten. `https`
//! URIs are verified against the platform's roots and `--jwks-ca-file`'s
//! ([`crate::fetch::tls`]); a failure's log line names the certificate's problem.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::routes::RouteSet;

/// The keys held: JWK Set JSON by URI.
pub type Keys = BTreeMap<String, String>;

/// Largest JWK Set read.
const MAX_BYTES: usize = 1 << 20;
/// How long one fetch may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The wait before trying a failed URI again (or the refresh interval, if shorter).
const RETRY: Duration = Duration::from_secs(5);

/// The fetched keys, and the task fetching them (stopped with the last clone).
#[derive(Clone, Debug)]
pub struct Jwks {
    rx: watch::Receiver<Arc<Keys>>,
    _task: Arc<Abort>,
}

#[derive(Debug)]
struct Abort(tokio::task::JoinHandle<()>);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Jwks {
    /// Follows the `jwksURI`s of `routes`, fetching each every `refresh`; `https` servers
    /// are trusted when the platform's roots or `extra_roots` vouch for them.
    pub fn spawn(
        routes: watch::Receiver<Arc<RouteSet>>,
        refresh: Duration,
        extra_roots: &[CertificateDer<'static>],
    ) -> Self {
        let (tx, rx) = watch::channel(Arc::new(Keys::new()));
        let client = crate::fetch::tls::client(extra_roots).map_err(|e| {
            tracing::error!(error = %e, "cannot configure TLS: https jwksURIs will not be fetched");
            format!("no TLS client: {e}")
        });
        let task = tokio::spawn(run(routes, tx, refresh, client));
        Self {
            rx,
            _task: Arc::new(Abort(task)),
        }
    }

    /// The keys, notified on every change.
    pub fn watch(&self) -> watch::Receiver<Arc<Keys>> {
        self.rx.clone()
    }
}

fn uris(set: &RouteSet) -> Vec<String> {
    let mut out: Vec<String> = set
        .authz
        .jwt
        .iter()
        .filter_map(|j| j.spec.jwks_uri.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Reads a JWK Set: a JSON object with a `keys` array, returned re-serialised.
fn parse(body: &[u8]) -> Result<String, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    if !value.get("keys").is_some_and(serde_json::Value::is_array) {
        return Err("not a JWK Set: no `keys` array".to_string());
    }
    Ok(value.to_string())
}

async fn fetch(client: &crate::fetch::tls::HttpsClient, uri: &str) -> Result<String, String> {
    let parsed: http::Uri = uri.parse().map_err(|e| format!("{e}"))?;
    let (status, body) = crate::fetch::get(client, parsed, MAX_BYTES, TIMEOUT).await?;
    if !status.is_success() {
        return Err(format!("answered {status}"));
    }
    parse(&body)
}

async fn run(
    mut routes: watch::Receiver<Arc<RouteSet>>,
    tx: watch::Sender<Arc<Keys>>,
    refresh: Duration,
    client: Result<crate::fetch::tls::HttpsClient, String>,
) {
    let mut due: BTreeMap<String, Instant> = BTreeMap::new();
    loop {
        let wanted = uris(&routes.borrow_and_update());
        due.retain(|u, _| wanted.contains(u));
        tx.send_if_modified(|keys| {
            let before = keys.len();
            Arc::make_mut(keys).retain(|u, _| wanted.contains(u));
            keys.len() != before
        });
        let now = Instant::now();
        for uri in &wanted {
            if due.get(uri).is_some_and(|at| *at > now) {
                continue;
            }
            let fetched = match &client {
                Ok(client) => fetch(client, uri).await,
                Err(e) => Err(e.clone()),
            };
            let next = match fetched {
                Ok(jwks) => {
                    tracing::debug!(%uri, "fetched JWK Set");
                    tx.send_if_modified(|keys| {
                        if keys.get(uri) == Some(&jwks) {
                            return false;
                        }
                        Arc::make_mut(keys).insert(uri.clone(), jwks);
                        true
                    });
                    refresh
                }
                Err(error) => {
                    tracing::warn!(%uri, %error, "cannot fetch JWK Set; keeping the last keys");
                    RETRY.min(refresh)
                }
            };
            due.insert(uri.clone(), Instant::now() + next);
        }
        let next = due.values().min().copied();
        tokio::select! {
            changed = routes.changed() => if changed.is_err() { return },
            () = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::pki_types::PrivateKeyDer;

    use super::*;
    use crate::authz::resources::JwtAuthentication;

    /// A JWK Set served over https on 127.0.0.1 with a certificate for `localhost` from a
    /// fresh CA; returns the address and the CA's certificate. The task ends with the test's
    /// runtime.
    async fn https_keys(body: &'static str) -> (SocketAddr, CertificateDer<'static>) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that does not trust the certificate ends the handshake.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(body.as_bytes())),
                        ))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        (addr, ca.der().clone())
    }

    fn jwt(name: &str, uri: &str) -> JwtAuthentication {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "policy.ferry.io/v1alpha1",
            "kind": "JWTAuthentication",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"issuer": "https://issuer.example", "jwksURI": uri},
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn https_jwk_sets_are_fetched_with_the_ca_file_and_http_ones_still() {
        let (tls_addr, ca) = https_keys(r#"{"keys":[{"kid":"tls"}]}"#).await;
        let plain = ferry_testkit::server::TestServer::http(|_req| async {
            http::Response::new(ferry_testkit::server::full(r#"{"keys":[{"kid":"plain"}]}"#))
        })
        .await;
        let secure = format!("https://localhost:{}/jwks.json", tls_addr.port());
        let insecure = format!("http://{}/jwks.json", plain.addr);
        let mut set = RouteSet::default();
        set.authz.jwt = vec![jwt("secure", &secure), jwt("plain", &insecure)];
        let (_routes, rx) = watch::channel(Arc::new(set));
        let jwks = Jwks::spawn(rx, Duration::from_secs(300), &[ca]);
        let mut keys = jwks.watch();
        let keys = tokio::time::timeout(Duration::from_secs(10), keys.wait_for(|k| k.len() == 2))
            .await
            .expect("both JWK Sets fetched within 10s")
            .unwrap()
            .clone();
        assert_eq!(keys[&secure], r#"{"keys":[{"kid":"tls"}]}"#);
        assert_eq!(keys[&insecure], r#"{"keys":[{"kid":"plain"}]}"#);
    }

    #[tokio::test]
    async fn an_https_server_the_roots_do_not_vouch_for_is_refused() {
        let (addr, ca) = https_keys(r#"{"keys":[]}"#).await;
        let by_name = format!("https://localhost:{}/jwks.json", addr.port());
        let without_ca = crate::fetch::tls::client(&[]).unwrap();
        let e = fetch(&without_ca, &by_name).await.unwrap_err();
        assert!(e.starts_with("certificate not trusted"), "{e}");
        // Trusted, but not issued for the name asked.
        let with_ca = crate::fetch::tls::client(&[ca]).unwrap();
        let by_ip = format!("https://{addr}/jwks.json");
        let e = fetch(&with_ca, &by_ip).await.unwrap_err();
        assert!(e.starts_with("certificate name mismatch"), "{e}");
        assert!(e.contains("localhost"), "{e}");
        assert_eq!(fetch(&with_ca, &by_name).await.unwrap(), r#"{"keys":[]}"#);
    }

    #[test]
    fn a_jwk_set_needs_a_keys_array() {
        assert_eq!(parse(br#"{"keys": []}"#).unwrap(), r#"{"keys":[]}"#);
        assert!(parse(b"[]").unwrap_err().contains("keys"));
        assert!(parse(b"nope").unwrap_err().contains("not JSON"));
    }
}
