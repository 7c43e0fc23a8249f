//! The chunked-body walker: never panics, never claims more bytes than it was given, gives
//! the same answer however the input is split, and finds the exact end of a body we encode.
#![no_main]

use ferry_proxy::h1::chunked::Chunked;
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    split: u16,
    raw: &'a [u8],
    chunks: Vec<&'a [u8]>,
    extension: bool,
    trailer: bool,
    after: &'a [u8],
}

/// Feeds `parts` in turn; the bytes consumed, whether the body ended, whether it failed.
fn walk(parts: &[&[u8]]) -> (usize, bool, bool) {
    let mut c = Chunked::default();
    let mut total = 0;
    for part in parts {
        match c.advance(part) {
            Ok(n) => {
                assert!(n <= part.len());
                total += n;
                if c.is_done() {
                    return (total, true, false);
                }
                assert_eq!(n, part.len(), "stopped before the end without finishing");
            }
            Err(_) => return (total, false, true),
        }
    }
    (total, c.is_done(), false)
}

fuzz_target!(|input: Input<'_>| {
    let raw = input.raw;
    let at = usize::from(input.split) % (raw.len() + 1);
    let (whole_n, whole_done, whole_err) = walk(&[raw]);
    let (split_n, split_done, split_err) = walk(&[&raw[..at], &raw[at..]]);
    assert_eq!((whole_done, whole_err), (split_done, split_err));
    if whole_done {
        assert_eq!(whole_n, split_n);
    }

    // A well-formed body: the walker ends exactly after it, whatever follows.
    let mut body = Vec::new();
    for chunk in input.chunks.iter().filter(|c| !c.is_empty()) {
        body.extend_from_slice(format!("{:x}", chunk.len()).as_bytes());
        if input.extension {
            body.extend_from_slice(b";name=value");
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n");
    if input.trailer {
        body.extend_from_slice(b"x-checksum: abc\r\n");
    }
    body.extend_from_slice(b"\r\n");
    let end = body.len();
    body.extend_from_slice(input.after);
    let at = usize::from(input.split) % (body.len() + 1);
    for parts in [&[&body[..]][..], &[&body[..at], &body[at..]][..]] {
        let (n, done, err) = walk(parts);
        assert!(done && !err, "a well-formed body was not walked to its end");
        assert_eq!(n, end);
    }
});
