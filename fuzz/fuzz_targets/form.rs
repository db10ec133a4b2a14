//! The admin console's form bodies, query strings and Cookie headers
//! (`sekisho_policy::form`): any bytes parse or are refused without a
//! panic, a parsed form names each field once, and a cookie is found only
//! when it is named exactly once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sekisho_policy::form::{cookie, Form, MAX_FIELDS};

fuzz_target!(|data: &[u8]| {
    if let Ok(form) = Form::parse(data) {
        let fields: Vec<(&str, &str)> = form.fields().collect();
        assert!(fields.len() <= MAX_FIELDS);
        for (i, (name, value)) in fields.iter().enumerate() {
            assert!(fields[..i].iter().all(|(n, _)| n != name), "field `{name}` twice");
            assert_eq!(form.get(name), Some(*value));
        }
    }
    let header = String::from_utf8_lossy(data);
    for name in ["sekisho_console", "__Host-sekisho_console", "sekisho_lang"] {
        let named = header.split(';').filter(|p| p.split_once('=').is_some_and(|(k, _)| k.trim() == name)).count();
        assert_eq!(cookie(&header, name).is_some(), named == 1, "{header:?}");
    }
});
