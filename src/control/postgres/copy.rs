//! `sekisho store copy`: moves a single gateway's SQLite store, every row
//! of every table including the admin audit trail, into an empty
//! PostgreSQL database in one transaction, then reads both back and
//! compares them. A table the copy does not know stops it before anything
//! is written, so no record is ever left behind silently.

use std::path::Path;

use tokio_postgres::types::ToSql;

use super::PgStore;
use crate::control::backend::Backend as _;
use crate::control::store::{Store, StoreError};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Int,
}
use Kind::{Int, Text};

/// Every table and column, parents before children.
const TABLES: &[(&str, &[(&str, Kind)])] = &[
    (
        "users",
        &[
            ("id", Text),
            ("display_name", Text),
            ("role", Text),
            ("profiles", Text),
            ("department", Text),
            ("schedule", Text),
        ],
    ),
    ("flags", &[("user_id", Text), ("kind", Text), ("reason", Text), ("since", Text), ("until", Text)]),
    (
        "devices",
        &[
            ("id", Text),
            ("owner", Text),
            ("kind", Text),
            ("ownership", Text),
            ("os", Text),
            ("os_version", Text),
            ("security_software", Text),
            ("security_updated", Text),
            ("key_alg", Text),
            ("public_key", Text),
            ("status", Text),
            ("cert_sha256", Text),
            ("posture_at", Int),
            ("exception_reason", Text),
            ("exception_by", Text),
            ("prev_cert_sha256", Text),
        ],
    ),
    ("stops", &[("scope", Text), ("reason", Text), ("since", Text)]),
    (
        "overtime",
        &[
            ("id", Int),
            ("user_id", Text),
            ("department", Text),
            ("profile", Text),
            ("approver", Text),
            ("reason", Text),
            ("start", Text),
            ("end", Text),
        ],
    ),
    ("maintenance", &[("id", Int), ("profile", Text), ("reason", Text), ("start", Text), ("end", Text)]),
    ("app_stages", &[("profile", Text), ("app", Int), ("stage", Text), ("reason", Text), ("since", Text)]),
    (
        "app_reviews",
        &[
            ("id", Int),
            ("profile", Text),
            ("app", Int),
            ("subject", Text),
            ("token_sha256", Text),
            ("reviewer", Text),
            ("reviewed_on", Text),
            ("note", Text),
        ],
    ),
    (
        "admin_audit",
        &[
            ("id", Int),
            ("time", Text),
            ("actor", Text),
            ("action", Text),
            ("target", Text),
            ("reason", Text),
            ("source", Text),
            ("approver", Text),
            ("chain", Text),
        ],
    ),
];

/// Tables whose ids the database assigns: their sequences move past the copied ids.
const IDENTITIES: [&str; 4] = ["overtime", "maintenance", "app_reviews", "admin_audit"];

const BATCH: usize = 5000;

/// Rows copied per table.
pub type CopyReport = Vec<(&'static str, usize)>;

/// One column's values for a batch of rows.
enum Values {
    Text(Vec<Option<String>>),
    Int(Vec<Option<i64>>),
}

/// Copies the SQLite store at `from` into `to`, which must be empty, and
/// checks that both now hold the same state and audit trail.
pub async fn copy_from_sqlite(from: &Path, to: &PgStore) -> Result<CopyReport, StoreError> {
    if !from.exists() {
        return Err(StoreError::NotFound(format!("no SQLite store at `{}`", from.display())));
    }
    let source = Store::open(from)?;
    refuse_unknown_tables(&source)?;
    to.migrate().await?;
    let mut client = to.dedicated().await?;
    let report = copy_all(&mut client, &source).await?;
    verify(&source, to).await?;
    Ok(report)
}

fn refuse_unknown_tables(source: &Store) -> Result<(), StoreError> {
    let tables: Vec<String> = source.with_conn(|c| {
        let mut stmt = c.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")?;
        let names = stmt.query_map([], |r| r.get(0))?.collect::<Result<Vec<_>, _>>()?;
        Ok(names)
    })?;
    match tables.iter().find(|t| !TABLES.iter().any(|(known, _)| known == t)) {
        Some(unknown) => Err(StoreError::Schema(format!(
            "the SQLite store has a table `{unknown}` this sekisho cannot copy; nothing was copied"
        ))),
        None => Ok(()),
    }
}

async fn copy_all(client: &mut tokio_postgres::Client, source: &Store) -> Result<CopyReport, StoreError> {
    let tx = client.transaction().await?;
    let head = tx.query_one("SELECT seq FROM log_head FOR UPDATE", &[]).await?;
    let head: i64 = head.try_get(0)?;
    for (table, _) in TABLES {
        let n: i64 = tx.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await?.try_get(0)?;
        if n > 0 {
            return Err(StoreError::Conflict(format!(
                "the PostgreSQL store is not empty (`{table}` has {n} rows); copy only into a new database"
            )));
        }
    }
    // One read transaction: every table from the same moment.
    source.with_conn(|c| c.execute_batch("BEGIN"))?;
    let mut report = Vec::new();
    for (table, columns) in TABLES {
        let copied = copy_table(&tx, source, table, columns).await;
        let copied = match copied {
            Ok(n) => n,
            Err(e) => {
                let _ = source.with_conn(|c| c.execute_batch("ROLLBACK"));
                return Err(e);
            }
        };
        report.push((*table, copied));
    }
    source.with_conn(|c| c.execute_batch("COMMIT"))?;
    for table in IDENTITIES {
        tx.execute(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(max(id), 0) + 1, false) FROM {table}"
            ),
            &[],
        )
        .await?;
    }
    // An entry without a change: replicas already running read the whole state.
    let tag = rand::random::<i64>() | 1;
    tx.execute("INSERT INTO change_log (seq, tag, change) VALUES ($1, $2, NULL)", &[&(head + 1), &tag]).await?;
    tx.execute("UPDATE log_head SET seq = $1, tag = $2", &[&(head + 1), &tag]).await?;
    tx.execute("SELECT pg_notify($1, $2)", &[&super::CHANNEL, &(head + 1).to_string()]).await?;
    tx.commit().await?;
    Ok(report)
}

async fn copy_table(
    tx: &tokio_postgres::Transaction<'_>,
    source: &Store,
    table: &str,
    columns: &[(&str, Kind)],
) -> Result<usize, StoreError> {
    let names: Vec<String> = columns.iter().map(|(c, _)| format!("\"{c}\"")).collect();
    let arrays: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, (_, k))| format!("${}::{}[]", i + 1, if *k == Int { "bigint" } else { "text" }))
        .collect();
    let insert = format!("INSERT INTO {table} ({}) SELECT * FROM unnest({})", names.join(", "), arrays.join(", "));
    let select = format!("SELECT {} FROM {table} ORDER BY rowid LIMIT ?1 OFFSET ?2", names.join(", "));
    let mut copied = 0;
    loop {
        let batch = source.with_conn(|c| read_batch(c, &select, columns, copied))?;
        let n = match batch.first() {
            Some(Values::Text(v)) => v.len(),
            Some(Values::Int(v)) => v.len(),
            None => 0,
        };
        if n == 0 {
            return Ok(copied);
        }
        let params: Vec<&(dyn ToSql + Sync)> = batch
            .iter()
            .map(|v| match v {
                Values::Text(v) => v as &(dyn ToSql + Sync),
                Values::Int(v) => v as &(dyn ToSql + Sync),
            })
            .collect();
        tx.execute(&insert, &params).await?;
        copied += n;
    }
}

fn read_batch(
    c: &rusqlite::Connection,
    select: &str,
    columns: &[(&str, Kind)],
    offset: usize,
) -> rusqlite::Result<Vec<Values>> {
    let mut values: Vec<Values> = columns
        .iter()
        .map(|(_, k)| if *k == Int { Values::Int(Vec::new()) } else { Values::Text(Vec::new()) })
        .collect();
    let mut stmt = c.prepare(select)?;
    let mut rows = stmt.query(rusqlite::params![BATCH as i64, offset as i64])?;
    while let Some(row) = rows.next()? {
        for (i, v) in values.iter_mut().enumerate() {
            match v {
                Values::Text(v) => v.push(row.get(i)?),
                Values::Int(v) => v.push(row.get(i)?),
            }
        }
    }
    Ok(values)
}

/// Both stores read back: the same state, the same audit trail.
async fn verify(source: &Store, to: &PgStore) -> Result<(), StoreError> {
    let (want, _) = crate::control::backend::Backend::load(source).await?;
    let (got, _) = to.load().await?;
    let same = want.users == got.users
        && want.devices == got.devices
        && want.stops == got.stops
        && want.overtime == got.overtime
        && want.maintenance == got.maintenance
        && want.certificates == got.certificates
        && want.apps == got.apps;
    if !same {
        return Err(StoreError::Schema("the copy reads back differently from the source; it was not verified".into()));
    }
    let all = crate::control::store::AdminFilter { limit: u32::MAX, ..Default::default() };
    let want = source.audit(&all)?;
    let got = to.audit(all).await?;
    if want != got {
        return Err(StoreError::Schema(format!(
            "the admin audit trail reads back differently ({} records in SQLite, {} in PostgreSQL)",
            want.len(),
            got.len()
        )));
    }
    Ok(())
}
