//! The checks a change must pass before the console reads its form:
//! it comes from the console's own origin (`Origin`, `Sec-Fetch-Site`),
//! and it carries the session's CSRF token (checked in `session`). A
//! refusal is a value; the change is never made. It must never trust a
//! header to grant anything: these checks only refuse.

use http::{header, HeaderMap, StatusCode};

use crate::control::admin::ApiError;

/// Why a change was refused before it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Sent from another site (or a page the browser would not call ours).
    Origin,
    /// The form's CSRF token is missing or not this session's.
    Csrf,
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> ApiError {
        let message = match r {
            Refusal::Origin => "the change came from another site; nothing was changed",
            Refusal::Csrf => "the form's CSRF token is missing or stale; reload the page (nothing was changed)",
        };
        ApiError(StatusCode::FORBIDDEN, message.to_owned())
    }
}

/// A change must come from this listener's own origin. Browsers send
/// `Sec-Fetch-Site` on every request; it must say `same-origin`. `Origin`
/// must then name this listener, or be `null`: the console's own
/// `Referrer-Policy: no-referrer` makes a browser send `null` for its
/// forms. A browser that sends no `Sec-Fetch-Site` must send our own
/// `Origin`. A client that sends neither still needs the session cookie
/// and its CSRF token.
pub fn same_origin(headers: &HeaderMap, secure: bool) -> Result<(), Refusal> {
    let text = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("\u{0}"));
    let fetch_site = text("sec-fetch-site");
    if fetch_site.is_some_and(|site| site != "same-origin") {
        return Err(Refusal::Origin);
    }
    let Some(origin) = text(header::ORIGIN.as_str()) else { return Ok(()) };
    if origin == "null" && fetch_site.is_some() {
        return Ok(());
    }
    let host = text(header::HOST.as_str()).ok_or(Refusal::Origin)?;
    let scheme = if secure { "https" } else { "http" };
    match origin.eq_ignore_ascii_case(&format!("{scheme}://{host}")) {
        true => Ok(()),
        false => Err(Refusal::Origin),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_change_from_the_consoles_own_origin_passes() {
        let own = headers(&[("host", "127.0.0.1:9090"), ("origin", "http://127.0.0.1:9090")]);
        assert_eq!(same_origin(&own, false), Ok(()));
        let fetch = headers(&[("host", "admin.city.lg.jp"), ("sec-fetch-site", "same-origin")]);
        assert_eq!(same_origin(&fetch, true), Ok(()));
        let no_referrer = headers(&[("host", "x"), ("origin", "null"), ("sec-fetch-site", "same-origin")]);
        assert_eq!(same_origin(&no_referrer, false), Ok(()), "a form under Referrer-Policy: no-referrer");
        assert_eq!(
            same_origin(&headers(&[("host", "x")]), false),
            Ok(()),
            "no browser headers: the CSRF token decides"
        );
    }

    #[test]
    fn a_change_from_anywhere_else_is_refused() {
        let cases: &[&[(&'static str, &str)]] = &[
            &[("host", "127.0.0.1:9090"), ("origin", "http://evil.example")],
            &[("host", "127.0.0.1:9090"), ("origin", "null")],
            &[("host", "127.0.0.1:9090"), ("origin", "https://127.0.0.1:9090")],
            &[("origin", "http://127.0.0.1:9090")],
            &[("host", "127.0.0.1:9090"), ("sec-fetch-site", "cross-site")],
            &[("host", "127.0.0.1:9090"), ("sec-fetch-site", "same-site")],
            &[("host", "127.0.0.1:9090"), ("origin", "http://127.0.0.1:9090"), ("sec-fetch-site", "cross-site")],
        ];
        for case in cases {
            assert_eq!(same_origin(&headers(case), false), Err(Refusal::Origin), "{case:?}");
        }
    }
}
