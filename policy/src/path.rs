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
    #[error("the path's percent-escapes do not decode to UTF-8 (overlong or invalid sequences)")]
    BadEscape,
}

/// A request target in origin-form: what the rules judge and what is
/// forwarded, byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginForm<'a> {
    /// `path?query` as it goes upstream.
    pub target: &'a str,
    /// The path alone (before `?`): what path rules see and the audit records.
    pub path: &'a str,
    /// The authority of an absolute-form target, which must match `Host`.
    pub authority: Option<&'a str>,
}

/// Why a request target was refused before any rule looked at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the request target must be a path starting with `/` or an `http(s)://` URL")]
    NotOriginForm,
    #[error("the request target holds a byte that is not visible ASCII")]
    Bytes,
    #[error("the request target's authority is empty or carries user information")]
    Authority,
}

/// Reads a request target (RFC 9112 3.2) the one way the gateway trusts:
/// origin-form (`/path?query`) as is, absolute-form (`http://host/path`)
/// reduced to its origin-form with the authority returned for the caller to
/// match against `Host`. Anything else (a relative path, `*`, authority-form,
/// another scheme) is refused: an upstream might resolve it to a path the
/// rules never saw. The path still has to pass [`canonical_path`].
pub fn origin_form(raw: &[u8]) -> Result<OriginForm<'_>, TargetError> {
    if raw.is_empty() {
        return Err(TargetError::NotOriginForm);
    }
    if !raw.iter().all(|b| b.is_ascii_graphic()) {
        return Err(TargetError::Bytes);
    }
    let text = std::str::from_utf8(raw).map_err(|_| TargetError::Bytes)?;
    if text.starts_with('/') {
        return Ok(OriginForm { target: text, path: path_of(text), authority: None });
    }
    let rest = strip_prefix_ignore_case(text, "http://")
        .or_else(|| strip_prefix_ignore_case(text, "https://"))
        .ok_or(TargetError::NotOriginForm)?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, target) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') {
        return Err(TargetError::Authority);
    }
    // `http://host` and `http://host?q` have the empty path, which is `/`
    // in origin-form; the caller then forwards `/` followed by the query.
    if !target.starts_with('/') {
        return Err(TargetError::NotOriginForm);
    }
    Ok(OriginForm { target, path: path_of(target), authority: Some(authority) })
}

fn path_of(target: &str) -> &str {
    target.split_once('?').map_or(target, |(p, _)| p)
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
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
    if !decodes_to_utf8(path.as_bytes()) {
        return Err(PathError::BadEscape);
    }
    // The first split piece is the empty string before the leading `/`;
    // a trailing `/` gives one empty last piece, which is allowed.
    let mut segments = path.split('/').skip(1).peekable();
    while let Some(seg) = segments.next() {
        match seg {
            "." | ".." => return Err(PathError::DotSegment),
            "" if segments.peek().is_some() => return Err(PathError::EmptySegment),
            _ => {}
        }
    }
    Ok(path)
}

/// Whether the path, with its `%HH` escapes decoded, is UTF-8: an upstream
/// that decodes an overlong form (`%C0%AE` for `.`) or a stray byte could
/// see a character the rules never saw. A `%` not followed by two hex
/// digits stays as it is.
fn decodes_to_utf8(bytes: &[u8]) -> bool {
    if !bytes.contains(&b'%') {
        return true;
    }
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1).and_then(|b| hex(*b)), bytes.get(i + 2).and_then(|b| hex(*b))) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    std::str::from_utf8(&out).is_ok()
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
            ("/%C0%AE%C0%AE/admin", PathError::BadEscape),
            ("/%E0%80%AF", PathError::BadEscape),
            ("/a%FF", PathError::BadEscape),
            ("/%E3%81", PathError::BadEscape),
        ];
        for (p, want) in cases {
            assert_eq!(canonical_path(p), Err(want), "{p}");
        }
    }

    #[test]
    fn targets_in_origin_form_or_absolute_form_are_read_as_forwarded() {
        let origin = |target, path| Ok(OriginForm { target, path, authority: None });
        assert_eq!(origin_form(b"/drive/x?a=1"), origin("/drive/x?a=1", "/drive/x"));
        assert_eq!(origin_form(b"/"), origin("/", "/"));
        assert_eq!(
            origin_form(b"HTTP://app.localhost:8080/drive/x?q"),
            Ok(OriginForm { target: "/drive/x?q", path: "/drive/x", authority: Some("app.localhost:8080") })
        );
        assert_eq!(
            origin_form(b"https://app.localhost/"),
            Ok(OriginForm { target: "/", path: "/", authority: Some("app.localhost") })
        );
    }

    #[test]
    fn targets_an_upstream_could_resolve_elsewhere_are_refused() {
        let cases: [(&[u8], TargetError); 13] = [
            (b"admin/secret.txt", TargetError::NotOriginForm),
            (b"a:/../admin/x", TargetError::NotOriginForm),
            (b"foo:/echo", TargetError::NotOriginForm),
            (b"foo:bar://host/admin", TargetError::NotOriginForm),
            (b"*", TargetError::NotOriginForm),
            (b"app.localhost:443", TargetError::NotOriginForm),
            (b"", TargetError::NotOriginForm),
            (b"http://host", TargetError::NotOriginForm),
            (b"http://host?x=/admin", TargetError::NotOriginForm),
            (b"http://user@host/admin", TargetError::Authority),
            (b"http:///admin", TargetError::Authority),
            (b"/caf\xc3\xa9", TargetError::Bytes),
            (b"/a b", TargetError::Bytes),
        ];
        for (raw, want) in cases {
            assert_eq!(origin_form(raw), Err(want), "{}", String::from_utf8_lossy(raw));
        }
    }

    proptest! {
        /// Whatever the bytes, an accepted target is origin-form, its path is
        /// a prefix of it, and it is a suffix of the raw target.
        #[test]
        fn accepted_targets_are_origin_form(raw in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(t) = origin_form(&raw) {
                prop_assert!(t.target.starts_with('/'));
                prop_assert!(t.target.starts_with(t.path));
                prop_assert!(raw.ends_with(t.target.as_bytes()));
                prop_assert!(!t.path.contains('?'));
            }
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
