//! A minimal SNTP client (RFC 4330): one request over UDP to measure how
//! far this host's clock is from an NTP server. Every decision depends on
//! the clock (permitted hours, token `iat`/`exp`), so `sekisho doctor`
//! reports the offset and the gateway can refuse to start when it is
//! visibly wrong. It never sets the clock: that is chrony's or
//! systemd-timesyncd's job.

use std::net::{ToSocketAddrs, UdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from 1900-01-01 (NTP era 0) to 1970-01-01.
const NTP_UNIX_DELTA: u64 = 2_208_988_800;

#[derive(Debug, thiserror::Error)]
pub enum SntpError {
    #[error("cannot resolve `{0}`")]
    Resolve(String),
    #[error("no answer from `{0}`: {1}")]
    Io(String, std::io::Error),
    #[error("`{0}` answered, but not as an NTP server should: {1}")]
    BadAnswer(String, &'static str),
}

/// The measured offset: positive when this host's clock is behind the server's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Offset {
    pub offset_secs: f64,
    pub round_trip_secs: f64,
}

/// Asks `server` (`host` or `host:port`, port 123 by default) once.
pub fn query(server: &str, timeout: Duration) -> Result<Offset, SntpError> {
    let with_port = match (server.parse::<std::net::SocketAddr>(), server.parse::<std::net::IpAddr>()) {
        (Ok(_), _) => server.to_owned(),
        (_, Ok(ip)) => std::net::SocketAddr::new(ip, 123).to_string(),
        _ if server.matches(':').count() == 1 => server.to_owned(),
        _ => format!("{server}:123"),
    };
    let addr = with_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| SntpError::Resolve(server.to_owned()))?;
    let io = |e| SntpError::Io(server.to_owned(), e);
    let bind = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let socket = UdpSocket::bind(bind).map_err(io)?;
    socket.set_read_timeout(Some(timeout)).map_err(io)?;
    socket.connect(addr).map_err(io)?;
    let mut request = [0u8; 48];
    request[0] = 0b00_100_011; // LI 0, version 4, mode 3 (client)
    let t1 = now();
    request[40..48].copy_from_slice(&t1.to_be_bytes());
    socket.send(&request).map_err(io)?;
    let mut answer = [0u8; 48];
    let n = socket.recv(&mut answer).map_err(io)?;
    let t4 = now();
    read_answer(server, &answer[..n], t1, t4)
}

/// Checks an answer and computes the offset from the four timestamps.
pub fn read_answer(server: &str, a: &[u8], t1: u64, t4: u64) -> Result<Offset, SntpError> {
    let bad = |why| SntpError::BadAnswer(server.to_owned(), why);
    if a.len() < 48 {
        return Err(bad("the answer is shorter than 48 bytes"));
    }
    let stamp = |at: usize| a.get(at..at + 8).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_be_bytes);
    let (origin, t2, t3) = (stamp(24), stamp(32), stamp(40));
    let (Some(origin), Some(t2), Some(t3)) = (origin, t2, t3) else { return Err(bad("no timestamps")) };
    if a[0] & 0b111 != 4 {
        return Err(bad("not a server answer (mode is not 4)"));
    }
    if a[0] >> 6 == 3 || a[1] == 0 || a[1] > 15 {
        return Err(bad("the server is not synchronised (leap indicator 3 or stratum 0)"));
    }
    if origin != t1 {
        return Err(bad("the answer does not echo our request"));
    }
    let (t1, t2, t3, t4) = (secs(t1), secs(t2), secs(t3), secs(t4));
    Ok(Offset { offset_secs: ((t2 - t1) + (t3 - t4)) / 2.0, round_trip_secs: (t4 - t1) - (t3 - t2) })
}

/// Now as an NTP timestamp (32.32 fixed point since 1900).
pub fn now() -> u64 {
    to_ntp(SystemTime::now())
}

pub fn to_ntp(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() + NTP_UNIX_DELTA;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

fn secs(ntp: u64) -> f64 {
    (ntp >> 32) as f64 + (ntp & 0xffff_ffff) as f64 / 4_294_967_296.0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    fn answer(origin: u64, t2: u64, t3: u64) -> [u8; 48] {
        let mut a = [0u8; 48];
        a[0] = 0b00_100_100;
        a[1] = 2;
        a[24..32].copy_from_slice(&origin.to_be_bytes());
        a[32..40].copy_from_slice(&t2.to_be_bytes());
        a[40..48].copy_from_slice(&t3.to_be_bytes());
        a
    }

    #[test]
    fn the_offset_comes_from_the_four_timestamps() {
        let s = |x: u64| x << 32;
        // Server 100 s ahead, 2 s round trip.
        let o = read_answer("x", &answer(s(1000), s(1101), s(1101)), s(1000), s(1002)).unwrap();
        assert_eq!((o.offset_secs, o.round_trip_secs), (100.0, 2.0));
        let o = read_answer("x", &answer(s(1000), s(950), s(950)), s(1000), s(1000)).unwrap();
        assert_eq!(o.offset_secs, -50.0);
    }

    #[test]
    fn bad_answers_are_refused() {
        let good = answer(7, 8, 8);
        assert!(read_answer("x", &good[..40], 7, 9).is_err());
        assert!(read_answer("x", &good, 6, 9).unwrap_err().to_string().contains("echo"));
        let mut client = good;
        client[0] = 0b00_100_011;
        assert!(read_answer("x", &client, 7, 9).is_err());
        let mut unsynced = good;
        unsynced[1] = 0;
        assert!(read_answer("x", &unsynced, 7, 9).is_err());
    }
}
