//! The fake API server's world: objects by kind, namespace and name; the resourceVersion
//! clock; the event history watches replay; recorded TokenReview answers. No IO besides
//! loading fixtures; [`crate::kube_api`] serves it.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};

use crate::kube_kinds::{labels, selects, LINKERD_POLICY_GROUP};
pub use crate::kube_kinds::{Kind, KINDS};

/// One change, as watches see it.
#[derive(Debug)]
pub struct Event {
    rv: u64,
    kind: KindId,
    namespace: String,
    labels: BTreeMap<String, String>,
    value: Value,
}

impl Event {
    /// Whether this is a bookmark for every open watch (each gets its own kind's shape).
    pub fn is_bookmark(&self) -> bool {
        self.kind == BOOKMARK
    }

    /// The resourceVersion the event happened at.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// The event's JSON when a watch of `kind` in `namespace` with `selector` sees it.
    pub fn matches(&self, kind: &Kind, namespace: Option<&str>, selector: &str) -> Option<Value> {
        let seen = self.kind == kind.id()
            && namespace.is_none_or(|ns| ns == self.namespace)
            && selects(selector, &self.labels);
        seen.then(|| self.value.clone())
    }
}

/// The pseudo-kind of events that stand for a `BOOKMARK` to every watch.
const BOOKMARK: KindId = ("", "*bookmark");

/// A kind, told apart from another group's kind of the same name: `(apiVersion, kind)`.
type KindId = (&'static str, &'static str);
type Key = (KindId, String, String);
type ReviewKey = (String, Option<Vec<String>>);
/// What a watch starts from: events to send first, live events, the cut signal, the RV.
pub type WatchStart = (
    Vec<Value>,
    broadcast::Receiver<Arc<Event>>,
    watch::Receiver<u64>,
    u64,
);

/// The fake cluster's contents and history.
#[derive(Debug)]
pub struct World {
    /// The latest resourceVersion.
    pub rv: u64,
    /// Watches from an RV below this get `410 Gone`.
    compacted: u64,
    objects: BTreeMap<Key, Value>,
    history: Vec<Arc<Event>>,
    live: broadcast::Sender<Arc<Event>>,
    cut: watch::Sender<u64>,
    reviews: HashMap<ReviewKey, Vec<Value>>,
    overrides: HashMap<ReviewKey, Value>,
    /// SubjectAccessReview grants: (user, resource, verb). None is recorded; answers are
    /// built as the API server shapes them.
    grants: Vec<(String, String, String)>,
    /// Every request, `METHOD path[?watch]`.
    pub log: Vec<String>,
    /// How many watches were answered `410 Gone`.
    pub gone: usize,
    /// API groups whose CRDs are not installed: their resources are answered `404`.
    not_installed: Vec<&'static str>,
}

impl World {
    /// An empty world at resourceVersion `rv`.
    pub fn new(rv: u64) -> Self {
        Self {
            rv,
            compacted: 0,
            objects: BTreeMap::new(),
            history: Vec::new(),
            live: broadcast::channel(4096).0,
            cut: watch::channel(0).0,
            reviews: HashMap::new(),
            overrides: HashMap::new(),
            grants: Vec::new(),
            log: Vec::new(),
            gone: 0,
            not_installed: vec![LINKERD_POLICY_GROUP],
        }
    }

    /// Installs the CRDs of `group` (one [`World::new`] leaves out: Linkerd's
    /// `policy.linkerd.io`), so that its resources are served.
    pub fn install_crds(&mut self, group: &str) {
        self.not_installed.retain(|g| *g != group);
    }

    /// Whether `kind`'s resource is served (its CRD installed).
    pub fn serves(&self, kind: &Kind) -> bool {
        !self.not_installed.contains(&kind.group())
    }

    fn key(object: &Value) -> Option<(&'static Kind, Key)> {
        let kind = Kind::of(object["kind"].as_str()?, object["apiVersion"].as_str())?;
        let meta = &object["metadata"];
        let ns = meta["namespace"].as_str().unwrap_or_default().to_string();
        let name = meta["name"].as_str()?.to_string();
        Some((kind, (kind.id(), ns, name)))
    }

    /// Stores a list item of `kind` as is (its RV kept). No event.
    pub fn load(&mut self, kind: &str, mut object: Value) {
        object["kind"] = json!(kind);
        let (_, key) = Self::key(&object).expect("object with kind and name");
        strip_type(&mut object);
        self.objects.insert(key, object);
    }

    /// Creates or replaces an object, with a fresh RV and an event.
    pub fn apply(&mut self, mut object: Value) {
        let (kind, key) = Self::key(&object).expect("object with a known kind and a name");
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        object["apiVersion"] = json!(kind.api_version);
        let type_ = if self.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.emit(kind, &key, type_, object.clone());
        strip_type(&mut object);
        self.objects.insert(key, object);
    }

    /// Deletes an object, with an event; returns whether it existed.
    pub fn delete(&mut self, kind: &str, namespace: &str, name: &str) -> bool {
        let Some(kind) = Kind::named(kind) else {
            return false;
        };
        let key = (kind.id(), namespace.to_string(), name.to_string());
        let Some(mut object) = self.objects.remove(&key) else {
            return false;
        };
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        object["kind"] = json!(kind.kind);
        object["apiVersion"] = json!(kind.api_version);
        self.emit(kind, &key, "DELETED", object);
        true
    }

    /// Applies a JSON merge patch (RFC 7386) to an object's `status`, as `PATCH …/status`
    /// does: only `status` changes, with a fresh RV and a `MODIFIED` event (the generation
    /// stays). Returns the object as the API server answers it, or `None` if it is missing.
    pub fn patch_status(
        &mut self,
        kind: &'static Kind,
        namespace: &str,
        name: &str,
        patch: &Value,
    ) -> Option<Value> {
        let key = (kind.id(), namespace.to_string(), name.to_string());
        let mut object = self.objects.get(&key)?.clone();
        merge(&mut object["status"], &patch["status"]);
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        object["kind"] = json!(kind.kind);
        object["apiVersion"] = json!(kind.api_version);
        self.emit(kind, &key, "MODIFIED", object.clone());
        let answer = object.clone();
        strip_type(&mut object);
        self.objects.insert(key, object);
        Some(answer)
    }

    /// A server-side apply (`PATCH` with `application/apply-patch+yaml`) by `manager`:
    /// creates the object, or merges `patch` into it (a manager applying again owns the
    /// fields it names), with a fresh RV, an event and `managedFields` naming the manager.
    /// Returns the object as the API server answers it, and whether it was created.
    pub fn server_side_apply(
        &mut self,
        kind: &'static Kind,
        namespace: &str,
        name: &str,
        patch: &Value,
        manager: &str,
    ) -> (Value, bool) {
        let key = (kind.id(), namespace.to_string(), name.to_string());
        let existing = self.objects.get(&key).cloned();
        let created = existing.is_none();
        let mut object = existing.unwrap_or_else(|| json!({}));
        merge(&mut object, patch);
        object["kind"] = json!(kind.kind);
        object["metadata"]["namespace"] = json!(namespace);
        object["metadata"]["managedFields"] = json!([{
            "manager": manager, "operation": "Apply", "apiVersion": kind.api_version,
            "fieldsType": "FieldsV1",
        }]);
        self.apply(object);
        let mut answer = self.objects[&key].clone();
        answer["kind"] = json!(kind.kind);
        answer["apiVersion"] = json!(kind.api_version);
        (answer, created)
    }

    /// A stored object, as a list item.
    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let kind = Kind::named(kind)?;
        let key = (kind.id(), namespace.to_string(), name.to_string());
        self.objects.get(&key).cloned()
    }

    fn emit(&mut self, kind: &'static Kind, key: &Key, type_: &str, object: Value) {
        let event = Arc::new(Event {
            rv: self.rv,
            kind: kind.id(),
            namespace: key.1.clone(),
            labels: labels(&object),
            value: json!({"type": type_, "object": object}),
        });
        self.history.push(event.clone());
        let _ = self.live.send(event);
    }

    /// Sends a `BOOKMARK` at the current RV to every open watch that allows them.
    pub fn bookmark(&mut self) {
        let event = Arc::new(Event {
            rv: self.rv,
            kind: BOOKMARK,
            namespace: String::new(),
            labels: BTreeMap::new(),
            value: Value::Null,
        });
        let _ = self.live.send(event);
    }

    /// Makes every RV so far too old and cuts open watches.
    pub fn compact(&mut self) {
        self.rv += 1;
        self.compacted = self.rv;
        self.history.clear();
        self.cut_watches();
    }

    /// Ends every open watch stream.
    pub fn cut_watches(&mut self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// The list of `kind` in `namespace` (all when `None`) selected by `selector`.
    pub fn list(&self, kind: &Kind, namespace: Option<&str>, selector: &str) -> Value {
        self.list_page(kind, namespace, selector, None, None)
            .expect("an unpaged list always answers")
    }

    /// One page of a list, as the API server pages with `limit` and `continue`: at most
    /// `limit` items in key order after the token's position; `metadata.continue` and
    /// `remainingItemCount` while items remain. Tokens are the API server's shape (base64 of
    /// `{"v":"meta.k8s.io/v1","rv":N,"start":"<key>\u0000"}`) and pages report the RV of the
    /// first one. `Err` is the `410 Expired` Status for a token older than the last
    /// [`World::compact`], or a `400` for a token that is not one.
    pub fn list_page(
        &self,
        kind: &Kind,
        namespace: Option<&str>,
        selector: &str,
        limit: Option<usize>,
        token: Option<&str>,
    ) -> Result<Value, (u16, &'static str, String)> {
        let (rv, start) = match token {
            None => (self.rv, String::new()),
            Some(token) => {
                let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(token.trim_end_matches('='))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
                let (Some(rv), Some(start)) = (
                    decoded.as_ref().and_then(|t| t["rv"].as_u64()),
                    decoded.as_ref().and_then(|t| t["start"].as_str()),
                ) else {
                    return Err((400, "BadRequest", "continue key is not valid".into()));
                };
                if rv < self.compacted {
                    return Err((
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent \
                         list result."
                            .into(),
                    ));
                }
                (rv, start.trim_end_matches('\0').to_string())
            }
        };
        let key = |v: &Value| {
            let meta = &v["metadata"];
            let name = meta["name"].as_str().unwrap_or_default();
            match meta["namespace"].as_str() {
                Some(ns) if namespace.is_none() => format!("{ns}/{name}"),
                _ => name.to_string(),
            }
        };
        let mut rest = self
            .items(kind, namespace, selector)
            .filter(|v| start.is_empty() || key(v) > start);
        let items: Vec<Value> = match limit.filter(|l| *l > 0) {
            Some(limit) => rest.by_ref().take(limit).cloned().collect(),
            None => rest.by_ref().cloned().collect(),
        };
        let remaining = rest.count();
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if let (true, Some(last)) = (remaining > 0, items.last()) {
            let token =
                json!({"v": "meta.k8s.io/v1", "rv": rv, "start": format!("{}\0", key(last))});
            metadata["continue"] =
                json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string()));
            metadata["remainingItemCount"] = json!(remaining);
        }
        Ok(json!({
            "kind": format!("{}List", kind.kind),
            "apiVersion": kind.api_version,
            "metadata": metadata,
            "items": items,
        }))
    }

    fn items<'a>(
        &'a self,
        kind: &'a Kind,
        namespace: Option<&'a str>,
        selector: &'a str,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects
            .iter()
            .filter(move |((k, ns, _), _)| *k == kind.id() && namespace.is_none_or(|n| n == ns))
            .map(|(_, v)| v)
            .filter(move |v| selects(selector, &labels(v)))
    }

    /// Starts a watch: `Err` is the `ERROR` 410 event for a compacted RV. Without an RV
    /// (or `0`), or with `sendInitialEvents`, every current object comes first as `ADDED`.
    pub fn watch(
        &mut self,
        kind: &Kind,
        namespace: Option<String>,
        selector: &str,
        rv: Option<u64>,
        send_initial: bool,
    ) -> Result<WatchStart, Value> {
        let live = self.live.subscribe();
        let mut cut = self.cut.subscribe();
        cut.mark_unchanged();
        let typed = |v: &Value| {
            let mut v = v.clone();
            v["kind"] = json!(kind.kind);
            v["apiVersion"] = json!(kind.api_version);
            json!({"type": "ADDED", "object": v})
        };
        let backlog = match rv {
            _ if send_initial => self
                .items(kind, namespace.as_deref(), selector)
                .map(typed)
                .collect(),
            None | Some(0) => self
                .items(kind, namespace.as_deref(), selector)
                .map(typed)
                .collect(),
            Some(rv) if rv < self.compacted => {
                self.gone += 1;
                return Err(
                    json!({"type":"ERROR","object":{"kind":"Status","apiVersion":"v1",
                    "metadata":{},"status":"Failure",
                    "message":"The resourceVersion for the provided watch is too old.",
                    "reason":"Expired","code":410}}),
                );
            }
            Some(rv) => self
                .history
                .iter()
                .filter(|e| e.rv > rv)
                .filter_map(|e| e.matches(kind, namespace.as_deref(), selector))
                .collect(),
        };
        Ok((backlog, live, cut, self.rv))
    }

    /// Loads `tokenreview-*.{request,response}.json` pairs from `dir`.
    pub fn load_token_reviews(&mut self, dir: &Path) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .expect("authn fixtures")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("tokenreview-") && n.ends_with(".request.json"))
            .collect();
        names.sort();
        for name in names {
            let read = |n: &str| -> Value {
                serde_json::from_str(&std::fs::read_to_string(dir.join(n)).expect("fixture"))
                    .expect("fixture JSON")
            };
            let request = read(&name);
            let response = read(&name.replace(".request.", ".response."));
            self.reviews
                .entry(review_key(&request))
                .or_default()
                .push(response);
        }
    }

    /// Answers TokenReviews of `token` for `audiences` with `response` from now on, before
    /// any recorded answer.
    pub fn answer_token_review(&mut self, token: &str, audiences: &[&str], response: Value) {
        let audiences = Some(audiences.iter().map(|a| a.to_string()).collect());
        self.overrides
            .insert((token.to_string(), audiences), response);
    }

    /// Answers TokenReviews of `token` that name no audience (the API server's own) with
    /// `response` from now on.
    pub fn answer_token_review_default_audience(&mut self, token: &str, response: Value) {
        self.overrides.insert((token.to_string(), None), response);
    }

    /// Lets `user` do `verb` on `resource` (any API group) in SubjectAccessReviews.
    pub fn grant(&mut self, user: &str, resource: &str, verb: &str) {
        self.grants
            .push((user.to_string(), resource.to_string(), verb.to_string()));
    }

    /// Answers a SubjectAccessReview from the grants: allowed, or denied with no reason
    /// (as RBAC answers when no rule matches).
    pub fn access_review(&self, request: &Value) -> Value {
        let spec = &request["spec"];
        let attrs = &spec["resourceAttributes"];
        let field = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let asked = (
            field(&spec["user"]),
            field(&attrs["resource"]),
            field(&attrs["verb"]),
        );
        let allowed = self.grants.contains(&asked);
        let status = if allowed {
            json!({"allowed": true, "reason": "RBAC: allowed by ClusterRoleBinding"})
        } else {
            json!({"allowed": false})
        };
        json!({"kind":"SubjectAccessReview","apiVersion":"authorization.k8s.io/v1",
            "metadata":{},"spec":spec.clone(),"status":status})
    }

    /// Answers a TokenReview: the recorded answer for its token and audiences. A
    /// pod-bound token is valid only while its pod exists (as the API server checks).
    pub fn review(&self, request: &Value) -> Value {
        if let Some(answer) = self.overrides.get(&review_key(request)) {
            return answer.clone();
        }
        let candidates = self.reviews.get(&review_key(request));
        let pod_alive = |answer: &Value| {
            let user = &answer["status"]["user"];
            let pod = user["extra"]["authentication.kubernetes.io/pod-name"][0].as_str();
            let ns = user["username"].as_str().and_then(|u| u.split(':').nth(2));
            match (pod, ns) {
                (Some(pod), Some(ns)) => self.get("Pod", ns, pod).is_some(),
                _ => true,
            }
        };
        let authenticated = |a: &&Value| a["status"]["authenticated"] == json!(true);
        let candidates = candidates.into_iter().flatten();
        let valid = candidates
            .clone()
            .filter(authenticated)
            .find(|a| pod_alive(a));
        let refused = candidates.clone().find(|a| !authenticated(a));
        match valid.or(refused) {
            Some(answer) => answer.clone(),
            None => json!({"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1",
                "metadata":{},"spec":request["spec"].clone(),
                "status":{"user":{},"error":"invalid bearer token"}}),
        }
    }
}

fn review_key(review: &Value) -> ReviewKey {
    let spec = &review["spec"];
    let token = spec["token"].as_str().unwrap_or_default().to_string();
    let audiences = spec["audiences"].as_array().map(|a| {
        a.iter()
            .filter_map(|s| Some(s.as_str()?.to_string()))
            .collect()
    });
    (token, audiences)
}

/// RFC 7386: objects merge key by key, `null` removes, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(target), Some(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (None, Some(_)) => {
            *target = json!({});
            merge(target, patch);
        }
        _ => *target = patch.clone(),
    }
}

fn strip_type(object: &mut Value) {
    if let Some(map) = object.as_object_mut() {
        map.remove("kind");
        map.remove("apiVersion");
    }
}
