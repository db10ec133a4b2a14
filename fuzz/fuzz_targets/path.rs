//! Any path: refused, or returned unchanged with no dot or empty segment.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sekisho_policy::path::canonical_path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(out) = canonical_path(text) {
        assert_eq!(out, text);
        let segments: Vec<&str> = out.split('/').skip(1).collect();
        let last = segments.len().saturating_sub(1);
        for (i, s) in segments.iter().enumerate() {
            assert!(*s != "." && *s != "..");
            assert!(!s.is_empty() || i == last);
        }
    }
});
