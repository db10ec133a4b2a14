//! 我孫子市における kintone 利用規約, article by article, against the shipped
//! `rules/abiko-kintone.toml`. Most tests first renew the validity period
//! (4.) as an administrator would, since the shipped terms ended 2023-05-31.

#![allow(clippy::unwrap_used, reason = "test code: a failed step is a failed test")]

mod common;

use base64::Engine as _;
use common::{jst, Req, World};
use sekisho_policy::device::{DeviceKind::*, DeviceStatus::*, Os, Ownership::*};
use sekisho_policy::state::Subject;
use sekisho_policy::DenyReason;

const P: &str = "abiko-kintone";
const K: &str = "abiko.cybozu.com";

fn city() -> World {
    let mut w = World::new();
    w.edit_rules("abiko-kintone.toml", "valid_until = 2023-05-31", "valid_until = 2028-03-31");
    w.user("shokuin", "staff", &[P]).device("shokuin-pc", "shokuin", Pc, Issued, Os::Windows, Approved);
    w.device("shokuin-own", "shokuin", Smartphone, Personal, Os::Ios, Approved);
    w.user("kanri", "kintone_admin", &[P]).device("kanri-pc", "kanri", Pc, Issued, Os::Windows, Approved);
    w
}

/// A Tuesday in Tokyo.
fn tue(h: u32, m: u32) -> chrono::DateTime<chrono::Utc> {
    jst(2026, 11, 24, h, m)
}

#[test]
fn abiko_4_the_terms_expired_on_2023_05_31() {
    let mut w = World::new();
    w.user("shokuin", "staff", &[P]).device("shokuin-pc", "shokuin", Pc, Issued, Os::Windows, Approved);
    assert_eq!(w.decide(&Req::get(K, "/k/", "shokuin-pc", tue(10, 0))), Some(DenyReason::PolicyNotInForce));
    assert_eq!(
        w.decide(&Req::get(K, "/k/", "shokuin-pc", jst(2023, 5, 31, 10, 0))),
        None,
        "the last day was in force (a Wednesday)"
    );
    assert_eq!(w.decide(&Req::get(K, "/k/", "shokuin-pc", jst(2023, 6, 1, 10, 0))), Some(DenyReason::PolicyNotInForce));
    assert_eq!(
        w.decide(&Req::get(K, "/k/", "shokuin-pc", jst(2022, 7, 11, 10, 0))),
        Some(DenyReason::PolicyNotInForce),
        "before 附則's 令和4年7月12日"
    );
}

#[test]
fn abiko_7_city_issued_devices_only() {
    let w = city();
    assert_eq!(w.decide(&Req::get(K, "/k/", "shokuin-pc", tue(10, 0))), None);
    assert_eq!(w.decide(&Req::get(K, "/k/", "shokuin-own", tue(10, 0))), Some(DenyReason::DeviceNotPermitted));
}

#[test]
fn abiko_8_regular_working_hours_on_weekdays() {
    let w = city();
    let cases = [
        (tue(8, 29), Some(DenyReason::OutsideHours)),
        (tue(8, 30), None),
        (tue(17, 14), None),
        (tue(17, 15), Some(DenyReason::OutsideHours)),
        (jst(2026, 11, 28, 10, 0), Some(DenyReason::OutsideHours)), // Saturday
        (jst(2026, 11, 29, 10, 0), Some(DenyReason::OutsideHours)), // Sunday
    ];
    for (at, want) in cases {
        assert_eq!(w.decide(&Req::get(K, "/k/", "shokuin-pc", at)), want, "{at}");
    }
}

#[test]
fn abiko_8_closed_on_national_holidays_2026_and_2027() {
    let w = city();
    for (y, m, d) in [(2026, 9, 21), (2026, 9, 22), (2026, 9, 23), (2027, 1, 11), (2026, 5, 6), (2027, 3, 22)] {
        assert_eq!(
            w.decide(&Req::get(K, "/k/", "shokuin-pc", jst(y, m, d, 10, 0))),
            Some(DenyReason::Holiday),
            "{y}-{m}-{d}"
        );
    }
    assert_eq!(
        w.decide(&Req::get(K, "/k/", "shokuin-pc", jst(2026, 9, 24, 10, 0))),
        None,
        "the Thursday after the silver week"
    );
}

#[test]
fn abiko_8_closed_over_the_year_end_12_29_to_1_3() {
    let w = city();
    assert_eq!(w.decide(&Req::get(K, "/k/", "shokuin-pc", jst(2026, 12, 28, 10, 0))), None);
    for (y, m, d) in [(2026, 12, 29), (2026, 12, 30), (2026, 12, 31), (2027, 1, 1), (2027, 1, 3)] {
        assert_eq!(
            w.decide(&Req::get(K, "/k/", "shokuin-pc", jst(y, m, d, 10, 0))),
            Some(DenyReason::Holiday),
            "{y}-{m}-{d}"
        );
    }
    assert_eq!(w.decide(&Req::get(K, "/k/", "shokuin-pc", jst(2027, 1, 4, 10, 0))), None);
}

#[test]
fn abiko_8_overtime_grant_allows_evening() {
    let mut w = city();
    w.grant("shokuin", tue(17, 15), tue(20, 0));
    assert_eq!(w.decide(&Req::get(K, "/k/", "shokuin-pc", tue(19, 0))), None);
    assert_eq!(w.decide(&Req::get(K, "/k/", "shokuin-pc", tue(20, 0))), Some(DenyReason::OutsideHours));
    assert_eq!(
        w.decide(&Req::get(K, "/k/", "kanri-pc", tue(19, 0))),
        Some(DenyReason::OutsideHours),
        "a grant is personal"
    );
}

#[test]
fn abiko_8_overtime_grant_covers_a_holiday() {
    let mut w = city();
    w.grant("shokuin", jst(2026, 11, 23, 9, 0), jst(2026, 11, 23, 12, 0));
    assert_eq!(w.decide(&Req::get(K, "/k/", "shokuin-pc", jst(2026, 11, 23, 10, 0))), None);
}

#[test]
fn abiko_9_1_app_creators_manage_their_own_apps() {
    let w = city();
    for (method, path) in [
        ("GET", "/k/admin/app/flow"),
        ("POST", "/k/admin/app/flow"),
        ("GET", "/k/admin/app/customize"),
        ("PUT", "/k/v1/preview/app/settings.json"),
        ("PUT", "/k/v1/preview/app/status.json"),
        ("POST", "/k/v1/preview/app/deploy.json"),
        ("POST", "/k/guest/7/v1/preview/app/deploy.json"),
        ("PUT", "/k/v1/preview/app/acl.json"),
    ] {
        let r = Req { method, query: Some("app=5"), ..Req::get(K, path, "shokuin-pc", tue(10, 0)) };
        assert_eq!(w.decide(&r), None, "{method} {path}");
    }
}

#[test]
fn abiko_10_app_creators_add_plugins_already_on_the_domain() {
    let w = city();
    let add = Req { method: "POST", ..Req::get(K, "/k/v1/preview/app/plugins.json", "shokuin-pc", tue(10, 0)) };
    let body = br#"{"app":5,"ids":["djmhffjhfgmebgnmcggopedaofckljlj"]}"#;
    assert_eq!(w.decide_with_body(&add, Some("application/json"), body), None);
    let guest = Req { path: "/k/guest/7/v1/preview/app/plugins.json", ..add };
    assert_eq!(w.decide_with_body(&guest, Some("application/json"), body), None);
    assert_eq!(w.decide(&Req::get(K, "/k/v1/plugins.json", "shokuin-pc", tue(10, 0))), None, "listing them");
}

#[test]
fn abiko_10_only_system_administrators_change_the_domain() {
    let w = city();
    for (method, path) in [
        ("POST", "/k/v1/plugin.json"),
        ("PUT", "/k/v1/plugin.json"),
        ("DELETE", "/k/v1/plugin.json"),
        ("POST", "/K/V1/Plugin.json"),
        ("POST", "/k/v1/plugin.json/"),
        ("GET", "/k/admin/system/plugin/"),
        ("GET", "/k/admin/"),
        ("POST", "/k/admin/system/customize"),
        ("GET", "/admin/"),
        ("GET", "/admin/user/list"),
    ] {
        let staff = Req { method, ..Req::get(K, path, "shokuin-pc", tue(10, 0)) };
        assert_eq!(w.decide(&staff), Some(DenyReason::FeatureNotPermitted), "{method} {path}");
        let admin = Req { method, ..Req::get(K, path, "kanri-pc", tue(10, 0)) };
        assert_eq!(w.decide_with_body(&admin, Some("application/json"), b"{}"), None, "{method} {path}");
    }
}

#[test]
fn abiko_10_customisation_of_an_app_in_operation_needs_a_recorded_review() {
    let mut w = city();
    let put = |who| Req { method: "PUT", ..Req::get(K, "/k/v1/preview/app/customize.json", who, tue(10, 0)) };
    let json = Some("application/json");
    let customize = |w: &World, who, app: &str| {
        w.decide_with_body(
            &put(who),
            json,
            format!(r#"{{"app":{app},"scope":"ALL","desktop":{{"js":[]}}}}"#).as_bytes(),
        )
    };
    assert_eq!(customize(&w, "shokuin-pc", "5"), Some(DenyReason::FeatureNotPermitted), "in operation, unreviewed");
    assert_eq!(customize(&w, "kanri-pc", "5"), Some(DenyReason::FeatureNotPermitted), "whoever customises");
    w.in_development(P, 5);
    assert_eq!(customize(&w, "shokuin-pc", "5"), None, "an app in development may");
    assert_eq!(customize(&w, "shokuin-pc", r#""5""#), None, "the app as a string");
    w.review(P, 6, Subject::Customize, None);
    assert_eq!(customize(&w, "shokuin-pc", "6"), None, "reviewed before operation");
    w.review(P, 7, Subject::ApiToken, None);
    assert_eq!(customize(&w, "shokuin-pc", "7"), Some(DenyReason::FeatureNotPermitted), "another subject's review");
    let no_app = w.decide_with_body(&put("shokuin-pc"), json, br#"{"scope":"ALL"}"#);
    assert_eq!(no_app, Some(DenyReason::FeatureNotPermitted), "an app it cannot determine is in operation");
    let twice = w.decide_with_body(&put("shokuin-pc"), json, br#"{"app":5,"app":8}"#);
    assert_eq!(twice, Some(DenyReason::FeatureNotPermitted), "named twice");
    let query_dev = Req { query: Some("app=5"), ..put("shokuin-pc") };
    assert_eq!(
        w.decide_with_body(&query_dev, json, br#"{"app":8}"#),
        Some(DenyReason::FeatureNotPermitted),
        "query and body both count"
    );
    assert_eq!(w.decide_with_body(&query_dev, json, br#"{"scope":"ALL"}"#), None, "the query names it");
    let guest = Req { path: "/k/guest/3/v1/preview/app/customize.json", ..put("shokuin-pc") };
    assert_eq!(w.decide_with_body(&guest, json, br#"{"app":9}"#), Some(DenyReason::FeatureNotPermitted));
    let read = Req::get(K, "/k/v1/preview/app/customize.json", "shokuin-pc", tue(10, 0));
    assert_eq!(w.decide(&Req { query: Some("app=9"), ..read }), None, "reading the settings is not customising");
}

#[test]
fn abiko_10_api_tokens_of_an_app_in_operation_need_a_recorded_review() {
    let mut w = city();
    let token = "app-token-of-a-creator";
    let get =
        |query| Req { api_tokens: Some(token), query, ..Req::get(K, "/k/v1/records.json", "shokuin-pc", tue(10, 0)) };
    assert_eq!(w.decide(&get(Some("app=5"))), Some(DenyReason::IntegrationNotApproved));
    w.in_development(P, 5);
    assert_eq!(w.decide(&get(Some("app=5"))), None, "in development");
    assert_eq!(w.decide(&get(Some("app=6"))), Some(DenyReason::IntegrationNotApproved));
    w.review(P, 6, Subject::ApiToken, None);
    assert_eq!(w.decide(&get(Some("app=6"))), None, "an api_token review of the app");
    assert_eq!(w.decide(&get(None)), Some(DenyReason::IntegrationNotApproved), "no app: in operation");
    assert_eq!(w.decide(&get(Some("app=5&app=9"))), Some(DenyReason::IntegrationNotApproved), "named twice");
    // kintone reads a GET's parameters from a JSON body as well.
    let json = Some("application/json");
    assert_eq!(
        w.decide_with_body(&get(Some("app=5")), json, br#"{"app":9}"#),
        Some(DenyReason::IntegrationNotApproved),
        "a GET's body names another app"
    );
    assert_eq!(w.decide_with_body(&get(None), json, br#"{"app":6}"#), None, "a GET's body names a reviewed app");
    let post = Req { method: "POST", path: "/k/v1/record.json", ..get(None) };
    assert_eq!(w.decide_with_body(&post, Some("application/json"), br#"{"app":6,"record":{}}"#), None);
    assert_eq!(
        w.decide_with_body(&post, Some("application/json"), br#"{"app":9,"record":{}}"#),
        Some(DenyReason::IntegrationNotApproved)
    );
    let hash: String =
        <sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    w.review(P, 9, Subject::ApiToken, Some(hash));
    assert_eq!(w.decide(&get(None)), None, "a token reviewed by itself passes wherever it is used");
}

#[test]
fn abiko_10_only_reviewed_api_tokens_pass() {
    let mut w = city();
    let reviewed = "reviewed-token-for-app-12";
    let hash: String =
        <sha2::Sha256 as sha2::Digest>::digest(reviewed.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    w.edit_rules(
        "abiko-kintone.toml",
        "approved = []",
        &format!("approved = [{{ app = 12, sha256 = \"{hash}\", note = \"審査済\" }}]"),
    );
    let with = |tokens| Req { api_tokens: Some(tokens), ..Req::get(K, "/k/v1/records.json", "shokuin-pc", tue(10, 0)) };
    assert_eq!(w.decide(&with(reviewed)), None);
    assert_eq!(w.decide(&with("unreviewed")), Some(DenyReason::IntegrationNotApproved));
    assert_eq!(
        w.decide(&with(&format!("{reviewed},unreviewed"))),
        Some(DenyReason::IntegrationNotApproved),
        "every token must be reviewed"
    );
}

#[test]
fn abiko_6_2_no_shared_accounts() {
    let w = city();
    let login = |name: &str| base64::engine::general_purpose::STANDARD.encode(format!("{name}:secret"));
    let own = login("shokuin");
    let other = login("kanri");
    let with = |header: &str| w.decide(&Req { login: Some(header), ..Req::get(K, "/k/", "shokuin-pc", tue(10, 0)) });
    assert_eq!(with(&own), None);
    assert_eq!(with(&other), Some(DenyReason::AccountMismatch));
    assert_eq!(with("!!not base64!!"), Some(DenyReason::AccountMismatch));
}

#[test]
fn abiko_5_2_my_number_never_enters_kintone() {
    let w = city();
    let record = r#"{"app":12,"record":{"mynumber":{"value":"1234 5678 9018"}}}"#.as_bytes();
    assert_eq!(w.body(K, &[record]), Some(DenyReason::SpecificPersonalInformation));
    let (a, b) = record.split_at(50);
    assert_eq!(w.body(K, &[a, b]), Some(DenyReason::SpecificPersonalInformation), "split across chunks");
    let wide = "{\"個人番号\":{\"value\":\"１２３４５６７８９０１８\"}}".as_bytes();
    let (a, b) = wide.split_at(14);
    assert_eq!(
        w.body(K, &[a, b]),
        Some(DenyReason::SpecificPersonalInformation),
        "full-width, split inside a character"
    );
    assert_eq!(
        w.body(K, &[br#"{"mynumber":{"value":"123456789019"}}"#]),
        None,
        "a wrong check digit is not a My Number"
    );
    let bulk = br#"{"requests":[{"method":"POST","api":"/k/v1/record.json","payload":{"record":{"kojin_bangou":{"value":"123456789018"}}}}]}"#;
    assert_eq!(w.body(K, &[bulk]), Some(DenyReason::SpecificPersonalInformation), "bulkRequest inner requests");
    assert_eq!(w.body("talk.worksmobile.com", &[record]), None, "only profiles that forbid it scan");
}

#[test]
fn abiko_5_2_a_my_number_in_the_request_target_never_reaches_kintone() {
    let w = city();
    let at = tue(10, 0);
    let search =
        |query: &'static str| Req { query: Some(query), ..Req::get(K, "/k/v1/records.json", "shokuin-pc", at) };
    // A record search by number, as a browser or a script encodes it.
    let by_field = "app=12&query=mynumber%20%3D%20%22123456789018%22";
    let by_keyword = "app=12&query=%E3%83%9E%E3%82%A4%E3%83%8A%E3%83%B3%E3%83%90%E3%83%BC+%3D+%221234-5678-9018%22";
    let wide = "app=12&query=kojin_bangou%3D%22%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96%EF%BC%97%EF%BC%98%EF%BC%99%EF%BC%90%EF%BC%91%EF%BC%98%22";
    for query in [by_field, by_keyword, wide] {
        let deny = w.deny(&search(query)).unwrap();
        assert_eq!(deny.reason, DenyReason::SpecificPersonalInformation, "{query}");
        assert!(deny.rule.ends_with("(request target)"), "{}", deny.rule);
        assert_eq!(deny.user.as_deref(), Some("shokuin"), "the refusal names who sent it");
    }
    let in_path = Req::get(K, "/k/v1/record.json/mynumber/123456789018", "shokuin-pc", at);
    assert_eq!(w.decide(&in_path), Some(DenyReason::SpecificPersonalInformation));
    // Not a 個人番号: a wrong check digit, a record id, an ordinary search.
    for query in
        ["app=12&query=mynumber%20%3D%20%22123456789019%22", "app=12&id=123456789018", "app=12&query=limit%2010"]
    {
        assert_eq!(w.decide(&search(query)), None, "{query}");
    }
    // A field code stands bare in kintone's query language.
    let mut w = w;
    w.edit_rules("abiko-kintone.toml", r#""mynumber"]"#, r#""mynumber", "shikibetsu"]"#);
    let bare = "app=12&query=shikibetsu%20in%20(%22123456789018%22)";
    assert_eq!(w.decide(&search(bare)), Some(DenyReason::SpecificPersonalInformation));
    let lineworks = Req { query: Some(by_field), ..Req::get("talk.worksmobile.com", "/", "shokuin-pc", at) };
    assert_ne!(
        w.decide(&lineworks),
        Some(DenyReason::SpecificPersonalInformation),
        "only profiles that forbid it scan"
    );
}

#[test]
fn abiko_5_2_a_compressed_body_cannot_be_checked_so_it_never_reaches_kintone() {
    let w = city();
    let at = tue(10, 0);
    let post = |coding: &'static str| Req {
        method: "POST",
        content_encoding: Some(coding),
        ..Req::get(K, "/k/v1/record.json", "shokuin-pc", at)
    };
    for coding in ["gzip", "br", "deflate", "identity, gzip", "x-anything"] {
        let deny = w.deny(&post(coding)).unwrap();
        assert_eq!(deny.reason, DenyReason::FeatureNotPermitted, "{coding}");
        assert!(deny.rule.starts_with("content.forbid_my_number"), "{}", deny.rule);
    }
    for coding in ["identity", "IDENTITY", ""] {
        assert_eq!(w.decide(&post(coding)), None, "{coding:?}");
    }
    let lineworks = Req { content_encoding: Some("gzip"), ..Req::get("talk.worksmobile.com", "/", "shokuin-pc", at) };
    assert_ne!(w.decide(&lineworks), Some(DenyReason::FeatureNotPermitted), "only profiles that forbid 個人番号 care");
}

#[test]
fn abiko_7_each_os_minimum_and_the_antivirus_age_of_the_shipped_file() {
    let mut w = city();
    let profile = w.rules.profile(P).unwrap().clone();
    let table: Vec<(Os, String)> = profile.devices.min_os.iter().map(|(o, v)| (*o, v.to_string())).collect();
    let want = [
        (Os::Windows, "10.0.19045"),
        (Os::Macos, "13"),
        (Os::Ios, "17"),
        (Os::Ipados, "17"),
        (Os::Android, "13"),
        (Os::Chromeos, "120"),
    ];
    assert_eq!(
        table,
        want.map(|(o, v)| (o, v.to_owned())),
        "the shipped minimums changed: update this test and the mapping"
    );
    for (os, kind, below) in [
        (Os::Windows, Pc, "10.0.19044"),
        (Os::Macos, Pc, "12.7"),
        (Os::Ios, Smartphone, "16.7"),
        (Os::Ipados, Tablet, "16.7"),
        (Os::Android, Smartphone, "12"),
        (Os::Chromeos, Pc, "119"),
    ] {
        let id: &'static str = Box::leak(format!("shokuin-{os}").into_boxed_str());
        w.device(id, "shokuin", kind, Issued, os, Approved);
        let min = &table.iter().find(|(o, _)| *o == os).unwrap().1;
        let at = |v: &str| w.decide(&Req { os_version: Some(v), ..Req::get(K, "/k/", id, tue(10, 0)) });
        assert_eq!(at(min), None, "{os} {min}");
        assert_eq!(at(below), Some(DenyReason::OsOutdated), "{os} {below}");
    }
    w.device("shokuin-linux", "shokuin", Pc, Issued, Os::Linux, Approved);
    assert_eq!(w.decide(&Req::get(K, "/k/", "shokuin-linux", tue(10, 0))), Some(DenyReason::DeviceNotPermitted));
    let with = |age| w.decide(&Req { av_age_days: age, ..Req::get(K, "/k/", "shokuin-pc", tue(10, 0)) });
    assert_eq!(with(Some(7)), None);
    assert_eq!(with(Some(8)), Some(DenyReason::SecuritySoftwareOutdated));
    assert_eq!(with(None), Some(DenyReason::SecuritySoftwareMissing));
}

#[test]
fn abiko_10_system_administrators_may_use_any_issued_device_kind() {
    let mut w = city();
    w.device("kanri-phone", "kanri", Smartphone, Issued, Os::Ios, Approved);
    w.device("kanri-tablet", "kanri", Tablet, Issued, Os::Ipados, Approved);
    w.device("kanri-own", "kanri", Smartphone, Personal, Os::Ios, Approved);
    assert_eq!(w.decide(&Req::get(K, "/k/", "kanri-phone", tue(10, 0))), None);
    assert_eq!(w.decide(&Req::get(K, "/k/", "kanri-tablet", tue(10, 0))), None);
    assert_eq!(
        w.decide(&Req::get(K, "/k/", "kanri-own", tue(10, 0))),
        Some(DenyReason::DeviceNotPermitted),
        "7.(2): never a personal device"
    );
}

fn basic(login: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{login}:secret"))
}

#[test]
fn abiko_6_3_a_shared_account_passes_for_its_holders_only() {
    let mut w = city();
    w.edit_rules("abiko-kintone.toml", "shared = {}", r#"shared = { "soumu-kyoyu" = ["shokuin"] }"#);
    w.user("tanin", "staff", &[P]).device("tanin-pc", "tanin", Pc, Issued, Os::Windows, Approved);
    let shared = basic("soumu-kyoyu");
    let with =
        |device| w.decide(&Req { login: Some(&shared), ..Req::get(K, "/k/v1/records.json", device, tue(10, 0)) });
    assert_eq!(with("shokuin-pc"), None, "a holder of the shared account");
    assert_eq!(with("tanin-pc"), Some(DenyReason::AccountMismatch), "not a holder: the ID must not leak to them");
    let own = basic("shokuin");
    let mine = Req { login: Some(&own), ..Req::get(K, "/k/", "shokuin-pc", tue(10, 0)) };
    assert_eq!(w.decide(&mine), None, "a holder keeps their own login");
}

#[test]
fn abiko_6_2_the_browser_sign_in_is_checked_too() {
    let mut w = city();
    w.edit_rules("abiko-kintone.toml", "shared = {}", r#"shared = { "soumu-kyoyu" = ["shokuin"] }"#);
    let post = |path| Req { method: "POST", ..Req::get(K, path, "shokuin-pc", tue(10, 0)) };
    let json = Some("application/json");
    let sign_in = |body: &str| w.decide_with_body(&post("/api/auth/login.json"), json, body.as_bytes());
    assert_eq!(sign_in(r#"{"username":"shokuin","password":"x","keepUsername":false,"redirect":""}"#), None);
    assert_eq!(sign_in(r#"{"username":"soumu-kyoyu","password":"x"}"#), None, "a shared account it holds");
    assert_eq!(sign_in(r#"{"username":"kanri","password":"x"}"#), Some(DenyReason::AccountMismatch));
    assert_eq!(sign_in(r#"{"user\u006eame":"kanri"}"#), Some(DenyReason::AccountMismatch), "escapes are decoded");
    assert_eq!(
        sign_in(r#"{"username":"shokuin","username":"kanri"}"#),
        Some(DenyReason::AccountMismatch),
        "a login given twice is refused"
    );
    assert_eq!(sign_in(r#"{"password":"x"}"#), Some(DenyReason::AccountMismatch), "no readable login");
    let form = Some("application/x-www-form-urlencoded");
    let redirect = |body: &str| w.decide_with_body(&post("/api/auth/redirect.do"), form, body.as_bytes());
    assert_eq!(redirect("username=shokuin&password=x&redirect=%2F"), None);
    assert_eq!(redirect("username=kanri&password=x"), Some(DenyReason::AccountMismatch));
    let query = Req { query: Some("username=kanri"), ..Req::get(K, "/api/auth/login.json", "shokuin-pc", tue(10, 0)) };
    assert_eq!(w.decide(&query), Some(DenyReason::AccountMismatch), "a login in the query");
    assert_eq!(w.decide_with_body(&post("/k/v1/record.json"), json, br#"{"username":"kanri"}"#), None, "not a sign-in");
}

#[test]
fn abiko_8_1_each_person_works_their_own_regular_hours() {
    let mut w = city();
    w.user("madoguchi", "staff", &[P]).device("madoguchi-pc", "madoguchi", Pc, Issued, Os::Windows, Approved);
    w.works("madoguchi", Some("市民課"), Some("saturday-duty"));
    w.user("yakin", "staff", &[P]).device("yakin-pc", "yakin", Pc, Issued, Os::Windows, Approved);
    w.works("yakin", Some("防災課"), Some("night-shift"));
    let saturday = jst(2026, 11, 28, 10, 0);
    let monday = jst(2026, 11, 30, 10, 0);
    let at = |device, when| w.decide(&Req::get(K, "/k/", device, when));
    assert_eq!(at("madoguchi-pc", saturday), None, "Saturday duty works Saturdays");
    assert_eq!(at("madoguchi-pc", monday), Some(DenyReason::OutsideHours), "and has Mondays off");
    assert_eq!(at("shokuin-pc", saturday), Some(DenyReason::OutsideHours), "the standard week is closed on Saturday");
    assert_eq!(at("shokuin-pc", monday), None);
    assert_eq!(at("madoguchi-pc", jst(2026, 11, 3, 10, 0)), Some(DenyReason::Holiday), "文化の日 (a Tuesday)");
    assert_eq!(at("madoguchi-pc", jst(2026, 12, 29, 10, 0)), Some(DenyReason::Holiday), "the year end");
    assert_eq!(at("yakin-pc", jst(2026, 11, 23, 23, 0)), None, "the night shift works holidays");
    assert_eq!(at("yakin-pc", jst(2026, 11, 24, 8, 59)), None, "until 09:00 the next morning");
    assert_eq!(at("yakin-pc", tue(12, 0)), Some(DenyReason::OutsideHours));
    w.works("shokuin", None, Some("no-such-schedule"));
    let unknown = w.decide(&Req::get(K, "/k/", "shokuin-pc", monday));
    assert_eq!(unknown, None, "an unknown schedule is the profile's own hours");
}

#[test]
fn abiko_8_1_the_block_page_shows_the_persons_own_next_opening() {
    let mut w = city();
    w.user("madoguchi", "staff", &[P]).device("madoguchi-pc", "madoguchi", Pc, Issued, Os::Windows, Approved);
    w.works("madoguchi", None, Some("saturday-duty"));
    let monday = jst(2026, 11, 30, 10, 0);
    let own = w.deny(&Req::get(K, "/k/", "madoguchi-pc", monday)).unwrap();
    assert_eq!(own.reason, DenyReason::OutsideHours);
    assert_eq!(own.retry_at, Some(jst(2026, 12, 1, 8, 30)), "Tuesday 08:30, not the standard week's");
    assert!(own.rule.contains("schedules.saturday-duty"), "{}", own.rule);
    let standard = w.deny(&Req::get(K, "/k/", "shokuin-pc", jst(2026, 11, 28, 10, 0))).unwrap();
    assert_eq!(standard.retry_at, Some(monday - chrono::Duration::minutes(90)), "Monday 08:30");
}

#[test]
fn abiko_8_1_a_supervisor_orders_overtime_for_the_whole_department() {
    let mut w = city();
    w.works("shokuin", Some("総務課"), None);
    w.works("kanri", Some("情報政策課"), None);
    w.grant_department("総務課", tue(17, 15), tue(21, 0));
    assert_eq!(w.decide(&Req::get(K, "/k/", "shokuin-pc", tue(19, 0))), None, "a member of the department");
    assert_eq!(
        w.decide(&Req::get(K, "/k/", "kanri-pc", tue(19, 0))),
        Some(DenyReason::OutsideHours),
        "another department"
    );
    assert_eq!(
        w.decide(&Req::get(K, "/k/", "shokuin-pc", tue(21, 0))),
        Some(DenyReason::OutsideHours),
        "the grant ended"
    );
}

#[test]
fn abiko_5_2_a_number_on_its_check_digit_alone_is_recorded_or_refused_as_configured() {
    let mut w = city();
    let bare = br#"{"app":7,"record":{"note":{"value":"123456789018"}}}"#;
    assert_eq!(w.body(K, &[bare]), None, "low confidence: recorded, passes (the shipped choice)");
    let stamp = br#"{"app":7,"record":{"updated":{"value":"202611241030"}}}"#;
    w.edit_rules(
        "abiko-kintone.toml",
        r#"my_number_low_confidence = "record""#,
        r#"my_number_low_confidence = "block""#,
    );
    assert_eq!(w.body(K, &[bare]), Some(DenyReason::SpecificPersonalInformation), "refused when configured");
    assert_eq!(w.body(K, &[stamp]), None, "a time stamp is plainly something else, even then");
}
