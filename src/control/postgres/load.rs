//! Reading from PostgreSQL: the whole state at one consistent position,
//! the change-log entries after a position, and the admin audit trail.

use futures_util::{pin_mut, TryStreamExt};
use sekisho_policy::state::State;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, IsolationLevel, Row, Transaction};

use crate::control::backend::{Position, Since};
use crate::control::store::{
    AdminFilter, AuditEntryOwned, AuditRecord, Change, DeviceText, GrantText, ReviewText, StateRows, StoreError,
    DEVICE_COLUMNS, REVIEW_COLUMNS,
};

/// Entries read per query while catching up.
const PAGE: i64 = 500;

/// The whole state and the log position it is at, read in one snapshot.
pub async fn whole(client: &mut Client) -> Result<(State, Position), StoreError> {
    let tx = client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start().await?;
    let head = tx.query_one("SELECT seq, tag FROM log_head", &[]).await?;
    let at = Position { seq: head.try_get(0)?, tag: head.try_get(1)? };
    let state = read_state(&tx).await?;
    tx.commit().await?;
    Ok((state, at))
}

async fn read_state(tx: &Transaction<'_>) -> Result<State, StoreError> {
    let mut rows = StateRows::default();
    for r in tx.query("SELECT id, display_name, role, profiles, department, schedule FROM users", &[]).await? {
        rows.user(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?, r.try_get(5)?)?;
    }
    for r in tx.query("SELECT user_id, kind, reason, since, until FROM flags", &[]).await? {
        rows.flag(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?)?;
    }
    // Streamed: a million devices are not held twice.
    let devices = tx.query_raw(&format!("SELECT {DEVICE_COLUMNS} FROM devices"), no_params()).await?;
    pin_mut!(devices);
    while let Some(r) = devices.try_next().await? {
        rows.device(device_text(&r)?)?;
    }
    for r in tx.query("SELECT scope, reason, since FROM stops", &[]).await? {
        rows.stop(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)?;
    }
    let grants = r#"SELECT id, user_id, department, profile, approver, reason, start, "end" FROM overtime"#;
    for r in tx.query(grants, &[]).await? {
        rows.grant(GrantText {
            id: r.try_get(0)?,
            user: r.try_get(1)?,
            department: r.try_get(2)?,
            profile: r.try_get(3)?,
            approver: r.try_get(4)?,
            reason: r.try_get(5)?,
            times: [r.try_get(6)?, r.try_get(7)?],
        })?;
    }
    for r in tx.query(r#"SELECT id, profile, reason, start, "end" FROM maintenance"#, &[]).await? {
        rows.maintenance(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, &[r.try_get(3)?, r.try_get(4)?])?;
    }
    for r in tx.query("SELECT profile, app, stage, reason, since FROM app_stages", &[]).await? {
        rows.app_stage(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?)?;
    }
    for r in tx.query(&format!("SELECT {REVIEW_COLUMNS} FROM app_reviews ORDER BY id"), &[]).await? {
        rows.review(ReviewText {
            id: r.try_get(0)?,
            profile: r.try_get(1)?,
            app: r.try_get(2)?,
            subject: r.try_get(3)?,
            token_sha256: r.try_get(4)?,
            reviewer: r.try_get(5)?,
            reviewed_on: r.try_get(6)?,
            note: r.try_get(7)?,
        })?;
    }
    Ok(rows.state)
}

fn device_text(r: &Row) -> Result<DeviceText, StoreError> {
    let text = |i: usize| r.try_get::<_, String>(i);
    Ok(DeviceText {
        id: text(0)?,
        owner: text(1)?,
        fields: [text(2)?, text(3)?, text(4)?, text(5)?, text(8)?, text(9)?, text(10)?],
        security_software: (r.try_get(6)?, r.try_get(7)?),
        certificates: (r.try_get(11)?, r.try_get(14)?),
        exception: (r.try_get(12)?, r.try_get(13)?),
    })
}

fn no_params() -> std::iter::Empty<&'static (dyn tokio_postgres::types::ToSql + Sync)> {
    std::iter::empty()
}

/// What was committed after `at`: nothing, the entries in order, or that
/// the whole state must be read because the log cannot be followed from
/// `at`. One round trip when nothing changed (the entry at `at`, as proof
/// the history is the one applied) and one per page otherwise.
pub async fn since(client: &mut Client, at: Position) -> Result<Since, StoreError> {
    let mut changes = Vec::new();
    let mut cursor = at;
    loop {
        // The entry at the cursor proves the history; its (possibly large)
        // change is not needed again.
        let rows = client
            .query_typed(
                "SELECT seq, tag, CASE WHEN seq = $1 THEN NULL ELSE change::text END
                 FROM change_log WHERE seq >= $1 ORDER BY seq LIMIT $2",
                &[(&cursor.seq, Type::INT8), (&PAGE, Type::INT8)],
            )
            .await?;
        let entries = rows
            .iter()
            .map(|r| Ok(Entry { seq: r.try_get(0)?, tag: r.try_get(1)?, change: r.try_get(2)? }))
            .collect::<Result<Vec<_>, StoreError>>()?;
        if entries.is_empty() && cursor.seq > 0 {
            return at_head(client, cursor).await;
        }
        let Some((more, next)) = follow(cursor, &entries) else { return Ok(Since::Reload) };
        changes.extend(more);
        cursor = next;
        if i64::try_from(entries.len()).unwrap_or(PAGE) < PAGE {
            break;
        }
    }
    Ok(if cursor == at { Since::Current } else { Since::Changes(changes, cursor) })
}

/// No entry at `at`: current only if the head is still there (the log was
/// emptied by hand); otherwise the history went back or was pruned.
async fn at_head(client: &mut Client, at: Position) -> Result<Since, StoreError> {
    let head = client.query_typed_one("SELECT seq, tag FROM log_head", &[]).await?;
    let head = Position { seq: head.try_get(0)?, tag: head.try_get(1)? };
    Ok(if head == at { Since::Current } else { Since::Reload })
}

/// One change-log row.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: i64,
    pub tag: i64,
    pub change: Option<String>,
}

/// The changes after `at` in `entries` (read from `at.seq` on) and the
/// position after them; `None` when the whole state must be read instead:
/// the entry at `at` is gone or has another tag (pruned, or a database that
/// went back in time), numbers skip, or an entry says to (NULL) or cannot
/// be read by this version.
pub fn follow(at: Position, entries: &[Entry]) -> Option<(Vec<Change>, Position)> {
    let mut rest = entries;
    if at.seq > 0 {
        let (first, tail) = entries.split_first()?;
        if first.seq != at.seq || first.tag != at.tag {
            return None;
        }
        rest = tail;
    }
    let mut changes = Vec::with_capacity(rest.len());
    let mut position = at;
    for e in rest {
        if e.seq != position.seq + 1 {
            return None;
        }
        let change = serde_json::from_str::<Change>(e.change.as_deref()?).ok()?;
        changes.push(change);
        position = Position { seq: e.seq, tag: e.tag };
    }
    Some((changes, position))
}

/// Admin audit records, newest first. Times are stored as RFC 3339 in UTC,
/// which sort as they read (as in the SQLite store).
pub async fn audit(client: &mut Client, f: AdminFilter) -> Result<Vec<AuditRecord>, StoreError> {
    let rows = client
        .query(
            "SELECT id, time, actor, action, target, reason, source, approver FROM admin_audit
             WHERE ($1::text IS NULL OR target = $1) AND ($2::text IS NULL OR action = $2)
               AND ($3::text IS NULL OR actor = $3)
               AND ($4::text IS NULL OR time >= $4) AND ($5::text IS NULL OR time < $5)
             ORDER BY id DESC LIMIT $6 OFFSET $7",
            &[&f.target, &f.action, &f.actor, &utc(f.since), &utc(f.until), &i64::from(f.limit), &i64::from(f.skip)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(AuditRecord {
                id: r.try_get(0)?,
                entry: AuditEntryOwned {
                    time: r.try_get(1)?,
                    actor: r.try_get(2)?,
                    action: r.try_get(3)?,
                    target: r.try_get(4)?,
                    reason: r.try_get(5)?,
                    source: r.try_get(6)?,
                    approver: r.try_get(7)?,
                },
            })
        })
        .collect()
}

/// The admin records' hash chain, walked in id order (see `Backend`).
pub async fn verify_audit_chain(client: &mut Client) -> Result<Result<u64, i64>, StoreError> {
    let rows = client
        .query(
            "SELECT id, time, actor, action, target, reason, source, approver, chain FROM admin_audit ORDER BY id",
            &[],
        )
        .await?;
    let (mut prev, mut n) = (crate::control::chain::GENESIS, 0u64);
    for r in &rows {
        let id: i64 = r.try_get(0)?;
        let fields: [String; 6] =
            [r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?, r.try_get(5)?, r.try_get(6)?];
        let approver: Option<String> = r.try_get(7)?;
        let stated: Option<String> = r.try_get(8)?;
        let link =
            crate::control::chain::admin_link(&prev, id, fields.each_ref().map(String::as_str), approver.as_deref());
        if stated.as_deref().and_then(crate::config::decode_sha256) != Some(link) {
            return Ok(Err(id));
        }
        (prev, n) = (link, n + 1);
    }
    Ok(Ok(n))
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;

/// An instant as the admin records store it.
fn utc(t: Option<chrono::DateTime<chrono::Utc>>) -> Option<String> {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false))
}
