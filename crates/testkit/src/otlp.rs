//! An OTLP/gRPC trace collector for tests, built on the published OpenTelemetry protobufs:
//! it records every export it is sent (after an optional delay) and serves on an
//! ephemeral loopback port until dropped. Plus small builders and readers of spans.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        trace_service_server::{TraceService, TraceServiceServer},
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    },
    common::v1::{any_value::Value, AnyValue, KeyValue},
    trace::v1::Span,
};
use tokio::sync::oneshot;

/// A string attribute.
pub fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// The value of attribute `key` as text (strings as they are, numbers in decimal).
pub fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    let v = attrs.iter().rev().find(|a| a.key == key)?.value.as_ref()?;
    match v.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(n) => Some(n.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        Value::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

/// Lower-case hex of an id.
pub fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// A span as received, with its resource's attributes.
#[derive(Clone, Debug)]
pub struct Received {
    /// The span.
    pub span: Span,
    /// Its resource's attributes.
    pub resource: Vec<KeyValue>,
}

impl Received {
    /// A span attribute as text.
    pub fn attr(&self, key: &str) -> Option<String> {
        attr(&self.span.attributes, key)
    }
    /// A resource attribute as text.
    pub fn resource_attr(&self, key: &str) -> Option<String> {
        attr(&self.resource, key)
    }
}

/// A collector that records what it is sent, after `delay`.
#[derive(Clone, Default)]
pub struct Collector {
    got: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    /// How long each export waits before it is answered.
    pub delay: Duration,
}

impl Collector {
    /// One that answers each export after `delay`.
    pub fn slow(delay: Duration) -> Self {
        Self {
            delay,
            ..Self::default()
        }
    }

    /// The export requests so far.
    pub fn requests(&self) -> Vec<ExportTraceServiceRequest> {
        self.got.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Every span so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        let got = self.got.lock().unwrap_or_else(|e| e.into_inner());
        got.iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|rs| {
                let resource = rs
                    .resource
                    .as_ref()
                    .map(|r| r.attributes.clone())
                    .unwrap_or_default();
                rs.scope_spans
                    .iter()
                    .flat_map(|s| &s.spans)
                    .map(move |span| Received {
                        span: span.clone(),
                        resource: resource.clone(),
                    })
            })
            .collect()
    }

    /// How many spans so far.
    pub fn spans(&self) -> usize {
        self.received().len()
    }

    /// Serves on an ephemeral loopback port until the returned guard is dropped.
    pub async fn serve(&self) -> (SocketAddr, Serving) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("a bound address");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(self.clone()))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                ),
        );
        (addr, Serving { _stop: stop })
    }
}

/// A serving collector; dropping it stops the server.
pub struct Serving {
    _stop: oneshot::Sender<()>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        tokio::time::sleep(self.delay).await;
        self.got
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}
