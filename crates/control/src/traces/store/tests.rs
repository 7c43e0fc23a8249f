use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span::SpanKind, status::StatusCode, ResourceSpans, ScopeSpans, Span, Status,
};

use super::*;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

fn tid(n: u8) -> Vec<u8> {
    let mut id = vec![0xab; 16];
    id[15] = n;
    id
}

fn sid(n: u8) -> Vec<u8> {
    vec![0, 0, 0, 0, 0, 0, 1, n]
}

/// A span of trace `t`, id `s`, parent `p` (0: none), from `start` ms for `ms` ms.
fn span(t: u8, s: u8, p: u8, start: u64, ms: u64, error: bool) -> Span {
    const BASE: u64 = 1_700_000_000_000_000_000;
    Span {
        trace_id: tid(t),
        span_id: sid(s),
        parent_span_id: if p == 0 { Vec::new() } else { sid(p) },
        name: format!("span-{s}"),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: BASE + start * 1_000_000,
        end_time_unix_nano: BASE + (start + ms) * 1_000_000,
        status: Some(Status {
            code: if error {
                StatusCode::Error as i32
            } else {
                StatusCode::Ok as i32
            },
            message: if error {
                "boom".to_string()
            } else {
                String::new()
            },
        }),
        attributes: vec![kv("http.request.method", "GET")],
        ..Default::default()
    }
}

fn export(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", service),
                    kv("k8s.namespace.name", "emojivoto"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn limits(max_traces: usize, max_bytes: usize) -> StoreLimits {
    StoreLimits {
        max_traces,
        max_bytes,
        max_spans_per_trace: 100,
        max_age: Duration::from_secs(3600),
    }
}

fn ids(list: &[TraceSummary]) -> Vec<u8> {
    list.iter()
        .map(|s| parse_trace_id(&s.trace_id).unwrap()[15])
        .collect()
}

#[tokio::test]
async fn spans_from_two_exporters_group_into_one_trace_in_tree_order() {
    let store = TraceStore::default();
    // The client side of the hop (web) and the server side (voting) export separately.
    store.receive(
        &export(
            "web",
            vec![span(1, 1, 0, 0, 50, false), span(1, 2, 1, 5, 40, false)],
        ),
        true,
    );
    store.receive(&export("voting", vec![span(1, 3, 2, 10, 30, true)]), true);
    let list = store.list(&Filter::default(), 10);
    assert_eq!(list.len(), 1);
    let summary = &list[0];
    assert_eq!(summary.span_count, 3);
    assert_eq!(summary.root_name, "span-1");
    assert_eq!(summary.root_service, "web");
    assert_eq!(summary.root_workload.as_deref(), Some("emojivoto/web"));
    assert_eq!(summary.duration_micros, 50_000);
    assert_eq!(summary.status, "error");
    assert_eq!(summary.error_count, 1);
    assert_eq!(summary.workloads, ["emojivoto/voting", "emojivoto/web"]);

    let trace = store
        .get(&parse_trace_id(&summary.trace_id).unwrap())
        .unwrap();
    let shape: Vec<(&str, usize, u64, &str)> = trace
        .spans
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.depth,
                s.offset_micros,
                s.service.as_str(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            ("span-1", 0, 0, "web"),
            ("span-2", 1, 5_000, "web"),
            ("span-3", 2, 10_000, "voting"),
        ]
    );
    assert_eq!(trace.spans[2].status_message.as_deref(), Some("boom"));
    assert_eq!(
        trace.spans[2].parent_span_id.as_deref(),
        Some("0000000000000102")
    );
    assert_eq!(trace.spans[0].attributes["http.request.method"], "GET");
}

#[tokio::test]
async fn a_span_whose_parent_never_arrived_is_a_root() {
    let store = TraceStore::default();
    store.receive(&export("emoji", vec![span(2, 5, 9, 3, 1, false)]), true);
    let trace = store.get(&parse_trace_id(&hex(&tid(2))).unwrap()).unwrap();
    assert_eq!(trace.summary.root_name, "span-5");
    assert_eq!(trace.spans[0].depth, 0);
}

#[tokio::test]
async fn the_oldest_trace_is_evicted_past_the_count() {
    let store = TraceStore::new(limits(3, usize::MAX));
    for t in 1..=3 {
        store.receive(
            &export("web", vec![span(t, 1, 0, u64::from(t), 1, false)]),
            true,
        );
    }
    // More spans of the oldest trace do not make it newer: eviction is by first arrival.
    store.receive(&export("web", vec![span(1, 2, 1, 1, 1, false)]), true);
    store.receive(&export("web", vec![span(4, 1, 0, 4, 1, false)]), true);
    assert_eq!(ids(&store.list(&Filter::default(), 10)), [4, 3, 2]);
    assert_eq!(store.counters().snapshot().traces_evicted, 1);
    assert!(store.get(&parse_trace_id(&hex(&tid(1))).unwrap()).is_none());
}

#[tokio::test]
async fn the_oldest_traces_are_evicted_past_the_bytes() {
    let one = {
        let store = TraceStore::default();
        store.receive(&export("web", vec![span(1, 1, 0, 0, 1, false)]), true);
        store.bytes()
    };
    // Room for two spans' bytes, not three.
    let store = TraceStore::new(limits(100, 2 * one + one / 2));
    for t in 1..=3 {
        store.receive(
            &export("web", vec![span(t, 1, 0, u64::from(t), 1, false)]),
            true,
        );
        assert!(store.bytes() <= 2 * one + one / 2);
    }
    assert_eq!(ids(&store.list(&Filter::default(), 10)), [3, 2]);
    // A span bigger than the whole store is not kept, and evicts nothing.
    let mut big = span(9, 1, 0, 9, 1, false);
    big.attributes = (0..60)
        .map(|i| kv(&format!("k{i}"), &"x".repeat(500)))
        .collect();
    store.receive(&export("web", vec![big]), true);
    assert_eq!(ids(&store.list(&Filter::default(), 10)), [3, 2]);
    let stats = store.counters().snapshot();
    assert_eq!((stats.spans_not_kept, stats.traces_evicted), (1, 1));
}

#[tokio::test]
async fn spans_past_the_per_trace_limit_are_counted_not_kept() {
    let store = TraceStore::new(StoreLimits {
        max_spans_per_trace: 2,
        ..StoreLimits::default()
    });
    let spans = (1..=5).map(|s| span(1, s, 0, 0, 1, false)).collect();
    store.receive(&export("web", spans), true);
    assert_eq!(store.list(&Filter::default(), 10)[0].span_count, 2);
    assert_eq!(store.counters().snapshot().spans_not_kept, 3);
}

#[tokio::test(start_paused = true)]
async fn traces_expire_after_their_last_span_ages_out() {
    let store = TraceStore::new(StoreLimits {
        max_age: Duration::from_secs(60),
        ..StoreLimits::default()
    });
    store.receive(&export("web", vec![span(1, 1, 0, 0, 1, false)]), true);
    tokio::time::advance(Duration::from_secs(40)).await;
    store.receive(&export("web", vec![span(2, 1, 0, 0, 1, false)]), true);
    // A late span keeps trace 1 for another minute from now.
    tokio::time::advance(Duration::from_secs(10)).await;
    store.receive(&export("web", vec![span(1, 2, 1, 0, 1, false)]), true);
    tokio::time::advance(Duration::from_secs(55)).await;
    assert_eq!(ids(&store.list(&Filter::default(), 10)), [1]);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(store.is_empty());
    assert!(store.get(&parse_trace_id(&hex(&tid(1))).unwrap()).is_none());
    assert_eq!(store.counters().snapshot().traces_evicted, 2);
}

#[tokio::test]
async fn filters_by_workload_status_and_duration_newest_first() {
    let store = TraceStore::default();
    store.receive(&export("web", vec![span(1, 1, 0, 0, 10, false)]), true);
    store.receive(&export("web", vec![span(2, 1, 0, 100, 300, false)]), true);
    store.receive(&export("emoji", vec![span(3, 1, 0, 200, 500, true)]), true);
    let all = Filter::default();
    assert_eq!(ids(&store.list(&all, 10)), [3, 2, 1]);
    assert_eq!(ids(&store.list(&all, 2)), [3, 2]);
    let web = Filter {
        workload: Some("web".to_string()),
        ..all.clone()
    };
    assert_eq!(ids(&store.list(&web, 10)), [2, 1]);
    let qualified = Filter {
        workload: Some("emojivoto/emoji".to_string()),
        ..all.clone()
    };
    assert_eq!(ids(&store.list(&qualified, 10)), [3]);
    let other_ns = Filter {
        workload: Some("default/emoji".to_string()),
        ..all.clone()
    };
    assert!(store.list(&other_ns, 10).is_empty());
    let errors = Filter {
        error: Some(true),
        ..all.clone()
    };
    assert_eq!(ids(&store.list(&errors, 10)), [3]);
    let ok = Filter {
        error: Some(false),
        ..all.clone()
    };
    assert_eq!(ids(&store.list(&ok, 10)), [2, 1]);
    let slow = Filter {
        min_duration: Some(Duration::from_millis(300)),
        ..all.clone()
    };
    assert_eq!(ids(&store.list(&slow, 10)), [3, 2]);
}

#[tokio::test]
async fn malformed_ids_are_refused_and_the_rest_kept() {
    let store = TraceStore::default();
    let mut short = span(1, 1, 0, 0, 1, false);
    short.trace_id.truncate(3);
    let mut zero = span(1, 2, 0, 0, 1, false);
    zero.span_id = vec![0; 8];
    let mut parent = span(1, 3, 0, 0, 1, false);
    parent.parent_span_id = vec![1, 2];
    let good = span(2, 1, 0, 0, 1, false);
    let accepted = store.receive(&export("web", vec![short, zero, parent, good]), true);
    assert_eq!(accepted.rejected, 3);
    assert!(accepted
        .error
        .unwrap()
        .contains("trace_id must be 16 bytes"));
    assert_eq!(ids(&store.list(&Filter::default(), 10)), [2]);
    let stats = store.counters().snapshot();
    assert_eq!((stats.spans_received, stats.spans_rejected), (4, 3));
}

#[tokio::test]
async fn without_keeping_spans_are_only_counted() {
    let store = TraceStore::default();
    store.receive(&export("web", vec![span(1, 1, 0, 0, 1, false)]), false);
    assert!(store.is_empty());
    assert_eq!(store.counters().snapshot().spans_received, 1);
}

#[test]
fn trace_ids_parse_from_32_hex_digits_only() {
    assert_eq!(parse_trace_id(&hex(&tid(7))).unwrap()[15], 7);
    assert!(parse_trace_id("abc").is_none());
    assert!(parse_trace_id(&"g".repeat(32)).is_none());
    assert!(parse_trace_id(&"é".repeat(16)).is_none());
}

#[test]
fn long_values_are_cut() {
    assert_eq!(
        cut(&"x".repeat(MAX_VALUE_CHARS + 10)).chars().count(),
        MAX_VALUE_CHARS + 1
    );
    assert_eq!(cut("short"), "short");
}
