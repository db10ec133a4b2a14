//! The service as systemd runs it: the real gateway started with
//! `NOTIFY_SOCKET` pointing at a real Unix datagram socket and
//! `WATCHDOG_USEC` set, as `Type=notify` with `WatchdogSec=` would. It must
//! say `READY=1` once it serves, ping `WATCHDOG=1`, wrap a SIGHUP rules
//! reload in `RELOADING=1`/`READY=1`, and say `STOPPING=1` on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failed step is a failed test")]

mod support;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use support::{Gateway, Upstream, WsUpstream};

/// Reads datagrams until one starts with `prefix`, or fails after 10 s.
fn expect(socket: &UnixDatagram, prefix: &str, seen: &mut Vec<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push(msg.clone());
            if msg.starts_with(prefix) {
                return msg;
            }
        }
    }
    panic!("no `{prefix}` within 10 s; got {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_speaks_the_notify_protocol() {
    let upstream = Upstream::start().await;
    let ws = WsUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let env = [("NOTIFY_SOCKET", path.to_str().unwrap()), ("WATCHDOG_USEC", "400000")];
    let mut gw = Gateway::start_with_env(&upstream, &ws, "", &env).await;
    let mut seen = Vec::new();
    let ready = expect(&socket, "READY=1", &mut seen);
    assert!(ready.contains(&format!("MAINPID={}", gw.pid())), "{ready}");
    // Ready means serving.
    let resp = gw.client().get(gw.url("app.localhost", "/")).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    expect(&socket, "WATCHDOG=1", &mut seen);
    expect(&socket, "WATCHDOG=1", &mut seen);

    gw.signal("HUP");
    let reloading = expect(&socket, "RELOADING=1", &mut seen);
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    expect(&socket, "READY=1", &mut seen);

    gw.stop().await;
    expect(&socket, "STOPPING=1", &mut seen);
}

#[test]
fn an_abstract_socket_name_is_reached_too() {
    use std::os::linux::net::SocketAddrExt as _;
    let name = format!("sekisho-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sekisho"))
        .args(["--config", "/nonexistent/sekisho.toml", "serve"])
        .env("NOTIFY_SOCKET", format!("@{name}"))
        .output()
        .unwrap();
    // It cannot start without a configuration, and must say nothing ready.
    assert!(!out.status.success());
    let mut buf = [0u8; 64];
    socket.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    assert!(socket.recv(&mut buf).is_err(), "a failed start must not report READY");
    sekisho_notify_to(&name);
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STATUS=probe");
}

/// The library call, with the abstract name in the environment of this process.
fn sekisho_notify_to(name: &str) {
    // Only this test reads NOTIFY_SOCKET in this process (the gateway tests pass it to a child).
    std::env::set_var("NOTIFY_SOCKET", format!("@{name}"));
    assert!(sekisho::notify::notify("STATUS=probe").unwrap());
    std::env::remove_var("NOTIFY_SOCKET");
}
