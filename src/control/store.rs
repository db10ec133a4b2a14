//! The durable state: SQLite in WAL mode with `synchronous = FULL`, so a
//! committed write survives `kill -9` and power loss. Owns the schema, the
//! loading of a full [`State`] at start-up, and applying one [`Change`]
//! both to disk (with its admin audit record, in one transaction) and to an
//! in-memory state. It must never be called from the request path.

use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use sekisho_policy::device::{DeviceKey, DeviceStatus};
use sekisho_policy::state::{
    AppStage, Device, Flag, Grantee, MaintenanceWindow, OvertimeGrant, PostureException, Review, SecuritySoftware,
    State, Stop, User,
};
use serde::{Deserialize, Serialize};

/// One committed mutation of the state. Serialised (JSON) it is also the
/// entry of the PostgreSQL change log that replicas follow, so every
/// variant must round-trip through serde.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    /// Create a user, or update name, role, profiles, department and
    /// schedule (flags are kept).
    PutUser {
        id: String,
        display_name: String,
        role: String,
        profiles: Vec<String>,
        department: Option<String>,
        schedule: Option<String>,
    },
    SetFlag {
        user: String,
        kind: FlagKind,
        flag: Option<Flag>,
    },
    /// A new registration application (always `pending`).
    FileDevice(Box<Device>),
    /// Devices registered in bulk by a system manager (approved).
    ImportDevices(Vec<Device>),
    /// A client certificate was issued to the device (SHA-256 of its DER);
    /// a renewal keeps the one it replaces valid until that expires.
    SetDeviceCert {
        id: String,
        sha256: [u8; 32],
        renewal: bool,
    },
    /// A decision on a registration. An approval may record an exception
    /// to the profiles' minimums (熊本 第12条第2項); a revoked device is
    /// never approved again (第17条: a new application with a new key).
    SetDeviceStatus {
        id: String,
        status: DeviceStatus,
        exception: Option<PostureException>,
    },
    /// The device's agent reported its posture (`iat` of the report, which
    /// must be newer than the last accepted one).
    SetDevicePosture {
        id: String,
        os: sekisho_policy::device::Os,
        os_version: sekisho_policy::device::Version,
        security_software: Option<sekisho_policy::state::SecuritySoftware>,
        reported_at: i64,
    },
    SetStop {
        profile: Option<String>,
        stop: Option<Stop>,
    },
    AddGrant(OvertimeGrant),
    RemoveGrant(i64),
    AddMaintenance(MaintenanceWindow),
    RemoveMaintenance(i64),
    /// An app registered as in development or in operation (Abiko 10.).
    SetAppStage(AppStage),
    /// A review recorded in the register (id assigned on commit).
    AddReview(Review),
    RemoveReview(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagKind {
    Suspended,
    Restricted,
}

/// The admin audit record written in the same transaction as its change.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub time: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    /// Never empty: the caller's reason, or one the API derived ("created").
    pub reason: String,
    pub source: String,
    /// Who approved the action, where an article asks for it (a rules
    /// revision: Abiko 13. 統括情報責任者; overtime: the 所属長).
    pub approver: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: i64,
    #[serde(flatten)]
    pub entry: AuditEntryOwned,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AuditEntryOwned {
    pub time: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub reason: String,
    pub source: String,
    pub approver: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("state store: row `{0}` is corrupt: {1}")]
    Corrupt(String, String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("state store: {}", with_causes(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// The database did not answer in time, or the connection was lost.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// The connection was lost while the commit was under way: the change
    /// may or may not be durable.
    #[error("state store: the commit's outcome is unknown ({0}); check the audit trail before repeating it")]
    Uncertain(String),
    #[error("state store schema: {0}")]
    Schema(String),
    #[error("state store lock poisoned")]
    Poisoned,
    /// Every admin record names a reason (Abiko 13.); a write without one is a bug.
    #[error("admin action `{0}` has no reason; nothing was written")]
    NoReason(String),
}

/// An error and its causes on one line (`error performing TLS handshake:
/// invalid peer certificate: UnknownIssuer`).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The SQLite store. The connection is behind a mutex because only the
/// admin API writes, one change at a time.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY, display_name TEXT NOT NULL, role TEXT NOT NULL, profiles TEXT NOT NULL,
    department TEXT, schedule TEXT
);
CREATE TABLE IF NOT EXISTS flags (
    user_id TEXT NOT NULL REFERENCES users(id), kind TEXT NOT NULL, reason TEXT NOT NULL,
    since TEXT NOT NULL, until TEXT, PRIMARY KEY (user_id, kind)
);
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL REFERENCES users(id), kind TEXT NOT NULL,
    ownership TEXT NOT NULL, os TEXT NOT NULL, os_version TEXT NOT NULL,
    security_software TEXT, security_updated TEXT, key_alg TEXT NOT NULL, public_key TEXT NOT NULL,
    status TEXT NOT NULL, cert_sha256 TEXT, posture_at INTEGER, exception_reason TEXT, exception_by TEXT,
    prev_cert_sha256 TEXT
);
CREATE TABLE IF NOT EXISTS stops (scope TEXT PRIMARY KEY, reason TEXT NOT NULL, since TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS overtime (
    id INTEGER PRIMARY KEY, user_id TEXT REFERENCES users(id), department TEXT, profile TEXT,
    approver TEXT NOT NULL, reason TEXT NOT NULL, start TEXT NOT NULL, end TEXT NOT NULL,
    CHECK ((user_id IS NULL) <> (department IS NULL))
);
CREATE TABLE IF NOT EXISTS maintenance (
    id INTEGER PRIMARY KEY, profile TEXT, reason TEXT NOT NULL, start TEXT NOT NULL, end TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS app_stages (
    profile TEXT NOT NULL, app INTEGER NOT NULL, stage TEXT NOT NULL, reason TEXT NOT NULL, since TEXT NOT NULL,
    PRIMARY KEY (profile, app)
);
CREATE TABLE IF NOT EXISTS app_reviews (
    id INTEGER PRIMARY KEY, profile TEXT NOT NULL, app INTEGER NOT NULL, subject TEXT NOT NULL,
    token_sha256 TEXT, reviewer TEXT NOT NULL, reviewed_on TEXT NOT NULL, note TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS admin_audit (
    id INTEGER PRIMARY KEY, time TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    target TEXT NOT NULL, reason TEXT NOT NULL, source TEXT NOT NULL, approver TEXT
);
"#;

/// A revoked device registered with this key, if any (熊本 第17条).
const REVOKED_WITH_KEY: &str = "SELECT id FROM devices WHERE public_key = ?1 AND status = 'revoked'";

/// Only revoked devices, so the lookup stays small even when many devices
/// share a key (a bulk import of test devices does).
const DEVICES_BY_KEY: &str =
    "CREATE INDEX IF NOT EXISTS revoked_devices_by_key ON devices (public_key) WHERE status = 'revoked';";

/// Columns added after the first release: (table, column, type).
const MIGRATIONS: &[(&str, &str, &str)] = &[
    ("devices", "cert_sha256", "TEXT"),
    ("devices", "posture_at", "INTEGER"),
    ("admin_audit", "approver", "TEXT"),
    ("admin_audit", "chain", "TEXT"),
    ("devices", "exception_reason", "TEXT"),
    ("devices", "exception_by", "TEXT"),
    ("users", "department", "TEXT"),
    ("users", "schedule", "TEXT"),
    ("devices", "prev_cert_sha256", "TEXT"),
];

/// Stores before department grants had `overtime.user_id NOT NULL`: the
/// table is rebuilt (SQLite cannot relax a constraint in place), ids kept.
const OVERTIME_V2: &str = r#"
BEGIN;
CREATE TABLE overtime_v2 (
    id INTEGER PRIMARY KEY, user_id TEXT REFERENCES users(id), department TEXT, profile TEXT,
    approver TEXT NOT NULL, reason TEXT NOT NULL, start TEXT NOT NULL, end TEXT NOT NULL,
    CHECK ((user_id IS NULL) <> (department IS NULL))
);
INSERT INTO overtime_v2 (id, user_id, profile, approver, reason, start, end)
    SELECT id, user_id, profile, approver, reason, start, end FROM overtime;
DROP TABLE overtime;
ALTER TABLE overtime_v2 RENAME TO overtime;
COMMIT;
"#;

/// The scope key of the global emergency stop in the `stops` table.
pub(crate) const GLOBAL: &str = "*";

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        // Stores created by earlier versions lack these columns.
        for (table, column, kind) in MIGRATIONS {
            let has: bool = conn
                .prepare(&format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"))?
                .exists([column])?;
            if !has {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))?;
            }
        }
        let grants_v2: bool =
            conn.prepare("SELECT 1 FROM pragma_table_info('overtime') WHERE name = 'department'")?.exists([])?;
        if !grants_v2 {
            conn.execute_batch(OVERTIME_V2)?;
        }
        // Every registration looks for a revoked device with the same key
        // (熊本 第17条): without an index a bulk import is quadratic.
        conn.execute_batch(DEVICES_BY_KEY)?;
        chain_unchained(&mut conn)?;
        Ok(Store { conn: Arc::new(Mutex::new(conn)) })
    }

    /// Opens an existing store read only, without creating or migrating
    /// anything (`sekisho doctor`, run by an operator beside the gateway).
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Store { conn: Arc::new(Mutex::new(conn)) })
    }

    /// Runs `work` on the connection (`store copy` reads every table).
    pub(crate) fn with_conn<T>(&self, work: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        Ok(work(&*self.lock()?)?)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Connection>, StoreError> {
        self.conn.lock().map_err(|_| StoreError::Poisoned)
    }

    /// SQLite's `data_version`: it changes when another connection (another
    /// process) commits. Reading it also proves the store is readable.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        let conn = self.lock()?;
        let version = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        conn.query_row("SELECT count(*) FROM (SELECT 1 FROM users LIMIT 1)", [], |r| r.get::<_, i64>(0))?;
        Ok(version)
    }

    /// Reads the whole state, as at start-up.
    pub fn load(&self) -> Result<State, StoreError> {
        self.load_versioned().map(|(state, _)| state)
    }

    /// The whole state and the `data_version` it is at least as new as.
    pub fn load_versioned(&self) -> Result<(State, i64), StoreError> {
        let conn = self.lock()?;
        let version = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        Ok((load_state(&conn)?, version))
    }

    /// Writes `change` and its audit record in one durable transaction and
    /// returns the change with any ids the database assigned.
    pub fn commit(&self, change: Change, audit: &AuditEntry) -> Result<Change, StoreError> {
        require_reason(audit)?;
        let mut conn = self.lock()?;
        let tx = conn.transaction()?;
        let change = write_change(&tx, change)?;
        insert_audit(&tx, audit)?;
        tx.commit()?;
        Ok(change)
    }

    /// Records an admin action that changes no state (a rules reload).
    pub fn record(&self, audit: &AuditEntry) -> Result<(), StoreError> {
        require_reason(audit)?;
        let mut conn = self.lock()?;
        let tx = conn.transaction()?;
        insert_audit(&tx, audit)?;
        tx.commit()?;
        Ok(())
    }

    /// Walks the admin records' hash chain in id order. Returns how many
    /// records were checked, or the first record whose hash does not follow
    /// from the one before it (changed, removed before it, or inserted).
    pub fn verify_audit_chain(&self) -> Result<Result<u64, i64>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare(
            "SELECT id, time, actor, action, target, reason, source, approver, chain FROM admin_audit ORDER BY id",
        )?;
        let mut rows = stmt.query([])?;
        let (mut prev, mut n) = (crate::control::chain::GENESIS, 0u64);
        while let Some(r) = rows.next()? {
            let (id, fields, approver, stated) = audit_row(r)?;
            let link = crate::control::chain::admin_link(
                &prev,
                id,
                fields.each_ref().map(String::as_str),
                approver.as_deref(),
            );
            if stated.as_deref().and_then(crate::config::decode_sha256) != Some(link) {
                return Ok(Err(id));
            }
            (prev, n) = (link, n + 1);
        }
        Ok(Ok(n))
    }

    /// Admin audit records matching `filter`, newest first.
    pub fn audit(&self, filter: &AdminFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare(
            "SELECT id, time, actor, action, target, reason, source, approver FROM admin_audit
             WHERE (?1 IS NULL OR target = ?1) AND (?2 IS NULL OR action = ?2) AND (?3 IS NULL OR actor = ?3)
               AND (?4 IS NULL OR time >= ?4) AND (?5 IS NULL OR time < ?5)
             ORDER BY id DESC LIMIT ?6 OFFSET ?7",
        )?;
        // Times are stored as RFC 3339 in UTC, which sort as they read.
        let utc = |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false));
        let f = filter;
        let args = params![f.target, f.action, f.actor, utc(f.since), utc(f.until), f.limit, f.skip];
        let rows = stmt.query_map(args, |r| {
            Ok(AuditRecord {
                id: r.get(0)?,
                entry: AuditEntryOwned {
                    time: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    reason: r.get(5)?,
                    source: r.get(6)?,
                    approver: r.get(7)?,
                },
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

/// Which admin audit records to read (every field given must match).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminFilter {
    pub target: Option<String>,
    pub action: Option<String>,
    /// Who acted (the admin's name).
    pub actor: Option<String>,
    /// From this instant, inclusive.
    pub since: Option<DateTime<Utc>>,
    /// Until this instant, exclusive.
    pub until: Option<DateTime<Utc>>,
    /// Newer matches to pass over (paging).
    pub skip: u32,
    pub limit: u32,
}

pub(crate) fn require_reason(audit: &AuditEntry) -> Result<(), StoreError> {
    match audit.reason.trim().is_empty() {
        true => Err(StoreError::NoReason(audit.action.clone())),
        false => Ok(()),
    }
}

/// Inserts an admin record chained to the last one (same transaction as its change).
fn insert_audit(tx: &rusqlite::Transaction<'_>, audit: &AuditEntry) -> Result<(), StoreError> {
    let prev: Option<String> =
        tx.query_row("SELECT chain FROM admin_audit ORDER BY id DESC LIMIT 1", [], |r| r.get(0)).optional()?.flatten();
    let prev = prev.as_deref().and_then(crate::config::decode_sha256).unwrap_or(crate::control::chain::GENESIS);
    let time = audit.time.to_rfc3339();
    tx.execute(
        "INSERT INTO admin_audit (time, actor, action, target, reason, source, approver)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![time, audit.actor, audit.action, audit.target, audit.reason, audit.source, audit.approver],
    )?;
    let id = tx.last_insert_rowid();
    let fields = [time.as_str(), &audit.actor, &audit.action, &audit.target, &audit.reason, &audit.source];
    let link = crate::control::chain::admin_link(&prev, id, fields, audit.approver.as_deref());
    tx.execute("UPDATE admin_audit SET chain = ?2 WHERE id = ?1", params![id, crate::config::hex(&link)])?;
    Ok(())
}

/// Records written before the chain existed are chained once, in id order,
/// when an older store is opened (the chain then vouches for them from
/// that moment on, not from when they were written).
fn chain_unchained(conn: &mut Connection) -> Result<(), StoreError> {
    let unchained: i64 = conn.query_row("SELECT count(*) FROM admin_audit WHERE chain IS NULL", [], |r| r.get(0))?;
    if unchained == 0 {
        return Ok(());
    }
    let tx = conn.transaction()?;
    let mut links = Vec::new();
    {
        let mut stmt = tx.prepare(
            "SELECT id, time, actor, action, target, reason, source, approver, chain FROM admin_audit ORDER BY id",
        )?;
        let mut rows = stmt.query([])?;
        let mut prev = crate::control::chain::GENESIS;
        while let Some(r) = rows.next()? {
            let (id, fields, approver, stated) = audit_row(r)?;
            prev = match stated.as_deref().and_then(crate::config::decode_sha256) {
                Some(kept) => kept,
                None => {
                    let fields = fields.each_ref().map(String::as_str);
                    let link = crate::control::chain::admin_link(&prev, id, fields, approver.as_deref());
                    links.push((id, link));
                    link
                }
            };
        }
    }
    for (id, link) in links {
        tx.execute("UPDATE admin_audit SET chain = ?2 WHERE id = ?1", params![id, crate::config::hex(&link)])?;
    }
    tx.commit()?;
    log::warn!("admin audit: {unchained} record(s) written before the hash chain were chained now");
    Ok(())
}

type AuditRow = (i64, [String; 6], Option<String>, Option<String>);

fn audit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRow> {
    Ok((r.get(0)?, [r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?], r.get(7)?, r.get(8)?))
}

fn write_change(tx: &rusqlite::Transaction<'_>, change: Change) -> Result<Change, StoreError> {
    match &change {
        Change::PutUser { id, display_name, role, profiles, department, schedule } => {
            let profiles =
                serde_json::to_string(profiles).map_err(|e| StoreError::Corrupt(id.clone(), e.to_string()))?;
            tx.execute(
                "INSERT INTO users (id, display_name, role, profiles, department, schedule) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(id) DO UPDATE SET display_name = ?2, role = ?3, profiles = ?4, department = ?5, schedule = ?6",
                params![id, display_name, role, profiles, department, schedule],
            )?;
        }
        Change::SetFlag { user, kind, flag } => {
            require_user(tx, user)?;
            let kind_s = flag_kind(*kind);
            match flag {
                Some(f) => tx.execute(
                    "INSERT INTO flags (user_id, kind, reason, since, until) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(user_id, kind) DO UPDATE SET reason = ?3, since = ?4, until = ?5",
                    params![user, kind_s, f.reason, f.since.to_rfc3339(), f.until.map(|u| u.to_rfc3339())],
                )?,
                None => tx.execute("DELETE FROM flags WHERE user_id = ?1 AND kind = ?2", params![user, kind_s])?,
            };
        }
        Change::FileDevice(d) => insert_device(tx, d)?,
        Change::ImportDevices(devices) => {
            for d in devices {
                insert_device(tx, d)?;
            }
        }
        Change::SetDeviceCert { id, sha256, renewal } => {
            // Approved now, in the store: another replica may have revoked it.
            let sql = match renewal {
                true => "UPDATE devices SET prev_cert_sha256 = cert_sha256, cert_sha256 = ?2 WHERE id = ?1 AND status = 'approved'",
                false => "UPDATE devices SET prev_cert_sha256 = NULL, cert_sha256 = ?2 WHERE id = ?1 AND status = 'approved'",
            };
            let n = tx.execute(sql, params![id, crate::config::hex(sha256)])?;
            if n == 0 {
                return Err(device_refusal(id, device_status(tx, id)?, "a certificate"));
            }
        }
        Change::SetDeviceStatus { id, status, exception } => set_device_status(tx, id, *status, exception.as_ref())?,
        Change::SetDevicePosture { id, os, os_version, security_software, reported_at } => {
            let n = tx.execute(
                "UPDATE devices SET os = ?2, os_version = ?3, security_software = ?4, security_updated = ?5, posture_at = ?6
                 WHERE id = ?1 AND status = 'approved' AND (posture_at IS NULL OR posture_at < ?6)",
                params![
                    id,
                    os.as_str(),
                    os_version.to_string(),
                    security_software.as_ref().map(|s| s.name.clone()),
                    security_software.as_ref().map(|s| s.updated.to_string()),
                    reported_at
                ],
            )?;
            if n == 0 {
                return Err(device_refusal(id, device_status(tx, id)?, "a posture report"));
            }
        }
        Change::SetStop { profile, stop } => {
            let scope = profile.as_deref().unwrap_or(GLOBAL);
            match stop {
                Some(s) => tx.execute(
                    "INSERT INTO stops (scope, reason, since) VALUES (?1, ?2, ?3) ON CONFLICT(scope) DO UPDATE SET reason = ?2, since = ?3",
                    params![scope, s.reason, s.since.to_rfc3339()],
                )?,
                None => tx.execute("DELETE FROM stops WHERE scope = ?1", [scope])?,
            };
        }
        Change::AddGrant(g) => {
            let (user, department) = match &g.grantee {
                Grantee::User(u) => {
                    require_user(tx, u)?;
                    (Some(u), None)
                }
                Grantee::Department(d) => (None, Some(d)),
            };
            tx.execute(
                "INSERT INTO overtime (user_id, department, profile, approver, reason, start, end)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![user, department, g.profile, g.approver, g.reason, g.start.to_rfc3339(), g.end.to_rfc3339()],
            )?;
            return Ok(Change::AddGrant(OvertimeGrant { id: tx.last_insert_rowid(), ..g.clone() }));
        }
        Change::RemoveGrant(id) => {
            if tx.execute("DELETE FROM overtime WHERE id = ?1", [id])? == 0 {
                return Err(StoreError::NotFound(format!("overtime grant `{id}` does not exist")));
            }
        }
        Change::AddMaintenance(m) => {
            tx.execute(
                "INSERT INTO maintenance (profile, reason, start, end) VALUES (?1, ?2, ?3, ?4)",
                params![m.profile, m.reason, m.start.to_rfc3339(), m.end.to_rfc3339()],
            )?;
            return Ok(Change::AddMaintenance(MaintenanceWindow { id: tx.last_insert_rowid(), ..m.clone() }));
        }
        Change::RemoveMaintenance(id) => {
            if tx.execute("DELETE FROM maintenance WHERE id = ?1", [id])? == 0 {
                return Err(StoreError::NotFound(format!("maintenance window `{id}` does not exist")));
            }
        }
        Change::SetAppStage(s) => {
            tx.execute(
                "INSERT INTO app_stages (profile, app, stage, reason, since) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(profile, app) DO UPDATE SET stage = ?3, reason = ?4, since = ?5",
                params![s.profile, app_id(s.app)?, enum_text(&s.stage)?, s.reason, s.since.to_rfc3339()],
            )?;
        }
        Change::AddReview(r) => {
            tx.execute(
                "INSERT INTO app_reviews (profile, app, subject, token_sha256, reviewer, reviewed_on, note)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    r.profile,
                    app_id(r.app)?,
                    r.subject.as_str(),
                    r.token_sha256,
                    r.reviewer,
                    r.reviewed_on.to_string(),
                    r.note
                ],
            )?;
            return Ok(Change::AddReview(Review { id: tx.last_insert_rowid(), ..r.clone() }));
        }
        Change::RemoveReview(id) => {
            if tx.execute("DELETE FROM app_reviews WHERE id = ?1", [id])? == 0 {
                return Err(StoreError::NotFound(format!("review `{id}` does not exist")));
            }
        }
    }
    Ok(change)
}

/// kintone app ids fit SQLite's signed integers; a larger one is refused.
pub(crate) fn app_id(app: u64) -> Result<i64, StoreError> {
    i64::try_from(app).map_err(|_| StoreError::Conflict(format!("app `{app}` is out of range")))
}

/// A snake_case enum as its serde name.
pub(crate) fn enum_text<T: Serialize>(value: &T) -> Result<String, StoreError> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        _ => Err(StoreError::Corrupt("enum".into(), "not a name".into())),
    }
}

/// A snake_case name back into its enum.
fn enum_from<T: serde::de::DeserializeOwned>(key: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| StoreError::Corrupt(key.to_owned(), format!("`{text}`")))
}

fn set_device_status(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    status: DeviceStatus,
    exception: Option<&PostureException>,
) -> Result<(), StoreError> {
    status_transition(id, device_status(tx, id)?.as_deref(), status)?;
    if status == DeviceStatus::Approved {
        tx.execute(
            "UPDATE devices SET status = ?2, exception_reason = ?3, exception_by = ?4 WHERE id = ?1",
            params![id, status.as_str(), exception.map(|e| &e.reason), exception.map(|e| &e.approver)],
        )?;
    } else {
        tx.execute("UPDATE devices SET status = ?2 WHERE id = ?1", params![id, status.as_str()])?;
    }
    Ok(())
}

/// Whether a device whose stored status is `current` may become `next`:
/// both backends ask this inside their transaction, of the row as it is now.
pub(crate) fn status_transition(id: &str, current: Option<&str>, next: DeviceStatus) -> Result<(), StoreError> {
    match current {
        None => Err(StoreError::NotFound(format!("device `{id}` is not registered"))),
        Some("revoked") if next != DeviceStatus::Revoked => Err(StoreError::Conflict(format!(
            "device `{id}` was revoked (lost, stolen or compromised); it needs a new application with a new key"
        ))),
        Some(_) => Ok(()),
    }
}

/// The error for a device that a revoked one's key would register again.
pub(crate) fn revoked_key(id: &str, old: &str) -> StoreError {
    StoreError::Conflict(format!(
        "device `{id}` presents the key of revoked device `{old}`; generate a new key (`sekisho agent keygen`)"
    ))
}

/// The error for a device id already registered.
pub(crate) fn taken(id: &str) -> StoreError {
    StoreError::Conflict(format!(
        "device `{id}` is already registered; a changed device is a new application with a new id"
    ))
}

fn device_status(tx: &rusqlite::Transaction<'_>, id: &str) -> Result<Option<String>, StoreError> {
    Ok(tx.query_row("SELECT status FROM devices WHERE id = ?1", [id], |r| r.get(0)).optional()?)
}

/// Why an update of an approved device's record touched no row, from the
/// device's status as the store has it now: unknown, not approved, or (for
/// posture) a report as new or newer already accepted.
pub(crate) fn device_refusal(id: &str, status: Option<String>, what: &str) -> StoreError {
    match status.as_deref() {
        None => StoreError::NotFound(format!("device `{id}` is not registered")),
        Some("approved") => StoreError::Conflict(format!("device `{id}` already has a report as new or newer")),
        Some(other) => StoreError::Conflict(format!("device `{id}` is `{other}`, not approved: {what} is refused")),
    }
}

/// Inserts one device; an id already registered is a conflict, and so is
/// the key of a revoked device (第17条: a lost device's key is never trusted again).
fn insert_device(tx: &rusqlite::Transaction<'_>, d: &Device) -> Result<(), StoreError> {
    require_user(tx, &d.owner)?;
    let revoked: Option<String> = tx.query_row(REVOKED_WITH_KEY, [d.key.to_b64()], |r| r.get(0)).optional()?;
    if let Some(old) = revoked {
        return Err(revoked_key(&d.id, &old));
    }
    let exists: Option<String> =
        tx.query_row("SELECT id FROM devices WHERE id = ?1", [&d.id], |r| r.get(0)).optional()?;
    if exists.is_some() {
        return Err(taken(&d.id));
    }
    tx.execute(
                "INSERT INTO devices (id, owner, kind, ownership, os, os_version, security_software, security_updated, key_alg, public_key, status)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    d.id,
                    d.owner,
                    d.kind.as_str(),
                    d.ownership.as_str(),
                    d.os.as_str(),
                    d.os_version.to_string(),
                    d.security_software.as_ref().map(|s| s.name.clone()),
                    d.security_software.as_ref().map(|s| s.updated.to_string()),
                    d.key.alg(),
                    d.key.to_b64(),
                    d.status.as_str()
                ],
            )?;
    Ok(())
}

fn require_user(tx: &rusqlite::Transaction<'_>, user: &str) -> Result<(), StoreError> {
    let found: Option<String> = tx.query_row("SELECT id FROM users WHERE id = ?1", [user], |r| r.get(0)).optional()?;
    found.map(|_| ()).ok_or_else(|| StoreError::NotFound(format!("user `{user}` does not exist")))
}

pub(crate) fn flag_kind(kind: FlagKind) -> &'static str {
    match kind {
        FlagKind::Suspended => "suspended",
        FlagKind::Restricted => "restricted",
    }
}

/// Applies a committed change to an in-memory state, copying only the
/// table it touches. `Store::load` after the same commits yields the same state.
pub fn apply(state: &State, change: &Change) -> State {
    let mut next = state.clone();
    apply_mut(&mut next, change);
    next
}

/// [`apply`] in place, for a run of changes read from the change log.
pub fn apply_mut(next: &mut State, change: &Change) {
    match change {
        Change::PutUser { id, display_name, role, profiles, department, schedule } => {
            let users = &mut next.users;
            let (suspended, restricted) =
                users.get(id).map(|u| (u.suspended.clone(), u.restricted.clone())).unwrap_or_default();
            let user = User {
                id: id.clone(),
                display_name: display_name.clone(),
                role: role.clone(),
                profiles: profiles.clone(),
                suspended,
                restricted,
                department: department.clone(),
                schedule: schedule.clone(),
            };
            users.insert(id.clone(), Arc::new(user));
        }
        Change::SetFlag { user, kind, flag } => {
            if let Some(u) = next.users.get_mut(user).map(Arc::make_mut) {
                match kind {
                    FlagKind::Suspended => u.suspended = flag.clone(),
                    FlagKind::Restricted => u.restricted = flag.clone(),
                }
            }
        }
        Change::FileDevice(d) => {
            next.devices.insert(d.id.clone(), Arc::new((**d).clone()));
        }
        Change::ImportDevices(devices) => {
            for d in devices {
                next.devices.insert(d.id.clone(), Arc::new(d.clone()));
            }
        }
        Change::SetDeviceStatus { id, status, exception } => {
            if let Some(d) = next.devices.get_mut(id).map(Arc::make_mut) {
                d.status = *status;
                if *status == DeviceStatus::Approved {
                    d.exception.clone_from(exception);
                }
            }
        }
        Change::SetDevicePosture { id, os, os_version, security_software, .. } => {
            if let Some(d) = next.devices.get_mut(id).map(Arc::make_mut) {
                (d.os, d.os_version, d.security_software) = (*os, *os_version, security_software.clone());
            }
        }
        Change::SetDeviceCert { id, sha256, renewal } => {
            if let Some(d) = next.devices.get_mut(id).map(Arc::make_mut) {
                let certs = &mut next.certificates;
                let old = d.certificate.replace(*sha256);
                if let Some(p) = d.previous_certificate.take() {
                    certs.remove(&p);
                }
                match (renewal, old) {
                    // The replaced certificate keeps proving the device until it expires.
                    (true, old) => d.previous_certificate = old,
                    (false, Some(o)) => drop(certs.remove(&o)),
                    (false, None) => {}
                }
                certs.insert(*sha256, id.clone());
            }
        }
        Change::SetStop { profile, stop } => {
            let stops = Arc::make_mut(&mut next.stops);
            match (profile, stop) {
                (None, s) => stops.global = s.clone(),
                (Some(p), Some(s)) => drop(stops.profiles.insert(p.clone(), s.clone())),
                (Some(p), None) => drop(stops.profiles.remove(p)),
            }
        }
        Change::AddGrant(g) => Arc::make_mut(&mut next.overtime).entry(g.grantee.clone()).or_default().push(g.clone()),
        Change::RemoveGrant(id) => {
            for grants in Arc::make_mut(&mut next.overtime).values_mut() {
                grants.retain(|g| g.id != *id);
            }
            Arc::make_mut(&mut next.overtime).retain(|_, g| !g.is_empty());
        }
        Change::AddMaintenance(m) => Arc::make_mut(&mut next.maintenance).push(m.clone()),
        Change::RemoveMaintenance(id) => Arc::make_mut(&mut next.maintenance).retain(|m| m.id != *id),
        Change::SetAppStage(s) => {
            Arc::make_mut(&mut next.apps).stages.insert((s.profile.clone(), s.app), s.clone());
        }
        Change::AddReview(r) => Arc::make_mut(&mut next.apps).reviews.push(r.clone()),
        Change::RemoveReview(id) => Arc::make_mut(&mut next.apps).reviews.retain(|r| r.id != *id),
    }
}

fn load_state(conn: &Connection) -> Result<State, StoreError> {
    let mut rows = StateRows::default();
    let mut stmt = conn.prepare("SELECT id, display_name, role, profiles, department, schedule FROM users")?;
    let mut q = stmt.query([])?;
    while let Some(r) = q.next()? {
        rows.user(r.get(0)?, r.get(1)?, r.get(2)?, &r.get::<_, String>(3)?, r.get(4)?, r.get(5)?)?;
    }
    let mut stmt = conn.prepare("SELECT user_id, kind, reason, since, until FROM flags")?;
    let mut q = stmt.query([])?;
    while let Some(r) = q.next()? {
        rows.flag(r.get(0)?, &r.get::<_, String>(1)?, r.get(2)?, &r.get::<_, String>(3)?, r.get(4)?)?;
    }
    let mut stmt = conn.prepare(&format!("SELECT {DEVICE_COLUMNS} FROM devices"))?;
    let mut q = stmt.query([])?;
    while let Some(r) = q.next()? {
        let text = |i: usize| r.get::<_, String>(i);
        rows.device(DeviceText {
            id: text(0)?,
            owner: text(1)?,
            fields: [text(2)?, text(3)?, text(4)?, text(5)?, text(8)?, text(9)?, text(10)?],
            security_software: (r.get(6)?, r.get(7)?),
            certificates: (r.get(11)?, r.get(14)?),
            exception: (r.get(12)?, r.get(13)?),
        })?;
    }
    let mut stmt = conn.prepare("SELECT scope, reason, since FROM stops")?;
    let mut q = stmt.query([])?;
    while let Some(r) = q.next()? {
        rows.stop(r.get(0)?, r.get(1)?, &r.get::<_, String>(2)?)?;
    }
    let mut stmt =
        conn.prepare("SELECT id, user_id, department, profile, approver, reason, start, end FROM overtime")?;
    let mut q = stmt.query([])?;
    while let Some(r) = q.next()? {
        rows.grant(GrantText {
            id: r.get(0)?,
            user: r.get(1)?,
            department: r.get(2)?,
            profile: r.get(3)?,
            approver: r.get(4)?,
            reason: r.get(5)?,
            times: [r.get(6)?, r.get(7)?],
        })?;
    }
    let mut stmt = conn.prepare("SELECT id, profile, reason, start, end FROM maintenance")?;
    let mut q = stmt.query([])?;
    while let Some(r) = q.next()? {
        rows.maintenance(r.get(0)?, r.get(1)?, r.get(2)?, &[r.get::<_, String>(3)?, r.get::<_, String>(4)?])?;
    }
    let mut stmt = conn.prepare("SELECT profile, app, stage, reason, since FROM app_stages")?;
    let mut q = stmt.query([])?;
    while let Some(r) = q.next()? {
        rows.app_stage(r.get(0)?, r.get(1)?, &r.get::<_, String>(2)?, r.get(3)?, &r.get::<_, String>(4)?)?;
    }
    let mut stmt = conn.prepare(&format!("SELECT {REVIEW_COLUMNS} FROM app_reviews ORDER BY id"))?;
    let mut q = stmt.query([])?;
    while let Some(r) = q.next()? {
        rows.review(ReviewText {
            id: r.get(0)?,
            profile: r.get(1)?,
            app: r.get(2)?,
            subject: r.get(3)?,
            token_sha256: r.get(4)?,
            reviewer: r.get(5)?,
            reviewed_on: r.get(6)?,
            note: r.get(7)?,
        })?;
    }
    Ok(rows.state)
}

/// The columns of `devices` in the order [`DeviceText`] is read from, in
/// both backends.
pub(crate) const DEVICE_COLUMNS: &str = "id, owner, kind, ownership, os, os_version, security_software, \
     security_updated, key_alg, public_key, status, cert_sha256, exception_reason, exception_by, prev_cert_sha256";

/// The columns of `app_reviews` in the order [`ReviewText`] is read from.
pub(crate) const REVIEW_COLUMNS: &str = "id, profile, app, subject, token_sha256, reviewer, reviewed_on, note";

/// A state assembled from the stores' rows, which both backends keep as
/// the same text: parsing them is one piece of code for both.
#[derive(Default)]
pub(crate) struct StateRows {
    pub state: State,
}

/// A `devices` row as text: kind, ownership, os, os_version, key_alg,
/// public_key and status in `fields`; the certificate and the one a
/// renewal replaced; the exception's reason and approver.
pub(crate) struct DeviceText {
    pub id: String,
    pub owner: String,
    pub fields: [String; 7],
    pub security_software: (Option<String>, Option<String>),
    pub certificates: (Option<String>, Option<String>),
    pub exception: (Option<String>, Option<String>),
}

/// An `overtime` row: for one user or one department.
pub(crate) struct GrantText {
    pub id: i64,
    pub user: Option<String>,
    pub department: Option<String>,
    pub profile: Option<String>,
    pub approver: String,
    pub reason: String,
    pub times: [String; 2],
}

/// An `app_reviews` row.
pub(crate) struct ReviewText {
    pub id: i64,
    pub profile: String,
    pub app: i64,
    pub subject: String,
    pub token_sha256: Option<String>,
    pub reviewer: String,
    pub reviewed_on: String,
    pub note: String,
}

impl StateRows {
    pub fn user(
        &mut self,
        id: String,
        display_name: String,
        role: String,
        profiles: &str,
        department: Option<String>,
        schedule: Option<String>,
    ) -> Result<(), StoreError> {
        let profiles = serde_json::from_str(profiles).map_err(|e| StoreError::Corrupt(id.clone(), e.to_string()))?;
        let user = User {
            id: id.clone(),
            display_name,
            role,
            profiles,
            suspended: None,
            restricted: None,
            department,
            schedule,
        };
        self.state.users.insert(id, Arc::new(user));
        Ok(())
    }

    /// A flag of a user read earlier (one of an unknown user is ignored).
    pub fn flag(
        &mut self,
        user: String,
        kind: &str,
        reason: String,
        since: &str,
        until: Option<String>,
    ) -> Result<(), StoreError> {
        let flag = Flag { reason, since: time(&user, since)?, until: until.map(|u| time(&user, &u)).transpose()? };
        if let Some(u) = self.state.users.get_mut(&user).map(Arc::make_mut) {
            match kind {
                "suspended" => u.suspended = Some(flag),
                "restricted" => u.restricted = Some(flag),
                other => return Err(StoreError::Corrupt(user, format!("unknown flag kind `{other}`"))),
            }
        }
        Ok(())
    }

    pub fn device(&mut self, row: DeviceText) -> Result<(), StoreError> {
        let fingerprint = |c: Option<String>| match c.map(|c| crate::config::decode_sha256(&c)) {
            None => Ok(None),
            Some(Some(fp)) => Ok(Some(fp)),
            Some(None) => Err(StoreError::Corrupt(row.id.clone(), "cert_sha256".into())),
        };
        let certificate = fingerprint(row.certificates.0)?;
        let previous_certificate = fingerprint(row.certificates.1)?;
        let exception = match row.exception {
            (Some(reason), Some(approver)) => Some(PostureException { reason, approver }),
            _ => None,
        };
        let f = &row.fields;
        let fields = [&*f[0], &*f[1], &*f[2], &*f[3], &*f[4], &*f[5], &*f[6]];
        let device = Device {
            certificate,
            previous_certificate,
            exception,
            ..parse_device(row.id, row.owner, fields, row.security_software)?
        };
        for fp in certificate.into_iter().chain(previous_certificate) {
            self.state.certificates.insert(fp, device.id.clone());
        }
        self.state.devices.insert(device.id.clone(), Arc::new(device));
        Ok(())
    }

    pub fn stop(&mut self, scope: String, reason: String, since: &str) -> Result<(), StoreError> {
        let stop = Stop { reason, since: time(&scope, since)? };
        let stops = Arc::make_mut(&mut self.state.stops);
        match scope.as_str() {
            GLOBAL => stops.global = Some(stop),
            _ => drop(stops.profiles.insert(scope, stop)),
        }
        Ok(())
    }

    pub fn grant(&mut self, row: GrantText) -> Result<(), StoreError> {
        let key = format!("overtime {}", row.id);
        let grantee = match (row.user, row.department) {
            (Some(u), None) => Grantee::User(u),
            (None, Some(d)) => Grantee::Department(d),
            _ => return Err(StoreError::Corrupt(key, "a grant is for one user or one department".into())),
        };
        let g = OvertimeGrant {
            id: row.id,
            start: time(&key, &row.times[0])?,
            end: time(&key, &row.times[1])?,
            grantee: grantee.clone(),
            profile: row.profile,
            approver: row.approver,
            reason: row.reason,
        };
        Arc::make_mut(&mut self.state.overtime).entry(grantee).or_default().push(g);
        Ok(())
    }

    /// A maintenance window; `times` are its start and end.
    pub fn maintenance(
        &mut self,
        id: i64,
        profile: Option<String>,
        reason: String,
        times: &[String; 2],
    ) -> Result<(), StoreError> {
        let key = id.to_string();
        let (start, end) = (time(&key, &times[0])?, time(&key, &times[1])?);
        Arc::make_mut(&mut self.state.maintenance).push(MaintenanceWindow { id, profile, reason, start, end });
        Ok(())
    }

    pub fn app_stage(
        &mut self,
        profile: String,
        app: i64,
        stage: &str,
        reason: String,
        since: &str,
    ) -> Result<(), StoreError> {
        let key = format!("{profile}/{app}");
        let app = u64::try_from(app).map_err(|_| StoreError::Corrupt(key.clone(), "app".into()))?;
        let stage = AppStage { stage: enum_from(&key, stage)?, since: time(&key, since)?, reason, app, profile };
        Arc::make_mut(&mut self.state.apps).stages.insert((stage.profile.clone(), app), stage);
        Ok(())
    }

    /// A review; read in id order, as `apply` appends them.
    pub fn review(&mut self, row: ReviewText) -> Result<(), StoreError> {
        let key = format!("review {}", row.id);
        let review = Review {
            id: row.id,
            app: u64::try_from(row.app).map_err(|_| StoreError::Corrupt(key.clone(), "app".into()))?,
            subject: enum_from(&key, &row.subject)?,
            reviewed_on: NaiveDate::parse_from_str(&row.reviewed_on, "%Y-%m-%d")
                .map_err(|_| StoreError::Corrupt(key.clone(), "reviewed_on".into()))?,
            profile: row.profile,
            token_sha256: row.token_sha256,
            reviewer: row.reviewer,
            note: row.note,
        };
        Arc::make_mut(&mut self.state.apps).reviews.push(review);
        Ok(())
    }
}

type DeviceResult = Result<Device, StoreError>;

fn parse_device(id: String, owner: String, f: [&str; 7], sw: (Option<String>, Option<String>)) -> DeviceResult {
    let corrupt = |what: &str| StoreError::Corrupt(id.clone(), what.to_owned());
    let enum_of = |s: &str| serde_json::Value::String(s.to_owned());
    let security_software = match sw {
        (Some(name), Some(updated)) => Some(SecuritySoftware {
            name,
            updated: NaiveDate::parse_from_str(&updated, "%Y-%m-%d").map_err(|_| corrupt("security_updated"))?,
        }),
        _ => None,
    };
    Ok(Device {
        kind: serde_json::from_value(enum_of(f[0])).map_err(|_| corrupt("kind"))?,
        ownership: serde_json::from_value(enum_of(f[1])).map_err(|_| corrupt("ownership"))?,
        os: serde_json::from_value(enum_of(f[2])).map_err(|_| corrupt("os"))?,
        os_version: f[3].parse().map_err(|_| corrupt("os_version"))?,
        key: DeviceKey::parse(f[4], f[5]).map_err(|e| corrupt(&e.to_string()))?,
        status: serde_json::from_value(enum_of(f[6])).map_err(|_| corrupt("status"))?,
        security_software,
        certificate: None,
        exception: None,
        previous_certificate: None,
        id,
        owner,
    })
}

fn time(key: &str, s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| StoreError::Corrupt(key.to_owned(), format!("time `{s}`")))
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
