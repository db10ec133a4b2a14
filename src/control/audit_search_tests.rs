use std::borrow::Cow;
use std::io::Write as _;

use std::fs::File;

use super::*;

/// The `i`-th request: ten a minute from 2026-12-01 09:00 (Asia/Tokyo).
fn record(i: usize) -> RequestRecord<'static> {
    let start = DateTime::parse_from_rfc3339("2026-12-01T09:00:00+09:00").unwrap();
    RequestRecord {
        time: (start + Duration::seconds(i64::try_from(i).unwrap() * 6)).to_rfc3339(),
        request_id: Cow::Owned(format!("req-{i:06}")),
        user: Some(Cow::Owned(if i.is_multiple_of(3) { "tanaka".into() } else { "sato".into() })),
        device: Some(Cow::Owned(format!("dev-{}", i % 5))),
        client: None,
        host: Cow::Borrowed("kintone.localhost"),
        method: Cow::Borrowed("GET"),
        path: Cow::Owned(format!("/k/{i}/{}", "x".repeat(i % 300))),
        decision: Cow::Borrowed(if i.is_multiple_of(4) { "deny" } else { "allow" }),
        reason: i.is_multiple_of(4).then_some(Cow::Borrowed("outside_hours")),
        rule: None,
        profile: Some(Cow::Borrowed("kintone")),
        status: if i.is_multiple_of(4) { 403 } else { 200 },
        upstream_status: None,
        latency_ms: 1.5,
    }
}

/// A log of `n` requests, with a torn last line as a writer mid-append leaves it.
fn log(n: usize) -> (tempfile::TempDir, std::path::PathBuf, Vec<RequestRecord<'static>>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut f = std::io::BufWriter::new(File::create(&path).unwrap());
    let records: Vec<_> = (0..n).map(record).collect();
    for r in &records {
        writeln!(f, "{}", serde_json::to_string(r).unwrap()).unwrap();
    }
    write!(f, "{{\"time\":\"2026-12-01T").unwrap();
    f.flush().unwrap();
    (dir, path, records)
}

#[test]
fn every_match_comes_back_once_newest_first_across_block_boundaries() {
    let (_d, path, records) = log(12_000); // about 3 MiB: lines cross the 1 MiB blocks
    assert!(std::fs::metadata(&path).unwrap().len() > 3 * BLOCK / 2);
    let filter = RequestFilter { user: Some("tanaka".into()), ..RequestFilter::default() };
    let want: Vec<&str> = records.iter().rev().filter(|r| filter.matches(r)).map(|r| r.request_id.as_ref()).collect();
    let mut got = Vec::new();
    let mut skip = 0;
    loop {
        let page = search(&path, &filter, skip, 700, u64::MAX).unwrap();
        got.extend(page.records.iter().map(|r| r.request_id.clone().into_owned()));
        skip += page.records.len();
        assert!(!page.cut_short);
        if !page.more {
            break;
        }
    }
    assert_eq!(got, want);
}

#[test]
fn a_request_id_from_a_block_page_finds_its_one_line() {
    let (_d, path, records) = log(500);
    let filter = RequestFilter { request_id: Some("req-000123".into()), ..RequestFilter::default() };
    let found = search(&path, &filter, 0, 10, u64::MAX).unwrap();
    assert_eq!(found.records, vec![records[123].clone()]);
    assert!(!found.more);
}

#[test]
fn filters_combine_and_time_bounds_are_half_open() {
    let (_d, path, records) = log(600);
    let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap();
    let filter = RequestFilter {
        reason: Some("outside_hours".into()),
        device: Some("dev-0".into()),
        profile: Some("kintone".into()),
        decision: Some(Outcome::Deny),
        since: Some(at("2026-12-01T09:10:00+09:00")),
        until: Some(at("2026-12-01T09:20:00+09:00")),
        ..RequestFilter::default()
    };
    let found = search(&path, &filter, 0, 1000, u64::MAX).unwrap();
    let want: Vec<_> = records.iter().rev().filter(|r| filter.matches(r)).cloned().collect();
    assert!(!want.is_empty());
    assert_eq!(found.records, want);
    let (from, to) = ("2026-12-01T09:10", "2026-12-01T09:20");
    assert!(found.records.iter().all(|r| r.time.as_str() >= from && r.time.as_str() < to));
}

#[test]
fn a_search_since_a_time_stops_reading_soon_after_it_and_a_scan_limit_says_so() {
    let (_d, path, _) = log(12_000);
    // 12,000 requests run from 09:00 to 05:00 the next morning; what came
    // after 02:00 lies in the last block, so a scan limit of one block is
    // enough and is not reported as cut short.
    let late = DateTime::parse_from_rfc3339("2026-12-02T02:00:00+09:00").unwrap();
    let filter = RequestFilter { since: Some(late), ..RequestFilter::default() };
    let found = search(&path, &filter, 0, 100_000, BLOCK).unwrap();
    assert!(!found.cut_short);
    assert_eq!(found.records.len(), 12_000 - 17 * 600);
    let all = search(&path, &RequestFilter::default(), 0, 100_000, BLOCK).unwrap();
    assert!(all.cut_short, "the whole log is more than one block");
}

/// Writes `records` as one trail file, gzip when the name says so, last
/// modified `age_secs` ago.
fn trail_file(path: &std::path::Path, records: &[RequestRecord<'static>], age_secs: u64) {
    let mut text = String::new();
    for r in records {
        text.push_str(&serde_json::to_string(r).unwrap());
        text.push('\n');
    }
    if path.to_string_lossy().ends_with(".gz") {
        let mut gz = flate2::write::GzEncoder::new(File::create(path).unwrap(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).unwrap();
        gz.finish().unwrap();
    } else {
        std::fs::write(path, text).unwrap();
    }
    let when = std::time::SystemTime::now() - std::time::Duration::from_secs(age_secs);
    File::options().write(true).open(path).unwrap().set_modified(when).unwrap();
}

/// A rotated trail: two files closed (one of them gzip, compressed after
/// the other was closed, so newer by mtime), and the active one. The names'
/// stamps, not the mtimes, say which is newer.
fn rotated() -> (tempfile::TempDir, std::path::PathBuf, Vec<RequestRecord<'static>>) {
    let dir = tempfile::tempdir().unwrap();
    let all: Vec<_> = (0..900).map(record).collect();
    trail_file(&dir.path().join("audit-20261201T060000000Z.jsonl.gz"), &all[..300], 60);
    trail_file(&dir.path().join("audit-20261201T070000000Z.jsonl"), &all[300..600], 3600);
    std::fs::write(dir.path().join("audit-20261201T070000000Z.digest.json"), "{}").unwrap();
    let active = dir.path().join("audit.jsonl");
    trail_file(&active, &all[600..], 0);
    (dir, active, all)
}

#[test]
fn a_search_goes_on_into_rotated_files_plain_and_gzip_newest_first() {
    let (_d, active, all) = rotated();
    let filter = RequestFilter { user: Some("tanaka".into()), ..RequestFilter::default() };
    let want: Vec<&str> = all.iter().rev().filter(|r| filter.matches(r)).map(|r| r.request_id.as_ref()).collect();
    let mut got = Vec::new();
    let mut skip = 0;
    loop {
        let page = search(&active, &filter, skip, 45, u64::MAX).unwrap();
        got.extend(page.records.iter().map(|r| r.request_id.clone().into_owned()));
        skip += page.records.len();
        if !page.more {
            break;
        }
    }
    assert_eq!(got, want, "pages run across the active, the plain and the gzip rotated file");
}

#[test]
fn a_search_since_a_time_does_not_open_older_rotated_files_and_a_budget_spent_in_gzip_is_said() {
    let (_d, active, all) = rotated();
    // Request 450 lies in the plain rotated file; the gzip one (0..300) is older.
    let since = DateTime::parse_from_rfc3339(&all[450].time).unwrap();
    let filter = RequestFilter { since: Some(since), ..RequestFilter::default() };
    let found = search(&active, &filter, 0, 10_000, u64::MAX).unwrap();
    assert_eq!(found.records.len(), 450);
    assert_eq!(found.records.last().unwrap().request_id, all[450].request_id);
    assert!(!found.cut_short);
    let newer = std::fs::metadata(&active).unwrap().len()
        + std::fs::metadata(active.with_file_name("audit-20261201T070000000Z.jsonl")).unwrap().len();
    let short = search(&active, &RequestFilter::default(), 0, 10_000, newer + 100).unwrap();
    assert!(short.cut_short);
    assert_eq!(short.records.len(), 600, "the two plain files' lines; none half-read from the gzip one");
}
