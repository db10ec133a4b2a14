use serde_json::json;

use super::render;

fn has_all(text: &str, lines: &[&str]) {
    for line in lines {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}

/// A status as the gateway answered it on a fresh start (abridged: two
/// profiles, three findings).
fn status() -> serde_json::Value {
    json!({
        "audit_log_writable": true, "devices": 2, "emergency_stop": null, "live_requests": 1, "users": 3,
        "snapshot_built_at": "2026-12-02T11:34:29.384299055Z",
        "store": {"backend": "sqlite", "confirmed_age_secs": 0.938, "error": null, "fresh": true,
                  "position": 2, "reachable": true, "state_max_age_secs": 30},
        "health": {"checked_at": "2026-12-02T11:34:29.387475136+00:00", "findings": [
            {"check": "certificate", "level": "ok", "message": "396 day(s) to expiry", "next_step": "", "subject": "server certs/server.pem"},
            {"check": "upstream", "level": "error", "message": "cannot connect: failed to lookup address information",
             "next_step": "check DNS, routing and the firewall from this host to the SaaS", "subject": "abiko.cybozu.com -> abiko.cybozu.com:443"},
            {"check": "clock", "level": "warn", "message": "no [clock] ntp_server: the offset is not measured",
             "next_step": "set the city's NTP server under [clock]", "subject": "ntp"}]},
        "profiles": [
            {"emergency_stop": null, "hosts": ["abiko.cybozu.com"], "name": "abiko-kintone",
             "title": "我孫子市 kintone（実証実験）", "valid_from": "2022-07-12", "valid_until": "2023-05-31"},
            {"emergency_stop": null, "hosts": ["demo.localhost", "demo2.localhost"], "name": "demo",
             "title": "sekisho デモ / demo", "valid_from": null, "valid_until": null}]
    })
}

#[test]
fn a_healthy_gateway_reads_as_served_with_its_profiles_and_what_needs_doing() {
    let text = render(&status());
    let expected = [
        "sekisho status (state of 2026-12-02 20:34:29 JST)",
        "Requests   served (state confirmed 0.9 s ago, limit 30 s; store sqlite)",
        "Audit log  writable",
        "Emergency  no stop",
        "Counts     2 profile(s), 3 user(s), 2 device(s), 1 live request(s)",
        "  abiko-kintone                我孫子市 kintone（実証実験）  (terms 2022-07-12 to 2023-05-31)\n      abiko.cybozu.com",
        "  demo                         sekisho デモ / demo\n      demo.localhost, demo2.localhost",
        "Health (checked 2026-12-02 20:34:29 JST): 1 error(s), 1 warning(s), 1 ok",
        "  ERROR upstream abiko.cybozu.com -> abiko.cybozu.com:443\n        cannot connect: failed to lookup address information\n        next: check DNS, routing and the firewall from this host to the SaaS",
        "  WARN  clock ntp\n",
    ];
    has_all(&text, &expected);
    assert!(!text.contains("396 day(s)"), "a passing check is counted, not listed:\n{text}");
}

#[test]
fn refusals_stops_and_an_unwritable_trail_are_spelled_out() {
    let mut s = status();
    s["store"]["fresh"] = json!(false);
    s["store"]["reachable"] = json!(false);
    s["store"]["confirmed_age_secs"] = json!(45.25);
    s["store"]["error"] = json!("connection refused");
    s["audit_log_writable"] = json!(false);
    s["emergency_stop"] = json!({"reason": "不正アクセスの疑い", "since": "2026-12-02T17:05:00Z"});
    s["profiles"][1]["emergency_stop"] = json!({"reason": "端末紛失", "since": "2026-12-01T15:00:00Z"});
    let text = render(&s);
    let expected = [
        "Requests   REFUSED with 503 state_unavailable: state not confirmed for 45.2 s (limit 30 s; store sqlite); the store is unreachable; last error: connection refused",
        "Audit log  NOT WRITABLE: every request is refused until it can be written",
        "Emergency  STOPPED for everyone since 2026-12-03 02:05:00 JST: 不正アクセスの疑い",
        "sekisho デモ / demo\n      STOPPED since 2026-12-02 00:00:00 JST: 端末紛失\n      demo.localhost",
    ];
    has_all(&text, &expected);
}

#[test]
fn what_the_gateway_did_not_send_is_unknown_not_guessed() {
    let text = render(&json!({}));
    let expected = [
        "state of unknown time",
        "Requests   unknown",
        "Audit log  unknown",
        "Emergency  unknown",
        "0 profile(s), ? user(s)",
        "Health     not checked yet",
    ];
    has_all(&text, &expected);
}
