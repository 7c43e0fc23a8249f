//! A proxy's `TapEvent` as the public API's JSON [`TapEvent`], with the tapped instance's
//! resource labels added on its own side of the request.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use ferry_api::tap::{TapDirection, TapEvent, TapEventKind, TapPeer};
use linkerd2_proxy_api::http_types::{self, http_method, scheme};
use linkerd2_proxy_api::tap::{self as pb, eos, tap_event};

use super::select::{labels_of, Target};
use crate::model::ClusterState;

/// Converts `event` from the proxy of `target`; `None` for an event without HTTP. A
/// destination the proxy gave no labels for is looked up by address in `state`.
pub fn convert(state: &ClusterState, target: &Target, event: pb::TapEvent) -> Option<TapEvent> {
    let Some(tap_event::Event::Http(http)) = event.event else {
        return None;
    };
    let inbound = event.proxy_direction == tap_event::ProxyDirection::Inbound as i32;
    let mut source = peer(event.source, event.source_meta);
    let mut destination = peer(event.destination, event.destination_meta);
    // The tapped instance is the server of inbound requests and the client of outbound ones.
    let own = if inbound {
        &mut destination
    } else {
        &mut source
    };
    for (k, v) in &target.labels {
        own.labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    if !inbound && !destination.labels.contains_key("pod") {
        let known = destination
            .addr
            .parse()
            .ok()
            .and_then(|addr| state.instance_at(addr));
        if let Some((key, instance)) = known {
            destination.labels.extend(labels_of(key, instance));
        }
    }
    // Linkerd reports TLS on the remote side: the client for inbound, the server for outbound.
    let remote = if inbound {
        &mut source
    } else {
        &mut destination
    };
    let tls = remote
        .labels
        .remove("tls")
        .unwrap_or_else(|| "no_identity".to_string());
    let client_id = source.labels.remove("client_id");
    let server_id = destination.labels.remove("server_id");
    let mut out = TapEvent {
        kind: TapEventKind::Req,
        id: String::new(),
        tapped_pod: target.instance.name.clone(),
        tapped_namespace: target.instance.namespace.clone(),
        proxy_direction: if inbound {
            TapDirection::Inbound
        } else {
            TapDirection::Outbound
        },
        source,
        destination,
        tls,
        client_id,
        server_id,
        method: None,
        scheme: None,
        authority: None,
        path: None,
        status: None,
        latency_micros: None,
        duration_micros: None,
        response_bytes: None,
        grpc_status: None,
        reset_error: None,
        headers: Vec::new(),
    };
    let id = |id: Option<tap_event::http::StreamId>| {
        let id = id.unwrap_or_default();
        format!("{}:{}", id.base, id.stream)
    };
    match http.event? {
        tap_event::http::Event::RequestInit(r) => {
            out.id = id(r.id);
            out.method = r.method.map(method);
            out.scheme = r.scheme.map(scheme_name);
            out.authority = Some(r.authority);
            out.path = Some(r.path);
            out.headers = headers(r.headers);
        }
        tap_event::http::Event::ResponseInit(r) => {
            out.kind = TapEventKind::Rsp;
            out.id = id(r.id);
            out.status = u16::try_from(r.http_status).ok();
            out.latency_micros = r.since_request_init.map(|d| micros(d.seconds, d.nanos));
            out.headers = headers(r.headers);
        }
        tap_event::http::Event::ResponseEnd(r) => {
            out.kind = TapEventKind::End;
            out.id = id(r.id);
            out.latency_micros = r.since_request_init.map(|d| micros(d.seconds, d.nanos));
            out.duration_micros = r.since_response_init.map(|d| micros(d.seconds, d.nanos));
            out.response_bytes = Some(r.response_bytes);
            match r.eos.and_then(|e| e.end) {
                Some(eos::End::GrpcStatusCode(c)) => out.grpc_status = Some(c),
                Some(eos::End::ResetErrorCode(c)) => out.reset_error = Some(c),
                None => {}
            }
            out.headers = headers(r.trailers);
        }
    }
    Some(out)
}

fn peer(
    addr: Option<linkerd2_proxy_api::net::TcpAddress>,
    meta: Option<tap_event::EndpointMeta>,
) -> TapPeer {
    let addr = addr
        .and_then(|a| SocketAddr::try_from(a).ok())
        .map_or_else(|| "0.0.0.0:0".to_string(), |a| a.to_string());
    let labels: HashMap<String, String> = meta.map(|m| m.labels).unwrap_or_default();
    TapPeer {
        addr,
        labels: labels.into_iter().collect::<BTreeMap<_, _>>(),
    }
}

fn micros(seconds: i64, nanos: i32) -> u64 {
    let micros = i128::from(seconds) * 1_000_000 + i128::from(nanos) / 1_000;
    u64::try_from(micros).unwrap_or(0)
}

fn method(m: http_types::HttpMethod) -> String {
    match m.r#type {
        Some(http_method::Type::Registered(r)) => http_method::Registered::try_from(r)
            .map_or_else(|_| format!("method {r}"), |r| r.as_str_name().to_string()),
        Some(http_method::Type::Unregistered(s)) => s,
        None => String::new(),
    }
}

fn scheme_name(s: http_types::Scheme) -> String {
    match s.r#type {
        Some(scheme::Type::Registered(r)) => scheme::Registered::try_from(r)
            .map_or_else(|_| String::new(), |r| r.as_str_name().to_ascii_lowercase()),
        Some(scheme::Type::Unregistered(s)) => s,
        None => String::new(),
    }
}

fn headers(h: Option<http_types::Headers>) -> Vec<(String, String)> {
    h.map(|h| {
        h.headers
            .into_iter()
            .map(|h| (h.name, String::from_utf8_lossy(&h.value).into_owned()))
            .collect()
    })
    .unwrap_or_default()
}
