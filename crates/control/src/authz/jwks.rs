//! JWK Sets named by `JWTAuthentication.spec.jwksURI`: fetched by the control plane when a
//! document names them, fetched again every refresh interval (sooner after a failure), and
//! published on a watch channel that wakes every inbound policy stream. A failed fetch
//! keeps the last good keys; a URI that no document names any more is forgotten.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

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
    /// Follows the `jwksURI`s of `routes`, fetching each every `refresh`.
    pub fn spawn(routes: watch::Receiver<Arc<RouteSet>>, refresh: Duration) -> Self {
        let (tx, rx) = watch::channel(Arc::new(Keys::new()));
        let task = tokio::spawn(run(routes, tx, refresh));
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

async fn fetch(client: &crate::fetch::HttpClient, uri: &str) -> Result<String, String> {
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
) {
    let client = crate::fetch::client();
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
            let next = match fetch(&client, uri).await {
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
    use super::*;

    #[test]
    fn a_jwk_set_needs_a_keys_array() {
        assert_eq!(parse(br#"{"keys": []}"#).unwrap(), r#"{"keys":[]}"#);
        assert!(parse(b"[]").unwrap_err().contains("keys"));
        assert!(parse(b"nope").unwrap_err().contains("not JSON"));
    }
}
