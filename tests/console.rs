//! The admin console over HTTP (issue 13), against the real binary: a
//! person signs in with their own token, pages say who they are, and every
//! change is refused, with nothing changed, when it lacks the CSRF token,
//! comes from another origin, arrives after the session ended, or comes
//! from a role that may not act. What the console does is read back from
//! the admin API and seen on the gateway itself.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failed step is a failed test")]

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::console::Console;
use support::{Enrol, Gateway, Upstream, WsUpstream, AUDITOR_TOKEN, GENERAL_TOKEN, ROOT_TOKEN, SUPERVISOR_TOKEN};

async fn setup_with(extra: &str) -> (Upstream, WsUpstream, Gateway) {
    let (up, ws) = (Upstream::start().await, WsUpstream::start().await);
    let gw = Gateway::start_with(&up, &ws, extra).await;
    (up, ws, gw)
}

async fn user(gw: &Gateway, id: &str) -> Value {
    let (_, users) = gw.admin_call("GET", "/v1/users", ROOT_TOKEN, None).await;
    users["users"].as_array().unwrap().iter().find(|u| u["id"] == id).cloned().unwrap()
}

async fn device_status(gw: &Gateway, id: &str) -> String {
    let (_, devices) = gw.admin_call("GET", "/v1/devices", ROOT_TOKEN, None).await;
    let d = devices["devices"].as_array().unwrap().iter().find(|d| d["id"] == id).cloned().unwrap();
    d["status"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_person_signs_in_with_their_own_token_and_every_page_names_them_and_carries_the_security_headers() {
    let (_up, _ws, gw) = setup_with("").await;
    gw.enrol("tanaka", Enrol::default()).await;
    let mut c = Console::new(&gw);
    let first = c.get("/console/").await;
    assert_eq!((first.status, first.location()), (303, Some("/console/signin")), "no session: to the sign-in page");

    let signed = c.sign_in(ROOT_TOKEN).await;
    assert_eq!(signed.status, 303, "{}", signed.body);
    let cookie = signed.header("set-cookie").unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "a plain-HTTP admin listener cannot keep a Secure cookie: {cookie}");
    assert!(!cookie.contains(ROOT_TOKEN), "the session id is not the credential");

    for path in [
        "/console/",
        "/console/devices",
        "/console/people",
        "/console/people/tanaka",
        "/console/stop",
        "/console/hours",
        "/console/audit",
        "/console/audit?kind=admin",
        "/console/rules",
        "/console/devices/tanaka-pc",
    ] {
        let page = c.get(path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert!(page.body.contains(">root<"), "{path} names who is signed in");
        assert!(page.body.contains("情報システム責任者") && page.body.contains("統括管理者"), "{path} names the roles");
        let csp = page.header("content-security-policy").unwrap();
        assert!(!csp.contains("unsafe-inline") && csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(page.header("x-frame-options"), Some("DENY"));
        assert_eq!(page.header("cache-control"), Some("no-store"), "{path} has personal data");
        assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
        assert!(!page.body.contains("style=") && !page.body.contains("<script>"), "{path}: no inline style or script");
    }
    let english = c.get("/console/lang?to=en&back=/console/people").await;
    assert_eq!(english.location(), Some("/console/people"));

    let (_, audit) = gw.admin_call("GET", "/v1/audit?action=console.signin", ROOT_TOKEN, None).await;
    assert_eq!(audit["records"][0]["actor"], "root", "the sign-in is an admin audit record: {audit}");

    let out = c.post("/console/signout", &[]).await;
    assert_eq!((out.status, out.location()), (303, Some("/console/signin?bye=1")));
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    let after = c.get("/console/").await;
    assert_eq!(after.status, 303, "the old cookie no longer opens anything");
}

#[tokio::test]
async fn the_dashboards_self_check_says_what_to_do_in_the_consoles_language() {
    // The test gateway's upstream is plain HTTP and it names no NTP server:
    // two warnings from the in-gateway `doctor`, each with a next step.
    let (_up, _ws, gw) = setup_with("").await;
    let mut c = Console::new(&gw);
    c.sign_in(ROOT_TOKEN).await;
    let mut page = c.get("/console/").await;
    for _ in 0..50 {
        if !page.body.contains("自己診断はまだ") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        page = c.get("/console/").await;
    }
    for japanese in [
        "接続先",
        "暗号化なしの HTTP で接続しています（TLS なし）",
        "同じホスト上のサービスでない限り、接続先は https:// にしてください",
        "時刻",
        "[clock] ntp_server が未設定のため、時刻のずれを測っていません",
        "[clock] に市の NTP サーバーを設定し",
        // The state store in words, not the API's field names.
        "<dt>保存先</dt>",
        "保存先なしで動ける時間</dt><dd>30 秒（過ぎるとすべての要求を 503 で断ります）",
        "最後のエラー</dt><dd>なし",
    ] {
        assert!(page.body.contains(japanese), "`{japanese}` on the Japanese dashboard: {}", page.body);
    }
    let kind = match std::env::var("SEKISHO_TEST_STORE").as_deref() {
        Ok("postgres") => "<dt>種類</dt><dd>PostgreSQL</dd>",
        _ => "<dt>種類</dt><dd>SQLite</dd>",
    };
    assert!(page.body.contains(kind), "`{kind}` on the dashboard: {}", page.body);
    for english in [
        "use an https:// upstream",
        "reachable over plain HTTP",
        "the offset is not measured",
        "confirmed_age_secs",
        "state_max_age_secs",
    ] {
        assert!(!page.body.contains(english), "no English `{english}` on the Japanese dashboard");
    }

    let switched = c.get("/console/lang?to=en&back=/console/").await;
    let lang = switched.header("set-cookie").and_then(|v| v.split(';').next()).unwrap().to_owned();
    let both = format!("{}; {lang}", c.cookie.clone().unwrap());
    let english = c.send("GET", "/console/", None, None, Some(&both)).await;
    assert!(english.body.contains("Next step: use an https:// upstream unless it is on this host"), "{}", english.body);
    assert!(english.body.contains("reachable over plain HTTP (no TLS)"), "{}", english.body);
    assert!(!english.body.contains("接続先は https://"), "no Japanese step on the English dashboard");

    // The admin API and the CLI keep the English words.
    let (_, status) = gw.admin_call("GET", "/v1/status", ROOT_TOKEN, None).await;
    let findings = status["health"]["findings"].as_array().unwrap();
    assert!(
        findings.iter().any(|f| f["next_step"] == "use an https:// upstream unless it is on this host"),
        "{status}"
    );
    assert!(findings.iter().any(|f| f["level"] == "ok" && f["next_step"] == ""), "{status}");
}

#[tokio::test]
async fn reasons_the_gateway_wrote_itself_read_in_japanese_and_a_persons_own_words_as_written() {
    let (_up, _ws, gw) = setup_with("").await;
    // No reason given: the API writes one ("created"); then a person's own.
    gw.admin("PUT", "/v1/users/giin", json!({"display_name": "議員", "role": "councillor", "profiles": ["app"]})).await;
    gw.admin("POST", "/v1/users/giin/suspend", json!({"reason": "created a mess"})).await;
    let mut c = Console::new(&gw);
    c.sign_in(ROOT_TOKEN).await;
    let page = c.get("/console/audit?kind=admin").await;
    for japanese in ["新規登録", "管理トークンでコンソールにサインイン"] {
        assert!(page.body.contains(japanese), "`{japanese}` in the Japanese trail: {}", page.body);
    }
    assert!(page.body.contains("created a mess"), "a person's words as written");
    assert!(
        !page.body.contains("<td>created</td>") && !page.body.contains("signed in to the console"),
        "{}",
        page.body
    );

    let (_, trail) = gw.admin_call("GET", "/v1/audit?action=user.put", ROOT_TOKEN, None).await;
    assert_eq!(trail["records"][0]["reason"], "created", "the record keeps the words as written: {trail}");
}

#[tokio::test]
async fn failed_sign_ins_share_the_admin_apis_lockout() {
    let (_up, _ws, gw) = setup_with("\n[limits]\nadmin_failures_per_minute = 3\n").await;
    let mut c = Console::new(&gw);
    for _ in 0..4 {
        let wrong = c.sign_in("not-a-token").await;
        assert!(matches!(wrong.status, 401 | 429), "{}", wrong.status);
        assert!(!wrong.body.contains("not-a-token"), "the credential is never echoed");
    }
    let right = c.sign_in(ROOT_TOKEN).await;
    assert_eq!(right.status, 429, "locked out, even with the right token");
    assert!(right.header("retry-after").is_some());
    assert_eq!(gw.admin_call("GET", "/v1/status", ROOT_TOKEN, None).await.0, 429, "and so is the API");
    assert!(!gw.log().contains("not-a-token"));
}

#[tokio::test]
async fn a_change_without_the_csrf_token_or_from_another_origin_is_refused_and_nothing_changes() {
    let (_up, _ws, gw) = setup_with("").await;
    gw.enrol("sato", Enrol::default()).await;
    let mut c = Console::new(&gw);
    c.sign_in(GENERAL_TOKEN).await;
    let page = c.get("/console/people/sato").await;
    let csrf = page.csrf().unwrap();
    let cookie = c.cookie.clone();
    let origin = c.origin();
    let reason = ("reason", "端末紛失の報告");
    let path = "/console/people/sato/suspend";
    type Attempt<'a> = (&'a str, Vec<(&'a str, &'a str)>, Option<&'a str>);
    let attempts: [Attempt; 4] = [
        ("no CSRF token", vec![reason], Some(&origin)),
        ("a wrong CSRF token", vec![reason, ("csrf", "forged")], Some(&origin)),
        ("another origin", vec![reason, ("csrf", &csrf)], Some("http://evil.example")),
        ("an opaque origin", vec![reason, ("csrf", &csrf)], Some("null")),
    ];
    for (what, fields, origin) in attempts {
        let refused = c.send("POST", path, Some(&fields), origin, cookie.as_deref()).await;
        assert_eq!(refused.status, 403, "{what}: {}", refused.body);
        assert!(user(&gw, "sato").await["suspended"].is_null(), "{what}: nothing changed");
    }
    let cross = reqwest::Client::new()
        .post(format!("http://{}{path}", gw.admin))
        .header("cookie", cookie.clone().unwrap())
        .header("sec-fetch-site", "cross-site")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("reason=x&csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403, "a cross-site fetch");
    assert!(user(&gw, "sato").await["suspended"].is_null());

    let done = c.post(path, &[reason]).await;
    assert_eq!((done.status, done.location()), (303, Some("/console/people/sato")), "{}", done.body);
    assert_eq!(user(&gw, "sato").await["suspended"]["reason"], "端末紛失の報告");
    let next = c.get("/console/people/sato").await;
    assert!(next.body.contains("利用を停止しました"), "the next page says what was done");
}

#[tokio::test]
async fn after_the_session_ends_a_change_is_refused_and_nothing_changes() {
    let (_up, _ws, gw) = setup_with("\n[admin.console]\nidle_secs = 1\n").await;
    gw.enrol("suzuki", Enrol::default()).await;
    let mut c = Console::new(&gw);
    c.sign_in(GENERAL_TOKEN).await;
    c.get("/console/people/suzuki").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let late = c.post("/console/people/suzuki/suspend", &[("reason", "遅すぎた操作")]).await;
    assert_eq!(late.status, 401, "{}", late.body);
    assert!(late.body.contains("操作は行われていません"));
    assert!(user(&gw, "suzuki").await["suspended"].is_null(), "nothing changed");
    assert_eq!(c.get("/console/people/suzuki").await.location(), Some("/console/signin"));
}

#[tokio::test]
async fn a_role_that_may_not_act_is_not_offered_the_action_and_is_refused_anyway() {
    let (_up, _ws, gw) = setup_with("").await;
    gw.enrol("ito", Enrol::default()).await;
    gw.enrol("giin", Enrol { role: "councillor", kind: "smartphone", ownership: "personal", approve: false }).await;

    // An auditor reads, and may not suspend.
    let mut auditor = Console::new(&gw);
    auditor.sign_in(AUDITOR_TOKEN).await;
    let page = auditor.get("/console/people/ito").await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("/console/people/ito/suspend"), "no suspend form for an auditor");
    let refused = auditor.post("/console/people/ito/suspend", &[("reason", "権限外")]).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(user(&gw, "ito").await["suspended"].is_null());
    let stop = auditor.post("/console/stop", &[("reason", "権限外"), ("confirmed", "1")]).await;
    assert_eq!(stop.status, 403);
    assert!(gw.admin_call("GET", "/v1/status", ROOT_TOKEN, None).await.1["emergency_stop"].is_null());

    // A general administrator may revoke, not approve (第5条: the system manager decides).
    let mut general = Console::new(&gw);
    general.sign_in(GENERAL_TOKEN).await;
    let pending = general.get("/console/devices/giin-smartphone").await;
    assert!(!pending.body.contains("/approve"), "no approve form for a general administrator");
    let refused = general.post("/console/devices/giin-smartphone/approve", &[("reason", "権限外")]).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(device_status(&gw, "giin-smartphone").await, "pending");

    // A supervisor orders overtime for their own department only, and sees nothing else.
    let mut head = Console::new(&gw);
    head.sign_in(SUPERVISOR_TOKEN).await;
    assert_eq!(head.get("/console/audit").await.status, 403);
    assert_eq!(head.get("/console/people").await.status, 403);
    let hours = head.get("/console/hours").await;
    assert_eq!(hours.status, 200);
    let other = head
        .post(
            "/console/overtime",
            &[("department", "市民課"), ("reason", "決算"), ("start", "2030-01-10T17:00"), ("end", "2030-01-10T20:00")],
        )
        .await;
    assert_eq!(other.status, 403, "{}", other.body);
    let own = head
        .post(
            "/console/overtime",
            &[("department", "総務課"), ("reason", "決算"), ("start", "2030-01-10T17:00"), ("end", "2030-01-10T20:00")],
        )
        .await;
    assert_eq!(own.status, 303, "{}", own.body);
    let (_, grants) = gw.admin_call("GET", "/v1/overtime", ROOT_TOKEN, None).await;
    let grants = grants["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 1, "only the own department's grant: {grants:?}");
    assert_eq!(
        (grants[0]["department"].as_str(), grants[0]["approver"].as_str()),
        (Some("総務課"), Some("soumu-kacho"))
    );
    assert_eq!(grants[0]["start"], "2030-01-10T08:00:00Z", "the form's time is Japan time");
}

#[tokio::test]
async fn a_suspension_from_the_console_is_in_force_when_the_page_answers_and_lifting_restores_access() {
    let (_up, _ws, gw) = setup_with("").await;
    let kato = gw.enrol("kato", Enrol::default()).await;
    assert_eq!(gw.get_as(&kato, "app.localhost", "/").await.status(), 200);
    let mut c = Console::new(&gw);
    c.sign_in(GENERAL_TOKEN).await;
    c.get("/console/people/kato").await;
    let done = c.post("/console/people/kato/suspend", &[("reason", "午前2時 端末紛失の連絡"), ("until", "")]).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let blocked = gw.get_as(&kato, "app.localhost", "/").await;
    assert_eq!((blocked.status().as_u16(), support::reason(&blocked).as_deref()), (403, Some("user_suspended")));

    c.get("/console/people/kato").await;
    let lifted = c.post("/console/people/kato/unsuspend", &[("reason", "端末が見つかった")]).await;
    assert_eq!(lifted.status, 303, "{}", lifted.body);
    assert_eq!(gw.get_as(&kato, "app.localhost", "/").await.status(), 200);

    c.get("/console/people/kato").await;
    let blank = c.post("/console/people/kato/suspend", &[("reason", "   ")]).await;
    assert_eq!(blank.status, 400, "a reason is required: {}", blank.body);
    assert!(blank.body.contains("理由を入力してください") && blank.body.contains("変更は行われていません"));
    assert!(user(&gw, "kato").await["suspended"].is_null());
}

#[tokio::test]
async fn a_certificate_bundle_is_handed_out_once_and_its_password_shown_on_the_issuing_page_only() {
    let (_up, _ws, gw) = setup_with("").await;
    gw.enrol("giin", Enrol { role: "councillor", kind: "smartphone", ownership: "personal", approve: false }).await;
    let mut c = Console::new(&gw);
    c.sign_in(ROOT_TOKEN).await;
    c.get("/console/devices/giin-smartphone").await;
    let approved = c.post("/console/devices/giin-smartphone/approve", &[("reason", "様式第1号 確認")]).await;
    assert_eq!(approved.status, 303, "{}", approved.body);
    assert_eq!(device_status(&gw, "giin-smartphone").await, "approved");

    c.get("/console/devices/giin-smartphone").await;
    let issued = c.post("/console/devices/giin-smartphone/certificate", &[("days", "365")]).await;
    assert_eq!(issued.status, 201, "{}", issued.body);
    assert!(!issued.body.contains("PRIVATE KEY"), "the page never shows a key");
    let otp_at = issued.body.find("id=\"otp\">").unwrap() + "id=\"otp\">".len();
    let otp: String = issued.body[otp_at..].chars().take_while(|c| *c != '<').collect();
    assert_eq!(otp.len(), 19, "four groups of four: {otp}");
    let action_at = issued.body.find("action=\"/console/enrollments/").unwrap() + "action=\"".len();
    let download: String = issued.body[action_at..].chars().take_while(|c| *c != '"').collect();
    c.csrf = issued.csrf();

    let zip = c.post(&download, &[]).await;
    assert_eq!(zip.status, 200);
    assert_eq!(zip.header("content-type"), Some("application/zip"));
    assert!(zip.header("content-disposition").unwrap().contains("giin-smartphone-enrollment.zip"));
    for name in ["giin-smartphone.mobileconfig", "giin-smartphone.p12", "giin-smartphone-android-ja.txt"] {
        assert!(zip.body.contains(name), "the ZIP holds {name}");
    }
    assert_eq!(c.post(&download, &[]).await.status, 404, "once only");
    assert!(!c.get("/console/devices/giin-smartphone").await.body.contains(&otp), "nowhere else");
}

#[tokio::test]
async fn the_audit_trail_finds_a_request_by_its_id_filters_and_exports_csv() {
    let (_up, _ws, gw) = setup_with("").await;
    let mori = gw.enrol("mori", Enrol::default()).await;
    assert_eq!(gw.get_as(&mori, "app.localhost", "/ok").await.status(), 200);
    gw.admin("POST", "/v1/users/mori/restrict", json!({"reason": "閲覧のみ"})).await;
    let blocked = gw
        .client()
        .post(gw.url("app.localhost", "/write"))
        .header("device-attestation", mori.token("app.localhost"))
        .send()
        .await
        .unwrap();
    assert_eq!(blocked.status(), 403);
    let id = blocked.headers()["sekisho-request-id"].to_str().unwrap().to_owned();
    gw.audit_lines("mori").await;

    let (status, api) =
        gw.admin_call("GET", &format!("/v1/audit?kind=requests&request_id={id}"), AUDITOR_TOKEN, None).await;
    assert_eq!(status, 200, "{api}");
    assert_eq!(api["records"].as_array().unwrap().len(), 1);
    assert_eq!(api["records"][0]["reason"], "user_restricted");

    let mut c = Console::new(&gw);
    c.sign_in(AUDITOR_TOKEN).await;
    let found = c.get(&format!("/console/audit?kind=requests&request_id={id}")).await;
    assert_eq!(found.status, 200);
    assert!(found.body.contains(&id) && found.body.contains("閲覧のみに制限中"), "{}", found.body);
    assert!(!found.body.contains("/ok"), "only the line asked for");

    let csv = c.get("/console/audit.csv?kind=requests&user=mori").await;
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    let lines: Vec<&str> = csv.body.trim_start_matches('\u{feff}').lines().collect();
    assert!(lines[0].starts_with("time,request_id,user,device"), "{}", lines[0]);
    assert_eq!(lines.len(), 3, "a header and mori's two requests: {lines:?}");
    assert!(lines[1].contains(&id) && lines[1].contains("user_restricted"), "newest first: {}", lines[1]);

    let admin_csv = c.get("/console/audit.csv?kind=admin&user=mori").await;
    assert!(admin_csv.body.contains("user.restrict") && admin_csv.body.contains("閲覧のみ"), "{}", admin_csv.body);
    let (_, none) =
        gw.admin_call("GET", "/v1/audit?kind=admin&actor=kansa&since=2000-01-01T00:00:00Z", ROOT_TOKEN, None).await;
    assert!(none["records"].as_array().unwrap().iter().all(|r| r["actor"] == "kansa"), "{none}");
}

#[tokio::test]
async fn over_tls_the_session_cookie_is_secure_and_host_only_and_strict_transport_is_asked() {
    let tls = "\n[admin.tls]\ncert = \"certs/server.pem\"\nkey = \"certs/server.key\"\n";
    let (_up, _ws, gw) = setup_with(tls).await;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(gw.path("certs/dev-ca.pem")).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let origin = format!("https://127.0.0.1:{}", gw.admin.port());
    let signed = client
        .post(format!("{origin}/console/signin"))
        .header("origin", &origin)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={ROOT_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 303);
    assert!(signed.headers().contains_key("strict-transport-security"));
    let cookie = signed.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("__Host-sekisho_console=") && cookie.contains("; Secure"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_owned();
    let page = client.get(format!("{origin}/console/")).header("cookie", &pair).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let unprefixed = pair.replace("__Host-sekisho_console", "sekisho_console");
    let other = client.get(format!("{origin}/console/")).header("cookie", &unprefixed).send().await.unwrap();
    assert_eq!(other.status(), 303, "only the __Host- cookie opens a TLS console");
    let http_origin = client
        .post(format!("{origin}/console/signout"))
        .header("origin", format!("http://127.0.0.1:{}", gw.admin.port()))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(http_origin.status(), 403, "a page served over plain HTTP is another origin");
}

#[tokio::test]
async fn an_ict_supporter_files_a_phone_application_in_the_browser_which_starts_pending() {
    let (_up, _ws, gw) = setup_with("").await;
    gw.admin("PUT", "/v1/users/giin", json!({"display_name": "議員", "role": "councillor", "profiles": ["app"]})).await;
    let mut c = Console::new(&gw);
    c.sign_in(support::APPLICANT_TOKEN).await;
    let home = c.get("/console/").await;
    assert!(home.body.contains("/console/apply"), "an applicant is offered the form, nothing else");
    assert_eq!(c.get("/console/devices").await.status, 403);
    c.get("/console/apply").await;
    let fields = [
        ("owner", "giin"),
        ("id", "giin-iphone"),
        ("kind", "smartphone"),
        ("ownership", "personal"),
        ("os", "ios"),
        ("os_version", "17.4.1"),
        ("software", "ウイルスバスター"),
        ("software_updated", "2026-11-20"),
        ("key_alg", "EdDSA"),
        ("public_key", ""),
    ];
    let bad_version: Vec<_> =
        fields.iter().map(|&(k, v)| if k == "os_version" { (k, "seventeen") } else { (k, v) }).collect();
    let refused = c.post("/console/apply", &bad_version).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(gw.admin_call("GET", "/v1/devices", ROOT_TOKEN, None).await.1["devices"].as_array().unwrap().is_empty());
    let filed = c.post("/console/apply", &fields).await;
    assert_eq!((filed.status, filed.location()), (303, Some("/console/apply")), "{}", filed.body);
    let (_, devices) = gw.admin_call("GET", "/v1/devices", ROOT_TOKEN, None).await;
    let d = &devices["devices"][0];
    assert_eq!(
        (d["id"].as_str(), d["status"].as_str(), d["owner"].as_str()),
        (Some("giin-iphone"), Some("pending"), Some("giin"))
    );
    assert_eq!(d["security_software"]["name"], "ウイルスバスター");
    let (_, audit) = gw.admin_call("GET", "/v1/audit?action=device.apply", ROOT_TOKEN, None).await;
    assert_eq!(audit["records"][0]["actor"], "agent", "filed under the applicant's own name");
}
