#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failed step is a failed test")]

use std::borrow::Cow;

use super::*;
use crate::config::AuditConfig;
use crate::control::audit::{AuditLog, AuditSettings};

fn settings(dir: &Path, rotate_bytes: u64, compress: bool) -> AuditSettings {
    AuditSettings {
        path: dir.join("audit.jsonl"),
        replica: "gw-a".into(),
        keep: AuditConfig {
            rotate_bytes,
            rotate_daily: true,
            retention_days: None,
            compress,
            signing_key: dir.join("audit-signing.key"),
            checkpoint_secs: 3600,
        },
    }
}

fn record(i: usize, user: &str) -> RequestRecord<'static> {
    RequestRecord {
        time: format!("2026-11-22T10:{:02}:{:02}+09:00", (i / 60) % 60, i % 60),
        request_id: Cow::Owned(format!("r{i}")),
        user: Some(Cow::Owned(user.to_owned())),
        device: Some(Cow::Owned(format!("{user}-pc"))),
        client: Some("10.0.0.1".parse().unwrap()),
        host: Cow::Borrowed("abiko.cybozu.com"),
        method: Cow::Borrowed("GET"),
        path: Cow::Owned(format!("/k/{i}")),
        decision: Cow::Borrowed(if i.is_multiple_of(3) { "deny" } else { "allow" }),
        reason: i.is_multiple_of(3).then_some(Cow::Borrowed("outside_hours")),
        rule: None,
        profile: Some(Cow::Borrowed("abiko")),
        status: 200,
        upstream_status: None,
        latency_ms: 1.5,
    }
}

/// Writes `n` records through the real writer and closes it.
fn write(s: &AuditSettings, from: usize, n: usize) {
    let log = AuditLog::open(s.clone()).unwrap();
    for i in from..from + n {
        log.record(&record(i, if i.is_multiple_of(2) { "tanaka" } else { "suzuki" }));
    }
    log.close();
}

fn files(dir: &Path) -> Vec<PathBuf> {
    discover(&dir.join("audit.jsonl")).unwrap()
}

fn data_files(dir: &Path) -> Vec<PathBuf> {
    files(dir).into_iter().filter(|p| !is_digest(p)).collect()
}

fn problems(dir: &Path) -> Vec<Problem> {
    verify(&files(dir), None).unwrap().problems
}

fn edit(path: &Path, f: impl FnOnce(&mut Vec<String>)) {
    let mut lines: Vec<String> = std::fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect();
    f(&mut lines);
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn an_untouched_trail_verifies_across_rotations_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 4096, false);
    write(&s, 0, 60);
    write(&s, 60, 60); // a restart continues the chain
    assert!(data_files(dir.path()).len() >= 3, "{:?}", files(dir.path()));
    let report = verify(&files(dir.path()), None).unwrap();
    assert_eq!(report.problems, vec![], "{report:?}");
    assert!(report.digests >= 2 && report.checkpoints >= 3, "{report:?}");
    let mut out = Vec::new();
    assert_eq!(query(&files(dir.path()), &Filter::default(), false, &mut out).unwrap(), 120);
    // Every request once, in order.
    let ids: Vec<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Stored>(l).unwrap().record.request_id.into_owned())
        .collect();
    assert_eq!(ids, (0..120).map(|i| format!("r{i}")).collect::<Vec<_>>());
}

#[test]
fn a_changed_line_is_named() {
    let dir = tempfile::tempdir().unwrap();
    write(&settings(dir.path(), 1 << 20, false), 0, 10);
    let active = dir.path().join("audit.jsonl");
    edit(&active, |l| l[4] = l[4].replace("/k/3", "/k/9"));
    let p = problems(dir.path());
    assert_eq!((p[0].line, p.len()), (5, 1), "{p:?}");
    assert!(p[0].what.contains("changed"), "{p:?}");
}

#[test]
fn a_removed_line_is_named_at_the_line_after_the_gap() {
    let dir = tempfile::tempdir().unwrap();
    write(&settings(dir.path(), 1 << 20, false), 0, 10);
    edit(&dir.path().join("audit.jsonl"), |l| drop(l.remove(3)));
    let p = problems(dir.path());
    assert_eq!(p[0].line, 4, "{p:?}");
    assert!(p[0].what.contains("removed"), "{p:?}");
}

#[test]
fn an_inserted_line_is_named() {
    let dir = tempfile::tempdir().unwrap();
    write(&settings(dir.path(), 1 << 20, false), 0, 10);
    // A copy of line 3, and a forged line with the next seq.
    edit(&dir.path().join("audit.jsonl"), |l| {
        let copy = l[2].clone();
        l.insert(6, copy);
    });
    let p = problems(dir.path());
    assert_eq!(p[0].line, 7, "{p:?}");
    assert!(p[0].what.contains("inserted"), "{p:?}");

    let dir = tempfile::tempdir().unwrap();
    write(&settings(dir.path(), 1 << 20, false), 0, 10);
    edit(&dir.path().join("audit.jsonl"), |l| {
        let (forged, _) = chain::seal(&[9; 32], 5, "gw-a", &serde_json::to_string(&record(99, "x")).unwrap());
        l.insert(5, forged);
    });
    let p = problems(dir.path());
    assert_eq!(p[0].line, 6, "{p:?}");
    assert!(p[0].what.contains("inserted"), "{p:?}");
}

#[test]
fn reordered_lines_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    write(&settings(dir.path(), 1 << 20, false), 0, 10);
    edit(&dir.path().join("audit.jsonl"), |l| l.swap(4, 5));
    let p = problems(dir.path());
    assert_eq!(p[0].line, 5, "{p:?}");
}

#[test]
fn a_removed_header_or_rewritten_chain_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    write(&settings(dir.path(), 1 << 20, false), 0, 10);
    edit(&dir.path().join("audit.jsonl"), |l| drop(l.remove(0)));
    assert!(problems(dir.path())[0].what.contains("header"));

    // Re-sealing every line after an edit keeps the chain whole, but the
    // signed checkpoint at the end no longer matches.
    let dir = tempfile::tempdir().unwrap();
    write(&settings(dir.path(), 1 << 20, false), 0, 10);
    edit(&dir.path().join("audit.jsonl"), |lines| {
        let mut prev = chain::GENESIS;
        for (i, l) in lines.iter_mut().enumerate() {
            let opened = chain::open(l).unwrap();
            let mut v: serde_json::Value = serde_json::from_str(&opened.content).unwrap();
            if i == 3 {
                v["path"] = "/k/forged".into();
            }
            if let Some(head) = v.get_mut("head") {
                *head = crate::config::hex(&prev).into();
            }
            let seq = v["seq"].as_u64().unwrap();
            let obj = v.as_object_mut().unwrap();
            obj.remove("seq");
            obj.remove("replica");
            let (line, link) = chain::seal(&prev, seq, "gw-a", &serde_json::to_string(obj).unwrap());
            (*l, prev) = (line, link);
        }
    });
    let own = chain::load_or_create_key(&dir.path().join("audit-signing.key")).unwrap().verifying_key();
    let p = verify(&files(dir.path()), Some(&own)).unwrap().problems;
    assert!(p.iter().any(|p| p.what.contains("checkpoint's signature")), "{p:?}");
}

#[test]
fn a_rotated_file_must_match_its_signed_digest_and_follow_the_file_before() {
    let dir = tempfile::tempdir().unwrap();
    write(&settings(dir.path(), 4096, true), 0, 80);
    let data = data_files(dir.path());
    assert!(data.iter().filter(|p| p.to_string_lossy().ends_with(".gz")).count() >= 2, "{data:?}");
    assert_eq!(problems(dir.path()), vec![]);
    // Query reads compressed files.
    let mut out = Vec::new();
    let f = Filter { user: Some("tanaka".into()), reason: Some("outside_hours".into()), ..Filter::default() };
    assert_eq!(query(&files(dir.path()), &f, false, &mut out).unwrap(), 14); // i even and divisible by 3, i < 80

    // A whole rotated file removed: the next file does not continue.
    let rotated: Vec<_> = data.iter().filter(|p| p.to_string_lossy().ends_with(".gz")).collect();
    let removed = rotated[1].clone();
    std::fs::rename(&removed, dir.path().join("elsewhere.gz")).unwrap();
    let mut given = files(dir.path());
    given.retain(|p| !is_digest(p));
    let p = verify(&given, None).unwrap().problems;
    assert!(p.iter().any(|p| p.what.contains("does not continue")), "{p:?}");
    std::fs::rename(dir.path().join("elsewhere.gz"), &removed).unwrap();

    // A rotated file rewritten whole (new content, valid chain of its own) no longer matches its digest.
    let plain = dir.path().join("plain.jsonl");
    let text: String = lines(&removed).unwrap().map(|l| l.unwrap() + "\n").collect();
    std::fs::write(&plain, text.replacen("/k/", "/x/", 1)).unwrap();
    std::fs::remove_file(&removed).unwrap();
    std::fs::rename(&plain, removed.with_extension("")).unwrap();
    let p = problems(dir.path());
    assert!(p.iter().any(|p| p.what.contains("digest") || p.what.contains("changed")), "{p:?}");
}

#[test]
fn a_pinned_key_must_have_signed_everything() {
    let dir = tempfile::tempdir().unwrap();
    write(&settings(dir.path(), 4096, false), 0, 40);
    let own = chain::load_or_create_key(&dir.path().join("audit-signing.key")).unwrap().verifying_key();
    assert_eq!(verify(&files(dir.path()), Some(&own)).unwrap().problems, vec![]);
    let other = ed25519_dalek::SigningKey::from_bytes(&[1; 32]).verifying_key();
    let p = verify(&files(dir.path()), Some(&other)).unwrap().problems;
    assert!(p.iter().any(|p| p.what.contains("signature")), "{p:?}");
}

#[test]
fn a_trail_written_before_the_chain_is_moved_aside_not_continued() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 1 << 20, false);
    std::fs::write(&s.path, serde_json::to_string(&record(0, "old")).unwrap() + "\n").unwrap();
    write(&s, 1, 3);
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().any(|n| n.starts_with("audit.unchained-")), "{names:?}");
    assert_eq!(problems(dir.path()), vec![]);
}

#[test]
fn csv_cells_are_quoted_and_never_formulas() {
    assert_eq!(csv_cell("plain"), "plain");
    assert_eq!(csv_cell("a,b"), "\"a,b\"");
    assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
    assert_eq!(csv_cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
    assert_eq!(csv_cell("line\nbreak"), "\"line\nbreak\"");
    let dir = tempfile::tempdir().unwrap();
    write(&settings(dir.path(), 1 << 20, false), 0, 4);
    let mut out = Vec::new();
    query(&files(dir.path()), &Filter { user: Some("tanaka".into()), ..Filter::default() }, true, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows[0], CSV_COLUMNS.join(","));
    assert_eq!(rows.len(), 3, "{text}");
    assert!(rows[1].starts_with("2026-11-22T10:00:00+09:00,gw-a,1,r0,tanaka,tanaka-pc,10.0.0.1,"), "{text}");
}

proptest::proptest! {
    /// Whatever a trail file holds (it is untrusted input to an auditor),
    /// `verify` answers with problems and never panics; garbage never passes.
    #[test]
    fn arbitrary_files_never_panic_and_never_pass(lines in proptest::collection::vec(".{0,120}", 1..8)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, lines.join("\n")).unwrap();
        let report = verify(&[path], None).unwrap();
        proptest::prop_assert!(!report.problems.is_empty());
    }

    /// SNTP answers from the network: any bytes are an error or an offset, never a panic.
    #[test]
    fn arbitrary_sntp_answers_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), t1 in 0u64.., t4 in 0u64..) {
        let _ = crate::sntp::read_answer("x", &bytes, t1, t4);
    }
}
