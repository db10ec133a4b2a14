//! The wire rules the request path keeps (issue 10, "sekisho owns the
//! wire"), each sent as raw bytes to the real gateway: refusals are the
//! gateway's own answers with a request id and an audit line, pipelined
//! requests are answered in order, a half-closed client still gets its
//! answer, slow readers and slow bodies are cut by their own deadlines.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failed step is a failed test")]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::raw::{header, read_answer};
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
        assert!(answer.matches("HTTP/1.1 ").count() <= 1, "{name}: two answers to one request: {answer}");
    }
    // Whatever reached the upstream before the refusal never completed.
    assert!(up.seen().iter().all(|s| !s.complete), "{:?}", up.seen());
    // A request the rules refuse by its head keeps that one answer when its
    // body then breaks a wire rule: no second answer, no second audit line.
    let denied =
        "POST /upload HTTP/1.1\r\nHost: app.localhost\r\nTransfer-Encoding: chunked\r\n\r\n1;a\x01b\r\nx\r\n0\r\n\r\n";
    let answer = exchange(&gw, denied.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 403 "), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "two answers to one request: {answer}");
}

/// The guard and hyper count header fields alike: 100 fields are served,
/// the 101st gets the gateway's own 400 (not hyper's error, and never a
/// request hyper parsed past its limit).
#[tokio::test]
async fn a_head_of_100_header_fields_is_served_and_one_of_101_is_refused() {
    let (up, _ws, gw) = setup("").await;
    let p = gw.enrol("many", Enrol::default()).await;
    let t = p.token("app.localhost");
    // Six fields the gateway drops or replaces, so the upstream (hyper,
    // also at 100) is sent fewer than 100 and serves the first request.
    let head = |fields: usize| {
        let filler: String = (0..fields - 6).map(|i| format!("X-F{i}: {i}\r\n")).collect();
        format!(
            "GET /many HTTP/1.1\r\nHost: app.localhost\r\nDevice-Attestation: {t}\r\nX-Forwarded-For: 10.0.0.1\r\n\
             X-Forwarded-Proto: http\r\nX-Forwarded-Host: app.localhost\r\n{filler}Connection: close\r\n\r\n"
        )
    };
    let served = exchange(&gw, head(100).as_bytes()).await;
    assert!(served.starts_with("HTTP/1.1 200 "), "{served}");
    assert_eq!(up.seen().len(), 1, "{:?}", up.seen());
    let refused = exchange(&gw, head(101).as_bytes()).await;
    assert!(refused.starts_with("HTTP/1.1 400 "), "{refused}");
    assert!(refused.contains("more header fields than the gateway accepts"), "{refused}");
    assert!(header(&refused, "sekisho-request-id").is_some(), "{refused}");
    assert_eq!(up.seen().len(), 1, "the refused request reached the upstream: {:?}", up.seen());
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

/// A body trickled just inside the pause limit (R.U.D.Y.: a few bytes
/// every half second against a 1 s `body_idle_secs`) never pauses long
/// enough to be cut as idle, but each second spent waiting on it must
/// bring `min_body_rate` bytes: it is answered 408 within a few windows,
/// audited, and its upstream request abandoned. A body sent above the floor
/// in the same rhythm goes through.
#[tokio::test]
async fn a_body_trickled_below_the_minimum_rate_is_answered_408() {
    let (up, _ws, gw) = setup("\n[limits]\nbody_idle_secs = 1\nmin_body_rate = 1000\n").await;
    let p = gw.enrol("rudy", Enrol::default()).await;
    let t = p.token("features.localhost");
    let send = |chunk: usize, chunks: usize| {
        let (gw, t) = (&gw, &t);
        async move {
            let mut s = tokio::net::TcpStream::connect(gw.http).await.unwrap();
            let len = chunk * chunks;
            let head = format!("POST /drive/up HTTP/1.1\r\nHost: features.localhost\r\nDevice-Attestation: {t}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n");
            s.write_all(head.as_bytes()).await.unwrap();
            let started = Instant::now();
            for _ in 0..chunks {
                if s.write_all(&vec![b'r'; chunk]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let mut out = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await.unwrap().unwrap();
            (String::from_utf8_lossy(&out).into_owned(), started.elapsed())
        }
    };
    // 10 bytes every 0.5 s for 10 s: 20 B/s against a 1,000 B/s floor.
    let (answer, took) = send(10, 20).await;
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert_eq!(header(&answer, "sekisho-deny-reason"), Some("request_timeout"));
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    let id = header(&answer, "sekisho-request-id").unwrap().to_owned();
    let line = audit_line(&gw, &id).await;
    assert_eq!(line["reason"], "request_timeout", "{line}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(up.seen().iter().all(|r| !r.complete && r.body_len < 200), "{:?}", up.seen());
    // 2,000 bytes every 0.5 s: above the floor, the whole body arrives.
    let (answer, _) = send(2000, 6).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    let last = up.last();
    assert!(last.complete && last.body_len == 12_000, "{last:?}");
}

#[tokio::test]
async fn a_slow_reader_is_cut_and_costs_bounded_memory() {
    slow_readers_are_cut(false).await;
}

#[tokio::test]
async fn a_slow_reader_over_tls_is_cut_and_costs_bounded_memory() {
    slow_readers_are_cut(true).await;
}

/// Twenty clients read a 32 MiB answer at 640 bytes a second, far below
/// the minimum rate: each is cut within a few windows, and the gateway
/// holds little of what it could not send.
async fn slow_readers_are_cut(tls: bool) {
    let limits =
        "\n[limits]\nmin_send_rate = 1000000\nsend_window_secs = 1\nper_client_rps = 100000\nper_user_rps = 100000\n";
    let (_up, _ws, gw) = setup(limits).await;
    let p = gw.enrol("sloth", Enrol::default()).await;
    let t = p.token("app.localhost");
    let rss_before = rss_kib(gw.pid());
    let mut readers = Vec::new();
    let listener = if tls { gw.https } else { gw.http };
    for _ in 0..20 {
        let tcp = tokio::net::TcpStream::connect(listener).await.unwrap();
        let mut s: Box<dyn Stream> = if tls { Box::new(gw.tls_over(tcp, b"http/1.1").await) } else { Box::new(tcp) };
        let req = format!("GET /big HTTP/1.1\r\nHost: app.localhost\r\nDevice-Attestation: {t}\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        readers.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut buf = [0u8; 64];
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
    let port = format!("127.0.0.1:{}", listener.port());
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
    // Twenty cuts in a minute, one line: the first, at once.
    let log = gw.log();
    let told = "gateway: cut 1 connection(s) since the last note: reading answers slower than 1000000 bytes/s (`[limits] min_send_rate`), the latest from 127.0.0.1";
    assert_eq!(log.matches("gateway: cut ").count(), 1, "{log}");
    assert!(log.contains(told), "{log}");
}

/// An idle HTTP/1 connection is parked (its server and buffers freed) and
/// serves its next requests on the same socket, plain and over TLS: a
/// head split across the wake, and two pipelined after another park.
#[tokio::test]
async fn an_idle_connection_is_parked_and_serves_its_next_requests_on_the_same_socket() {
    let (up, _ws, gw) = setup("").await;
    let p = gw.enrol("parker", Enrol::default()).await;
    let t = p.token("app.localhost");
    let tcp = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    parks_and_wakes(&gw, tcp, &t, "plain").await;
    let tcp = tokio::net::TcpStream::connect(gw.https).await.unwrap();
    parks_and_wakes(&gw, gw.tls_over(tcp, b"http/1.1").await, &t, "tls").await;
    let paths: Vec<_> = gw.audit_lines("parker").await.iter().map(|l| l["path"].as_str().unwrap().to_owned()).collect();
    let expected: Vec<_> =
        ["plain", "tls"].iter().flat_map(|k| ["one", "two", "three", "four"].map(|n| format!("/{k}/{n}"))).collect();
    assert_eq!(paths, expected);
    assert_eq!(up.seen().len(), 8);
}

async fn parks_and_wakes<S: Stream>(gw: &Gateway, mut s: S, t: &str, kind: &str) {
    let get = |n: &str| format!("GET /{kind}/{n} HTTP/1.1\r\nHost: app.localhost\r\nDevice-Attestation: {t}\r\n\r\n");
    s.write_all(get("one").as_bytes()).await.unwrap();
    assert!(read_answer(&mut s).await.starts_with("HTTP/1.1 200"), "{kind}");
    parked_connections_reach(gw, 1).await;
    // The first bytes wake the connection; the rest of the head follows.
    let two = get("two");
    s.write_all(&two.as_bytes()[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(&two.as_bytes()[10..]).await.unwrap();
    assert!(read_answer(&mut s).await.starts_with("HTTP/1.1 200"), "{kind}: a head split across the wake");
    parked_connections_reach(gw, 1).await;
    s.write_all((get("three") + &get("four")).as_bytes()).await.unwrap();
    for n in ["three", "four"] {
        assert!(read_answer(&mut s).await.starts_with("HTTP/1.1 200"), "{kind}: pipelined {n} after a park");
    }
}

/// A parked connection is still closed at the idle limit (`keepalive_secs`,
/// 5 s in the harness), and a head begun after it woke is held to the
/// header deadline.
#[tokio::test]
async fn a_parked_connection_keeps_the_idle_limit_and_the_header_deadline() {
    let (_up, _ws, gw) = setup("\n[limits]\nheader_timeout_secs = 2\n").await;
    let p = gw.enrol("dozer", Enrol::default()).await;
    let t = p.token("app.localhost");
    let get = format!("GET / HTTP/1.1\r\nHost: app.localhost\r\nDevice-Attestation: {t}\r\n\r\n");
    let mut idle = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    idle.write_all(get.as_bytes()).await.unwrap();
    read_answer(&mut idle).await;
    let answered = Instant::now();
    let mut slow = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    slow.write_all(get.as_bytes()).await.unwrap();
    read_answer(&mut slow).await;
    parked_connections_reach(&gw, 2).await;
    slow.write_all(&get.as_bytes()[..20]).await.unwrap();
    let begun = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(6), slow.read_to_end(&mut rest)).await.unwrap().unwrap_or(0);
    let cut = begun.elapsed();
    assert!(cut >= Duration::from_millis(1900) && cut < Duration::from_secs(4), "head cut after {cut:?}, deadline 2 s");
    assert!(gw.admin_metrics().await.contains("sekisho_header_timeouts_total 1"));
    tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut rest)).await.unwrap().unwrap();
    let closed = answered.elapsed();
    assert!(closed >= Duration::from_millis(4800) && closed < Duration::from_secs(8), "idle closed after {closed:?}");
    parked_connections_reach(&gw, 0).await;
}

/// Waits (up to 3 s) for the gateway's parked connections to number `n`.
async fn parked_connections_reach(gw: &Gateway, n: u32) {
    let want = format!("sekisho_parked_connections {n}\n");
    for _ in 0..30 {
        if gw.admin_metrics().await.contains(&want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("parked connections never reached {n}: {}", gw.admin_metrics().await);
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for S {}

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
    let told = "gateway: cut 1 connection(s) since the last note: no TLS handshake within 1 s (`[limits] header_timeout_secs`), the latest from 127.0.0.1";
    assert!(gw.log().contains(told), "{}", gw.log());
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

#[tokio::test]
async fn an_http2_stream_the_client_stops_reading_is_reset_alone_and_frees_its_upstream() {
    let (up, _ws, gw) = setup("\n[limits]\nsend_window_secs = 1\n").await;
    let p = gw.enrol("stalled", Enrol::default()).await;
    let t = p.token("app.localhost");
    let get = |path: &str| {
        let uri = format!("https://app.localhost:{}{path}", gw.https.port());
        http::Request::get(uri).header("device-attestation", t.as_str()).body(()).unwrap()
    };
    // No window for any stream: nothing of an answer but its head can flow.
    let mut builder = h2::client::Builder::new();
    builder.initial_window_size(0);
    let (mut client, conn) = gw.h2(builder).await;
    let (resp, _) = client.send_request(get("/big"), true).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), resp).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(connections_to(up.addr), 1, "the waiting answer holds its upstream connection");
    let started = Instant::now();
    let mut body = resp.into_body();
    let end =
        tokio::time::timeout(Duration::from_secs(6), body.data()).await.expect("the stalled stream was open 6 s on");
    let reset = end.expect("the stream was reset, not ended").unwrap_err();
    assert_eq!(reset.reason(), Some(h2::Reason::CANCEL));
    assert!(started.elapsed() >= Duration::from_millis(900), "reset after {:?}", started.elapsed());
    let deadline = Instant::now() + Duration::from_secs(3);
    while connections_to(up.addr) > 0 {
        assert!(Instant::now() < deadline, "the reset stream's upstream connection is still open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The stream alone: its connection serves the next request.
    assert!(!conn.is_finished(), "the whole connection was closed");
    let mut client = client.ready().await.unwrap();
    let (next, _) = client.send_request(get("/portal"), true).unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), next).await.unwrap().unwrap();
    assert_eq!(next.status(), 200);
    assert!(gw.admin_metrics().await.contains("sekisho_stalled_streams_total 1"));
    let lines = gw.audit_lines("stalled").await;
    assert!(lines.iter().any(|l| l["path"] == "/big"), "the reset stream is audited: {lines:?}");
    assert!(
        gw.log()
            .contains("gateway: reset 1 HTTP/2 stream(s) since the last note: the client took an answer slower than"),
        "an administrator reads why in the log: {}",
        gw.log()
    );
}

#[tokio::test]
async fn an_http2_stream_waiting_on_a_slow_upstream_is_not_a_slow_reader() {
    let (_up, _ws, gw) = setup("\n[limits]\nsend_window_secs = 1\n").await;
    let p = gw.enrol("patient", Enrol::default()).await;
    let t = p.token("app.localhost");
    let (mut client, _conn) = gw.h2(h2::client::Builder::new()).await;
    let uri = format!("https://app.localhost:{}/trickle", gw.https.port());
    let req = http::Request::get(uri).header("device-attestation", t.as_str()).body(()).unwrap();
    let (resp, _) = client.send_request(req, true).unwrap();
    let mut body = tokio::time::timeout(Duration::from_secs(5), resp).await.unwrap().unwrap().into_body();
    // About 70 bytes a second, far below the minimum rate: the upstream's
    // pace, which the client takes as it comes.
    let started = Instant::now();
    let mut got = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let chunk = body.data().await.expect("the stream ended early").expect("the stream was reset");
        got += chunk.len();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    assert!(got > 100, "only {got} bytes in 3 s");
    assert!(gw.admin_metrics().await.contains("sekisho_stalled_streams_total 0"));
}

#[tokio::test]
async fn an_http2_stream_its_client_reads_slowly_but_above_the_minimum_rate_is_not_cut() {
    // Floor: 1 KiB a second. The client takes 8 KiB a second through a
    // 4 KiB window, while the upstream sends 32 MiB as fast as it can.
    let (_up, _ws, gw) = setup("\n[limits]\nsend_window_secs = 1\n").await;
    let p = gw.enrol("sipper", Enrol::default()).await;
    let t = p.token("app.localhost");
    let mut builder = h2::client::Builder::new();
    builder.initial_window_size(4096);
    let (mut client, _conn) = gw.h2(builder).await;
    let uri = format!("https://app.localhost:{}/big", gw.https.port());
    let req = http::Request::get(uri).header("device-attestation", t.as_str()).body(()).unwrap();
    let (resp, _) = client.send_request(req, true).unwrap();
    let mut body = tokio::time::timeout(Duration::from_secs(5), resp).await.unwrap().unwrap().into_body();
    let started = Instant::now();
    let mut got = 0;
    while started.elapsed() < Duration::from_secs(4) {
        let chunk = body.data().await.expect("the stream ended early").expect("the stream was reset");
        got += chunk.len();
        tokio::time::sleep(Duration::from_millis(chunk.len() as u64 * 1000 / 8192)).await;
        body.flow_control().release_capacity(chunk.len()).unwrap();
    }
    assert!(got >= 16 * 1024, "only {got} bytes in 4 s");
    assert!(gw.admin_metrics().await.contains("sekisho_stalled_streams_total 0"));
}

#[tokio::test]
async fn an_http2_client_that_stops_reading_its_socket_is_cut_as_a_slow_reader() {
    // Over TLS the gateway's writes are accepted into the TLS layer and the
    // stall shows when it flushes: the socket rule must judge that too.
    let (_up, _ws, gw) = setup("\n[limits]\nsend_window_secs = 1\n").await;
    let p = gw.enrol("stopper", Enrol::default()).await;
    let t = p.token("app.localhost");
    let rate = Arc::new(AtomicUsize::new(usize::MAX));
    // A fixed receive buffer: loopback's autotuned one would hold the whole answer.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    let tcp = socket.connect(gw.https).await.unwrap();
    let mut builder = h2::client::Builder::new();
    builder.initial_window_size(16 << 20).initial_connection_window_size(64 << 20);
    let (mut client, conn) = gw.h2_over(builder, Throttled::new(tcp, rate.clone())).await;
    let uri = format!("https://app.localhost:{}/big", gw.https.port());
    let req = http::Request::get(uri).header("device-attestation", t.as_str()).body(()).unwrap();
    let (resp, _) = client.send_request(req, true).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), resp).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    rate.store(0, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.admin_metrics().await.contains("sekisho_slow_readers_total 1") {
        assert!(Instant::now() < deadline, "a client that reads nothing was not cut in 10 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Reading again, the client finds its connection gone.
    rate.store(usize::MAX, Ordering::Relaxed);
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(ended.is_ok(), "the cut connection was still open");
    let metrics = gw.admin_metrics().await;
    // The stream waited behind a full socket: the connection's rule, not the stream's.
    assert!(metrics.contains("sekisho_stalled_streams_total 0"), "{metrics}");
}

/// A client socket whose reads take at most `per_sec` bytes a second (none
/// at 0), as a slow or stalled network would deliver them.
struct Throttled {
    inner: tokio::net::TcpStream,
    per_sec: Arc<AtomicUsize>,
    wait: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl Throttled {
    fn new(inner: tokio::net::TcpStream, per_sec: Arc<AtomicUsize>) -> Throttled {
        Throttled { inner, per_sec, wait: None }
    }
}

impl tokio::io::AsyncRead for Throttled {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::future::Future as _;
        let this = &mut *self;
        loop {
            if let Some(wait) = &mut this.wait {
                std::task::ready!(wait.as_mut().poll(cx));
                this.wait = None;
            }
            if this.per_sec.load(Ordering::Relaxed) > 0 {
                break;
            }
            this.wait = Some(Box::pin(tokio::time::sleep(Duration::from_millis(50))));
        }
        let per_sec = this.per_sec.load(Ordering::Relaxed) as u64;
        let mut small = [0u8; 256];
        let mut part = tokio::io::ReadBuf::new(&mut small[..buf.remaining().min(256)]);
        std::task::ready!(std::pin::Pin::new(&mut this.inner).poll_read(cx, &mut part))?;
        let n = part.filled().len();
        buf.put_slice(part.filled());
        let pause = Duration::from_micros((n as u64).saturating_mul(1_000_000) / per_sec);
        this.wait = Some(Box::pin(tokio::time::sleep(pause)));
        std::task::Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for Throttled {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Established connections whose far end is `addr` (the gateway's side of
/// its upstream connections).
fn connections_to(addr: std::net::SocketAddr) -> usize {
    let ss = std::process::Command::new("ss").args(["-tnH", "state", "established"]).output().unwrap();
    let addr = addr.to_string();
    String::from_utf8_lossy(&ss.stdout).lines().filter(|l| l.split_whitespace().nth(3) == Some(addr.as_str())).count()
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
