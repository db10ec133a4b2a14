#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failed step is a failed test")]

use super::*;
use proptest::prelude::*;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

#[test]
fn a_sealed_line_opens_to_the_content_its_chain_covers() {
    let (line, link1) = seal(&GENESIS, 0, "gw-1", r#"{"a":1}"#);
    assert_eq!(line.len(), r#"{"a":1,"replica":"gw-1","seq":0}"#.len() + SUFFIX_LEN - 1);
    let opened = open(&line).unwrap();
    assert_eq!(opened.content, r#"{"a":1,"replica":"gw-1","seq":0}"#);
    assert_eq!(opened.chain, link1);
    assert_eq!(link(&GENESIS, opened.content.as_bytes()), link1);
    // The next line depends on the one before it.
    let (_, after_1) = seal(&link1, 1, "gw-1", r#"{"a":2}"#);
    let (_, after_other) = seal(&GENESIS, 1, "gw-1", r#"{"a":2}"#);
    assert_ne!(after_1, after_other);
}

#[test]
fn lines_without_a_chain_value_do_not_open() {
    for line in ["", "{}", r#"{"a":1}"#, r#"{"a":1,"chain":"zz"}"#, &format!(r#"{{"chain":"{}"}}"#, "0".repeat(63))] {
        assert!(open(line).is_none(), "{line}");
    }
}

#[test]
fn a_digest_verifies_only_unchanged_and_under_its_key() {
    let body = DigestBody {
        format: DIGEST_FORMAT.into(),
        file: "audit-1.jsonl.gz".into(),
        replica: "gw".into(),
        lines: 3,
        first_seq: 0,
        last_seq: 2,
        prev_chain: crate::config::hex(&GENESIS),
        last_chain: crate::config::hex(&[1; 32]),
        content_sha256: crate::config::hex(&[2; 32]),
        closed: "2026-11-22T00:00:00+09:00".into(),
        previous_signature: None,
        public_key: public_b64(&key().verifying_key()),
    };
    let d = Digest::sign(&key(), body);
    assert!(d.verify(&key().verifying_key()));
    assert_eq!(d.embedded_key(), Some(key().verifying_key()));
    let text = serde_json::to_string(&d).unwrap();
    let back: Digest = serde_json::from_str(&text).unwrap();
    assert!(back.verify(&key().verifying_key()));
    let mut changed = back.clone();
    changed.body.lines = 2;
    assert!(!changed.verify(&key().verifying_key()));
    assert!(!back.verify(&SigningKey::from_bytes(&[8; 32]).verifying_key()));
}

#[test]
fn a_checkpoint_signs_the_head_it_names() {
    let line = checkpoint(&key(), "t", &[3; 32]);
    let meta: Meta = serde_json::from_str(&line).unwrap();
    let msg = checkpoint_message("t", meta.head.as_deref().unwrap());
    assert!(verify_b64(&key().verifying_key(), msg.as_bytes(), meta.sig.as_deref().unwrap()));
    assert!(!verify_b64(
        &key().verifying_key(),
        checkpoint_message("t2", &meta.head.unwrap()).as_bytes(),
        &meta.sig.unwrap()
    ));
}

#[test]
fn every_admin_field_is_covered_by_its_hash() {
    let fields = ["2026-11-22T02:00:00+00:00", "soumu", "user.suspend", "tanaka", "端末紛失", "10.0.0.5"];
    let base = admin_link(&GENESIS, 1, fields, None);
    assert_ne!(admin_link(&GENESIS, 2, fields, None), base);
    assert_ne!(admin_link(&[1; 32], 1, fields, None), base);
    for i in 0..fields.len() {
        let mut changed = fields;
        changed[i] = "x";
        assert_ne!(admin_link(&GENESIS, 1, changed, None), base, "field {i}");
    }
    assert_ne!(admin_link(&GENESIS, 1, fields, Some("kacho")), base, "the approver");
}

#[test]
fn the_signing_key_is_created_private_and_read_back() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k/audit-signing.key");
    let a = load_or_create_key(&path).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let b = load_or_create_key(&path).unwrap();
    assert_eq!(a.verifying_key(), b.verifying_key());
    let pem = dir.path().join("pub.pem");
    std::fs::write(&pem, public_pem(&a.verifying_key())).unwrap();
    assert_eq!(read_public_pem(&pem).unwrap(), a.verifying_key());
    std::fs::write(&path, "not a key").unwrap();
    assert!(load_or_create_key(&path).unwrap_err().to_string().contains("not an Ed25519 key"));
}

proptest! {
    /// Any record text seals into one line that opens to what its chain covers.
    #[test]
    fn sealing_round_trips(text in ".{0,200}", seq in 0u64..u64::MAX, replica in "[a-z0-9.-]{1,20}") {
        let object = serde_json::json!({"path": text}).to_string();
        let (line, l) = seal(&GENESIS, seq, &replica, &object);
        prop_assert!(!line.contains('\n'));
        let opened = open(&line).unwrap();
        prop_assert_eq!(link(&GENESIS, opened.content.as_bytes()), l);
        let meta: Meta = serde_json::from_str(&opened.content).unwrap();
        prop_assert_eq!(meta.seq, Some(seq));
    }

    /// The replica is written as serde_json writes it, whatever its characters.
    #[test]
    fn the_replica_is_quoted_as_json(replica in prop_oneof![".{0,24}", "[ -~]{0,24}"]) {
        let (line, _) = seal(&GENESIS, 7, &replica, r#"{"a":1}"#);
        let expected = format!("\"replica\":{},", serde_json::to_string(&replica).unwrap());
        prop_assert!(line.contains(&expected), "{} lacks {}", line, expected);
    }
}
