//! `sekisho audit …`: the auditor's commands. `verify` checks the request
//! trail (hash chain, checkpoints, signed digests) and the admin records'
//! chain in the store; `query` prints records by person, device, reason and
//! time as JSON lines or CSV; `public-key` prints the key auditors pin.
//! Read only: it never changes a trail file or the store.

use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone as _};
use clap::{Args, Subcommand};

use crate::config::Config;
use crate::control::{chain, trail};

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Verify trail files (default: the configured audit log, its rotated
    /// files and the store's admin records). Exits non-zero on any problem.
    Verify {
        /// Pin the signing key (the PEM `sekisho audit public-key` printed).
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Also verify the admin records' chain in this store (default with no FILES: the configured one).
        #[arg(long)]
        store: Option<PathBuf>,
        files: Vec<PathBuf>,
    },
    /// Print request records matching all the filters given, oldest first.
    Query(QueryArgs),
    /// Print the public key that signs digests and checkpoints (PEM).
    PublicKey,
}

#[derive(Args)]
pub struct QueryArgs {
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    device: Option<String>,
    /// A reason code (`outside_hours`, `user_suspended`, …).
    #[arg(long)]
    reason: Option<String>,
    /// `allow`, `deny`, `error` or `cut`.
    #[arg(long)]
    decision: Option<String>,
    /// From this time (RFC 3339, or `YYYY-MM-DD[THH:MM]` in Asia/Tokyo), inclusive.
    #[arg(long)]
    since: Option<String>,
    /// Until this time, exclusive.
    #[arg(long)]
    until: Option<String>,
    /// CSV with a header row instead of JSON lines.
    #[arg(long)]
    csv: bool,
    /// Trail files (default: the configured audit log and its rotated files).
    files: Vec<PathBuf>,
}

pub fn run(cmd: AuditCommand, config_path: &Path) -> Result<(), String> {
    match cmd {
        AuditCommand::Verify { public_key, store, files } => verify(config_path, public_key, store, files),
        AuditCommand::Query(q) => query(config_path, q),
        AuditCommand::PublicKey => {
            let config = Config::load(config_path).map_err(|e| e.to_string())?;
            let key = chain::read_key(&config.audit.signing_key).map_err(|e| e.to_string())?;
            print!("{}", chain::public_pem(&key.verifying_key()));
            Ok(())
        }
    }
}

fn verify(config_path: &Path, key: Option<PathBuf>, store: Option<PathBuf>, files: Vec<PathBuf>) -> Result<(), String> {
    let mut pinned = key.map(|k| chain::read_public_pem(&k)).transpose().map_err(|e| e.to_string())?;
    let (files, store) = match files.is_empty() {
        true => {
            let config = Config::load(config_path).map_err(|e| e.to_string())?;
            let store = store.unwrap_or_else(|| config.data_dir.join("state.sqlite3"));
            if pinned.is_none() {
                // On the gateway host: this gateway's own key.
                pinned = chain::read_key(&config.audit.signing_key).ok().map(|k| k.verifying_key());
            }
            (trail::discover(&config.audit_log).map_err(|e| e.to_string())?, Some(store))
        }
        false => (files, store),
    };
    let report = trail::verify(&files, pinned.as_ref()).map_err(|e| format!("cannot read the trail: {e}"))?;
    for note in &report.notes {
        println!("note: {note}");
    }
    let mut failed = !report.problems.is_empty();
    for p in &report.problems {
        println!("FAIL: {p}");
    }
    println!(
        "{}: {} file(s), {} line(s), {} signed digest(s), {} signed checkpoint(s)",
        if failed { "request trail NOT intact" } else { "ok: request trail intact" },
        report.files,
        report.lines,
        report.digests,
        report.checkpoints
    );
    if let Some(path) = store {
        failed |= !verify_store(&path)?;
    }
    if failed {
        return Err("the audit trail failed verification".into());
    }
    Ok(())
}

fn verify_store(path: &Path) -> Result<bool, String> {
    if !path.exists() {
        return Err(format!("no store at `{}`", path.display()));
    }
    let store = crate::control::store::Store::open(path).map_err(|e| e.to_string())?;
    match store.verify_audit_chain().map_err(|e| e.to_string())? {
        Ok(n) => {
            println!("ok: admin records intact: {n} record(s) in {}", path.display());
            Ok(true)
        }
        Err(id) => {
            println!("FAIL: {}: admin record {id} does not follow from the one before it: changed, or a record before it was removed or inserted", path.display());
            Ok(false)
        }
    }
}

fn query(config_path: &Path, q: QueryArgs) -> Result<(), String> {
    let files = match q.files.is_empty() {
        true => {
            let config = Config::load(config_path).map_err(|e| e.to_string())?;
            trail::discover(&config.audit_log).map_err(|e| e.to_string())?
        }
        false => q.files,
    };
    let filter = trail::Filter {
        user: q.user,
        device: q.device,
        reason: q.reason,
        decision: q.decision,
        since: q.since.as_deref().map(parse_time).transpose()?,
        until: q.until.as_deref().map(parse_time).transpose()?,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let n = trail::query(&files, &filter, q.csv, &mut out).map_err(|e| format!("cannot read the trail: {e}"))?;
    std::io::Write::flush(&mut out).map_err(|e| e.to_string())?;
    eprintln!("{n} record(s)");
    Ok(())
}

/// RFC 3339, or a date or date and minute in Asia/Tokyo.
pub fn parse_time(text: &str) -> Result<DateTime<FixedOffset>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t);
    }
    let local = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M")
        .or_else(|_| NaiveDate::parse_from_str(text, "%Y-%m-%d").map(|d| d.and_time(chrono::NaiveTime::MIN)))
        .map_err(|_| format!("`{text}` is not a time: give RFC 3339 or YYYY-MM-DD[THH:MM] (Asia/Tokyo)"))?;
    chrono_tz::Asia::Tokyo
        .from_local_datetime(&local)
        .single()
        .map(|t| t.fixed_offset())
        .ok_or_else(|| format!("`{text}` is not a time in Asia/Tokyo"))
}
