//! Build-time switches for the tests that need a tool from outside Cargo.
//! `SEKISHO_SKIP_POSTGRES=1` marks the PostgreSQL tests ignored and
//! `SEKISHO_SKIP_BROWSER=1` the real-browser tests (cargo test reports them
//! as ignored, never as passed). Without the switch they run, and a missing
//! PostgreSQL or Chromium fails them with a clear message.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    switch("SEKISHO_SKIP_POSTGRES", "skip_postgres");
    switch("SEKISHO_SKIP_BROWSER", "sekisho_skip_browser");
}

/// Sets `cfg(name)` when the environment variable `var` is set to
/// anything but empty or `0`.
fn switch(var: &str, name: &str) {
    println!("cargo::rustc-check-cfg=cfg({name})");
    println!("cargo::rerun-if-env-changed={var}");
    if std::env::var_os(var).is_some_and(|v| !v.is_empty() && v != "0") {
        println!("cargo::rustc-cfg={name}");
    }
}
