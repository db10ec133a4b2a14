//! The wire rules the request path keeps (issue 10, "sekisho owns the
//! wire"), each sent as raw bytes to the real gateway: refusals are the
//! gateway's own answers with a request id and an audit line, pipelined
//! requests are answered in order, a half-closed client still gets its
//! answer, slow readers and slow bodies are cut by their own deadlines.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failed step is a failed test")]

mod support;

use std::time::{Duration, Instant};

use support::{Enrol, Gateway, Upstream, WsUpstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn setup(extra: &str) -> (Upstream, WsUpstream, Gateway) {
    let up = Upstream::start().await;
    let ws = WsUpstream::start().await;
    let gw = Gateway::start_with(&up, &ws, extra).await;
    (up, ws, gw)
}

/// Writes `bytes` on a fresh plain connection and reads until it closes.
async fn exchange(gw: &Gateway, bytes: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await.unwrap().unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next()?;
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The audit line carrying `id`, waiting briefly for the writer.
async fn audit_line(gw: &Gateway, id: &str) -> serde_json::Value {
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let text = std::fs::read_to_string(gw.path("data/audit.jsonl")).unwrap_or_default();
        if let Some(v) =
            text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).find(|v| v["request_id"] == id)
        {
            return v;
        }
    }
    panic!("no audit line for request {id}");
}

#[tokio::test]
async fn malformed_requests_get_the_gateways_own_400_with_a_request_id_and_an_audit_line() {
    let (up, _ws, gw) = setup("").await;
    let p = gw.enrol("wire", Enrol::default()).await;
    let t = p.token("app.localhost");
    let cases = [
        ("bare LF", format!("GET / HTTP/1.1\nHost: app.localhost\nDevice-Attestation: {t}\n\n")),
        ("bare LF in one line", format!("GET / HTTP/1.1\r\nHost: app.localhost\nDevice-Attestation: {t}\r\n\r\n")),
        ("obs-fold", format!("GET / HTTP/1.1\r\nHost: app.localhost\r\nX-A: 1\r\n  folded\r\nDevice-Attestation: {t}\r\n\r\n")),
        ("CL+TE with close", format!("POST / HTTP/1.1\r\nHost: app.localhost\r\nDevice-Attestation: {t}\r\nConnection: close\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")),
        ("control byte", format!("GET / HTTP/1.1\r\nHost: app.localhost\r\nX-A: a\x01b\r\nDevice-Attestation: {t}\r\n\r\n")),
        ("HTTP/2 preface on HTTP/1", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_owned()),
        ("header name with space", format!("GET / HTTP/1.1\r\nHost : app.localhost\r\nDevice-Attestation: {t}\r\n\r\n")),
        ("fragment in target", format!("GET /a#b HTTP/1.1\r\nHost: app.localhost\r\nDevice-Attestation: {t}\r\n\r\n")),
    ];
    for (name, bytes) in &cases {
        let answer = exchange(&gw, bytes.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{name}: {answer}");
        assert_eq!(header(&answer, "sekisho-deny-reason"), Some("bad_request"), "{name}");
        assert!(header(&answer, "server").is_none(), "{name}: no foreign server header");
        let id = header(&answer, "sekisho-request-id").unwrap_or_else(|| panic!("{name}: no request id"));
        let line = audit_line(&gw, id).await;
        assert_eq!((line["status"].as_u64(), line["reason"].as_str()), (Some(400), Some("bad_request")), "{name}");
        assert!(answer.contains(id), "{name}: the body names the request id too");
    }
    assert!(up.seen().is_empty(), "a malformed request reached the upstream: {:?}", up.seen());
}

#[tokio::test]
async fn chunk_extensions_with_control_bytes_and_trailers_are_refused() {
    let (up, _ws, gw) = setup("").await;
    let p = gw.enrol("chunks", Enrol::default()).await;
    let t = p.token("app.localhost");
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: app.localhost\r\nDevice-Attestation: {t}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    for (name, body) in [
        ("control byte in extension", "5;x=\x07\r\nhello\r\n0\r\n\r\n"),
        ("trailer", "5\r\nhello\r\n0\r\nX-Late: 1\r\n\r\n"),
    ] {
        let answer = exchange(&gw, format!("{head}{body}").as_bytes()).await;
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 400 "), "{name}: {answer}");
        assert!(!answer.contains("HTTP/1.1 200"), "{name}: a refused body was answered as a success");
    }
    // Whatever reached the upstream before the refusal never completed.
    assert!(up.seen().iter().all(|s| !s.complete), "{:?}", up.seen());
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (_up, _ws, gw) = setup("").await;
    let p = gw.enrol("piper", Enrol::default()).await;
    let t = p.token("app.localhost");
    let mut bytes = String::new();
    for i in 0..4 {
        let close = if i == 3 { "Connection: close\r\n" } else { "" };
        bytes += &format!("GET /p{i} HTTP/1.1\r\nHost: app.localhost\r\nDevice-Attestation: {t}\r\n{close}\r\n");
    }
    let answer = exchange(&gw, bytes.as_bytes()).await;
    let statuses = answer.matches("HTTP/1.1 200 OK").count();
    assert_eq!(statuses, 4, "{answer}");
    let lines = gw.audit_lines("piper").await;
    let paths: Vec<_> = lines.iter().map(|l| l["path"].as_str().unwrap().to_owned()).collect();
    assert_eq!(paths, ["/p0", "/p1", "/p2", "/p3"]);
}

#[tokio::test]
async fn a_client_that_half_closes_after_sending_still_gets_its_answer() {
    let (up, _ws, gw) = setup("").await;
    let p = gw.enrol("half", Enrol::default()).await;
    let t = p.token("app.localhost");
    for trial in 0..16 {
        let mut s = tokio::net::TcpStream::connect(gw.http).await.unwrap();
        let req = format!("POST /half{trial} HTTP/1.1\r\nHost: app.localhost\r\nDevice-Attestation: {t}\r\nContent-Length: 3\r\n\r\nabc");
        s.write_all(req.as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await.unwrap().unwrap();
        let answer = String::from_utf8_lossy(&out);
        assert!(answer.starts_with("HTTP/1.1 200"), "trial {trial}: {answer}");
    }
    assert_eq!(up.seen().len(), 16);
    let lines = gw.audit_lines("half").await;
    assert!(lines.iter().all(|l| l["status"] == 200), "{lines:?}");
}

#[tokio::test]
async fn overlong_or_invalid_utf8_escapes_in_the_path_are_refused() {
    let (up, _ws, gw) = setup("").await;
    let p = gw.enrol("escapes", Enrol::default()).await;
    let t = p.token("app.localhost");
    for path in ["/%C0%AE%C0%AE/admin", "/%E0%80%AF", "/a%FF", "/%ED%A0%80"] {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: app.localhost\r\nDevice-Attestation: {t}\r\nConnection: close\r\n\r\n"
        );
        let answer = exchange(&gw, req.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{path}: {answer}");
    }
    assert!(up.seen().is_empty());
    let ok = format!(
        "GET /%E3%81%82 HTTP/1.1\r\nHost: app.localhost\r\nDevice-Attestation: {t}\r\nConnection: close\r\n\r\n"
    );
    assert!(exchange(&gw, ok.as_bytes()).await.starts_with("HTTP/1.1 200"), "a well-formed escape passes");
}

#[tokio::test]
async fn a_slow_request_body_is_answered_408_not_504() {
    let (_up, _ws, gw) = setup("\n[limits]\nbody_idle_secs = 1\n").await;
    let p = gw.enrol("trickler", Enrol::default()).await;
    let t = p.token("features.localhost");
    let mut s = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let head = format!("POST /drive/up HTTP/1.1\r\nHost: features.localhost\r\nDevice-Attestation: {t}\r\nContent-Length: 100\r\n\r\nfirst ten.");
    s.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&out);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert_eq!(header(&answer, "sekisho-deny-reason"), Some("request_timeout"));
    assert!(started.elapsed() < Duration::from_secs(4), "answered after {:?}", started.elapsed());
}

#[tokio::test]
async fn a_slow_reader_is_cut_and_costs_bounded_memory() {
    let limits =
        "\n[limits]\nmin_send_rate = 1000000\nsend_window_secs = 1\nper_client_rps = 100000\nper_user_rps = 100000\n";
    let (_up, _ws, gw) = setup(limits).await;
    let p = gw.enrol("sloth", Enrol::default()).await;
    let t = p.token("app.localhost");
    let rss_before = rss_kib(gw.pid());
    let mut readers = Vec::new();
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(gw.http).await.unwrap();
        let req = format!("GET /big HTTP/1.1\r\nHost: app.localhost\r\nDevice-Attestation: {t}\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        readers.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut buf = [0u8; 64];
            // Reads 640 bytes a second, far below the minimum rate.
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return started.elapsed(),
                    Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
                if started.elapsed() > Duration::from_secs(30) {
                    return started.elapsed();
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let grown = rss_kib(gw.pid()).saturating_sub(rss_before);
    // Within a few windows the gateway holds none of these connections
    // (what the kernel already queued at the client is the client's).
    let deadline = Instant::now() + Duration::from_secs(8);
    let port = format!("127.0.0.1:{}", gw.http.port());
    loop {
        let ss = std::process::Command::new("ss").args(["-tnH", "state", "established"]).output().unwrap();
        let held = String::from_utf8_lossy(&ss.stdout)
            .lines()
            .filter(|l| l.split_whitespace().nth(2) == Some(port.as_str()))
            .count();
        if held == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the gateway still holds {held} slow readers' connections");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for r in readers {
        r.abort();
    }
    // 20 answers of 32 MiB each: far less than that stays in the gateway.
    assert!(grown < 64 * 1024, "the gateway grew by {grown} KiB for 20 slow readers");
    assert!(gw.admin_metrics().await.contains("sekisho_slow_readers_total 20"));
}

#[tokio::test]
async fn a_silent_tls_client_is_cut_at_the_handshake_deadline() {
    let (_up, _ws, gw) = setup("\n[limits]\nheader_timeout_secs = 1\n").await;
    let mut s = tokio::net::TcpStream::connect(gw.https).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "closed without a byte");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(3), "closed after {waited:?}");
}

#[tokio::test]
async fn http2_requests_with_a_foreign_scheme_are_refused() {
    let (up, _ws, gw) = setup("").await;
    let p = gw.enrol("h2scheme", Enrol::default()).await;
    let t = p.token("app.localhost");
    let (mut client, _conn) = gw.h2(h2::client::Builder::new()).await;
    let uri = format!("ftp://app.localhost:{}/x", gw.https.port());
    let req = http::Request::get(uri).header("device-attestation", t.as_str()).body(()).unwrap();
    let (resp, _) = client.send_request(req, true).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["sekisho-deny-reason"], "bad_request");
    assert!(up.seen().is_empty());
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}
