//! How an error is shown to a user: its innermost cause when that is more telling than
//! its outer layers (a client library's "error sending request" around "connection
//! refused"), or the whole chain when every layer adds something.

use std::error::Error;

/// Returns the innermost cause of `error`: what a failed connection attempt really said.
pub fn innermost_cause(error: &(dyn Error + 'static)) -> String {
    let mut last: &(dyn Error + 'static) = error;
    while let Some(source) = last.source() {
        last = source;
    }
    last.to_string()
}

/// Returns `error` and each of its causes, joined by `: ` (`reading issuer: tls.key: No such
/// file or directory`): for logs and messages where every layer says something.
pub fn error_chain(error: &dyn Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("error sending request")
        }
    }

    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn the_innermost_cause_is_shown() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(innermost_cause(&Outer(refused)), "refused");
        let alone = std::io::Error::other("alone");
        assert_eq!(innermost_cause(&alone), "alone");
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(
            error_chain(&Outer(refused)),
            "error sending request: refused"
        );
        assert_eq!(error_chain(&alone), "alone");
    }
}
