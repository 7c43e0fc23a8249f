//! `edges`: who sent traffic to whom in the window, from the senders' outbound
//! `response_total`, with the TLS labels that say whether it was mTLS and between which
//! identities.

use std::collections::BTreeMap;
use std::time::SystemTime;

use ferry_api::metrics as names;
use ferry_api::stat::{Edge, EdgesAnswer, EdgesQuery};

use super::select::{self, dst_labels, row_of, src_labels};
use super::{parse_resource, parse_window, StatError, DEFAULT_NAMESPACE};
use crate::metrics::{Matcher, MetricsBackend, Query};
use crate::model::ClusterState;

type Key = (String, String);

/// Answers an edges request: who sent traffic to whom in the window, from outbound
/// `response_total`, with the TLS labels.
pub async fn edges<B: MetricsBackend>(
    backend: &B,
    state: &ClusterState,
    q: &EdgesQuery,
) -> Result<EdgesAnswer, StatError> {
    let kind = parse_resource(&q.kind)?.kind;
    let (window, _) = parse_window(q.window.as_deref())?;
    let src = src_labels(&kind)?;
    let dst = dst_labels(&kind);
    let tls_keys = ["tls", "no_tls_reason", "server_id", "client_id"];
    let mut by = src.clone();
    by.extend(dst.iter().cloned());
    by.extend(tls_keys.iter().map(|k| k.to_string()));
    let query = Query::Rate {
        metric: names::RESPONSE_TOTAL,
        matchers: vec![Matcher::eq(names::LABEL_DIRECTION, "outbound")],
        by,
    };
    let namespace = (!q.all_namespaces).then(|| {
        q.namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.into())
    });
    let vector = backend.query(&query, window, SystemTime::now()).await?;
    let mut edges: BTreeMap<(Key, Key, [Option<String>; 4]), f64> = BTreeMap::new();
    for (labels, v) in vector {
        let (Some(s), Some(d)) = (row_of(&labels, &src), row_of(&labels, &dst)) else {
            continue;
        };
        if let Some(ns) = &namespace {
            if s.0 != *ns && d.0 != *ns {
                continue;
            }
        }
        let tls = tls_keys.map(|k| labels.get(k).cloned());
        *edges.entry((s, d, tls)).or_default() += v;
    }
    let edges = edges
        .into_iter()
        .map(|((s, d, [tls, reason, server_id, client_id]), rps)| {
            let secured = tls.as_deref() == Some("true");
            let client_id = client_id.or_else(|| {
                secured
                    .then(|| select::identity_of(state, &kind, &s.0, &s.1))
                    .flatten()
            });
            Edge {
                kind: kind.clone(),
                src: s.1,
                src_namespace: s.0,
                dst: d.1,
                dst_namespace: d.0,
                secured,
                client_id,
                server_id,
                no_tls_reason: if secured { None } else { reason },
                rps,
            }
        })
        .collect();
    Ok(EdgesAnswer {
        edges,
        window_seconds: window.as_secs(),
        backend: backend.name().to_string(),
    })
}
