//! A scripted fake Kubernetes API server for the CLI's tests (never a real cluster): answers
//! by path, and serves pod port-forwards the way kube-apiserver does, over a WebSocket with
//! the `v4.channel.k8s.io` subprotocol, to a real local address.
//!
//! Port-forward framing (what `kubectl`/kube-rs expect): every binary message starts with
//! its channel byte (0 data, 1 error, for the first port); the server's first message on
//! each channel carries the port as 2 bytes little-endian.
#![allow(dead_code)] // each test binary uses its own part

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// `(method, path with query) → (status, JSON body)`. Queries match whatever their order
/// and percent-encoding.
pub type Routes = HashMap<(String, String), (u16, Value)>;

/// A route: `(method, normalized path)` and its answer.
type Route = ((String, String), (u16, Value));

/// One request as received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub body: String,
    pub authorization: Option<String>,
}

/// The fake server; stops when dropped.
pub struct FakeApi {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// A recorded 404 Status, as the apiserver answers an unknown object.
pub fn not_found(shared: impl Fn(&str) -> Value) -> Value {
    let mut not_found = shared("scenario/errors/get-missing-pod.404.json");
    not_found["message"] = json!("not found");
    not_found
}

impl FakeApi {
    /// Serves `routes`; port-forwards of any pod go to `forward_to` (refused without one).
    pub fn start(routes: Routes, missing: Value, forward_to: Option<SocketAddr>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let log = seen.clone();
        let routes: Arc<Vec<Route>> = Arc::new(
            routes
                .into_iter()
                .map(|((m, p), a)| ((m, normalize(&p)), a))
                .collect(),
        );
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                let accept = async {
                    loop {
                        let Ok((conn, _)) = listener.accept().await else {
                            continue;
                        };
                        let (routes, log, missing) = (routes.clone(), log.clone(), missing.clone());
                        tokio::spawn(async move {
                            let served = serve(conn, &routes, &log, missing, forward_to);
                            let _ = tokio::time::timeout(Duration::from_secs(60), served).await;
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
        });
        Self {
            addr,
            seen,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// `(method, path, body)` of every request.
    pub fn requests(&self) -> Vec<(String, String, String)> {
        self.seen()
            .into_iter()
            .map(|s| (s.method, s.path, s.body))
            .collect()
    }

    /// A kubeconfig whose context `fake` reaches this server with `token`; its current
    /// context is `elsewhere` (a closed port), so only `--context fake` works.
    pub fn kubeconfig(&self, token: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n\
             - name: fake\n  cluster:\n    server: {}\n\
             - name: elsewhere\n  cluster:\n    server: http://127.0.0.1:1\n\
             users:\n- name: tester\n  user:\n    token: {token}\n\
             contexts:\n\
             - name: fake\n  context:\n    cluster: fake\n    user: tester\n\
             - name: elsewhere\n  context:\n    cluster: elsewhere\n    user: tester\n\
             current-context: elsewhere\n",
            self.url()
        )
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `path?b=2&a=x%3Dy` → `path?a=x=y&b=2`: decoded, sorted, empty pairs dropped.
pub fn normalize(path: &str) -> String {
    let Some((base, query)) = path.split_once('?') else {
        return path.to_string();
    };
    let mut pairs: Vec<String> = form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    pairs.sort();
    if pairs.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", pairs.join("&"))
    }
}

struct Head {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    rest: Vec<u8>,
}

async fn read_head(conn: &mut TcpStream) -> Option<Head> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split_whitespace();
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(Head {
        method,
        path,
        headers,
        rest: buf[end + 4..].to_vec(),
    })
}

async fn serve(
    mut conn: TcpStream,
    routes: &[Route],
    log: &Mutex<Vec<Seen>>,
    missing: Value,
    forward_to: Option<SocketAddr>,
) {
    let Some(head) = read_head(&mut conn).await else {
        return;
    };
    let length: usize = head
        .headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = head.rest.clone();
    while body.len() < length {
        let mut chunk = vec![0u8; length - body.len()];
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    log.lock().unwrap().push(Seen {
        method: head.method.clone(),
        path: head.path.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
        authorization: head.headers.get("authorization").cloned(),
    });
    let upgrade = head
        .headers
        .get("upgrade")
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    if upgrade && head.path.contains("/portforward") {
        if let Some(target) = forward_to {
            return port_forward(conn, &head, target).await;
        }
    }
    let key = (head.method.clone(), normalize(&head.path));
    let (status, answer) = routes
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, a)| a.clone())
        .unwrap_or((404, missing));
    let text = answer.to_string();
    let response = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = conn.write_all(response.as_bytes()).await;
    let _ = conn.shutdown().await;
}

/// Upgrades to `v4.channel.k8s.io` and relays channel 0 to `target`.
async fn port_forward(mut conn: TcpStream, head: &Head, target: SocketAddr) {
    const PROTOCOL: &str = "v4.channel.k8s.io";
    let offered = head
        .headers
        .get("sec-websocket-protocol")
        .is_some_and(|p| p.split(',').any(|p| p.trim() == PROTOCOL));
    let port: u16 = normalize(&head.path)
        .split_once("ports=")
        .and_then(|(_, p)| p.split('&').next()?.parse().ok())
        .unwrap_or(0);
    let Some(key) = head.headers.get("sec-websocket-key").filter(|_| offered) else {
        let _ = conn
            .write_all(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )
            .await;
        return;
    };
    let accept = derive_accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: {PROTOCOL}\r\n\r\n"
    );
    if conn.write_all(response.as_bytes()).await.is_err() {
        return;
    }
    let mut ws = WebSocketStream::from_raw_socket(conn, Role::Server, None).await;
    let [lo, hi] = port.to_le_bytes();
    if ws.send(Message::binary(vec![0, lo, hi])).await.is_err()
        || ws.send(Message::binary(vec![1, lo, hi])).await.is_err()
    {
        return;
    }
    let Ok(mut upstream) = TcpStream::connect(target).await else {
        let mut msg = vec![1];
        msg.extend_from_slice(b"connection refused");
        let _ = ws.send(Message::binary(msg)).await;
        let _ = ws.close(None).await;
        return;
    };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Binary(bytes))) if bytes.first() == Some(&0) => {
                    if upstream.write_all(&bytes[1..]).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            n = upstream.read(&mut buf) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut msg = Vec::with_capacity(n + 1);
                    msg.push(0);
                    msg.extend_from_slice(&buf[..n]);
                    if ws.send(Message::binary(msg)).await.is_err() {
                        break;
                    }
                }
            },
        }
    }
    let _ = ws.close(None).await;
}
