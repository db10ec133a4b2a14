//! What a browser sends the admin console, parsed strictly: an
//! `application/x-www-form-urlencoded` body (or query string) into its
//! fields, and one cookie out of a `Cookie` header. Pure functions over
//! untrusted bytes (fuzzed in `fuzz/`); they must never panic, and a field
//! or cookie given twice is refused rather than guessed at.

use crate::body::percent_decode;

/// Fields one form may carry; a larger one is refused.
pub const MAX_FIELDS: usize = 64;

/// A parsed form: each name at most once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form {
    fields: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("form field `{0}` is not valid percent-encoded UTF-8")]
    Encoding(String),
    #[error("form field `{0}` is given more than once")]
    Repeated(String),
    #[error("a form may carry at most {MAX_FIELDS} fields")]
    TooMany,
}

impl Form {
    /// Parses `a=1&b=x+y` (`+` is a space, `%XX` a byte; the whole must be UTF-8).
    pub fn parse(text: &[u8]) -> Result<Form, FormError> {
        let mut fields: Vec<(String, String)> = Vec::new();
        for pair in text.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
            if fields.len() == MAX_FIELDS {
                return Err(FormError::TooMany);
            }
            let (key, value) = match pair.iter().position(|b| *b == b'=') {
                Some(i) => (pair.get(..i).unwrap_or_default(), pair.get(i + 1..).unwrap_or_default()),
                None => (pair, &[][..]),
            };
            let shown = || String::from_utf8_lossy(key).chars().take(64).collect::<String>();
            let key = percent_decode(key).ok_or_else(|| FormError::Encoding(shown()))?;
            let value = percent_decode(value).ok_or_else(|| FormError::Encoding(shown()))?;
            if fields.iter().any(|(k, _)| *k == key) {
                return Err(FormError::Repeated(key));
            }
            fields.push((key, value));
        }
        Ok(Form { fields })
    }

    /// The value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The value of `name` with surrounding blanks removed; `None` when
    /// absent or blank (an empty form input).
    pub fn text(&self, name: &str) -> Option<&str> {
        self.get(name).map(str::trim).filter(|v| !v.is_empty())
    }

    /// Every field, in the order given.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// The value of cookie `name` in a `Cookie` header (`a=1; b=2`). A cookie
/// named twice (one set by a sibling host, say) counts as absent.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    let mut found = None;
    for pair in header.split(';') {
        let Some((k, v)) = pair.split_once('=') else { continue };
        if k.trim() != name {
            continue;
        }
        if found.is_some() {
            return None;
        }
        found = Some(v.trim().trim_matches('"'));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_decoded_and_blank_ones_read_as_absent() {
        let f = Form::parse(b"reason=%E7%AB%AF%E6%9C%AB+%E7%B4%9B%E5%A4%B1&until=&csrf=abc").unwrap();
        assert_eq!(f.get("reason"), Some("端末 紛失"));
        assert_eq!(f.text("until"), None);
        assert_eq!(f.get("until"), Some(""));
        assert_eq!(f.text("csrf"), Some("abc"));
        assert_eq!(f.get("missing"), None);
    }

    #[test]
    fn a_repeated_field_bad_encoding_or_too_many_fields_are_refused() {
        assert_eq!(Form::parse(b"csrf=a&csrf=b"), Err(FormError::Repeated("csrf".into())));
        assert_eq!(Form::parse(b"c%73rf=a&csrf=b"), Err(FormError::Repeated("csrf".into())));
        assert!(matches!(Form::parse(b"a=%zz"), Err(FormError::Encoding(_))));
        assert!(matches!(Form::parse(b"a=%ff"), Err(FormError::Encoding(_))));
        let many: Vec<String> = (0..=MAX_FIELDS).map(|i| format!("f{i}=1")).collect();
        assert_eq!(Form::parse(many.join("&").as_bytes()), Err(FormError::TooMany));
    }

    #[test]
    fn a_cookie_is_found_by_exact_name_and_a_doubled_one_is_not_trusted() {
        assert_eq!(cookie("a=1; sekisho_console=xyz; b=2", "sekisho_console"), Some("xyz"));
        assert_eq!(cookie("xsekisho_console=1", "sekisho_console"), None);
        assert_eq!(cookie("sekisho_console=1; sekisho_console=2", "sekisho_console"), None);
        assert_eq!(cookie("", "sekisho_console"), None);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_or_fail_without_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = Form::parse(&bytes);
            let text = String::from_utf8_lossy(&bytes);
            let _ = cookie(&text, "sekisho_console");
        }

        #[test]
        fn an_encoded_form_reads_back_as_written(
            fields in proptest::collection::btree_map("[a-z_]{1,8}", "\\PC{0,20}", 0..8)
        ) {
            let encoded: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
            let form = Form::parse(encoded.join("&").as_bytes()).unwrap();
            for (k, v) in &fields {
                proptest::prop_assert_eq!(form.get(k), Some(v.as_str()));
            }
        }
    }

    fn encode(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => char::from(b).to_string(),
                b' ' => "+".into(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
}
