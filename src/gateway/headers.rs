//! Response headers the gateway adds on its own account, computed from
//! plain values (`service::handle` adds them to every answer it gives, its
//! block pages included). No I/O, no state.

use sekisho_policy::Profile;

/// `Strict-Transport-Security` for an answer: only over TLS, the gateway's
/// own or a trusted proxy's in front (RFC 6797 §7.2: a browser ignores it
/// over plain HTTP), and only for a known profile that did not turn it off.
/// It replaces an upstream's own value.
pub fn hsts(profile: Option<&Profile>, tls: bool) -> Option<&str> {
    if !tls {
        return None;
    }
    profile.and_then(|p| p.hsts.as_deref())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn only_https_answers_of_a_profile_carry_it() {
        let text =
            "[profile]\nname = \"d\"\ntitle = \"D\"\ncontact = \"c\"\ntimezone = \"Asia/Tokyo\"\naudience = \"d\"\n\
                    [[routes]]\nhost = \"d.localhost\"\nupstream = \"http://127.0.0.1:1\"\n[hours]\nalways = true\n\
                    [network]\ntrusted = [\"any\"]\n";
        let p = Profile::parse("d.toml", text).unwrap();
        assert_eq!(hsts(Some(&p), true), Some("max-age=31536000"));
        assert_eq!(hsts(Some(&p), false), None);
        assert_eq!(hsts(None, true), None);
        let off = Profile::parse("d.toml", &format!("{text}[hsts]\nmax_age_secs = 0\n")).unwrap();
        assert_eq!(hsts(Some(&off), true), None);
    }
}
