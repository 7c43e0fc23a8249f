//! Finding the end of a chunked body (RFC 9112 §7.1) while its bytes pass through
//! unchanged: the fast path forwards a chunked response as it came and only needs to know
//! where it ends, to reuse the upstream connection for the next request.

/// Longest chunk-size line (size, extensions) or trailer section accepted.
const MAX_LINE: usize = 4096;
/// Longest trailer section accepted.
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size.
    Size,
    /// After the size: extensions up to the CR.
    Extension,
    /// Expecting the LF of the size line.
    SizeLf,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// Expecting the CR after a chunk's data.
    DataCr,
    /// Expecting the LF after a chunk's data.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// Expecting the LF that ends a trailer line.
    TrailerLf,
    /// Expecting the LF of the final empty line.
    EndLf,
    /// The body ended.
    Done,
}

/// The chunked body was not well formed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid chunked body: {0}")]
pub struct ChunkError(&'static str);

/// Tracks where a chunked body ends.
#[derive(Debug)]
pub struct Chunked {
    state: State,
    size: u64,
    digits: usize,
    /// Bytes of the current size line or of the trailer section.
    line: usize,
}

impl Default for Chunked {
    fn default() -> Self {
        Self {
            state: State::Size,
            size: 0,
            digits: 0,
            line: 0,
        }
    }
}

impl Chunked {
    /// Whether the body has ended.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Walks over `input`, the body's next bytes; returns how many of them belong to the
    /// body (all of them, unless it ends inside `input`).
    pub fn advance(&mut self, input: &[u8]) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() && self.state != State::Done {
            if let State::Data(left) = self.state {
                let take = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(input.len() - i);
                i += take;
                let left = left - take as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data(left)
                };
                continue;
            }
            let b = input[i];
            i += 1;
            self.line += 1;
            self.state = match self.state {
                State::Size => match (b as char).to_digit(16) {
                    Some(d) => {
                        self.digits += 1;
                        if self.digits > 15 {
                            return Err(ChunkError("chunk size too large"));
                        }
                        self.size = self.size * 16 + u64::from(d);
                        State::Size
                    }
                    None if self.digits == 0 => return Err(ChunkError("missing chunk size")),
                    None if b == b'\r' => State::SizeLf,
                    None if b == b';' || b == b' ' || b == b'\t' => State::Extension,
                    None => return Err(ChunkError("invalid chunk size")),
                },
                State::Extension if b == b'\r' => State::SizeLf,
                State::Extension if b == b'\n' => return Err(ChunkError("bare LF")),
                State::Extension => State::Extension,
                State::SizeLf if b == b'\n' => {
                    let size = std::mem::take(&mut self.size);
                    self.digits = 0;
                    self.line = 0;
                    if size == 0 {
                        State::TrailerStart
                    } else {
                        State::Data(size)
                    }
                }
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataLf if b == b'\n' => {
                    self.line = 0;
                    State::Size
                }
                State::TrailerStart if b == b'\r' => State::EndLf,
                State::TrailerStart | State::Trailer if b == b'\n' => {
                    return Err(ChunkError("bare LF"))
                }
                State::TrailerStart | State::Trailer if b == b'\r' => State::TrailerLf,
                State::TrailerStart | State::Trailer => State::Trailer,
                State::TrailerLf if b == b'\n' => State::TrailerStart,
                State::EndLf if b == b'\n' => State::Done,
                _ => return Err(ChunkError("missing CRLF")),
            };
            let limit = match self.state {
                State::TrailerStart | State::Trailer | State::TrailerLf | State::EndLf => {
                    MAX_TRAILERS
                }
                _ => MAX_LINE,
            };
            if self.line > limit {
                return Err(ChunkError("chunk line or trailers too long"));
            }
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end_of(body: &[u8], step: usize) -> Result<Option<usize>, ChunkError> {
        let mut c = Chunked::default();
        let mut total = 0;
        for piece in body.chunks(step) {
            total += c.advance(piece)?;
            if c.is_done() {
                return Ok(Some(total));
            }
        }
        Ok(None)
    }

    #[test]
    fn finds_the_end_whatever_the_pieces() {
        let body = b"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\ngrpc-status: 0\r\n\r\nGET /next";
        let end = body.len() - "GET /next".len();
        for step in [1, 2, 3, 7, 64] {
            assert_eq!(end_of(body, step), Ok(Some(end)), "step {step}");
        }
        assert_eq!(end_of(b"0\r\n\r\n", 1), Ok(Some(5)));
        assert_eq!(end_of(b"5\r\nhel", 4), Ok(None));
    }

    #[test]
    fn refuses_malformed_framing() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\r\nhelloXY",
            b"5\nhello\r\n",
            b"1000000000000000\r\n",
            b"0\r\nbad\ntrailer\r\n\r\n",
        ] {
            assert!(
                end_of(bad, 64).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
