//! The Debian package and its systemd unit, checked without building the
//! package: every asset `cargo deb` would install exists, configuration
//! and rules are conffiles, the shipped configuration and rules load, and
//! `systemd-analyze verify` accepts the unit (with ExecStart pointing at
//! the binary under test). systemd-analyze must be installed (`scripts/test`
//! installs the `systemd` package); without it this test fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failed step is a failed test")]

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn deb() -> toml::Value {
    let manifest: toml::Value = toml::from_str(&std::fs::read_to_string(root().join("Cargo.toml")).unwrap()).unwrap();
    manifest["package"]["metadata"]["deb"].clone()
}

#[test]
fn every_asset_exists_and_configuration_is_a_conffile() {
    let deb = deb();
    let assets = deb["assets"].as_array().unwrap();
    let mut destinations = Vec::new();
    for a in assets {
        let (src, dest) = (a[0].as_str().unwrap(), a[1].as_str().unwrap());
        if src != "target/release/sekisho" {
            let found = if src.contains('*') {
                let dir = root().join(Path::new(src).parent().unwrap());
                std::fs::read_dir(dir).unwrap().count() > 0
            } else {
                root().join(src).exists()
            };
            assert!(found, "asset `{src}` is missing");
        }
        let name = Path::new(src).file_name().unwrap().to_str().unwrap();
        destinations.push(if dest.ends_with('/') { format!("/{dest}{name}") } else { format!("/{dest}") });
    }
    let conf: Vec<&str> = deb["conf-files"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    for c in &conf {
        assert!(destinations.iter().any(|d| d == c), "conffile `{c}` is not installed: {destinations:?}");
    }
    for d in destinations.iter().filter(|d| d.starts_with("/etc/")) {
        assert!(conf.contains(&d.as_str()), "`{d}` is under /etc but not a conffile");
    }
    assert_eq!(deb["systemd-units"]["unit-name"].as_str(), Some("sekisho"));
    assert!(root().join("debian/sekisho.service").exists() && root().join("debian/postinst").exists());
}

#[test]
fn the_shipped_configuration_is_valid_once_paths_exist() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    for f in ["abiko-kintone.toml", "kumamoto-council-lineworks.toml"] {
        std::fs::copy(root().join("rules").join(f), dir.path().join("rules").join(f)).unwrap();
    }
    let config = std::fs::read_to_string(root().join("debian/sekisho.toml")).unwrap();
    let local = config.replace("/etc/sekisho/rules", "rules").replace("/var/lib/sekisho", "data");
    std::fs::write(dir.path().join("sekisho.toml"), local).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sekisho")).current_dir(dir.path()).arg("check-config").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_unit_is_hardened_and_systemd_analyze_accepts_it() {
    let unit = std::fs::read_to_string(root().join("debian/sekisho.service")).unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "User=sekisho",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "ReadWritePaths=/var/lib/sekisho /var/log/sekisho",
    ] {
        assert!(unit.lines().any(|l| l.starts_with(line)), "the unit lacks `{line}`");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sekisho.service");
    std::fs::write(&path, unit.replace("/usr/bin/sekisho", env!("CARGO_BIN_EXE_sekisho"))).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", path.to_str().unwrap()])
        .output()
        .expect("systemd-analyze is required (apt-get install systemd; scripts/test does)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && !text.contains("sekisho.service:"), "{text}");
}
