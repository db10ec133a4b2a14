//! The systemd notify protocol (sd_notify), written out: datagrams such as
//! `READY=1` to the Unix socket named by `NOTIFY_SOCKET` (a path, or an
//! abstract name starting with `@`). `READY=1` once the listeners are bound and the workers run,
//! `WATCHDOG=1` at half `WATCHDOG_USEC` while the state is confirmed and
//! the audit log writable, `RELOADING=1`/`READY=1` around a rules reload,
//! `STOPPING=1` at shutdown. Without `NOTIFY_SOCKET` every call does
//! nothing. It must never block the request path: only start-up, the
//! reload handler and the watchdog task call it.

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
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let usec = t.tv_sec as u128 * 1_000_000 + t.tv_nsec as u128 / 1000;
    send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
}

/// How often to ping the watchdog: half `WATCHDOG_USEC`, when it is set
/// for this process (`WATCHDOG_PID` absent or ours).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    let ours = std::env::var("WATCHDOG_PID").map_or(true, |p| p.parse() == Ok(std::process::id()));
    (ours && usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// `READY=1`, with this process as the main one (after a graceful upgrade
/// the new process takes over; the unit has `NotifyAccess=all`).
pub fn ready() {
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
