//! A small harness that runs the real `sekisho` binary on loopback with
//! real TLS, in front of real upstream servers, and talks to it with real
//! HTTP clients, so the tests read like what an administrator and a staff
//! member would do.

#![allow(dead_code, reason = "each test file uses a different part of the harness")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failed step is a failed test")]

pub mod postgres;
pub mod raw;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{Timelike, Utc};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use sekisho_policy::attestation::{mint, Claims, SigningKey};
use sekisho_policy::device::Os;
use sekisho_policy::state::SecuritySoftware;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub mod console;

pub const ROOT_TOKEN: &str = "root-token-0123456789abcdef";
pub const AUDITOR_TOKEN: &str = "auditor-token-0123456789abcdef";
pub const GENERAL_TOKEN: &str = "general-token-0123456789abcdef";
pub const APPLICANT_TOKEN: &str = "applicant-token-0123456789abcdef";
/// The head of 総務課 (a `supervisor` token with its department).
pub const SUPERVISOR_TOKEN: &str = "supervisor-token-0123456789abcdef";

/// A loopback port nothing listens on, taken below the kernel's ephemeral
/// range: a port from `bind(0)` can be handed to some client's outgoing
/// connection before the gateway binds it ("address already in use" in CI).
/// One counter per test process keeps parallel tests apart.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (first, span) = (10_000, low.saturating_sub(10_000).max(1000));
    let start = std::process::id() * 131;
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = u16::try_from(first + (start + n) % span).unwrap();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// One request an upstream received, as it saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    /// The body arrived whole (framing ended cleanly).
    pub complete: bool,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A plain HTTP/1.1 upstream that records every request.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let record = record.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| answer(req, addr, record.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream { addr, seen }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the upstream received nothing")
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// A body that sends one line every 100 ms for a minute.
fn trickle() -> Body {
    let lines = futures_util::stream::unfold(0u32, |n| async move {
        if n > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (n < 600).then(|| (Ok(hyper::body::Frame::data(Bytes::from(format!("line {n}\n")))), n + 1))
    });
    BodyExt::boxed(http_body_util::StreamBody::new(lines))
}

async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    me: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<hyper::Response<Body>, std::convert::Infallible> {
    let (parts, mut body) = req.into_parts();
    let mut body_len = 0u64;
    let mut complete = true;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => body_len += f.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => {
                complete = false;
                break;
            }
        }
    }
    let headers = parts.headers.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned())).collect();
    seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        headers,
        body_len,
        complete,
    });
    if parts.uri.path().ends_with("/stall") {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    if parts.uri.path() == "/trickle" {
        return Ok(hyper::Response::new(trickle()));
    }
    if parts.uri.path() == "/big" {
        // 32 MiB, far more than socket buffers hold.
        let big = Bytes::from(vec![b'x'; 32 << 20]);
        return Ok(hyper::Response::new(BodyExt::boxed(Full::new(big))));
    }
    let mut resp = hyper::Response::new(BodyExt::boxed(Full::new(Bytes::from(format!("ok {body_len}")))));
    if parts.uri.path() == "/redirect" {
        *resp.status_mut() = hyper::StatusCode::FOUND;
        let h = resp.headers_mut();
        h.insert("location", format!("http://{me}/next?x=1").parse().unwrap());
        h.append("set-cookie", "sid=abc; Domain=127.0.0.1; Path=/; HttpOnly".parse().unwrap());
        h.append("set-cookie", "theme=dark; Path=/".parse().unwrap());
    }
    Ok(resp)
}

/// An upstream that reads requests as raw bytes and answers 200 to any of
/// them, as a lenient server (Python's `http.server`) does: it records each
/// request line exactly as it arrived, so a test sees what was forwarded.
pub struct RawUpstream {
    pub addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl RawUpstream {
    pub async fn start() -> RawUpstream {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let record = lines.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let record = record.clone();
                tokio::spawn(async move {
                    let mut stream = tokio::io::BufReader::new(stream);
                    let mut first = String::new();
                    if stream.read_line(&mut first).await.unwrap_or(0) == 0 {
                        return;
                    }
                    record.lock().unwrap().push(first.trim_end().to_owned());
                    let mut line = String::new();
                    while stream.read_line(&mut line).await.unwrap_or(0) > 2 {
                        line.clear();
                    }
                    let answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
                    let _ = stream.get_mut().write_all(answer.as_bytes()).await;
                });
            }
        });
        RawUpstream { addr, lines }
    }

    /// Request lines received, in order (`GET /x HTTP/1.1`).
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

/// An HTTPS upstream whose certificate (for `name`) is signed by a private
/// CA; `ca_pem` is that CA.
pub struct TlsUpstream {
    pub addr: SocketAddr,
    pub ca_pem: String,
}

impl TlsUpstream {
    pub async fn start(name: &str) -> TlsUpstream {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert =
            rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap().signed_by(&key, &ca_cert, &ca_key).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else { return };
                    let svc = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                        let host = req.headers().get("host").and_then(|h| h.to_str().ok()).unwrap_or("-").to_owned();
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(format!(
                            "tls upstream saw host {host}"
                        )))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        TlsUpstream { addr, ca_pem: ca_cert.pem() }
    }
}

/// An upstream for the browser test: `/` is a page whose script calls
/// `/api/hello` with fetch() and echoes a message over a WebSocket at
/// `/ws`, all on its own origin, then writes the outcome into `#status`.
pub struct AppUpstream {
    pub addr: SocketAddr,
}

const APP_PAGE: &str = r#"<!doctype html><html><head><meta charset="utf-8"><title>kintone (test)</title></head>
<body><h1>業務アプリ</h1><p id="status" data-done="0">loading</p><script>
(async () => {
  const el = document.getElementById('status');
  let api = 'fetch failed', ws = 'ws failed';
  try { api = 'fetch: ' + (await (await fetch('/api/hello')).text()); } catch (e) {}
  try {
    ws = await new Promise((ok, no) => {
      const s = new WebSocket('wss://' + location.host + '/ws');
      s.onopen = () => s.send('ping');
      s.onmessage = (m) => { ok('ws: ' + m.data); s.close(); };
      s.onerror = () => no('ws error');
      setTimeout(() => no('ws timeout'), 5000);
    });
  } catch (e) { ws = String(e); }
  el.textContent = api + ' / ' + ws;
  el.dataset.done = '1';
})();
</script></body></html>"#;

impl AppUpstream {
    pub async fn start() -> AppUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(app_answer);
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .with_upgrades();
                    let _ = conn.await;
                });
            }
        });
        AppUpstream { addr }
    }
}

async fn app_answer(
    mut req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    match req.uri().path() {
        "/api/hello" => Ok(hyper::Response::new(Full::new(Bytes::from("ok")))),
        "/ws" => {
            let key = req.headers().get("sec-websocket-key").map(|k| k.as_bytes().to_vec()).unwrap_or_default();
            let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(io) = upgrade.await else { return };
                let io = hyper_util::rt::TokioIo::new(io);
                let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    io,
                    tokio_tungstenite::tungstenite::protocol::Role::Server,
                    None,
                )
                .await;
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
            let mut resp = hyper::Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
            let h = resp.headers_mut();
            h.insert("upgrade", "websocket".parse().unwrap());
            h.insert("connection", "Upgrade".parse().unwrap());
            h.insert("sec-websocket-accept", accept.parse().unwrap());
            Ok(resp)
        }
        _ => {
            let mut resp = hyper::Response::new(Full::new(Bytes::from(APP_PAGE)));
            resp.headers_mut().insert("content-type", "text/html; charset=utf-8".parse().unwrap());
            Ok(resp)
        }
    }
}

/// A WebSocket echo upstream.
pub struct WsUpstream {
    pub addr: SocketAddr,
}

impl WsUpstream {
    pub async fn start() -> WsUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
                    while let Some(Ok(msg)) = ws.next().await {
                        if msg.is_text() && ws.send(msg).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        WsUpstream { addr }
    }
}

/// A person with a registered device: what it takes to mint attestations.
pub struct Person {
    pub user: String,
    pub device: String,
    pub key: SigningKey,
    pub os: Os,
    pub os_version: &'static str,
    pub security_software: Option<SecuritySoftware>,
}

impl Person {
    /// A fresh attestation for the profile serving `host`.
    pub fn token(&self, host: &str) -> String {
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: self.user.clone(),
            aud: host.to_owned(),
            iat: now,
            exp: now + 300,
            jti: format!("{now}"),
            os: self.os,
            os_version: self.os_version.parse().unwrap(),
            security_software: self.security_software.clone(),
        };
        mint(&self.key, &self.device, &claims)
    }
}

/// How to enrol a person.
pub struct Enrol {
    pub role: &'static str,
    pub kind: &'static str,
    pub ownership: &'static str,
    pub approve: bool,
}

impl Default for Enrol {
    fn default() -> Self {
        Enrol { role: "staff", kind: "pc", ownership: "issued", approve: true }
    }
}

/// The real gateway binary, running on loopback ports in a temp directory.
pub struct Gateway {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub https: SocketAddr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    upstream: SocketAddr,
    ws: SocketAddr,
    /// Extra environment for the gateway process (`NOTIFY_SOCKET`, …).
    env: Vec<(String, String)>,
    /// The gateway's own PostgreSQL cluster when the whole suite runs on
    /// PostgreSQL (`SEKISHO_TEST_STORE=postgres`).
    own_cluster: Option<postgres::Cluster>,
    /// The client listeners bind `[::]` (see [`Gateway::start_dual_stack`]).
    dual_stack: bool,
}

pub const PROFILES: [&str; 7] = ["app", "ws", "office", "hours", "expired", "features", "kintone"];

/// The API token the `kintone` test profile approved.
pub const REVIEWED_TOKEN: &str = "reviewed-integration-token";

impl Gateway {
    pub async fn start(upstream: &Upstream, ws: &WsUpstream) -> Gateway {
        Gateway::start_with(upstream, ws, "").await
    }

    /// Starts with extra sections appended to the gateway configuration.
    pub async fn start_with(upstream: &Upstream, ws: &WsUpstream, extra_config: &str) -> Gateway {
        Gateway::start_full(upstream, ws, "", extra_config, &[], false).await
    }

    /// Starts with its HTTPS and HTTP listeners on every address of both
    /// families (`[::]:port`, dual-stack): IPv4 clients arrive as
    /// `::ffff:a.b.c.d`. Tests still connect to `127.0.0.1`.
    pub async fn start_dual_stack(upstream: &Upstream, ws: &WsUpstream) -> Gateway {
        Gateway::start_full(upstream, ws, "", "", &[], true).await
    }

    /// Starts with extra configuration and extra environment variables.
    pub async fn start_with_env(
        upstream: &Upstream,
        ws: &WsUpstream,
        extra_config: &str,
        env: &[(&str, &str)],
    ) -> Gateway {
        Gateway::start_full(upstream, ws, "", extra_config, env, false).await
    }

    /// Starts with `gateway_lines` added to `[gateway]` (`state_max_age_secs = 2`)
    /// and extra sections appended to the configuration.
    pub async fn start_tuned(upstream: &Upstream, ws: &WsUpstream, gateway_lines: &str, extra_config: &str) -> Gateway {
        Gateway::start_full(upstream, ws, gateway_lines, extra_config, &[], false).await
    }

    async fn start_full(
        upstream: &Upstream,
        ws: &WsUpstream,
        gateway_lines: &str,
        extra_config: &str,
        env: &[(&str, &str)],
        dual_stack: bool,
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let port = |_| SocketAddr::from(([127, 0, 0, 1], free_port()));
        let (https, http, admin) = (port(0), port(1), port(2));
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let mut gw = Gateway {
            child: None,
            dir,
            https,
            http,
            admin,
            upstream: upstream.addr,
            ws: ws.addr,
            env,
            own_cluster: None,
            dual_stack,
        };
        let mut extra_config = extra_config.to_owned();
        if std::env::var("SEKISHO_TEST_STORE").is_ok_and(|v| v == "postgres") && !extra_config.contains("[store]") {
            let cluster = postgres::Cluster::start();
            extra_config.push_str(&cluster.store_section("postgres"));
            gw.own_cluster = Some(cluster);
        }
        gw.write_files(gateway_lines, &extra_config);
        // Another process on the machine may still take a port first; pick
        // fresh ones and try again rather than fail the test.
        for _ in 0..3 {
            match gw.try_spawn().await {
                Ok(()) => return gw,
                Err(log) if log.contains("Address already in use") => {
                    (gw.https, gw.http, gw.admin) = (port(0), port(1), port(2));
                    gw.write_config(gateway_lines, &extra_config);
                }
                Err(log) => panic!("gateway did not start: {log}"),
            }
        }
        gw.spawn().await;
        gw
    }

    /// Where a client listener binds: `addr`, or its port on every address.
    fn listen(&self, addr: SocketAddr) -> String {
        match self.dual_stack {
            true => format!("[::]:{}", addr.port()),
            false => addr.to_string(),
        }
    }

    fn write_files(&self, gateway_lines: &str, extra_config: &str) {
        self.write_config(gateway_lines, extra_config);
        self.write_rest();
    }

    fn write_config(&self, gateway_lines: &str, extra_config: &str) {
        let d = self.dir.path();
        let hash = |t: &str| Sha256::digest(t.as_bytes()).iter().map(|b| format!("{b:02x}")).collect::<String>();
        // Tests of idle connections want a short limit; a test may set its own.
        let keepalive = match gateway_lines.contains("keepalive_secs") {
            true => "",
            false => "keepalive_secs = 5",
        };
        let config = format!(
            r#"
[gateway]
https = "{https}"
http = "{http}"
threads = 2
data_dir = "data"
rules_dir = "rules"
audit_log = "data/audit.jsonl"
{keepalive}
{gateway_lines}

[tls]
cert = "certs/server.pem"
key = "certs/server.key"
generate_dev_certs = false
device_ca_cert = "certs/device-ca.pem"
device_ca_key = "certs/device-ca.key"

[admin]
listen = "{admin}"
tokens = [
  {{ name = "root", roles = ["system_manager", "general_admin", "auditor"], sha256 = "{root}" }},
  {{ name = "kansa", roles = ["auditor"], sha256 = "{auditor}" }},
  {{ name = "soumu", roles = ["general_admin"], sha256 = "{general}" }},
  {{ name = "agent", roles = ["applicant"], sha256 = "{applicant}" }},
  {{ name = "soumu-kacho", roles = ["supervisor"], department = "総務課", sha256 = "{supervisor}" }},
]
"#,
            https = self.listen(self.https),
            http = self.listen(self.http),
            admin = self.admin,
            root = hash(ROOT_TOKEN),
            auditor = hash(AUDITOR_TOKEN),
            general = hash(GENERAL_TOKEN),
            applicant = hash(APPLICANT_TOKEN),
            supervisor = hash(SUPERVISOR_TOKEN),
        );
        std::fs::write(d.join("sekisho.toml"), config + extra_config).unwrap();
    }

    fn write_rest(&self) {
        let d = self.dir.path();
        std::fs::create_dir_all(d.join("rules")).unwrap();
        write_certs(&d.join("certs"));
        let ca = Command::new(env!("CARGO_BIN_EXE_sekisho")).current_dir(d).args(["ca", "init"]).output().unwrap();
        assert!(ca.status.success(), "{}", String::from_utf8_lossy(&ca.stderr));
        let jst_hour = (Utc::now() + chrono::Duration::hours(9)).hour();
        let closed_window = format!("daily {:02}:00-{:02}:00", (jst_hour + 2) % 24, (jst_hour + 3) % 24);
        let profiles = [
            (
                "app",
                format!("http://{}", self.upstream),
                "always = true".to_owned(),
                r#"trusted = ["127.0.0.0/8"]"#,
                "",
                "[profile]",
            ),
            (
                "ws",
                format!("http://{}", self.ws),
                "always = true".to_owned(),
                r#"trusted = ["127.0.0.0/8"]"#,
                "",
                "[profile]",
            ),
            (
                "office",
                format!("http://{}", self.upstream),
                "always = true".to_owned(),
                r#"trusted = ["10.0.0.0/8"]
trusted_proxies = ["127.0.0.1"]"#,
                "",
                "[profile]",
            ),
            (
                "hours",
                format!("http://{}", self.upstream),
                format!("weekly = [\"{closed_window}\"]"),
                r#"trusted = ["any"]"#,
                "",
                "[profile]",
            ),
            (
                "expired",
                format!("http://{}", self.upstream),
                "always = true".to_owned(),
                r#"trusted = ["any"]"#,
                "",
                "[profile]\nvalid_until = 2023-05-31",
            ),
            (
                "features",
                format!("http://{}", self.upstream),
                "always = true".to_owned(),
                r#"trusted = ["any"]"#,
                "allow_paths = [\"/drive/**\"]\ntimeout_secs = 1",
                "[profile]",
            ),
            (
                "kintone",
                format!("http://{}", self.upstream),
                "always = true".to_owned(),
                r#"trusted = ["any"]"#,
                "",
                "[profile]",
            ),
        ];
        for (name, upstream, hours, network, route_extra, profile_head) in profiles {
            let text = format!(
                r#"{profile_head}
name = "{name}"
title = "{name} service"
contact = "IT desk 1234"
timezone = "Asia/Tokyo"
audience = "{name}.localhost"

[[routes]]
host = "{name}.localhost"
upstream = "{upstream}"
{route_extra}

[hours]
{hours}

[network]
{network}

[devices]
min_os = {{ windows = "10.0.19045", ios = "17.0" }}
security_software = {{ required = true, max_age_days = 30 }}
accept_certificates = true

[roles.staff]
kinds = ["pc"]
ownership = ["issued"]

[roles.councillor]
kinds = ["smartphone", "tablet", "pc"]
ownership = ["personal"]
"#
            );
            let extra = if name == "kintone" { kintone_sections() } else { String::new() };
            std::fs::write(d.join("rules").join(format!("{name}.toml")), text + &extra).unwrap();
        }
    }

    /// Starts the binary and waits until the admin API and listeners answer.
    pub async fn spawn(&mut self) {
        if let Err(log) = self.try_spawn().await {
            panic!("gateway did not start: {log}");
        }
    }

    /// [`Gateway::spawn`], with the log as the error when the gateway exits.
    async fn try_spawn(&mut self) -> Result<(), String> {
        let log = std::fs::File::create(self.dir.path().join("gateway.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sekisho"))
            .current_dir(self.dir.path())
            .env("RUST_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let up = tokio::net::TcpStream::connect(self.https).await.is_ok()
                && (self.admin_call("GET", "/v1/status", ROOT_TOKEN, None).await.0 == 200
                    || self.admin_tls() && tokio::net::TcpStream::connect(self.admin).await.is_ok());
            if up {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!("gateway exited with {status}: {}", self.log()));
            }
            assert!(Instant::now() < deadline, "gateway did not start: {}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn admin_tls(&self) -> bool {
        std::fs::read_to_string(self.path("sekisho.toml")).is_ok_and(|c| c.contains("[admin.tls]"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// Graceful upgrade: a second gateway starts with `--upgrade`, and once it
    /// waits for the sockets the running one gets SIGQUIT. Returns the old
    /// process, which drains and exits; `self` is the new one from then on.
    pub async fn upgrade(&mut self) -> Child {
        let log = std::fs::File::create(self.dir.path().join("gateway-upgraded.log")).unwrap();
        let sock = self.path("data/upgrade.sock");
        let _ = std::fs::remove_file(&sock);
        let new = Command::new(env!("CARGO_BIN_EXE_sekisho"))
            .current_dir(self.dir.path())
            .args(["serve", "--upgrade"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !sock.exists() {
            assert!(Instant::now() < deadline, "the new gateway never listened on {}", sock.display());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let old = self.child.replace(new).unwrap();
        let quit = Command::new("kill").args(["-QUIT", &old.id().to_string()]).status().unwrap();
        assert!(quit.success());
        old
    }

    /// Sends `signal` (`TERM`, `HUP`, `USR1`, …) to the gateway.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill").args([&format!("-{signal}"), &self.pid().to_string()]).status().unwrap();
        assert!(sent.success(), "kill -{signal} failed");
    }

    /// SIGTERM, then waits (up to 15 s) for a clean exit.
    pub async fn stop(&mut self) {
        self.signal("TERM");
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "gateway exited with {status}: {}", self.log());
                return;
            }
            assert!(Instant::now() < deadline, "gateway did not stop on SIGTERM: {}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9`: no shutdown of any kind.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A client that presents a client certificate (PEM key + certificate).
    pub fn client_with_identity(&self, pem: &str) -> reqwest::Client {
        self.client_builder().identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap()).build().unwrap()
    }

    /// A WebSocket to `ws.localhost/chat` as `who`, its echo checked once.
    pub async fn websocket(&self, who: &Person) -> WebSocket {
        let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://ws.localhost:{}/chat",
            self.http.port()
        ))
        .unwrap();
        request.headers_mut().insert("device-attestation", who.token("ws.localhost").parse().unwrap());
        let stream = tokio::net::TcpStream::connect(self.http).await.unwrap();
        let (mut ws, _) = tokio_tungstenite::client_async(request, stream).await.unwrap();
        ws.send("hello".into()).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap().to_text().unwrap(), "hello");
        ws
    }

    /// A raw HTTP/2 connection to the HTTPS listener (ALPN `h2`, the
    /// development CA trusted), with the client settings of `builder`, and
    /// the task that drives it (it ends when the connection does).
    pub async fn h2(
        &self,
        builder: h2::client::Builder,
    ) -> (h2::client::SendRequest<Bytes>, tokio::task::JoinHandle<Result<(), h2::Error>>) {
        let tcp = tokio::net::TcpStream::connect(self.https).await.unwrap();
        self.h2_over(builder, tcp).await
    }

    /// [`Gateway::h2`] over a connection the test made (a throttled one, say).
    pub async fn h2_over<S>(
        &self,
        builder: h2::client::Builder,
        tcp: S,
    ) -> (h2::client::SendRequest<Bytes>, tokio::task::JoinHandle<Result<(), h2::Error>>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let tls = self.tls_over(tcp, b"h2").await;
        let (client, conn) = builder.handshake(tls).await.unwrap();
        (client.ready().await.unwrap(), tokio::spawn(conn))
    }

    /// A TLS session to the HTTPS listener over `tcp`, as `app.localhost`,
    /// offering the ALPN protocol `alpn` (the development CA trusted).
    pub async fn tls_over<S>(&self, tcp: S, alpn: &[u8]) -> tokio_rustls::client::TlsStream<S>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let ca = std::fs::read(self.path("certs/dev-ca.pem")).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut ca.as_slice()) {
            roots.add(c.unwrap()).unwrap();
        }
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let name = rustls::pki_types::ServerName::try_from("app.localhost").unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap()
    }

    /// A client that trusts the gateway's development CA and resolves every
    /// test host to the gateway's HTTPS listener.
    pub fn client(&self) -> reqwest::Client {
        self.client_builder().build().unwrap()
    }

    /// As [`Gateway::client`], speaking only HTTP/1.1 (over TLS too).
    pub fn http1_client(&self) -> reqwest::Client {
        self.client_builder().http1_only().build().unwrap()
    }

    fn client_builder(&self) -> reqwest::ClientBuilder {
        let ca = std::fs::read(self.path("certs/dev-ca.pem")).unwrap();
        let mut b = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .redirect(reqwest::redirect::Policy::none());
        for p in PROFILES.iter().chain(&["nowhere"]) {
            b = b.resolve(&format!("{p}.localhost"), self.https);
        }
        b
    }

    pub fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.https.port())
    }

    /// A TLS connection to the HTTPS listener (SNI `localhost`), trusting the dev CA.
    pub async fn tls_stream(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(self.path("certs/dev-ca.pem")).unwrap();
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config =
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(self.https).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await.unwrap()
    }

    /// Adds a profile named `name` for `name.localhost`, a copy of the `app`
    /// test profile routed to `upstream` with `route_extra` lines in its route,
    /// reloads the rules, and enrols `users` in it as well.
    pub async fn add_profile(&self, name: &str, upstream: SocketAddr, route_extra: &str, users: &[&Person]) {
        let app = std::fs::read_to_string(self.path("rules/app.toml")).unwrap();
        let text = app
            .replace("name = \"app\"", &format!("name = \"{name}\""))
            .replace("app.localhost", &format!("{name}.localhost"))
            .replace(
                &format!("upstream = \"http://{}\"", self.upstream),
                &format!("upstream = \"http://{upstream}\"\n{route_extra}"),
            );
        self.write_rules(&format!("{name}.toml"), &text);
        self.reload().await;
        for who in users {
            let mut profiles: Vec<&str> = PROFILES.to_vec();
            profiles.push(name);
            self.admin(
                "PUT",
                &format!("/v1/users/{}", who.user),
                json!({"display_name": who.user, "role": "staff", "profiles": profiles}),
            )
            .await;
        }
    }

    /// Reloads the rules as an approved revision (Abiko 13.); must succeed.
    pub async fn reload(&self) -> Value {
        self.admin("POST", "/v1/rules/reload", json!({"approver": "統括情報責任者", "reason": "test revision"})).await
    }

    /// GET with an attestation from `who` for the profile serving `host`.
    pub async fn get_as(&self, who: &Person, host: &str, path: &str) -> reqwest::Response {
        self.client().get(self.url(host, path)).header("device-attestation", who.token(host)).send().await.unwrap()
    }

    pub async fn admin_call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let Ok(stream) = tokio::net::TcpStream::connect(self.admin).await else { return (0, Value::Null) };
        let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await
        else {
            return (0, Value::Null);
        };
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "admin")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::from(body.map(|b| b.to_string()).unwrap_or_default())))
            .unwrap();
        let Ok(resp) = sender.send_request(req).await else { return (0, Value::Null) };
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned())))
    }

    /// An admin call with the all-roles token that must succeed.
    pub async fn admin(&self, method: &str, path: &str, body: Value) -> Value {
        let (status, v) = self.admin_call(method, path, ROOT_TOKEN, Some(body)).await;
        assert!((200..300).contains(&status), "{method} {path} answered {status}: {v}");
        v
    }

    /// Creates a user enrolled in every test profile, registers a device for
    /// them, and approves it unless told not to.
    pub async fn enrol(&self, user: &str, how: Enrol) -> Person {
        self.admin(
            "PUT",
            &format!("/v1/users/{user}"),
            json!({"display_name": user, "role": how.role, "profiles": PROFILES}),
        )
        .await;
        let device = format!("{user}-{}", how.kind);
        let seed: [u8; 32] = Sha256::digest(device.as_bytes()).into();
        let key = SigningKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&seed));
        let (os, os_version) = if how.kind == "pc" { (Os::Windows, "10.0.22631") } else { (Os::Ios, "17.4") };
        let updated = Utc::now().date_naive();
        let public = key.public();
        self.admin(
            "POST",
            "/v1/devices",
            json!({
                "id": device, "owner": user, "kind": how.kind, "ownership": how.ownership,
                "os": os, "os_version": os_version, "key_alg": public.alg(), "public_key": public.to_b64(),
                "security_software": {"name": "Defender", "updated": updated},
            }),
        )
        .await;
        if how.approve {
            self.admin("POST", &format!("/v1/devices/{device}/approve"), json!({"reason": "様式第1号 確認"})).await;
        }
        let security_software = Some(SecuritySoftware { name: "Defender".into(), updated });
        Person { user: user.into(), device, key, os, os_version, security_software }
    }

    /// The Prometheus text of `GET /metrics`.
    pub async fn admin_metrics(&self) -> String {
        let resp = reqwest::Client::new()
            .get(format!("http://{}/metrics", self.admin))
            .bearer_auth(ROOT_TOKEN)
            .send()
            .await
            .unwrap();
        resp.text().await.unwrap()
    }

    /// Audit lines for `user`, oldest first, waiting briefly for the writer thread.
    pub async fn audit_lines(&self, user: &str) -> Vec<Value> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let text = std::fs::read_to_string(self.path("data/audit.jsonl")).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|v| v["user"] == user).collect()
    }

    pub fn write_rules(&self, name: &str, text: &str) {
        std::fs::write(self.path(&format!("rules/{name}")), text).unwrap();
    }

    pub fn rules_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn kintone_sections() -> String {
    let hash: String = Sha256::digest(REVIEWED_TOKEN.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    format!(
        r#"
[integrations]
header = "X-Cybozu-API-Token"
approved = [{{ app = 1, sha256 = "{hash}" }}]

[account]
header = "X-Cybozu-Authorization"
shared = {{ "kyoyu" = ["sato"] }}
forms = [{{ path = "/api/auth/login.json", field = "username" }}]

[apps]
field = "app"
customize_paths = ["/k/v1/preview/app/customize.json"]

[content]
forbid_my_number = true
my_number_fields = ["kojin"]
"#
    )
}

/// A test CA and a server certificate for every test host name.
fn write_certs(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let mut names: Vec<String> = PROFILES.iter().chain(&["nowhere"]).map(|p| format!("{p}.localhost")).collect();
    names.push("127.0.0.1".into());
    names.push("localhost".into());
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(names).unwrap().signed_by(&key, &ca_cert, &ca_key).unwrap();
    std::fs::write(dir.join("dev-ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}

/// The reason header of a response.
pub fn reason(resp: &reqwest::Response) -> Option<String> {
    resp.headers().get("sekisho-deny-reason").map(|v| v.to_str().unwrap().to_owned())
}

/// A client WebSocket over plain TCP.
pub type WebSocket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Whether the gateway closed `ws` within `limit` (messages before the close are read past).
pub async fn closed_within(ws: &mut WebSocket, limit: Duration) -> bool {
    tokio::time::timeout(limit, async {
        loop {
            match ws.next().await {
                Some(Ok(m)) if !m.is_close() => continue,
                _ => return,
            }
        }
    })
    .await
    .is_ok()
}
