//! The audit trail as an auditor meets it: the real gateway under
//! concurrent load rotates its log by size and reopens it after a
//! logrotate-style rename (SIGUSR1), and afterwards every request is in the
//! trail exactly once, `sekisho audit verify` passes, `sekisho audit query`
//! finds a person's records as CSV, and a removed line is caught; a gateway
//! stopped under load has written a line for every answer it gave.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failed step is a failed test")]

mod support;

use std::collections::HashSet;
use std::process::Command;

use support::{Enrol, Gateway, Upstream, WsUpstream};

fn sekisho(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sekisho")).current_dir(dir).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The request id of every line in the trail (active, rotated, compressed
/// and renamed files), as `sekisho audit query` reads them.
fn trail_ids(dir: &std::path::Path) -> Vec<String> {
    let (ok, out, err) = sekisho(dir, &["audit", "query"]);
    assert!(ok, "{err}");
    out.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["request_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_is_lost_across_rotations_and_a_reopen_under_load() {
    let upstream = Upstream::start().await;
    let ws = WsUpstream::start().await;
    let config = "\n[audit]\nrotate_bytes = 16384\nretention_days = 30\n\n[limits]\nper_user_rps = 100000\n";
    let mut gw = Gateway::start_with(&upstream, &ws, config).await;
    let tanaka = gw.enrol("tanaka", Enrol::default()).await;
    gw.admin("POST", "/v1/users/tanaka/suspend", serde_json::json!({"reason": "check"})).await;
    gw.admin("POST", "/v1/users/tanaka/unsuspend", serde_json::json!({"reason": "checked"})).await;

    const WORKERS: usize = 8;
    const EACH: usize = 150;
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let (client, url, token) = (gw.client(), gw.url("app.localhost", "/"), tanaka.token("app.localhost"));
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..EACH {
                let mut req = client.get(format!("{url}w{w}/{i}"));
                if i % 2 == 0 {
                    req = req.header("device-attestation", &token);
                }
                let resp = req.send().await.unwrap();
                ids.push(resp.headers()["sekisho-request-id"].to_str().unwrap().to_owned());
                assert!(resp.status() == 200 || i % 2 == 1, "{}", resp.status());
            }
            ids
        }));
    }
    // Halfway, as logrotate (`create` mode) would: rename, then signal.
    loop {
        let written = std::fs::read_dir(gw.path("data")).unwrap().count();
        if written > 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    std::fs::rename(gw.path("data/audit.jsonl"), gw.path("data/audit.jsonl.1")).unwrap();
    gw.signal("USR1");
    let mut sent = HashSet::new();
    for t in tasks {
        sent.extend(t.await.unwrap());
    }
    gw.stop().await;
    assert_eq!(sent.len(), WORKERS * EACH);

    let names: Vec<String> = std::fs::read_dir(gw.path("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().filter(|n| n.ends_with(".jsonl.gz")).count() >= 3, "too few rotations: {names:?}");
    assert!(names.contains(&"audit.jsonl.1".to_owned()), "{names:?}");
    // Each rotated file was compressed exactly once: helpers racing on one
    // file once logged a failed compression (and could corrupt its archive).
    assert!(!gw.log().contains("compressing"), "{}", gw.log());

    // Every request exactly once across active, rotated, compressed and renamed files.
    let ids = trail_ids(gw.dir.path());
    assert_eq!(ids.len(), WORKERS * EACH);
    assert_eq!(ids.iter().cloned().collect::<HashSet<_>>(), sent);

    let (ok, out, err) = sekisho(gw.dir.path(), &["audit", "verify"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("ok: request trail intact") && out.contains("ok: admin records intact: "), "{out}");

    // An auditor's CSV of one person's denials.
    let (ok, csv, err) =
        sekisho(gw.dir.path(), &["audit", "query", "--user", "tanaka", "--decision", "allow", "--csv"]);
    assert!(ok, "{err}");
    assert_eq!(csv.lines().count(), 1 + WORKERS * EACH / 2, "{err}");
    assert!(csv.lines().nth(1).unwrap().contains(",tanaka,tanaka-pc,127.0.0.1,app.localhost:"), "{csv}");

    // One line removed from the active file is named by file and line.
    let active = gw.path("data/audit.jsonl");
    let text = std::fs::read_to_string(&active).unwrap();
    let kept: Vec<&str> = text.lines().enumerate().filter(|(i, _)| *i != 2).map(|(_, l)| l).collect();
    std::fs::write(&active, kept.join("\n") + "\n").unwrap();
    let (ok, out, _) = sekisho(gw.dir.path(), &["audit", "verify"]);
    assert!(!ok, "{out}");
    assert!(out.contains("audit.jsonl:3: seq jumps"), "{out}");
}

/// SIGTERM while clients keep sending and one request waits on its
/// upstream: the gateway stops accepting, answers what it holds (the
/// waiting request too), drains the audit queue and exits 0. Afterwards the trail
/// has one line for every answer a client received, none twice and none for
/// a request no one was answered, and its chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_stopped_under_load_leaves_one_line_for_every_answer() {
    let upstream = Upstream::start().await;
    let ws = WsUpstream::start().await;
    let mut gw = Gateway::start_with(&upstream, &ws, "\n[limits]\nper_user_rps = 100000\n").await;
    let tanaka = gw.enrol("tanaka", Enrol::default()).await;

    const CLIENTS: usize = 8;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let client = if c % 2 == 0 { gw.client() } else { gw.http1_client() };
        let (url, token) = (gw.url("app.localhost", "/"), tanaka.token("app.localhost"));
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            // Until the gateway is gone: a refused or closed connection ends
            // the client, an answer of any status is counted.
            for i in 0..20_000 {
                let mut req = client.get(format!("{url}c{c}/{i}"));
                if i % 3 != 0 {
                    req = req.header("device-attestation", &token);
                }
                let Ok(resp) = req.send().await else { break };
                let id = resp.headers().get("sekisho-request-id").map(|v| v.to_str().unwrap().to_owned());
                ids.push(id.unwrap_or_else(|| panic!("an answer without a request id: {}", resp.status())));
                if resp.bytes().await.is_err() {
                    break;
                }
            }
            ids
        }));
    }
    // Stop once the clients are well under way, with one request held by
    // its upstream (3 s, inside the 5 s the drain grants) at that moment.
    let trail = gw.path("data/audit.jsonl");
    while std::fs::read_to_string(&trail).unwrap_or_default().lines().count() < 600 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let mut held = Vec::new();
    for (client, path) in [(gw.client(), "/held/h2/stall"), (gw.http1_client(), "/held/h1/stall")] {
        let req = client.get(gw.url("app.localhost", path)).header("device-attestation", tanaka.token("app.localhost"));
        held.push((path, tokio::spawn(req.send())));
        while !upstream.seen().iter().any(|s| s.path == path) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    gw.stop().await;
    let mut answered = Vec::new();
    for (path, held) in held {
        let held = held.await.unwrap().unwrap_or_else(|e| panic!("{path}, in flight at the stop: {e}"));
        let version = if path.contains("h2") { http::Version::HTTP_2 } else { http::Version::HTTP_11 };
        assert_eq!((held.status().as_u16(), held.version()), (200, version), "{path}");
        answered.push(held.headers()["sekisho-request-id"].to_str().unwrap().to_owned());
    }
    for t in tasks {
        answered.extend(t.await.unwrap());
    }
    assert!(answered.len() >= 600, "{}", answered.len());

    let written = trail_ids(gw.dir.path());
    let unique: HashSet<&String> = written.iter().collect();
    assert_eq!(unique.len(), written.len(), "a request written twice");
    let answered: HashSet<&String> = answered.iter().collect();
    let unwritten: Vec<_> = answered.difference(&unique).collect();
    assert!(unwritten.is_empty(), "{} answers without a line, e.g. {:?}", unwritten.len(), &unwritten[..1]);
    let unanswered: Vec<_> = unique.difference(&answered).collect();
    assert!(unanswered.is_empty(), "{} lines for requests no client was answered: {unanswered:?}", unanswered.len());

    let (ok, out, err) = sekisho(gw.dir.path(), &["audit", "verify"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("ok: request trail intact"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_key_is_exported_and_pins_verification() {
    let upstream = Upstream::start().await;
    let ws = WsUpstream::start().await;
    let config = "\n[audit]\nrotate_bytes = 4096\n";
    let mut gw = Gateway::start_with(&upstream, &ws, config).await;
    for i in 0..40 {
        gw.client().get(gw.url("app.localhost", &format!("/{i}"))).send().await.unwrap();
    }
    gw.stop().await;
    let (ok, pem, err) = sekisho(gw.dir.path(), &["audit", "public-key"]);
    assert!(ok && pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}{err}");
    std::fs::write(gw.path("audit.pub"), &pem).unwrap();
    let files: Vec<String> = std::fs::read_dir(gw.path("data"))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.contains("audit") && !p.ends_with(".key"))
        .collect();
    let mut args = vec!["audit", "verify", "--public-key", "audit.pub"];
    args.extend(files.iter().map(String::as_str));
    let (ok, out, err) = sekisho(gw.dir.path(), &args);
    assert!(ok, "{out}{err}");
    assert!(!out.contains("note: signatures checked against the key named"), "{out}");
    // Another key is refused.
    let other = ed25519_dalek::SigningKey::from_bytes(&[5; 32]).verifying_key();
    use ed25519_dalek::pkcs8::EncodePublicKey as _;
    std::fs::write(gw.path("other.pub"), other.to_public_key_pem(Default::default()).unwrap()).unwrap();
    args[3] = "other.pub";
    let (ok, out, _) = sekisho(gw.dir.path(), &args);
    assert!(!ok && out.contains("signature does not verify"), "{out}");
}
