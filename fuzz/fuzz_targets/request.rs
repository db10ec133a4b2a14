//! The request readers (`src/gateway/request.rs`) read what a client sent
//! once hyper has parsed it: whatever the method, target and headers, they
//! must not panic; a target they accept is forwarded with exactly the path
//! they judged; and after stripping, no hop-by-hop, gateway-owned or oddly
//! named header goes on, in either direction.
//!
//! Input: a first line `METHOD TARGET`, then `name: value` lines.
#![no_main]

use http::header::HeaderMap;
use libfuzzer_sys::fuzz_target;
use sekisho::gateway::request::{
    checked_framing, checked_target, effective_method, is_websocket, joined_header, prefers_html, request_host,
    single_header, strip_for_upstream, strip_response,
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or_default();
    let (method, target) = first.split_once(' ').unwrap_or((first, "/"));
    let mut request = http::Request::builder().method(method).uri(target);
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            request = request.header(name.trim(), value.trim());
        }
    }
    // What http itself refuses never reaches the gateway either.
    let Ok(request) = request.body(()) else { return };
    let (mut parts, ()) = request.into_parts();

    let _ = (request_host(&parts), checked_framing(&parts), effective_method(&parts), prefers_html(&parts.headers));
    let _ = (joined_header(&parts.headers, "x-forwarded-for"), single_header(&parts.headers, "device-attestation"));
    if let Ok(t) = checked_target(&parts) {
        assert!(t.path.starts_with('/') && t.target.starts_with(t.path), "{t:?}");
        // As `service::forward` builds the upstream request's target.
        let sent: http::Uri = match (parts.uri.scheme(), parts.uri.authority()) {
            (None, None) => parts.uri.clone(),
            _ => t.target.parse().expect("an accepted target parses as origin-form"),
        };
        assert_eq!(sent.path(), t.path, "the path forwarded is the path judged");
    }

    let websocket = is_websocket(&parts);
    let listed = connection_tokens(&parts.headers);
    let mut response = parts.headers.clone();
    strip_for_upstream(&mut parts.headers, websocket);
    check_stripped(&parts.headers, &listed, websocket);
    for name in parts.headers.keys() {
        let n = name.as_str();
        assert!(n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'), "{n}");
        assert!(!n.starts_with("x-forwarded-") && n != "forwarded" && !n.starts_with("sekisho-"), "{n}");
        assert!(n != "device-attestation", "{n}");
    }
    strip_response(&mut response, false);
    check_stripped(&response, &listed, false);
});

/// The lowercase tokens of every `Connection` header.
fn connection_tokens(headers: &HeaderMap) -> Vec<String> {
    let values = headers.get_all(http::header::CONNECTION).iter();
    values
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|t| String::from_utf8_lossy(t.trim_ascii()).to_ascii_lowercase())
        .collect()
}

/// No hop-by-hop header is left (a WebSocket handshake keeps its own two),
/// nor any header the `Connection` header named.
fn check_stripped(headers: &HeaderMap, listed: &[String], websocket: bool) {
    const HOP_BY_HOP: [&str; 8] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
    ];
    for name in headers.keys() {
        let n = name.as_str();
        let kept = websocket && (n == "connection" || n == "upgrade");
        assert!(kept || !HOP_BY_HOP.contains(&n), "{n}");
        assert!(kept || !listed.iter().any(|t| t == n), "{n} was named by Connection");
    }
}
