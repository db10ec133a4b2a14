//! Following the change log from a position: the pure decision of what to
//! apply, or that the whole state must be read again.

use super::*;
use crate::control::store::FlagKind;

fn entry(seq: i64, tag: i64, change: Option<&Change>) -> Entry {
    Entry { seq, tag, change: change.map(|c| serde_json::to_string(c).unwrap()) }
}

fn flag(user: &str) -> Change {
    Change::SetFlag { user: user.into(), kind: FlagKind::Suspended, flag: None }
}

#[test]
fn the_entries_after_the_applied_one_are_applied_in_order() {
    let (a, b) = (flag("a"), flag("b"));
    let at = Position { seq: 7, tag: 70 };
    let entries = [entry(7, 70, None), entry(8, 80, Some(&a)), entry(9, 90, Some(&b))];
    let (changes, now) = follow(at, &entries).unwrap();
    assert_eq!(changes, [a, b]);
    assert_eq!(now, Position { seq: 9, tag: 90 });
    assert_eq!(follow(at, &entries[..1]).unwrap(), (vec![], at), "nothing new");
}

#[test]
fn from_the_empty_log_the_first_entry_is_number_one() {
    let a = flag("a");
    let start = Position::default();
    assert_eq!(follow(start, &[entry(1, 10, Some(&a))]).unwrap().0, std::slice::from_ref(&a));
    assert!(follow(start, &[entry(2, 20, Some(&a))]).is_none(), "entry 1 was pruned: read the whole state");
}

#[test]
fn a_history_that_cannot_be_followed_asks_for_the_whole_state() {
    let a = flag("a");
    let at = Position { seq: 7, tag: 70 };
    let cases: [(&str, Vec<Entry>); 6] = [
        ("the applied entry was pruned", vec![entry(8, 80, Some(&a))]),
        ("nothing at or after the applied entry (went back in time)", vec![]),
        (
            "another entry 7 (a standby promoted without it, then written)",
            vec![entry(7, 71, None), entry(8, 80, Some(&a))],
        ),
        ("a gap", vec![entry(7, 70, None), entry(9, 90, Some(&a))]),
        ("an entry saying to (store copy)", vec![entry(7, 70, None), entry(8, 80, None)]),
        (
            "an entry this version cannot read",
            vec![entry(7, 70, None), Entry { seq: 8, tag: 80, change: Some(r#"{"new_kind":{}}"#.into()) }],
        ),
    ];
    for (what, entries) in cases {
        assert!(follow(at, &entries).is_none(), "{what}");
    }
}

#[test]
fn a_bulk_import_is_logged_in_chunks_that_apply_to_the_same_state() {
    use crate::control::store::apply;
    use sekisho_policy::attestation::SigningKey;
    use sekisho_policy::device::{DeviceKind, DeviceStatus, Os, Ownership};
    use sekisho_policy::state::Device;
    let key = SigningKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[9; 32])).public();
    let devices: Vec<Device> = (0..2500)
        .map(|i| Device {
            id: format!("d{i}"),
            owner: "u".into(),
            kind: DeviceKind::Pc,
            ownership: Ownership::Issued,
            os: Os::Windows,
            os_version: "10.0.22631".parse().unwrap(),
            security_software: None,
            key: key.clone(),
            status: DeviceStatus::Approved,
            certificate: None,
            previous_certificate: None,
            exception: None,
        })
        .collect();
    let import = Change::ImportDevices(devices);
    let entries = crate::control::postgres::write::log_entries(&import);
    assert_eq!(entries.len(), 3, "1000 devices an entry");
    let mut chunked = State::default();
    for e in &entries {
        let json = serde_json::to_string(&**e).unwrap();
        chunked = apply(&chunked, &serde_json::from_str(&json).unwrap());
    }
    assert_eq!(chunked.devices, apply(&State::default(), &import).devices);
}

#[test]
fn a_notification_carries_a_single_entry_whole_and_anything_else_as_a_number() {
    use crate::control::postgres::{carried, write::notification};
    let before = Position { seq: 41, tag: 410 };
    let after = Position { seq: 42, tag: 420 };
    let change = flag("a");
    let json = serde_json::to_string(&change).unwrap();
    let payload = notification(before, &[(after, json.clone())]);
    let got = carried(&payload).unwrap();
    assert_eq!((got.before, got.after, got.change), (before, after, change));
    let two = [(after, json.clone()), (Position { seq: 43, tag: 430 }, json)];
    assert_eq!(notification(before, &two), "43", "a chunked import: the number only");
    let big = (after, format!("\"{}\"", "x".repeat(8000)));
    assert_eq!(notification(before, std::slice::from_ref(&big)), "42", "over the payload limit: the number only");
    for junk in ["42", "", "42 1 2 {not json", "a b c {}"] {
        assert!(carried(junk).is_none(), "{junk:?}");
    }
}
