//! Decides at build time whether the PostgreSQL tests run: with
//! `SEKISHO_SKIP_POSTGRES=1` they are compiled as `#[ignore]`d (cargo test
//! then reports them as ignored, never as passed); otherwise they run and
//! fail with a clear message where PostgreSQL cannot be started.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(skip_postgres)");
    println!("cargo::rerun-if-env-changed=SEKISHO_SKIP_POSTGRES");
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var("SEKISHO_SKIP_POSTGRES").is_ok_and(|v| v == "1") {
        println!("cargo::rustc-cfg=skip_postgres");
    }
}
