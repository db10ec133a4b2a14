//! Rate limits: per client address (before any signature work), per user,
//! and for failed admin authentications. An IPv6 client is limited by its
//! /64, or the prefix `[limits] ipv6_prefix` names ([`client_key`]). Keyed
//! governor limiters; their maps
//! never shrink by themselves, so `Limiters::prune` runs every minute to
//! keep rotating keys from exhausting memory. Never blocks: a request over
//! its limit is answered 429 with `Retry-After`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::{Ipv6Prefix, Limits};

pub struct Limiters {
    by_client: DefaultKeyedRateLimiter<IpAddr>,
    /// Keyed by a hash of the user id so the request path allocates no key.
    by_user: DefaultKeyedRateLimiter<u64>,
    /// Hashes user ids for `by_user` (seeded at random per process).
    user_keys: sekisho_policy::state::Hasher,
    admin_failures: DefaultKeyedRateLimiter<IpAddr>,
    /// Addresses locked out of the admin API, until when. Admin path only.
    admin_locked: Mutex<HashMap<IpAddr, Instant>>,
    ipv6_prefix: Ipv6Prefix,
}

impl Limiters {
    pub fn new(limits: &Limits) -> Limiters {
        let burst = |rps: std::num::NonZeroU32| {
            Quota::per_second(rps).allow_burst(rps.saturating_mul(std::num::NonZeroU32::MIN.saturating_add(1)))
        };
        Limiters {
            by_client: RateLimiter::keyed(burst(limits.per_client_rps)),
            by_user: RateLimiter::keyed(burst(limits.per_user_rps)),
            user_keys: sekisho_policy::state::Hasher::default(),
            admin_failures: RateLimiter::keyed(Quota::per_minute(limits.admin_failures_per_minute)),
            admin_locked: Mutex::new(HashMap::new()),
            ipv6_prefix: limits.ipv6_prefix,
        }
    }

    /// The key `addr` is limited under (see [`client_key`]).
    pub fn key(&self, addr: IpAddr) -> IpAddr {
        client_key(addr, self.ipv6_prefix)
    }

    /// `Err(seconds to wait)` when the client address is over its limit.
    pub fn client(&self, addr: IpAddr) -> Result<(), u64> {
        self.by_client.check_key(&self.key(addr)).map_err(wait_secs)
    }

    pub fn user(&self, user: &str) -> Result<(), u64> {
        self.by_user.check_key(&self.user_keys.hash_one(user)).map_err(wait_secs)
    }

    /// Counts one failed admin authentication; past the limit the address
    /// is locked out, even for a right token, until its attempts recover.
    pub fn admin_failure(&self, addr: IpAddr) {
        let addr = self.key(addr);
        if let Err(secs) = self.admin_failures.check_key(&addr).map_err(wait_secs) {
            if let Ok(mut locked) = self.admin_locked.lock() {
                locked.insert(addr, Instant::now() + Duration::from_secs(secs));
            }
        }
    }

    /// `Some(seconds)` while `addr` is locked out of the admin API.
    pub fn admin_locked(&self, addr: IpAddr) -> Option<u64> {
        let locked = self.admin_locked.lock().ok()?;
        let until = locked.get(&self.key(addr))?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then(|| left.as_secs().max(1))
    }

    /// Forgets keys whose limits have fully recovered.
    pub fn prune(&self) {
        self.by_client.retain_recent();
        self.by_user.retain_recent();
        self.admin_failures.retain_recent();
        self.by_client.shrink_to_fit();
        self.by_user.shrink_to_fit();
        self.admin_failures.shrink_to_fit();
        if let Ok(mut locked) = self.admin_locked.lock() {
            let now = Instant::now();
            locked.retain(|_, until| *until > now);
        }
    }
}

/// The key a client address is limited under: an IPv4 address itself, an
/// IPv6 address its first `prefix` bits (/64 by default). A host usually
/// holds a whole /64 (SLAAC, privacy addresses) and can take a fresh
/// address from it for every connection, so per address it would never
/// meet a limit; an IPv4-mapped address is its IPv4 address.
pub fn client_key(addr: IpAddr, prefix: Ipv6Prefix) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix.bits())).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
        v4 => v4,
    }
}

fn wait_secs(not_until: governor::NotUntil<<DefaultClock as Clock>::Instant>) -> u64 {
    let wait: Duration = not_until.wait_time_from(DefaultClock::default().now());
    wait.as_secs().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_client: u32, per_user: u32) -> Limits {
        Limits {
            per_client_rps: std::num::NonZeroU32::new(per_client).unwrap(),
            per_user_rps: std::num::NonZeroU32::new(per_user).unwrap(),
            ..Limits::default()
        }
    }

    #[test]
    fn rotating_keys_are_forgotten_once_their_limits_recover() {
        let l = Limiters::new(&limits(1000, 1000));
        for i in 0..5000u32 {
            assert!(l.client(IpAddr::from(i.to_be_bytes())).is_ok());
            assert!(l.user(&format!("user{i}")).is_ok());
        }
        assert_eq!((l.by_client.len(), l.by_user.len()), (5000, 5000));
        // One request each refills in a millisecond at 1000/s.
        std::thread::sleep(Duration::from_millis(20));
        l.prune();
        assert_eq!((l.by_client.len(), l.by_user.len()), (0, 0));
    }

    #[test]
    fn an_ipv6_client_is_limited_by_its_slash_64() {
        let l = Limiters::new(&limits(5, 1000));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // Rotating through its own /64 gains a client nothing.
        let passed = (1..=100u32).filter(|i| l.client(ip(&format!("2001:db8:1:2::{i:x}"))).is_ok()).count();
        assert_eq!(passed, 10, "a burst of twice the rate for the whole /64");
        assert!(l.client(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")).is_err());
        assert!(l.client(ip("2001:db8:1:3::1")).is_ok(), "the next /64 is another client");
        assert!(l.client(ip("10.0.0.1")).is_ok() && l.client(ip("10.0.0.2")).is_ok(), "IPv4: per address");
        assert_eq!(l.key(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
    }

    #[test]
    fn the_ipv6_prefix_is_configurable() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let key = |bits: u8, a: &str| client_key(ip(a), Ipv6Prefix::try_from(bits).unwrap());
        assert_eq!(key(128, "2001:db8::1"), ip("2001:db8::1"), "128: one address");
        assert_eq!(key(56, "2001:db8:1:2ff::1"), ip("2001:db8:1:200::"));
        assert_eq!(key(32, "2001:db8:1:2::1"), ip("2001:db8::"));
        assert!(Ipv6Prefix::try_from(16).is_err() && Ipv6Prefix::try_from(129).is_err());
    }

    #[test]
    fn an_admin_lockout_holds_for_the_whole_slash_64() {
        let l = Limiters::new(&Limits {
            admin_failures_per_minute: std::num::NonZeroU32::new(3).unwrap(),
            ..limits(1000, 1000)
        });
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for i in 1..=10u32 {
            l.admin_failure(ip(&format!("2001:db8::{i}")));
        }
        assert!(l.admin_locked(ip("2001:db8::beef")).is_some(), "another address of the same /64");
        assert!(l.admin_locked(ip("2001:db8:0:1::1")).is_none());
    }

    #[test]
    fn each_user_has_their_own_budget() {
        let l = Limiters::new(&limits(1_000_000, 5));
        let passed = (0..100).filter(|_| l.user("hanako").is_ok()).count();
        assert_eq!(passed, 10, "a burst of twice the rate, then 429");
        assert!(l.user("hanako").is_err_and(|secs| secs >= 1));
        assert!(l.user("taro").is_ok(), "another user is not limited by hanako's requests");
    }
}
