//! What bounds the registry: the series caps per family and direction, the rendered-size
//! cap, and the label check that keeps a client's raw `Host` out of labels (issue #20).

use std::{collections::HashMap, sync::Arc};

use super::{authority_label, Direction, INVALID};

/// Bounds on what the registry keeps and renders, so that no client can grow the proxy's
/// memory or its scrapes without bound (issue #20). Each has a flag (see `docs/metrics.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most label sets per family (HTTP, TCP) and per direction. Past it, new label sets
    /// are not created (their traffic is not counted) and
    /// `proxy_metrics_series_dropped_total` counts each refusal.
    pub max_series: usize,
    /// Largest `/metrics` body, in bytes (roughly: a series is never cut in half). Series
    /// past it are left out of that scrape, and `proxy_metrics_render_skipped_series` says
    /// how many.
    pub max_render_bytes: usize,
}

impl Limits {
    /// The default series cap per family and direction.
    pub const DEFAULT_MAX_SERIES: usize = 1024;
    /// The default rendered-size cap: 8 MiB.
    pub const DEFAULT_MAX_RENDER_BYTES: usize = 8 * 1024 * 1024;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_series: Self::DEFAULT_MAX_SERIES,
            max_render_bytes: Self::DEFAULT_MAX_RENDER_BYTES,
        }
    }
}

/// The series of one family: label sets (counted per direction, for the cap) and their
/// counters; refused label sets all share one handle that is never rendered.
pub(super) struct Family<K, V> {
    pub(super) map: HashMap<K, Arc<V>>,
    per_direction: [usize; 2],
    pub(super) dropped: [u64; 2],
    detached: Arc<V>,
}

impl<K, V: Default> Default for Family<K, V> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            per_direction: [0; 2],
            dropped: [0; 2],
            detached: Arc::default(),
        }
    }
}

impl<K: Eq + std::hash::Hash, V: Default> Family<K, V> {
    pub(super) fn get_or_insert(&mut self, key: K, direction: Direction, max: usize) -> Arc<V> {
        if let Some(v) = self.map.get(&key) {
            return v.clone();
        }
        let d = direction.index();
        if self.per_direction[d] >= max {
            self.dropped[d] += 1;
            return self.detached.clone();
        }
        self.per_direction[d] += 1;
        self.map.entry(key).or_default().clone()
    }
}

/// `label` itself when it is a valid `host[:port]`, else [`INVALID`].
pub(super) fn checked(label: Arc<str>) -> Arc<str> {
    if authority_label(&label) == INVALID && !label.is_empty() {
        INVALID.into()
    } else {
        label
    }
}
