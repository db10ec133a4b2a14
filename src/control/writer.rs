//! The one way the state changes: commit a change and its audit record to
//! the store in one transaction, then publish the new snapshot and cut the
//! connections the change ends. Changes committed elsewhere (another
//! replica, another process) arrive the same way: read from the store,
//! applied in order, published, and their connections cut. Writes and
//! catch-ups are serialised here so that the snapshot follows the store's
//! order. Confirming the snapshot against the store is what lets the
//! request path fail closed on a lost store. It must never be called from
//! the request path.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sekisho_policy::state::State;
use serde_json::{json, Value};

use crate::control::backend::{Backend, Carried, Position, Since};
use crate::control::store::{AuditEntry, Change, StoreError};
use crate::shared::{load_rules, ReloadError, Shared};

pub struct Writer {
    pub store: Arc<dyn Backend>,
    shared: Arc<Shared>,
    /// The store position the published state is at. Held across a commit
    /// or a catch-up, so that commit, apply and publish happen in order.
    applied: tokio::sync::Mutex<Position>,
    health: Health,
}

/// What the status page and `/metrics` say about the store.
struct Health {
    max_age: Duration,
    /// Whether the last confirmation reached the store.
    up: AtomicBool,
    seq: AtomicI64,
    /// The last confirmation's error, for the status page.
    error: std::sync::Mutex<Option<String>>,
}

/// A rules reload that failed: the running rules stay.
#[derive(Debug, thiserror::Error)]
pub enum RulesReloadError {
    #[error(transparent)]
    Load(#[from] ReloadError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Writer {
    /// `at` is the store position the published state was read at; requests
    /// are refused once the state is unconfirmed for `max_age`.
    pub fn new(store: Arc<dyn Backend>, shared: Arc<Shared>, at: Position, max_age: Duration) -> Writer {
        let health = Health {
            max_age,
            up: AtomicBool::new(true),
            seq: AtomicI64::new(at.seq),
            error: std::sync::Mutex::new(None),
        };
        Writer { store, shared, applied: tokio::sync::Mutex::new(at), health }
    }

    /// Commits `change` durably (with its audit record), then publishes the
    /// new snapshot and cuts the connections the change ends. Returns the
    /// change as stored (with assigned ids). Nothing is published if the write fails.
    pub async fn commit(&self, change: Change, audit: AuditEntry) -> Result<Change, StoreError> {
        let mut applied = self.applied.lock().await;
        let committed = self.store.commit(change, audit).await?;
        if committed.before == *applied {
            self.apply(std::slice::from_ref(&committed.change));
            *applied = committed.after;
            self.health.seq.store(applied.seq, Ordering::Relaxed);
        } else if let Err(e) = self.catch_up(&mut applied).await {
            // Committed: the answer is a success; the follower applies it
            // (with what another writer committed before it) at its next round.
            log::warn!("a change was committed but the store could not be read back at once: {e}");
        }
        Ok(committed.change)
    }

    /// Brings the snapshot up to the store (what another replica or process
    /// committed) and, on success, marks it confirmed.
    pub async fn confirm(&self) -> Result<(), StoreError> {
        let mut applied = self.applied.lock().await;
        let result = self.catch_up(&mut applied).await;
        self.health.up.store(result.is_ok(), Ordering::Relaxed);
        if let Ok(mut error) = self.health.error.lock() {
            *error = result.as_ref().err().map(ToString::to_string);
        }
        result
    }

    /// Applies changes that notifications carried, as long as each follows
    /// the applied position exactly; `false` when one did not (a missed
    /// notification, another history): the log is then read instead.
    pub async fn apply_carried(&self, carried: Vec<Carried>) -> bool {
        let mut applied = self.applied.lock().await;
        let mut next = Vec::new();
        let mut at = *applied;
        for c in carried {
            if c.after.seq <= at.seq {
                continue; // already applied (this replica's own commit, or read from the log)
            }
            if c.before != at {
                return false;
            }
            at = c.after;
            next.push(c.change);
        }
        if !next.is_empty() {
            self.apply(&next);
            *applied = at;
            self.health.seq.store(at.seq, Ordering::Relaxed);
        }
        true
    }

    /// Re-reads the whole state from the store and publishes it.
    pub async fn reload_state(&self) -> Result<(), StoreError> {
        let mut applied = self.applied.lock().await;
        let (state, at) = self.store.load().await?;
        self.replace(state);
        *applied = at;
        self.health.seq.store(at.seq, Ordering::Relaxed);
        self.shared.confirmed();
        Ok(())
    }

    /// Replaces the rules once they load and the audit record is durable;
    /// on any error the running rules stay.
    pub async fn reload_rules(&self, dir: &Path, audit: AuditEntry) -> Result<usize, RulesReloadError> {
        let (rules, upstreams) = load_rules(dir)?;
        let _applied = self.applied.lock().await;
        self.store.record(audit).await?;
        let count = rules.profiles().len();
        self.shared.publish_rules(rules, upstreams);
        Ok(count)
    }

    /// The store's health for the status page: backend, whether requests
    /// are served (`fresh`), the age of the last confirmation, the change-log
    /// position and the last error.
    pub fn status(&self) -> Value {
        let age = self.shared.confirmed_age(Utc::now());
        let error = self.health.error.lock().ok().and_then(|e| e.clone());
        json!({
            "backend": self.store.kind(),
            "fresh": age <= self.health.max_age,
            "reachable": self.health.up.load(Ordering::Relaxed),
            "confirmed_age_secs": age.as_secs_f64(),
            "state_max_age_secs": self.health.max_age.as_secs(),
            "position": self.health.seq.load(Ordering::Relaxed),
            "error": error,
        })
    }

    /// The same facts as Prometheus gauges.
    pub fn metrics(&self) -> crate::metrics::StoreGauges {
        let age = self.shared.confirmed_age(Utc::now());
        crate::metrics::StoreGauges {
            backend: self.store.kind(),
            fresh: age <= self.health.max_age,
            reachable: self.health.up.load(Ordering::Relaxed),
            confirmed_age_secs: age.as_secs_f64(),
            position: self.health.seq.load(Ordering::Relaxed),
        }
    }

    async fn catch_up(&self, applied: &mut Position) -> Result<(), StoreError> {
        match self.store.since(*applied).await? {
            Since::Current => {}
            Since::Changes(changes, at) => {
                self.apply(&changes);
                *applied = at;
            }
            Since::Reload => {
                log::warn!("the store's history cannot be followed from here; reading the whole state");
                let (state, at) = self.store.load().await?;
                self.replace(state);
                *applied = at;
            }
        }
        self.health.seq.store(applied.seq, Ordering::Relaxed);
        self.shared.confirmed();
        Ok(())
    }

    /// Publishes the snapshot with `changes` applied. Every request in
    /// flight then judges itself again against it (the engine's
    /// `still_allowed`), so a suspension, revocation or stop ends open
    /// downloads and WebSockets at once, whichever replica made it; which
    /// ones end is the engine's call, not the writer's.
    fn apply(&self, changes: &[Change]) {
        let mut state = (*self.shared.snapshot().state).clone();
        for change in changes {
            crate::control::store::apply_mut(&mut state, change);
        }
        self.shared.publish_state(state);
        self.shared.bump_generation();
    }

    /// Publishes a whole new state (the changes that led to it are not
    /// known); every request in flight judges itself again against it.
    fn replace(&self, state: State) {
        self.shared.publish_state(state);
        self.shared.bump_generation();
    }
}
