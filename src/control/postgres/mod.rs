//! The PostgreSQL store that several gateway replicas share. Owns the
//! connections (TLS with rustls, the password read from its file or
//! variable at each connection), the schema, each change's SQL, the change
//! log replicas follow, and `LISTEN`. Every commit takes the one-row
//! `log_head` lock first, so writers from all replicas are serialised by
//! the database, checks made inside the transaction see the latest
//! committed state, and change-log numbers are gap-free and in commit
//! order. Each database call has a deadline; a connection that failed or
//! timed out is dropped and made anew at the next call. It must never be
//! called from the request path, and never logs the password.

mod copy;
mod load;
mod schema;
mod write;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sekisho_policy::state::State;
use tokio::sync::watch;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::config::{PasswordSource, PgConfig};
use crate::control::backend::{Backend, Carried, Committed, Position, Since, Wake};
use crate::control::store::{AdminFilter, AuditEntry, AuditRecord, Change, StoreError};

pub use copy::{copy_from_sqlite, CopyReport};
pub use schema::VERSION as SCHEMA_VERSION;

/// The deadline for reading the whole state or writing a bulk import.
const WHOLE_STATE: Duration = Duration::from_secs(300);

/// The channel a commit notifies and every replica listens on.
const CHANNEL: &str = "sekisho_changes";

pub struct PgStore {
    config: PgConfig,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// The connection for writes, reads and the follower's rounds; the
    /// listener has its own.
    conn: tokio::sync::Mutex<Option<Client>>,
}

impl PgStore {
    /// Reads the TLS material; connects lazily, at the first call.
    pub fn new(config: PgConfig) -> Result<PgStore, StoreError> {
        let tls = match &config.ca_cert {
            Some(ca) => Some(tls_connector(ca, config.client_cert.as_ref())?),
            None => None,
        };
        Ok(PgStore { config, tls, conn: tokio::sync::Mutex::new(None) })
    }

    /// Creates or upgrades the schema (idempotent; serialised between
    /// replicas starting at once) and returns its version.
    pub async fn migrate(&self) -> Result<i32, StoreError> {
        self.call(self.config.timeout, |client| Box::pin(schema::migrate(client))).await
    }

    /// A connection of its own, without deadlines, for long one-off work (`store copy`).
    async fn dedicated(&self) -> Result<Client, StoreError> {
        self.connect(Some("copy"), None).await
    }

    /// Runs `work` on the shared connection (made anew if it is missing or
    /// closed) within `limit`. A connection that failed or timed out is
    /// dropped, so a half-finished exchange is never reused. A kept
    /// connection found closed (the database restarted since) is replaced
    /// and `work` tried once more: a closed connection commits nothing (a
    /// commit whose answer was lost is `Uncertain`, never retried).
    async fn call<T>(
        &self,
        limit: Duration,
        work: impl for<'c> Fn(&'c mut Client) -> BoxFuture<'c, Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let mut slot = self.conn.lock().await;
        let mut kept = slot.as_ref().is_some_and(|c| !c.is_closed());
        loop {
            let client = match slot.take() {
                Some(c) if !c.is_closed() => slot.insert(c),
                _ => slot.insert(self.connect(None, None).await?),
            };
            let outcome = match tokio::time::timeout(limit, work(client)).await {
                Ok(result) => result,
                Err(_) => {
                    Err(StoreError::Unavailable(format!("the database did not answer within {} s", limit.as_secs())))
                }
            };
            match &outcome {
                Ok(_) | Err(StoreError::NotFound(_) | StoreError::Conflict(_)) => return outcome,
                Err(StoreError::Postgres(e)) if kept && e.is_closed() => {
                    *slot = None;
                    kept = false;
                }
                Err(_) => {
                    *slot = None;
                    return outcome;
                }
            }
        }
    }

    fn late(&self) -> StoreError {
        StoreError::Unavailable(format!("the database did not answer within {} s", self.config.timeout.as_secs()))
    }

    /// A new connection, driven on the current runtime. Notifications it
    /// receives wake `wake`; the handle ends when the connection does.
    async fn connect(&self, suffix: Option<&str>, wake: Option<Arc<Wake>>) -> Result<Client, StoreError> {
        Ok(self.connect_driven(suffix, wake).await?.0)
    }

    async fn connect_driven(
        &self,
        suffix: Option<&str>,
        wake: Option<Arc<Wake>>,
    ) -> Result<(Client, tokio::task::JoinHandle<()>), StoreError> {
        let mut config = self.config.connect.clone();
        if let Some(source) = &self.config.password {
            config.password(read_password(source)?);
        }
        if let Some(suffix) = suffix {
            let name = format!("{}-{suffix}", config.get_application_name().unwrap_or("sekisho"));
            config.application_name(&name);
        }
        config.connect_timeout(self.config.timeout);
        config.keepalives_idle(Duration::from_secs(10));
        let limit = self.config.timeout;
        match &self.tls {
            None => {
                let (client, conn) =
                    tokio::time::timeout(limit, config.connect(NoTls)).await.map_err(|_| self.late())??;
                Ok((client, tokio::spawn(drive(conn, wake))))
            }
            Some(tls) => {
                let (client, conn) =
                    tokio::time::timeout(limit, config.connect(tls.clone())).await.map_err(|_| self.late())??;
                Ok((client, tokio::spawn(drive(conn, wake))))
            }
        }
    }

    /// One `LISTEN` connection until it breaks or `shutdown`: wakes the
    /// follower once it listens (to read what was missed meanwhile) and at
    /// each notification.
    async fn listen_once(&self, wake: &Arc<Wake>, shutdown: &mut watch::Receiver<bool>) -> Result<(), StoreError> {
        let (client, driver) = self.connect_driven(Some("listener"), Some(wake.clone())).await?;
        tokio::time::timeout(self.config.timeout, client.batch_execute(&format!("LISTEN {CHANNEL}")))
            .await
            .map_err(|_| self.late())??;
        wake.ring();
        tokio::select! {
            _ = driver => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
        drop(client);
        Ok(())
    }
}

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[async_trait]
impl Backend for PgStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    /// A million devices take seconds to read: the whole state has a longer deadline.
    async fn load(&self) -> Result<(State, Position), StoreError> {
        let limit = self.config.timeout.max(WHOLE_STATE);
        self.call(limit, |client| Box::pin(load::whole(client))).await
    }

    /// A bulk import writes many rows: the transaction before the commit
    /// has a millisecond more per device.
    async fn commit(&self, change: Change, audit: AuditEntry) -> Result<Committed, StoreError> {
        let limit = self.config.timeout;
        let devices = match &change {
            Change::ImportDevices(d) => d.len(),
            _ => 0,
        };
        let whole = limit + Duration::from_millis(u64::try_from(devices).unwrap_or(u64::MAX));
        self.call(whole, move |client| Box::pin(write::commit(client, change.clone(), audit.clone(), limit))).await
    }

    async fn record(&self, audit: AuditEntry) -> Result<(), StoreError> {
        self.call(self.config.timeout, move |client| Box::pin(write::record(client, audit.clone()))).await
    }

    async fn audit(&self, filter: AdminFilter) -> Result<Vec<AuditRecord>, StoreError> {
        self.call(self.config.timeout, move |client| Box::pin(load::audit(client, filter.clone()))).await
    }

    /// The whole trail is read: a long deadline, as for the state.
    async fn verify_audit_chain(&self) -> Result<Result<u64, i64>, StoreError> {
        self.call(self.config.timeout * 12, |client| Box::pin(load::verify_audit_chain(client))).await
    }

    async fn since(&self, at: Position) -> Result<Since, StoreError> {
        self.call(self.config.timeout, move |client| Box::pin(load::since(client, at))).await
    }

    /// Reconnects until `shutdown`; while it cannot, the follower's
    /// one-second rounds still read the change log.
    async fn listen(&self, wake: Arc<Wake>, mut shutdown: watch::Receiver<bool>) {
        let mut failing = false;
        while !*shutdown.borrow() {
            match self.listen_once(&wake, &mut shutdown).await {
                Ok(()) => {
                    failing = false;
                    if !*shutdown.borrow() {
                        log::warn!("the database closed the notification connection; reconnecting");
                    }
                }
                Err(e) if !failing => {
                    log::warn!("cannot listen for changes ({e}); retrying, the state is still read every second");
                    failing = true;
                }
                Err(_) => {}
            }
            wake.ring();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = shutdown.wait_for(|stop| *stop) => {}
            }
        }
    }
}

/// Drives a connection, waking `wake` at each notification, until it ends.
async fn drive<S, T>(mut conn: tokio_postgres::Connection<S, T>, wake: Option<Arc<Wake>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(n))) => {
                if let Some(wake) = &wake {
                    match carried(n.payload()) {
                        Some(c) => wake.carry(c),
                        None => wake.ring(),
                    }
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                log::debug!("database connection ended: {e}");
                return;
            }
            None => return,
        }
    }
}

/// The change a notification carries: `seq tag previous-tag json` (see
/// `write::notification`); `None` for a bare number or anything else.
fn carried(payload: &str) -> Option<Carried> {
    let mut parts = payload.splitn(4, ' ');
    let seq: i64 = parts.next()?.parse().ok()?;
    let tag: i64 = parts.next()?.parse().ok()?;
    let previous: i64 = parts.next()?.parse().ok()?;
    let change = serde_json::from_str(parts.next()?).ok()?;
    Some(Carried { before: Position { seq: seq - 1, tag: previous }, after: Position { seq, tag }, change })
}

/// The password from its file (first line) or variable, read at each
/// connection so it can be rotated without a restart.
fn read_password(source: &PasswordSource) -> Result<String, StoreError> {
    let password = match source {
        PasswordSource::File(path) => std::fs::read_to_string(path)
            .map_err(|e| StoreError::Unavailable(format!("cannot read the password file `{}`: {e}", path.display())))?,
        PasswordSource::Env(name) => std::env::var(name)
            .map_err(|_| StoreError::Unavailable(format!("the password variable `{name}` is not set")))?,
    };
    Ok(password.lines().next().unwrap_or_default().to_owned())
}

/// rustls verifying the database's certificate against `ca` (and its
/// name against the host connected to), with a client certificate if given.
fn tls_connector(
    ca: &std::path::Path,
    client: Option<&(std::path::PathBuf, std::path::PathBuf)>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    let bad = |what: &std::path::Path, e: &dyn std::fmt::Display| {
        StoreError::Unavailable(format!("database TLS: `{}`: {e}", what.display()))
    };
    let pem = std::fs::read(ca).map_err(|e| bad(ca, &e))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.map_err(|e| bad(ca, &e))?).map_err(|e| bad(ca, &e))?;
    }
    if roots.is_empty() {
        return Err(bad(ca, &"no certificate in the file"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(ca, &e))?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs = std::fs::read(cert).map_err(|e| bad(cert, &e))?;
            let certs = rustls_pemfile::certs(&mut certs.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(cert, &e))?;
            let key_pem = std::fs::read(key).map_err(|e| bad(key, &e))?;
            let key_der = rustls_pemfile::private_key(&mut key_pem.as_slice())
                .map_err(|e| bad(key, &e))?
                .ok_or_else(|| bad(key, &"no private key in the file"))?;
            builder.with_client_auth_cert(certs, key_der).map_err(|e| bad(cert, &e))?
        }
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}
