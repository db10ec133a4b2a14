use std::sync::Arc;

use chrono::TimeZone as _;

use super::*;
use crate::attestation::{mint, SigningKey};
use crate::device::{DeviceKind, Os, Ownership};
use crate::state::{Device, Devices};

const NOW: i64 = 1_795_000_000;

fn key(seed: u8) -> SigningKey {
    SigningKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]))
}

fn devices(status: DeviceStatus) -> Devices {
    let d = |id: &str, seed| Device {
        id: id.into(),
        owner: "u1".into(),
        kind: DeviceKind::Pc,
        ownership: Ownership::Issued,
        os: Os::Windows,
        os_version: "10.0.19045".parse().unwrap(),
        security_software: None,
        key: key(seed).public(),
        status,
        certificate: None,
        exception: None,
        previous_certificate: None,
    };
    Devices::from(vec![("d1".to_owned(), Arc::new(d("d1", 1))), ("d2".to_owned(), Arc::new(d("d2", 2)))])
}

fn report(kid: &str, seed: u8, edit: impl FnOnce(&mut Claims)) -> String {
    let mut c = Claims {
        sub: "u1".into(),
        aud: POSTURE_AUDIENCE.into(),
        iat: NOW,
        exp: NOW + 300,
        jti: "j".into(),
        os: Os::Windows,
        os_version: "10.0.26100".parse().unwrap(),
        security_software: None,
    };
    edit(&mut c);
    mint(&key(seed), kid, &c)
}

#[test]
fn a_fresh_report_signed_by_the_device_gives_its_posture() {
    let now = Utc.timestamp_opt(NOW + 10, 0).unwrap();
    let c = check_report(&report("d1", 1, |_| {}), "d1", &devices(DeviceStatus::Approved), now).unwrap();
    assert_eq!(c.os_version.to_string(), "10.0.26100");
}

#[test]
fn every_flaw_in_a_report_is_named() {
    let now = Utc.timestamp_opt(NOW + 10, 0).unwrap();
    let ok = devices(DeviceStatus::Approved);
    let cases: Vec<(&str, String, &str, Devices, ReportError)> = vec![
        ("signed by another key", report("d1", 9, |_| {}), "d1", ok.clone(), AttestationError::BadSignature.into()),
        (
            "another device's report",
            report("d2", 2, |_| {}),
            "d1",
            ok.clone(),
            ReportError::OtherDevice("d2".into(), "d1".into()),
        ),
        ("an access token", report("d1", 1, |c| c.aud = "kintone".into()), "d1", ok.clone(), ReportError::Audience),
        (
            "not the owner",
            report("d1", 1, |c| c.sub = "u2".into()),
            "d1",
            ok.clone(),
            ReportError::NotOwner("u2".into()),
        ),
        ("revoked", report("d1", 1, |_| {}), "d1", devices(DeviceStatus::Revoked), ReportError::NotApproved),
        ("pending", report("d1", 1, |_| {}), "d1", devices(DeviceStatus::Pending), ReportError::NotApproved),
        ("expired", report("d1", 1, |c| c.exp = NOW - 100), "d1", ok.clone(), ReportError::Stale),
        (
            "from the future",
            report("d1", 1, |c| (c.iat, c.exp) = (NOW + 500, NOW + 600)),
            "d1",
            ok.clone(),
            ReportError::Stale,
        ),
        ("too long-lived", report("d1", 1, |c| c.exp = NOW + 3600), "d1", ok.clone(), ReportError::Stale),
    ];
    for (name, token, id, devices, want) in cases {
        assert_eq!(check_report(&token, id, &devices, now), Err(want), "{name}");
    }
}
