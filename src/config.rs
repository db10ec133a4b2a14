//! The gateway's own configuration (`sekisho.toml`): listeners, files and
//! admin tokens. Parsed strictly like the rules; it must never hold a
//! secret in clear text (admin tokens appear only as SHA-256 hashes).

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A validated gateway configuration. Relative paths are resolved against
/// the directory of the configuration file.
#[derive(Debug, Clone)]
pub struct Config {
    pub https: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub threads: usize,
    pub data_dir: PathBuf,
    pub rules_dir: PathBuf,
    pub audit_log: PathBuf,
    pub tls: TlsConfig,
    pub admin: AdminConfig,
    pub demo_upstream: Option<SocketAddr>,
    /// Idle keep-alive limit for client connections.
    pub keepalive_secs: u64,
    /// Requests are refused (503) once the state could not be confirmed
    /// against the store for this long.
    pub state_max_age: std::time::Duration,
    /// Requests in flight (downloads, WebSockets) are judged again at least
    /// this often, so hours that end or a maintenance window that begins
    /// end them too, not only an administrator's change.
    pub rejudge: std::time::Duration,
    pub limits: Limits,
    /// Names this gateway in every audit line (`[gateway] replica_id`,
    /// default the host name), so files of several gateways can be merged.
    pub replica_id: String,
    pub audit: AuditConfig,
    pub clock: ClockConfig,
    /// Where the state and the admin audit trail are kept (`[store]`).
    pub store: StoreConfig,
}

/// Rotation, retention and signing of the request audit trail (`[audit]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// Rotate once the active file reaches this many bytes.
    pub rotate_bytes: u64,
    /// Rotate when the date changes in Asia/Tokyo.
    pub rotate_daily: bool,
    /// Delete rotated files (and their digests) older than this; `None` keeps them.
    pub retention_days: Option<u32>,
    /// gzip rotated files.
    pub compress: bool,
    /// The Ed25519 key that signs digests and checkpoints (created on first start, 0600).
    pub signing_key: PathBuf,
    /// A signed checkpoint of the chain head at most this often while lines are written.
    pub checkpoint_secs: u32,
}

/// The clock check (`[clock]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockConfig {
    /// An NTP server (`host:port`, port 123 if omitted) to measure the offset against.
    pub ntp_server: Option<String>,
    /// An offset above this is an error in `sekisho doctor`.
    pub max_offset_ms: u32,
    /// Refuse to start when the offset could be measured and is above `max_offset_ms`.
    pub refuse_start: bool,
}

/// The state store (`[store]`): an SQLite file for one gateway (the
/// default), or a PostgreSQL database that any number of replicas share.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    Sqlite { path: PathBuf },
    Postgres(Box<PgConfig>),
}

/// How to reach the PostgreSQL database. The URL never holds a password:
/// it is read from a file or an environment variable at each connection,
/// so it can be rotated without a restart and never sits in `sekisho.toml`.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// Parsed from `url` (a `postgres://` URL or `key=value` pairs).
    pub connect: tokio_postgres::Config,
    pub password: Option<PasswordSource>,
    /// TLS to the database, verified against this CA (PEM); without it the
    /// connection is plain TCP, so `sslmode=require` needs it.
    pub ca_cert: Option<PathBuf>,
    /// A client certificate and key (PEM) for databases that ask for one.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Each database call must finish within this, or it counts as failed.
    pub timeout: std::time::Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    File(PathBuf),
    Env(String),
}

/// Rate limits (governor, per key, with a burst of twice the rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Requests per second per client address, checked before any token work.
    #[serde(default = "default_per_client")]
    pub per_client_rps: NonZeroU32,
    /// Requests per second per attested user.
    #[serde(default = "default_per_user")]
    pub per_user_rps: NonZeroU32,
    /// Failed admin authentications per minute per source address.
    #[serde(default = "default_admin_failures")]
    pub admin_failures_per_minute: NonZeroU32,
    /// Open connections per client address. Offices behind one NAT address
    /// share it: size it for the whole office.
    #[serde(default = "default_connections_per_client")]
    pub connections_per_client: NonZeroU32,
    /// How much of an IPv6 address is one client for the limits above and
    /// the admin lockout (default 64: a host can take any address of its /64).
    #[serde(default)]
    pub ipv6_prefix: Ipv6Prefix,
    /// Seconds a client has to send a whole request header (slowloris),
    /// and to finish its TLS handshake; on the admin listener also the
    /// longest a connection may sit idle.
    #[serde(default = "default_header_timeout")]
    pub header_timeout_secs: NonZeroU32,
    /// Seconds a client sending a request body may pause between chunks
    /// before it is answered 408 (a body trickled to hold an upstream).
    #[serde(default = "default_header_timeout")]
    pub body_idle_secs: NonZeroU32,
    /// Bytes per second a request body must arrive at, judged over each
    /// `body_idle_secs` the gateway spends waiting on it, or it is
    /// answered 408 (a body trickled just inside the pause limit).
    #[serde(default = "default_min_body_rate")]
    pub min_body_rate: NonZeroU32,
    /// Bytes per second a client must read answers at (judged over
    /// `send_window_secs` while the gateway waits to write), or it is cut
    /// (slow read).
    #[serde(default = "default_min_send_rate")]
    pub min_send_rate: NonZeroU32,
    /// The window over which `min_send_rate` is judged.
    #[serde(default = "default_send_window")]
    pub send_window_secs: NonZeroU32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_client_rps: default_per_client(),
            per_user_rps: default_per_user(),
            admin_failures_per_minute: default_admin_failures(),
            connections_per_client: default_connections_per_client(),
            ipv6_prefix: Ipv6Prefix::default(),
            header_timeout_secs: default_header_timeout(),
            body_idle_secs: default_header_timeout(),
            min_body_rate: default_min_body_rate(),
            min_send_rate: default_min_send_rate(),
            send_window_secs: default_send_window(),
        }
    }
}

/// The leading bits of an IPv6 address that name one client: 32 to 128.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u8")]
pub struct Ipv6Prefix(u8);

impl Ipv6Prefix {
    pub fn bits(self) -> u8 {
        self.0
    }
}

impl Default for Ipv6Prefix {
    fn default() -> Self {
        Ipv6Prefix(64)
    }
}

impl TryFrom<u8> for Ipv6Prefix {
    type Error = String;
    fn try_from(n: u8) -> Result<Self, Self::Error> {
        match n {
            32..=128 => Ok(Ipv6Prefix(n)),
            _ => Err(format!("`ipv6_prefix` must be 32..=128 (64: a subnet, 128: one address), not `{n}`")),
        }
    }
}

fn default_per_client() -> NonZeroU32 {
    NonZeroU32::new(2000).unwrap_or(NonZeroU32::MIN)
}

fn default_per_user() -> NonZeroU32 {
    NonZeroU32::new(200).unwrap_or(NonZeroU32::MIN)
}

fn default_admin_failures() -> NonZeroU32 {
    NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN)
}

fn default_connections_per_client() -> NonZeroU32 {
    NonZeroU32::new(1000).unwrap_or(NonZeroU32::MIN)
}

fn default_send_window() -> NonZeroU32 {
    NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN)
}

/// As slow as the slowest read allowed: a mobile link uploading a photo
/// stays far above it, a body trickled to hold an upstream far below.
fn default_min_body_rate() -> NonZeroU32 {
    NonZeroU32::new(1024).unwrap_or(NonZeroU32::MIN)
}

fn default_min_send_rate() -> NonZeroU32 {
    NonZeroU32::new(1024).unwrap_or(NonZeroU32::MIN)
}

fn default_header_timeout() -> NonZeroU32 {
    NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN)
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Create a development CA and server certificate when the files are missing.
    pub generate_dev_certs: bool,
    /// The device CA (`sekisho ca init`): client certificates it signed
    /// are requested on the HTTPS listener, and approved devices can be
    /// issued one.
    pub device_ca: Option<(PathBuf, PathBuf)>,
    /// Default lifetime of an issued device certificate: its re-check
    /// (熊本 第15条), renewed before it ends.
    pub device_cert_days: u32,
    /// The CA of the HTTPS certificate, when devices must be told to trust
    /// it (a private CA): it goes into each enrollment profile.
    pub server_ca: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub tokens: Vec<AdminToken>,
    /// Where a first start writes a generated all-roles token (mode 0600)
    /// when `tokens` is empty; the `sekisho admin` client reads it.
    pub bootstrap_token_file: Option<PathBuf>,
    /// Serve the admin API over HTTPS with this certificate and key.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub console: ConsoleConfig,
    /// The operator accepted plain HTTP on a non-loopback admin address.
    pub insecure_plain_http: bool,
}

/// The browser console on the admin listener (`/console/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve it at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A session unused for this long ends (signed out).
    #[serde(default = "default_console_idle")]
    pub idle_secs: NonZeroU32,
    /// A session ends this long after sign-in, however busy.
    #[serde(default = "default_console_max")]
    pub max_secs: NonZeroU32,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig { enabled: true, idle_secs: default_console_idle(), max_secs: default_console_max() }
    }
}

fn default_console_idle() -> NonZeroU32 {
    NonZeroU32::new(30 * 60).unwrap_or(NonZeroU32::MIN)
}

fn default_console_max() -> NonZeroU32 {
    NonZeroU32::new(8 * 60 * 60).unwrap_or(NonZeroU32::MIN)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminToken {
    pub name: String,
    pub roles: Vec<Role>,
    pub sha256: [u8; 32],
    /// The department a `supervisor` token heads (所属長 of 総務課).
    pub department: Option<String>,
}

impl AdminToken {
    /// The token among `tokens` whose hash matches `presented`. Every hash
    /// is compared, each in constant time, against the SHA-256 of what was
    /// presented: how long it takes says nothing of how close a guess came
    /// (`cargo bench --bench micro -- "admin token"` measures it).
    pub fn matching<'a>(tokens: &'a [AdminToken], presented: &str) -> Option<&'a AdminToken> {
        use sha2::Digest as _;
        use subtle::ConstantTimeEq as _;
        let hash: [u8; 32] = sha2::Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for t in tokens {
            if bool::from(t.sha256.ct_eq(&hash)) {
                found = Some(t);
            }
        }
        found
    }
}

/// Admin roles after 熊本市議会基準 第5条–第7条.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// 情報システム責任者: decides device registrations, changes settings.
    SystemManager,
    /// 統括管理者: accounts, suspension and emergency stop.
    GeneralAdmin,
    /// 管理者 and auditors: read the audit trail and status.
    Auditor,
    /// A councillor's device agent or the ICT支援員 (第8条): may only file
    /// registration applications (様式第1号), which start `pending`.
    Applicant,
    /// A department's head (所属長, 我孫子 8.(1)): orders overtime for the
    /// members of their own department only, and lists and withdraws those
    /// grants. The token names the department.
    Supervisor,
}

impl Role {
    /// Every role that needs nothing else (a supervisor also needs a department).
    pub const ALL: [Role; 4] = [Role::SystemManager, Role::GeneralAdmin, Role::Auditor, Role::Applicant];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::SystemManager => "system_manager",
            Role::GeneralAdmin => "general_admin",
            Role::Auditor => "auditor",
            Role::Applicant => "applicant",
            Role::Supervisor => "supervisor",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read `{path}`: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid { path: String, line: usize, column: usize, message: String },
    #[error("{path}: {message}")]
    Semantic { path: String, message: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Config::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            let before = text.get(..at).unwrap_or(text);
            ConfigError::Invalid {
                path: shown.clone(),
                line: before.matches('\n').count() + 1,
                column: before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1,
                message: e.message().to_owned(),
            }
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        raw.convert(base).map_err(|message| ConfigError::Semantic { path: shown, message })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    gateway: RawGateway,
    tls: RawTls,
    admin: RawAdmin,
    #[serde(default)]
    demo: Option<RawDemo>,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    clock: RawClock,
    #[serde(default)]
    store: RawStore,
}

#[derive(Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawBackend {
    #[default]
    Sqlite,
    Postgres,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    #[serde(default)]
    backend: RawBackend,
    /// SQLite: the database file (default `<data_dir>/state.sqlite3`).
    path: Option<PathBuf>,
    url: Option<String>,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    ca_cert: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    #[serde(default = "default_store_timeout")]
    timeout_secs: std::num::NonZeroU32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    #[serde(default = "default_rotate_bytes")]
    rotate_bytes: u64,
    #[serde(default = "default_true")]
    rotate_daily: bool,
    retention_days: Option<NonZeroU32>,
    #[serde(default = "default_true")]
    compress: bool,
    signing_key: Option<PathBuf>,
    #[serde(default = "default_checkpoint")]
    checkpoint_secs: NonZeroU32,
}

impl Default for RawAudit {
    fn default() -> Self {
        RawAudit {
            rotate_bytes: default_rotate_bytes(),
            rotate_daily: true,
            retention_days: None,
            compress: true,
            signing_key: None,
            checkpoint_secs: default_checkpoint(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawClock {
    ntp_server: Option<String>,
    max_offset_ms: Option<NonZeroU32>,
    #[serde(default)]
    refuse_start: bool,
}

fn default_rotate_bytes() -> u64 {
    256 << 20
}

fn default_checkpoint() -> NonZeroU32 {
    NonZeroU32::new(60).unwrap_or(NonZeroU32::MIN)
}

fn default_true() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    https: Option<SocketAddr>,
    http: Option<SocketAddr>,
    #[serde(default = "default_threads")]
    threads: usize,
    data_dir: PathBuf,
    rules_dir: PathBuf,
    audit_log: PathBuf,
    #[serde(default = "default_keepalive")]
    keepalive_secs: u64,
    #[serde(default = "default_state_max_age")]
    state_max_age_secs: std::num::NonZeroU32,
    #[serde(default = "default_rejudge")]
    rejudge_secs: std::num::NonZeroU32,
    replica_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
    #[serde(default)]
    generate_dev_certs: bool,
    device_ca_cert: Option<PathBuf>,
    device_ca_key: Option<PathBuf>,
    device_cert_days: Option<u32>,
    server_ca: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: SocketAddr,
    #[serde(default)]
    tokens: Vec<RawToken>,
    bootstrap_token_file: Option<PathBuf>,
    tls: Option<RawAdminTls>,
    #[serde(default)]
    console: ConsoleConfig,
    #[serde(default)]
    insecure_plain_http: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdminTls {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: String,
    roles: Vec<Role>,
    sha256: String,
    department: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDemo {
    upstream: SocketAddr,
}

fn default_threads() -> usize {
    2
}

fn default_keepalive() -> u64 {
    60
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            backend: RawBackend::Sqlite,
            path: None,
            url: None,
            password_file: None,
            password_env: None,
            ca_cert: None,
            client_cert: None,
            client_key: None,
            timeout_secs: default_store_timeout(),
        }
    }
}

fn default_store_timeout() -> std::num::NonZeroU32 {
    std::num::NonZeroU32::new(5).unwrap_or(std::num::NonZeroU32::MIN)
}

fn default_state_max_age() -> std::num::NonZeroU32 {
    std::num::NonZeroU32::new(30).unwrap_or(std::num::NonZeroU32::MIN)
}

fn default_rejudge() -> std::num::NonZeroU32 {
    std::num::NonZeroU32::new(30).unwrap_or(std::num::NonZeroU32::MIN)
}

impl RawConfig {
    fn convert(self, base: &Path) -> Result<Config, String> {
        let g = self.gateway;
        if g.https.is_none() && g.http.is_none() {
            return Err("[gateway] needs `https` or `http` (or both)".into());
        }
        if g.threads == 0 || g.threads > 256 {
            return Err(format!("[gateway] `threads` must be 1..=256, not `{}`", g.threads));
        }
        check_admin_exposure(&self.admin)?;
        let tokens = self.admin.tokens.into_iter().map(convert_token).collect::<Result<Vec<_>, _>>()?;
        if tokens.is_empty() && self.admin.bootstrap_token_file.is_none() {
            return Err("[admin] needs `tokens` or a `bootstrap_token_file`".into());
        }
        let at = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let replica_id = replica_id(g.replica_id)?;
        let data_dir = at(g.data_dir);
        let audit = convert_audit(self.audit, &data_dir, &at)?;
        let clock = convert_clock(self.clock)?;
        let device_cert_days = self.tls.device_cert_days.unwrap_or(365);
        if !(1..=825).contains(&device_cert_days) {
            return Err(format!("[tls] `device_cert_days` must be 1..=825, not `{device_cert_days}`"));
        }
        let device_ca = match (self.tls.device_ca_cert, self.tls.device_ca_key) {
            (Some(c), Some(k)) => Some((at(c), at(k))),
            (None, None) => None,
            _ => return Err("[tls] needs both `device_ca_cert` and `device_ca_key`, or neither".into()),
        };
        let store = self.store.convert(&data_dir, &at)?;
        Ok(Config {
            store,
            https: g.https,
            http: g.http,
            threads: g.threads,
            data_dir,
            replica_id,
            audit,
            clock,
            rules_dir: at(g.rules_dir),
            audit_log: at(g.audit_log),
            keepalive_secs: g.keepalive_secs,
            state_max_age: std::time::Duration::from_secs(g.state_max_age_secs.get().into()),
            rejudge: std::time::Duration::from_secs(g.rejudge_secs.get().into()),
            limits: self.limits,
            tls: TlsConfig {
                cert: at(self.tls.cert),
                key: at(self.tls.key),
                generate_dev_certs: self.tls.generate_dev_certs,
                device_ca,
                device_cert_days,
                server_ca: self.tls.server_ca.map(at),
            },
            admin: AdminConfig {
                listen: self.admin.listen,
                tokens,
                bootstrap_token_file: self.admin.bootstrap_token_file.map(at),
                tls: self.admin.tls.map(|t| (at(t.cert), at(t.key))),
                console: self.admin.console,
                insecure_plain_http: self.admin.insecure_plain_http,
            },
            demo_upstream: self.demo.map(|d| d.upstream),
        })
    }
}

/// Bearer tokens in clear on a network: refused unless the operator said so.
fn check_admin_exposure(admin: &RawAdmin) -> Result<(), String> {
    if admin.tls.is_none() && !admin.listen.ip().is_loopback() && !admin.insecure_plain_http {
        return Err(format!(
            "[admin] `listen = \"{}\"` is reachable from the network without TLS: admin tokens would cross it in clear; \
             add [admin.tls] with `cert` and `key`, listen on 127.0.0.1, or set `insecure_plain_http = true` \
             if a TLS proxy on this host terminates it",
            admin.listen
        ));
    }
    Ok(())
}

/// The replica name in every audit line: given, or the host name.
fn replica_id(given: Option<String>) -> Result<String, String> {
    let id = match given {
        Some(id) => id,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "sekisho".to_owned()),
    };
    let ok = !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        return Err(format!("[gateway] `replica_id` `{id}` must be 1 to 64 letters, digits, `-`, `_` or `.`"));
    }
    Ok(id)
}

fn convert_audit(raw: RawAudit, data_dir: &Path, at: &dyn Fn(PathBuf) -> PathBuf) -> Result<AuditConfig, String> {
    if raw.rotate_bytes < 4096 {
        return Err(format!("[audit] `rotate_bytes` must be at least 4096, not `{}`", raw.rotate_bytes));
    }
    Ok(AuditConfig {
        rotate_bytes: raw.rotate_bytes,
        rotate_daily: raw.rotate_daily,
        retention_days: raw.retention_days.map(NonZeroU32::get),
        compress: raw.compress,
        signing_key: raw.signing_key.map_or_else(|| data_dir.join("audit-signing.key"), at),
        checkpoint_secs: raw.checkpoint_secs.get(),
    })
}

fn convert_clock(raw: RawClock) -> Result<ClockConfig, String> {
    if raw.refuse_start && raw.ntp_server.is_none() {
        return Err("[clock] `refuse_start = true` needs an `ntp_server` to measure the clock against".into());
    }
    if let Some(server) = &raw.ntp_server {
        if server.is_empty() || server.contains(char::is_whitespace) {
            return Err(format!("[clock] `ntp_server` `{server}` must be a host or host:port"));
        }
    }
    Ok(ClockConfig {
        ntp_server: raw.ntp_server,
        max_offset_ms: raw.max_offset_ms.map_or(1000, NonZeroU32::get),
        refuse_start: raw.refuse_start,
    })
}

impl RawStore {
    fn convert(self, data_dir: &Path, at: &dyn Fn(PathBuf) -> PathBuf) -> Result<StoreConfig, String> {
        if self.backend == RawBackend::Sqlite {
            let pg_only = [self.url.is_some(), self.password_file.is_some(), self.password_env.is_some()];
            let tls = [self.ca_cert.is_some(), self.client_cert.is_some(), self.client_key.is_some()];
            if pg_only.into_iter().chain(tls).any(|x| x) {
                return Err("[store] `url`, passwords and TLS files are for `backend = \"postgres\"`".into());
            }
            let path = self.path.map_or_else(|| data_dir.join("state.sqlite3"), at);
            return Ok(StoreConfig::Sqlite { path });
        }
        if self.path.is_some() {
            return Err("[store] `path` is for `backend = \"sqlite\"`; PostgreSQL takes a `url`".into());
        }
        let url = self.url.ok_or("[store] `backend = \"postgres\"` needs a `url`")?;
        let password = match (self.password_file, self.password_env) {
            (Some(f), None) => Some(PasswordSource::File(at(f))),
            (None, Some(v)) => Some(PasswordSource::Env(v)),
            (None, None) => None,
            (Some(_), Some(_)) => return Err("[store] give `password_file` or `password_env`, not both".into()),
        };
        let client_cert = match (self.client_cert, self.client_key) {
            (Some(c), Some(k)) => Some((at(c), at(k))),
            (None, None) => None,
            _ => return Err("[store] needs both `client_cert` and `client_key`, or neither".into()),
        };
        let connect = parse_pg_url(&url, self.ca_cert.is_some())?;
        let timeout = std::time::Duration::from_secs(self.timeout_secs.get().into());
        Ok(StoreConfig::Postgres(Box::new(PgConfig {
            connect,
            password,
            ca_cert: self.ca_cert.map(at),
            client_cert,
            timeout,
        })))
    }
}

/// Parses a PostgreSQL connection URL that must not carry a password. With
/// a CA configured, TLS is required (never `prefer`, which falls back to
/// plain TCP when the server declines); without one, TLS cannot be verified
/// and `sslmode=require` is refused rather than silently unverified.
pub fn parse_pg_url(url: &str, tls: bool) -> Result<tokio_postgres::Config, String> {
    use tokio_postgres::config::SslMode;
    let mut config: tokio_postgres::Config =
        url.parse().map_err(|e| format!("[store] `url` is not a PostgreSQL connection string: {e}"))?;
    if config.get_password().is_some() {
        return Err("[store] `url` must not contain a password: use `password_file` or `password_env`".into());
    }
    if config.get_hosts().is_empty() {
        return Err("[store] `url` names no host".into());
    }
    match (config.get_ssl_mode(), tls) {
        (SslMode::Disable, true) => return Err("[store] `ca_cert` is set but `url` says `sslmode=disable`".into()),
        (SslMode::Require, false) => {
            return Err(
                "[store] `sslmode=require` needs `ca_cert` (the CA that signed the database's certificate)".into()
            )
        }
        (_, true) => {
            config.ssl_mode(SslMode::Require);
        }
        (_, false) => {
            config.ssl_mode(SslMode::Disable);
        }
    }
    if config.get_application_name().is_none() {
        config.application_name("sekisho");
    }
    Ok(config)
}

fn convert_token(t: RawToken) -> Result<AdminToken, String> {
    let bytes = decode_hex(&t.sha256).and_then(|b| <[u8; 32]>::try_from(b).ok()).ok_or_else(|| {
        format!("admin token `{}`: `sha256` must be 64 hex digits (see `sekisho hash-token`)", t.name)
    })?;
    if t.roles.is_empty() {
        return Err(format!("admin token `{}` has no roles", t.name));
    }
    let department = t.department.map(|d| d.trim().to_owned()).filter(|d| !d.is_empty());
    match (t.roles.contains(&Role::Supervisor), &department) {
        (true, None) => return Err(format!("admin token `{}`: a `supervisor` needs its `department`", t.name)),
        (false, Some(_)) => {
            return Err(format!("admin token `{}`: `department` belongs only to a `supervisor` token", t.name))
        }
        _ => {}
    }
    Ok(AdminToken { name: t.name, roles: t.roles, sha256: bytes, department })
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect()
}

/// 64 hex digits to 32 bytes.
pub fn decode_sha256(s: &str) -> Option<[u8; 32]> {
    decode_hex(s).and_then(|b| <[u8; 32]>::try_from(b).ok())
}

pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

/// Appends `bytes` to `out` in lowercase hex.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    // Through a buffer: a `push` per digit checks capacity and encodes a
    // char each time, and every audit line carries 64 digits.
    for chunk in bytes.chunks(32) {
        let mut buf = [0u8; 64];
        for (pair, b) in buf.chunks_exact_mut(2).zip(chunk) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 0xf)];
        }
        out.push_str(std::str::from_utf8(&buf[..chunk.len() * 2]).unwrap_or_default());
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
