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
/// destination the proxy gave no labels for is looked up by address in `state`. A response
/// a proxy made gets `proxy_error` from its `l5d-proxy-error` header; headers are kept only
/// when `wants_headers` (the relay asked the proxies for them).
pub fn convert(
    state: &ClusterState,
    target: &Target,
    event: pb::TapEvent,
    wants_headers: bool,
) -> Option<TapEvent> {
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
    if inbound {
        if let Some(id) = &client_id {
            source.labels.extend(client_labels(state, id));
        }
    }
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
        proxy_error: None,
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
            out.proxy_error = proxy_error(&out.headers);
            if !wants_headers {
                // The proxy sends the proxy-error header even to a tap that did not ask.
                out.headers.clear();
            }
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

/// What an inbound client's mTLS identity says about it: its service account and
/// namespace, and its workload when only one workload runs as that account.
fn client_labels(state: &ClusterState, id: &str) -> Vec<(String, String)> {
    let suffix = format!(".serviceaccount.identity.ferry.{}", state.trust_domain);
    let Some((sa, ns)) = id.strip_suffix(&suffix).and_then(|s| s.split_once('.')) else {
        return Vec::new();
    };
    let mut labels = vec![
        ("serviceaccount".to_string(), sa.to_string()),
        ("namespace".to_string(), ns.to_string()),
    ];
    let owners: std::collections::BTreeSet<_> = state
        .instances
        .iter()
        .filter(|(key, i)| key.namespace == ns && i.service_account == sa)
        .filter_map(|(_, i)| i.owner.as_ref())
        .map(|o| (o.kind.as_str(), o.name.as_str()))
        .collect();
    if let [(kind, name)] = owners.into_iter().collect::<Vec<_>>()[..] {
        labels.push((
            ferry_api::destination::workload_label(kind).to_string(),
            name.to_string(),
        ));
    }
    labels
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

/// The reason in a response's `l5d-proxy-error` header, when it is a well-formed token.
fn proxy_error(headers: &[(String, String)]) -> Option<String> {
    let (_, value) = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(ferry_api::headers::L5D_PROXY_ERROR))?;
    ferry_api::tap::proxy_error_token(value).map(str::to_string)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ObjectRef;

    fn target() -> Target {
        Target {
            instance: ObjectRef::new("shop", "voting-0"),
            tap_addr: "127.0.0.1:4190".parse().unwrap(),
            labels: vec![("pod".into(), "voting-0".into())],
            identity: String::new(),
        }
    }

    /// A `ResponseInit` of status 403 with these response headers.
    fn response(headers: &[(&str, &str)]) -> pb::TapEvent {
        let headers = http_types::Headers {
            headers: headers
                .iter()
                .map(|(k, v)| http_types::headers::Header {
                    name: k.to_string(),
                    value: v.as_bytes().to_vec(),
                })
                .collect(),
        };
        pb::TapEvent {
            proxy_direction: tap_event::ProxyDirection::Inbound as i32,
            event: Some(tap_event::Event::Http(tap_event::Http {
                event: Some(tap_event::http::Event::ResponseInit(
                    tap_event::http::ResponseInit {
                        http_status: 403,
                        headers: Some(headers),
                        ..Default::default()
                    },
                )),
            })),
            ..Default::default()
        }
    }

    #[test]
    fn a_proxy_made_response_names_its_reason_and_an_apps_does_not() {
        let state = ClusterState::default();
        let denied = response(&[
            ("content-type", "text/plain"),
            ("l5d-proxy-error", "unauthorized"),
        ]);
        let e = convert(&state, &target(), denied.clone(), true).unwrap();
        assert_eq!(e.kind, TapEventKind::Rsp);
        assert_eq!(e.status, Some(403));
        assert_eq!(e.proxy_error.as_deref(), Some("unauthorized"));
        assert_eq!(e.headers.len(), 2);
        // A tap that did not ask for headers keeps the reason, not the header.
        let e = convert(&state, &target(), denied, false).unwrap();
        assert_eq!(e.proxy_error.as_deref(), Some("unauthorized"));
        assert!(e.headers.is_empty());

        let app = response(&[("content-type", "text/plain"), ("set-cookie", "[redacted]")]);
        let e = convert(&state, &target(), app, true).unwrap();
        assert_eq!((e.status, e.proxy_error), (Some(403), None));
        // A value that is not one token (it would not print as one word) is not a reason.
        let odd = response(&[("l5d-proxy-error", "denied by policy")]);
        let e = convert(&state, &target(), odd, true).unwrap();
        assert_eq!(e.proxy_error, None);
    }
}
