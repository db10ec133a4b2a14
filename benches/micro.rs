//! Micro benches of the request path's pieces (issue 4): `decide()` over a
//! realistic state, token verification cold and cached, the My Number scan
//! per MiB, the in-memory half of an admin commit, and the admin token
//! check (right, wrong and nearly right tokens). Run with
//! `cargo bench --bench micro`; compare against the targets in
//! bench/README.md (decide and a cached token check under 1 µs each).

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sekisho::control::store::{apply, Change, FlagKind};
use sekisho::shared::TokenCache;
use sekisho_policy::attestation::{mint, verify, Claims, SigningKey};
use sekisho_policy::device::{DeviceKind, DeviceStatus, Os, Ownership};
use sekisho_policy::engine::{decide, Attestation, ClientAddr, RequestFacts};
use sekisho_policy::mynumber::Scanner;
use sekisho_policy::state::{Device, Flag, SecuritySoftware, State, User};
use sekisho_policy::Rules;

#[path = "../policy/tests/corpus/mod.rs"]
mod corpus;

const USERS: usize = 10_000;
/// A prefecture-wide deployment: a million registered devices.
const BIG: usize = 500_000;

fn rules() -> Rules {
    let files = [
        ("abiko-kintone.toml", include_str!("../rules/abiko-kintone.toml").replace("2023-05-31", "2030-03-31")),
        ("kumamoto.toml", include_str!("../rules/kumamoto-council-lineworks.toml").to_owned()),
        ("demo.toml", include_str!("../rules/demo.toml").to_owned()),
    ];
    Rules::from_sources(files.iter().map(|(f, t)| (*f, t.as_str()))).unwrap_or_default()
}

/// `n` users with two devices each; user 0's first device is `key`'s.
fn state(key: &SigningKey, n: usize) -> State {
    let mut users = HashMap::with_capacity(n);
    let mut devices = HashMap::with_capacity(n * 2);
    for u in 0..n {
        let id = format!("user{u}");
        users.insert(
            id.clone(),
            User {
                id: id.clone(),
                display_name: id.clone(),
                role: "staff".into(),
                profiles: vec!["abiko-kintone".into()],
                suspended: None,
                restricted: None,
                department: None,
                schedule: None,
            },
        );
        for d in 0..2 {
            let device = Device {
                id: format!("{id}-dev{d}"),
                owner: id.clone(),
                kind: DeviceKind::Pc,
                ownership: Ownership::Issued,
                os: Os::Windows,
                os_version: "10.0.22631".parse().unwrap_or_else(|_| unreachable!()),
                security_software: None,
                key: key.public(),
                status: DeviceStatus::Approved,
                certificate: None,
                exception: None,
                previous_certificate: None,
            };
            devices.insert(device.id.clone(), device);
        }
    }
    let users: Vec<_> = users.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
    let devices: Vec<_> = devices.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
    State { users: users.into(), devices: devices.into(), ..State::default() }
}

fn token(key: &SigningKey, now: chrono::DateTime<Utc>) -> String {
    let claims = Claims {
        sub: "user0".into(),
        aud: "abiko.cybozu.com".into(),
        iat: now.timestamp(),
        exp: now.timestamp() + 300,
        jti: "j".into(),
        os: Os::Windows,
        os_version: "10.0.22631".parse().unwrap_or_else(|_| unreachable!()),
        security_software: Some(SecuritySoftware { name: "Defender".into(), updated: now.date_naive() }),
    };
    mint(key, "user0-dev0", &claims)
}

fn benches(c: &mut Criterion) {
    let ed = SigningKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[3; 32]));
    let now = chrono_tz::Asia::Tokyo.with_ymd_and_hms(2026, 11, 24, 10, 0, 0).unwrap().with_timezone(&Utc);
    let rules = rules();
    let state = state(&ed, USERS);
    let t = token(&ed, now);
    let verified = verify(&t, &state.devices).unwrap_or_else(|_| unreachable!());
    let (profile, route) = rules.route("abiko.cybozu.com").unwrap_or_else(|| unreachable!());
    let facts = RequestFacts {
        profile,
        route,
        method: "GET",
        path: "/k/v1/records.json",
        client: ClientAddr::Known("10.1.2.3".parse().unwrap_or_else(|_| unreachable!())),
        attestation: Attestation::Verified(&verified),
        integration_tokens: None,
        login: None,
        query: None,
        content_encoding: None,
    };
    assert!(decide(&facts, &state, now).is_allow());
    c.bench_function("decide (allow, 10k users, 20k devices)", |b| {
        b.iter(|| black_box(decide(black_box(&facts), &state, now)))
    });

    c.bench_function("token verify cold (Ed25519)", |b| b.iter(|| black_box(verify(black_box(&t), &state.devices))));
    let p256 = SigningKey::P256(p256::ecdsa::SigningKey::from_slice(&[4; 32]).unwrap_or_else(|_| unreachable!()));
    let p256_state = self::state(&p256, USERS);
    let pt = token(&p256, now);
    c.bench_function("token verify cold (P-256)", |b| {
        b.iter(|| black_box(verify(black_box(&pt), &p256_state.devices)))
    });
    let cache = TokenCache::new(100_000);
    cache.verify(&t, &state);
    c.bench_function("token check cached", |b| b.iter(|| black_box(cache.verify(black_box(&t), &state))));

    // Abiko 5.(2): the corpus of ordinary business bodies (policy/tests/corpus),
    // scanned as the shipped profile scans them, against a baseline over
    // the same bytes in the same run: UTF-8 validation (std::str::from_utf8).
    let body = corpus::business_bytes(4 << 20);
    let profile = rules.profile("abiko-kintone").cloned();
    let keywords = profile.and_then(|p| p.my_number.as_ref().map(|m| m.keywords.clone()));
    // The kintone record the previous scanner was measured on (477 MiB/s):
    // text, dates and amounts, no 12-digit value.
    let record = r#"{"app":12,"record":{"title":{"value":"議会日程 2026-11-24"},"amount":{"value":"1234567"}}},"#;
    let records: Vec<u8> = record.as_bytes().iter().copied().cycle().take(4 << 20).collect();
    let mut group = c.benchmark_group("my number scan");
    group.throughput(Throughput::Bytes(body.len() as u64));
    for (name, input) in [("12-digit business corpus", &body), ("kintone records", &records)] {
        group.bench_function(format!("4 MiB {name}: baseline, UTF-8 validation"), |b| {
            b.iter(|| black_box(std::str::from_utf8(black_box(input)).is_ok()))
        });
        if let Some(keywords) = &keywords {
            group.bench_function(format!("4 MiB {name}: decode and scan"), |b| {
                b.iter(|| {
                    let mut s = Scanner::new(keywords.clone());
                    s.feed(black_box(input));
                    black_box(s.finish())
                })
            });
        }
    }
    group.finish();

    let suspend = Change::SetFlag {
        user: "user42".into(),
        kind: FlagKind::Suspended,
        flag: Some(Flag { reason: "lost".into(), since: now, until: None }),
    };
    c.bench_function("apply a suspension to a 10k-user snapshot", |b| {
        b.iter(|| black_box(apply(&state, black_box(&suspend))))
    });

    // The same with 500k users and 1M devices: the persistent maps keep an
    // admin change and a decision as cheap as at 10k.
    let big = self::state(&ed, BIG);
    c.bench_function("decide (allow, 500k users, 1M devices)", |b| {
        b.iter(|| black_box(decide(black_box(&facts), &big, now)))
    });
    c.bench_function("apply a suspension to a 500k-user snapshot", |b| {
        b.iter(|| black_box(apply(&big, black_box(&suspend))))
    });
    let revoke = Change::SetDeviceStatus { id: "user42-dev1".into(), status: DeviceStatus::Revoked, exception: None };
    c.bench_function("apply a device revocation to a 1M-device snapshot", |b| {
        b.iter(|| black_box(apply(&big, black_box(&revoke))))
    });
}

/// The audit writer thread's extra work per line (sealing into the hash
/// chain), against what the request path pays (serialising the record).
fn audit_benches(c: &mut Criterion) {
    use std::borrow::Cow;
    let record = sekisho::control::audit::RequestRecord {
        time: "2026-11-22T10:00:00.123456789+09:00".into(),
        request_id: Cow::Borrowed("1a2b3c4d-1f"),
        user: Some(Cow::Borrowed("tanaka")),
        device: Some(Cow::Borrowed("tanaka-pc")),
        client: Some("10.1.2.3".parse().unwrap_or(std::net::Ipv4Addr::LOCALHOST.into())),
        host: Cow::Borrowed("abiko.cybozu.com"),
        method: Cow::Borrowed("GET"),
        path: Cow::Borrowed("/k/v1/records.json"),
        decision: Cow::Borrowed("allow"),
        reason: None,
        rule: None,
        profile: Some(Cow::Borrowed("abiko-kintone")),
        status: 200,
        upstream_status: Some(200),
        latency_ms: 3.25,
    };
    let line = serde_json::to_string(&record).unwrap_or_default();
    // The request path writes the line with `audit_json::to_line`; serde's
    // generic writer, which it must match byte for byte, is the baseline.
    c.bench_function("audit: serialise a record (request path)", |b| {
        b.iter(|| black_box(sekisho::control::audit_json::to_line(black_box(&record))))
    });
    c.bench_function("audit: serialise a record with serde_json (baseline)", |b| {
        b.iter(|| black_box(serde_json::to_string(black_box(&record))))
    });
    let prev = [7u8; 32];
    c.bench_function("audit: seal a line into the chain (writer thread)", |b| {
        b.iter(|| black_box(sekisho::control::chain::seal(&prev, 12345, "gw-1", black_box(&line))))
    });
}

/// The admin token check (`AdminToken::matching`) for a right token, a
/// wrong one, and one that differs from a right one only in its last
/// character: the three take the same time, so timing says nothing of how
/// close a guess came. A longer guess takes longer (its SHA-256), which
/// tells the guesser only what it already knows.
fn admin_token_benches(c: &mut Criterion) {
    use sekisho::config::AdminToken;
    use sha2::Digest as _;
    let secret = |i: usize| format!("{i:02}{}", "s3kr1t-admin-token-".repeat(3));
    let tokens: Vec<AdminToken> = (0..5)
        .map(|i| AdminToken {
            name: format!("admin{i}"),
            roles: Vec::new(),
            sha256: sha2::Sha256::digest(secret(i).as_bytes()).into(),
            department: None,
        })
        .collect();
    let right = secret(2);
    let mut near = right.clone();
    near.pop();
    near.push('?');
    let wrong = "x".repeat(right.len());
    for (name, presented) in [("right", &right), ("wrong", &wrong), ("right but the last character", &near)] {
        c.bench_function(&format!("admin token: {name}"), |b| {
            b.iter(|| black_box(AdminToken::matching(black_box(&tokens), black_box(presented)).is_some()))
        });
    }
}

criterion_group!(micro, audit_benches, admin_token_benches, benches);
criterion_main!(micro);
