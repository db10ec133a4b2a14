//! The hot state every room shares: the atomically swapped snapshot of
//! rules and state, the verified-token cache, and the change signal that
//! makes requests in flight (long downloads, WebSockets) judge themselves
//! again. The request path only reads the snapshot; it never locks a
//! global mutex or touches the disk. Only the control plane's writer
//! publishes a snapshot.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use sekisho_policy::attestation::{self, AttestationError, VerifiedToken};
use sekisho_policy::state::State;
use sekisho_policy::Rules;

use crate::tls::UpstreamTls;

/// What the request path reads: rules, state, and the upstream TLS material, all immutable.
pub struct Snapshot {
    pub rules: Arc<Rules>,
    pub upstreams: Arc<UpstreamTls>,
    pub state: Arc<State>,
    pub built_at: DateTime<Utc>,
}

pub struct Shared {
    snapshot: ArcSwap<Snapshot>,
    pub tokens: TokenCache,
    /// Bumped by every committed change; a request in flight judges itself
    /// again (`still_allowed`) only when it moved.
    pub generation: AtomicU64,
    /// Carries `generation` to requests that wait (idle streams, WebSockets).
    changes: tokio::sync::watch::Sender<u64>,
    /// Requests in flight on every worker, for status and metrics.
    live: AtomicU64,
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
    pub fn new(rules: Rules, upstreams: UpstreamTls, state: State) -> Shared {
        let snapshot = Snapshot {
            rules: Arc::new(rules),
            upstreams: Arc::new(upstreams),
            state: Arc::new(state),
            built_at: Utc::now(),
        };
        Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            tokens: TokenCache::new(100_000),
            generation: AtomicU64::new(0),
            changes: tokio::sync::watch::Sender::new(0),
            live: AtomicU64::new(0),
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

    /// When the store last proved readable and the snapshot current.
    pub fn confirmed_at(&self) -> DateTime<Utc> {
        let ms = i64::try_from(self.confirmed_ms.load(Ordering::Acquire)).unwrap_or_default();
        DateTime::from_timestamp_millis(ms).unwrap_or_default()
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
    pub fn publish_rules(&self, rules: Rules, upstreams: UpstreamTls) {
        let current = self.snapshot.load_full();
        self.snapshot.store(Arc::new(Snapshot {
            rules: Arc::new(rules),
            upstreams: Arc::new(upstreams),
            state: current.state.clone(),
            built_at: Utc::now(),
        }));
    }

    /// Requests in flight judge themselves again: at their next chunk, and
    /// at once when they wait.
    pub fn bump_generation(&self) {
        let now = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.changes.send_replace(now);
    }

    /// A receiver that wakes on every committed change.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Counts a request in flight until the returned guard drops.
    pub fn live_request(self: &Arc<Self>) -> LiveRequest {
        self.live.fetch_add(1, Ordering::Relaxed);
        LiveRequest(self.clone())
    }

    pub fn live_requests(&self) -> u64 {
        self.live.load(Ordering::Relaxed)
    }
}

/// One request in flight (see [`Shared::live_request`]).
pub struct LiveRequest(Arc<Shared>);

impl Drop for LiveRequest {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads every `*.toml` in `dir` (sorted by name) into rules and upstream material.
pub fn load_rules(dir: &Path) -> Result<(Rules, UpstreamTls), ReloadError> {
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
    let upstreams = UpstreamTls::load(&rules, dir).map_err(ReloadError::Upstream)?;
    Ok((rules, upstreams))
}

/// Verified tokens by the header value itself (hashed with the cache's own
/// keyed hasher, and compared whole on a hit), so a signature is checked
/// once per token rather than once per request. Bounded; entries
/// are only a speed-up: `decide` still checks expiry, device status and the
/// key fingerprint on every request, so a revoked device's tokens stop at once.
pub struct TokenCache {
    cache: quick_cache::sync::Cache<Box<str>, Arc<Result<VerifiedToken, AttestationError>>>,
}

impl TokenCache {
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache { cache: quick_cache::sync::Cache::new(capacity) }
    }

    /// The verification result for `token` against `state`, cached.
    pub fn verify(&self, token: &str, state: &State) -> Arc<Result<VerifiedToken, AttestationError>> {
        if let Some(hit) = self.cache.get(token) {
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
            self.cache.insert(Box::from(token), fresh.clone());
        }
        fresh
    }
}

fn now_ms() -> u64 {
    u64::try_from(Utc::now().timestamp_millis()).unwrap_or_default()
}
