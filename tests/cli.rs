//! The command line as an administrator meets it: `check-config` on good
//! and broken files, and the agent minting a token the gateway accepts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failed step is a failed test")]

use std::process::Command;

fn sekisho(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sekisho")).current_dir(dir).args(args).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn check_config_accepts_the_bundled_configuration() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let (ok, out) = sekisho(root, &["check-config"]);
    assert!(ok, "{out}");
    assert!(out.contains("profile `demo`"), "{out}");
}

#[test]
fn check_config_names_file_line_and_key_of_a_typo() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::copy(root.join("sekisho.toml"), dir.path().join("sekisho.toml")).unwrap();
    let demo = std::fs::read_to_string(root.join("rules/demo.toml")).unwrap();
    std::fs::write(dir.path().join("rules/demo.toml"), demo.replace("[network]\ntrusted", "[network]\ntrustd"))
        .unwrap();
    let (ok, out) = sekisho(dir.path(), &["check-config"]);
    assert!(!ok);
    let line = demo.lines().position(|l| l.starts_with("trusted")).unwrap() + 1;
    assert!(out.contains(&format!("demo.toml:{line}:")), "{out}");
    assert!(out.contains("trustd"), "{out}");
}

#[test]
fn agent_keys_are_private_and_tokens_carry_the_claims() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("device.key");
    for alg in ["ed25519", "p256"] {
        let (ok, out) = sekisho(dir.path(), &["agent", "keygen", "--alg", alg, "--out", key.to_str().unwrap()]);
        assert!(ok, "{out}");
        let public: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        let (ok, token) = sekisho(
            dir.path(),
            &[
                "agent",
                "token",
                "--key",
                key.to_str().unwrap(),
                "--device",
                "d1",
                "--user",
                "u1",
                "--aud",
                "demo.localhost",
                "--os",
                "ios",
                "--os-version",
                "17.4",
            ],
        );
        assert!(ok, "{token}");
        let device_key = sekisho_policy::device::DeviceKey::parse(
            public["key_alg"].as_str().unwrap(),
            public["public_key"].as_str().unwrap(),
        )
        .unwrap();
        let device = sekisho_policy::state::Device {
            id: "d1".into(),
            owner: "u1".into(),
            kind: sekisho_policy::device::DeviceKind::Smartphone,
            ownership: sekisho_policy::device::Ownership::Personal,
            os: sekisho_policy::device::Os::Ios,
            os_version: "17.4".parse().unwrap(),
            security_software: None,
            key: device_key,
            status: sekisho_policy::device::DeviceStatus::Approved,
            certificate: None,
            exception: None,
            previous_certificate: None,
        };
        let devices = sekisho_policy::state::Devices::from(vec![("d1".to_owned(), std::sync::Arc::new(device))]);
        let verified = sekisho_policy::attestation::verify(token.trim(), &devices).unwrap();
        assert_eq!((verified.claims.sub.as_str(), verified.claims.aud.as_str()), ("u1", "demo.localhost"));
        assert!(verified.claims.exp - verified.claims.iat <= 300);
    }
}

/// Abiko 8.(1): a supervisor token must name its department, and only a
/// supervisor token may name one; `check-config` says which token is wrong.
#[test]
fn check_config_refuses_a_supervisor_without_a_department() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::copy(root.join("rules/demo.toml"), dir.path().join("rules/demo.toml")).unwrap();
    let config = std::fs::read_to_string(root.join("sekisho.toml")).unwrap();
    let hash = "ab".repeat(32);
    for (token, want) in [
        (format!(r#"{{ name = "kacho", roles = ["supervisor"], sha256 = "{hash}" }}"#), Some("needs its `department`")),
        (
            format!(r#"{{ name = "kacho", roles = ["general_admin"], department = "総務課", sha256 = "{hash}" }}"#),
            Some("belongs only to a `supervisor`"),
        ),
        (format!(r#"{{ name = "kacho", roles = ["supervisor"], department = "総務課", sha256 = "{hash}" }}"#), None),
    ] {
        let text = config.replace("bootstrap_token_file = \"data/admin-token\"", &format!("tokens = [{token}]"));
        std::fs::write(dir.path().join("sekisho.toml"), text).unwrap();
        let (ok, out) = sekisho(dir.path(), &["check-config"]);
        match want {
            Some(msg) => assert!(!ok && out.contains("kacho") && out.contains(msg), "{out}"),
            None => assert!(ok, "{out}"),
        }
    }
}

#[test]
fn admin_commands_name_a_malformed_id_before_sending_anything() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for user in ["yamada taro", "a?b", "../devices/x", ""] {
        let (ok, out) = sekisho(root, &["admin", "suspend", user, "--reason", "lost phone"]);
        assert!(!ok, "{out}");
        assert!(out.contains(&format!("invalid value '{user}' for '<USER>'")), "{out}");
        assert!(out.contains("letters, digits, `-_.@`"), "{out}");
    }
    let (ok, out) = sekisho(root, &["admin", "stop", "--profile", "demo/x", "--reason", "breach"]);
    assert!(!ok && out.contains("a profile name is letters, digits, `-` or `_`"), "{out}");
}
