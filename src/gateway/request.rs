//! Reading a request's host, target, framing and method the one way the
//! gateway trusts, and writing the headers it owns. Each reader refuses
//! what could be read two ways (the answer is a 400 with the detail); none
//! of it decides access: that is `decide`'s. It must never log header values.

use http::header::{AsHeaderName, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use sekisho_policy::engine::authorised_method;
use sekisho_policy::path::{canonical_path, origin_form, OriginForm, PathError, TargetError};

/// Headers a client may never send upstream: the gateway sets or checks
/// them, or they steer an upstream's routing or vouch for the client
/// (`X-Original-URL` and kin; `X-Forwarded-User`, `X-Forwarded-Client-Cert`
/// and the rest of `X-Forwarded-*`, which some upstreams trust from their
/// proxy). Only the gateway's own `X-Forwarded-For`, `-Proto` and `-Host`
/// go on, set after this.
fn is_protected(name: &str) -> bool {
    matches!(name, "forwarded" | "x-real-ip" | "x-rewrite-url" | "device-attestation")
        || name.starts_with("x-forwarded-")
        || name.starts_with("x-original-")
        || name.starts_with("sekisho-")
}

/// Hop-by-hop headers (RFC 9110 7.6.1), never forwarded either way: the
/// gateway frames each side's messages itself.
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authenticate"
    )
}

/// The host the client asked for: `:authority` on HTTP/2 (and an HTTP/1
/// absolute-form target), else the single `Host` header; both must agree.
pub fn request_host(req: &Parts) -> Result<&str, &'static str> {
    let mut hosts = req.headers.get_all(http::header::HOST).iter();
    let header = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err("more than one Host header"),
        (h, _) => h.map(|h| h.to_str().map_err(|_| "Host header is not text")).transpose()?,
    };
    match (req.uri.authority().map(|a| a.as_str()), header) {
        (Some(a), Some(h)) if !a.eq_ignore_ascii_case(h) => Err("Host header differs from the request target"),
        (Some(a), _) => Ok(a),
        (None, Some(h)) => Ok(h),
        (None, None) => Err("no Host header"),
    }
}

/// The request target as it will be forwarded (origin-form) and judged.
/// The HTTP/1 wire guard already let only origin-form and absolute-form
/// through; an absolute-form target or HTTP/2 `:authority` was matched
/// against `Host` by [`request_host`], and only `http`/`https` are schemes.
pub fn checked_target(req: &Parts) -> Result<OriginForm<'_>, &'static str> {
    match req.uri.scheme_str() {
        None | Some("http" | "https") => {}
        Some(_) => return Err("the request scheme must be `http` or `https`"),
    }
    let raw = req.uri.path_and_query().map_or("", |p| p.as_str());
    let target = origin_form(raw.as_bytes()).map_err(|e| match e {
        TargetError::NotOriginForm => "the request target must be a path starting with `/`",
        TargetError::Bytes => "the request target holds a byte that is not visible ASCII",
        TargetError::Authority => "the request target's authority is empty or carries user information",
    })?;
    canonical_path(target.path).map_err(path_error)?;
    Ok(target)
}

fn path_error(e: PathError) -> &'static str {
    match e {
        PathError::NotAbsolute => "the request target must be an absolute path",
        PathError::DotSegment => "the path contains a dot segment",
        PathError::EmptySegment => "the path contains an empty segment",
        PathError::EncodedSeparator => "the path contains an encoded separator",
        PathError::Forbidden => "the path contains a forbidden character",
        PathError::BadEscape => "the path contains an escape that is not UTF-8",
    }
}

/// Refuses ambiguous message framing on HTTP/2 (HTTP/1 framing is the wire
/// guard's): a `Content-Length` must be one decimal number.
pub fn checked_framing(req: &Parts) -> Result<(), &'static str> {
    let mut lengths = req.headers.get_all(http::header::CONTENT_LENGTH).iter();
    match (lengths.next(), lengths.next()) {
        (Some(_), Some(_)) => Err("invalid or repeated Content-Length"),
        (Some(v), None) if v.is_empty() || !v.as_bytes().iter().all(u8::is_ascii_digit) => {
            Err("invalid or repeated Content-Length")
        }
        _ => Ok(()),
    }
}

/// The method the upstream will act on, honouring override headers; more
/// than one override value is refused.
pub fn effective_method(req: &Parts) -> Result<&str, &'static str> {
    static OVERRIDES: [HeaderName; 3] = [
        HeaderName::from_static("x-http-method-override"),
        HeaderName::from_static("x-http-method"),
        HeaderName::from_static("x-method-override"),
    ];
    // Every value of every name: a name sent twice is read two ways as
    // surely as two names are (a framework may take the first or the last).
    // One pass over the names (most are standard ones, told apart at once)
    // costs less than three lookups, each hashing a name.
    let mut found = req.headers.iter().filter(|(name, _)| OVERRIDES.contains(name)).map(|(_, v)| v);
    let override_value = match (found.next(), found.next()) {
        (Some(_), Some(_)) => return Err("more than one method override header"),
        (None, _) => None,
        (Some(v), None) => Some(v.to_str().map_err(|_| "method override header is not text")?),
    };
    Ok(authorised_method(req.method.as_str(), override_value))
}

/// Every value of `name`, joined by `,` when there are several.
pub fn joined_header<'h>(headers: &'h HeaderMap, name: impl AsHeaderName) -> Option<std::borrow::Cow<'h, str>> {
    let mut values = headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
    let first = values.next()?;
    match values.next() {
        None => Some(std::borrow::Cow::Borrowed(first)),
        Some(second) => {
            let mut joined = format!("{first},{second}");
            for v in values {
                joined.push(',');
                joined.push_str(v);
            }
            Some(std::borrow::Cow::Owned(joined))
        }
    }
}

/// A header the gateway reads once was sent more than once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repeated;

/// The single value of `name`; `Err` when it was sent more than once.
pub fn single_header(headers: &HeaderMap, name: impl AsHeaderName) -> Result<Option<&HeaderValue>, Repeated> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(_), Some(_)) => Err(Repeated),
        (v, _) => Ok(v),
    }
}

/// The request's `Content-Type`, for reading a held body. Sent twice, the
/// gateway could read the body as one type and the upstream as the other.
pub fn content_type(headers: &HeaderMap) -> Result<Option<String>, Repeated> {
    Ok(single_header(headers, http::header::CONTENT_TYPE)?.and_then(|v| v.to_str().ok()).map(str::to_owned))
}

pub fn prefers_html(headers: &HeaderMap) -> bool {
    headers.get(http::header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/html"))
}

/// A WebSocket handshake (RFC 6455 4.1): the only upgrade forwarded as one.
pub fn is_websocket(req: &Parts) -> bool {
    let upgrade =
        req.headers.get(http::header::UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let connection = req
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .any(|v| v.as_bytes().split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade")));
    req.method == http::Method::GET && req.version == http::Version::HTTP_11 && upgrade && connection
}

/// Whether the client asked for an upgrade of any kind (HTTP/1 only).
pub fn asks_upgrade(req: &Parts) -> bool {
    req.headers.contains_key(http::header::UPGRADE)
}

/// Removes client copies of headers the gateway owns or that steer an
/// upstream's routing, hop-by-hop headers and those the client's
/// `Connection` names, and every header whose name holds anything but
/// letters, digits and `-`: servers that fold `_` or `.` into `-` would
/// read `X_HTTP_Method_Override` as a header the gateway never checked
/// (nginx drops these by default for the same reason). A WebSocket
/// handshake keeps its `Upgrade` and `Connection: upgrade`.
pub fn strip_for_upstream(headers: &mut HeaderMap, websocket: bool) {
    strip(headers, |n| {
        is_protected(n) || is_hop_by_hop(n) || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    if websocket {
        headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(http::header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Removes the upstream's hop-by-hop headers from its answer (the gateway
/// frames the answer to the client itself); a 101 keeps its upgrade.
pub fn strip_response(headers: &mut HeaderMap, switching: bool) {
    strip(headers, |n| !(switching && (n == "connection" || n == "upgrade")) && is_hop_by_hop(n));
}

/// Removes every header `doomed` names and every header a `Connection`
/// header lists (`upgrade` and `connection` themselves aside: `doomed`
/// decides those). `Connection` is looked up once, and its tokens are
/// compared in place: nothing is parsed or collected on every request
/// but the names to remove.
fn strip(headers: &mut HeaderMap, doomed: impl Fn(&str) -> bool) {
    let connection = headers.get_all(http::header::CONNECTION);
    let tokens = || connection.iter().flat_map(|v| v.as_bytes().split(|b| *b == b',')).map(<[u8]>::trim_ascii);
    // Most `Connection` headers list nothing that is not going anyway
    // (`keep-alive`): then no name needs comparing with the tokens.
    let lists_more = tokens().any(|t| {
        !(t.is_empty()
            || t.eq_ignore_ascii_case(b"upgrade")
            || t.eq_ignore_ascii_case(b"connection")
            || std::str::from_utf8(t).is_ok_and(&doomed))
    });
    let listed = |name: &str| {
        lists_more
            && name != "upgrade"
            && name != "connection"
            && tokens().any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
    };
    let names: Vec<HeaderName> =
        headers.keys().filter(|name| doomed(name.as_str()) || listed(name.as_str())).cloned().collect();
    for name in names {
        headers.remove(&name);
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue};

    use super::{strip_for_upstream, strip_response};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_static(value));
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<&str> {
        let mut n: Vec<&str> = h.keys().map(http::HeaderName::as_str).collect();
        n.sort_unstable();
        n
    }

    #[test]
    fn an_answer_loses_its_hop_by_hop_headers_and_those_its_connection_names() {
        let answer = [
            ("connection", "keep-alive, X-Internal"),
            ("connection", " x-second "),
            ("keep-alive", "timeout=5"),
            ("x-internal", "1"),
            ("x-second", "2"),
            ("transfer-encoding", "chunked"),
            ("content-type", "text/plain"),
            ("x-kept", "3"),
        ];
        let mut h = headers(&answer);
        strip_response(&mut h, false);
        assert_eq!(names(&h), ["content-type", "x-kept"]);

        let mut switching = headers(&[("connection", "Upgrade"), ("upgrade", "websocket"), ("x-kept", "1")]);
        strip_response(&mut switching, true);
        assert_eq!(names(&switching), ["connection", "upgrade", "x-kept"]);
    }

    #[test]
    fn a_request_loses_hop_by_hop_headers_those_its_connection_names_and_odd_names() {
        let request = [
            ("connection", "close, X-Hop, Upgrade"),
            ("x-hop", "1"),
            ("te", "trailers"),
            ("x_method_override", "DELETE"),
            ("accept", "*/*"),
            ("x-kept", "2"),
        ];
        let mut h = headers(&request);
        strip_for_upstream(&mut h, false);
        assert_eq!(names(&h), ["accept", "x-kept"]);

        let mut websocket = headers(&[("connection", "Upgrade"), ("upgrade", "websocket"), ("x-kept", "1")]);
        strip_for_upstream(&mut websocket, true);
        assert_eq!(names(&websocket), ["connection", "upgrade", "x-kept"]);
        assert_eq!(websocket.get("connection").map(HeaderValue::as_bytes), Some(&b"upgrade"[..]));
    }

    #[test]
    fn a_request_loses_every_header_that_would_vouch_for_the_client_or_steer_the_upstream() {
        let request = [
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-user", "mayor"),
            ("x-forwarded-client-cert", "Hash=00"),
            ("x-forwarded-email", "mayor@city.example"),
            ("forwarded", "for=10.0.0.1"),
            ("x-real-ip", "10.0.0.1"),
            ("x-original-url", "/admin"),
            ("x-original-host", "admin.localhost"),
            ("x-rewrite-url", "/admin"),
            ("device-attestation", "token"),
            ("sekisho-user", "mayor"),
            ("sekisho-request-id", "forged"),
            ("x-forwarded", "kept: not a prefix of anything the gateway owns"),
            ("x-kept", "1"),
        ];
        let mut h = headers(&request);
        strip_for_upstream(&mut h, false);
        assert_eq!(names(&h), ["x-forwarded", "x-kept"]);
    }
}
