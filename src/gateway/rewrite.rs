//! Response rewriting between the upstream's name and the public host:
//! `Location` headers pointing at the upstream origin, and `Set-Cookie`
//! `Domain` attributes naming the upstream host. Anything else is left as
//! the upstream sent it; it must never touch cookie values.

use http::header::{HeaderMap, HeaderValue, LOCATION, SET_COOKIE};
use sekisho_policy::rules::Upstream;

/// Rewrites an absolute `Location` on the upstream origin to the public
/// origin (`public_host` over https when `tls`, else http).
pub fn location(headers: &mut HeaderMap, upstream: &Upstream, tls: bool, public_host: &str) {
    let Some(loc) = headers.get(LOCATION).and_then(|v| v.to_str().ok()) else { return };
    let origin = upstream.origin();
    let rest = strip_prefix_ci(loc, &origin).filter(|r| r.is_empty() || r.starts_with(['/', '?', '#']));
    let scheme = if tls { "https" } else { "http" };
    if let Some(v) = rest.and_then(|rest| HeaderValue::from_str(&format!("{scheme}://{public_host}{rest}")).ok()) {
        headers.insert(LOCATION, v);
    }
}

/// Rewrites `Domain=<upstream host>` (with or without a leading dot) to the public host.
pub fn cookies(headers: &mut HeaderMap, upstream_host: &str, public_host: &str) {
    let cookies: Vec<String> =
        headers.get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok().map(str::to_owned)).collect();
    if !cookies.iter().any(|c| c.to_ascii_lowercase().contains("domain=")) {
        return;
    }
    headers.remove(SET_COOKIE);
    for cookie in cookies {
        if let Ok(v) = HeaderValue::from_str(&rewrite_cookie(&cookie, upstream_host, public_host)) {
            headers.append(SET_COOKIE, v);
        }
    }
}

fn rewrite_cookie(cookie: &str, upstream_host: &str, public_host: &str) -> String {
    let public = public_host.split(':').next().unwrap_or(public_host);
    cookie
        .split(';')
        .enumerate()
        .map(|(i, attr)| {
            // The first pair is the cookie's own name and value: never touched.
            match attr.split_once('=').filter(|_| i > 0) {
                Some((k, v))
                    if k.trim().eq_ignore_ascii_case("domain")
                        && v.trim().trim_start_matches('.').eq_ignore_ascii_case(upstream_host) =>
                {
                    format!(" Domain={public}")
                }
                _ => attr.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(";")
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| s.get(prefix.len()..)).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_domains_follow_the_public_host() {
        let c = rewrite_cookie(
            "sid=abc; Domain=.example.cybozu.com; Path=/; Secure",
            "example.cybozu.com",
            "kintone.city.lg.jp:8443",
        );
        assert_eq!(c, "sid=abc; Domain=kintone.city.lg.jp; Path=/; Secure");
        let other = rewrite_cookie("sid=abc; Domain=other.com", "example.cybozu.com", "k.lg.jp");
        assert_eq!(other, "sid=abc; Domain=other.com");
        let value_untouched = rewrite_cookie("domain=example.cybozu.com; Path=/", "example.cybozu.com", "k.lg.jp");
        assert_eq!(value_untouched, "domain=example.cybozu.com; Path=/");
    }
}
