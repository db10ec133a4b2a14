use std::borrow::Cow;
use std::io::Write as _;

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
