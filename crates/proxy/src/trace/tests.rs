use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

const TID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SID: &str = "00f067aa0ba902b7";

#[test]
fn reads_w3c_then_b3_single_then_b3_multi() {
    let Found::Parent(p) = extract(&headers(&[("traceparent", &format!("00-{TID}-{SID}-01"))]))
    else {
        panic!("w3c")
    };
    assert_eq!(
        (hex(&p.trace_id), hex(&p.span_id)),
        (TID.into(), SID.into())
    );
    assert!(p.sampled);
    assert_eq!(p.format, Format::W3c);
    let Found::Parent(p) = extract(&headers(&[("traceparent", &format!("00-{TID}-{SID}-00"))]))
    else {
        panic!("w3c unsampled")
    };
    assert!(!p.sampled);
    // Invalid: all-zero ids, version ff, bad lengths, bad hex.
    for bad in [
        format!("00-{}-{SID}-01", "0".repeat(32)),
        format!("00-{TID}-{}-01", "0".repeat(16)),
        format!("ff-{TID}-{SID}-01"),
        format!("00-{TID}-{SID}-01-extra"),
        format!("00-{TID}-{SID}"),
        format!("00-{}-{SID}-01", "g".repeat(32)),
    ] {
        assert_eq!(
            extract(&headers(&[("traceparent", &bad)])),
            Found::None,
            "{bad}"
        );
    }
    // A later version may add fields.
    assert!(matches!(
        extract(&headers(&[(
            "traceparent",
            &format!("01-{TID}-{SID}-01-later")
        )])),
        Found::Parent(_)
    ));

    let Found::Parent(p) = extract(&headers(&[("b3", &format!("{TID}-{SID}-1"))])) else {
        panic!("b3")
    };
    assert_eq!(p.format, Format::B3Single);
    assert!(p.sampled);
    let Found::Parent(p) = extract(&headers(&[("b3", &format!("a3ce929d0e0e4736-{SID}-0"))]))
    else {
        panic!("b3 64-bit")
    };
    assert!(!p.sampled);
    assert_eq!(hex(&p.trace_id), "0000000000000000a3ce929d0e0e4736");
    assert_eq!(extract(&headers(&[("b3", "0")])), Found::Deny);
    assert_eq!(extract(&headers(&[("b3", "x-y")])), Found::None);

    let Found::Parent(p) = extract(&headers(&[
        ("x-b3-traceid", TID),
        ("x-b3-spanid", SID),
        ("x-b3-sampled", "1"),
    ])) else {
        panic!("b3 multi")
    };
    assert_eq!(p.format, Format::B3Multi);
    assert!(p.sampled);
    assert_eq!(extract(&headers(&[("x-b3-sampled", "0")])), Found::Deny);
    let Found::Parent(p) = extract(&headers(&[
        ("x-b3-traceid", TID),
        ("x-b3-spanid", SID),
        ("x-b3-flags", "1"),
    ])) else {
        panic!("b3 debug")
    };
    assert!(p.sampled);
}

#[test]
fn writes_the_proxy_span_as_the_parent_in_the_formats_that_came() {
    let trace: [u8; 16] = hex_bytes(TID.as_bytes()).unwrap();
    let span = [1, 2, 3, 4, 5, 6, 7, 8];
    let mut h = headers(&[
        ("traceparent", &format!("00-{TID}-{SID}-01")),
        ("tracestate", "vendor=x"),
        ("b3", &format!("{TID}-{SID}-1")),
        ("x-b3-traceid", TID),
        ("x-b3-spanid", SID),
        ("x-b3-sampled", "1"),
    ]);
    let Found::Parent(parent) = extract(&h) else {
        panic!()
    };
    inject(&mut h, &trace, &span, Some(&parent));
    assert_eq!(h["traceparent"], format!("00-{TID}-0102030405060708-01"));
    assert_eq!(h["tracestate"], "vendor=x");
    assert_eq!(h["b3"], format!("{TID}-0102030405060708-1-{SID}"));
    assert_eq!(h["x-b3-spanid"], "0102030405060708");
    assert_eq!(h["x-b3-parentspanid"], SID);
    assert_eq!(h["x-b3-traceid"], TID);

    let mut h = HeaderMap::new();
    inject(&mut h, &trace, &span, None);
    assert_eq!(h["traceparent"], format!("00-{TID}-0102030405060708-01"));
}

#[test]
fn flags_parse_and_names() {
    assert_eq!(parse_sampling("0.25"), Ok(0.25));
    assert!(parse_sampling("1.5").is_err());
    assert!(parse_sampling("-0.1").is_err());
    assert!(parse_sampling("x").is_err());
    assert_eq!(
        parse_resource("a=1, b = two%20words,,").unwrap(),
        vec![("a".into(), "1".into()), ("b".into(), "two words".into())]
    );
    assert!(parse_resource("novalue").is_err());
    assert!(parse_resource("=v").is_err());
    assert_eq!(workload_from_pod("web-5d8c7b6f4-x2x9q"), "web");
    assert_eq!(workload_from_pod("web-0"), "web");
    assert_eq!(workload_from_pod("web"), "web");
    assert_eq!(
        identity_workload("web.emojivoto.serviceaccount.identity.ferry.cluster.local"),
        Some("emojivoto/web".into())
    );
    assert_eq!(
        split_authority("voting-svc.emojivoto:8080"),
        ("voting-svc.emojivoto".into(), Some(8080))
    );
    assert_eq!(split_authority("[::1]:81"), ("::1".into(), Some(81)));
    assert_eq!(split_authority("web"), ("web".into(), None));
    assert!(is_context_header("TraceParent"));
    assert!(is_context_header("b3"));
    assert!(is_context_header("X-B3-TraceId"));
    assert!(!is_context_header("host"));
}
