//! Protocol detection on arbitrary first bytes: never panics, and a decision, once made on a
//! prefix, is the decision on every longer input (detection must not decide early and wrong).
#![no_main]

use ferry_proxy::detect::{classify, MAX_DETECT_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let data = &data[..data.len().min(MAX_DETECT_BYTES)];
    let whole = classify(data);
    // Every prefix for short inputs; a sample of them for long ones.
    let step = (data.len() / 256).max(1);
    let mut decided = None;
    for end in (0..=data.len()).step_by(step) {
        match (decided, classify(&data[..end])) {
            (None, Some(p)) => decided = Some(p),
            (Some(d), now) => assert_eq!(now, Some(d), "decided {d:?} at a prefix, not at {end}"),
            (None, None) => {}
        }
    }
    if let Some(d) = decided {
        assert_eq!(whole, Some(d));
    }
});
