//! A real browser through the gateway (issue 6): Debian's Chromium, driven
//! by playwright-core, loads a page whose script uses fetch() and a
//! WebSocket. With the device certificate everything works; without it,
//! with it revoked, or outside hours the browser shows the block page.
//! Screenshots go to `target/browser-screenshots/`. Skipped, with a message
//! on stderr, where Chromium or playwright-core is not installed
//! (`.ci/run` installs both).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failed step is a failed test")]

mod support;

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use support::{AppUpstream, Enrol, Gateway, Upstream, WsUpstream};

fn browser_ready() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let ready = Path::new("/usr/bin/chromium").exists() && dir.join("node_modules/playwright-core").exists();
    ready.then_some(dir)
}

/// Loads `url` in Chromium, optionally with a client certificate.
fn visit(dir: &Path, url: &str, shot: &Path, identity: Option<(&Path, &Path)>) -> Value {
    let mut cmd = std::process::Command::new("node");
    cmd.current_dir(dir).arg("e2e.mjs").arg(url).arg(shot);
    if let Some((cert, key)) = identity {
        cmd.arg(cert).arg(key);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "browser run failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(out.stdout.trim_ascii()).unwrap()
}

#[tokio::test]
async fn a_browser_with_a_device_certificate_works_and_is_blocked_when_it_should_be() {
    let Some(dir) = browser_ready() else {
        eprintln!("SKIPPED browser test: install Debian's chromium and run `npm ci` in tests/browser");
        return;
    };
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let (up, ws, app) = (Upstream::start().await, WsUpstream::start().await, AppUpstream::start().await);
    let gw = Gateway::start(&up, &ws).await;
    let base = std::fs::read_to_string(gw.path("rules/app.toml")).unwrap();
    let browser_rules = base
        .replace("name = \"app\"", "name = \"browser\"")
        .replace("host = \"app.localhost\"", "host = \"localhost\"")
        .replace("audience = \"app.localhost\"", "audience = \"localhost\"")
        .replace(&format!("http://{}", up.addr), &format!("http://{}", app.addr));
    gw.write_rules("browser.toml", &browser_rules);
    gw.admin("POST", "/v1/rules/reload", json!({})).await;
    let person = gw.enrol("tomo", Enrol::default()).await;
    let mut profiles: Vec<&str> = support::PROFILES.to_vec();
    profiles.push("browser");
    gw.admin("PUT", "/v1/users/tomo", json!({"display_name": "tomo", "role": "staff", "profiles": profiles})).await;
    let issued = gw.admin("POST", &format!("/v1/devices/{}/certificate", person.device), json!({})).await;
    let (cert, key) = (gw.path("tomo.crt"), gw.path("tomo.key"));
    std::fs::write(&cert, issued["certificate_pem"].as_str().unwrap()).unwrap();
    std::fs::write(&key, issued["private_key_pem"].as_str().unwrap()).unwrap();
    let url = format!("https://localhost:{}/", gw.https.port());
    let (dir_c, url_c) = (dir.clone(), url.clone());
    let run = move |shot: &str, id: bool| {
        let (dir, url, shots, cert, key) = (dir_c.clone(), url_c.clone(), shots.clone(), cert.clone(), key.clone());
        let shot = shots.join(shot);
        async move {
            tokio::task::spawn_blocking(move || visit(&dir, &url, &shot, id.then_some((&cert, &key)))).await.unwrap()
        }
    };

    let ok = run("allowed.png", true).await;
    assert_eq!((ok["kind"].as_str(), ok["text"].as_str()), (Some("app"), Some("fetch: ok / ws: ping")), "{ok}");

    let anonymous = run("blocked-no-certificate.png", false).await;
    assert_eq!(
        (anonymous["status"].as_u64(), anonymous["reason"].as_str()),
        (Some(403), Some("attestation_missing")),
        "{anonymous}"
    );

    let jst_hour = (chrono::Utc::now() + chrono::Duration::hours(9)).format("%H").to_string().parse::<u32>().unwrap();
    let closed = browser_rules.replace(
        "always = true",
        &format!("weekly = [\"daily {:02}:00-{:02}:00\"]", (jst_hour + 2) % 24, (jst_hour + 3) % 24),
    );
    gw.write_rules("browser.toml", &closed);
    gw.admin("POST", "/v1/rules/reload", json!({})).await;
    let hours = run("blocked-outside-hours.png", true).await;
    assert_eq!(hours["reason"].as_str(), Some("outside_hours"), "{hours}");
    assert_eq!(hours["title"].as_str(), Some("利用できる時間外です"));

    gw.write_rules("browser.toml", &browser_rules);
    gw.admin("POST", "/v1/rules/reload", json!({})).await;
    gw.admin("POST", &format!("/v1/devices/{}/revoke", person.device), json!({"reason": "紛失"})).await;
    let revoked = run("blocked-revoked.png", true).await;
    assert_eq!(revoked["reason"].as_str(), Some("device_revoked"), "{revoked}");
}
