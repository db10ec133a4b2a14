//! Any `sekisho.toml`: a configuration or an error that names the file
//! (and, for TOML it cannot read, the line and column), never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sekisho::config::{Config, ConfigError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Config::parse(Path::new("/etc/sekisho/sekisho.toml"), text) {
        Ok(_) => {}
        Err(ConfigError::Invalid { path, line, column, .. }) => {
            assert_eq!(path, "/etc/sekisho/sekisho.toml");
            assert!(line >= 1 && line <= text.lines().count().max(1) + 1, "line {line} of {}", text.lines().count());
            assert!(column >= 1);
        }
        Err(e) => assert!(e.to_string().contains("/etc/sekisho/sekisho.toml"), "{e}"),
    }
});
