//! How an error is shown to a user when its chain ends in something more telling than
//! its outer layers (a client library's "error sending request" around "connection
//! refused").

use std::error::Error;

/// Returns the innermost cause of `error`: what a failed connection attempt really said.
pub fn innermost_cause(error: &(dyn Error + 'static)) -> String {
    let mut last: &(dyn Error + 'static) = error;
    while let Some(source) = last.source() {
        last = source;
    }
    last.to_string()
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
    }
}
