//! Each change's SQL for PostgreSQL, in one place (as `write_change` is for
//! SQLite), and the commit around it: lock the log head, write the change
//! with its checks against the database's current rows, its audit record
//! and its change-log entries, notify, commit.

use std::collections::HashSet;

use futures_util::TryFutureExt as _;
use std::time::Duration;

use sekisho_policy::device::DeviceStatus;
use sekisho_policy::state::{Device, Grantee, MaintenanceWindow, OvertimeGrant, Review};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Transaction};

use super::CHANNEL;
use crate::control::backend::{Committed, Position};
use crate::control::store::{
    app_id, device_refusal, enum_text, flag_kind, require_reason, revoked_key, status_transition, taken, AuditEntry,
    Change, StoreError, GLOBAL,
};

/// Devices per change-log entry: a bulk import of a million devices is one
/// transaction but a thousand entries of a few hundred KiB each.
pub const LOG_CHUNK: usize = 1000;

/// Devices per `INSERT`.
const INSERT_CHUNK: usize = 5000;

/// Entries older than this are pruned (a replica further behind reads the
/// whole state instead); the admin audit trail is never pruned.
const LOG_RETENTION: &str = "7 days";

/// How often (in entries) a commit prunes the log.
const PRUNE_EVERY: i64 = 1000;

/// Writes `change` and its audit record in one transaction. An error from
/// the `COMMIT` itself leaves the outcome unknown, and says so.
pub async fn commit(
    client: &mut Client,
    change: Change,
    audit: AuditEntry,
    limit: Duration,
) -> Result<Committed, StoreError> {
    require_reason(&audit)?;
    let tx = client.transaction().await?;
    let before = lock_head(&tx).await?;
    let stored = write_change(&tx, change).await?;
    let after = append_log(&tx, before, &stored, &audit).await?;
    match tokio::time::timeout(limit, tx.commit()).await {
        Ok(Ok(())) => Ok(Committed { change: stored, before, after }),
        // The server refused the commit: nothing was written.
        Ok(Err(e)) if e.as_db_error().is_some() => Err(e.into()),
        Ok(Err(e)) => Err(StoreError::Uncertain(e.to_string())),
        Err(_) => Err(StoreError::Uncertain(format!("no answer to COMMIT within {} s", limit.as_secs()))),
    }
}

/// An audit record without a change (a rules reload), in the same order as
/// the others.
pub async fn record(client: &mut Client, audit: AuditEntry) -> Result<(), StoreError> {
    require_reason(&audit)?;
    let tx = client.transaction().await?;
    lock_head(&tx).await?;
    insert_audit(&tx, &audit).await?;
    tx.commit().await?;
    Ok(())
}

/// Waits for every other writer's commit, then returns the log's head.
/// The hot statements are sent typed: one round trip each, no prepare.
async fn lock_head(tx: &Transaction<'_>) -> Result<Position, StoreError> {
    let row = tx.query_typed_one("SELECT seq, tag FROM log_head FOR UPDATE", &[]).await?;
    Ok(Position { seq: row.try_get(0)?, tag: row.try_get(1)? })
}

/// Inserts an admin record chained to the last one. Every writer holds the
/// log head's lock first, so the record before it cannot change meanwhile.
async fn insert_audit(tx: &Transaction<'_>, a: &AuditEntry) -> Result<(), StoreError> {
    let time = a.time.to_rfc3339();
    let prev = tx.query_typed("SELECT chain FROM admin_audit ORDER BY id DESC LIMIT 1", &[]).await?;
    let prev: Option<String> = prev.first().map(|r| r.try_get(0)).transpose()?.flatten();
    let prev = prev.as_deref().and_then(crate::config::decode_sha256).unwrap_or(crate::control::chain::GENESIS);
    let row = tx
        .query_typed_one(
            "INSERT INTO admin_audit (time, actor, action, target, reason, source, approver)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            &[
                (&time, Type::TEXT),
                (&a.actor, Type::TEXT),
                (&a.action, Type::TEXT),
                (&a.target, Type::TEXT),
                (&a.reason, Type::TEXT),
                (&a.source, Type::TEXT),
                (&a.approver, Type::TEXT),
            ],
        )
        .await?;
    let id: i64 = row.try_get(0)?;
    let fields = [time.as_str(), &a.actor, &a.action, &a.target, &a.reason, &a.source];
    let link = crate::config::hex(&crate::control::chain::admin_link(&prev, id, fields, a.approver.as_deref()));
    tx.query_typed("UPDATE admin_audit SET chain = $2 WHERE id = $1", &[(&id, Type::INT8), (&link, Type::TEXT)])
        .await?;
    Ok(())
}

/// Writes the audit record, appends `stored` to the change log after
/// `before`, moves the head and notifies the replicas (delivered at
/// commit), all pipelined in one round trip.
async fn append_log(
    tx: &Transaction<'_>,
    before: Position,
    stored: &Change,
    audit: &AuditEntry,
) -> Result<Position, StoreError> {
    let mut rows = Vec::new();
    let mut at = before;
    for entry in log_entries(stored) {
        let json = serde_json::to_string(&entry).map_err(|e| StoreError::Corrupt("change".into(), e.to_string()))?;
        at = Position { seq: at.seq + 1, tag: new_tag() };
        rows.push((at, json));
    }
    type Param<'a> = (&'a (dyn tokio_postgres::types::ToSql + Sync), Type);
    let entry_params: Vec<[Param<'_>; 3]> = rows
        .iter()
        .map(|(p, json)| [(&p.seq as _, Type::INT8), (&p.tag as _, Type::INT8), (json as _, Type::TEXT)])
        .collect();
    let inserts = entry_params
        .iter()
        .map(|params| tx.query_typed("INSERT INTO change_log (seq, tag, change) VALUES ($1, $2, $3::jsonb)", params));
    let head_params: [Param<'_>; 2] = [(&at.seq, Type::INT8), (&at.tag, Type::INT8)];
    let head = tx.query_typed("UPDATE log_head SET seq = $1, tag = $2", &head_params);
    let payload = notification(before, &rows);
    let notify_params: [Param<'_>; 2] = [(&CHANNEL, Type::TEXT), (&payload, Type::TEXT)];
    let notify = tx.query_typed("SELECT pg_notify($1, $2)", &notify_params);
    futures_util::try_join!(
        insert_audit(tx, audit),
        futures_util::future::try_join_all(inserts).err_into::<StoreError>(),
        head.err_into::<StoreError>(),
        notify.err_into::<StoreError>(),
    )?;
    if at.seq / PRUNE_EVERY != before.seq / PRUNE_EVERY {
        let prune =
            format!("DELETE FROM change_log WHERE seq < $1 AND written_at < now() - interval '{LOG_RETENTION}'");
        tx.execute(&prune, &[&at.seq]).await?;
    }
    Ok(at)
}

/// PostgreSQL's limit on a notification's payload, with room to spare.
const PAYLOAD_MAX: usize = 7900;

/// What the notification says: a single entry whole (`seq tag previous-tag
/// json`), so that replicas following exactly need not read the log; else
/// the last number only. The log holds the same entry either way.
pub fn notification(before: Position, rows: &[(Position, String)]) -> String {
    match rows {
        [(at, json)] if json.len() < PAYLOAD_MAX => format!("{} {} {} {json}", at.seq, at.tag, before.tag),
        _ => rows.last().map_or(before.seq, |(at, _)| at.seq).to_string(),
    }
}

/// The log entries of a change: itself, or a bulk import in chunks.
/// Applied in order they make the same state as the change.
pub fn log_entries(change: &Change) -> Vec<std::borrow::Cow<'_, Change>> {
    match change {
        Change::ImportDevices(devices) if devices.len() > LOG_CHUNK => devices
            .chunks(LOG_CHUNK)
            .map(|chunk| std::borrow::Cow::Owned(Change::ImportDevices(chunk.to_vec())))
            .collect(),
        other => vec![std::borrow::Cow::Borrowed(other)],
    }
}

/// Non-zero, so an entry's tag never equals the empty log's.
fn new_tag() -> i64 {
    rand::random::<i64>() | 1
}

/// Writes one change; the same checks as SQLite's `write_change`, made
/// against the rows as they are now. Returns the change with assigned ids.
async fn write_change(tx: &Transaction<'_>, change: Change) -> Result<Change, StoreError> {
    match &change {
        Change::PutUser { id, display_name, role, profiles, department, schedule } => {
            let profiles =
                serde_json::to_string(profiles).map_err(|e| StoreError::Corrupt(id.clone(), e.to_string()))?;
            tx.execute(
                "INSERT INTO users (id, display_name, role, profiles, department, schedule) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (id) DO UPDATE SET display_name = $2, role = $3, profiles = $4, department = $5,
                 schedule = $6",
                &[id, display_name, role, &profiles, department, schedule],
            )
            .await?;
        }
        Change::SetFlag { user, kind, flag } => {
            require_user(tx, user).await?;
            let kind = flag_kind(*kind);
            match flag {
                Some(f) => {
                    let (since, until) = (f.since.to_rfc3339(), f.until.map(|u| u.to_rfc3339()));
                    tx.query_typed(
                        "INSERT INTO flags (user_id, kind, reason, since, until) VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (user_id, kind) DO UPDATE SET reason = $3, since = $4, until = $5",
                        &[
                            (user, Type::TEXT),
                            (&kind, Type::TEXT),
                            (&f.reason, Type::TEXT),
                            (&since, Type::TEXT),
                            (&until, Type::TEXT),
                        ],
                    )
                    .await?
                }
                None => {
                    tx.query_typed(
                        "DELETE FROM flags WHERE user_id = $1 AND kind = $2",
                        &[(user, Type::TEXT), (&kind, Type::TEXT)],
                    )
                    .await?
                }
            };
        }
        Change::FileDevice(d) => insert_devices(tx, std::slice::from_ref(&**d)).await?,
        Change::ImportDevices(devices) => insert_devices(tx, devices).await?,
        Change::SetDeviceCert { id, sha256, renewal } => {
            // Approved now, in the store: another replica may have revoked it.
            let sql = match renewal {
                true => "UPDATE devices SET prev_cert_sha256 = cert_sha256, cert_sha256 = $2 WHERE id = $1 AND status = 'approved'",
                false => "UPDATE devices SET prev_cert_sha256 = NULL, cert_sha256 = $2 WHERE id = $1 AND status = 'approved'",
            };
            let n = tx.execute(sql, &[id, &crate::config::hex(sha256)]).await?;
            if n == 0 {
                return Err(device_refusal(id, device_status(tx, id).await?, "a certificate"));
            }
        }
        Change::SetDeviceStatus { id, status, exception } => {
            // The row is locked until commit: the transition is judged on it as it is.
            let current = tx
                .query_typed_opt("SELECT status FROM devices WHERE id = $1 FOR UPDATE", &[(id, Type::TEXT)])
                .await?
                .map(|r| r.try_get::<_, String>(0))
                .transpose()?;
            status_transition(id, current.as_deref(), *status)?;
            let status_text = status.as_str();
            type P<'a> = (&'a (dyn tokio_postgres::types::ToSql + Sync), Type);
            let (id_p, status_p): (P<'_>, P<'_>) = ((id, Type::TEXT), (&status_text, Type::TEXT));
            match status {
                DeviceStatus::Approved => {
                    let reason = exception.as_ref().map(|e| e.reason.as_str());
                    let by = exception.as_ref().map(|e| e.approver.as_str());
                    tx.query_typed(
                        "UPDATE devices SET status = $2, exception_reason = $3, exception_by = $4 WHERE id = $1",
                        &[id_p, status_p, (&reason, Type::TEXT), (&by, Type::TEXT)],
                    )
                    .await?
                }
                _ => tx.query_typed("UPDATE devices SET status = $2 WHERE id = $1", &[id_p, status_p]).await?,
            };
        }
        Change::SetDevicePosture { id, os, os_version, security_software, reported_at } => {
            let name = security_software.as_ref().map(|s| s.name.clone());
            let updated = security_software.as_ref().map(|s| s.updated.to_string());
            let n = tx
                .execute(
                    "UPDATE devices SET os = $2, os_version = $3, security_software = $4, security_updated = $5,
                     posture_at = $6
                     WHERE id = $1 AND status = 'approved' AND (posture_at IS NULL OR posture_at < $6)",
                    &[id, &os.as_str(), &os_version.to_string(), &name, &updated, reported_at],
                )
                .await?;
            if n == 0 {
                return Err(device_refusal(id, device_status(tx, id).await?, "a posture report"));
            }
        }
        Change::SetStop { profile, stop } => {
            let scope = profile.as_deref().unwrap_or(GLOBAL);
            match stop {
                Some(s) => {
                    tx.query_typed(
                        "INSERT INTO stops (scope, reason, since) VALUES ($1, $2, $3)
                         ON CONFLICT (scope) DO UPDATE SET reason = $2, since = $3",
                        &[(&scope, Type::TEXT), (&s.reason, Type::TEXT), (&s.since.to_rfc3339(), Type::TEXT)],
                    )
                    .await?
                }
                None => tx.query_typed("DELETE FROM stops WHERE scope = $1", &[(&scope, Type::TEXT)]).await?,
            };
        }
        Change::AddGrant(g) => {
            let (user, department) = match &g.grantee {
                Grantee::User(u) => {
                    require_user(tx, u).await?;
                    (Some(u), None)
                }
                Grantee::Department(d) => (None, Some(d)),
            };
            let (start, end) = (g.start.to_rfc3339(), g.end.to_rfc3339());
            let row = tx
                .query_one(
                    r#"INSERT INTO overtime (user_id, department, profile, approver, reason, start, "end")
                       VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id"#,
                    &[&user, &department, &g.profile, &g.approver, &g.reason, &start, &end],
                )
                .await?;
            return Ok(Change::AddGrant(OvertimeGrant { id: row.try_get(0)?, ..g.clone() }));
        }
        Change::RemoveGrant(id) => {
            if tx.execute("DELETE FROM overtime WHERE id = $1", &[id]).await? == 0 {
                return Err(StoreError::NotFound(format!("overtime grant `{id}` does not exist")));
            }
        }
        Change::AddMaintenance(m) => {
            let row = tx
                .query_one(
                    r#"INSERT INTO maintenance (profile, reason, start, "end") VALUES ($1, $2, $3, $4) RETURNING id"#,
                    &[&m.profile, &m.reason, &m.start.to_rfc3339(), &m.end.to_rfc3339()],
                )
                .await?;
            return Ok(Change::AddMaintenance(MaintenanceWindow { id: row.try_get(0)?, ..m.clone() }));
        }
        Change::RemoveMaintenance(id) => {
            if tx.execute("DELETE FROM maintenance WHERE id = $1", &[id]).await? == 0 {
                return Err(StoreError::NotFound(format!("maintenance window `{id}` does not exist")));
            }
        }
        Change::SetAppStage(a) => {
            tx.execute(
                "INSERT INTO app_stages (profile, app, stage, reason, since) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (profile, app) DO UPDATE SET stage = $3, reason = $4, since = $5",
                &[&a.profile, &app_id(a.app)?, &enum_text(&a.stage)?, &a.reason, &a.since.to_rfc3339()],
            )
            .await?;
        }
        Change::AddReview(r) => {
            let row = tx
                .query_one(
                    "INSERT INTO app_reviews (profile, app, subject, token_sha256, reviewer, reviewed_on, note)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                    &[
                        &r.profile,
                        &app_id(r.app)?,
                        &r.subject.as_str(),
                        &r.token_sha256,
                        &r.reviewer,
                        &r.reviewed_on.to_string(),
                        &r.note,
                    ],
                )
                .await?;
            return Ok(Change::AddReview(Review { id: row.try_get(0)?, ..r.clone() }));
        }
        Change::RemoveReview(id) => {
            if tx.execute("DELETE FROM app_reviews WHERE id = $1", &[id]).await? == 0 {
                return Err(StoreError::NotFound(format!("review `{id}` does not exist")));
            }
        }
    }
    Ok(change)
}

/// Inserts devices in bulk after the checks SQLite makes one device at a
/// time, reporting the same first problem: an owner that is not a user,
/// then the key of a revoked device, then an id already registered (or
/// twice in the list).
async fn insert_devices(tx: &Transaction<'_>, devices: &[Device]) -> Result<(), StoreError> {
    let ids: Vec<&str> = devices.iter().map(|d| d.id.as_str()).collect();
    let owners: Vec<&str> = devices.iter().map(|d| d.owner.as_str()).collect();
    let keys: Vec<String> = devices.iter().map(|d| d.key.to_b64()).collect();
    let column = |rows: Vec<tokio_postgres::Row>| {
        rows.iter().map(|r| r.try_get::<_, String>(0)).collect::<Result<HashSet<_>, _>>()
    };
    let known = column(tx.query("SELECT id FROM users WHERE id = ANY($1)", &[&owners]).await?)?;
    let taken_ids = column(tx.query("SELECT id FROM devices WHERE id = ANY($1)", &[&ids]).await?)?;
    let mut revoked = std::collections::HashMap::new();
    for r in tx
        .query("SELECT public_key, id FROM devices WHERE public_key = ANY($1) AND status = 'revoked'", &[&keys])
        .await?
    {
        revoked.insert(r.try_get::<_, String>(0)?, r.try_get::<_, String>(1)?);
    }
    let mut seen = HashSet::new();
    for (d, key) in devices.iter().zip(&keys) {
        if !known.contains(&d.owner) {
            return Err(StoreError::NotFound(format!("user `{}` does not exist", d.owner)));
        }
        if let Some(old) = revoked.get(key) {
            return Err(revoked_key(&d.id, old));
        }
        if taken_ids.contains(&d.id) || !seen.insert(d.id.as_str()) {
            return Err(taken(&d.id));
        }
    }
    for chunk in devices.chunks(INSERT_CHUNK) {
        insert_chunk(tx, chunk).await?;
    }
    Ok(())
}

async fn insert_chunk(tx: &Transaction<'_>, devices: &[Device]) -> Result<(), StoreError> {
    let column = |f: &dyn Fn(&Device) -> String| devices.iter().map(f).collect::<Vec<_>>();
    let optional = |f: &dyn Fn(&Device) -> Option<String>| devices.iter().map(f).collect::<Vec<_>>();
    let text = [
        column(&|d| d.id.clone()),
        column(&|d| d.owner.clone()),
        column(&|d| d.kind.as_str().to_owned()),
        column(&|d| d.ownership.as_str().to_owned()),
        column(&|d| d.os.as_str().to_owned()),
        column(&|d| d.os_version.to_string()),
    ];
    let software = [
        optional(&|d| d.security_software.as_ref().map(|s| s.name.clone())),
        optional(&|d| d.security_software.as_ref().map(|s| s.updated.to_string())),
    ];
    let key =
        [column(&|d| d.key.alg().to_owned()), column(&|d| d.key.to_b64()), column(&|d| d.status.as_str().to_owned())];
    tx.execute(
        "INSERT INTO devices (id, owner, kind, ownership, os, os_version, security_software, security_updated,
                              key_alg, public_key, status)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                              $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])",
        &[
            &text[0],
            &text[1],
            &text[2],
            &text[3],
            &text[4],
            &text[5],
            &software[0],
            &software[1],
            &key[0],
            &key[1],
            &key[2],
        ],
    )
    .await?;
    Ok(())
}

async fn require_user(tx: &Transaction<'_>, user: &str) -> Result<(), StoreError> {
    match tx.query_typed_opt("SELECT 1 FROM users WHERE id = $1", &[(&user, Type::TEXT)]).await? {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound(format!("user `{user}` does not exist"))),
    }
}

async fn device_status(tx: &Transaction<'_>, id: &str) -> Result<Option<String>, StoreError> {
    Ok(tx.query_opt("SELECT status FROM devices WHERE id = $1", &[&id]).await?.map(|r| r.get(0)))
}
