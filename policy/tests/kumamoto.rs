//! 熊本市議会クラウドシステム運用管理等基準, article by article, against the
//! shipped `rules/kumamoto-council-lineworks.toml`.

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
