//! Any body, content type and query: a field verdict, never a panic; a
//! value found in a form is the decoding of one `name=` pair of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sekisho_policy::body::{body_field, form_field, json_field, Field};

fuzz_target!(|data: &[u8]| {
    let (head, body) = data.split_at(data.len().min(24));
    let content_type = std::str::from_utf8(head).ok();
    let _ = body_field(content_type, body, "username");
    let _ = json_field(body, "app");
    if let Field::One(v) = form_field(body, "app") {
        assert!(v.len() <= body.len());
    }
});
