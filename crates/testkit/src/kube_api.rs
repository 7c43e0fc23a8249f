//! A fake Kubernetes API server for discovery and identity tests: plain HTTP on
//! `127.0.0.1:0`, serving real objects recorded from kube-apiserver v1.36
//! (`shared/k8s`), with a kubeconfig file pointing at it.
//!
//! It answers what `kube`'s watchers and clients send: lists (cluster-wide and per
//! namespace, `labelSelector` equality terms) with the world's resourceVersion, paged by
//! `limit` and `continue` as the API server pages (`410 Expired` for a token older than the
//! last compaction); watches
//! (`watch=true`, `resourceVersion`, `timeoutSeconds`, `allowWatchBookmarks`,
//! `sendInitialEvents`) as ndjson flushed per line, replaying the changes after the RV
//! asked for, then live ones; an in-stream `ERROR` 410 for an RV older than the last
//! [`FakeKubeApi::compact`]; TokenReviews answered from `authn/*.response.json` by token
//! and audiences; Leases and Events created (Events validated as the API server does);
//! one object read (`get`); Services server-side applied (`fieldManager` required, the
//! manager kept in `managedFields`). Tests
//! change the world with [`FakeKubeApi::apply`] and [`FakeKubeApi::delete`] (each a watch
//! event with a fresh RV), install the CRDs of a group left out at first (Linkerd's,
//! [`FakeKubeApi::install_crds`]), cut every connection
//! with [`FakeKubeApi::restart`], and force re-lists with [`FakeKubeApi::compact`].

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::kube_world::{Kind, World};
use crate::server::{full, Body, TestServer};

/// The recorded fixtures: `shared/k8s` seen from a crate directory.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/k8s")
}

/// Reads a recorded JSON fixture (path relative to `shared/k8s`).
pub fn fixture(path: &str) -> Value {
    let path = fixtures_dir().join(path);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// A running fake API server; stopped on drop.
pub struct FakeKubeApi {
    /// Where it listens.
    pub addr: SocketAddr,
    world: Arc<Mutex<World>>,
    server: Mutex<Option<TestServer>>,
    kubeconfig: tempfile::NamedTempFile,
}

impl FakeKubeApi {
    /// Serves the emojivoto scenario at resourceVersion 377 (namespaces, services,
    /// EndpointSlices, pods, ReplicaSets, Deployments, ServiceAccounts, nodes; no Jobs).
    pub async fn emojivoto() -> Self {
        let mut world = World::new(377);
        for (kind, list) in [
            ("Namespace", "namespaces"),
            ("Service", "services"),
            ("EndpointSlice", "endpointslices"),
            ("Pod", "pods"),
            ("ReplicaSet", "replicasets"),
            ("Deployment", "deployments"),
            ("ServiceAccount", "serviceaccounts"),
            ("Node", "nodes"),
        ] {
            let list = fixture(&format!("scenario/{list}.list.json"));
            for item in list["items"].as_array().into_iter().flatten() {
                world.load(kind, item.clone());
            }
        }
        world.load_token_reviews(&fixtures_dir().join("authn"));
        Self::serve(world).await
    }

    /// Serves `world`.
    pub async fn serve(world: World) -> Self {
        let world = Arc::new(Mutex::new(world));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake API server");
        let addr = listener.local_addr().expect("bound");
        let server = start(listener, world.clone());
        let kubeconfig = write_kubeconfig(addr);
        Self {
            addr,
            world,
            server: Mutex::new(Some(server)),
            kubeconfig,
        }
    }

    /// A kubeconfig file whose current context (`fake`) points here.
    pub fn kubeconfig(&self) -> &Path {
        self.kubeconfig.path()
    }

    /// The world's current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.world.lock().unwrap().rv
    }

    /// Creates or replaces `object` (with `kind`, `apiVersion`, `metadata.name` and, when
    /// namespaced, `metadata.namespace`): an `ADDED` or `MODIFIED` event with a fresh RV.
    pub fn apply(&self, object: Value) {
        self.world.lock().unwrap().apply(object);
    }

    /// Installs the CRDs of `group` the server leaves out at first (Linkerd's
    /// `policy.linkerd.io`): its resources are served from now on.
    pub fn install_crds(&self, group: &str) {
        self.world.lock().unwrap().install_crds(group);
    }

    /// Deletes an object by kind (`Pod`, or `Server.policy.linkerd.io` where groups share
    /// a name), namespace (empty if cluster-scoped) and name: a `DELETED` event. Returns
    /// whether it existed.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> bool {
        self.world.lock().unwrap().delete(kind, namespace, name)
    }

    /// Loads the Gateway API routes a real API server stored
    /// (`gateway-api-v1.6.1/recorded/{httproutes,grpcroutes}.list.json`): an `ADDED` event
    /// each, status as recorded (none).
    pub fn apply_recorded_routes(&self) {
        for (kind, list) in [("HTTPRoute", "httproutes"), ("GRPCRoute", "grpcroutes")] {
            let list = fixture(&format!("gateway-api-v1.6.1/recorded/{list}.list.json"));
            for item in list["items"].as_array().into_iter().flatten() {
                let mut item = item.clone();
                item["kind"] = Value::from(kind);
                self.apply(item);
            }
        }
    }

    /// Returns a stored object (as a list item: without `kind`/`apiVersion`).
    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        self.world.lock().unwrap().get(kind, namespace, name)
    }

    /// The stored objects of `kind` in `namespace`, as list items.
    pub fn list(&self, kind: &str, namespace: &str) -> Vec<Value> {
        let Some(kind) = Kind::named(kind) else {
            return Vec::new();
        };
        let list = self.world.lock().unwrap().list(kind, Some(namespace), "");
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// Answers TokenReviews of `token` for `audiences` with `response` from now on.
    pub fn answer_token_review(&self, token: &str, audiences: &[&str], response: Value) {
        let mut world = self.world.lock().unwrap();
        world.answer_token_review(token, audiences, response);
    }

    /// Answers TokenReviews of `token` naming no audience with `response` from now on.
    pub fn answer_token_review_default_audience(&self, token: &str, response: Value) {
        let mut world = self.world.lock().unwrap();
        world.answer_token_review_default_audience(token, response);
    }

    /// Lets `user` do `verb` on `resource` in SubjectAccessReviews.
    pub fn grant(&self, user: &str, resource: &str, verb: &str) {
        self.world.lock().unwrap().grant(user, resource, verb);
    }

    /// Sends a `BOOKMARK` (at the current RV, shaped per kind) to every open watch that
    /// allows bookmarks, as a watch cache does periodically.
    pub fn bookmark(&self) {
        self.world.lock().unwrap().bookmark();
    }

    /// Compacts history: every RV up to now becomes too old, open watches are cut, and
    /// the next watch from an old RV gets the in-stream `410 Gone`, so clients re-list.
    pub fn compact(&self) {
        self.world.lock().unwrap().compact();
    }

    /// How many requests were exactly `METHOD path` (a list) or `METHOD path?watch` (a
    /// watch), to see that a client re-listed.
    pub fn requests(&self, request: &str) -> usize {
        let world = self.world.lock().unwrap();
        world.log.iter().filter(|l| *l == request).count()
    }

    /// How many watches were answered with the in-stream `410 Gone`.
    pub fn gone_answers(&self) -> usize {
        self.world.lock().unwrap().gone
    }

    /// "Restarts" the server: drops every connection, refuses connections for `down`,
    /// then serves again on the same address with the same world.
    pub async fn restart(&self, down: Duration) {
        drop(self.server.lock().unwrap().take());
        self.world.lock().unwrap().cut_watches();
        tokio::time::sleep(down).await;
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("rebind fake API server");
        *self.server.lock().unwrap() = Some(start(listener, self.world.clone()));
    }
}

fn start(listener: tokio::net::TcpListener, world: Arc<Mutex<World>>) -> TestServer {
    TestServer::http_on_listener(listener, move |req| {
        let world = world.clone();
        async move { handle(world, req).await }
    })
}

fn write_kubeconfig(addr: SocketAddr) -> tempfile::NamedTempFile {
    use std::io::Write;
    let mut file = tempfile::NamedTempFile::new().expect("kubeconfig temp file");
    let text = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\nusers:\n- name: fake\n  user:\n    token: fake-admin-token\n"
    );
    file.write_all(text.as_bytes()).expect("write kubeconfig");
    file
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(value.to_string()))
        .expect("response")
}

fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    let body = json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
        "message":message,"reason":reason,"code":code});
    json_response(StatusCode::from_u16(code).unwrap(), &body)
}

async fn handle(world: Arc<Mutex<World>>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let watching = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    world.lock().unwrap().log.push(format!(
        "{} {path}{}",
        req.method(),
        if watching { "?watch" } else { "" }
    ));
    if req.method() == Method::POST && path == "/apis/authentication.k8s.io/v1/tokenreviews" {
        let body = match req.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => return status(400, "BadRequest", "unreadable body"),
        };
        let Ok(review) = serde_json::from_slice::<Value>(&body) else {
            return status(400, "BadRequest", "TokenReview is not JSON");
        };
        let answer = world.lock().unwrap().review(&review);
        return json_response(StatusCode::CREATED, &answer);
    }
    if req.method() == Method::POST && path == "/apis/authorization.k8s.io/v1/subjectaccessreviews"
    {
        let body = match req.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => return status(400, "BadRequest", "unreadable body"),
        };
        let Ok(review) = serde_json::from_slice::<Value>(&body) else {
            return status(400, "BadRequest", "SubjectAccessReview is not JSON");
        };
        let answer = world.lock().unwrap().access_review(&review);
        return json_response(StatusCode::CREATED, &answer);
    }
    // Leases: read one, create, replace at a resourceVersion (leader election).
    let typed = |kind: &Kind, mut object: Value| {
        object["kind"] = json!(kind.kind);
        object["apiVersion"] = json!(kind.api_version);
        object
    };
    if let Some((kind, namespace, name)) =
        Kind::route_object(&path).filter(|(k, ..)| k.kind == "Lease")
    {
        return match *req.method() {
            Method::GET => match world.lock().unwrap().get(kind.kind, &namespace, &name) {
                Some(object) => json_response(StatusCode::OK, &typed(kind, object)),
                None => status(404, "NotFound", &format!("leases {name:?} not found")),
            },
            Method::PUT => {
                let Ok(body) = req.into_body().collect().await else {
                    return status(400, "BadRequest", "unreadable body");
                };
                let Ok(mut object) = serde_json::from_slice::<Value>(&body.to_bytes()) else {
                    return status(400, "BadRequest", "not JSON");
                };
                let mut world = world.lock().unwrap();
                let current = world.get(kind.kind, &namespace, &name);
                let rv = |o: &Value| o["metadata"]["resourceVersion"].as_str().map(String::from);
                match current {
                    None => status(404, "NotFound", &format!("leases {name:?} not found")),
                    Some(c) if rv(&c) != rv(&object) => {
                        status(409, "Conflict", "the object has been modified")
                    }
                    Some(_) => {
                        object["kind"] = json!(kind.kind);
                        world.apply(object);
                        json_response(
                            StatusCode::OK,
                            &typed(
                                kind,
                                world.get(kind.kind, &namespace, &name).unwrap_or_default(),
                            ),
                        )
                    }
                }
            }
            _ => status(405, "MethodNotAllowed", "leases: GET or PUT"),
        };
    }
    // Leases and Events: created in a namespace (Events checked as the API server does).
    if req.method() == Method::POST {
        if let Some((kind, Some(namespace))) = Kind::route(&path).filter(|(k, _)| k.creatable()) {
            let Ok(body) = req.into_body().collect().await else {
                return status(400, "BadRequest", "unreadable body");
            };
            let Ok(mut object) = serde_json::from_slice::<Value>(&body.to_bytes()) else {
                return status(400, "BadRequest", "not JSON");
            };
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let invalid = kind.invalid(&namespace, &object);
            if !invalid.is_empty() {
                let message = format!("{} {name:?} is invalid: {}", kind.kind, invalid.join(", "));
                return status(422, "Invalid", &message);
            }
            let mut world = world.lock().unwrap();
            if world.get(kind.kind, &namespace, &name).is_some() {
                return status(
                    409,
                    "AlreadyExists",
                    &format!("{} {name:?} already exists", kind.plural),
                );
            }
            object["kind"] = json!(kind.kind);
            object["metadata"]["namespace"] = json!(namespace);
            world.apply(object);
            return json_response(
                StatusCode::CREATED,
                &typed(
                    kind,
                    world.get(kind.kind, &namespace, &name).unwrap_or_default(),
                ),
            );
        }
    }
    // Server-side apply of a Service (the Services fronting rollouts' Deployments).
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|t| t.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if req.method() == Method::PATCH && content_type.starts_with("application/apply-patch") {
        let Some((kind, namespace, name)) =
            Kind::route_object(&path).filter(|(k, ..)| k.kind == "Service")
        else {
            return status(
                405,
                "MethodNotAllowed",
                "the fake API server applies Services only",
            );
        };
        let Some(manager) = query.get("fieldManager").filter(|m| !m.is_empty()) else {
            return status(
                422,
                "Invalid",
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            );
        };
        let Ok(body) = req.into_body().collect().await else {
            return status(400, "BadRequest", "unreadable body");
        };
        // YAML in general; clients (kube) send JSON, which is YAML.
        let Ok(patch) = serde_json::from_slice::<Value>(&body.to_bytes()) else {
            return status(400, "BadRequest", "the apply patch is not JSON");
        };
        if patch["metadata"]["name"].as_str() != Some(name.as_str()) {
            return status(
                400,
                "BadRequest",
                "the name of the object does not match the name on the URL",
            );
        }
        let (object, created) = world
            .lock()
            .unwrap()
            .server_side_apply(kind, &namespace, &name, &patch, manager);
        let code = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        return json_response(code, &object);
    }
    if req.method() == Method::PATCH {
        let Some((kind, namespace, name)) = Kind::route_status(&path) else {
            return status(
                405,
                "MethodNotAllowed",
                "the fake API server patches status only",
            );
        };
        let merge = req
            .headers()
            .get("content-type")
            .is_some_and(|t| t.as_bytes().starts_with(b"application/merge-patch+json"));
        if !merge {
            return status(
                415,
                "UnsupportedMediaType",
                "the fake API server takes merge patches only",
            );
        }
        let body = match req.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => return status(400, "BadRequest", "unreadable body"),
        };
        let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
            return status(400, "BadRequest", "the patch is not JSON");
        };
        let answer = world
            .lock()
            .unwrap()
            .patch_status(kind, &namespace, &name, &patch);
        return match answer {
            Some(object) => json_response(StatusCode::OK, &object),
            None => status(
                404,
                "NotFound",
                &format!("{} {name:?} not found", kind.plural),
            ),
        };
    }
    if req.method() != Method::GET {
        return status(405, "MethodNotAllowed", "the fake API server only reads");
    }
    let served = Kind::route(&path).filter(|(kind, _)| world.lock().unwrap().serves(kind));
    // One object (`…/namespaces/<ns>/<plural>/<name>`), as a `get` reads it.
    let object = Kind::route_object(&path).filter(|(kind, ..)| world.lock().unwrap().serves(kind));
    if let (None, Some((kind, namespace, name))) = (&served, object) {
        return match world.lock().unwrap().get(kind.kind, &namespace, &name) {
            Some(object) => json_response(StatusCode::OK, &typed(kind, object)),
            None => status(
                404,
                "NotFound",
                &match kind.group() {
                    "" => format!("{} {name:?} not found", kind.plural),
                    group => format!("{}.{group} {name:?} not found", kind.plural),
                },
            ),
        };
    }
    let Some((kind, namespace)) = served else {
        return status(
            404,
            "NotFound",
            &format!("the server could not find {path}"),
        );
    };
    let selector = query.get("labelSelector").cloned().unwrap_or_default();
    if !watching {
        let limit = query.get("limit").and_then(|l| l.parse().ok());
        let token = query.get("continue").map(String::as_str);
        let page =
            world
                .lock()
                .unwrap()
                .list_page(kind, namespace.as_deref(), &selector, limit, token);
        return match page {
            Ok(list) => json_response(StatusCode::OK, &list),
            Err((code, reason, message)) => status(code, reason, &message),
        };
    }
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
    let send_initial = query.get("sendInitialEvents").map(String::as_str) == Some("true");
    let rv = query
        .get("resourceVersion")
        .and_then(|v| v.parse::<u64>().ok());
    let bookmarks = query.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(290), Duration::from_secs);
    let start = world
        .lock()
        .unwrap()
        .watch(kind, namespace.clone(), &selector, rv, send_initial);
    tokio::spawn(async move {
        let (backlog, mut live, mut cut, current) = match start {
            Err(gone) => {
                let _ = tx.send(Ok(Frame::data(line(&gone)))).await;
                return;
            }
            Ok(start) => start,
        };
        for event in backlog {
            if tx.send(Ok(Frame::data(line(&event)))).await.is_err() {
                return;
            }
        }
        if send_initial && bookmarks {
            let mark = kind.bookmark(current, true);
            let _ = tx.send(Ok(Frame::data(line(&mark)))).await;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            let event = tokio::select! {
                () = &mut deadline => return,
                () = tx.closed() => return,
                _ = cut.changed() => return,
                event = live.recv() => event,
            };
            let text = match event {
                Ok(event) if event.is_bookmark() => match bookmarks {
                    true => line(&kind.bookmark(event.rv(), false)),
                    false => continue,
                },
                Ok(event) => match event.matches(kind, namespace.as_deref(), &selector) {
                    Some(value) => line(&value),
                    None => continue,
                },
                // A watcher that fell behind is cut, as the API server does.
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if tx.send(Ok(Frame::data(text))).await.is_err() {
                return;
            }
        }
    });
    let body = StreamBody::new(ReceiverStream::new(rx))
        .map_err(|e: Infallible| -> Box<dyn std::error::Error + Send + Sync> { match e {} })
        .boxed();
    Response::builder()
        .header("content-type", "application/json")
        .body(body)
        .expect("watch response")
}

fn line(value: &Value) -> Bytes {
    let mut text = value.to_string();
    text.push('\n');
    Bytes::from(text)
}
