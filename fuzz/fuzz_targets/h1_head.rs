//! The HTTP/1 fast path's head parsers on arbitrary bytes: never panic; a request head it
//! forwards parses again to the same request (method class, framing, host), and writing
//! that head again gives the same bytes (parse-then-serialize is a fixed point).
#![no_main]

use ferry_proxy::h1::head::{parse_request, parse_response, Parsed, ResponseHead};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    if let Parsed::Done(head) = parse_request(data, &mut out) {
        assert!(head.len <= data.len());
        let host = &data[head.host.clone()];
        assert!(std::str::from_utf8(host).is_ok());
        let mut again = Vec::new();
        let Parsed::Done(reparsed) = parse_request(&out, &mut again) else {
            panic!(
                "the forwarded head does not parse: {:?}",
                String::from_utf8_lossy(&out)
            );
        };
        assert_eq!(reparsed.len, out.len());
        assert_eq!(reparsed.framing, head.framing);
        assert_eq!(reparsed.head_method, head.head_method);
        assert_eq!(reparsed.idempotent, head.idempotent);
        assert_eq!(&out[reparsed.host.clone()], host);
        assert_eq!(again, out, "writing the forwarded head again changed it");
    }
    for (head_method, close) in [(false, false), (true, true)] {
        let mut out = Vec::new();
        match parse_response(data, head_method, close, &mut out) {
            Ok(Parsed::Done(ResponseHead::Informational { len }))
            | Ok(Parsed::Done(ResponseHead::Final { len, .. })) => assert!(len <= data.len()),
            _ => {}
        }
    }
});
