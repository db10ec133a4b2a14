//! `sekisho doctor`: what an operator checks on the gateway host, each
//! finding with a next step. The configuration and rules; the certificates
//! (present, key matching, chain linked, days to expiry); the store; the
//! audit log (writable, disk space, signing key); each upstream over TLS
//! with its expected name; the clock against NTP. The same checks run in
//! the gateway every few minutes and show in `/metrics` and the admin
//! status. It reads and probes; it never changes the configuration, the
//! store or the trail, and it never runs on the request path.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;

use crate::config::Config;
pub use crate::control::doctor_steps::Step;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Ok,
    Warn,
    Error,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub level: Level,
    /// What was checked (a file, an upstream, a server).
    pub subject: String,
    pub message: String,
    /// The message in Japanese, for the console (the CLI and the admin API
    /// speak English); set on what the dashboard shows, the warnings and
    /// errors, and framing any detail from the system (an OS or TLS error)
    /// that stays as it came.
    #[serde(skip)]
    pub message_ja: Option<String>,
    /// What to do about it (none when all is well).
    #[serde(serialize_with = "step_text")]
    pub next_step: Option<Step>,
    /// A number for `/metrics` (days to expiry, offset seconds, free bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
}

/// `next_step` stays a string in the admin API: the English words, empty
/// when nothing is to be done.
fn step_text<S: serde::Serializer>(step: &Option<Step>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(step.map_or("", Step::en))
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub checked_at: String,
    pub findings: Vec<Finding>,
}

/// The latest report of the in-gateway checks.
#[derive(Default)]
pub struct Latest(arc_swap::ArcSwapOption<Report>);

/// Certificates expiring within this many days are a warning.
pub const WARN_DAYS: i64 = 30;
/// Free space under this on the audit log's file system is a warning; under a tenth of it, an error.
const WARN_FREE_BYTES: u64 = 1 << 30;

impl Report {
    pub fn worst(&self) -> Level {
        self.findings.iter().map(|f| f.level).max().unwrap_or(Level::Ok)
    }

    fn push(
        &mut self,
        check: &'static str,
        level: Level,
        subject: impl Into<String>,
        message: impl Into<String>,
        next: Option<Step>,
    ) {
        self.findings.push(Finding {
            check,
            level,
            subject: subject.into(),
            message: message.into(),
            next_step: next,
            message_ja: None,
            value: None,
        });
    }

    /// The last finding's message in Japanese.
    fn ja(&mut self, text: impl Into<String>) {
        if let Some(f) = self.findings.last_mut() {
            f.message_ja = Some(text.into());
        }
    }

    fn with_value(&mut self, value: f64) {
        if let Some(f) = self.findings.last_mut() {
            f.value = Some(value);
        }
    }

    /// Human-readable lines, one finding each, with its next step.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.findings {
            let tag = match f.level {
                Level::Ok => "[ OK ]",
                Level::Warn => "[WARN]",
                Level::Error => "[FAIL]",
            };
            out.push_str(&format!("{tag} {}: {}: {}\n", f.check, f.subject, f.message));
            if let Some(step) = f.next_step {
                out.push_str(&format!("       next: {}\n", step.en()));
            }
        }
        out
    }

    /// Prometheus text: one gauge per finding (0 ok, 1 warn, 2 error), and the values.
    pub fn prometheus(&self) -> String {
        let mut out = String::from(
            "# HELP sekisho_doctor_finding Health checks (sekisho doctor): 0 ok, 1 warning, 2 error.\n# TYPE sekisho_doctor_finding gauge\n",
        );
        for f in &self.findings {
            let level = f.level as u8;
            out.push_str(&format!(
                "sekisho_doctor_finding{{check=\"{}\",subject=\"{}\"}} {level}\n",
                f.check,
                label(&f.subject)
            ));
        }
        let gauges = [
            ("certificate", "sekisho_certificate_expiry_days", "Days until the certificate expires."),
            ("clock", "sekisho_clock_offset_seconds", "Offset of this host's clock from the NTP server."),
            ("audit_log", "sekisho_audit_disk_free_bytes", "Free bytes on the audit log's file system."),
        ];
        for (check, name, help) in gauges {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
            for f in self.findings.iter().filter(|f| f.check == check) {
                if let Some(v) = f.value {
                    out.push_str(&format!("{name}{{subject=\"{}\"}} {v}\n", label(&f.subject)));
                }
            }
        }
        out
    }
}

impl Latest {
    pub fn set(&self, report: Report) {
        self.0.store(Some(Arc::new(report)));
    }

    pub fn get(&self) -> Option<Arc<Report>> {
        self.0.load_full()
    }
}

fn label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', " ")
}

/// Everything, as `sekisho doctor` runs it on the host.
pub async fn run(config_path: &Path) -> Report {
    let mut r = Report { checked_at: Utc::now().to_rfc3339(), findings: Vec::new() };
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            r.push("config", Level::Error, config_path.display().to_string(), e.to_string(), Some(Step::FixConfig));
            r.ja(format!("設定ファイルに誤りがあります: {e}"));
            return r;
        }
    };
    r.push("config", Level::Ok, config_path.display().to_string(), "valid", None);
    check_admin(&config, &mut r);
    check_rules(&config, &mut r);
    check_certificates(&config, &mut r);
    check_store(&config, &mut r);
    check_audit_log(&config, &mut r);
    check_upstreams(&config, &mut r).await;
    check_clock(&config, &mut r).await;
    r
}

/// The checks that make sense inside the running gateway, every `every`.
pub async fn watch(config: Config, latest: Arc<Latest>, every: Duration) {
    loop {
        let mut r = Report { checked_at: Utc::now().to_rfc3339(), findings: Vec::new() };
        check_certificates(&config, &mut r);
        check_audit_log(&config, &mut r);
        check_upstreams(&config, &mut r).await;
        check_clock(&config, &mut r).await;
        latest.set(r);
        tokio::time::sleep(every).await;
    }
}

fn check_admin(config: &Config, r: &mut Report) {
    let a = &config.admin;
    let subject = format!("admin API {}", a.listen);
    match (a.listen.ip().is_loopback(), a.tls.is_some()) {
        (true, _) | (false, true) => {
            r.push("admin", Level::Ok, subject, if a.tls.is_some() { "HTTPS" } else { "loopback only" }, None)
        }
        (false, false) => {
            r.push(
                "admin",
                Level::Warn,
                subject,
                "plain HTTP on a network address (insecure_plain_http = true)",
                Some(Step::AdminBehindTls),
            );
            r.ja("ネットワーク上のアドレスで暗号化なしの HTTP を受けています（insecure_plain_http = true）");
        }
    }
}

fn check_rules(config: &Config, r: &mut Report) {
    let subject = config.rules_dir.display().to_string();
    match crate::shared::load_rules(&config.rules_dir) {
        Ok((rules, _)) => {
            r.push("rules", Level::Ok, subject, format!("{} profile(s) load", rules.profiles().len()), None)
        }
        Err(e) => {
            r.push("rules", Level::Error, subject, e.to_string(), Some(Step::FixRules));
            r.ja(format!("ルールファイルを読み込めません: {e}"));
        }
    }
}

/// The PEM files the gateway serves or trusts.
fn certificate_files(config: &Config) -> Vec<(&'static str, PathBuf, Option<PathBuf>)> {
    let mut files = Vec::new();
    if config.https.is_some() {
        files.push(("server", config.tls.cert.clone(), Some(config.tls.key.clone())));
    }
    if let Some((cert, key)) = &config.tls.device_ca {
        files.push(("device CA", cert.clone(), Some(key.clone())));
    }
    if let Some((cert, key)) = &config.admin.tls {
        files.push(("admin", cert.clone(), Some(key.clone())));
    }
    if let Ok((rules, _)) = crate::shared::load_rules(&config.rules_dir) {
        for route in rules.profiles().iter().flat_map(|p| &p.routes) {
            if let Some(ca) = &route.ca_file {
                files.push(("upstream CA", config.rules_dir.join(ca), None));
            }
        }
    }
    files
}

fn check_certificates(config: &Config, r: &mut Report) {
    for (role, cert, key) in certificate_files(config) {
        let subject = format!("{role} {}", cert.display());
        match crate::control::doctor_certs::inspect(&cert, key.as_deref()) {
            Err(e) => {
                r.push("certificate", Level::Error, subject, e.clone(), Some(Step::PlaceCertificate));
                r.ja(format!("証明書を読めません: {e}"));
            }
            Ok(chain) => {
                for problem in &chain.problems {
                    r.push("certificate", Level::Error, subject.clone(), problem.clone(), Some(Step::MatchKeyOrChain));
                    r.ja(format!("鍵または証明書チェーンに問題があります: {problem}"));
                }
                if let Some(note) = &chain.note {
                    r.push("certificate", Level::Warn, subject.clone(), note.clone(), Some(Step::TrustIssuer));
                    r.ja(format!("ファイルにはサーバー証明書しかなく、中間証明書がありません: {note}"));
                }
                let (level, next) = match chain.days_left {
                    d if d < 0 => (Level::Error, Some(Step::RenewNow)),
                    d if d <= WARN_DAYS => (Level::Warn, Some(Step::RenewSoon)),
                    _ => (Level::Ok, None),
                };
                r.push(
                    "certificate",
                    level,
                    subject,
                    format!("{}; {} day(s) to expiry ({})", chain.summary, chain.days_left, chain.not_after),
                    next,
                );
                if level != Level::Ok {
                    r.ja(match chain.days_left {
                        d if d < 0 => format!("{}: 有効期限が切れています（{}）", chain.summary, chain.not_after),
                        d => format!("{}: 有効期限まで {d} 日（{}）", chain.summary, chain.not_after),
                    });
                }
                r.with_value(chain.days_left as f64);
            }
        }
    }
}

fn check_store(config: &Config, r: &mut Report) {
    let path = match &config.store {
        crate::config::StoreConfig::Sqlite { path } => path.clone(),
        crate::config::StoreConfig::Postgres(pg) => return check_postgres(pg, r),
    };
    let subject = path.display().to_string();
    if !path.exists() {
        r.push("store", Level::Warn, subject, "no store yet", Some(Step::StoreAtFirstStart));
        r.ja("管理データはまだ作成されていません");
        return;
    }
    let store = match crate::control::store::Store::open_read_only(&path) {
        Ok(s) => s,
        Err(e) => {
            r.push("store", Level::Error, subject, e.to_string(), Some(Step::StoreFileMode));
            return r.ja(format!("管理データを開けません: {e}"));
        }
    };
    match store.load_versioned() {
        Ok((state, _)) => r.push(
            "store",
            Level::Ok,
            subject.clone(),
            format!("readable: {} user(s), {} device(s)", state.users.len(), state.devices.len()),
            None,
        ),
        Err(e) => {
            r.push("store", Level::Error, subject, e.to_string(), Some(Step::RestoreStore));
            return r.ja(format!("管理データを読めません: {e}"));
        }
    }
    match store.verify_audit_chain() {
        Ok(chain) => audit_chain(r, subject, chain, Step::StoreTampered),
        Err(e) => {
            r.push("store", Level::Error, subject, e.to_string(), Some(Step::CheckStoreFile));
            r.ja(format!("管理操作の記録を検証できません: {e}"));
        }
    }
}

/// The shared PostgreSQL store: reachable, readable, its admin trail intact.
/// Read only: doctor never migrates or writes.
fn check_postgres(pg: &crate::config::PgConfig, r: &mut Report) {
    use crate::control::backend::Backend as _;
    let subject = "postgresql".to_owned();
    let checked = crate::control::backend::on_own_runtime(async {
        let store = crate::control::postgres::PgStore::new(pg.clone())?;
        let (state, _) = store.load().await?;
        let chain = store.verify_audit_chain().await?;
        Ok::<_, crate::control::store::StoreError>((state.users.len(), state.devices.len(), chain))
    });
    match checked {
        Ok((users, devices, chain)) => {
            r.push(
                "store",
                Level::Ok,
                subject.clone(),
                format!("readable: {users} user(s), {devices} device(s)"),
                None,
            );
            audit_chain(r, subject, chain, Step::DatabaseTampered);
        }
        Err(e) => {
            r.push("store", Level::Error, subject, e.to_string(), Some(Step::CheckDatabase));
            r.ja(format!("データベースを読めません: {e}"));
        }
    }
}

/// The store's admin audit chain: intact (with its length), or the first
/// record that breaks it.
fn audit_chain(r: &mut Report, subject: String, chain: Result<impl Display, impl Display>, tampered: Step) {
    match chain {
        Ok(n) => r.push("store", Level::Ok, subject, format!("admin audit chain intact ({n} record(s))"), None),
        Err(id) => {
            r.push(
                "store",
                Level::Error,
                subject,
                format!("admin audit record {id} breaks the hash chain"),
                Some(tampered),
            );
            r.ja(format!("管理操作の記録 {id} でハッシュの連鎖が切れています"));
        }
    }
}

fn check_audit_log(config: &Config, r: &mut Report) {
    let log = &config.audit_log;
    let dir = log.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let subject = log.display().to_string();
    let probe = dir.join(format!(".sekisho-doctor-{}", std::process::id()));
    match std::fs::write(&probe, b"probe").and_then(|()| std::fs::remove_file(&probe)) {
        Ok(()) => {
            r.push("audit_log", Level::Ok, subject.clone(), format!("directory {} writable", dir.display()), None)
        }
        Err(e) => {
            r.push(
                "audit_log",
                Level::Error,
                subject.clone(),
                format!("cannot write in {}: {e}", dir.display()),
                Some(Step::AuditLogWritable),
            );
            r.ja(format!("{} に書き込めません: {e}", dir.display()));
        }
    }
    if let Ok(s) = rustix::fs::statvfs(dir) {
        let free = s.f_bavail.saturating_mul(s.f_frsize);
        let level = match free {
            f if f < WARN_FREE_BYTES / 10 => Level::Error,
            f if f < WARN_FREE_BYTES => Level::Warn,
            _ => Level::Ok,
        };
        let next = if level == Level::Ok { None } else { Some(Step::AuditDiskSpace) };
        r.push("audit_log", level, subject.clone(), format!("{} MiB free", free >> 20), next);
        if level != Level::Ok {
            r.ja(format!("空き容量が少なくなっています（残り {} MiB）", free >> 20));
        }
        r.with_value(free as f64);
    }
    let key = &config.audit.signing_key;
    let shown = key.display().to_string();
    match crate::control::chain::read_key(key) {
        Ok(_) => r.push("audit_log", Level::Ok, shown, "signing key readable", None),
        Err(_) if !key.exists() => {
            r.push("audit_log", Level::Warn, shown, "no signing key yet", Some(Step::SigningKeyAtFirstStart));
            r.ja("署名鍵はまだ作成されていません");
        }
        Err(e) => {
            r.push("audit_log", Level::Error, shown, e.to_string(), Some(Step::RestoreSigningKey));
            r.ja(format!("署名鍵を読めません: {e}"));
        }
    }
}

async fn check_upstreams(config: &Config, r: &mut Report) {
    let Ok((rules, trust)) = crate::shared::load_rules(&config.rules_dir) else { return };
    for route in rules.profiles().iter().flat_map(|p| &p.routes) {
        // The same trust the gateway uses for this route.
        let tls = trust.route(&route.host).map(|t| t.http1.clone());
        let probe = crate::control::doctor_certs::probe_upstream(&route.upstream, tls).await;
        let subject = format!("{} -> {}:{}", route.host, route.upstream.host, route.upstream.port);
        r.push("upstream", probe.level, subject, probe.message, probe.next);
        if let Some(ja) = probe.message_ja {
            r.ja(ja);
        }
    }
}

async fn check_clock(config: &Config, r: &mut Report) {
    let Some(server) = config.clock.ntp_server.clone() else {
        r.push(
            "clock",
            Level::Warn,
            "ntp",
            "no [clock] ntp_server: the offset is not measured",
            Some(Step::SetNtpServer),
        );
        r.ja("[clock] ntp_server が未設定のため、時刻のずれを測っていません");
        return;
    };
    let max = f64::from(config.clock.max_offset_ms) / 1000.0;
    let asked = server.clone();
    let measured = tokio::task::spawn_blocking(move || crate::sntp::query(&asked, Duration::from_secs(2))).await;
    match measured {
        Ok(Ok(o)) => {
            let level = if o.offset_secs.abs() > max { Level::Error } else { Level::Ok };
            let next = if level == Level::Ok { None } else { Some(Step::FixTimeSync) };
            r.push(
                "clock",
                level,
                server,
                format!("offset {:+.3} s (allowed ±{max} s), round trip {:.3} s", o.offset_secs, o.round_trip_secs),
                next,
            );
            if level != Level::Ok {
                r.ja(format!("時刻が {:+.3} 秒ずれています（許容 ±{max} 秒）", o.offset_secs));
            }
            r.with_value(o.offset_secs);
        }
        Ok(Err(e)) => {
            r.push("clock", Level::Warn, server, format!("offset not measured: {e}"), Some(Step::OpenNtpPort));
            r.ja(format!("時刻のずれを測れません: {e}"));
        }
        Err(_) => {
            r.push("clock", Level::Warn, server, "offset not measured", None);
            r.ja("時刻のずれを測れません");
        }
    }
}

/// At start with `[clock] refuse_start = true`: an error when the offset
/// was measured and is too large; a warning (and start) when it could not be.
pub fn clock_at_start(config: &crate::config::ClockConfig) -> Result<(), String> {
    let (true, Some(server)) = (config.refuse_start, &config.ntp_server) else { return Ok(()) };
    let max = f64::from(config.max_offset_ms) / 1000.0;
    match crate::sntp::query(server, Duration::from_secs(2)) {
        Ok(o) if o.offset_secs.abs() > max => Err(format!(
            "the clock is {:+.3} s off `{server}` (allowed ±{max} s; [clock] refuse_start = true): fix time sync before starting",
            o.offset_secs
        )),
        Ok(_) => Ok(()),
        Err(e) => {
            log::warn!("clock not checked at start: {e}");
            Ok(())
        }
    }
}
