//! The durable facts about people and devices as one immutable snapshot:
//! users, devices, suspensions, emergency stops, overtime grants and
//! maintenance windows. The store builds it; the engine only reads it. The
//! big tables (users, devices, certificates) are persistent maps: a copy is
//! O(1) and a write copies only the path to its entry, so an admin change
//! costs the same with 100 devices or a million. The small tables sit behind
//! an `Arc` each. It must never do I/O or read the clock.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::device::{DeviceKey, DeviceKind, DeviceStatus, Os, Ownership, Version};

/// The hasher of the maps read on every request. Seeded at random per
/// process like std's (no one can aim keys at one bucket), and several
/// times cheaper than std's SipHash on short ids: the request path looks up
/// a host, a user, a device and a role on every request.
pub type Hasher = ahash::RandomState;
/// A `HashMap` with [`Hasher`].
pub type Map<K, V> = HashMap<K, V, Hasher>;
/// A persistent map with [`Hasher`]: a change copies only the path to it.
pub type SharedMap<K, V> = imbl::GenericHashMap<K, V, Hasher, imbl::shared_ptr::DefaultSharedPtr>;

/// Users by id. Values sit behind an `Arc` so the map's nodes stay small:
/// inline 400-byte devices made a million of them cost 1.8 GiB.
pub type Users = SharedMap<String, Arc<User>>;
/// Registered devices by id.
pub type Devices = SharedMap<String, Arc<Device>>;

/// Everything the engine needs to know about people and devices.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub users: Users,
    pub devices: Devices,
    pub stops: Arc<Stops>,
    /// Overtime grants by whom they cover (a person or a whole department).
    pub overtime: Arc<Map<Grantee, Vec<OvertimeGrant>>>,
    pub maintenance: Arc<Vec<MaintenanceWindow>>,
    /// Device ids by client-certificate fingerprint; kept by whoever builds the state.
    pub certificates: SharedMap<[u8; 32], String>,
    /// The register of apps in development and of reviews (Abiko 10.).
    pub apps: Arc<AppRegister>,
}

/// Which apps are still in development, and the reviews 行政管理課 recorded
/// (Abiko 10.: customisation and integrations are reviewed before an app's
/// full operation). An app not in `stages` is in operation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppRegister {
    pub stages: HashMap<(String, u64), AppStage>,
    pub reviews: Vec<Review>,
}

impl AppRegister {
    pub fn in_development(&self, profile: &str, app: u64) -> bool {
        self.stages.get(&(profile.to_owned(), app)).is_some_and(|s| s.stage == Stage::Development)
    }

    /// Is `subject` reviewed for this app (a review naming a token covers
    /// only that token, see [`AppRegister::token_reviewed`])?
    pub fn reviewed(&self, profile: &str, app: u64, subject: Subject) -> bool {
        self.reviews
            .iter()
            .any(|r| r.profile == profile && r.app == app && r.subject == subject && r.token_sha256.is_none())
    }

    /// Was this API token itself reviewed (by its SHA-256, lower-case hex)?
    pub fn token_reviewed(&self, profile: &str, sha256_hex: &str) -> bool {
        self.reviews.iter().any(|r| {
            r.profile == profile && r.subject == Subject::ApiToken && r.token_sha256.as_deref() == Some(sha256_hex)
        })
    }
}

/// An app's stage, as registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppStage {
    pub profile: String,
    pub app: u64,
    pub stage: Stage,
    pub reason: String,
    pub since: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Being built: customisation and integrations need no review yet.
    Development,
    /// In full operation (本格運用): they need a recorded review.
    Operation,
}

/// What a review covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    /// JavaScript / CSS customisation.
    Customize,
    /// An API-token integration.
    ApiToken,
    /// A webhook integration (recorded; not visible on the wire).
    Webhook,
}

impl Subject {
    pub fn as_str(self) -> &'static str {
        match self {
            Subject::Customize => "customize",
            Subject::ApiToken => "api_token",
            Subject::Webhook => "webhook",
        }
    }
}

/// One review in the register: app, what was reviewed, by whom, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub id: i64,
    pub profile: String,
    pub app: u64,
    pub subject: Subject,
    /// For an API-token review, the token's SHA-256 (lower-case hex) when
    /// the review was of that token only; the token itself is never kept.
    pub token_sha256: Option<String>,
    pub reviewer: String,
    pub reviewed_on: NaiveDate,
    pub note: String,
}

impl State {
    /// The device a verified client certificate was issued to.
    pub fn device_by_certificate(&self, fingerprint: &[u8; 32]) -> Option<&Device> {
        let id = self.certificates.get(fingerprint)?;
        self.devices.get(id).map(|d| &**d).filter(|d| {
            d.certificate.as_ref() == Some(fingerprint) || d.previous_certificate.as_ref() == Some(fingerprint)
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub display_name: String,
    /// A role named in the profiles' `[roles.*]` tables (`councillor`, `staff`).
    pub role: String,
    /// The profiles this user may use at all.
    pub profiles: Vec<String>,
    /// Account suspended (第18条): nothing passes while active.
    pub suspended: Option<Flag>,
    /// Use restricted to reading (only GET and HEAD pass).
    pub restricted: Option<Flag>,
    /// The department (所属) whose supervisor orders this person's overtime.
    #[serde(default)]
    pub department: Option<String>,
    /// The named working-hours schedule (`[schedules.NAME]`) this person
    /// works; `None`, or a name a profile lacks: that profile's `[hours]`.
    #[serde(default)]
    pub schedule: Option<String>,
}

/// A suspension or restriction: why, since when, and until when (open-ended if `None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flag {
    pub reason: String,
    pub since: DateTime<Utc>,
    pub until: Option<DateTime<Utc>>,
}

impl Flag {
    pub fn active_at(&self, now: DateTime<Utc>) -> bool {
        self.until.is_none_or(|until| now < until)
    }
}

/// A registered device: the fields of 様式第1号 plus its key and status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    pub id: String,
    pub owner: String,
    pub kind: DeviceKind,
    pub ownership: Ownership,
    pub os: Os,
    pub os_version: Version,
    pub security_software: Option<SecuritySoftware>,
    pub key: DeviceKey,
    pub status: DeviceStatus,
    /// SHA-256 of the DER of the client certificate issued to it, if any.
    pub certificate: Option<[u8; 32]>,
    /// The certificate a renewal replaced: it keeps proving the device
    /// until it expires (the TLS layer refuses it then), so a renewal
    /// before expiry cuts nobody off while the new one is installed.
    pub previous_certificate: Option<[u8; 32]>,
    /// Recorded at approval when the device was judged fit below the
    /// profile's minimums; it wins over them.
    pub exception: Option<PostureException>,
}

/// An exception the 情報システム責任者 recorded when approving a device
/// (熊本 第12条第2項: the registration is decided after checking the
/// device's security; 第15条): the device passes although its OS family or
/// version is below the profile's `min_os`, or its signatures are older than
/// `max_age_days`. It never waives what the documents themselves require
/// (a device kind and ownership per role, security software being present).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostureException {
    pub reason: String,
    /// The admin token name that approved it.
    pub approver: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecuritySoftware {
    pub name: String,
    /// Date of the last signature update.
    pub updated: NaiveDate,
}

/// Emergency stops (第6条第4項): everything, or named profiles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stops {
    pub global: Option<Stop>,
    pub profiles: HashMap<String, Stop>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop {
    pub reason: String,
    pub since: DateTime<Utc>,
}

/// Overtime ordered by a supervisor (Abiko 8.(1)): lets a person, or every
/// member of a department, in outside their hours, holidays included,
/// between `start` and `end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OvertimeGrant {
    pub id: i64,
    /// `"user": id` or `"department": name` in JSON.
    #[serde(flatten)]
    pub grantee: Grantee,
    /// The profile it applies to; `None` for every profile that honours grants.
    pub profile: Option<String>,
    /// Who ordered it: the supervisor (所属長) by name.
    pub approver: String,
    pub reason: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// Whom a grant covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grantee {
    User(String),
    Department(String),
}

impl OvertimeGrant {
    pub fn covers(&self, profile: &str, now: DateTime<Utc>) -> bool {
        self.start <= now && now < self.end && self.profile.as_deref().is_none_or(|p| p == profile)
    }
}

/// Planned maintenance (熊本 第14条 ただし書き): nothing passes inside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceWindow {
    pub id: i64,
    /// `None` for every profile.
    pub profile: Option<String>,
    pub reason: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl MaintenanceWindow {
    pub fn covers(&self, profile: &str, now: DateTime<Utc>) -> bool {
        self.start <= now && now < self.end && self.profile.as_deref().is_none_or(|p| p == profile)
    }
}
