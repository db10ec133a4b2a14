//! Admission of connections: at most a cap open at once per client key
//! (`connections_per_client` on the gateway's listeners, a fixed one on the
//! admin listener; an IPv6 client's /64: the caller keys it as the rate
//! limits do, `Limiters::key`).
//! Touched once per connection, never per request, in shards so that
//! accepting on one worker rarely waits for another. Refusals are logged,
//! at most once a minute per listener; never the addresses admitted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use crate::notes::Notes;

pub struct OpenConns {
    shards: [Mutex<HashMap<IpAddr, u32>>; 16],
    refusals: Refusals,
}

/// One admitted connection; dropping it frees the place.
pub struct Slot<'a> {
    conns: &'a OpenConns,
    ip: IpAddr,
}

impl OpenConns {
    /// The open connections of one listener, named in its log lines with
    /// the setting that sets its cap.
    pub fn new(listener: &'static str, setting: &'static str) -> OpenConns {
        OpenConns { shards: Default::default(), refusals: Refusals::new(listener, setting) }
    }

    /// A place for one more connection from `ip`, unless it has `cap` open.
    /// A refusal is logged at most once a minute, with the count
    /// since the last note: it leaves no audit line (no request was read),
    /// and a silent cap looks like a network fault to an office whose
    /// browsers share one address.
    pub fn admit(&self, ip: IpAddr, cap: u32) -> Option<Slot<'_>> {
        let mut shard = self.shard(ip);
        let n = shard.entry(ip).or_insert(0);
        if *n >= cap {
            drop(shard);
            self.refusals.refused(ip, cap, Instant::now());
            return None;
        }
        *n += 1;
        Some(Slot { conns: self, ip })
    }

    fn shard(&self, ip: IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, u32>> {
        let h = match ip {
            IpAddr::V4(v4) => u32::from(v4) as usize,
            IpAddr::V6(v6) => (u128::from(v6) >> 64) as usize ^ u128::from(v6) as usize,
        };
        let shard = &self.shards[h % self.shards.len()];
        // A counter map cannot be left inconsistent by a panic elsewhere.
        shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Refusals logged with the listener's name and the setting of its cap.
struct Refusals {
    listener: &'static str,
    setting: &'static str,
    notes: Notes,
}

impl Refusals {
    fn new(listener: &'static str, setting: &'static str) -> Refusals {
        Refusals { listener, setting, notes: Notes::default() }
    }

    fn refused(&self, ip: IpAddr, cap: u32, now: Instant) {
        self.notes.note(now, |n| {
            format!(
                "{}: refused {n} connection(s) since the last note: over the cap of {cap} open per client address, \
                 the latest from {ip} ({})",
                self.listener, self.setting
            )
        });
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut shard = self.conns.shard(self.ip);
        if let Some(n) = shard.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                shard.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_come_back_when_connections_close() {
        let conns = OpenConns::new("test", "no setting");
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let first = conns.admit(ip, 2);
        let second = conns.admit(ip, 2);
        assert!(first.is_some() && second.is_some());
        assert!(conns.admit(ip, 2).is_none(), "a third is over the cap");
        assert!(conns.admit("10.0.0.2".parse().unwrap(), 2).is_some(), "another address has its own places");
        drop(first);
        assert!(conns.admit(ip, 2).is_some());
    }

    #[test]
    fn an_ipv6_client_has_the_places_of_its_slash_64() {
        let conns = OpenConns::new("test", "no setting");
        let limits = crate::limits::Limiters::new(&crate::config::Limits::default());
        let ip = |s: &str| limits.key(s.parse::<IpAddr>().unwrap());
        let held: Vec<_> = ["2001:db8::1", "2001:db8::2"].iter().filter_map(|a| conns.admit(ip(a), 2)).collect();
        assert_eq!(held.len(), 2);
        assert!(conns.admit(ip("2001:db8::3"), 2).is_none(), "a third address of the /64 is over the cap");
        assert!(conns.admit(ip("2001:db8:0:1::1"), 2).is_some(), "another /64 has its own places");
        drop(held);
        assert!(conns.admit(ip("2001:db8::3"), 2).is_some(), "places come back to the /64");
    }
}
