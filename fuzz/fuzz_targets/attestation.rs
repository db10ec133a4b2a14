//! Any header value: `verify` returns an error or a token, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sekisho_policy::attestation::{verify, SigningKey};
use sekisho_policy::device::{DeviceKind, DeviceStatus, Os, Ownership};
use sekisho_policy::state::Device;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let key = SigningKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[5; 32])).public();
    let device = Device {
        id: "d1".into(),
        owner: "u1".into(),
        kind: DeviceKind::Pc,
        ownership: Ownership::Issued,
        os: Os::Windows,
        os_version: "10".parse().unwrap_or_else(|_| unreachable!()),
        security_software: None,
        key,
        status: DeviceStatus::Approved,
        certificate: None,
        exception: None,
        previous_certificate: None,
    };
    let devices = sekisho_policy::state::Devices::from(vec![("d1".to_owned(), std::sync::Arc::new(device))]);
    let _ = verify(text, &devices);
});
