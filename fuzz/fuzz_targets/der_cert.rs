//! The DER certificate reader on arbitrary bytes: never panics, and what it returns is
//! consistent (the identity is the first DNS SAN, the key info lies inside the input).
#![no_main]

use ferry_proxy::tls::cert::Cert;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(cert) = Cert::parse(data) else {
        return;
    };
    let start = data.as_ptr() as usize;
    let spki = cert.spki.as_ptr() as usize;
    assert!(spki >= start && spki + cert.spki.len() <= start + data.len());
    let serial = cert.serial_hex();
    assert!(serial.len() % 2 == 0 && serial.bytes().all(|b| b.is_ascii_hexdigit()));
    let _ = cert.subject();
    let sans = cert.sans();
    if let Some(name) = cert.first_dns_name() {
        let first_dns = sans.iter().find_map(|s| s.strip_prefix("DNS:"));
        assert_eq!(first_dns, Some(name));
    }
});
