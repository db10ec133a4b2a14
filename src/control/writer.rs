//! The one way the state changes: commit a change and its audit record to
//! the store in one transaction, then publish the new snapshot and cut the
//! connections the change ends. Writes are serialised here so that commit,
//! apply and publish happen in order. It also confirms, every second, that
//! the snapshot still matches the store (another process may have written
//! it), which is what lets the request path fail closed on a lost store.
//! It must never be called from the request path.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use crate::control::store::{AuditEntry, Change, Store, StoreError};
use crate::shared::{load_rules, ReloadError, Shared};

pub struct Writer {
    pub store: Store,
    shared: Arc<Shared>,
    /// Serialises admin writes so that commit, apply and publish happen in order.
    writes: tokio::sync::Mutex<()>,
    /// The store's `data_version` the snapshot was read at.
    version: AtomicI64,
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
    /// `version` is the store's `data_version` when the published state was read.
    pub fn new(store: Store, shared: Arc<Shared>, version: i64) -> Writer {
        Writer { store, shared, writes: tokio::sync::Mutex::new(()), version: AtomicI64::new(version) }
    }

    /// Commits `change` durably (with its audit record), then publishes the
    /// new snapshot and cuts the connections the change ends. Returns the
    /// change as stored (with assigned ids). Nothing is published if the write fails.
    pub async fn commit(&self, change: Change, audit: AuditEntry) -> Result<Change, StoreError> {
        let _guard = self.writes.lock().await;
        let store = self.store.clone();
        let stored = tokio::task::spawn_blocking(move || store.commit(change, &audit))
            .await
            .map_err(|_| StoreError::Poisoned)??;
        let state = crate::control::store::apply(&self.shared.snapshot().state, &stored);
        self.shared.publish_state(state);
        self.cut_after(&stored);
        Ok(stored)
    }

    /// Checks the store once: readable, and unchanged by anyone else since
    /// the snapshot was read (or re-read if it was).
    pub async fn confirm(&self) -> Result<(), StoreError> {
        let store = self.store.clone();
        let version =
            tokio::task::spawn_blocking(move || store.data_version()).await.map_err(|_| StoreError::Poisoned)??;
        if version != self.version.load(Ordering::Acquire) {
            log::warn!("the store was changed by another process; re-reading the state");
            self.reload_state().await?;
        }
        self.shared.confirmed();
        Ok(())
    }

    /// Re-reads the whole state from the store (after another process wrote
    /// it) and publishes it.
    pub async fn reload_state(&self) -> Result<(), StoreError> {
        let _guard = self.writes.lock().await;
        let store = self.store.clone();
        let (state, version) =
            tokio::task::spawn_blocking(move || store.load_versioned()).await.map_err(|_| StoreError::Poisoned)??;
        self.version.store(version, Ordering::Release);
        self.shared.publish_state(state);
        // In-flight requests re-judge against what changed meanwhile.
        self.shared.bump_generation();
        Ok(())
    }

    /// Replaces the rules once they load and the audit record is durable;
    /// on any error the running rules stay.
    pub async fn reload_rules(&self, dir: &Path, audit: AuditEntry) -> Result<usize, RulesReloadError> {
        let (rules, upstreams) = load_rules(dir)?;
        let _guard = self.writes.lock().await;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.record(&audit)).await.map_err(|_| StoreError::Poisoned)??;
        let count = rules.profiles().len();
        self.shared.publish_rules(rules, upstreams);
        Ok(count)
    }

    /// Every request in flight judges itself again against the new state
    /// (the engine's `still_allowed`), so a suspension, revocation or stop
    /// ends open downloads and WebSockets at once; which ones end is the
    /// engine's call, not the writer's.
    fn cut_after(&self, _change: &Change) {
        self.shared.bump_generation();
    }
}
