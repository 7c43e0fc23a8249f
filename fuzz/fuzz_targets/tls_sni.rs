//! The inbound TLS peek on arbitrary bytes, delivered in two reads: never panics or errors
//! (bytes it does not understand are "no SNI"), and finishes when the input ends.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use bytes::BytesMut;
use ferry_proxy::tls::peek_sni;
use libfuzzer_sys::fuzz_target;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let at = usize::from(split) * 8 % (data.len() + 1);
    let (first, mut rest) = data.split_at(at);
    let mut buf = BytesMut::from(first);
    let sni = runtime().block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        peek_sni(&mut rest, &mut buf, deadline).await
    });
    let sni = sni.expect("reading from a slice cannot fail");
    if let Some(name) = sni {
        assert!(!name.is_empty() && name.is_ascii(), "{name:?}");
    }
    assert!(buf.len() <= data.len());
});
