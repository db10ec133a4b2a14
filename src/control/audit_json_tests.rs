#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failed step is a failed test")]

use std::borrow::Cow;
use std::net::IpAddr;

use proptest::prelude::*;

use super::*;

fn record() -> RequestRecord<'static> {
    RequestRecord {
        time: "2026-12-01T17:34:56.000123+09:00".into(),
        request_id: Cow::Borrowed("1a2b3c4d00-1f"),
        user: Some(Cow::Borrowed("tanaka")),
        device: Some(Cow::Borrowed("tanaka-pc")),
        client: Some("10.0.0.1".parse().unwrap()),
        host: Cow::Borrowed("abiko.cybozu.com"),
        method: Cow::Borrowed("GET"),
        path: Cow::Borrowed("/k/v1/record.json"),
        decision: Cow::Borrowed("allow"),
        reason: None,
        rule: None,
        profile: Some(Cow::Borrowed("abiko")),
        status: 200,
        upstream_status: Some(200),
        latency_ms: 1.5,
    }
}

#[test]
fn a_plain_record_is_written_as_serde_writes_it() {
    let r = record();
    assert_eq!(to_line(&r), serde_json::to_string(&r).unwrap());
}

#[test]
fn text_that_needs_escaping_is_escaped_and_cannot_forge_a_field() {
    let mut r = record();
    r.path = Cow::Borrowed("/a\",\"decision\":\"allow\\\n\u{1}\u{7f}日本");
    r.user = None;
    r.upstream_status = None;
    r.client = Some("2001:db8::1".parse().unwrap());
    let line = to_line(&r);
    assert_eq!(line, serde_json::to_string(&r).unwrap());
    let back: RequestRecord<'_> = serde_json::from_str(&line).unwrap();
    assert_eq!(back.path, r.path);
    assert_eq!(back.decision, "allow");
}

#[test]
fn latencies_are_written_as_serde_writes_them() {
    for micros in [0u64, 1, 10, 100, 999, 1000, 1001, 1010, 1100, 12_345, 999_999_999, 86_400_000_000] {
        let ms = micros as f64 / 1000.0;
        let mut out = String::new();
        float(&mut out, ms);
        assert_eq!(out, serde_json::to_string(&ms).unwrap(), "{micros} µs");
    }
    // Values the gateway never writes still come out as serde writes them.
    for odd in [f64::NAN, f64::INFINITY, -1.0, 0.0001, 1e20, 1.23456] {
        let mut out = String::new();
        float(&mut out, odd);
        assert_eq!(out, serde_json::to_string(&odd).unwrap(), "{odd}");
    }
}

#[test]
fn the_time_is_chronos_rfc3339_in_japan_standard_time() {
    let jst = chrono::FixedOffset::east_opt(9 * 3600).unwrap();
    for (secs, nanos) in [(0, 0), (1_764_580_496, 123_456_789), (1_764_580_496, 999_999_999), (1_767_193_200, 5_000)] {
        let t = chrono::DateTime::from_timestamp(secs, nanos).unwrap();
        let want = t.with_timezone(&jst).to_rfc3339_opts(chrono::SecondsFormat::Micros, false);
        assert_eq!(jst_time(t), want);
    }
}

fn any_ip() -> impl Strategy<Value = Option<IpAddr>> {
    prop_oneof![
        Just(None),
        any::<[u8; 4]>().prop_map(|o| Some(IpAddr::from(o))),
        any::<[u8; 16]>().prop_map(|o| Some(IpAddr::from(o))),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[a-zA-Z0-9/._~-]{0,40}", 1 => any::<String>()]
}

proptest! {
    #[test]
    fn every_record_is_written_byte_for_byte_as_serde_writes_it(
        strings in proptest::collection::vec(text(), 7),
        optional in proptest::collection::vec(proptest::option::of(text()), 5),
        client in any_ip(),
        status in any::<u16>(),
        upstream_status in proptest::option::of(any::<u16>()),
        micros in 0u64..1_000_000_000_000,
    ) {
        let r = RequestRecord {
            time: strings[0].clone(),
            request_id: Cow::Borrowed(&strings[1]),
            user: optional[0].as_deref().map(Cow::Borrowed),
            device: optional[1].as_deref().map(Cow::Borrowed),
            client,
            host: Cow::Borrowed(&strings[2]),
            method: Cow::Borrowed(&strings[3]),
            path: Cow::Borrowed(&strings[4]),
            decision: Cow::Borrowed(&strings[5]),
            reason: optional[2].as_deref().map(Cow::Borrowed),
            rule: optional[3].as_deref().map(Cow::Borrowed),
            profile: optional[4].as_deref().map(Cow::Borrowed),
            status,
            upstream_status,
            latency_ms: micros as f64 / 1000.0,
        };
        prop_assert_eq!(to_line(&r), serde_json::to_string(&r).unwrap());
    }

    #[test]
    fn every_time_is_written_as_chrono_writes_it(secs in -1_000_000_000i64..10_000_000_000, nanos in 0u32..1_000_000_000) {
        let jst = chrono::FixedOffset::east_opt(9 * 3600).unwrap();
        let t = chrono::DateTime::from_timestamp(secs, nanos).unwrap();
        prop_assert_eq!(jst_time(t), t.with_timezone(&jst).to_rfc3339_opts(chrono::SecondsFormat::Micros, false));
    }
}
