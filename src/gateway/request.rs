//! Reading a request's framing, host, path and method the one way the
//! gateway trusts, and writing the headers it owns. Each reader refuses
//! what could be read two ways (the answer is a 400 with the detail); none
//! of it decides access: that is `decide`'s. It must never log header values.

use pingora::http::RequestHeader;
use pingora::proxy::Session;
use sekisho_policy::engine::authorised_method;
use sekisho_policy::path::{canonical_path, origin_form, OriginForm, PathError, TargetError};

/// Headers a client may never send upstream: the gateway sets or checks them.
/// Compared after folding case, `_` and `.` to `-`.
const PROTECTED: [&str; 16] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-uri",
    "x-forwarded-path",
    "x-forwarded-server",
    "x-forwarded-scheme",
    "forwarded",
    "x-real-ip",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "device-attestation",
    "sekisho-user",
];

/// SHA-256 of the client certificate the TLS layer verified, if any.
pub fn client_certificate(session: &Session) -> Option<[u8; 32]> {
    let digest = session.digest()?.ssl_digest.as_ref()?;
    <[u8; 32]>::try_from(digest.cert_digest.as_slice()).ok()
}

pub fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

/// The host the client asked for: `:authority` on HTTP/2, else the single
/// `Host` header, which must agree with an absolute-form target.
pub fn request_host(req: &RequestHeader) -> Result<&str, &'static str> {
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

/// The request target as it will be forwarded (origin-form) and judged,
/// read from the bytes the client sent: pingora files a target that is not
/// origin-form under the path `/` but forwards its original bytes, so only
/// the raw target is safe to judge. An absolute-form target must name the
/// host the `Host` header names and is forwarded in origin-form.
pub fn checked_target<'r>(req: &'r RequestHeader, host: &str) -> Result<OriginForm<'r>, &'static str> {
    let target = origin_form(req.raw_path()).map_err(|e| match e {
        TargetError::NotOriginForm => "the request target must be a path starting with `/`",
        TargetError::Bytes => "the request target holds a byte that is not visible ASCII",
        TargetError::Authority => "the request target's authority is empty or carries user information",
    })?;
    if target.authority.is_some_and(|a| !a.eq_ignore_ascii_case(host)) {
        return Err("Host header differs from the request target");
    }
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
    }
}

/// The raw target for the audit line of a request refused before its
/// target was read (lossy, so a line is always written).
pub fn raw_target(req: &RequestHeader) -> String {
    String::from_utf8_lossy(req.raw_path()).into_owned()
}

/// Refuses ambiguous message framing instead of repairing it.
pub fn checked_framing(req: &RequestHeader) -> Result<(), &'static str> {
    let cls: Vec<_> = req.headers.get_all(http::header::CONTENT_LENGTH).iter().collect();
    let tes: Vec<_> = req.headers.get_all(http::header::TRANSFER_ENCODING).iter().collect();
    if !cls.is_empty() && !tes.is_empty() {
        return Err("both Content-Length and Transfer-Encoding");
    }
    let digits = |v: &&http::HeaderValue| !v.is_empty() && v.as_bytes().iter().all(u8::is_ascii_digit);
    if cls.len() > 1 || !cls.iter().all(digits) {
        return Err("invalid or repeated Content-Length");
    }
    let chunked_once = tes.len() == 1 && tes.iter().all(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
    if !tes.is_empty() && (!chunked_once || req.version != http::Version::HTTP_11) {
        return Err("Transfer-Encoding other than a single `chunked`");
    }
    Ok(())
}

/// The method the upstream will act on, honouring override headers.
pub fn effective_method(req: &RequestHeader) -> Result<&str, &'static str> {
    const OVERRIDES: [&str; 3] = ["x-http-method-override", "x-http-method", "x-method-override"];
    let mut found = OVERRIDES.iter().filter_map(|h| req.headers.get(*h));
    let override_value = match (found.next(), found.next()) {
        (Some(_), Some(_)) => return Err("more than one method override header"),
        (None, _) => None,
        (Some(v), None) => Some(v.to_str().map_err(|_| "method override header is not text")?),
    };
    Ok(authorised_method(req.method.as_str(), override_value))
}

pub fn joined_header(req: &RequestHeader, name: &str) -> Option<String> {
    let values: Vec<&str> = req.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// The one value of a header a rule reads (the SaaS login): refused when
/// sent twice or not visible ASCII, since the upstream might then read
/// another value than the one the gateway judged.
pub fn single_header<'h>(headers: &'h http::HeaderMap, name: &str) -> Result<Option<&'h str>, &'static str> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(_), Some(_)) => Err("a header the rules read is sent more than once"),
        (Some(v), None) => v.to_str().map(Some).map_err(|_| "a header the rules read is not visible ASCII"),
    }
}

/// The request's `Content-Type`, for reading a held body.
pub fn content_type(headers: &http::HeaderMap) -> Option<String> {
    headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

pub fn has_body(req: &RequestHeader) -> bool {
    let cl = req
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    cl.is_some_and(|n| n > 0) || req.headers.contains_key(http::header::TRANSFER_ENCODING)
}

pub fn prefers_html(req: &RequestHeader) -> bool {
    req.headers.get(http::header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/html"))
}

/// Removes client copies of headers the gateway owns or that steer an
/// upstream's routing (`X-Original-URL` and kin), and every header whose
/// name holds anything but letters, digits and `-`: servers that fold `_`
/// or `.` into `-` would read `X_HTTP_Method_Override` as a header the
/// gateway never checked (nginx drops these by default for the same reason).
pub fn strip_protected(req: &mut RequestHeader) {
    let doomed: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|name| {
            let n = name.as_str();
            PROTECTED.contains(&n)
                || n.starts_with("sekisho-")
                || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .cloned()
        .collect();
    for name in doomed {
        req.remove_header(&name);
    }
}

/// `host` or `host:port` as the upstream expects in `Host`.
pub fn upstream_authority(u: &sekisho_policy::rules::Upstream) -> String {
    let default = if u.tls { 443 } else { 80 };
    let host = if u.host.contains(':') { format!("[{}]", u.host) } else { u.host.clone() };
    if u.port == default {
        host
    } else {
        format!("{host}:{}", u.port)
    }
}

pub fn upstream_origin(u: &sekisho_policy::rules::Upstream) -> String {
    format!("{}://{}", if u.tls { "https" } else { "http" }, upstream_authority(u))
}
