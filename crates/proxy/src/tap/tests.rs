//! The tap registry without sockets: a slow tapper loses events instead of slowing
//! requests, and a tap's end puts requests back on the idle path.

use std::sync::Arc;

use linkerd2_proxy_api::tap::ObserveRequest;

use super::*;

fn conn() -> ConnTap {
    ConnTap::new(ConnMeta::new(
        "127.0.0.1:40000".parse().unwrap(),
        "127.0.0.1:4143".parse().unwrap(),
    ))
}

/// One request through the hooks the forward path calls: capture, dispatch, respond, end.
fn request(taps: &Arc<Taps>, conn: &ConnTap) {
    let req = Request::get("/x").body(()).unwrap();
    let mut tapped = taps.capture(conn, Direction::Inbound, &req, Some("app:80"));
    dispatch(&mut tapped, || Destination {
        addr: "127.0.0.1:8080".parse().unwrap(),
        labels: None,
        server_id: None,
    });
    let rsp = Response::new(());
    if let Some(mut end) = tapped.and_then(|t| t.respond(&rsp)) {
        end.end();
    }
}

#[test]
fn a_tapper_that_does_not_read_loses_events_and_traffic_goes_on() {
    let taps = Arc::new(Taps::new("ns", "pod"));
    let (sub, mut rx) = taps
        .subscribe(&ObserveRequest::default(), HeaderValues::Redacted)
        .unwrap();
    let conn = conn();
    // 3 events a request: 400 requests are 1200 events for a 1024-event buffer.
    for _ in 0..400 {
        request(&taps, &conn);
    }
    let state = taps.state();
    assert_eq!(state.active, 1);
    assert_eq!(state.tapped_requests, 400);
    assert_eq!(state.dropped_events, 1200 - EVENT_BUFFER as u64);
    let mut received = 0;
    while rx.try_recv().is_ok() {
        received += 1;
    }
    assert_eq!(received, EVENT_BUFFER);

    drop(sub);
    assert!(!taps.is_active());
    request(&taps, &conn);
    assert_eq!(
        taps.state().tapped_requests,
        400,
        "no work once the tap is gone"
    );
}

#[test]
fn a_limited_tap_ends_itself() {
    let taps = Arc::new(Taps::new("ns", "pod"));
    let req = ObserveRequest {
        limit: 2,
        ..ObserveRequest::default()
    };
    let (_sub, mut rx) = taps.subscribe(&req, HeaderValues::Redacted).unwrap();
    let conn = conn();
    for _ in 0..3 {
        request(&taps, &conn);
    }
    assert!(!taps.is_active(), "the limit removed the tap");
    let mut ids = Vec::new();
    while let Ok(Ok(e)) = rx.try_recv() {
        if let Some(tap_event::Event::Http(h)) = e.event {
            if let Some(tap_event::http::Event::RequestInit(r)) = h.event {
                ids.push(r.id.unwrap().stream);
            }
        }
    }
    assert_eq!(ids, [0, 1]);
    // Every sender is gone: the stream ends.
    assert!(matches!(
        rx.try_recv(),
        Err(mpsc::error::TryRecvError::Disconnected)
    ));
}

fn with_headers() -> ObserveRequest {
    use linkerd2_proxy_api::tap::observe_request::{extract, Extract};
    ObserveRequest {
        extract: Some(Extract {
            extract: Some(extract::Extract::Http(extract::Http {
                extract: Some(extract::http::Extract::Headers(
                    extract::http::Headers::default(),
                )),
            })),
        }),
        ..ObserveRequest::default()
    }
}

/// The request-init headers of the first event on `rx`.
fn first_headers(rx: &mut EventRx) -> Vec<(String, String)> {
    while let Ok(Ok(e)) = rx.try_recv() {
        if let Some(tap_event::Event::Http(h)) = e.event {
            if let Some(tap_event::http::Event::RequestInit(r)) = h.event {
                return r
                    .headers
                    .unwrap_or_default()
                    .headers
                    .into_iter()
                    .map(|h| (h.name, String::from_utf8(h.value).unwrap()))
                    .collect();
            }
        }
    }
    panic!("no request event")
}

#[test]
fn header_values_are_redacted_unless_allow_listed_or_asked_for_unredacted() {
    let taps = Arc::new(Taps::new("ns", "pod"));
    let (_a, mut redacted) = taps
        .subscribe(&with_headers(), HeaderValues::Redacted)
        .unwrap();
    let (_b, mut full) = taps
        .subscribe(&with_headers(), HeaderValues::Unredacted)
        .unwrap();
    let (_c, mut none) = taps
        .subscribe(&ObserveRequest::default(), HeaderValues::Unredacted)
        .unwrap();
    let conn = conn();
    let req = Request::get("/x")
        .header("authorization", "Bearer s3cret")
        .header("cookie", "session=s3cret")
        .header("x-custom", "s3cret")
        .header("user-agent", "curl/8")
        .header("content-type", "text/plain")
        .body(())
        .unwrap();
    let mut tapped = taps.capture(&conn, Direction::Inbound, &req, Some("app:80"));
    dispatch(&mut tapped, || Destination {
        addr: "127.0.0.1:8080".parse().unwrap(),
        labels: None,
        server_id: None,
    });
    let h = first_headers(&mut redacted);
    let get = |h: &[(String, String)], n: &str| {
        h.iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    for name in ["authorization", "cookie", "x-custom"] {
        assert_eq!(get(&h, name), REDACTED, "{name}");
    }
    assert_eq!(get(&h, "user-agent"), "curl/8");
    assert_eq!(get(&h, "content-type"), "text/plain");
    let h = first_headers(&mut full);
    assert_eq!(get(&h, "authorization"), "Bearer s3cret");
    assert!(
        first_headers(&mut none).is_empty(),
        "no headers unless asked"
    );
}

#[test]
fn taps_past_the_cap_are_refused_and_counted() {
    let taps = Arc::new(Taps::new("ns", "pod").with_max(2));
    let a = taps
        .subscribe(&ObserveRequest::default(), HeaderValues::Redacted)
        .unwrap();
    let _b = taps
        .subscribe(&ObserveRequest::default(), HeaderValues::Redacted)
        .unwrap();
    let err = taps
        .subscribe(&ObserveRequest::default(), HeaderValues::Redacted)
        .err()
        .unwrap();
    assert!(matches!(err, SubscribeError::TooMany { max: 2 }), "{err}");
    assert!(err.to_string().contains("--tap-max-concurrent"), "{err}");
    let mut metrics = String::new();
    taps.encode_metrics(&mut metrics);
    assert!(
        metrics.contains("proxy_tap_refused_total{reason=\"too_many_taps\"} 1"),
        "{metrics}"
    );
    drop(a);
    assert!(taps
        .subscribe(&ObserveRequest::default(), HeaderValues::Redacted)
        .is_ok());
}

/// The response-init headers of every `ResponseInit` on `rx`, in order.
fn response_headers(rx: &mut EventRx) -> Vec<Option<Vec<(String, String)>>> {
    let mut out = Vec::new();
    while let Ok(Ok(e)) = rx.try_recv() {
        if let Some(tap_event::Event::Http(h)) = e.event {
            if let Some(tap_event::http::Event::ResponseInit(r)) = h.event {
                out.push(r.headers.map(|h| {
                    h.headers
                        .into_iter()
                        .map(|h| (h.name, String::from_utf8(h.value).unwrap()))
                        .collect()
                }));
            }
        }
    }
    out
}

#[test]
fn a_proxy_made_response_names_its_reason_to_every_tap_and_nothing_else() {
    use crate::errors::ProxyError;
    use ferry_api::{AuthzFailure, ProxyErrorReason};

    assert!(is_allowed(ferry_api::headers::L5D_PROXY_ERROR));
    let taps = Arc::new(Taps::new("ns", "pod"));
    let (_a, mut bare) = taps
        .subscribe(&ObserveRequest::default(), HeaderValues::Redacted)
        .unwrap();
    let (_b, mut redacted) = taps
        .subscribe(&with_headers(), HeaderValues::Redacted)
        .unwrap();
    let conn = conn();
    let respond = |rsp: &Response<bytes::Bytes>| {
        let req = Request::get("/x").body(()).unwrap();
        let tapped = taps.capture(&conn, Direction::Inbound, &req, Some("app:80"));
        if let Some(mut end) = tapped.and_then(|t| t.respond(rsp)) {
            end.end();
        }
    };
    // The application's own 403, with a credential: no mark, and no headers unless asked.
    let app = Response::builder()
        .status(403)
        .header("set-cookie", "session=s3cret")
        .body(bytes::Bytes::new())
        .unwrap();
    respond(&app);
    // A policy denial and a gateway timeout, as the proxy answers them (HTTP and gRPC).
    let denied = ProxyError::new(
        ProxyErrorReason::Unauthorized(AuthzFailure::NoAuthorization),
        "server web-http",
    );
    respond(&denied.to_response(false).0);
    respond(&denied.to_response(true).0);
    let timeout = ProxyError::new(ProxyErrorReason::ConnectTimeout, "to 127.0.0.1:1");
    respond(&timeout.to_response(false).0);

    let mark = |reason: &str| Some(vec![("l5d-proxy-error".to_string(), reason.to_string())]);
    assert_eq!(
        response_headers(&mut bare),
        [
            None,
            mark("unauthorized"),
            mark("unauthorized"),
            mark("connect-timeout")
        ]
    );
    let asked = response_headers(&mut redacted);
    assert_eq!(asked.len(), 4);
    let app_headers = asked[0].as_ref().unwrap();
    assert!(app_headers.contains(&("set-cookie".into(), REDACTED.into())));
    assert!(!app_headers.iter().any(|(k, _)| k == "l5d-proxy-error"));
    for (i, reason) in [(1, "unauthorized"), (3, "connect-timeout")] {
        let h = asked[i].as_ref().unwrap();
        assert!(
            h.contains(&("l5d-proxy-error".into(), reason.into())),
            "{h:?}"
        );
        assert!(h.contains(&("content-type".into(), "text/plain; charset=utf-8".into())));
    }
}
