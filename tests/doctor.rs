//! `sekisho doctor` on a real gateway directory: real certificates, a
//! real store, a real TLS upstream on loopback and a tiny SNTP responder
//! whose clock is set ahead, so the clock finding and the refusal to start
//! with a wrong clock are measured, not assumed. Also: the admin listener
//! on a network address without TLS is refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failed step is a failed test")]

mod support;

use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, SystemTime};

use support::{Gateway, TlsUpstream, Upstream, WsUpstream};

fn sekisho(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sekisho")).current_dir(dir).args(args).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// An SNTP server on loopback whose clock runs `ahead` seconds ahead.
fn sntp_responder(ahead: u64) -> std::net::SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || loop {
        let mut req = [0u8; 48];
        let Ok((n, from)) = socket.recv_from(&mut req) else { return };
        if n < 48 {
            continue;
        }
        let now = sekisho::sntp::to_ntp(SystemTime::now() + Duration::from_secs(ahead));
        let mut a = [0u8; 48];
        a[0] = 0b00_100_100;
        a[1] = 1;
        a[24..32].copy_from_slice(&req[40..48]);
        a[32..40].copy_from_slice(&now.to_be_bytes());
        a[40..48].copy_from_slice(&now.to_be_bytes());
        let _ = socket.send_to(&a, from);
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_checks_files_store_upstreams_and_the_clock() {
    let upstream = Upstream::start().await;
    let ws = WsUpstream::start().await;
    let good_ntp = sntp_responder(0);
    let config = format!("\n[clock]\nntp_server = \"{good_ntp}\"\nmax_offset_ms = 1000\n");
    let mut gw = Gateway::start_with(&upstream, &ws, &config).await;
    let tls = TlsUpstream::start("upstream.localhost").await;
    std::fs::write(gw.path("rules/private-ca.pem"), &tls.ca_pem).unwrap();
    gw.add_profile("secure", tls.addr, "", &[]).await;
    // The route names its upstream by an address: a name the certificate does not hold.
    let text = std::fs::read_to_string(gw.path("rules/secure.toml")).unwrap();
    let wrong_name = text.replace(
        &format!("upstream = \"http://{}\"", tls.addr),
        &format!("upstream = \"https://{}\"\nca_file = \"private-ca.pem\"", tls.addr),
    );
    gw.write_rules("secure.toml", &wrong_name);

    let (ok, out) = sekisho(gw.dir.path(), &["doctor"]);
    assert!(!ok, "a TLS upstream with the wrong name is an error:\n{out}");
    assert!(
        out.contains(&format!("[FAIL] upstream: secure.localhost -> 127.0.0.1:{}: TLS failed", tls.addr.port())),
        "{out}"
    );
    assert!(out.contains("[ OK ] certificate: server certs/server.pem"), "{out}");
    assert!(out.contains("[ OK ] store: data/state.sqlite3: admin audit chain intact"), "{out}");
    assert!(out.contains("[ OK ] audit_log: data/audit.jsonl: directory data writable"), "{out}");
    assert!(out.contains("[ OK ] clock:") && out.contains(" offset "), "{out}");
    assert!(out.contains("[WARN] upstream: app.localhost ->") && out.contains("plain HTTP"), "{out}");

    // The same with the name the certificate holds resolves to the upstream: all well.
    let right_name =
        wrong_name.replace(&format!("https://{}", tls.addr), &format!("https://localhost:{}", tls.addr.port()));
    let fixed = right_name.replace("\"localhost\"", "\"upstream.localhost\"");
    gw.write_rules("secure.toml", &fixed);
    let (_, out) = sekisho(gw.dir.path(), &["doctor", "--json"]);
    let report: serde_json::Value =
        serde_json::from_str(&out.lines().take_while(|l| !l.starts_with("sekisho:")).collect::<Vec<_>>().join("\n"))
            .unwrap();
    let secure = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["subject"].as_str().unwrap().starts_with("secure.localhost"))
        .unwrap();
    assert_eq!(secure["check"], "upstream", "{secure}");

    // A certificate close to expiry is a warning with its days.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let soon = chrono::Utc::now() + chrono::Duration::days(10);
    params.not_after = rcgen::date_time_ymd(
        soon.format("%Y").to_string().parse().unwrap(),
        soon.format("%m").to_string().parse().unwrap(),
        soon.format("%d").to_string().parse().unwrap(),
    );
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(gw.path("certs/server.pem"), cert.pem()).unwrap();
    std::fs::write(gw.path("certs/server.key"), key.serialize_pem()).unwrap();
    let (_, out) = sekisho(gw.dir.path(), &["doctor"]);
    assert!(out.contains("[WARN] certificate: server certs/server.pem") && out.contains("day(s) to expiry"), "{out}");
    // A key that does not belong to the certificate is an error.
    std::fs::write(gw.path("certs/server.key"), rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let (ok, out) = sekisho(gw.dir.path(), &["doctor"]);
    assert!(!ok && out.contains("does not belong to the certificate"), "{out}");

    // The running gateway exposes its findings in /metrics and the status.
    let metrics = gw.admin_metrics().await;
    assert!(
        metrics.contains("sekisho_doctor_finding{check=\"clock\"") && metrics.contains("sekisho_clock_offset_seconds"),
        "{metrics}"
    );
    let status = gw.admin("GET", "/v1/status", serde_json::Value::Null).await;
    assert!(status["health"]["findings"].as_array().is_some_and(|f| !f.is_empty()), "{status}");
    gw.kill9();
}

/// Whether the seconds after `label` in `text` are 120 give or take a second.
fn about_120(text: &str, label: &str) -> bool {
    text.split(label)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .is_some_and(|n| (n - 120.0).abs() < 1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_clock_is_found_and_refuses_the_start_only_when_told() {
    let upstream = Upstream::start().await;
    let ws = WsUpstream::start().await;
    let fast = sntp_responder(120);
    let config = format!("\n[clock]\nntp_server = \"{fast}\"\nmax_offset_ms = 2000\n");
    let mut gw = Gateway::start_with(&upstream, &ws, &config).await;
    let (ok, out) = sekisho(gw.dir.path(), &["doctor"]);
    assert!(!ok && out.contains("[FAIL] clock:") && about_120(&out, "offset "), "{out}");
    gw.kill9();

    let text = std::fs::read_to_string(gw.path("sekisho.toml")).unwrap();
    std::fs::write(
        gw.path("sekisho.toml"),
        text.replace("max_offset_ms = 2000", "max_offset_ms = 2000\nrefuse_start = true"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sekisho")).current_dir(gw.dir.path()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && about_120(&err, "the clock is "), "{err}");
}

#[test]
fn an_admin_listener_on_the_network_without_tls_is_refused_unless_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::copy(root.join("rules/demo.toml"), dir.path().join("rules/demo.toml")).unwrap();
    let config = std::fs::read_to_string(root.join("sekisho.toml"))
        .unwrap()
        .replace("listen = \"127.0.0.1:9090\"", "listen = \"0.0.0.0:9090\"");
    std::fs::write(dir.path().join("sekisho.toml"), &config).unwrap();
    let (ok, out) = sekisho(dir.path(), &["check-config"]);
    assert!(!ok && out.contains("without TLS") && out.contains("insecure_plain_http"), "{out}");
    let acknowledged = config.replace("[admin]\n", "[admin]\ninsecure_plain_http = true\n");
    std::fs::write(dir.path().join("sekisho.toml"), acknowledged).unwrap();
    let (ok, out) = sekisho(dir.path(), &["check-config"]);
    assert!(ok, "{out}");
}
