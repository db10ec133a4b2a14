//! The device agent end to end: it files its registration with the real
//! admin API, then its loopback forward proxy carries an ordinary client
//! (no header of its own) through the real gateway, attesting each request;
//! the gateway still decides.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failed step is a failed test")]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use support::{reason, Gateway, Upstream, WsUpstream, APPLICANT_TOKEN, PROFILES};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const DEVICE: &str = "kenji-pc";

#[tokio::test]
async fn the_agent_registers_then_attests_every_request_through_its_proxy() {
    let (up, _ws, gw, dir, key) = kenji_with_a_key().await;

    // The application arrives pending; an administrator approves it.
    let mut args: Vec<String> =
        ["agent", "register", "--admin", &format!("http://{}", gw.admin)].map(String::from).to_vec();
    args.extend(identity(&key));
    let filed = sekisho(&args, &[("SEKISHO_ADMIN_TOKEN", APPLICANT_TOKEN)]);
    assert!(filed.contains(DEVICE), "{filed}");
    let devices = gw.admin_call("GET", "/v1/devices", support::ROOT_TOKEN, None).await.1;
    let mine = devices["devices"].as_array().unwrap().iter().find(|d| d["id"] == DEVICE).unwrap().clone();
    assert_eq!((mine["status"].as_str(), mine["os_version"].as_str()), (Some("pending"), Some("10.0.22631")));
    gw.admin("POST", &format!("/v1/devices/{DEVICE}/approve"), json!({"reason": "様式第1号 確認"})).await;

    let agent = Agent::start(&gw, &key, dir.path());
    let browser = agent.client();
    let resp = browser.get(gw.url("app.localhost", "/report?q=1")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    let seen = up.last();
    assert_eq!(seen.path, "/report");
    assert_eq!(seen.header("device-attestation"), None, "the token went past the gateway");
    let audit = gw.audit_lines("kenji").await;
    let last = audit.last().unwrap();
    assert_eq!((last["device"].as_str(), last["decision"].as_str()), (Some(DEVICE), Some("allow")));

    // The same client without the agent has nothing to show.
    let direct = gw.client().get(gw.url("app.localhost", "/")).send().await.unwrap();
    assert_eq!(direct.status(), 403);

    // A WebSocket goes through the tunnel too.
    let mut socket = agent.websocket(&gw, "ws.localhost", "/chat").await;
    socket.send("やあ".into()).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap().to_text().unwrap(), "やあ");

    // The gateway still decides: a suspension shows the block page to the agent's client.
    gw.admin("POST", "/v1/users/kenji/suspend", json!({"reason": "端末紛失"})).await;
    let blocked = browser.get(gw.url("app.localhost", "/")).send().await.unwrap();
    assert_eq!((blocked.status().as_u16(), reason(&blocked).as_deref()), (403, Some("user_suspended")));
}

#[tokio::test]
async fn the_proxy_serves_a_pac_and_relays_only_its_routes() {
    let up = Upstream::start().await;
    let ws = WsUpstream::start().await;
    let gw = Gateway::start(&up, &ws).await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("device.key");
    sekisho(&["agent", "keygen", "--out", key.to_str().unwrap()], &[]);
    let agent = Agent::start(&gw, &key, dir.path());

    let pac = reqwest::get(format!("http://{}/proxy.pac", agent.addr)).await.unwrap();
    assert_eq!(pac.headers()["content-type"], "application/x-ns-proxy-autoconfig");
    let pac = pac.text().await.unwrap();
    assert!(pac.contains("host == \"app.localhost\"") && pac.contains("dnsDomainIs(host, \".ws.localhost\")"), "{pac}");
    assert!(pac.contains(&format!("PROXY {}", agent.addr)) && pac.contains("return \"DIRECT\""), "{pac}");

    // A host without a route gets no tunnel, so no token is ever minted for it.
    assert_eq!(connect(agent.addr, "features.localhost").await, 403);
    assert_eq!(connect(agent.addr, "evil-app.localhost").await, 403);
    assert_eq!(connect(agent.addr, "app.localhost").await, 200);
    // http:// to a SaaS host is sent to https://.
    let mut s = tokio::net::TcpStream::connect(agent.addr).await.unwrap();
    s.write_all(b"GET http://app.localhost/x?y=1 HTTP/1.1\r\nHost: app.localhost\r\n\r\n").await.unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 308") && head.contains("location: https://app.localhost/x?y=1"), "{head}");
    assert!(up.seen().is_empty(), "something reached the upstream: {:?}", up.seen());

    // The local CA may only vouch for the routed names.
    let pem = std::fs::read_to_string(dir.path().join("agent/local-ca.pem")).unwrap();
    let params = rcgen::CertificateParams::from_ca_cert_pem(&pem).unwrap();
    let permitted = params.name_constraints.unwrap().permitted_subtrees;
    assert_eq!(
        permitted,
        vec![
            rcgen::GeneralSubtree::DnsName("app.localhost".into()),
            rcgen::GeneralSubtree::DnsName("ws.localhost".into())
        ]
    );
    // The proxy signs for whoever connects, so it refuses to leave loopback.
    let out = Command::new(env!("CARGO_BIN_EXE_sekisho"))
        .args(["agent", "proxy", "--listen", "0.0.0.0:0", "--gateway", "127.0.0.1:1", "--gateway-ca", "x"])
        .args(["--route", "app.localhost"])
        .args(identity(&key))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback address"));
}

#[tokio::test]
async fn a_certificate_device_is_judged_on_the_posture_its_agent_reports() {
    let (_up, _ws, gw, dir, key) = kenji_with_a_key().await;
    let admin = format!("http://{}", gw.admin);
    let mut register: Vec<String> = ["agent", "register", "--admin", &admin].map(String::from).to_vec();
    register.extend(identity(&key));
    sekisho(&register, &[("SEKISHO_ADMIN_TOKEN", APPLICANT_TOKEN)]);
    gw.admin("POST", &format!("/v1/devices/{DEVICE}/approve"), json!({"reason": "様式第1号 確認"})).await;
    let issued = gw.admin("POST", &format!("/v1/devices/{DEVICE}/certificate"), json!({"days": 30})).await;
    let pem = format!("{}{}", issued["private_key_pem"].as_str().unwrap(), issued["certificate_pem"].as_str().unwrap());
    let browser = gw.client_with_identity(&pem);
    let get = || async { browser.get(gw.url("app.localhost", "/")).send().await.unwrap() };
    assert_eq!(get().await.status(), 200);

    // The agent reports an OS below the profile's minimum: the certificate alone no longer passes.
    let report = |version: &str| {
        let mut args: Vec<String> = ["agent", "posture", "--admin", &admin].map(String::from).to_vec();
        args.extend(identity(&key).into_iter().map(|a| if a == "10.0.22631" { version.to_owned() } else { a }));
        sekisho(&args, &[])
    };
    assert!(report("10.0.10240").contains("device.posture"));
    let old = get().await;
    assert_eq!((old.status().as_u16(), reason(&old).as_deref()), (403, Some("os_outdated")));
    std::thread::sleep(Duration::from_millis(1100));
    report("10.0.26100");
    assert_eq!(get().await.status(), 200);
    let devices = gw.admin_call("GET", "/v1/devices", support::ROOT_TOKEN, None).await.1;
    let mine = devices["devices"].as_array().unwrap().iter().find(|d| d["id"] == DEVICE).unwrap().clone();
    assert_eq!(mine["os_version"], "10.0.26100");

    // A report is signed by the device and only moves forward: a replay, a
    // stranger's key, or an access token is refused and changes nothing.
    std::thread::sleep(Duration::from_millis(1100));
    let mint = |aud: &str, key: &Path| {
        let mut args: Vec<String> = ["agent", "token", "--aud", aud].map(String::from).to_vec();
        args.extend(identity(key).into_iter().filter(|a| a != "--security-software" && a != "Defender"));
        let today = chrono::Utc::now().date_naive().to_string();
        args.retain(|a| a != "--security-updated" && *a != today);
        sekisho(&args, &[]).trim().to_owned()
    };
    let path = format!("/v1/devices/{DEVICE}/posture");
    let token = mint("sekisho:posture", &key);
    let (gw, path) = (&gw, &path);
    let post = |t: String| async move { gw.admin_call("POST", path, "", Some(json!({"attestation": t}))).await.0 };
    assert_eq!(post(token.clone()).await, 200);
    assert_eq!(post(token).await, 409, "a replayed report");
    let stranger = dir.path().join("stranger.key");
    sekisho(&["agent", "keygen", "--out", stranger.to_str().unwrap()], &[]);
    assert_eq!(post(mint("sekisho:posture", &stranger)).await, 401, "signed by another key");
    assert_eq!(post(mint("app.localhost", &key)).await, 400, "an access token is not a report");
    let audit = gw.admin_call("GET", &format!("/v1/audit?target={DEVICE}"), support::ROOT_TOKEN, None).await.1;
    let text = audit.to_string();
    assert!(text.contains("device:kenji-pc") && text.contains("device.posture"), "{text}");
}

/// A gateway, the user kenji in every test profile, and a fresh device key.
async fn kenji_with_a_key() -> (Upstream, WsUpstream, Gateway, tempfile::TempDir, std::path::PathBuf) {
    let up = Upstream::start().await;
    let ws = WsUpstream::start().await;
    let gw = Gateway::start(&up, &ws).await;
    gw.admin("PUT", "/v1/users/kenji", json!({"display_name": "kenji", "role": "staff", "profiles": PROFILES})).await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("device.key");
    sekisho(&["agent", "keygen", "--out", key.to_str().unwrap()], &[]);
    (up, ws, gw, dir, key)
}

/// The device's identity flags; the OS is given so the test does not depend
/// on the machine it runs on.
fn identity(key: &Path) -> Vec<String> {
    let today = chrono::Utc::now().date_naive().to_string();
    [
        "--key",
        key.to_str().unwrap(),
        "--device",
        DEVICE,
        "--user",
        "kenji",
        "--os",
        "windows",
        "--os-version",
        "10.0.22631",
        "--security-software",
        "Defender",
        "--security-updated",
        &today,
    ]
    .map(str::to_owned)
    .to_vec()
}

fn sekisho(args: &[impl AsRef<std::ffi::OsStr>], env: &[(&str, &str)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sekisho")).args(args).envs(env.iter().copied()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `sekisho agent proxy` as a child process.
struct Agent {
    child: Child,
    addr: SocketAddr,
    ca: reqwest::Certificate,
    ca_pem: Vec<u8>,
}

impl Agent {
    fn start(gw: &Gateway, key: &Path, dir: &Path) -> Agent {
        let addr = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
        let child = Command::new(env!("CARGO_BIN_EXE_sekisho"))
            .args(["agent", "proxy", "--listen", &addr.to_string(), "--gateway", &gw.https.to_string()])
            .args(["--gateway-ca", gw.path("certs/dev-ca.pem").to_str().unwrap()])
            .args(["--route", "app.localhost", "--route", "*.ws.localhost=ws.localhost", "--route", "ws.localhost"])
            .args(["--state-dir", dir.join("agent").to_str().unwrap()])
            .args(identity(key))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(std::time::Instant::now() < deadline, "the agent proxy did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let ca_pem = std::fs::read(dir.join("agent/local-ca.pem")).unwrap();
        let ca = reqwest::Certificate::from_pem(&ca_pem).unwrap();
        Agent { child, addr, ca, ca_pem }
    }

    /// A client that knows only the proxy and trusts only the agent's CA.
    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(format!("http://{}", self.addr)).unwrap())
            .tls_built_in_root_certs(false)
            .add_root_certificate(self.ca.clone())
            .http1_only()
            .build()
            .unwrap()
    }

    async fn websocket(
        &self,
        gw: &Gateway,
        host: &str,
        path: &str,
    ) -> tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let mut tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let port = gw.https.port();
        tcp.write_all(format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        assert!(read_head(&mut tcp).await.starts_with("HTTP/1.1 200"));
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut self.ca_pem.as_slice()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config =
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(host.to_owned()).unwrap();
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await.unwrap();
        let url = format!("wss://{host}:{port}{path}");
        tokio_tungstenite::client_async(url, tls).await.unwrap().0
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status a CONNECT gets.
async fn connect(proxy: SocketAddr, host: &str) -> u16 {
    let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
    s.write_all(format!("CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n").as_bytes()).await.unwrap();
    let head = read_head(&mut s).await;
    head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

async fn read_head(s: &mut tokio::net::TcpStream) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
    String::from_utf8_lossy(&buf[..n]).to_lowercase().replace("http/1.1", "HTTP/1.1")
}
