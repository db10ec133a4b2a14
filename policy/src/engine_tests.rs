//! Table tests for every check of `decide`, plus property tests for the
//! invariants no rule change may break.

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;

use super::*;
use crate::attestation::{self, Claims, SigningKey};
use crate::device::{DeviceKind, DeviceStatus, Os, Ownership};
use crate::rules::Trusted;
use crate::state::{Flag, MaintenanceWindow, OvertimeGrant, SecuritySoftware, Stop};

const PROFILE: &str = r#"
[profile]
name = "abiko"
title = "kintone"
contact = "情報システム係"
timezone = "Asia/Tokyo"
audience = "kintone.test"
valid_from = "2022-07-12"
valid_until = "2030-03-31"

[[routes]]
host = "kintone.test"
upstream = "http://127.0.0.1:9"

[hours]
weekly = ["mon-fri 08:30-17:15"]
closed_on_holidays = true
closed_dates = ["12-29..01-03"]
overtime_grants = true

[network]
trusted = ["10.0.0.0/8", "2001:db8::/32"]
trusted_proxies = ["192.0.2.1"]

[devices]
min_os = { windows = "10.0.19045", ios = "17.0" }
security_software = { required = true, max_age_days = 7 }

[roles.staff]
kinds = ["pc"]
ownership = ["issued"]
"#;

/// Tokyo wall-clock time to a UTC instant.
fn jst(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    chrono_tz::Asia::Tokyo.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap().with_timezone(&Utc)
}

/// A Tuesday morning in Tokyo: open.
fn tuesday() -> DateTime<Utc> {
    jst(2026, 11, 24, 10, 0, 0)
}

struct World {
    profile: Profile,
    state: State,
    key: SigningKey,
}

fn world() -> World {
    let profile = Profile::parse("test.toml", PROFILE).unwrap();
    let key = SigningKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[7; 32]));
    let user = User {
        id: "u1".into(),
        display_name: "Staff One".into(),
        role: "staff".into(),
        profiles: vec!["abiko".into()],
        suspended: None,
        restricted: None,
        department: None,
        schedule: None,
    };
    let device = Device {
        id: "d1".into(),
        owner: "u1".into(),
        kind: DeviceKind::Pc,
        ownership: Ownership::Issued,
        os: Os::Windows,
        os_version: "10.0.22631".parse().unwrap(),
        security_software: None,
        key: key.public(),
        status: DeviceStatus::Approved,
        certificate: None,
        exception: None,
        previous_certificate: None,
    };
    let state = State {
        users: vec![("u1".into(), Arc::new(user))].into(),
        devices: vec![("d1".into(), Arc::new(device))].into(),
        ..State::default()
    };
    World { profile, state, key }
}

fn claims(now: DateTime<Utc>) -> Claims {
    Claims {
        sub: "u1".into(),
        aud: "kintone.test".into(),
        iat: now.timestamp() - 30,
        exp: now.timestamp() + 270,
        jti: "j1".into(),
        os: Os::Windows,
        os_version: "10.0.22631".parse().unwrap(),
        security_software: Some(SecuritySoftware {
            name: "Defender".into(),
            updated: now.with_timezone(&chrono_tz::Asia::Tokyo).date_naive(),
        }),
    }
}

impl World {
    fn decide_with(&self, claims: &Claims, method: &str, client: &str, now: DateTime<Utc>) -> Decision<'_> {
        let token = attestation::mint(&self.key, "d1", claims);
        let verified = attestation::verify(&token, &self.state.devices);
        let attestation = match &verified {
            Ok(v) => Attestation::Verified(v),
            Err(e) => Attestation::Rejected(e),
        };
        let facts = RequestFacts {
            profile: &self.profile,
            route: &self.profile.routes[0],
            method,
            path: "/k/v1/records.json",
            client: ClientAddr::Known(client.parse().unwrap()),
            attestation,
            integration_tokens: None,
            login: None,
            query: None,
            content_encoding: None,
        };
        // The decision borrows only from the state; re-create it so the
        // token locals can drop.
        match decide(&facts, &self.state, now) {
            Decision::Allow(a) => Decision::Allow(Allow {
                user: &self.state.users["u1"].id,
                device: &self.state.devices["d1"].id,
                basis: a.basis,
                inspect: a.inspect,
            }),
            Decision::Deny(d) => Decision::Deny(d),
        }
    }

    fn reason_at(&self, now: DateTime<Utc>) -> Option<DenyReason> {
        self.decide_with(&claims(now), "GET", "10.1.2.3", now).deny_reason()
    }

    fn reason_with(&self, f: impl FnOnce(&mut Claims)) -> Option<DenyReason> {
        let mut c = claims(tuesday());
        f(&mut c);
        self.decide_with(&c, "GET", "10.1.2.3", tuesday()).deny_reason()
    }

    fn device(&mut self) -> &mut Device {
        Arc::make_mut(self.state.devices.get_mut("d1").unwrap())
    }

    fn user(&mut self) -> &mut User {
        Arc::make_mut(self.state.users.get_mut("u1").unwrap())
    }

    /// Overtime for u1 on Saturday 2026-11-28, 09:00–12:00 Tokyo.
    fn grant_saturday_overtime(&mut self) {
        let grant = OvertimeGrant {
            id: 1,
            grantee: Grantee::User("u1".into()),
            profile: None,
            approver: "課長".into(),
            reason: "議会対応".into(),
            start: jst(2026, 11, 28, 9, 0, 0),
            end: jst(2026, 11, 28, 12, 0, 0),
        };
        Arc::make_mut(&mut self.state.overtime).insert(Grantee::User("u1".into()), vec![grant]);
    }
}

#[test]
fn a_registered_issued_pc_in_office_hours_passes() {
    let w = world();
    let d = w.decide_with(&claims(tuesday()), "POST", "10.1.2.3", tuesday());
    assert_eq!(d, Decision::Allow(Allow { user: "u1", device: "d1", basis: Basis::Hours, inspect: None }));
}

#[test]
fn hour_window_edges_are_start_inclusive_end_exclusive() {
    let w = world();
    let cases = [
        (jst(2026, 11, 24, 8, 29, 59), Some(DenyReason::OutsideHours)),
        (jst(2026, 11, 24, 8, 30, 0), None),
        (jst(2026, 11, 24, 17, 14, 59), None),
        (jst(2026, 11, 24, 17, 15, 0), Some(DenyReason::OutsideHours)),
        (jst(2026, 11, 28, 10, 0, 0), Some(DenyReason::OutsideHours)), // Saturday
        (jst(2026, 11, 29, 10, 0, 0), Some(DenyReason::OutsideHours)), // Sunday
    ];
    for (now, want) in cases {
        assert_eq!(w.reason_at(now), want, "at {now}");
    }
}

#[test]
fn hours_are_judged_in_tokyo_whatever_the_utc_date() {
    let w = world();
    // 23:30 UTC on Monday 2026-11-23 is already Tuesday 08:30 in Tokyo.
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 23, 30, 0).unwrap();
    assert_eq!(w.reason_at(now), None);
    // 01:00 UTC on Monday 11-23 is 10:00 on 勤労感謝の日 in Tokyo.
    let holiday = Utc.with_ymd_and_hms(2026, 11, 23, 1, 0, 0).unwrap();
    assert_eq!(w.reason_at(holiday), Some(DenyReason::Holiday));
}

#[test]
fn national_holidays_substitute_holidays_and_year_end_are_closed() {
    let w = world();
    let cases = [
        (jst(2026, 5, 6, 10, 0, 0), Some(DenyReason::Holiday)), // 振替休日 for Sunday 5/3
        (jst(2026, 9, 22, 10, 0, 0), Some(DenyReason::Holiday)), // 国民の休日
        (jst(2026, 12, 28, 10, 0, 0), None),                    // last working day
        (jst(2026, 12, 29, 10, 0, 0), Some(DenyReason::Holiday)),
        (jst(2027, 1, 4, 10, 0, 0), None),
    ];
    for (now, want) in cases {
        assert_eq!(w.reason_at(now), want, "at {now}");
    }
}

#[test]
fn a_denial_outside_hours_says_when_access_opens_next() {
    let w = world();
    let friday_evening = jst(2026, 11, 27, 18, 0, 0);
    let Decision::Deny(d) = w.decide_with(&claims(friday_evening), "GET", "10.1.2.3", friday_evening) else {
        panic!("expected a denial");
    };
    assert_eq!(d.reason, DenyReason::OutsideHours);
    assert_eq!(d.retry_at, Some(jst(2026, 11, 30, 8, 30, 0)));
    assert_eq!(d.user.as_deref(), Some("u1"));
}

#[test]
fn an_overtime_grant_opens_the_profile_only_while_it_runs() {
    let mut w = world();
    let saturday = jst(2026, 11, 28, 10, 0, 0);
    w.grant_saturday_overtime();
    let d = w.decide_with(&claims(saturday), "GET", "10.1.2.3", saturday);
    assert!(matches!(d, Decision::Allow(Allow { basis: Basis::Overtime, .. })));
    assert_eq!(w.reason_at(jst(2026, 11, 28, 12, 0, 0)), Some(DenyReason::OutsideHours));
    assert_eq!(w.reason_at(jst(2026, 11, 28, 8, 59, 59)), Some(DenyReason::OutsideHours));
}

#[test]
fn nothing_passes_outside_the_validity_period() {
    let mut w = world();
    assert_eq!(w.reason_at(jst(2030, 3, 29, 10, 0, 0)), None); // Friday
    assert_eq!(w.reason_at(jst(2030, 4, 1, 10, 0, 0)), Some(DenyReason::PolicyNotInForce));
    w.profile.valid_from = Some(chrono::NaiveDate::from_ymd_opt(2027, 1, 1).unwrap());
    assert_eq!(w.reason_at(tuesday()), Some(DenyReason::PolicyNotInForce));
}

#[test]
fn emergency_stops_and_maintenance_block_everyone() {
    let mut w = world();
    let stop = Stop { reason: "breach suspected".into(), since: tuesday() };
    Arc::make_mut(&mut w.state.stops).profiles.insert("abiko".into(), stop.clone());
    assert_eq!(w.reason_at(tuesday()), Some(DenyReason::EmergencyStop));
    Arc::make_mut(&mut w.state.stops).profiles.insert("other".into(), stop.clone());
    Arc::make_mut(&mut w.state.stops).profiles.remove("abiko");
    assert_eq!(w.reason_at(tuesday()), None);
    Arc::make_mut(&mut w.state.stops).global = Some(stop);
    assert_eq!(w.reason_at(tuesday()), Some(DenyReason::EmergencyStop));

    let mut w = world();
    let end = tuesday() + chrono::Duration::hours(1);
    let window =
        MaintenanceWindow { id: 1, profile: Some("abiko".into()), reason: "upgrade".into(), start: tuesday(), end };
    Arc::make_mut(&mut w.state.maintenance).push(window);
    let Decision::Deny(d) = w.decide_with(&claims(tuesday()), "GET", "10.1.2.3", tuesday()) else { panic!() };
    assert_eq!((d.reason, d.retry_at), (DenyReason::Maintenance, Some(end)));
    assert_eq!(w.reason_at(end), None);
}

#[test]
fn an_exchange_in_flight_ends_with_the_terms_hours_overtime_or_maintenance_that_bound_it() {
    let mut w = world();
    let still = |w: &World, now| still_allowed(&w.profile, &w.state, "u1", "d1", now).err().map(|d| d.reason);
    assert_eq!(still(&w, jst(2026, 11, 24, 17, 14, 59)), None);
    assert_eq!(still(&w, jst(2026, 11, 24, 17, 15, 0)), Some(DenyReason::OutsideHours));
    assert_eq!(still(&w, jst(2026, 11, 23, 10, 0, 0)), Some(DenyReason::Holiday), "勤労感謝の日");
    assert_eq!(still(&w, jst(2030, 3, 29, 10, 0, 0)), None);
    assert_eq!(still(&w, jst(2030, 4, 1, 10, 0, 0)), Some(DenyReason::PolicyNotInForce), "the terms ended");

    w.grant_saturday_overtime();
    assert_eq!(still(&w, jst(2026, 11, 28, 11, 59, 59)), None);
    assert_eq!(still(&w, jst(2026, 11, 28, 12, 0, 0)), Some(DenyReason::OutsideHours));

    let start = tuesday() + chrono::Duration::minutes(5);
    let window = MaintenanceWindow {
        id: 1,
        profile: None,
        reason: "upgrade".into(),
        start,
        end: start + chrono::Duration::hours(1),
    };
    Arc::make_mut(&mut w.state.maintenance).push(window);
    assert_eq!(still(&w, tuesday()), None, "announced, not begun");
    assert_eq!(still(&w, start), Some(DenyReason::Maintenance));
}

#[test]
fn only_trusted_networks_pass() {
    let w = world();
    for (addr, want) in [
        ("10.255.0.1", None),
        ("2001:db8::5", None),
        ("192.168.1.1", Some(DenyReason::UntrustedNetwork)),
        ("2001:db9::5", Some(DenyReason::UntrustedNetwork)),
    ] {
        let got = w.decide_with(&claims(tuesday()), "GET", addr, tuesday()).deny_reason();
        assert_eq!(got, want, "{addr}");
    }
}

#[test]
fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let w = world();
    let net = &w.profile.network;
    let ip = |s: &str| s.parse().unwrap();
    assert_eq!(client_addr(net, ip("10.0.0.9"), Some("1.2.3.4")), ClientAddr::Known(ip("10.0.0.9")));
    assert_eq!(client_addr(net, ip("192.0.2.1"), Some("1.2.3.4, 10.0.0.7")), ClientAddr::Known(ip("10.0.0.7")));
    assert_eq!(client_addr(net, ip("192.0.2.1"), Some("10.0.0.7, 192.0.2.1")), ClientAddr::Known(ip("10.0.0.7")));
    assert_eq!(client_addr(net, ip("192.0.2.1"), Some("nonsense")), ClientAddr::Unresolvable);
    // Some load balancers append the client's port.
    assert_eq!(client_addr(net, ip("192.0.2.1"), Some("10.0.0.7:54321")), ClientAddr::Known(ip("10.0.0.7")));
    assert_eq!(client_addr(net, ip("192.0.2.1"), Some("[2001:db8::7]:443")), ClientAddr::Known(ip("2001:db8::7")));
    assert_eq!(client_addr(net, ip("192.0.2.1"), Some("10.0.0.7:port")), ClientAddr::Unresolvable);
    assert_eq!(client_addr(net, ip("192.0.2.1"), None), ClientAddr::Known(ip("192.0.2.1")));
}

#[test]
fn a_forwarded_https_is_believed_only_from_a_trusted_proxy() {
    let w = world();
    let net = &w.profile.network;
    let ip = |s: &str| s.parse().unwrap();
    assert!(forwarded_https(net, ip("192.0.2.1"), Some("https")));
    assert!(forwarded_https(net, ip("::ffff:192.0.2.1"), Some("HTTPS")));
    assert!(forwarded_https(net, ip("192.0.2.1"), Some("http, https")), "the nearest proxy's word counts");
    assert!(!forwarded_https(net, ip("192.0.2.1"), Some("https, http")));
    assert!(!forwarded_https(net, ip("192.0.2.1"), None));
    assert!(!forwarded_https(net, ip("10.0.0.9"), Some("https")), "not a trusted proxy");
}

#[test]
fn an_ipv4_mapped_address_is_its_ipv4_address() {
    let w = world();
    let net = &w.profile.network;
    let ip = |s: &str| s.parse().unwrap();
    // An IPv4 client of a dual-stack (`[::]`) socket, directly or behind a
    // trusted proxy, and a proxy that writes mapped hops.
    assert_eq!(client_addr(net, ip("::ffff:10.0.0.9"), None), ClientAddr::Known(ip("10.0.0.9")));
    assert_eq!(client_addr(net, ip("::ffff:192.0.2.1"), Some("10.0.0.7")), ClientAddr::Known(ip("10.0.0.7")));
    assert_eq!(client_addr(net, ip("192.0.2.1"), Some("::ffff:10.0.0.7")), ClientAddr::Known(ip("10.0.0.7")));
    assert_eq!(
        client_addr(net, ip("192.0.2.1"), Some("10.0.0.7, ::ffff:192.0.2.1")),
        ClientAddr::Known(ip("10.0.0.7")),
        "a mapped trusted proxy is walked past"
    );
    for (addr, want) in [("::ffff:10.255.0.1", None), ("::ffff:192.168.1.1", Some(DenyReason::UntrustedNetwork))] {
        assert_eq!(w.decide_with(&claims(tuesday()), "GET", addr, tuesday()).deny_reason(), want, "{addr}");
    }
}

#[test]
fn any_network_is_accepted_when_the_profile_says_so() {
    let mut w = world();
    w.profile.network.trusted = Trusted::Any;
    assert_eq!(w.decide_with(&claims(tuesday()), "GET", "203.0.113.9", tuesday()).deny_reason(), None);
}

#[test]
fn token_problems_are_named() {
    let w = world();
    let t = tuesday().timestamp();
    let expired_by = |secs: i64| move |c: &mut Claims| (c.iat, c.exp) = (t - 300, t - secs);
    assert_eq!(w.reason_with(expired_by(60)), Some(DenyReason::AttestationInvalid));
    assert_eq!(w.reason_with(expired_by(59)), None, "inside the 60 s leeway");
    assert_eq!(w.reason_with(|c| c.iat = t + 59), None, "inside the 60 s leeway");
    assert_eq!(w.reason_with(|c| c.iat = t + 120), Some(DenyReason::AttestationInvalid));
    assert_eq!(w.reason_with(|c| c.exp = c.iat + 601), Some(DenyReason::AttestationInvalid));
    assert_eq!(w.reason_with(|c| c.exp = c.iat), Some(DenyReason::AttestationInvalid));
    assert_eq!(w.reason_with(|c| c.aud = "other".into()), Some(DenyReason::AttestationInvalid));
    assert_eq!(w.reason_with(|c| c.sub = "u2".into()), Some(DenyReason::AttestationInvalid));
}

#[test]
fn missing_forged_and_unknown_tokens_are_denied() {
    let w = world();
    let route = &w.profile.routes[0];
    let facts = |attestation| RequestFacts {
        profile: &w.profile,
        route,
        method: "GET",
        path: "/",
        client: ClientAddr::Known("10.0.0.1".parse().unwrap()),
        attestation,
        integration_tokens: None,
        login: None,
        query: None,
        content_encoding: None,
    };
    let missing = decide(&facts(Attestation::Missing), &w.state, tuesday());
    assert_eq!(missing.deny_reason(), Some(DenyReason::AttestationMissing));

    let other = SigningKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[8; 32]));
    let forged = attestation::mint(&other, "d1", &claims(tuesday()));
    let e = attestation::verify(&forged, &w.state.devices).unwrap_err();
    assert_eq!(
        decide(&facts(Attestation::Rejected(&e)), &w.state, tuesday()).deny_reason(),
        Some(DenyReason::AttestationInvalid)
    );

    let unknown = attestation::mint(&w.key, "d9", &claims(tuesday()));
    let e = attestation::verify(&unknown, &w.state.devices).unwrap_err();
    assert_eq!(
        decide(&facts(Attestation::Rejected(&e)), &w.state, tuesday()).deny_reason(),
        Some(DenyReason::DeviceUnknown)
    );
}

#[test]
fn device_status_decides_before_anything_about_the_user() {
    for (status, want) in [
        (DeviceStatus::Pending, Some(DenyReason::DevicePending)),
        (DeviceStatus::Rejected, Some(DenyReason::DeviceNotPermitted)),
        (DeviceStatus::Revoked, Some(DenyReason::DeviceRevoked)),
        (DeviceStatus::Approved, None),
    ] {
        let mut w = world();
        w.device().status = status;
        w.user().suspended = Some(Flag { reason: "x".into(), since: tuesday(), until: None });
        let got = w.reason_at(tuesday());
        assert_eq!(got, want.or(Some(DenyReason::UserSuspended)), "{status:?}");
    }
}

#[test]
fn a_rekeyed_device_refuses_tokens_signed_by_its_old_key() {
    let w = world();
    let token = attestation::mint(&w.key, "d1", &claims(tuesday()));
    let verified = attestation::verify(&token, &w.state.devices).unwrap();
    let mut w = w;
    w.device().key = SigningKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[9; 32])).public();
    let facts = RequestFacts {
        profile: &w.profile,
        route: &w.profile.routes[0],
        method: "GET",
        path: "/",
        client: ClientAddr::Known("10.0.0.1".parse().unwrap()),
        attestation: Attestation::Verified(&verified),
        integration_tokens: None,
        login: None,
        query: None,
        content_encoding: None,
    };
    assert_eq!(decide(&facts, &w.state, tuesday()).deny_reason(), Some(DenyReason::AttestationInvalid));
}

#[test]
fn suspension_and_restriction_follow_their_flags() {
    let mut w = world();
    let until = tuesday() + chrono::Duration::minutes(5);
    w.user().suspended = Some(Flag { reason: "lost phone".into(), since: tuesday(), until: Some(until) });
    assert_eq!(w.reason_at(tuesday()), Some(DenyReason::UserSuspended));
    assert_eq!(w.reason_at(until), None, "a suspension ends at `until`");

    let mut w = world();
    w.user().restricted = Some(Flag { reason: "audit".into(), since: tuesday(), until: None });
    for (method, want) in [
        ("GET", None),
        ("HEAD", None),
        ("POST", Some(DenyReason::UserRestricted)),
        ("DELETE", Some(DenyReason::UserRestricted)),
    ] {
        assert_eq!(w.decide_with(&claims(tuesday()), method, "10.0.0.1", tuesday()).deny_reason(), want, "{method}");
    }
}

#[test]
fn users_outside_the_profile_or_its_roles_are_not_permitted() {
    let mut w = world();
    w.user().profiles = vec!["lineworks".into()];
    assert_eq!(w.reason_at(tuesday()), Some(DenyReason::UserNotPermitted));
    let mut w = world();
    w.user().role = "contractor".into();
    assert_eq!(w.reason_at(tuesday()), Some(DenyReason::UserNotPermitted));
}

#[test]
fn device_kind_ownership_and_os_are_checked() {
    type Change = fn(&mut Device);
    let cases: [(Change, Option<DenyReason>); 4] = [
        (|d| d.ownership = Ownership::Personal, Some(DenyReason::DeviceNotPermitted)),
        (|d| d.kind = DeviceKind::Smartphone, Some(DenyReason::DeviceNotPermitted)),
        (|d| d.os = Os::Ios, Some(DenyReason::DeviceNotPermitted)), // attested os differs
        (|_| {}, None),
    ];
    for (change, want) in cases {
        let mut w = world();
        change(w.device());
        assert_eq!(w.reason_at(tuesday()), want);
    }
}

#[test]
fn posture_claims_are_held_to_the_profile_minimums() {
    let mut w = world();
    let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 24).unwrap();
    assert_eq!(w.reason_with(|c| c.os_version = "10.0.19044".parse().unwrap()), Some(DenyReason::OsOutdated));
    assert_eq!(w.reason_with(|c| c.os_version = "10.0.19045".parse().unwrap()), None);
    assert_eq!(w.reason_with(|c| c.os_version = "11".parse().unwrap()), None);
    assert_eq!(w.reason_with(|c| c.security_software = None), Some(DenyReason::SecuritySoftwareMissing));
    let aged = |days: i64| {
        move |c: &mut Claims| c.security_software.as_mut().unwrap().updated = today - chrono::Duration::days(days)
    };
    assert_eq!(w.reason_with(aged(7)), None);
    assert_eq!(w.reason_with(aged(8)), Some(DenyReason::SecuritySoftwareOutdated));
    w.device().os = Os::Linux;
    assert_eq!(w.reason_with(|c| c.os = Os::Linux), Some(DenyReason::DeviceNotPermitted), "linux is not listed");
}

#[test]
fn only_allowed_paths_pass_when_a_route_lists_them() {
    let mut w = world();
    let pattern = |s: &str| crate::rules::PathPattern::try_from(s.to_owned()).unwrap();
    w.profile.routes[0].allow_paths = Some(vec![pattern("/drive/**")]);
    assert_eq!(w.reason_at(tuesday()), Some(DenyReason::FeatureNotPermitted));
    w.profile.routes[0].allow_paths = Some(vec![pattern("/K/*/records.json")]);
    assert_eq!(w.reason_at(tuesday()), None);
    w.profile.routes[0].allow_paths = Some(vec![pattern("/k/**")]);
    assert_eq!(w.reason_at(tuesday()), None);
}

#[test]
fn a_method_override_never_weakens_the_method() {
    let cases = [
        ("GET", None, "GET"),
        ("GET", Some("DELETE"), "POST"),
        ("GET", Some("get"), "GET"),
        ("HEAD", Some("nonsense"), "POST"),
        ("POST", Some("GET"), "POST"),
        ("DELETE", None, "DELETE"),
    ];
    for (method, o, want) in cases {
        assert_eq!(authorised_method(method, o), want, "{method} {o:?}");
    }
}

#[test]
fn every_reason_has_a_unique_stable_code() {
    let codes: std::collections::HashSet<_> = DenyReason::ALL.iter().map(|r| r.code()).collect();
    assert_eq!(codes.len(), DenyReason::ALL.len());
    assert!(codes.iter().all(|c| c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A suspended user is never allowed, whatever the time, method, network or grants.
    #[test]
    fn a_suspended_user_is_never_allowed(
        minutes in 0i64..(60 * 24 * 21),
        method in prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "DELETE"]),
        octet in 0u8..=255,
        granted in any::<bool>(),
    ) {
        let mut w = world();
        let now = jst(2026, 11, 20, 0, 0, 0) + chrono::Duration::minutes(minutes);
        w.user().suspended = Some(Flag { reason: "x".into(), since: now, until: None });
        if granted {
            let grant = OvertimeGrant { id: 1, grantee: Grantee::User("u1".into()), profile: None, approver: "a".into(), reason: "r".into(), start: now - chrono::Duration::hours(1), end: now + chrono::Duration::hours(1) };
            Arc::make_mut(&mut w.state.overtime).insert(Grantee::User("u1".into()), vec![grant]);
        }
        let client = format!("10.0.0.{octet}");
        prop_assert!(!w.decide_with(&claims(now), method, &client, now).is_allow());
    }

    /// Adding a trusted network never turns an Allow into a Deny.
    #[test]
    fn adding_a_trusted_network_never_denies_more(
        minutes in 0i64..(60 * 24 * 14),
        a in any::<u32>(),
        prefix in 0u8..=32,
        client in any::<u32>(),
    ) {
        let w = world();
        let now = jst(2026, 11, 20, 0, 0, 0) + chrono::Duration::minutes(minutes);
        let client = std::net::Ipv4Addr::from(client).to_string();
        let before = w.decide_with(&claims(now), "GET", &client, now).is_allow();
        let mut wider = world();
        let net = ipnet::Ipv4Net::new(a.into(), prefix).unwrap().trunc();
        if let Trusted::Cidrs(nets) = &mut wider.profile.network.trusted {
            nets.push(net.into());
        }
        let after = wider.decide_with(&claims(now), "GET", &client, now).is_allow();
        prop_assert!(!before || after);
    }
}
