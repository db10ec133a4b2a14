//! The one form of a request path that rules are checked against and that
//! is forwarded. sekisho does not rewrite paths: a path that an upstream
//! could read differently from the gateway (dot segments, empty segments,
//! encoded separators, double encoding, `;` parameters, backslashes,
//! control bytes) is refused, so the path the rules saw is exactly the one
//! the upstream gets. Pure: no I/O.

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request target must be an absolute path")]
    NotAbsolute,
    #[error("the path contains a `.` or `..` segment")]
    DotSegment,
    #[error("the path contains an empty segment (`//`)")]
    EmptySegment,
    #[error("the path contains an encoded `.`, `/`, `\\`, `;`, `%` or NUL")]
    EncodedSeparator,
    #[error("the path contains `\\`, `;` or a control character")]
    Forbidden,
}

/// Returns `path` unchanged when it is canonical, or why it is not.
pub fn canonical_path(path: &str) -> Result<&str, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if path.bytes().any(|b| b == b'\\' || b == b';' || b < 0x20 || b == 0x7f) {
        return Err(PathError::Forbidden);
    }
    if encoded_trick(path.as_bytes()) {
        return Err(PathError::EncodedSeparator);
    }
    // The first split piece is the empty string before the leading `/`;
    // a trailing `/` gives one empty last piece, which is allowed.
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." | ".." => return Err(PathError::DotSegment),
            "" if i != last => return Err(PathError::EmptySegment),
            _ => {}
        }
    }
    Ok(path)
}

/// `%2e`, `%2f`, `%5c`, `%3b`, `%25` or `%00`, in any case.
fn encoded_trick(bytes: &[u8]) -> bool {
    bytes.windows(3).any(|w| {
        w[0] == b'%'
            && matches!(
                (w[1], w[2].to_ascii_lowercase()),
                (b'2', b'e' | b'f' | b'5') | (b'5', b'c') | (b'3', b'b') | (b'0', b'0')
            )
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn ordinary_paths_pass_unchanged() {
        for p in ["/", "/k/v1/records.json", "/drive/", "/a%20b/c", "/v1.0/users/me/calendars", "/%E3%81%82"] {
            assert_eq!(canonical_path(p), Ok(p));
        }
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        let cases = [
            ("k/v1", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
            ("/k/../admin", PathError::DotSegment),
            ("/k/./v1", PathError::DotSegment),
            ("/k/..", PathError::DotSegment),
            ("//admin", PathError::EmptySegment),
            ("/k//v1/plugin.json", PathError::EmptySegment),
            ("/k/%2e%2e/admin", PathError::EncodedSeparator),
            ("/k/%2E%2E/admin", PathError::EncodedSeparator),
            ("/k%2fv1", PathError::EncodedSeparator),
            ("/k%5cv1", PathError::EncodedSeparator),
            ("/k/plugin.json%3bx", PathError::EncodedSeparator),
            ("/k/%252e%252e/", PathError::EncodedSeparator),
            ("/k%00", PathError::EncodedSeparator),
            ("/k\\v1", PathError::Forbidden),
            ("/k/v1/plugin.json;jsessionid=1", PathError::Forbidden),
            ("/k/\u{7f}", PathError::Forbidden),
        ];
        for (p, want) in cases {
            assert_eq!(canonical_path(p), Err(want), "{p}");
        }
    }

    proptest! {
        /// Whatever comes in, an accepted path is returned as is and has no
        /// segment any upstream could resolve to `.` or `..`.
        #[test]
        fn accepted_paths_are_unambiguous(p in "/[a-zA-Z0-9%./;\\\\_-]{0,40}") {
            if let Ok(out) = canonical_path(&p) {
                prop_assert_eq!(out, p.as_str());
                let lowered = out.to_ascii_lowercase();
                prop_assert!(!lowered.contains("%2e") && !lowered.contains("%2f") && !lowered.contains("//"));
                prop_assert!(out.split('/').all(|s| s != "." && s != ".."));
            }
        }
    }
}
