//! The systemd notify protocol (sd_notify), written out: datagrams such as
//! `READY=1` to the Unix socket named by `NOTIFY_SOCKET` (a path, or an
//! abstract name starting with `@`). `READY=1` once the listeners accept,
//! `WATCHDOG=1` at half `WATCHDOG_USEC` while the state is confirmed and
//! the audit log writable, `RELOADING=1`/`READY=1` around a rules reload,
//! `STOPPING=1` at shutdown. Without `NOTIFY_SOCKET` every call does
//! nothing. It must never block the request path: only start-up, the
//! reload handler and the watchdog task call it.

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends one notification (`"READY=1"`, lines joined by `\n`). Returns
/// whether a socket was there to send to.
pub fn notify(state: &str) -> std::io::Result<bool> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else { return Ok(false) };
    let target = target.to_string_lossy().into_owned();
    let socket = UnixDatagram::unbound()?;
    match target.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt as _;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        }
        None => {
            socket.send_to(state.as_bytes(), &target)?;
        }
    }
    Ok(true)
}

/// Logs instead of failing: a lost notification must not stop the gateway.
pub fn send(state: &str) {
    if let Err(e) = notify(state) {
        log::warn!("sd_notify `{}` failed: {e}", state.lines().next().unwrap_or_default());
    }
}

/// `RELOADING=1` with the monotonic time systemd (253+) asks for.
pub fn reloading() {
    let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u128 * 1_000_000 + t.tv_nsec() as u128 / 1000)
        .unwrap_or_default();
    send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
}

/// How often to ping the watchdog: half `WATCHDOG_USEC`, when it is set
/// for this process (`WATCHDOG_PID` absent or ours).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    let ours = std::env::var("WATCHDOG_PID").map_or(true, |p| p.parse() == Ok(std::process::id()));
    (ours && usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Sends `READY=1` once every address accepts a TCP connection (pingora
/// binds its listeners on its own threads), or after `limit`.
pub async fn ready_when_listening(addrs: Vec<SocketAddr>, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    for addr in addrs {
        let probe = match addr.ip().is_unspecified() {
            true if addr.is_ipv4() => SocketAddr::from(([127, 0, 0, 1], addr.port())),
            true => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port())),
            false => addr,
        };
        while tokio::net::TcpStream::connect(probe).await.is_err() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    send(&format!("READY=1\nSTATUS=serving\nMAINPID={}", std::process::id()));
}

/// Pings the watchdog at `every` while `healthy()` holds; stops pinging
/// (so systemd restarts the service) while it does not.
pub async fn watchdog(every: Duration, healthy: impl Fn() -> bool) {
    loop {
        tokio::time::sleep(every).await;
        if healthy() {
            send("WATCHDOG=1");
        } else {
            log::error!("watchdog not pinged: the state is not confirmed or the audit log is not writable");
        }
    }
}
