//! Posture reports: a device's agent tells the gateway what it runs now
//! (OS, version, security software) by sending an attestation token whose
//! audience is [`POSTURE_AUDIENCE`]. A device proved by a client certificate
//! is judged on its record, so these reports are how that record stays
//! current. This module decides whether a report may update the record; it
//! reads no clock (the caller passes `now`) and does no I/O.

use chrono::{DateTime, Utc};

use crate::attestation::{verify, AttestationError, Claims};
use crate::device::DeviceStatus;
use crate::state::Devices;

/// The `aud` of a posture report; no profile may use it, so a report is
/// never a pass to a SaaS and an access token is never a report.
pub const POSTURE_AUDIENCE: &str = "sekisho:posture";
/// Clock skew allowed between device and gateway.
const LEEWAY_SECS: i64 = 60;
/// Longest lifetime a report token may claim.
const MAX_LIFETIME_SECS: i64 = 600;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Token(#[from] AttestationError),
    #[error("the report is signed by device `{0}`, not by `{1}`")]
    OtherDevice(String, String),
    #[error("the report's audience must be `sekisho:posture`")]
    Audience,
    #[error("the report names user `{0}`, who does not own the device")]
    NotOwner(String),
    #[error("the device is not approved")]
    NotApproved,
    #[error("the report is expired, from the future, or lives longer than 600 s")]
    Stale,
}

/// Checks a report for device `id` and returns the posture it asserts.
/// Ordering against earlier reports (a replayed old report) is the store's
/// job: it keeps the `iat` of the last accepted report.
pub fn check_report(token: &str, id: &str, devices: &Devices, now: DateTime<Utc>) -> Result<Claims, ReportError> {
    let verified = verify(token, devices)?;
    if verified.device != id {
        return Err(ReportError::OtherDevice(verified.device, id.to_owned()));
    }
    let c = verified.claims;
    if c.aud != POSTURE_AUDIENCE {
        return Err(ReportError::Audience);
    }
    let device = devices.get(id).ok_or_else(|| AttestationError::UnknownDevice(id.to_owned()))?;
    if c.sub != device.owner {
        return Err(ReportError::NotOwner(c.sub));
    }
    if device.status != DeviceStatus::Approved {
        return Err(ReportError::NotApproved);
    }
    c.check_timing(now.timestamp(), LEEWAY_SECS, MAX_LIFETIME_SECS).map_err(|_| ReportError::Stale)?;
    Ok(c)
}

#[cfg(test)]
#[path = "posture_tests.rs"]
mod tests;
