//! Reading one named field out of what a client sends, the way the SaaS
//! would read it: a query string, an `application/x-www-form-urlencoded`
//! body, or a JSON object body (top level). Used for the login a browser
//! posts (Abiko 6.(2)(3)) and for the kintone app a request is about
//! (Abiko 10.). Pure: bytes in, a verdict out; it must never allocate more
//! than the input, log, or guess: a field that appears twice, or a body it
//! cannot read, is [`Field::Ambiguous`] and the engine refuses it.

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

/// What a request says about one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// Exactly one value.
    One(String),
    /// Not there at all (the body or query was readable).
    Absent,
    /// Given more than once, or the body could not be read: a server might
    /// read another value than the gateway, so the engine refuses it.
    Ambiguous,
}

/// How a body is encoded, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Form,
    /// Anything else (multipart, text, none): not read for fields.
    Other,
}

impl Encoding {
    pub fn of(content_type: Option<&str>) -> Encoding {
        let Some(ct) = content_type else { return Encoding::Other };
        let essence = ct.split(';').next().unwrap_or_default().trim();
        if essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Encoding::Form;
        }
        let json = essence.eq_ignore_ascii_case("application/json")
            || essence.get(essence.len().saturating_sub(5)..).is_some_and(|t| t.eq_ignore_ascii_case("+json"));
        if json {
            Encoding::Json
        } else {
            Encoding::Other
        }
    }
}

/// The field `name` of a body, read as the SaaS would by its content type.
/// A body of another type is read by its first byte: an object (`{`) as
/// JSON, anything else as a form (a server may sniff instead of trusting
/// the header, so the gateway never skips it).
pub fn body_field(content_type: Option<&str>, body: &[u8], name: &str) -> Field {
    match Encoding::of(content_type) {
        Encoding::Json => json_field(body, name),
        Encoding::Form => form_field(body, name),
        Encoding::Other if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') => json_field(body, name),
        Encoding::Other => form_field(body, name),
    }
}

/// The field `name` of a query string or form body (`a=1&b=2`).
pub fn form_field(text: &[u8], name: &str) -> Field {
    let mut found = None;
    for pair in text.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (key, value) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        let Some(key) = percent_decode(key) else { return Field::Ambiguous };
        if key != name {
            continue;
        }
        let Some(value) = percent_decode(value) else { return Field::Ambiguous };
        if found.replace(value).is_some() {
            return Field::Ambiguous;
        }
    }
    found.map_or(Field::Absent, Field::One)
}

/// The top-level member `name` of a JSON object, as a string (a JSON string,
/// or the text of a number). Duplicate members are ambiguous.
pub fn json_field(body: &[u8], name: &str) -> Field {
    let mut de = serde_json::Deserializer::from_slice(body);
    match de.deserialize_map(Member { name }).and_then(|f| de.end().map(|()| f)) {
        Ok(field) => field,
        Err(_) => Field::Ambiguous,
    }
}

/// `+` as space, `%XX` decoded; `None` when malformed or not UTF-8.
pub fn percent_decode(s: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        match b {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

struct Member<'n> {
    name: &'n str,
}

impl<'de> Visitor<'de> for Member<'_> {
    type Value = Field;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field, A::Error> {
        let mut found: Option<Field> = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key != self.name {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let value = match map.next_value::<serde_json::Value>()? {
                serde_json::Value::String(s) => Field::One(s),
                serde_json::Value::Number(n) => Field::One(n.to_string()),
                _ => Field::Ambiguous,
            };
            if found.replace(value).is_some() {
                return Ok(Field::Ambiguous);
            }
        }
        Ok(found.unwrap_or(Field::Absent))
    }
}

#[cfg(test)]
#[path = "body_tests.rs"]
mod tests;
