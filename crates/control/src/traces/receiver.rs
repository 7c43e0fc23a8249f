//! The OTLP/gRPC receiver: `opentelemetry.proto.collector.trace.v1.TraceService/Export`
//! on its own listener, bounded in message size, connections, streams per connection and
//! exports decoded at once, so that what it holds in flight is at most
//! `max_concurrent_exports × max_message_bytes`.

use std::future::Future;
use std::sync::atomic::Ordering;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use super::forward::Forwarder;
use super::store::TraceStore;
use super::ReceiverLimits;
use crate::limits::LimitedListener;

/// The `TraceService` the receiver serves: keeps spans in the store (unless told not to)
/// and hands them to the forwarder when one runs.
#[derive(Clone, Debug)]
pub struct Receiver {
    store: TraceStore,
    keep: bool,
    forwarder: Option<Forwarder>,
}

impl Receiver {
    /// Keeps spans in `store` when `keep`; offers them to `forwarder` when given.
    pub fn new(store: TraceStore, keep: bool, forwarder: Option<Forwarder>) -> Self {
        Self {
            store,
            keep,
            forwarder,
        }
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let request = request.into_inner();
        let accepted = self.store.receive(&request, self.keep);
        if let Some(forwarder) = &self.forwarder {
            // Never waits: a full queue drops (and counts) instead.
            forwarder.offer(request);
        }
        let partial_success = (accepted.rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: i64::try_from(accepted.rejected).unwrap_or(i64::MAX),
            error_message: accepted.error.unwrap_or_default(),
        });
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success,
        }))
    }
}

/// Serves `receiver` on `listener` within `limits` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    receiver: Receiver,
    limits: &ReceiverLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    receiver
        .store
        .counters()
        .receiving
        .store(true, Ordering::Relaxed);
    let listener = LimitedListener::new(listener, limits.max_connections);
    let service =
        TraceServiceServer::new(receiver).max_decoding_message_size(limits.max_message_bytes);
    tonic::transport::Server::builder()
        // Requests wait here, before their bodies are read, for one of the permits.
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            limits.max_concurrent_exports,
        ))
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_max_pending_accept_reset_streams(Some(20))
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
        .add_service(service)
        .serve_with_incoming_shutdown(listener.into_stream(), shutdown)
        .await
}
