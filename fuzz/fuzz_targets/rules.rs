//! Any rules file: a profile or an error with a location, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sekisho_policy::Profile;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Profile::parse("fuzz.toml", text);
    }
});
