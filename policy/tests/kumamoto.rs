//! 熊本市議会クラウドシステム運用管理等基準, article by article, against the
//! shipped `rules/kumamoto-council-lineworks.toml`.

#![allow(clippy::unwrap_used, reason = "test code: a failed step is a failed test")]

mod common;

use common::{jst, Req, World};
use sekisho_policy::device::{DeviceKind::*, DeviceStatus::*, Os, Ownership::*};
use sekisho_policy::DenyReason;

const P: &str = "kumamoto-council-lineworks";
const TALK: &str = "talk.worksmobile.com";

fn council() -> World {
    let mut w = World::new();
    w.user("giin", "councillor", &[P]).device("giin-phone", "giin", Smartphone, Personal, Os::Ios, Approved);
    w.device("giin-tablet", "giin", Tablet, Personal, Os::Ipados, Approved);
    w.user("jimu", "staff", &[P]).device("jimu-pc", "jimu", Pc, Issued, Os::Windows, Approved);
    w.device("jimu-phone", "jimu", Smartphone, Personal, Os::Android, Approved);
    w
}

fn sunday_night() -> chrono::DateTime<chrono::Utc> {
    jst(2026, 11, 22, 23, 30)
}

#[test]
fn kumamoto_art10_only_councillors_and_secretariat_staff() {
    let mut w = council();
    w.user("shimin", "citizen", &[P]).device("shimin-pc", "shimin", Pc, Personal, Os::Windows, Approved);
    w.user("other", "councillor", &["demo"]).device("other-phone", "other", Smartphone, Personal, Os::Ios, Approved);
    assert_eq!(w.decide(&Req::get(TALK, "/", "shimin-pc", sunday_night())), Some(DenyReason::UserNotPermitted));
    assert_eq!(w.decide(&Req::get(TALK, "/", "other-phone", sunday_night())), Some(DenyReason::UserNotPermitted));
    assert_eq!(w.decide(&Req::get(TALK, "/", "giin-phone", sunday_night())), None);
}

#[test]
fn kumamoto_art11_1_councillors_use_registered_personal_devices() {
    let mut w = council();
    w.device("giin-city-pc", "giin", Pc, Issued, Os::Windows, Approved);
    assert_eq!(w.decide(&Req::get(TALK, "/", "giin-phone", sunday_night())), None);
    assert_eq!(w.decide(&Req::get(TALK, "/", "giin-tablet", sunday_night())), None);
    assert_eq!(w.decide(&Req::get(TALK, "/", "giin-city-pc", sunday_night())), Some(DenyReason::DeviceNotPermitted));
}

#[test]
fn kumamoto_art11_2_staff_only_designated_pc() {
    let w = council();
    assert_eq!(w.decide(&Req::get(TALK, "/", "jimu-pc", sunday_night())), None);
    assert_eq!(w.decide(&Req::get(TALK, "/", "jimu-phone", sunday_night())), Some(DenyReason::DeviceNotPermitted));
}

#[test]
fn kumamoto_art11_1_and_art15_antivirus_and_os_must_be_kept_up() {
    let w = council();
    let mut old = Req::get(TALK, "/", "giin-phone", sunday_night());
    old.os_version = Some("16.7");
    assert_eq!(w.decide(&old), Some(DenyReason::OsOutdated));
}

#[test]
fn kumamoto_art12_only_approved_registrations_pass() {
    let mut w = council();
    w.device("giin-new", "giin", Smartphone, Personal, Os::Android, Pending);
    w.device("giin-refused", "giin", Smartphone, Personal, Os::Android, Rejected);
    assert_eq!(w.decide(&Req::get(TALK, "/", "giin-new", sunday_night())), Some(DenyReason::DevicePending));
    assert_eq!(w.decide(&Req::get(TALK, "/", "giin-refused", sunday_night())), Some(DenyReason::DeviceNotPermitted));
}

#[test]
fn kumamoto_art4_only_the_listed_functions_pass() {
    let w = council();
    let at = sunday_night();
    for host in [
        "talk.worksmobile.com",
        "drive.worksmobile.com",
        "calendar.worksmobile.com",
        "home.worksmobile.com",
        "form.worksmobile.com",
        "auth.worksmobile.com",
    ] {
        assert_eq!(w.decide(&Req::get(host, "/", "giin-phone", at)), None, "{host}");
    }
    for host in ["mail.worksmobile.com", "note.worksmobile.com", "task.worksmobile.com"] {
        assert_eq!(w.decide(&Req::get(host, "/", "giin-phone", at)), Some(DenyReason::FeatureNotPermitted), "{host}");
    }
    let api = "www.worksapis.com";
    assert_eq!(w.decide(&Req::get(api, "/v1.0/users/giin/calendars/c1/events", "giin-phone", at)), None);
    assert_eq!(w.decide(&Req::get(api, "/v1.0/boards/1/posts", "giin-phone", at)), None);
    assert_eq!(
        w.decide(&Req::get(api, "/v1.0/users/giin/mail/mailfolders", "giin-phone", at)),
        Some(DenyReason::FeatureNotPermitted)
    );
    assert_eq!(
        w.decide(&Req::get(api, "/v1.0/users/giin/tasks", "giin-phone", at)),
        Some(DenyReason::FeatureNotPermitted)
    );
}

#[test]
fn kumamoto_art14_open_24_hours_365_days() {
    let w = council();
    for at in [jst(2026, 1, 1, 3, 0), jst(2026, 11, 23, 12, 0), jst(2026, 12, 31, 23, 59), sunday_night()] {
        assert_eq!(w.decide(&Req::get(TALK, "/", "giin-phone", at)), None, "{at}");
    }
}

#[test]
fn kumamoto_art6_4_emergency_stop_without_consent() {
    let mut w = council();
    w.stop(Some(P), sunday_night());
    assert_eq!(w.decide(&Req::get(TALK, "/", "giin-phone", sunday_night())), Some(DenyReason::EmergencyStop));
    assert_eq!(w.decide(&Req::get(TALK, "/", "jimu-pc", sunday_night())), Some(DenyReason::EmergencyStop));
}

#[test]
fn kumamoto_art18_suspension_and_restriction_by_the_general_administrator() {
    let mut w = council();
    w.suspend("giin", sunday_night());
    assert_eq!(w.decide(&Req::get(TALK, "/", "giin-phone", sunday_night())), Some(DenyReason::UserSuspended));
    w.restrict("jimu", sunday_night());
    assert_eq!(w.decide(&Req::get(TALK, "/", "jimu-pc", sunday_night())), None);
    let post = Req { method: "POST", ..Req::get(TALK, "/", "jimu-pc", sunday_night()) };
    assert_eq!(w.decide(&post), Some(DenyReason::UserRestricted));
}

#[test]
fn kumamoto_art17_a_lost_phone_is_revoked_and_the_tablet_keeps_working() {
    let mut w = council();
    w.revoke("giin-phone");
    assert_eq!(w.decide(&Req::get(TALK, "/", "giin-phone", sunday_night())), Some(DenyReason::DeviceRevoked));
    assert_eq!(w.decide(&Req::get(TALK, "/", "giin-tablet", sunday_night())), None);
}

#[test]
fn kumamoto_supplement_in_force_from_2021_02_01() {
    let w = council();
    assert_eq!(
        w.decide(&Req::get(TALK, "/", "giin-phone", jst(2021, 1, 31, 12, 0))),
        Some(DenyReason::PolicyNotInForce)
    );
    assert_eq!(w.decide(&Req::get(TALK, "/", "giin-phone", jst(2021, 2, 1, 0, 0))), None);
}

/// A version just below `min` (`17` -> `16.99`, `10.0.19045` -> `10.0.19044.99`).
fn just_below(min: &str) -> String {
    let mut parts: Vec<u32> = min.split('.').map(|p| p.parse().unwrap()).collect();
    let last = parts.iter().rposition(|p| *p > 0).unwrap();
    parts[last] -= 1;
    parts.truncate(last + 1);
    parts.push(99);
    parts.iter().map(u32::to_string).collect::<Vec<_>>().join(".")
}

/// A councillor's personal device of every OS family, for the posture tables.
fn every_os(w: &mut World) -> Vec<(Os, &'static str)> {
    let devices =
        [(Os::Ios, Smartphone), (Os::Ipados, Tablet), (Os::Android, Smartphone), (Os::Windows, Pc), (Os::Macos, Pc)];
    let devices = devices.into_iter().chain([(Os::Linux, Pc), (Os::Chromeos, Pc)]);
    devices
        .map(|(os, kind)| {
            let id: &'static str = Box::leak(format!("giin-{os}").into_boxed_str());
            w.device(id, "giin", kind, Personal, os, Approved);
            (os, id)
        })
        .collect()
}

#[test]
fn kumamoto_art15_each_os_minimum_of_the_shipped_file() {
    let mut w = council();
    let devices = every_os(&mut w);
    let profile = w.rules.profile(P).unwrap().clone();
    let table: Vec<(Os, String)> = profile.devices.min_os.iter().map(|(o, v)| (*o, v.to_string())).collect();
    let want =
        [(Os::Windows, "10.0.19045"), (Os::Macos, "13"), (Os::Ios, "17"), (Os::Ipados, "17"), (Os::Android, "13")];
    assert_eq!(
        table,
        want.map(|(o, v)| (o, v.to_owned())),
        "the shipped minimums changed: update this test and the mapping"
    );
    for (os, device) in devices {
        let at = |v: &str| w.decide(&Req { os_version: Some(v), ..Req::get(TALK, "/", device, sunday_night()) });
        match table.iter().find(|(o, _)| *o == os) {
            Some((_, min)) => {
                assert_eq!(at(min), None, "{os} {min}");
                assert_eq!(at(&just_below(min)), Some(DenyReason::OsOutdated), "{os} below {min}");
            }
            None => assert_eq!(at("6.1"), Some(DenyReason::DeviceNotPermitted), "{os} is not in the table"),
        }
    }
}

#[test]
fn kumamoto_art11_1_and_art15_antivirus_signatures_at_most_7_days_old() {
    let w = council();
    let with = |age| w.decide(&Req { av_age_days: age, ..Req::get(TALK, "/", "giin-phone", sunday_night()) });
    assert_eq!(with(Some(7)), None, "a week old is kept up");
    assert_eq!(with(Some(8)), Some(DenyReason::SecuritySoftwareOutdated));
    assert_eq!(with(None), Some(DenyReason::SecuritySoftwareMissing), "第11条第1号 ウイルス対策が適切に管理された端末");
}

#[test]
fn kumamoto_art12_2_an_exception_recorded_at_approval_wins_over_the_minimums() {
    let mut w = council();
    let devices = every_os(&mut w);
    let old_ipad = Req { os_version: Some("16.7"), ..Req::get(TALK, "/", "giin-ipados", sunday_night()) };
    assert_eq!(w.decide(&old_ipad), Some(DenyReason::OsOutdated));
    assert_eq!(w.decide(&Req::get(TALK, "/", "giin-linux", sunday_night())), Some(DenyReason::DeviceNotPermitted));
    let stale = Req { av_age_days: Some(30), ..Req::get(TALK, "/", "giin-ipados", sunday_night()) };
    assert_eq!(w.decide(&stale), Some(DenyReason::SecuritySoftwareOutdated));
    for (_, device) in &devices {
        w.except(device, "情報システム責任者が対策状況を確認 (第12条第2項)");
    }
    assert_eq!(w.decide(&old_ipad), None, "iPadOS 16 judged fit at approval");
    assert_eq!(w.decide(&Req::get(TALK, "/", "giin-linux", sunday_night())), None, "a Linux PC judged fit");
    assert_eq!(w.decide(&stale), None, "signature age judged at approval");
    // What the document itself requires still holds.
    let no_av = Req { av_age_days: None, ..Req::get(TALK, "/", "giin-ipados", sunday_night()) };
    assert_eq!(w.decide(&no_av), Some(DenyReason::SecuritySoftwareMissing), "第11条第1号 still needs antivirus");
    w.except("jimu-phone", "例外");
    assert_eq!(
        w.decide(&Req::get(TALK, "/", "jimu-phone", sunday_night())),
        Some(DenyReason::DeviceNotPermitted),
        "第11条第2号: staff use the designated PC, whatever the exception"
    );
}
