//! The store against a real SQLite file: every change survives a reopen,
//! and the in-memory `apply` agrees with what `load` reads back.

use chrono::{Duration, TimeZone, Utc};
use sekisho_policy::attestation::SigningKey;
use sekisho_policy::device::{DeviceKind, Os, Ownership};

use super::*;

fn entry(action: &str) -> AuditEntry {
    AuditEntry {
        time: Utc::now(),
        actor: "test".into(),
        action: action.into(),
        target: "t".into(),
        reason: "r".into(),
        source: "127.0.0.1".into(),
    }
}

fn device(id: &str, owner: &str) -> Device {
    Device {
        id: id.into(),
        owner: owner.into(),
        kind: DeviceKind::Smartphone,
        ownership: Ownership::Personal,
        os: Os::Ios,
        os_version: "17.4".parse().unwrap(),
        security_software: Some(SecuritySoftware {
            name: "ウイルスバスター".into(),
            updated: chrono::NaiveDate::from_ymd_opt(2026, 11, 20).unwrap(),
        }),
        key: SigningKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[4; 32])).public(),
        status: DeviceStatus::Pending,
        certificate: None,
    }
}

fn changes() -> Vec<Change> {
    let t = Utc.with_ymd_and_hms(2026, 11, 24, 1, 0, 0).unwrap();
    vec![
        Change::PutUser {
            id: "u1".into(),
            display_name: "議員 一".into(),
            role: "councillor".into(),
            profiles: vec!["kumamoto".into()],
        },
        Change::PutUser { id: "u2".into(), display_name: "職員 二".into(), role: "staff".into(), profiles: vec![] },
        Change::FileDevice(Box::new(device("d1", "u1"))),
        Change::SetDeviceStatus { id: "d1".into(), status: DeviceStatus::Approved },
        Change::SetFlag {
            user: "u1".into(),
            kind: FlagKind::Suspended,
            flag: Some(Flag { reason: "lost".into(), since: t, until: Some(t + Duration::hours(1)) }),
        },
        Change::SetFlag {
            user: "u2".into(),
            kind: FlagKind::Restricted,
            flag: Some(Flag { reason: "audit".into(), since: t, until: None }),
        },
        Change::PutUser {
            id: "u1".into(),
            display_name: "議員 一（改）".into(),
            role: "councillor".into(),
            profiles: vec!["kumamoto".into()],
        },
        Change::SetStop { profile: Some("kumamoto".into()), stop: Some(Stop { reason: "breach".into(), since: t }) },
        Change::SetStop { profile: None, stop: Some(Stop { reason: "all".into(), since: t }) },
        Change::SetStop { profile: None, stop: None },
        Change::AddGrant(OvertimeGrant {
            id: 0,
            user: "u2".into(),
            profile: None,
            approver: "課長".into(),
            reason: "議会".into(),
            start: t,
            end: t + Duration::hours(3),
        }),
        Change::AddMaintenance(MaintenanceWindow {
            id: 0,
            profile: None,
            reason: "update".into(),
            start: t,
            end: t + Duration::hours(1),
        }),
        Change::AddMaintenance(MaintenanceWindow {
            id: 0,
            profile: Some("kumamoto".into()),
            reason: "x".into(),
            start: t,
            end: t + Duration::hours(2),
        }),
        Change::RemoveMaintenance(1),
    ]
}

#[test]
fn applied_state_matches_what_a_reopened_store_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite3");
    let store = Store::open(&path).unwrap();
    let mut state = State::default();
    for change in changes() {
        let stored = store.commit(change, &entry("x")).unwrap();
        state = apply(&state, &stored);
    }
    drop(store);
    let loaded = Store::open(&path).unwrap().load().unwrap();
    assert_eq!(loaded.users, state.users);
    assert_eq!(loaded.devices, state.devices);
    assert_eq!(*loaded.stops, *state.stops);
    assert_eq!(*loaded.overtime, *state.overtime);
    assert_eq!(*loaded.maintenance, *state.maintenance);
    assert_eq!(state.users["u1"].display_name, "議員 一（改）");
    assert!(state.users["u1"].suspended.is_some(), "updating a user keeps its flags");
    assert_eq!(state.maintenance.len(), 1);
    assert!(state.stops.global.is_none());
}

#[test]
fn a_failed_change_writes_nothing_not_even_its_audit_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.sqlite3")).unwrap();
    let orphan = store.commit(Change::FileDevice(Box::new(device("d1", "nobody"))), &entry("device.apply"));
    assert!(matches!(orphan, Err(StoreError::NotFound(_))), "{orphan:?}");
    store.commit(changes().remove(0), &entry("user.put")).unwrap();
    store.commit(Change::FileDevice(Box::new(device("d1", "u1"))), &entry("device.apply")).unwrap();
    let again = store.commit(Change::FileDevice(Box::new(device("d1", "u1"))), &entry("device.apply"));
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert!(matches!(store.commit(Change::RemoveGrant(42), &entry("overtime.remove")), Err(StoreError::NotFound(_))));
    let actions: Vec<_> = store.audit(None, None, 100).unwrap().into_iter().map(|r| r.entry.action).collect();
    assert_eq!(actions, ["device.apply", "user.put"], "only the committed changes are audited");
}

#[test]
fn every_change_round_trips_through_the_change_log_format() {
    let mut all = changes();
    all.push(Change::FileDevice(Box::new(Device { certificate: Some([7; 32]), ..device("d2", "u2") })));
    all.push(Change::ImportDevices(vec![device("d3", "u1"), device("d4", "u2")]));
    all.push(Change::SetDeviceCert { id: "d1".into(), sha256: [9; 32] });
    all.push(Change::SetDevicePosture {
        id: "d1".into(),
        os: Os::Ios,
        os_version: "17.5".parse().unwrap(),
        security_software: None,
        reported_at: 1_790_000_000,
    });
    all.push(Change::RemoveGrant(3));
    for change in all {
        let json = serde_json::to_string(&change).unwrap();
        assert_eq!(serde_json::from_str::<Change>(&json).unwrap(), change, "{json}");
    }
    let tampered = r#"{"file_device":{"id":"x","owner":"u","kind":"pc","ownership":"issued","os":"windows","os_version":"10","security_software":null,"key":{"alg":"EdDSA","public_key":"not a key"},"status":"pending","certificate":null}}"#;
    assert!(serde_json::from_str::<Change>(tampered).is_err(), "a key that does not parse is refused");
}
