//! The one interface through which the control plane writes the state and
//! follows what other writers committed, with its two implementations:
//! SQLite ([`Store`], one gateway) and PostgreSQL
//! ([`crate::control::postgres::PgStore`], any number of replicas). Both
//! commit a change and its admin audit record in one transaction before
//! answering, and both tell a follower what changed since the position its
//! snapshot is at. It must never be called from the request path.

use std::sync::Arc;

use async_trait::async_trait;
use sekisho_policy::state::State;
use serde::Serialize;
use tokio::sync::{watch, Notify};

use std::collections::VecDeque;

use crate::config::{PgConfig, StoreConfig};
use crate::control::store::{AdminFilter, AuditEntry, AuditRecord, Change, Store, StoreError};

/// Where in the store's history a state is. PostgreSQL: the number of the
/// last change-log entry applied and that entry's random tag, so a
/// database that went back in time (a promoted standby that missed the
/// last commits) and then wrote new entries under the same numbers is
/// noticed. SQLite: its `data_version` (tag 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Position {
    pub seq: i64,
    pub tag: i64,
}

/// A change as committed, with the positions just before and after it.
#[derive(Debug)]
pub struct Committed {
    /// The change as stored (with the ids the database assigned).
    pub change: Change,
    pub before: Position,
    pub after: Position,
}

/// What a follower at some position must do to be current.
#[derive(Debug)]
pub enum Since {
    Current,
    /// Apply these in order; the state is then at the position.
    Changes(Vec<Change>, Position),
    /// The history cannot be followed from there (pruned, rolled back,
    /// written by another program): read the whole state instead.
    Reload,
}

/// A change a notification carried: the log entry after `before`.
#[derive(Debug, Clone, PartialEq)]
pub struct Carried {
    pub before: Position,
    pub after: Position,
    pub change: Change,
}

/// What the listener hands the follower: wake-ups, and the changes the
/// notifications carried (at most [`Wake::KEPT`]; older ones are dropped,
/// and the follower then reads them from the log).
#[derive(Default)]
pub struct Wake {
    notify: Notify,
    carried: std::sync::Mutex<VecDeque<Carried>>,
}

impl Wake {
    const KEPT: usize = 256;

    /// Another writer may have committed.
    pub fn ring(&self) {
        self.notify.notify_one();
    }

    /// Another writer committed this.
    pub fn carry(&self, entry: Carried) {
        if let Ok(mut carried) = self.carried.lock() {
            if carried.len() == Self::KEPT {
                carried.pop_front();
            }
            carried.push_back(entry);
        }
        self.ring();
    }

    pub async fn rung(&self) {
        self.notify.notified().await;
    }

    /// The carried changes since the last call, oldest first.
    pub fn take(&self) -> Vec<Carried> {
        self.carried.lock().map(|mut c| c.drain(..).collect()).unwrap_or_default()
    }
}

#[async_trait]
pub trait Backend: Send + Sync {
    /// `sqlite` or `postgres`, for the status page and metrics.
    fn kind(&self) -> &'static str;
    /// The whole state and the position it is at.
    async fn load(&self) -> Result<(State, Position), StoreError>;
    /// Writes `change` and its audit record in one durable transaction.
    async fn commit(&self, change: Change, audit: AuditEntry) -> Result<Committed, StoreError>;
    /// Records an admin action that changes no state (a rules reload).
    async fn record(&self, audit: AuditEntry) -> Result<(), StoreError>;
    /// Admin audit records matching `filter`, newest first.
    async fn audit(&self, filter: AdminFilter) -> Result<Vec<AuditRecord>, StoreError>;
    /// Walks the admin records' hash chain in id order: how many were
    /// checked, or the first record that does not follow from the one before.
    async fn verify_audit_chain(&self) -> Result<Result<u64, i64>, StoreError>;
    /// What was committed after `at`. Succeeding also proves the store readable.
    async fn since(&self, at: Position) -> Result<Since, StoreError>;
    /// Until `shutdown`, wakes `wake` whenever another writer may have
    /// committed (PostgreSQL `LISTEN`), with the change when the
    /// notification carried it. A wake-up is only a hint: a carried change
    /// is applied only if it follows the applied position exactly, and the
    /// follower reads the change log otherwise.
    async fn listen(&self, wake: Arc<Wake>, shutdown: watch::Receiver<bool>);
}

/// Opens the configured store and brings its schema up to date.
pub async fn open(config: &StoreConfig) -> Result<Arc<dyn Backend>, StoreError> {
    match config {
        StoreConfig::Sqlite { path } => {
            let path = path.clone();
            Ok(Arc::new(blocking(move || Store::open(&path)).await?))
        }
        StoreConfig::Postgres(pg) => {
            let store = crate::control::postgres::PgStore::new((**pg).clone())?;
            store.migrate().await?;
            Ok(Arc::new(store))
        }
    }
}

/// Start-up, before any runtime runs: opens the store and reads the whole
/// state on a runtime of its own. Connections made here close with it; the
/// store reconnects on the runtime that uses it next.
pub fn start(config: &StoreConfig) -> Result<(Arc<dyn Backend>, State, Position), StoreError> {
    on_own_runtime(async {
        let store = open(config).await?;
        let (state, position) = store.load().await?;
        Ok((store, state, position))
    })
}

/// `sekisho store migrate`: the configured store's schema, created or
/// brought up to date.
pub fn migrate(config: &StoreConfig) -> Result<String, StoreError> {
    on_own_runtime(async {
        match config {
            StoreConfig::Sqlite { path } => {
                open(config).await?;
                Ok(format!("the SQLite store `{}` is ready", path.display()))
            }
            StoreConfig::Postgres(pg) => {
                let version = crate::control::postgres::PgStore::new((**pg).clone())?.migrate().await?;
                Ok(format!("the PostgreSQL store is at schema version {version}"))
            }
        }
    })
}

/// `sekisho store copy`: every record of an SQLite store into an empty
/// PostgreSQL store, verified.
pub fn copy(from: &std::path::Path, to: PgConfig) -> Result<crate::control::postgres::CopyReport, StoreError> {
    on_own_runtime(async {
        let to = crate::control::postgres::PgStore::new(to)?;
        crate::control::postgres::copy_from_sqlite(from, &to).await
    })
}

pub fn on_own_runtime<T>(work: impl std::future::Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreError::Unavailable(format!("cannot start a runtime: {e}")))?
        .block_on(work)
}

#[async_trait]
impl Backend for Store {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn load(&self) -> Result<(State, Position), StoreError> {
        let store = self.clone();
        let (state, version) = blocking(move || store.load_versioned()).await?;
        Ok((state, Position { seq: version, tag: 0 }))
    }

    /// `before` and `after` are the `data_version` read before the
    /// transaction: a commit by another process slipping in between then
    /// shows as a changed version at the next confirmation.
    async fn commit(&self, change: Change, audit: AuditEntry) -> Result<Committed, StoreError> {
        let store = self.clone();
        blocking(move || {
            let at = Position { seq: store.data_version()?, tag: 0 };
            let change = store.commit(change, &audit)?;
            Ok(Committed { change, before: at, after: at })
        })
        .await
    }

    async fn record(&self, audit: AuditEntry) -> Result<(), StoreError> {
        let store = self.clone();
        blocking(move || store.record(&audit)).await
    }

    async fn audit(&self, f: AdminFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let store = self.clone();
        blocking(move || store.audit(&f)).await
    }

    async fn verify_audit_chain(&self) -> Result<Result<u64, i64>, StoreError> {
        let store = self.clone();
        blocking(move || Store::verify_audit_chain(&store)).await
    }

    /// SQLite keeps no change log: a commit by another process (an upgrade's
    /// old one, a repair by hand) changes `data_version`, and then the whole
    /// state is read again.
    async fn since(&self, at: Position) -> Result<Since, StoreError> {
        let store = self.clone();
        let version = blocking(move || store.data_version()).await?;
        Ok(if version == at.seq { Since::Current } else { Since::Reload })
    }

    async fn listen(&self, _wake: Arc<Wake>, mut shutdown: watch::Receiver<bool>) {
        let _ = shutdown.wait_for(|stop| *stop).await;
    }
}

/// Runs SQLite's blocking calls off the runtime's worker threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work).await.map_err(|_| StoreError::Poisoned)?
}
