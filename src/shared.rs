//! The hot state every room shares: the atomically swapped snapshot of
//! rules and state, the verified-token cache, and the registry of live
//! connections that a suspension cuts. The request path only reads the
//! snapshot and touches sharded entries; it never locks a global mutex or
//! touches the disk. Only the control plane's writer publishes a snapshot.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use sekisho_policy::attestation::{self, AttestationError, VerifiedToken};
use sekisho_policy::state::State;
use sekisho_policy::Rules;
use sha2::{Digest, Sha256};

use crate::gateway::upstream::Upstreams;

/// What the request path reads: rules, state, and the upstream TLS material, all immutable.
pub struct Snapshot {
    pub rules: Arc<Rules>,
    pub upstreams: Arc<Upstreams>,
    pub state: Arc<State>,
    pub built_at: DateTime<Utc>,
}

pub struct Shared {
    snapshot: ArcSwap<Snapshot>,
    pub tokens: TokenCache,
    pub conns: LiveConns,
    /// Bumped by every change that can end requests in flight; body filters
    /// re-check their request only when it moved.
    pub generation: AtomicU64,
    /// When the store last proved readable and the snapshot current (ms
    /// since the epoch); `fresh` refuses to vouch for an older snapshot.
    confirmed_ms: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("cannot read rules directory `{0}`: {1}")]
    Read(String, std::io::Error),
    #[error("{0}")]
    Rules(#[from] sekisho_policy::RulesError),
    #[error("{0}")]
    Upstream(String),
    #[error("no rules files (`*.toml`) in `{0}`")]
    Empty(String),
}

impl Shared {
    pub fn new(rules: Rules, upstreams: Upstreams, state: State) -> Shared {
        let snapshot = Snapshot {
            rules: Arc::new(rules),
            upstreams: Arc::new(upstreams),
            state: Arc::new(state),
            built_at: Utc::now(),
        };
        Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            tokens: TokenCache::new(100_000),
            conns: LiveConns::default(),
            generation: AtomicU64::new(0),
            confirmed_ms: AtomicU64::new(now_ms()),
        }
    }

    /// Whether, at `now`, the snapshot was confirmed against the store within `max_age`.
    pub fn fresh(&self, now: chrono::DateTime<Utc>, max_age: std::time::Duration) -> bool {
        let now_ms = u64::try_from(now.timestamp_millis()).unwrap_or_default();
        let age = now_ms.saturating_sub(self.confirmed_ms.load(Ordering::Acquire));
        u128::from(age) <= max_age.as_millis()
    }

    /// How long ago the snapshot was last confirmed against the store.
    pub fn confirmed_age(&self, now: chrono::DateTime<Utc>) -> std::time::Duration {
        let now_ms = u64::try_from(now.timestamp_millis()).unwrap_or_default();
        std::time::Duration::from_millis(now_ms.saturating_sub(self.confirmed_ms.load(Ordering::Acquire)))
    }

    /// The control plane proved the snapshot current just now.
    pub fn confirmed(&self) {
        self.confirmed_ms.store(now_ms(), Ordering::Release);
    }

    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// An owned handle on the current snapshot, for a whole request.
    pub fn snapshot_full(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Publishes a new state under the current rules. Only the control
    /// plane's writer calls this, after the state is durable.
    pub fn publish_state(&self, state: State) {
        let current = self.snapshot.load_full();
        self.snapshot.store(Arc::new(Snapshot {
            rules: current.rules.clone(),
            upstreams: current.upstreams.clone(),
            state: Arc::new(state),
            built_at: Utc::now(),
        }));
    }

    /// Publishes new rules under the current state.
    pub fn publish_rules(&self, rules: Rules, upstreams: Upstreams) {
        let current = self.snapshot.load_full();
        self.snapshot.store(Arc::new(Snapshot {
            rules: Arc::new(rules),
            upstreams: Arc::new(upstreams),
            state: current.state.clone(),
            built_at: Utc::now(),
        }));
    }

    /// In-flight requests re-judge against the state at their next chunk.
    pub fn bump_generation(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// Reads every `*.toml` in `dir` (sorted by name) into rules and upstream material.
pub fn load_rules(dir: &Path) -> Result<(Rules, Upstreams), ReloadError> {
    let shown = dir.display().to_string();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| ReloadError::Read(shown.clone(), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ReloadError::Empty(shown));
    }
    let mut texts = Vec::with_capacity(files.len());
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|e| ReloadError::Read(f.display().to_string(), e))?;
        texts.push((f.display().to_string(), text));
    }
    let rules = Rules::from_sources(texts.iter().map(|(f, t)| (f.as_str(), t.as_str())))?;
    let upstreams = Upstreams::load(&rules, dir).map_err(ReloadError::Upstream)?;
    Ok((rules, upstreams))
}

/// Verified tokens by SHA-256 of the header value, so a signature is
/// checked once per token rather than once per request. Bounded; entries
/// are only a speed-up: `decide` still checks expiry, device status and the
/// key fingerprint on every request, so a revoked device's tokens stop at once.
pub struct TokenCache {
    cache: quick_cache::sync::Cache<[u8; 32], Arc<Result<VerifiedToken, AttestationError>>>,
}

impl TokenCache {
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache { cache: quick_cache::sync::Cache::new(capacity) }
    }

    /// The verification result for `token` against `state`, cached.
    pub fn verify(&self, token: &str, state: &State) -> Arc<Result<VerifiedToken, AttestationError>> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(hit) = self.cache.get(&key) {
            // A cached success is reused only while the device keeps the
            // same key; a cached failure only while the device is still unknown.
            let still_valid = match &*hit {
                Ok(v) => state.devices.get(&v.device).is_some_and(|d| d.key.fingerprint() == v.key_fingerprint),
                Err(_) => false,
            };
            if still_valid {
                return hit;
            }
        }
        let fresh = Arc::new(attestation::verify(token, &state.devices));
        if fresh.is_ok() {
            self.cache.insert(key, fresh.clone());
        }
        fresh
    }
}

/// An upgraded connection (WebSocket) in flight, as the cutter sees it.
/// Only upgrades are registered: they may sit idle, so no body filter would
/// notice a change; other requests re-check in their body filters.
pub struct LiveEntry {
    pub user: String,
    pub device: String,
    pub profile: String,
    /// Downstream socket and its kernel cookie, so a recycled descriptor
    /// number is never shut down by mistake.
    pub socket: (RawFd, u64),
}

const SHARDS: usize = 32;

/// Live requests, sharded so registering one never contends globally.
#[derive(Default)]
pub struct LiveConns {
    shards: [Mutex<HashMap<u64, LiveEntry>>; SHARDS],
    next: AtomicU64,
}

impl LiveConns {
    /// Registers a request; the returned id deregisters it in `logging`.
    pub fn register(&self, entry: LiveEntry) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut shard) = self.shard(id).lock() {
            shard.insert(id, entry);
        }
        id
    }

    /// Must run before the downstream socket is closed (pingora's `logging`).
    pub fn deregister(&self, id: u64) {
        if let Ok(mut shard) = self.shard(id).lock() {
            shard.remove(&id);
        }
    }

    fn shard(&self, id: u64) -> &Mutex<HashMap<u64, LiveEntry>> {
        &self.shards[(id as usize) % SHARDS]
    }

    /// Shuts down the socket of every matching upgraded connection.
    pub fn cut(&self, matches: impl Fn(&LiveEntry) -> bool) {
        for shard in &self.shards {
            let Ok(shard) = shard.lock() else { continue };
            for entry in shard.values().filter(|e| matches(e)) {
                shutdown_if_same(entry.socket.0, entry.socket.1);
            }
        }
    }

    pub fn count(&self) -> usize {
        self.shards.iter().filter_map(|s| s.lock().ok().map(|s| s.len())).sum()
    }
}

/// Shuts the socket down only if the descriptor still names the same socket.
fn shutdown_if_same(fd: RawFd, cookie: u64) {
    let same = pingora::protocols::l4::ext::get_socket_cookie(fd).is_ok_and(|c| c == cookie);
    if same {
        // The entry is deregistered under the same shard lock before pingora
        // closes the socket, so `fd` is still the request's connection here.
        let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
    }
}

fn now_ms() -> u64 {
    u64::try_from(Utc::now().timestamp_millis()).unwrap_or_default()
}
