//! The console's own style sheet and script, compiled into the binary and
//! served from the admin listener: nothing is fetched from anywhere else,
//! and the Content-Security-Policy allows only these (no inline script or
//! style). Pages link them with a digest of their content, so a browser
//! may keep them and still gets the new file after an upgrade. It must
//! never serve anything but these files (and an icon).

use std::sync::LazyLock;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use sha2::{Digest, Sha256};

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");
/// Linked by every page, so a browser never asks the admin API for
/// `/favicon.ico` (a request without a token counts toward the lockout).
const ICON: &str = include_str!("assets/favicon.svg");

/// Where pages link the style sheet (`?v=` its digest).
pub static CSS_PATH: LazyLock<String> = LazyLock::new(|| versioned("console.css", CSS));
/// Where pages link the script.
pub static JS_PATH: LazyLock<String> = LazyLock::new(|| versioned("console.js", JS));
/// Where pages link the icon.
pub static ICON_PATH: LazyLock<String> = LazyLock::new(|| versioned("favicon.svg", ICON));

fn versioned(name: &str, body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    let short: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("/console/assets/{name}?v={short}")
}

/// Serves `name` (the path after `/console/assets/`).
pub fn serve(name: &str, secure: bool) -> Response<Full<Bytes>> {
    let (body, content_type, status) = match name {
        "console.css" => (CSS, "text/css; charset=utf-8", StatusCode::OK),
        "console.js" => (JS, "text/javascript; charset=utf-8", StatusCode::OK),
        "favicon.svg" => (ICON, "image/svg+xml", StatusCode::OK),
        _ => ("", "text/plain; charset=utf-8", StatusCode::NOT_FOUND),
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // No personal data in these: the browser may keep them a day (a new
    // build links them under a new digest).
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400"));
    super::layout::security_headers(h, secure);
    resp
}
