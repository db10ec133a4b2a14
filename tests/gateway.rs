//! The gateway end to end: the real binary on loopback with real TLS, a
//! real upstream that records what reaches it, and real HTTP clients.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failed step is a failed test")]

mod support;

use std::time::{Duration, Instant};

use chrono::Timelike;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use support::{
    closed_within, reason, Enrol, Gateway, Person, TlsUpstream, Upstream, WsUpstream, APPLICANT_TOKEN, AUDITOR_TOKEN,
    GENERAL_TOKEN, ROOT_TOKEN, SUPERVISOR_TOKEN,
};

async fn setup() -> (Upstream, WsUpstream, Gateway) {
    let up = Upstream::start().await;
    let ws = WsUpstream::start().await;
    let gw = Gateway::start(&up, &ws).await;
    (up, ws, gw)
}

#[tokio::test]
async fn a_registered_device_passes_and_the_upstream_sees_only_gateway_headers() {
    let (up, _ws, gw) = setup().await;
    let alice = gw.enrol("alice", Enrol::default()).await;
    let resp = gw
        .client()
        .get(gw.url("app.localhost", "/hello"))
        .header("device-attestation", alice.token("app.localhost"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x_forwarded_for", "7.7.7.7")
        .header("x-real-ip", "8.8.8.8")
        .header("forwarded", "for=9.9.9.9")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("sekisho-request-id"));
    let seen = up.last();
    assert_eq!(seen.path, "/hello");
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-forwarded-host"), Some(format!("app.localhost:{}", gw.https.port()).as_str()));
    for gone in ["device-attestation", "x_forwarded_for", "x-real-ip", "forwarded"] {
        assert_eq!(seen.header(gone), None, "{gone} reached the upstream");
    }
    let lines = gw.audit_lines("alice").await;
    let last = lines.last().unwrap();
    assert_eq!(
        (last["decision"].as_str(), last["status"].as_u64(), last["device"].as_str()),
        (Some("allow"), Some(200), Some("alice-pc"))
    );
    assert!(last["time"].as_str().unwrap().ends_with("+09:00"), "audit time is in Asia/Tokyo: {last}");
}

#[tokio::test]
async fn http2_clients_are_served_over_tls() {
    let (_up, _ws, gw) = setup().await;
    let bob = gw.enrol("bob", Enrol::default()).await;
    let resp = gw.get_as(&bob, "app.localhost", "/h2").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
}

#[tokio::test]
async fn each_policy_denial_names_its_reason() {
    let (up, _ws, gw) = setup().await;
    let staff = gw.enrol("staff1", Enrol::default()).await;
    let pending = gw.enrol("pending1", Enrol { approve: false, ..Enrol::default() }).await;
    let personal = gw.enrol("personal1", Enrol { ownership: "personal", ..Enrol::default() }).await;
    let client = gw.client();
    let cases: Vec<(&str, reqwest::RequestBuilder, u16)> = vec![
        ("attestation_missing", client.get(gw.url("app.localhost", "/")), 403),
        (
            "attestation_invalid",
            client.get(gw.url("app.localhost", "/")).header("device-attestation", "not.a.token"),
            403,
        ),
        (
            "attestation_invalid",
            client.get(gw.url("app.localhost", "/")).header("device-attestation", staff.token("office.localhost")),
            403,
        ),
        (
            "device_pending",
            client.get(gw.url("app.localhost", "/")).header("device-attestation", pending.token("app.localhost")),
            403,
        ),
        (
            "device_not_permitted",
            client.get(gw.url("app.localhost", "/")).header("device-attestation", personal.token("app.localhost")),
            403,
        ),
        (
            "untrusted_network",
            client.get(gw.url("office.localhost", "/")).header("device-attestation", staff.token("office.localhost")),
            403,
        ),
        (
            "outside_hours",
            client.get(gw.url("hours.localhost", "/")).header("device-attestation", staff.token("hours.localhost")),
            403,
        ),
        (
            "policy_not_in_force",
            client.get(gw.url("expired.localhost", "/")).header("device-attestation", staff.token("expired.localhost")),
            403,
        ),
        (
            "feature_not_permitted",
            client
                .get(gw.url("features.localhost", "/admin"))
                .header("device-attestation", staff.token("features.localhost")),
            403,
        ),
        ("unknown_host", client.get(gw.url("nowhere.localhost", "/")), 421),
    ];
    for (want, request, status) in cases {
        let resp = request.send().await.unwrap();
        assert_eq!((reason(&resp).as_deref(), resp.status().as_u16()), (Some(want), status), "{want}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["reason"], want);
        assert!(body["request_id"].as_str().is_some_and(|s| !s.is_empty()));
    }
    // Every refusal's audit line names the address it came from, those
    // refused before a profile was found (an unknown host) included.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let trail = std::fs::read_to_string(gw.path("data/audit.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = trail
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["decision"].is_string())
        .collect();
    assert!(lines.iter().any(|l| l["reason"] == "unknown_host"), "{trail}");
    for line in &lines {
        assert_eq!(line["client"], "127.0.0.1", "{line}");
    }
    let allowed = client
        .get(gw.url("features.localhost", "/drive/file"))
        .header("device-attestation", staff.token("features.localhost"))
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200, "an allowed path of a path-limited route passes");
    assert!(
        up.seen().iter().all(|s| s.path == "/drive/file"),
        "no denied request reached the upstream: {:?}",
        up.seen()
    );
}

/// A request to office.localhost, which trusts 10.0.0.0/8 and believes the
/// proxy 127.0.0.1, with `xff` as its X-Forwarded-For.
fn via_office_proxy(gw: &Gateway, who: &Person, xff: &str) -> reqwest::RequestBuilder {
    gw.client()
        .get(gw.url("office.localhost", "/"))
        .header("device-attestation", who.token("office.localhost"))
        .header("x-forwarded-for", xff)
}

#[tokio::test]
async fn a_trusted_proxy_forwarded_address_decides_the_network() {
    let (_up, _ws, gw) = setup().await;
    let carol = gw.enrol("carol", Enrol::default()).await;
    let call = |xff: &'static str| via_office_proxy(&gw, &carol, xff).send();
    assert_eq!(call("10.1.2.3").await.unwrap().status(), 200);
    assert_eq!(reason(&call("203.0.113.5").await.unwrap()).as_deref(), Some("untrusted_network"));
    assert_eq!(
        reason(&call("10.1.2.3, 203.0.113.5").await.unwrap()).as_deref(),
        Some("untrusted_network"),
        "the right-most untrusted hop is the client"
    );
}

#[tokio::test]
async fn an_ipv4_client_of_a_dual_stack_listener_is_judged_and_audited_by_its_ipv4_address() {
    let (up, ws) = (Upstream::start().await, WsUpstream::start().await);
    let gw = Gateway::start_dual_stack(&up, &ws).await;
    let carol = gw.enrol("carol", Enrol::default()).await;
    // On the `[::]` socket the peer is `::ffff:127.0.0.1`; app.localhost
    // trusts 127.0.0.0/8.
    assert_eq!(gw.get_as(&carol, "app.localhost", "/").await.status(), 200);
    let call = |xff: &'static str| via_office_proxy(&gw, &carol, xff).send();
    assert_eq!(call("10.1.2.3").await.unwrap().status(), 200);
    assert_eq!(call("::ffff:10.1.2.3").await.unwrap().status(), 200);
    assert_eq!(reason(&call("::ffff:203.0.113.5").await.unwrap()).as_deref(), Some("untrusted_network"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let trail = std::fs::read_to_string(gw.path("data/audit.jsonl")).unwrap();
    let clients: Vec<String> = trail
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["profile"] == "app" || v["profile"] == "office")
        .map(|v| v["client"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(clients, ["127.0.0.1", "10.1.2.3", "10.1.2.3", "203.0.113.5"]);
}

#[tokio::test]
async fn posture_claims_below_the_profile_minimums_are_denied() {
    let (_up, _ws, gw) = setup().await;
    let mut dave = gw.enrol("dave", Enrol::default()).await;
    dave.os_version = "10.0.19044";
    assert_eq!(reason(&gw.get_as(&dave, "app.localhost", "/").await).as_deref(), Some("os_outdated"));
    dave.os_version = "10.0.22631";
    dave.security_software = None;
    assert_eq!(reason(&gw.get_as(&dave, "app.localhost", "/").await).as_deref(), Some("security_software_missing"));
}

#[tokio::test]
async fn a_browser_gets_a_bilingual_block_page() {
    let (_up, _ws, gw) = setup().await;
    let resp = gw
        .client()
        .get(gw.url("app.localhost", "/"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    // The page loads and runs nothing, and says so to the browser.
    let policy = resp.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("default-src 'none'") && !policy.contains("script-src"), "{policy}");
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    let page = resp.text().await.unwrap();
    assert!(page.contains("登録済み端末であることを確認できません"), "{page}");
    assert!(page.contains("Your device could not be identified"));
    assert!(page.contains("IT desk 1234"), "the page names whom to contact");
    assert!(page.contains("attestation_missing"));
}

#[tokio::test]
async fn suspension_restriction_stop_and_maintenance_apply_on_the_next_request() {
    let (_up, _ws, gw) = setup().await;
    let erin = gw.enrol("erin", Enrol::default()).await;
    let post = || {
        gw.client()
            .post(gw.url("app.localhost", "/write"))
            .header("device-attestation", erin.token("app.localhost"))
            .body("x")
            .send()
    };
    assert_eq!(post().await.unwrap().status(), 200);

    gw.admin("POST", "/v1/users/erin/restrict", json!({"reason": "監査中"})).await;
    assert_eq!(reason(&post().await.unwrap()).as_deref(), Some("user_restricted"));
    assert_eq!(gw.get_as(&erin, "app.localhost", "/read").await.status(), 200, "reading still passes");
    gw.admin("POST", "/v1/users/erin/unrestrict", json!({"reason": "完了"})).await;

    gw.admin("POST", "/v1/users/erin/suspend", json!({"reason": "端末紛失"})).await;
    assert_eq!(reason(&gw.get_as(&erin, "app.localhost", "/").await).as_deref(), Some("user_suspended"));
    let (status, _) = gw.admin_call("POST", "/v1/users/erin/unsuspend", ROOT_TOKEN, Some(json!({"reason": " "}))).await;
    assert_eq!(status, 400, "lifting a suspension needs a reason");
    assert_eq!(reason(&gw.get_as(&erin, "app.localhost", "/").await).as_deref(), Some("user_suspended"));
    gw.admin("POST", "/v1/users/erin/unsuspend", json!({"reason": "発見"})).await;
    assert_eq!(gw.get_as(&erin, "app.localhost", "/").await.status(), 200);
    let trail = gw.admin_call("GET", "/v1/audit?target=erin&action=user.unsuspend", ROOT_TOKEN, None).await.1;
    assert_eq!(trail["records"][0]["reason"], "発見", "the auditor sees why it was lifted: {trail}");

    gw.admin("POST", "/v1/emergency-stop", json!({"reason": "breach suspected", "profile": "app"})).await;
    let stopped = gw.get_as(&erin, "app.localhost", "/").await;
    assert_eq!((stopped.status().as_u16(), reason(&stopped).as_deref()), (503, Some("emergency_stop")));
    assert!(stopped.headers().contains_key("retry-after"));
    assert_eq!(
        gw.get_as(&erin, "features.localhost", "/drive/").await.status(),
        200,
        "a profile stop leaves other profiles open"
    );
    gw.admin("POST", "/v1/emergency-stop/lift", json!({"reason": "all clear", "profile": "app"})).await;
    gw.admin("POST", "/v1/emergency-stop", json!({"reason": "everything"})).await;
    assert_eq!(reason(&gw.get_as(&erin, "features.localhost", "/drive/").await).as_deref(), Some("emergency_stop"));
    gw.admin("POST", "/v1/emergency-stop/lift", json!({"reason": "all clear"})).await;

    let start = chrono::Utc::now() - chrono::Duration::minutes(1);
    let end = chrono::Utc::now() + chrono::Duration::minutes(30);
    let created = gw
        .admin(
            "POST",
            "/v1/maintenance",
            json!({"profile": "app", "reason": "LINE WORKS 更新", "start": start, "end": end}),
        )
        .await;
    let m = gw.get_as(&erin, "app.localhost", "/").await;
    assert_eq!((m.status().as_u16(), reason(&m).as_deref()), (503, Some("maintenance")));
    let retry: i64 = m.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1700..=1800).contains(&retry), "Retry-After counts down to the end: {retry}");
    gw.admin("DELETE", &format!("/v1/maintenance/{}", created["id"]), json!({"reason": "done early"})).await;
    assert_eq!(gw.get_as(&erin, "app.localhost", "/").await.status(), 200);
}

#[tokio::test]
async fn revoking_a_lost_device_leaves_the_owners_other_devices_working() {
    let (_up, _ws, gw) = setup().await;
    let phone =
        gw.enrol("frank", Enrol { role: "councillor", kind: "smartphone", ownership: "personal", approve: true }).await;
    let pc = gw.enrol("frank", Enrol { role: "councillor", kind: "pc", ownership: "personal", approve: true }).await;
    assert_eq!(gw.get_as(&phone, "app.localhost", "/").await.status(), 200);
    gw.admin("POST", &format!("/v1/devices/{}/revoke", phone.device), json!({"reason": "第17条 紛失届"})).await;
    assert_eq!(reason(&gw.get_as(&phone, "app.localhost", "/").await).as_deref(), Some("device_revoked"));
    assert_eq!(gw.get_as(&pc, "app.localhost", "/").await.status(), 200);
}

#[tokio::test]
async fn an_overtime_grant_opens_a_closed_profile_for_one_user() {
    let (_up, _ws, gw) = setup().await;
    let gina = gw.enrol("gina", Enrol::default()).await;
    let hank = gw.enrol("hank", Enrol::default()).await;
    gw.write_rules(
        "hours.toml",
        &std::fs::read_to_string(gw.path("rules/hours.toml"))
            .unwrap()
            .replace("[network]", "overtime_grants = true\n\n[network]"),
    );
    gw.reload().await;
    let now = chrono::Utc::now();
    gw.admin("POST", "/v1/overtime", json!({"user": "gina", "approver": "総務課長", "reason": "議会対応", "start": now - chrono::Duration::minutes(5), "end": now + chrono::Duration::hours(1)})).await;
    assert_eq!(gw.get_as(&gina, "hours.localhost", "/").await.status(), 200);
    assert_eq!(reason(&gw.get_as(&hank, "hours.localhost", "/").await).as_deref(), Some("outside_hours"));
}

#[tokio::test]
async fn suspending_a_user_cuts_their_open_websocket_within_a_second() {
    let (_up, _ws, gw) = setup().await;
    let ivan = gw.enrol("ivan", Enrol::default()).await;
    let mut ws = gw.websocket(&ivan).await;

    gw.admin("POST", "/v1/users/ivan/suspend", json!({"reason": "情報漏えいの疑い"})).await;
    let cut = Instant::now();
    let ended = closed_within(&mut ws, Duration::from_secs(1)).await;
    assert!(ended, "the idle WebSocket was still open a second after the suspension");
    assert!(cut.elapsed() < Duration::from_secs(1));
}

/// A request still waiting for its upstream when its user is suspended is
/// answered at once with the block page that says why (403
/// `user_suspended`, audited as cut), not dropped with its connection and
/// not left to the upstream.
#[tokio::test]
async fn a_request_waiting_on_its_upstream_when_the_user_is_suspended_gets_the_block_page() {
    let (up, _ws, gw) = setup().await;
    let kate = gw.enrol("kate", Enrol::default()).await;
    let started = Instant::now();
    let (resp, ()) = tokio::join!(gw.get_as(&kate, "app.localhost", "/slow/stall"), async {
        // The upstream holds its answer for 3 s.
        while up.seen().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        gw.admin("POST", "/v1/users/kate/suspend", json!({"reason": "端末紛失"})).await;
    });
    assert_eq!(resp.status(), 403);
    assert_eq!(reason(&resp).as_deref(), Some("user_suspended"));
    assert!(started.elapsed() < Duration::from_secs(2), "answered after {:?}", started.elapsed());
    let page = resp.text().await.unwrap();
    assert!(page.contains("user_suspended") || page.contains("停止"), "{page}");
    let lines = gw.audit_lines("kate").await;
    let line = lines.iter().find(|l| l["path"] == "/slow/stall").expect("an audit line for the request");
    assert_eq!((line["decision"].as_str(), line["reason"].as_str()), (Some("cut"), Some("user_suspended")));
}

/// Time alone withdraws access too: a maintenance window announced for a
/// moment later ends an open WebSocket when it begins, with no further
/// change (so do the end of working hours and of an overtime grant; the
/// engine's table test covers those, `policy/src/engine_tests.rs`).
#[tokio::test]
async fn a_maintenance_window_that_begins_ends_an_open_websocket() {
    let up = Upstream::start().await;
    let ws_up = WsUpstream::start().await;
    let gw = Gateway::start_tuned(&up, &ws_up, "rejudge_secs = 1", "").await;
    let mia = gw.enrol("mia", Enrol::default()).await;
    let mut ws = gw.websocket(&mia).await;

    let start = chrono::Utc::now() + chrono::Duration::seconds(3);
    let end = start + chrono::Duration::hours(1);
    let window = json!({"reason": "定期保守", "start": start.to_rfc3339(), "end": end.to_rfc3339()});
    gw.admin("POST", "/v1/maintenance", window).await;
    ws.send("still here".into()).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().to_text().unwrap(), "still here", "announced, not begun");
    let ended = closed_within(&mut ws, Duration::from_secs(8)).await;
    assert!(ended, "the WebSocket was still open 5 s after the window began");
    let late = chrono::Utc::now() - start;
    assert!(late >= chrono::Duration::zero(), "ended {late} before the window began");
    let lines = gw.audit_lines("mia").await;
    let cut = lines.iter().find(|l| l["path"] == "/chat").unwrap();
    assert_eq!((cut["decision"].as_str(), cut["reason"].as_str()), (Some("cut"), Some("maintenance")), "{cut}");
}

#[tokio::test]
async fn a_committed_suspension_survives_kill_9() {
    let (_up, _ws, mut gw) = setup().await;
    let judy = gw.enrol("judy", Enrol::default()).await;
    gw.admin("POST", "/v1/users/judy/suspend", json!({"reason": "kill test"})).await;
    gw.kill9();
    gw.spawn().await;
    assert_eq!(reason(&gw.get_as(&judy, "app.localhost", "/").await).as_deref(), Some("user_suspended"));
    let (_, audit) = gw.admin_call("GET", "/v1/audit?target=judy&action=user.suspend", AUDITOR_TOKEN, None).await;
    assert_eq!(audit["records"][0]["reason"], "kill test", "the audit record was committed with the change");
}

#[tokio::test]
async fn the_admin_api_refuses_bad_tokens_wrong_roles_and_broken_input() {
    let (_up, _ws, gw) = setup().await;
    assert_eq!(gw.admin_call("GET", "/v1/status", "wrong-token-0123456789", None).await.0, 401);
    assert_eq!(gw.admin_call("GET", "/v1/status", "", None).await.0, 401);
    assert_eq!(gw.admin_call("GET", "/v1/status", AUDITOR_TOKEN, None).await.0, 200);
    let (status, body) = gw
        .admin_call(
            "PUT",
            "/v1/users/x",
            AUDITOR_TOKEN,
            Some(json!({"display_name": "x", "role": "staff", "profiles": []})),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        gw.admin_call("POST", "/v1/devices/x/approve", GENERAL_TOKEN, Some(json!({"reason": "r"}))).await.0,
        403,
        "approving devices is the system manager's"
    );
    let (status, body) =
        gw.admin_call("PUT", "/v1/users/x", ROOT_TOKEN, Some(serde_json::Value::String("{broken".into()))).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = gw
        .admin_call(
            "PUT",
            "/v1/users/x",
            ROOT_TOKEN,
            Some(json!({"display_name": "x", "role": "staff", "profiles": [], "rol": "typo"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("rol"), "{body}");
    let (status, _) = gw
        .admin_call(
            "PUT",
            "/v1/users/x",
            ROOT_TOKEN,
            Some(json!({"display_name": "x", "role": "staff", "profiles": ["nope"]})),
        )
        .await;
    assert_eq!(status, 400, "unknown profiles are refused");
    for typo in ["satff", " staff", "Staff"] {
        let (status, body) = gw
            .admin_call(
                "PUT",
                "/v1/users/x",
                ROOT_TOKEN,
                Some(json!({"display_name": "x", "role": typo, "profiles": ["app"]})),
            )
            .await;
        assert_eq!(status, 400, "a role no profile of the user's defines is refused: {typo:?} {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(&format!("role `{typo}`")) && error.contains("`staff`"), "{body}");
    }
    assert_eq!(gw.admin_call("DELETE", "/v1/status", ROOT_TOKEN, None).await.0, 405, "a known path, another method");
    assert_eq!(gw.admin_call("GET", "/v1/nothing", ROOT_TOKEN, None).await.0, 404);
    assert_eq!(gw.admin_call("GET", "/v1/audit?limit=5000", ROOT_TOKEN, None).await.0, 400, "limit over 1000");
    let (status, _) = gw.admin_call("POST", "/v1/users/ghost/suspend", ROOT_TOKEN, Some(json!({"reason": "r"}))).await;
    assert_eq!(status, 404);
    let (status, _) = gw.admin_call("POST", "/v1/users/ghost/suspend", ROOT_TOKEN, Some(json!({"reason": " "}))).await;
    assert_eq!(status, 400, "a suspension needs a reason");
    let local =
        json!({"user": "ghost", "reason": "r", "start": "2026-12-02T18:00:00", "end": "2026-12-02T20:00:00+09:00"});
    let (status, body) = gw.admin_call("POST", "/v1/overtime", ROOT_TOKEN, Some(local)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("`2026-12-02T18:00:00` is not a time with its UTC offset"),
        "{body}"
    );
    // A window naming no profile that exists, or already over, would be
    // stored and change nothing: both are refused.
    let later = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    let much_later = (chrono::Utc::now() + chrono::Duration::days(31)).to_rfc3339();
    for (path, body, want) in [
        (
            "/v1/maintenance",
            json!({"profile": "ap", "reason": "r", "start": later, "end": much_later}),
            "profile `ap` does not exist",
        ),
        (
            "/v1/overtime",
            json!({"user": "x", "approver": "a", "profile": "ap", "reason": "r", "start": later, "end": much_later}),
            "profile `ap` does not exist",
        ),
        (
            "/v1/maintenance",
            json!({"reason": "r", "start": "2020-01-01T18:00:00+09:00", "end": "2020-01-01T20:00:00+09:00"}),
            "`end` is already past",
        ),
        // A mistyped year would lift the hours for a decade.
        (
            "/v1/overtime",
            json!({"user": "x", "approver": "a", "reason": "r", "start": later, "end": (chrono::Utc::now() + chrono::Duration::days(3650)).to_rfc3339()}),
            "an overtime order covers at most 31 days",
        ),
        (
            "/v1/overtime",
            json!({"user": "x", "approver": "a", "reason": "r", "start": "2020-01-01T18:00:00+09:00", "end": "2020-01-01T20:00:00+09:00"}),
            "`end` is already past",
        ),
    ] {
        let (status, answer) = gw.admin_call("POST", path, ROOT_TOKEN, Some(body)).await;
        assert_eq!((status, answer["error"].as_str().unwrap().contains(want)), (400, true), "{path}: {answer}");
    }
    let (_, windows) = gw.admin_call("GET", "/v1/maintenance", ROOT_TOKEN, None).await;
    assert_eq!(windows["windows"].as_array().unwrap().len(), 0, "{windows}");
    // A `+` typed into a query string arrives as a space; it is read back.
    let (status, body) = gw.admin_call("GET", "/v1/audit?since=2026-01-01T00:00:00+09:00", ROOT_TOKEN, None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = gw.admin_call("GET", "/v1/audit?since=yesterday", ROOT_TOKEN, None).await;
    assert_eq!((status, body["error"].as_str().unwrap().contains("`yesterday` is not a time")), (400, true), "{body}");
    let (_, users) = gw.admin_call("GET", "/v1/users", ROOT_TOKEN, None).await;
    assert_eq!(users["users"].as_array().unwrap().len(), 0, "no refused write left anything behind");
    let (status, metrics) = gw.admin_call("GET", "/metrics", AUDITOR_TOKEN, None).await;
    assert_eq!(status, 200);
    assert!(metrics.as_str().unwrap().contains("sekisho_requests_total{decision=\"allow\""));
}

#[tokio::test]
async fn duplicate_attestation_headers_are_a_bad_request() {
    let (up, _ws, gw) = setup().await;
    let kim = gw.enrol("kim", Enrol::default()).await;
    let t = kim.token("app.localhost");
    let resp = gw
        .client()
        .get(gw.url("app.localhost", "/"))
        .header("device-attestation", &t)
        .header("device-attestation", &t)
        .send()
        .await
        .unwrap();
    assert_eq!((resp.status().as_u16(), reason(&resp).as_deref()), (400, Some("bad_request")));
    assert!(up.seen().is_empty());
}

#[tokio::test]
async fn location_and_cookie_domains_are_rewritten_to_the_public_host() {
    let (_up, _ws, gw) = setup().await;
    let lee = gw.enrol("lee", Enrol::default()).await;
    let resp = gw.get_as(&lee, "app.localhost", "/redirect").await;
    assert_eq!(resp.status(), 302);
    assert_eq!(resp.headers()["location"], format!("https://app.localhost:{}/next?x=1", gw.https.port()).as_str());
    let cookies: Vec<_> = resp.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    assert_eq!(cookies, ["sid=abc; Domain=app.localhost; Path=/; HttpOnly", "theme=dark; Path=/"]);
}

/// Behind a TLS load balancer (a trusted proxy) on the plain listener, the
/// client's scheme is the balancer's word: the upstream is told `https`,
/// redirects stay on https and HSTS is sent. Nobody else is believed.
#[tokio::test]
async fn behind_a_trusted_tls_proxy_redirects_stay_on_https() {
    let (up, _ws, gw) = setup().await;
    let lee = gw.enrol("lee", Enrol::default()).await;
    let call = |host: &'static str, proto: Option<&'static str>| {
        let mut req = gw
            .client()
            .get(format!("http://{host}:{}/redirect", gw.http.port()))
            .header("device-attestation", lee.token(host))
            .header("x-forwarded-for", "10.1.2.3");
        if let Some(p) = proto {
            req = req.header("x-forwarded-proto", p);
        }
        req.send()
    };
    let port = gw.http.port();
    // office.localhost believes the proxy 127.0.0.1.
    let resp = call("office.localhost", Some("https")).await.unwrap();
    assert_eq!(resp.headers()["location"], format!("https://office.localhost:{port}/next?x=1").as_str());
    assert_eq!(up.last().header("x-forwarded-proto"), Some("https"));
    assert!(resp.headers().contains_key("strict-transport-security"), "the browser is on https");
    let resp = call("office.localhost", None).await.unwrap();
    assert_eq!(resp.headers()["location"], format!("http://office.localhost:{port}/next?x=1").as_str());
    assert_eq!(up.last().header("x-forwarded-proto"), Some("http"));
    assert!(!resp.headers().contains_key("strict-transport-security"));
    // app.localhost trusts no proxy: a client's own word changes nothing.
    let resp = call("app.localhost", Some("https")).await.unwrap();
    assert_eq!(resp.headers()["location"], format!("http://app.localhost:{port}/next?x=1").as_str());
    assert_eq!(up.last().header("x-forwarded-proto"), Some("http"));
    assert!(!resp.headers().contains_key("strict-transport-security"));
}

#[tokio::test]
async fn a_large_upload_streams_through() {
    let (up, _ws, gw) = setup().await;
    let mia = gw.enrol("mia", Enrol::default()).await;
    const SIZE: usize = 64 << 20;
    let chunks =
        futures_util::stream::iter((0..64).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![7u8; 1 << 20]))));
    let resp = gw
        .client()
        .post(gw.url("app.localhost", "/upload"))
        .header("device-attestation", mia.token("app.localhost"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), format!("ok {SIZE}"));
    assert_eq!(up.last().body_len, SIZE as u64);
}

#[tokio::test]
async fn a_broken_rules_file_is_refused_and_the_running_rules_stay() {
    let (_up, _ws, gw) = setup().await;
    let nina = gw.enrol("nina", Enrol::default()).await;
    let good = std::fs::read_to_string(gw.path("rules/app.toml")).unwrap();
    gw.write_rules("app.toml", &good.replace("always = true", "alwyas = true"));
    let (status, body) = gw
        .admin_call(
            "POST",
            "/v1/rules/reload",
            ROOT_TOKEN,
            Some(json!({"approver": "統括情報責任者", "reason": "broken"})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let msg = body["error"].as_str().unwrap();
    assert!(msg.contains("app.toml:") && msg.contains("alwyas"), "{msg}");
    assert_eq!(gw.get_as(&nina, "app.localhost", "/").await.status(), 200, "the running rules stay");

    // SIGHUP reloads too: a fixed file with a stricter network takes effect.
    gw.write_rules("app.toml", &good.replace(r#"trusted = ["127.0.0.0/8"]"#, r#"trusted = ["10.0.0.0/8"]"#));
    std::process::Command::new("kill").args(["-HUP", &gw.pid().to_string()]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if reason(&gw.get_as(&nina, "app.localhost", "/").await).as_deref() == Some("untrusted_network") {
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not reload the rules");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_registration_application_starts_pending_and_only_the_system_manager_decides_it() {
    let (_up, _ws, gw) = setup().await;
    gw.admin("PUT", "/v1/users/giin", json!({"display_name": "議員", "role": "councillor", "profiles": ["app"]})).await;
    let key =
        sekisho_policy::attestation::SigningKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[9; 32])).public();
    let form = json!({
        "id": "giin-iphone", "owner": "giin", "kind": "smartphone", "ownership": "personal",
        "os": "ios", "os_version": "17.4.1", "security_software": {"name": "ウイルスバスター", "updated": "2026-11-20"},
        "key_alg": key.alg(), "public_key": key.to_b64(),
    });
    let (status, body) = gw.admin_call("POST", "/v1/devices", APPLICANT_TOKEN, Some(form.clone())).await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = gw.admin_call("POST", "/v1/devices", APPLICANT_TOKEN, Some(form)).await;
    assert_eq!(status, 409, "a changed device is a new application with a new id (第12条第3項)");
    assert_eq!(
        gw.admin_call("POST", "/v1/devices/giin-iphone/approve", APPLICANT_TOKEN, Some(json!({"reason": "r"}))).await.0,
        403
    );
    assert_eq!(gw.admin_call("GET", "/v1/users", APPLICANT_TOKEN, None).await.0, 403);
    let (_, devices) = gw.admin_call("GET", "/v1/devices", AUDITOR_TOKEN, None).await;
    assert_eq!(devices["devices"][0]["status"], "pending");
    assert_eq!(devices["devices"][0]["security_software"]["name"], "ウイルスバスター");
}

#[tokio::test]
async fn suspending_a_user_ends_their_streaming_download_over_http2() {
    let (_up, _ws, gw) = setup().await;
    let olga = gw.enrol("olga", Enrol::default()).await;
    let resp = gw.get_as(&olga, "app.localhost", "/trickle").await;
    assert_eq!((resp.status().as_u16(), resp.version()), (200, reqwest::Version::HTTP_2));
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"line 0"));
    gw.admin("POST", "/v1/users/olga/suspend", json!({"reason": "盗難届"})).await;
    let cut = Instant::now();
    let ended =
        tokio::time::timeout(Duration::from_secs(1), async { while let Some(Ok(_)) = stream.next().await {} }).await;
    assert!(ended.is_ok(), "the download was still running a second after the suspension");
    assert!(cut.elapsed() < Duration::from_secs(1));
}

/// An HTTP/2 client that grants no flow-control window holds its stream
/// open without the gateway ever polling the answer again; a suspension
/// must still end it (here by closing the connection), and the exchange
/// is audited.
#[tokio::test]
async fn suspending_a_user_ends_their_http2_stream_even_when_it_is_stalled_on_flow_control() {
    let (_up, _ws, gw) = setup().await;
    let rita = gw.enrol("rita", Enrol::default()).await;
    let mut builder = h2::client::Builder::new();
    builder.initial_window_size(0);
    let (mut client, conn) = gw.h2(builder).await;
    let req = http::Request::get(format!("https://app.localhost:{}/big", gw.https.port()))
        .header("device-attestation", rita.token("app.localhost").as_str())
        .body(())
        .unwrap();
    let (resp, _) = client.send_request(req, true).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), resp).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200, "the answer's head needs no window");
    // Nothing more can flow: hyper now waits for window, not on the body.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!conn.is_finished());

    gw.admin("POST", "/v1/users/rita/suspend", json!({"reason": "紛失"})).await;
    let ended = tokio::time::timeout(Duration::from_secs(2), conn).await;
    assert!(ended.is_ok(), "the stalled stream's connection was still open 2 s after the suspension");
    let lines = gw.audit_lines("rita").await;
    assert!(lines.iter().any(|l| l["path"] == "/big"), "the cut exchange is audited: {lines:?}");
}

#[tokio::test]
async fn the_admin_api_can_serve_https_and_the_cli_speaks_it() {
    let up = Upstream::start().await;
    let ws = WsUpstream::start().await;
    let gw =
        Gateway::start_with(&up, &ws, "\n[admin.tls]\ncert = \"certs/server.pem\"\nkey = \"certs/server.key\"\n").await;
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sekisho"))
            .current_dir(gw.dir.path())
            .env("SEKISHO_ADMIN_TOKEN", ROOT_TOKEN)
            .args(args)
            .output()
            .unwrap()
    };
    let url = format!("https://127.0.0.1:{}", gw.admin.port());
    let out = cli(&["admin", "--url", &url, "--cacert", "certs/dev-ca.pem", "status", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(status["profiles"].as_array().unwrap().iter().any(|p| p["name"] == "app"));
    // For a person: whether requests are served, the trail, stops, profiles.
    let out = cli(&["admin", "--url", &url, "--cacert", "certs/dev-ca.pem", "stop", "--reason", "端末紛失の報告"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(&["admin", "--url", &url, "--cacert", "certs/dev-ca.pem", "status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for line in
        ["Requests   served (state confirmed", "Audit log  writable", "Emergency  STOPPED for everyone since 20"]
    {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert!(text.contains(": 端末紛失の報告\n"), "the stop's reason:\n{text}");
    assert!(text.lines().any(|l| l.starts_with("  app ")), "the profile `app`:\n{text}");
    let plain = cli(&["admin", "--url", &format!("http://127.0.0.1:{}", gw.admin.port()), "status"]);
    assert!(!plain.status.success(), "plain HTTP must not be served on a TLS admin listener");
    let out = cli(&["admin", "--url", &url, "--cacert", "certs/dev-ca.pem", "suspend", "nobody", "--reason", "x"]);
    assert!(!out.status.success(), "a failed write exits non-zero");
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
}

#[tokio::test]
async fn an_issued_device_certificate_proves_the_device_until_it_is_revoked() {
    let (_up, _ws, gw) = setup().await;
    let pia = gw.enrol("pia", Enrol::default()).await;
    let pending = gw.enrol("quin", Enrol { approve: false, ..Enrol::default() }).await;
    let (status, _) = gw
        .admin_call("POST", &format!("/v1/devices/{}/certificate", pending.device), ROOT_TOKEN, Some(json!({})))
        .await;
    assert_eq!(status, 409, "only approved devices get a certificate");
    let (status, _) = gw.admin_call("POST", "/v1/devices/pia-pc/certificate", GENERAL_TOKEN, Some(json!({}))).await;
    assert_eq!(status, 403, "issuing is the system manager's");
    let issued = gw
        .admin("POST", &format!("/v1/devices/{}/certificate", pia.device), json!({"days": 30, "reason": "庁内PC配備"}))
        .await;
    let identity =
        format!("{}{}", issued["private_key_pem"].as_str().unwrap(), issued["certificate_pem"].as_str().unwrap());
    let browser = gw.client_with_identity(&identity);

    let page = browser.get(gw.url("app.localhost", "/portal")).send().await.unwrap();
    assert_eq!(page.status(), 200, "no attestation header: the certificate proves the device");
    let lines = gw.audit_lines("pia").await;
    assert_eq!(lines.last().unwrap()["device"], pia.device.as_str());

    let anonymous = gw.client().get(gw.url("app.localhost", "/portal")).send().await.unwrap();
    assert_eq!(reason(&anonymous).as_deref(), Some("attestation_missing"));

    gw.admin("POST", &format!("/v1/devices/{}/revoke", pia.device), json!({"reason": "紛失"})).await;
    let after = browser.get(gw.url("app.localhost", "/portal")).send().await.unwrap();
    assert_eq!(reason(&after).as_deref(), Some("device_revoked"), "revoked at once, on the same TLS connection");
    let store = std::fs::read_to_string(gw.path("data/audit.jsonl")).unwrap();
    assert!(!store.contains("PRIVATE KEY"), "the private key is never logged");
}

#[tokio::test]
async fn an_https_upstream_is_verified_against_the_routes_private_ca() {
    let (up, _ws, gw) = setup().await;
    let rick = gw.enrol("rick", Enrol::default()).await;
    let app = std::fs::read_to_string(gw.path("rules/app.toml")).unwrap();
    let route_to = |tls: &TlsUpstream, ca: bool| {
        let rules = app.replace(&format!("http://{}", up.addr), &format!("https://localhost:{}", tls.addr.port()));
        match ca {
            true => rules.replace("host = \"app.localhost\"", "host = \"app.localhost\"\nca_file = \"private-ca.pem\""),
            false => rules,
        }
    };
    let good = TlsUpstream::start("localhost").await;
    std::fs::write(gw.path("rules/private-ca.pem"), &good.ca_pem).unwrap();
    gw.write_rules("app.toml", &route_to(&good, true));
    gw.reload().await;
    let resp = gw.get_as(&rick, "app.localhost", "/").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), format!("tls upstream saw host localhost:{}", good.addr.port()));

    gw.write_rules("app.toml", &route_to(&good, false));
    gw.reload().await;
    let unknown_ca = gw.get_as(&rick, "app.localhost", "/").await;
    assert_eq!(
        reason(&unknown_ca).as_deref(),
        Some("upstream_unavailable"),
        "without the route's CA the upstream is not trusted"
    );

    let other_name = TlsUpstream::start("upstream.internal").await;
    std::fs::write(gw.path("rules/private-ca.pem"), &other_name.ca_pem).unwrap();
    gw.write_rules("app.toml", &route_to(&other_name, true));
    gw.reload().await;
    let wrong_name = gw.get_as(&rick, "app.localhost", "/").await;
    assert_eq!(
        reason(&wrong_name).as_deref(),
        Some("upstream_unavailable"),
        "a certificate for another name is refused"
    );
}

/// An asset register of city-issued PCs is registered in one go: all or
/// nothing, system manager only, and the imported devices pass at once.
#[tokio::test]
async fn devices_import_in_bulk_all_or_nothing() {
    let (_up, _ws, gw) = setup().await;
    let taro = gw.enrol("taro", Enrol::default()).await;
    let key = |n: u8| sekisho_policy::attestation::SigningKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[n; 32]));
    let entry = |id: &str, n: u8| {
        let public = key(n).public();
        json!({"id": id, "owner": "taro", "kind": "pc", "ownership": "issued", "os": "windows",
               "os_version": "10.0.22631", "key_alg": public.alg(), "public_key": public.to_b64(),
               "security_software": {"name": "Defender", "updated": chrono::Utc::now().date_naive()}})
    };
    let batch = |devices: Vec<serde_json::Value>| json!({"reason": "資産台帳 2026-11", "devices": devices});

    // One clash (an id already registered) refuses the whole batch.
    let clash = batch(vec![entry("asset-001", 1), entry(&taro.device, 2)]);
    assert_eq!(gw.admin_call("POST", "/v1/devices/import", ROOT_TOKEN, Some(clash)).await.0, 409);
    let twice = batch(vec![entry("asset-001", 1), entry("asset-001", 1)]);
    let (status, body) = gw.admin_call("POST", "/v1/devices/import", ROOT_TOKEN, Some(twice)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("`asset-001` is listed more than once"), "{body}");
    let (status, _) =
        gw.admin_call("POST", "/v1/devices/import", GENERAL_TOKEN, Some(batch(vec![entry("x", 3)]))).await;
    assert_eq!(status, 403, "importing is the system manager's");
    let devices = gw.admin_call("GET", "/v1/devices", ROOT_TOKEN, None).await.1;
    assert!(!devices.to_string().contains("asset-001"), "a refused batch left a device behind");

    let (status, v) = gw
        .admin_call(
            "POST",
            "/v1/devices/import",
            ROOT_TOKEN,
            Some(batch(vec![entry("asset-001", 1), entry("asset-002", 2)])),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let imported = support::Person { device: "asset-002".into(), key: key(2), ..taro };
    assert_eq!(gw.get_as(&imported, "app.localhost", "/").await.status(), 200, "imported devices are approved");
    let audit = gw.admin_call("GET", "/v1/audit?action=device.import", ROOT_TOKEN, None).await.1;
    assert!(audit.to_string().contains("2 devices"), "{audit}");
}

/// A chat socket can sit idle far longer than the route's request timeout:
/// the timeout bounds requests, while an open WebSocket ends only when its
/// user is suspended, its device revoked, or either side closes it.
#[tokio::test]
async fn an_idle_websocket_outlives_the_routes_request_timeout() {
    let (_up, ws, gw) = setup().await;
    let rules = std::fs::read_to_string(gw.path("rules/ws.toml")).unwrap();
    let upstream_line = format!("upstream = \"http://{}\"", ws.addr);
    assert!(rules.contains(&upstream_line));
    gw.write_rules("ws.toml", &rules.replace(&upstream_line, &format!("{upstream_line}\ntimeout_secs = 1")));
    gw.reload().await;
    let jun = gw.enrol("jun", Enrol::default()).await;
    let mut socket = gw.websocket(&jun).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    socket.send("まだいますか".into()).await.unwrap();
    let echo = tokio::time::timeout(Duration::from_secs(2), socket.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echo.to_text().unwrap(), "まだいますか");
}

/// No token reaches a log or the store: not the attestation of an allowed
/// or a denied request, not the admin token, not a wrong admin token.
#[tokio::test]
async fn tokens_never_reach_the_logs_or_the_store() {
    let (_up, _ws, gw) = setup().await;
    let kei = gw.enrol("kei", Enrol::default()).await;
    let good = kei.token("app.localhost");
    let wrong_audience = kei.token("office.localhost");
    let client = gw.client();
    for token in [&good, &wrong_audience] {
        client.get(gw.url("app.localhost", "/t")).header("device-attestation", token.as_str()).send().await.unwrap();
    }
    let wrong_admin = "not-the-admin-token-0123456789";
    assert_eq!(gw.admin_call("GET", "/v1/status", wrong_admin, None).await.0, 401);
    gw.admin("POST", "/v1/users/kei/suspend", json!({"reason": "token audit"})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut places = vec![gw.path("data/audit.jsonl"), gw.path("gateway.log")];
    for f in std::fs::read_dir(gw.path("data")).unwrap() {
        let f = f.unwrap().path();
        if f.to_string_lossy().contains("state.sqlite3") {
            places.push(f);
        }
    }
    for place in places {
        let bytes = std::fs::read(&place).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        for (what, secret) in [
            ("attestation", good.as_str()),
            ("attestation", wrong_audience.as_str()),
            ("admin token", ROOT_TOKEN),
            ("wrong admin token", wrong_admin),
        ] {
            // The signature part alone would be enough to replay a token.
            let tail = secret.rsplit('.').next().unwrap();
            assert!(!text.contains(tail), "{what} found in {}", place.display());
        }
    }
}

/// The admin writes the OpenAPI document lists, as (method, path template).
fn documented_writes() -> std::collections::BTreeSet<(String, String)> {
    let doc = include_str!("../docs/admin-openapi.yaml");
    let mut path = String::new();
    let mut writes = std::collections::BTreeSet::new();
    for line in doc.lines() {
        if let Some(p) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
            path = format!("/{p}");
        }
        for method in ["post", "put", "delete"] {
            if line == format!("    {method}:") {
                writes.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    writes
}

/// Abiko 13. (revisions approved by the 統括情報責任者) and every admin
/// action: each write the OpenAPI document lists is made here with the
/// least it accepts (no reason where one is optional), and no audit record
/// is left with an empty reason; the reload keeps its approver.
#[tokio::test]
async fn abiko_13_every_admin_write_records_a_reason_and_a_reload_its_approver() {
    let (_up, _ws, gw) = setup().await;
    let mut walked = std::collections::BTreeSet::new();
    let mut call = |m: &str, template: &str| {
        walked.insert((m.to_owned(), template.to_owned()));
    };
    let ok = |status: u16, v: &serde_json::Value| assert!((200..300).contains(&status), "{status} {v}");
    // PUT /v1/users/{id}, POST /v1/devices, POST .../approve (enrol sends no reason for the first two).
    let kimura = gw.enrol("kimura", Enrol::default()).await;
    call("PUT", "/v1/users/{id}");
    call("POST", "/v1/devices");
    call("POST", "/v1/devices/{id}/approve");
    let pending = gw.enrol("mori", Enrol { approve: false, ..Enrol::default() }).await;
    gw.admin("POST", &format!("/v1/devices/{}/reject", pending.device), json!({"reason": "書類不備"})).await;
    call("POST", "/v1/devices/{id}/reject");
    for action in ["suspend", "unsuspend", "restrict", "unrestrict"] {
        gw.admin("POST", &format!("/v1/users/kimura/{action}"), json!({"reason": "第18条"})).await;
        call("POST", &format!("/v1/users/{{id}}/{action}"));
    }
    let key = sekisho_policy::attestation::SigningKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[9; 32]));
    let public = key.public();
    let imported = json!({"id": "bulk-1", "owner": "kimura", "kind": "pc", "ownership": "issued", "os": "windows",
        "os_version": "10.0.22631", "key_alg": public.alg(), "public_key": public.to_b64()});
    gw.admin("POST", "/v1/devices/import", json!({"reason": "資産台帳", "devices": [imported]})).await;
    call("POST", "/v1/devices/import");
    let cert = gw.admin("POST", &format!("/v1/devices/{}/certificate", kimura.device), json!({})).await;
    call("POST", "/v1/devices/{id}/certificate");
    let (status, v) =
        gw.admin_call("POST", &format!("/v1/devices/{}/certificate/renew", kimura.device), ROOT_TOKEN, None).await;
    ok(status, &v);
    call("POST", "/v1/devices/{id}/certificate/renew");
    let download = format!("/v1/enrollments/{}/download", cert["enrollment"]["id"].as_str().unwrap());
    let (status, v) = gw.admin_call("POST", &download, ROOT_TOKEN, None).await;
    ok(status, &v);
    call("POST", "/v1/enrollments/{id}/download");
    let now = chrono::Utc::now().timestamp();
    let claims = sekisho_policy::attestation::Claims {
        sub: "kimura".into(),
        aud: sekisho_policy::posture::POSTURE_AUDIENCE.into(),
        iat: now,
        exp: now + 60,
        jti: "p".into(),
        os: kimura.os,
        os_version: kimura.os_version.parse().unwrap(),
        security_software: kimura.security_software.clone(),
    };
    let report = sekisho_policy::attestation::mint(&kimura.key, &kimura.device, &claims);
    let (status, v) = gw
        .admin_call("POST", &format!("/v1/devices/{}/posture", kimura.device), "", Some(json!({"attestation": report})))
        .await;
    ok(status, &v);
    call("POST", "/v1/devices/{id}/posture");
    gw.admin("POST", "/v1/devices/bulk-1/revoke", json!({"reason": "紛失"})).await;
    call("POST", "/v1/devices/{id}/revoke");
    gw.admin("POST", "/v1/emergency-stop", json!({"reason": "第6条第4項"})).await;
    call("POST", "/v1/emergency-stop");
    gw.admin("POST", "/v1/emergency-stop/lift", json!({"reason": "復旧"})).await;
    call("POST", "/v1/emergency-stop/lift");
    // An evening a month ahead: a fixed date would one day be today, and
    // a maintenance window then in force would block the test's requests.
    let day = (chrono::Utc::now() + chrono::Duration::days(30)).format("%Y-%m-%d").to_string();
    let (start, end) = (format!("{day}T18:00:00+09:00"), format!("{day}T20:00:00+09:00"));
    let (start, end) = (start.as_str(), end.as_str());
    let grant = gw
        .admin(
            "POST",
            "/v1/overtime",
            json!({"user": "kimura", "approver": "課長", "reason": "議会対応", "start": start, "end": end}),
        )
        .await;
    call("POST", "/v1/overtime");
    let (status, v) = gw.admin_call("DELETE", &format!("/v1/overtime/{}", grant["id"]), ROOT_TOKEN, None).await;
    ok(status, &v);
    call("DELETE", "/v1/overtime/{id}");
    let window = gw.admin("POST", "/v1/maintenance", json!({"reason": "保守", "start": start, "end": end})).await;
    call("POST", "/v1/maintenance");
    let (status, v) = gw.admin_call("DELETE", &format!("/v1/maintenance/{}", window["id"]), ROOT_TOKEN, None).await;
    ok(status, &v);
    call("DELETE", "/v1/maintenance/{id}");
    gw.admin("PUT", "/v1/apps/kintone/5", json!({"stage": "development", "reason": "新規作成中"})).await;
    call("PUT", "/v1/apps/{profile}/{app}");
    let review = gw
        .admin(
            "POST",
            "/v1/apps/kintone/5/reviews",
            json!({"subject": "customize", "reviewer": "行政管理課", "note": "desktop.js"}),
        )
        .await;
    call("POST", "/v1/apps/{profile}/{app}/reviews");
    let (status, v) = gw.admin_call("DELETE", &format!("/v1/reviews/{}", review["id"]), ROOT_TOKEN, None).await;
    ok(status, &v);
    call("DELETE", "/v1/reviews/{id}");
    let (status, v) = gw.admin_call("POST", "/v1/rules/reload", ROOT_TOKEN, Some(json!({"reason": "改定"}))).await;
    assert_eq!(status, 400, "a reload without an approver is refused: {v}");
    gw.admin("POST", "/v1/rules/reload", json!({"approver": "統括情報責任者 山田", "reason": "有効期間の延長"})).await;
    call("POST", "/v1/rules/reload");

    let missing: Vec<_> = documented_writes().difference(&walked).cloned().collect();
    assert!(missing.is_empty(), "admin writes this test does not make: {missing:?}");
    let (_, audit) = gw.admin_call("GET", "/v1/audit?limit=1000", AUDITOR_TOKEN, None).await;
    let records = audit["records"].as_array().unwrap();
    assert!(records.len() >= walked.len(), "{audit}");
    for r in records {
        assert!(!r["reason"].as_str().unwrap().trim().is_empty(), "an audit record without a reason: {r}");
    }
    let reload = records.iter().find(|r| r["action"] == "rules.reload").unwrap();
    assert_eq!(
        (reload["approver"].as_str(), reload["reason"].as_str()),
        (Some("統括情報責任者 山田"), Some("有効期間の延長"))
    );
    let put = records.iter().find(|r| r["action"] == "user.put" && r["target"] == "kimura").unwrap();
    assert_eq!(put["reason"], "created");
}

/// 熊本 第17条 (a lost or stolen device) and 第12条第3項 (a changed device is
/// a new application): a revoked device is never approved again, and its
/// key is refused on a new application; a new key is accepted.
#[tokio::test]
async fn kumamoto_art17_a_revoked_device_needs_a_new_application_and_a_new_key() {
    let (_up, _ws, gw) = setup().await;
    let giin =
        gw.enrol("giin", Enrol { role: "councillor", kind: "smartphone", ownership: "personal", approve: true }).await;
    gw.admin("POST", &format!("/v1/devices/{}/revoke", giin.device), json!({"reason": "紛失の報告 (第17条)"})).await;
    let (status, v) = gw
        .admin_call(
            "POST",
            &format!("/v1/devices/{}/approve", giin.device),
            ROOT_TOKEN,
            Some(json!({"reason": "見つかった"})),
        )
        .await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(reason(&gw.get_as(&giin, "app.localhost", "/").await).as_deref(), Some("device_revoked"));
    let public = giin.key.public();
    let application = |id: &str, key: &sekisho_policy::device::DeviceKey| {
        json!({"id": id, "owner": "giin", "kind": "smartphone", "ownership": "personal", "os": "ios",
               "os_version": "17.4", "key_alg": key.alg(), "public_key": key.to_b64()})
    };
    let (status, v) =
        gw.admin_call("POST", "/v1/devices", APPLICANT_TOKEN, Some(application("giin-phone-2", &public))).await;
    assert_eq!(status, 409, "the old key is refused: {v}");
    assert!(v["error"].as_str().unwrap().contains("revoked"), "{v}");
    let fresh = sekisho_policy::attestation::SigningKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[42; 32]));
    let (status, v) =
        gw.admin_call("POST", "/v1/devices", APPLICANT_TOKEN, Some(application("giin-phone-2", &fresh.public()))).await;
    assert_eq!(status, 201, "{v}");
}

/// 熊本 第12条第2項: the 情報システム責任者 may approve a device below the
/// profile's minimums with a recorded exception; the record shows it.
#[tokio::test]
async fn kumamoto_art12_2_an_approval_records_an_exception_with_its_reason() {
    let (_up, _ws, gw) = setup().await;
    let mut giin =
        gw.enrol("giin", Enrol { role: "councillor", kind: "smartphone", ownership: "personal", approve: false }).await;
    giin.os_version = "16.7";
    let (status, v) = gw
        .admin_call(
            "POST",
            &format!("/v1/devices/{}/reject", giin.device),
            ROOT_TOKEN,
            Some(json!({"reason": "x", "exception": "y"})),
        )
        .await;
    assert_eq!(status, 400, "an exception only comes with an approval: {v}");
    gw.admin(
        "POST",
        &format!("/v1/devices/{}/approve", giin.device),
        json!({"reason": "様式第1号 確認", "exception": "iOS 16.7: 更新不可の機種、対策ソフト確認済み"}),
    )
    .await;
    // The test profiles ask for iOS 17.0: the exception wins.
    assert_eq!(gw.get_as(&giin, "app.localhost", "/").await.status(), 200);
    let (_, devices) = gw.admin_call("GET", "/v1/devices", AUDITOR_TOKEN, None).await;
    let d = devices["devices"].as_array().unwrap().iter().find(|d| d["id"] == giin.device.as_str()).unwrap().clone();
    assert_eq!(d["exception"]["reason"], "iOS 16.7: 更新不可の機種、対策ソフト確認済み");
    assert_eq!(d["exception"]["approver"], "root");
}

/// Abiko 8.(1) over the wire: each person works their own schedule and is
/// told their own next opening; a supervisor (所属長) orders overtime for
/// the members of their own department only, recorded with their name.
#[tokio::test]
async fn abiko_8_1_own_hours_own_next_opening_and_a_supervisor_orders_overtime_for_their_department() {
    let (_up, _ws, gw) = setup().await;
    let (gina, hank, ivy) = (
        gw.enrol("gina", Enrol::default()).await,
        gw.enrol("hank", Enrol::default()).await,
        gw.enrol("ivy", Enrol::default()).await,
    );
    let jst_hour = (chrono::Utc::now() + chrono::Duration::hours(9)).hour();
    let later = format!("daily {:02}:00-{:02}:00", (jst_hour + 5) % 24, (jst_hour + 6) % 24);
    let hours = std::fs::read_to_string(gw.path("rules/hours.toml")).unwrap().replace(
        "[network]",
        &format!("overtime_grants = true\n\n[schedules.all-day]\nalways = true\n\n[schedules.later]\nweekly = [\"{later}\"]\n\n[network]"),
    );
    gw.write_rules("hours.toml", &hours);
    gw.reload().await;
    let put = |user: &str, department: &str, schedule: Option<&str>| json!({"display_name": user, "role": "staff", "profiles": support::PROFILES, "department": department, "schedule": schedule});
    gw.admin("PUT", "/v1/users/gina", put("gina", "総務課", None)).await;
    gw.admin("PUT", "/v1/users/hank", put("hank", "市民課", Some("later"))).await;
    gw.admin("PUT", "/v1/users/ivy", put("ivy", "市民課", Some("all-day"))).await;
    let (status, v) =
        gw.admin_call("PUT", "/v1/users/ivy", ROOT_TOKEN, Some(put("ivy", "市民課", Some("no-such")))).await;
    assert_eq!(status, 400, "a schedule no profile defines: {v}");

    assert_eq!(gw.get_as(&ivy, "hours.localhost", "/").await.status(), 200, "ivy's own schedule is open");
    let opening = |resp: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(resp["retry_at"].as_str().unwrap()).unwrap().hour()
    };
    let gina_page: serde_json::Value = gw.get_as(&gina, "hours.localhost", "/").await.json().await.unwrap();
    let hank_page: serde_json::Value = gw.get_as(&hank, "hours.localhost", "/").await.json().await.unwrap();
    assert_eq!(gina_page["reason"], "outside_hours");
    assert_eq!(opening(&gina_page), (jst_hour + 2) % 24, "the profile's hours open then: {gina_page}");
    assert_eq!(opening(&hank_page), (jst_hour + 5) % 24, "hank's own schedule opens later: {hank_page}");

    let now = chrono::Utc::now();
    let grant = |who: (&str, &str)| {
        let mut g = json!({"reason": "議会対応", "start": now - chrono::Duration::minutes(5), "end": now + chrono::Duration::hours(1)});
        g[who.0] = json!(who.1);
        g
    };
    let (status, v) = gw.admin_call("POST", "/v1/overtime", SUPERVISOR_TOKEN, Some(grant(("user", "hank")))).await;
    assert_eq!(status, 403, "hank is not in the supervisor's department: {v}");
    let (status, v) =
        gw.admin_call("POST", "/v1/overtime", SUPERVISOR_TOKEN, Some(grant(("department", "市民課")))).await;
    assert_eq!(status, 403, "nor is 市民課: {v}");
    let mut other = grant(("user", "gina"));
    other["approver"] = json!("someone else");
    assert_eq!(gw.admin_call("POST", "/v1/overtime", SUPERVISOR_TOKEN, Some(other)).await.0, 400);
    let (status, v) = gw.admin_call("POST", "/v1/overtime", SUPERVISOR_TOKEN, Some(grant(("user", "gina")))).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(gw.get_as(&gina, "hours.localhost", "/").await.status(), 200, "gina's overtime");
    assert_eq!(reason(&gw.get_as(&hank, "hours.localhost", "/").await).as_deref(), Some("outside_hours"));

    // IT staff keep the power to grant for anyone; the supervisor sees and withdraws only their own.
    let it = gw
        .admin("POST", "/v1/overtime", {
            let mut g = grant(("department", "市民課"));
            g["approver"] = json!("市民課長");
            g
        })
        .await;
    assert_eq!(gw.get_as(&hank, "hours.localhost", "/").await.status(), 200, "a whole department's overtime");
    let (_, listed) = gw.admin_call("GET", "/v1/overtime", SUPERVISOR_TOKEN, None).await;
    let grants = listed["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 1, "{listed}");
    assert_eq!((grants[0]["user"].as_str(), grants[0]["approver"].as_str()), (Some("gina"), Some("soumu-kacho")));
    let (status, _) = gw.admin_call("DELETE", &format!("/v1/overtime/{}", it["id"]), SUPERVISOR_TOKEN, None).await;
    assert_eq!(status, 403, "another department's grant");
    let (status, _) = gw.admin_call("DELETE", &format!("/v1/overtime/{}", v["id"]), SUPERVISOR_TOKEN, None).await;
    assert_eq!(status, 200, "withdrawn by the supervisor who ordered it");
    assert_eq!(reason(&gw.get_as(&gina, "hours.localhost", "/").await).as_deref(), Some("outside_hours"));
    let (_, audit) = gw.admin_call("GET", "/v1/audit?action=overtime.grant&limit=5", AUDITOR_TOKEN, None).await;
    assert!(
        audit["records"].as_array().unwrap().iter().any(|r| r["approver"] == "soumu-kacho" && r["target"] == "gina"),
        "{audit}"
    );
}

/// 熊本 第11条第1項第1号, 第13条: a councillor's phone, where no agent runs,
/// proves itself with a certificate installed from its enrollment bundle.
/// The bundle is downloaded once; its PKCS#12 opens only with the one-time
/// password from the issuing answer (read here by `openssl`, as a phone
/// would); renewal before expiry keeps the old certificate working, and
/// revocation stops both.
#[tokio::test]
async fn kumamoto_art11_1_a_phone_enrolls_from_a_one_time_bundle_and_renews_before_expiry() {
    use base64::Engine as _;
    let (_up, _ws, gw) = setup().await;
    let giin =
        gw.enrol("giin", Enrol { role: "councillor", kind: "smartphone", ownership: "personal", approve: true }).await;
    let (status, v) =
        gw.admin_call("POST", &format!("/v1/devices/{}/certificate/renew", giin.device), ROOT_TOKEN, None).await;
    assert_eq!(status, 409, "nothing to renew yet: {v}");
    let issued = gw.admin("POST", &format!("/v1/devices/{}/certificate", giin.device), json!({})).await;
    let (id, otp) =
        (issued["enrollment"]["id"].as_str().unwrap(), issued["enrollment"]["one_time_password"].as_str().unwrap());
    let download = format!("/v1/enrollments/{id}/download");
    let (status, _) = gw.admin_call("POST", &download, AUDITOR_TOKEN, None).await;
    assert_eq!(status, 403, "only the system manager downloads it");
    let bundle = gw.admin("POST", &download, json!({})).await;
    let (status, _) = gw.admin_call("POST", &download, ROOT_TOKEN, None).await;
    assert_eq!(status, 404, "downloadable exactly once");
    let files = bundle["files_base64"].as_object().unwrap();
    let file = |suffix: &str| {
        let (_, data) = files.iter().find(|(name, _)| name.ends_with(suffix)).unwrap();
        base64::engine::general_purpose::STANDARD.decode(data.as_str().unwrap()).unwrap()
    };
    assert!(String::from_utf8(file(".mobileconfig")).unwrap().contains("com.apple.security.pkcs12"));
    assert!(String::from_utf8(file("-android-ja.txt")).unwrap().contains("ワンタイムパスワード"));
    let p12 = gw.path("giin.p12");
    std::fs::write(&p12, file(".p12")).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["pkcs12", "-nodes", "-in"])
        .arg(&p12)
        .args(["-passin", &format!("pass:{otp}")])
        .output()
        .expect("openssl (Debian package `openssl`) is needed for this test");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let identity = String::from_utf8(out.stdout).unwrap();
    let phone = gw.client_with_identity(&identity);
    let get = |client: reqwest::Client| {
        let url = gw.url("app.localhost", "/");
        async move { client.get(url).send().await.unwrap() }
    };
    assert_eq!(get(phone.clone()).await.status(), 200, "the installed bundle proves the phone");

    let renewed = gw.admin("POST", &format!("/v1/devices/{}/certificate/renew", giin.device), json!({})).await;
    assert_eq!(renewed["renewal"], true);
    assert!(renewed["enrollment"]["one_time_password"] != issued["enrollment"]["one_time_password"]);
    let new_pem =
        format!("{}{}", renewed["certificate_pem"].as_str().unwrap(), renewed["private_key_pem"].as_str().unwrap());
    let new_phone = gw.client_with_identity(&new_pem);
    assert_eq!(get(new_phone.clone()).await.status(), 200, "the renewed certificate");
    assert_eq!(get(phone.clone()).await.status(), 200, "the old one until it expires");
    gw.admin("POST", &format!("/v1/devices/{}/revoke", giin.device), json!({"reason": "紛失 (第17条)"})).await;
    assert_eq!(reason(&get(phone).await).as_deref(), Some("device_revoked"));
    assert_eq!(reason(&get(new_phone).await).as_deref(), Some("device_revoked"));
    let (_, audit) = gw.admin_call("GET", "/v1/audit?action=device.enrollment.download", AUDITOR_TOKEN, None).await;
    assert_eq!(audit["records"].as_array().unwrap().len(), 1, "{audit}");
    let everything = format!("{}{}", std::fs::read_to_string(gw.path("data/audit.jsonl")).unwrap(), gw.log());
    assert!(!everything.contains(otp), "the one-time password is never logged");
}

/// A TLS scanner's finding: HTTPS answers, allowed or blocked, carry HSTS
/// from the profile; plain HTTP answers never do.
#[tokio::test]
async fn https_answers_carry_strict_transport_security() {
    let up = Upstream::start().await;
    let ws = WsUpstream::start().await;
    let gw = Gateway::start(&up, &ws).await;
    let p = gw.enrol("hana", Enrol::default()).await;
    let allowed = gw.get_as(&p, "app.localhost", "/").await;
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.headers()["strict-transport-security"], "max-age=31536000");
    let blocked = gw.client().get(gw.url("app.localhost", "/")).send().await.unwrap();
    assert_eq!(blocked.status(), 403);
    assert_eq!(blocked.headers()["strict-transport-security"], "max-age=31536000");
    let plain = reqwest::Client::new()
        .get(format!("http://{}/", gw.http))
        .header("host", "app.localhost")
        .send()
        .await
        .unwrap();
    assert!(!plain.headers().contains_key("strict-transport-security"));
    // Turned off for one profile.
    let text = std::fs::read_to_string(gw.path("rules/app.toml")).unwrap();
    gw.write_rules("app.toml", &format!("{text}\n[hsts]\nmax_age_secs = 0\n"));
    gw.admin("POST", "/v1/rules/reload", json!({"approver": "統括情報責任者", "reason": "hsts off"})).await;
    let off = gw.get_as(&p, "app.localhost", "/").await;
    assert!(!off.headers().contains_key("strict-transport-security"));
}
