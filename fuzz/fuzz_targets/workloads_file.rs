//! The control plane's workloads file on arbitrary text: never panics, and the same text
//! gives the same state (the watcher compares states to skip unchanged reloads).
#![no_main]

use ferry_control::workloads_file::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match (parse(text), parse(text)) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("the same text parsed once and failed once"),
    }
});
