//! The admin console in a real browser (issue 13): Debian's Chromium,
//! headless, driven by playwright-core through one whole session, as a
//! system manager who has never used a command line would work: sign in
//! with the keyboard, approve a councillor's phone and download its
//! certificate bundle once, suspend a user and see the gateway refuse
//! their next request, stop everything and resume, answer "who was
//! blocked and why" from a block page's request id, export CSV, and read
//! it all in English and at 200 % zoom. Screenshots of every screen go to
//! `target/console-screenshots/`. One browser for the whole file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failed step is a failed test")]

mod support;

use serde_json::json;
use support::console::Chromium;
use support::{reason, Enrol, Gateway, Upstream, WsUpstream, ROOT_TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(sekisho_skip_browser, ignore = "built with SEKISHO_SKIP_BROWSER: no Chromium on this machine")]
async fn a_system_manager_runs_the_gateway_from_the_browser() {
    let (up, ws) = (Upstream::start().await, WsUpstream::start().await);
    let gw = Gateway::start(&up, &ws).await;
    let tanaka = gw.enrol("tanaka", Enrol::default()).await;
    gw.admin("PUT", "/v1/users/tanaka", json!({"display_name": "田中 太郎", "role": "staff", "profiles": support::PROFILES, "department": "議会事務局"})).await;
    gw.admin(
        "PUT",
        "/v1/users/giin",
        json!({"display_name": "熊本 花子", "role": "councillor", "profiles": support::PROFILES}),
    )
    .await;
    for path in ["/", "/news", "/drive"] {
        assert_eq!(gw.get_as(&tanaka, "app.localhost", path).await.status(), 200);
    }
    assert_eq!(gw.client().get(gw.url("app.localhost", "/")).send().await.unwrap().status(), 403);
    let console = format!("http://{}/console", gw.admin);
    let mut b = Chromium::start();

    // Sign in with the keyboard only.
    b.goto(&format!("{console}/"));
    b.shot("01-signin.png", None);
    let mut tabs = 0;
    while b.run(json!({"op": "focused"}))["id"] != "token" {
        b.run(json!({"op": "press", "key": "Tab"}));
        tabs += 1;
        assert!(tabs < 5, "Tab never reached the token field");
    }
    assert_eq!(b.run(json!({"op": "focused"}))["label"], "管理用トークン", "the field has its label");
    b.run(json!({"op": "type", "value": ROOT_TOKEN}));
    b.run(json!({"op": "press", "key": "Enter", "nav": true}));
    assert_eq!(b.text("h1"), "今日の状況");
    assert!(b.text("header").contains("root"), "the header names who is signed in");
    assert_eq!(b.count("svg.chart rect.denied"), 12, "the last hour as twelve bars");

    // A councillor's phone: application (様式第1号) → approval → certificate, downloaded once.
    b.submit("nav a[href='/console/devices']");
    b.submit("a[href='/console/apply']");
    // Updated today: a fixed date would one day be older than the rules allow.
    let updated = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let form = [
        ("#a-owner", "giin"),
        ("#a-id", "giin-smartphone"),
        ("#a-version", "17.4"),
        ("#a-sw", "ウイルスバスター"),
        ("#a-sw-date", updated.as_str()),
    ];
    for (field, value) in form {
        b.fill(field, value);
    }
    b.shot("03a-apply.png", None);
    b.submit("form[action='/console/apply'] button[type=submit]");
    assert!(b.text(".notice").contains("申請を受け付けました"));
    b.goto(&format!("{console}/"));
    assert!(b.text("[data-live=pending]").contains('1'), "one pending application");
    b.shot("02-today.png", None);
    b.submit("nav a[href='/console/devices']");
    b.shot("03-devices.png", None);
    b.submit("a[href='/console/devices/giin-smartphone']");
    assert!(b.text("main").contains("熊本 花子"), "the application names the councillor");
    b.shot("04-device-pending.png", None);
    b.fill("#approve-reason", "様式第1号を確認。私物スマートフォン、ウイルス対策ソフトあり");
    b.submit("form[action$='/approve'] button[type=submit]");
    assert!(b.text(".notice").contains("承認しました"));
    b.shot("05-device-approved.png", None);
    b.submit("form[action$='/certificate'] button[type=submit]");
    let otp = b.text("#otp");
    assert_eq!(otp.trim().len(), 19, "the one-time password: {otp}");
    b.shot("06-certificate.png", None);
    let zip = gw.path("bundle.zip");
    let saved = b.run(json!({"op": "download", "sel": "form[action^='/console/enrollments/'] button", "path": zip}));
    assert_eq!(saved["name"], "giin-smartphone-enrollment.zip");
    let bytes = std::fs::read(&zip).unwrap();
    assert!(bytes.starts_with(b"PK") && bytes.windows(13).any(|w| w == b".mobileconfig"), "a ZIP with the profile");
    let (_, devices) = gw.admin_call("GET", "/v1/devices", ROOT_TOKEN, None).await;
    let phone = devices["devices"].as_array().unwrap().iter().find(|d| d["id"] == "giin-smartphone").cloned().unwrap();
    assert_eq!(phone["status"], "approved");

    // Suspend at 2 a.m.: the gateway refuses tanaka's next request; lift it.
    b.goto(&format!("{console}/people"));
    b.fill("#q", "田中");
    b.submit("form[role=search] button[type=submit]");
    b.shot("07-people.png", None);
    b.submit("a[href='/console/people/tanaka']");
    b.fill("#suspend-reason", "   ");
    assert_eq!(b.submit("form[action$='/suspend'] button[type=submit]")["status"], 400);
    assert!(b.text("main").contains("理由を入力してください"), "a blank reason is refused in words");
    b.shot("08a-error-blank-reason.png", None);
    b.goto(&format!("{console}/people/tanaka"));
    b.fill("#suspend-reason", "午前2時、本人から端末紛失の電話連絡");
    b.submit("form[action$='/suspend'] button[type=submit]");
    assert!(b.text(".notice").contains("利用を停止しました"));
    b.shot("08-person-suspended.png", None);
    let blocked = gw.get_as(&tanaka, "app.localhost", "/after-suspension").await;
    assert_eq!((blocked.status().as_u16(), reason(&blocked).as_deref()), (403, Some("user_suspended")));
    let request_id = blocked.headers()["sekisho-request-id"].to_str().unwrap().to_owned();
    b.fill("#unsuspend-reason", "端末が見つかったため");
    b.submit("form[action$='/unsuspend'] button[type=submit]");
    assert_eq!(gw.get_as(&tanaka, "app.localhost", "/after-lift").await.status(), 200);

    // Emergency stop, confirmed with its effect named, then resume.
    b.submit("nav a[href='/console/stop']");
    b.shot("09-stop.png", None);
    b.fill("#stop-reason", "不正アクセスの疑い（情報政策課からの連絡）");
    b.submit("form[action='/console/stop/confirm'] button[type=submit]");
    assert!(b.text(".effect").contains("すべての利用者のすべてのサービスが遮断されます"));
    b.shot("10-stop-confirm.png", None);
    b.run(json!({"op": "check", "sel": "#confirmed"}));
    b.submit("form[action='/console/stop'] button[type=submit]");
    let stopped = gw.get_as(&tanaka, "app.localhost", "/during-stop").await;
    assert_eq!((stopped.status().as_u16(), reason(&stopped).as_deref()), (503, Some("emergency_stop")));
    b.goto(&format!("{console}/"));
    assert!(b.text(".card.alert").contains("停止中"));
    b.shot("11-today-stopped.png", None);
    b.submit("a[href='/console/stop']");
    b.fill("#lift-all", "調査の結果、問題なし");
    b.submit("form[action='/console/stop/lift'] button[type=submit]");
    assert!(b.text(".notice").contains("再開しました"));
    assert_eq!(gw.get_as(&tanaka, "app.localhost", "/after-resume").await.status(), 200);

    // Who was blocked, and why: the request id from the block page finds its line; CSV for the auditor.
    gw.audit_lines("tanaka").await;
    b.submit("nav a[href='/console/audit']");
    b.fill("#request_id", &request_id);
    b.submit("form[role=search] button[type=submit]");
    assert!(b.text("tr.hit").contains("利用停止中"), "the line of that request, with its reason");
    b.shot("12-audit-request-id.png", None);
    b.submit("a[href*='decision=deny']");
    assert!(b.text("main").contains("遮断された人と理由"), "yesterday's blocks, summed up by person");
    let today = (chrono::Utc::now() + chrono::Duration::hours(9)).date_naive();
    b.goto(&format!("{console}/audit?kind=requests&decision=deny&since={today}T00:00"));
    let summary = b.text("main .panel");
    assert!(
        summary.contains("tanaka") && summary.contains("利用停止中") && summary.contains("緊急停止中"),
        "{summary}"
    );
    b.shot("13-audit-blocked-today.png", None);
    b.goto(&format!("{console}/audit?kind=requests&user=tanaka"));
    let csv = gw.path("tanaka.csv");
    let saved = b.run(json!({"op": "download", "sel": "a[href^='/console/audit.csv']", "path": csv}));
    assert_eq!(saved["name"], "sekisho-requests.csv");
    let csv = std::fs::read_to_string(&csv).unwrap();
    assert!(
        csv.contains("time,request_id,user") && csv.contains(&request_id) && csv.contains("user_suspended"),
        "{csv}"
    );

    // Hours, rules, the admin trail.
    b.submit("nav a[href='/console/hours']");
    b.shot("14-hours.png", None);
    b.submit("nav a[href='/console/rules']");
    b.shot("15-rules.png", None);
    b.goto(&format!("{console}/audit?kind=admin"));
    assert!(b.text("main").contains("user.suspend"));
    b.shot("16-audit-admin.png", None);

    // English, and 200 % zoom (a window half as wide, in CSS pixels): nothing runs off the side.
    b.goto(&format!("{console}/people/tanaka"));
    b.submit("header .lang a");
    assert_eq!(b.text("nav a[aria-current=page]"), "People");
    b.shot("17-person-en.png", None);
    b.submit("header .lang a");
    for page in ["/", "/people/tanaka", "/devices/giin-smartphone", "/audit", "/stop"] {
        b.goto(&format!("{console}{page}"));
        let w = b.run(json!({"op": "overflow", "width": 640}));
        assert!(w["scroll"].as_u64() <= w["client"].as_u64(), "{page} at 200 %: {w}");
    }
    b.goto(&format!("{console}/"));
    b.shot("18-today-200pct.png", Some(640));

    let errors = b.run(json!({"op": "errors"}));
    assert_eq!(errors["errors"], json!([]), "no script error and no CSP violation on any page");
    b.submit("form.signout button");
    assert!(b.text("main").contains("サインアウトしました"));
}
