//! One shared answer per distinct lookup: every `Get`/`GetProfile` stream asking for the
//! same path (in the same caller namespace) follows one [`Answer`], and a new cluster
//! state re-resolves only the lookups whose services or instances it touched.
//!
//! With thousands of proxies each holding a stream per destination, re-resolving every
//! stream on every discovery change costs streams × changes; here a change costs one pass
//! over what changed plus one resolution per affected lookup, and only streams whose
//! answer moved wake up. Turning answers into `destination.proto` updates stays with each
//! stream ([`crate::index::Subscriber`]), since every stream has its own history.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::authority::{ContextToken, Lookup};
use crate::index::{self, Resolution};
use crate::model::{ClusterState, ObjectRef, OrdMap};
use imbl::ordmap::DiffItem;

/// A lookup and its current resolution, as every stream for it sees them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The request parsed against the current cluster domain.
    pub lookup: Lookup,
    /// What it resolves to.
    pub resolution: Arc<Resolution>,
}

/// Shared answers over a discovery watch, kept current by one task.
#[derive(Clone, Debug)]
pub struct Resolutions {
    shared: Arc<Mutex<Shared>>,
}

/// Identifies streams that must get the same answer: the path as asked and the caller's
/// namespace (one-label names resolve in it).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    path: String,
    ns: Option<String>,
}

#[derive(Debug)]
struct Shared {
    /// The state every entry is resolved against: the last one the task processed, so a
    /// new entry never runs ahead of the entries the task is about to update.
    current: Arc<ClusterState>,
    entries: HashMap<Key, Entry>,
}

#[derive(Debug)]
struct Entry {
    caller: ContextToken,
    tx: watch::Sender<Arc<Answer>>,
    deps: Deps,
}

/// What an answer was computed from; a state that changes none of it leaves it as is.
#[derive(Debug, Default)]
struct Deps {
    services: Vec<ObjectRef>,
    instances: Vec<ObjectRef>,
    addr: Option<SocketAddr>,
}

/// What one state changed relative to the one before.
#[derive(Debug, Default)]
struct Touched {
    /// The domains changed: every lookup is parsed and resolved again.
    everything: bool,
    services: HashSet<ObjectRef>,
    instances: HashSet<ObjectRef>,
    /// Endpoint addresses of touched services, before and after.
    addrs: HashSet<SocketAddr>,
}

impl Resolutions {
    /// Follows `states` until it closes or `stop` is cancelled; then every stream's
    /// channel closes, which ends it.
    pub fn spawn(mut states: watch::Receiver<Arc<ClusterState>>, stop: CancellationToken) -> Self {
        let current = states.borrow_and_update().clone();
        let shared = Arc::new(Mutex::new(Shared {
            current,
            entries: HashMap::new(),
        }));
        let task = {
            let shared = Arc::clone(&shared);
            async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        changed = states.changed() => if changed.is_err() {
                            tracing::warn!("discovery stopped; ending destination streams");
                            break;
                        },
                    }
                    let next = states.borrow_and_update().clone();
                    lock(&shared).advance(next);
                }
                // Dropping the senders ends every stream; clients reconnect to a control
                // plane that has an answer and keep their last one meanwhile.
                lock(&shared).entries.clear();
            }
        };
        tokio::spawn(task);
        Self { shared }
    }

    /// Subscribes to the answer for `path` asked by `caller`, sharing it with every other
    /// stream asking the same. The receiver holds the current answer already.
    pub fn subscribe(&self, path: &str, caller: &ContextToken) -> Subscription {
        let key = Key {
            path: path.trim().to_ascii_lowercase(),
            ns: caller.ns.clone(),
        };
        let mut shared = lock(&self.shared);
        let current = Arc::clone(&shared.current);
        let entry = shared.entries.entry(key.clone()).or_insert_with(|| {
            let (answer, deps) = answer(&current, &key.path, caller);
            let (tx, _) = watch::channel(Arc::new(answer));
            Entry {
                caller: caller.clone(),
                tx,
                deps,
            }
        });
        Subscription {
            rx: entry.tx.subscribe(),
            shared: Arc::clone(&self.shared),
            key,
        }
    }

    /// How many distinct lookups are followed (for tests and diagnostics).
    pub fn len(&self) -> usize {
        lock(&self.shared).entries.len()
    }

    /// Whether no lookup is followed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A stream's handle on a shared answer; the entry goes away with its last subscriber.
#[derive(Debug)]
pub struct Subscription {
    /// The answer, notified when it changes.
    pub rx: watch::Receiver<Arc<Answer>>,
    shared: Arc<Mutex<Shared>>,
    key: Key,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut shared = lock(&self.shared);
        // This receiver still counts: the entry's last subscriber is the one leaving.
        let last = shared
            .entries
            .get(&self.key)
            .is_some_and(|entry| entry.tx.receiver_count() <= 1);
        if last {
            shared.entries.remove(&self.key);
        }
    }
}

impl Shared {
    fn advance(&mut self, next: Arc<ClusterState>) {
        let touched = touched(&self.current, &next);
        self.current = next;
        if touched.is_empty() {
            return;
        }
        for (key, entry) in &mut self.entries {
            if !touched.affects(&entry.deps) {
                continue;
            }
            let (answer, deps) = answer(&self.current, &key.path, &entry.caller);
            entry.deps = deps;
            entry.tx.send_if_modified(|current| {
                if **current == answer {
                    return false;
                }
                *current = Arc::new(answer);
                true
            });
        }
    }
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    // Nothing panics while holding the lock; a poisoned one still holds valid entries.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Resolves `path` against `state`, noting what the answer depends on.
fn answer(state: &ClusterState, path: &str, caller: &ContextToken) -> (Answer, Deps) {
    // Paths were validated when the stream opened; a domain change can only make one
    // name no backend serves.
    let lookup = Lookup::parse(path, &state.cluster_domain, caller).unwrap_or(Lookup::Unknown);
    let resolution = index::resolve(state, &lookup);
    let mut deps = Deps::default();
    match &lookup {
        Lookup::Service {
            namespace, name, ..
        } => deps.services.push(ObjectRef::new(namespace, name)),
        Lookup::Addr(addr) => deps.addr = Some(*addr),
        Lookup::Unknown => {}
    }
    if let Resolution::Found(set) = &resolution {
        deps.services.extend(set.service.iter().cloned());
        deps.instances
            .extend(set.endpoints.values().filter_map(|ep| ep.instance.clone()));
    }
    let resolution = Arc::new(resolution);
    (Answer { lookup, resolution }, deps)
}

/// Compares two states by their maps' entries: in what changed (shared subtrees are
/// skipped), once per state, however many streams are open.
fn touched(prev: &ClusterState, next: &ClusterState) -> Touched {
    let mut touched = Touched {
        everything: prev.cluster_domain != next.cluster_domain
            || prev.trust_domain != next.trust_domain,
        ..Touched::default()
    };
    for (key, before, after) in changed(&prev.services, &next.services) {
        for service in before.into_iter().chain(after) {
            touched.addrs.extend(
                service
                    .ports
                    .values()
                    .flat_map(|port| port.endpoints.keys().copied()),
            );
        }
        touched.services.insert(key.clone());
    }
    for (key, _, _) in changed(&prev.instances, &next.instances) {
        touched.instances.insert(key.clone());
    }
    touched
}

/// The keys whose values differ between two maps, with both values. Subtrees the two
/// states share (everything an update did not touch) are skipped without a look.
fn changed<'a, V: PartialEq + Clone>(
    prev: &'a OrdMap<ObjectRef, V>,
    next: &'a OrdMap<ObjectRef, V>,
) -> Vec<(&'a ObjectRef, Option<&'a V>, Option<&'a V>)> {
    prev.diff(next)
        .map(|item| match item {
            DiffItem::Add(key, after) => (key, None, Some(after)),
            DiffItem::Update {
                old: (key, before),
                new: (_, after),
            } => (key, Some(before), Some(after)),
            DiffItem::Remove(key, before) => (key, Some(before), None),
        })
        .collect()
}

impl Touched {
    fn is_empty(&self) -> bool {
        !self.everything && self.services.is_empty() && self.instances.is_empty()
    }

    fn affects(&self, deps: &Deps) -> bool {
        self.everything
            || deps.services.iter().any(|s| self.services.contains(s))
            || deps.instances.iter().any(|i| self.instances.contains(i))
            || deps.addr.is_some_and(|addr| self.addrs.contains(&addr))
    }
}

#[cfg(test)]
mod tests;
