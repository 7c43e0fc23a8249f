//! `ferry inject` on arbitrary YAML: never panics; what it writes parses; injecting its
//! output again changes nothing (inject is idempotent); and the emitter writes every parsed
//! document in its domain back exactly.
#![no_main]

#[path = "common.rs"]
mod common;

use ferry::{inject::inject_text, sidecar::ProxyConfig, yaml::parse_stream};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Ok(docs) = parse_stream("fuzz", text) else {
        return;
    };
    // Outside the emitter's domain (YAML tags, collection keys) it is not exact yet.
    if !docs.iter().all(common::in_domain) {
        return;
    }
    common::assert_round_trip(&docs);
    let cfg = ProxyConfig::default();
    let Ok((once, _)) = inject_text("fuzz", text, &cfg) else {
        return;
    };
    parse_stream("injected", &once).expect("inject wrote YAML that does not parse");
    let (twice, _) = inject_text("injected", &once, &cfg).expect("inject refused its own output");
    assert_eq!(once, twice, "injecting twice is not injecting once");
});
