//! Rate limits: per client address (before any signature work), per user,
//! and for failed admin authentications. Keyed governor limiters; their maps
//! never shrink by themselves, so `Limiters::prune` runs every minute to
//! keep rotating keys from exhausting memory. Never blocks: a request over
//! its limit is answered 429 with `Retry-After`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::Limits;

pub struct Limiters {
    by_client: DefaultKeyedRateLimiter<IpAddr>,
    /// Keyed by a hash of the user id so the request path allocates no key.
    by_user: DefaultKeyedRateLimiter<u64>,
    /// Hashes user ids for `by_user` (seeded at random per process).
    user_keys: sekisho_policy::state::Hasher,
    admin_failures: DefaultKeyedRateLimiter<IpAddr>,
    /// Addresses locked out of the admin API, until when. Admin path only.
    admin_locked: Mutex<HashMap<IpAddr, Instant>>,
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
        }
    }

    /// `Err(seconds to wait)` when the client address is over its limit.
    pub fn client(&self, addr: IpAddr) -> Result<(), u64> {
        self.by_client.check_key(&addr).map_err(wait_secs)
    }

    pub fn user(&self, user: &str) -> Result<(), u64> {
        self.by_user.check_key(&self.user_keys.hash_one(user)).map_err(wait_secs)
    }

    /// Counts one failed admin authentication; past the limit the address
    /// is locked out, even for a right token, until its attempts recover.
    pub fn admin_failure(&self, addr: IpAddr) {
        if let Err(secs) = self.admin_failures.check_key(&addr).map_err(wait_secs) {
            if let Ok(mut locked) = self.admin_locked.lock() {
                locked.insert(addr, Instant::now() + Duration::from_secs(secs));
            }
        }
    }

    /// `Some(seconds)` while `addr` is locked out of the admin API.
    pub fn admin_locked(&self, addr: IpAddr) -> Option<u64> {
        let locked = self.admin_locked.lock().ok()?;
        let until = locked.get(&addr)?;
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
    fn each_user_has_their_own_budget() {
        let l = Limiters::new(&limits(1_000_000, 5));
        let passed = (0..100).filter(|_| l.user("hanako").is_ok()).count();
        assert_eq!(passed, 10, "a burst of twice the rate, then 429");
        assert!(l.user("hanako").is_err_and(|secs| secs >= 1));
        assert!(l.user("taro").is_ok(), "another user is not limited by hanako's requests");
    }
}
