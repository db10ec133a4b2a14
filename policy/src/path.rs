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
    #[error("the path percent-encodes a separator, `%`, NUL, or a character that needs no encoding")]
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

/// An escape an upstream may decode into a different path than the rules
/// saw: an encoded separator (`/`, `\\`, `;`), `%` (double encoding), NUL,
/// or an unreserved character (RFC 3986 2.3), which `%70lugin` would turn
/// into `plugin` at an upstream that normalises.
fn encoded_trick(bytes: &[u8]) -> bool {
    let hex = |b: u8| (b as char).to_digit(16);
    bytes.windows(3).any(|w| {
        let decoded = match (w[0], hex(w[1]), hex(w[2])) {
            (b'%', Some(h), Some(l)) => (h * 16 + l) as u8,
            _ => return false,
        };
        decoded.is_ascii_alphanumeric() || b"-._~/\\;%\0".contains(&decoded)
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn ordinary_paths_pass_unchanged() {
        for p in [
            "/",
            "/k/v1/records.json",
            "/drive/",
            "/a%20b/c",
            "/v1.0/users/me/calendars",
            "/%E3%81%82",
            "/a%2Bb",
            "/%zz",
        ] {
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
            ("/k/v1/%70lugin.json", PathError::EncodedSeparator),
            ("/k/v1/plugin%2Ejson", PathError::EncodedSeparator),
            ("/%41dmin", PathError::EncodedSeparator),
            ("/a%7eb", PathError::EncodedSeparator),
            ("/a%2Db%5F", PathError::EncodedSeparator),
            ("/v%31", PathError::EncodedSeparator),
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
        fn accepted_paths_are_unambiguous(p in "/[a-fA-F0-9pP%./;\\\\_~-]{0,40}") {
            if let Ok(out) = canonical_path(&p) {
                prop_assert_eq!(out, p.as_str());
                let lowered = out.to_ascii_lowercase();
                prop_assert!(!lowered.contains("%2e") && !lowered.contains("%2f") && !lowered.contains("//"));
                prop_assert!(out.split('/').all(|s| s != "." && s != ".."));
                // No escape that an upstream could decode into a letter a rule names.
                let decodes_plain = out.as_bytes().windows(3).any(|w| {
                    w[0] == b'%' && u8::from_str_radix(std::str::from_utf8(&w[1..]).unwrap_or("zz"), 16)
                        .is_ok_and(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
                });
                prop_assert!(!decodes_plain, "{}", out);
            }
        }
    }
}
