//! The store against a real SQLite file: every change survives a reopen,
//! and the in-memory `apply` agrees with what `load` reads back.

use chrono::{Duration, TimeZone, Utc};
use sekisho_policy::attestation::SigningKey;
use sekisho_policy::device::{DeviceKind, Os, Ownership};
use sekisho_policy::state::{Stage, Subject};

use super::*;

fn entry(action: &str) -> AuditEntry {
    AuditEntry {
        time: Utc::now(),
        actor: "test".into(),
        action: action.into(),
        target: "t".into(),
        reason: "r".into(),
        source: "127.0.0.1".into(),
        approver: None,
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
        exception: None,
        previous_certificate: None,
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
            department: None,
            schedule: None,
        },
        Change::PutUser {
            id: "u2".into(),
            display_name: "職員 二".into(),
            role: "staff".into(),
            profiles: vec![],
            department: Some("総務課".into()),
            schedule: Some("saturday-duty".into()),
        },
        Change::FileDevice(Box::new(device("d1", "u1"))),
        Change::SetDeviceStatus {
            id: "d1".into(),
            status: DeviceStatus::Approved,
            exception: Some(PostureException {
                reason: "iOS 16: 議会用に確認済み".into(), approver: "jisho".into()
            }),
        },
        Change::SetDeviceCert { id: "d1".into(), sha256: [1; 32], renewal: false },
        Change::SetDeviceCert { id: "d1".into(), sha256: [2; 32], renewal: true },
        Change::SetDeviceCert { id: "d1".into(), sha256: [3; 32], renewal: true },
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
            department: None,
            schedule: None,
        },
        Change::SetStop { profile: Some("kumamoto".into()), stop: Some(Stop { reason: "breach".into(), since: t }) },
        Change::SetStop { profile: None, stop: Some(Stop { reason: "all".into(), since: t }) },
        Change::SetStop { profile: None, stop: None },
        Change::AddGrant(OvertimeGrant {
            id: 0,
            grantee: Grantee::User("u2".into()),
            profile: None,
            approver: "課長".into(),
            reason: "議会".into(),
            start: t,
            end: t + Duration::hours(3),
        }),
        Change::AddGrant(OvertimeGrant {
            id: 0,
            grantee: Grantee::Department("総務課".into()),
            profile: Some("abiko".into()),
            approver: "総務課長".into(),
            reason: "議会対応".into(),
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
        Change::SetAppStage(AppStage {
            profile: "abiko".into(),
            app: 5,
            stage: Stage::Development,
            reason: "新規作成".into(),
            since: t,
        }),
        Change::SetAppStage(AppStage {
            profile: "abiko".into(),
            app: 5,
            stage: Stage::Operation,
            reason: "本格運用開始".into(),
            since: t,
        }),
        Change::AddReview(Review {
            id: 0,
            profile: "abiko".into(),
            app: 5,
            subject: Subject::Customize,
            token_sha256: None,
            reviewer: "行政管理課 山田".into(),
            reviewed_on: chrono::NaiveDate::from_ymd_opt(2026, 11, 20).unwrap(),
            note: "desktop.js 確認".into(),
        }),
        Change::AddReview(Review {
            id: 0,
            profile: "abiko".into(),
            app: 6,
            subject: Subject::ApiToken,
            token_sha256: Some("ab".repeat(32)),
            reviewer: "行政管理課 山田".into(),
            reviewed_on: chrono::NaiveDate::from_ymd_opt(2026, 11, 21).unwrap(),
            note: "文書管理連携".into(),
        }),
        Change::RemoveReview(1),
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
    assert_eq!(*loaded.apps, *state.apps);
    assert_eq!(loaded.certificates, state.certificates);
    let d1 = &state.devices["d1"];
    assert_eq!((d1.certificate, d1.previous_certificate), (Some([3; 32]), Some([2; 32])), "one renewal back is kept");
    assert!(state.device_by_certificate(&[2; 32]).is_some() && state.device_by_certificate(&[1; 32]).is_none());
    assert_eq!(state.apps.reviews.len(), 1, "the first review was withdrawn");
    assert!(!state.apps.in_development("abiko", 5), "moved into operation");
    assert!(state.apps.token_reviewed("abiko", &"ab".repeat(32)));
    assert_eq!(state.users["u1"].display_name, "議員 一（改）");
    assert!(state.users["u1"].suspended.is_some(), "updating a user keeps its flags");
    assert_eq!(state.maintenance.len(), 1);
    assert!(state.stops.global.is_none());
}

/// The key check runs for every device a bulk import registers: a table
/// scan there made importing a million devices quadratic (found by
/// `DEVICES=1 bench/run.sh`).
#[test]
fn the_revoked_key_check_uses_an_index_on_old_and_new_stores() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite3");
    let store = Store::open(&path).unwrap();
    let plan = |store: &Store| {
        let conn = store.conn.lock().unwrap();
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {REVOKED_WITH_KEY}")).unwrap();
        let rows = stmt.query_map(["k"], |r| r.get::<_, String>(3)).unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    };
    assert!(plan(&store).contains("USING INDEX revoked_devices_by_key"), "{}", plan(&store));
    // A store written by an earlier version, without the index, gets it at open.
    store.conn.lock().unwrap().execute_batch("DROP INDEX revoked_devices_by_key").unwrap();
    assert!(!plan(&store).contains("revoked_devices_by_key"));
    drop(store);
    let reopened = Store::open(&path).unwrap();
    assert!(plan(&reopened).contains("USING INDEX revoked_devices_by_key"), "{}", plan(&reopened));
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
    let actions: Vec<_> = store
        .audit(&AdminFilter { limit: 100, ..AdminFilter::default() })
        .unwrap()
        .into_iter()
        .map(|r| r.entry.action)
        .collect();
    assert_eq!(actions, ["device.apply", "user.put"], "only the committed changes are audited");
}

#[test]
fn an_admin_record_without_a_reason_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    let mut blank = entry("user.put");
    blank.reason = "  ".into();
    let change = Change::PutUser {
        id: "u".into(),
        display_name: "u".into(),
        role: "staff".into(),
        profiles: vec![],
        department: None,
        schedule: None,
    };
    assert!(matches!(store.commit(change, &blank), Err(StoreError::NoReason(_))));
    assert!(matches!(store.record(&blank), Err(StoreError::NoReason(_))));
    assert!(store.load().unwrap().users.is_empty(), "the change was not written");
    assert!(store.audit(&AdminFilter { limit: 10, ..AdminFilter::default() }).unwrap().is_empty(), "nor its record");
}

#[test]
fn an_approver_is_kept_with_its_record_and_old_stores_gain_the_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE admin_audit (id INTEGER PRIMARY KEY, time TEXT NOT NULL, actor TEXT NOT NULL,
             action TEXT NOT NULL, target TEXT NOT NULL, reason TEXT NOT NULL, source TEXT NOT NULL);",
        )
        .unwrap();
    }
    let store = Store::open(&path).unwrap();
    let mut e = entry("rules.reload");
    e.approver = Some("統括情報責任者 山田".into());
    store.record(&e).unwrap();
    let got =
        store.audit(&AdminFilter { action: Some("rules.reload".into()), limit: 1, ..AdminFilter::default() }).unwrap();
    assert_eq!(got[0].entry.approver.as_deref(), Some("統括情報責任者 山田"));
    assert_eq!(got[0].entry.reason, "r");
}

#[test]
fn a_store_from_before_department_grants_keeps_its_grants_and_gains_the_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE users (id TEXT PRIMARY KEY, display_name TEXT NOT NULL, role TEXT NOT NULL, profiles TEXT NOT NULL);
             CREATE TABLE overtime (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL REFERENCES users(id), profile TEXT,
                 approver TEXT NOT NULL, reason TEXT NOT NULL, start TEXT NOT NULL, end TEXT NOT NULL);
             INSERT INTO users VALUES ('u1', 'u', 'staff', '[]');
             INSERT INTO overtime VALUES (7, 'u1', NULL, '課長', '議会', '2026-11-24T09:00:00+00:00', '2026-11-24T12:00:00+00:00');",
        )
        .unwrap();
    }
    let store = Store::open(&path).unwrap();
    let state = store.load().unwrap();
    let grants = &state.overtime[&Grantee::User("u1".into())];
    assert_eq!((grants[0].id, grants[0].approver.as_str()), (7, "課長"));
    assert_eq!(state.users["u1"].department, None);
    let grant = OvertimeGrant {
        id: 0,
        grantee: Grantee::Department("総務課".into()),
        profile: None,
        approver: "総務課長".into(),
        reason: "r".into(),
        start: Utc::now(),
        end: Utc::now() + Duration::hours(1),
    };
    let Change::AddGrant(stored) = store.commit(Change::AddGrant(grant), &entry("overtime.grant")).unwrap() else {
        unreachable!()
    };
    assert_eq!(stored.id, 8, "ids continue after the rebuilt table's");
    drop(store);
    let again = Store::open(&path).unwrap().load().unwrap();
    assert_eq!(again.overtime.len(), 2, "reopening a migrated store changes nothing");
}

#[test]
fn every_change_round_trips_through_the_change_log_format() {
    let mut all = changes();
    all.push(Change::FileDevice(Box::new(Device { certificate: Some([7; 32]), ..device("d2", "u2") })));
    all.push(Change::ImportDevices(vec![device("d3", "u1"), device("d4", "u2")]));
    all.push(Change::SetDeviceCert { id: "d1".into(), sha256: [9; 32], renewal: true });
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
    let tampered = r#"{"file_device":{"id":"x","owner":"u","kind":"pc","ownership":"issued","os":"windows","os_version":"10","security_software":null,"key":{"alg":"EdDSA","public_key":"not a key"},"status":"pending","certificate":null,"previous_certificate":null,"exception":null}}"#;
    assert!(serde_json::from_str::<Change>(tampered).is_err(), "a key that does not parse is refused");
}
