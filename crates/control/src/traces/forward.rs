//! Forwarding to a real collector (`--trace-collector`): received spans are queued, then
//! re-exported over OTLP/gRPC in batches by one task. The queue is bounded in spans; when it
//! is full, or the collector fails or does not answer in time, spans are dropped and
//! counted (`spansForwardDropped`). Offering never waits, so a slow or dead collector costs
//! the receiver nothing.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use tokio::sync::Notify;
use tonic::transport::{Channel, Endpoint};

use super::store::Counters;

/// Where and how spans are forwarded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardConfig {
    /// The collector, `http://host:port` (plaintext OTLP/gRPC).
    pub collector: String,
    /// Spans queued at most; more are dropped.
    pub max_queue_spans: usize,
    /// Spans sent in one export at most (whole resources: one larger resource goes alone).
    pub max_batch_spans: usize,
    /// How long a batch waits to fill before it is sent anyway.
    pub batch_delay: Duration,
    /// How long the collector has to accept an export (and a connection).
    pub timeout: Duration,
}

impl ForwardConfig {
    /// Forwarding to `collector` with the default queue, batch and timeout.
    pub fn new(collector: impl Into<String>) -> Self {
        Self {
            collector: collector.into(),
            max_queue_spans: 8192,
            max_batch_spans: 512,
            batch_delay: Duration::from_millis(500),
            timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<(ResourceSpans, usize)>,
    spans: usize,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    ready: Notify,
    counters: Arc<Counters>,
    max_queue_spans: usize,
}

/// The receiving end's handle: offers spans to the forwarding task.
#[derive(Clone, Debug)]
pub struct Forwarder {
    shared: Arc<Shared>,
}

fn span_count(resource: &ResourceSpans) -> usize {
    resource.scope_spans.iter().map(|s| s.spans.len()).sum()
}

impl Forwarder {
    /// Starts the forwarding task (it runs until the returned handle is aborted); counts
    /// into `counters`. Fails only for an address that is not a URI.
    pub fn spawn(
        config: &ForwardConfig,
        counters: Arc<Counters>,
    ) -> Result<(Self, tokio::task::JoinHandle<()>), tonic::transport::Error> {
        let channel = Endpoint::from_shared(config.collector.clone())?
            .connect_timeout(config.timeout)
            .timeout(config.timeout)
            .connect_lazy();
        let shared = Arc::new(Shared {
            queue: Mutex::default(),
            ready: Notify::new(),
            counters,
            max_queue_spans: config.max_queue_spans,
        });
        let task = tokio::spawn(run(shared.clone(), channel, config.clone()));
        Ok((Self { shared }, task))
    }

    /// Queues the spans of `request`, or drops (and counts) each resource that does not fit.
    pub fn offer(&self, request: ExportTraceServiceRequest) {
        let mut dropped = 0;
        {
            let mut queue = self.shared.queue.lock().expect("forward queue lock");
            for resource in request.resource_spans {
                let n = span_count(&resource);
                if n == 0 {
                    continue;
                }
                if queue.spans + n > self.shared.max_queue_spans {
                    dropped += n;
                    continue;
                }
                queue.spans += n;
                queue.items.push_back((resource, n));
            }
        }
        if dropped > 0 {
            self.shared
                .counters
                .spans_forward_dropped
                .fetch_add(dropped as u64, Ordering::Relaxed);
        }
        self.shared.ready.notify_one();
    }
}

/// Waits for spans, lets a batch fill for `batch_delay` (or until it is full), sends it,
/// and again.
async fn run(shared: Arc<Shared>, channel: Channel, config: ForwardConfig) {
    let mut client = TraceServiceClient::new(channel);
    let mut failing = false;
    loop {
        // Wait for a first span.
        loop {
            if shared.queue.lock().expect("forward queue lock").spans > 0 {
                break;
            }
            shared.ready.notified().await;
        }
        let deadline = tokio::time::Instant::now() + config.batch_delay;
        loop {
            if shared.queue.lock().expect("forward queue lock").spans >= config.max_batch_spans {
                break;
            }
            tokio::select! {
                () = shared.ready.notified() => {}
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        let (batch, spans) = {
            let mut queue = shared.queue.lock().expect("forward queue lock");
            let mut batch = Vec::new();
            let mut spans = 0;
            while let Some((_, n)) = queue.items.front() {
                if spans > 0 && spans + n > config.max_batch_spans {
                    break;
                }
                let (resource, n) = queue.items.pop_front().expect("a front item");
                spans += n;
                batch.push(resource);
            }
            queue.spans -= spans;
            (batch, spans)
        };
        let request = ExportTraceServiceRequest {
            resource_spans: batch,
        };
        let sent = tokio::time::timeout(config.timeout, client.export(request)).await;
        let counters = &shared.counters;
        match sent {
            Ok(Ok(_)) => {
                counters
                    .spans_forwarded
                    .fetch_add(spans as u64, Ordering::Relaxed);
                if std::mem::replace(&mut failing, false) {
                    tracing::info!(collector = %config.collector, "the trace collector accepts spans again");
                }
            }
            Ok(Err(status)) => {
                counters
                    .spans_forward_dropped
                    .fetch_add(spans as u64, Ordering::Relaxed);
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(collector = %config.collector, error = %status.message(), "the trace collector refused spans; dropping until it accepts them");
                }
            }
            Err(_) => {
                counters
                    .spans_forward_dropped
                    .fetch_add(spans as u64, Ordering::Relaxed);
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(collector = %config.collector, timeout = ?config.timeout, "the trace collector did not answer in time; dropping spans until it does");
                }
            }
        }
    }
}
