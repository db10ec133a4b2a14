//! Build-time switches for the tests. `SEKISHO_SKIP_BROWSER=1` at build
//! time marks the real-browser tests ignored (reported as ignored, never
//! as passed) on a machine without Chromium; without it a missing browser
//! fails them.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(sekisho_skip_browser)");
    println!("cargo::rerun-if-env-changed=SEKISHO_SKIP_BROWSER");
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var_os("SEKISHO_SKIP_BROWSER").is_some_and(|v| !v.is_empty() && v != "0") {
        println!("cargo::rustc-cfg=sekisho_skip_browser");
    }
}
