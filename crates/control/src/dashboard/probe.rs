//! Reads each proxy's admin server (`/ready`, `/state`) for the dashboard's proxies page
//! and the local checks. Every read is bounded; a proxy that does not answer is reported
//! with the reason, never waited on.

use std::net::SocketAddr;
use std::time::Duration;

use ferry_api::overview::ProxyInfo;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::model::ClusterState;

/// How long one admin read (connect, request, whole body) may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why an admin read failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The connection could not be opened.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// The admin address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// HTTP failed on the connection.
    #[error("GET {path} from {addr}: {source}")]
    Http {
        /// The admin address.
        addr: SocketAddr,
        /// The path asked for.
        path: &'static str,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
    /// The answer was not 200.
    #[error("GET {path} from {addr}: HTTP {status}")]
    Status {
        /// The admin address.
        addr: SocketAddr,
        /// The path asked for.
        path: &'static str,
        /// What came back.
        status: hyper::StatusCode,
    },
    /// `/state` was not JSON.
    #[error("GET /state from {addr}: not JSON: {source}")]
    Json {
        /// The admin address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The whole read took longer than [`PROBE_TIMEOUT`].
    #[error("no answer from {addr} within {PROBE_TIMEOUT:?}")]
    Timeout {
        /// The admin address.
        addr: SocketAddr,
    },
}

/// GETs `path` from `addr` over a fresh HTTP/1 connection and returns the body.
async fn get(addr: SocketAddr, path: &'static str) -> Result<Bytes, ProbeError> {
    let read = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| ProbeError::Connect { addr, source })?;
        let http = |source| ProbeError::Http { addr, path, source };
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(http)?;
        let conn = tokio::spawn(conn);
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .expect("a GET with a static path is a valid request");
        let rsp = send.send_request(req).await.map_err(http)?;
        let status = rsp.status();
        let body = rsp.into_body().collect().await.map_err(http)?.to_bytes();
        conn.abort();
        if status != hyper::StatusCode::OK {
            return Err(ProbeError::Status { addr, path, status });
        }
        Ok(body)
    };
    tokio::time::timeout(PROBE_TIMEOUT, read)
        .await
        .map_err(|_| ProbeError::Timeout { addr })?
}

/// Reads one proxy: `/ready`, then `/state` (only when `with_state`).
async fn probe(
    addr: SocketAddr,
    with_state: bool,
) -> (bool, Option<String>, Option<serde_json::Value>) {
    if let Err(e) = get(addr, "/ready").await {
        return (false, Some(e.to_string()), None);
    }
    if !with_state {
        return (true, None, None);
    }
    let state = match get(addr, "/state").await {
        // `/state` answers only on loopback (docs/security.md): off the proxy's host, what
        // the control plane needs from it (certificate expiry) comes from `/metrics`.
        Err(ProbeError::Status { status, .. }) if status == hyper::StatusCode::FORBIDDEN => {
            get(addr, "/metrics")
                .await
                .map(|text| state_from_metrics(&text))
        }
        read => read.and_then(|body| {
            serde_json::from_slice(&body).map_err(|source| ProbeError::Json { addr, source })
        }),
    };
    match state {
        Ok(state) => (true, None, Some(state)),
        Err(e) => (true, Some(e.to_string()), None),
    }
}

/// A label's value on the `proxy_build_info` line (`version`, `git_sha`).
fn build_label(text: &str, label: &str) -> Option<String> {
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{}{{", ferry_api::metrics::PROXY_BUILD_INFO)))?;
    let start = line.find(&format!("{label}=\""))? + label.len() + 2;
    let len = line[start..].find('"')?;
    Some(line[start..start + len].to_string())
}

/// The part of a `/state` document that `/metrics` also tells: the certificate's expiry,
/// and the version and git revision (from `proxy_build_info`) for `ferry version` and the
/// version checks.
fn state_from_metrics(text: &[u8]) -> serde_json::Value {
    let name = ferry_api::metrics::IDENTITY_CERT_EXPIRATION_TIMESTAMP_SECONDS;
    let all = String::from_utf8_lossy(text);
    let expiry = all.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse::<f64>().ok()
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let certificate = expiry.map(|at| serde_json::json!({"expires_in_seconds": (at - now) as i64}));
    let mut state = serde_json::json!({
        "source": "metrics",
        "identity": {"certificate": certificate},
    });
    for label in ["version", "git_sha"] {
        if let Some(value) = build_label(&all, label) {
            state[label] = value.into();
        }
    }
    state
}

/// Every instance of `state` (in `namespace`, when given) with what its admin server says,
/// read concurrently; sorted by namespace and pod.
pub async fn proxies(
    state: &ClusterState,
    namespace: Option<&str>,
    with_state: bool,
) -> Vec<ProxyInfo> {
    let mut reads = tokio::task::JoinSet::new();
    for (at, instance) in state.instances.iter() {
        if namespace.is_some_and(|ns| ns != at.namespace) {
            continue;
        }
        let mut info = ProxyInfo {
            namespace: at.namespace.clone(),
            pod: at.name.clone(),
            workload_kind: instance.owner.as_ref().map(|o| o.kind.clone()),
            workload: instance.owner.as_ref().map(|o| o.name.clone()),
            meshed: instance.meshed,
            identity: instance.meshed.then(|| {
                ferry_api::identity::dns_name(
                    &instance.service_account,
                    &at.namespace,
                    &state.trust_domain,
                )
            }),
            admin_addr: instance.admin_addr,
            tap_addr: instance.tap_addr,
            ready: false,
            error: None,
            state: None,
        };
        reads.spawn(async move {
            match info.admin_addr {
                Some(addr) => {
                    (info.ready, info.error, info.state) = probe(addr, with_state).await;
                }
                None => info.error = Some("no adminAddr in discovery".to_string()),
            }
            info
        });
    }
    let mut out = Vec::new();
    while let Some(done) = reads.join_next().await {
        if let Ok(info) = done {
            out.push(info);
        }
    }
    out.sort_by(|a, b| (&a.namespace, &a.pod).cmp(&(&b.namespace, &b.pod)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_tell_the_certificate_expiry_when_state_is_refused() {
        let in_an_hour = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        let text = format!(
            "# TYPE identity_cert_expiration_timestamp_seconds gauge\n\
             identity_cert_expiration_timestamp_seconds {in_an_hour}\n\
             identity_cert_refresh_total 2\n\
             # TYPE proxy_build_info gauge\n\
             proxy_build_info{{version=\"0.1.0\",git_sha=\"0123456789ab\"}} 1\n"
        );
        let state = state_from_metrics(text.as_bytes());
        assert_eq!(state["version"], "0.1.0");
        assert_eq!(state["git_sha"], "0123456789ab");
        let left = state["identity"]["certificate"]["expires_in_seconds"]
            .as_i64()
            .expect("expiry read from the gauge");
        assert!((3590..=3600).contains(&left), "{left}");
        let without = state_from_metrics(b"request_total 1\n");
        assert!(without["identity"]["certificate"].is_null());
        assert!(without["version"].is_null());
    }
}
