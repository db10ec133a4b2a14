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

/// Users by id. Values sit behind an `Arc` so the map's nodes stay small:
/// inline 400-byte devices made a million of them cost 1.8 GiB.
pub type Users = imbl::HashMap<String, Arc<User>>;
/// Registered devices by id.
pub type Devices = imbl::HashMap<String, Arc<Device>>;

/// Everything the engine needs to know about people and devices.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub users: Users,
    pub devices: Devices,
    pub stops: Arc<Stops>,
    pub overtime: Arc<HashMap<String, Vec<OvertimeGrant>>>,
    pub maintenance: Arc<Vec<MaintenanceWindow>>,
    /// Device ids by client-certificate fingerprint; kept by whoever builds the state.
    pub certificates: imbl::HashMap<[u8; 32], String>,
}

impl State {
    /// The device a verified client certificate was issued to.
    pub fn device_by_certificate(&self, fingerprint: &[u8; 32]) -> Option<&Device> {
        let id = self.certificates.get(fingerprint)?;
        self.devices.get(id).map(|d| &**d).filter(|d| d.certificate.as_ref() == Some(fingerprint))
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

/// Overtime ordered by a supervisor (Abiko 8.(1)): lets a user in outside
/// the weekly windows, holidays included, between `start` and `end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OvertimeGrant {
    pub id: i64,
    pub user: String,
    /// The profile it applies to; `None` for every profile that honours grants.
    pub profile: Option<String>,
    pub approver: String,
    pub reason: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
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
