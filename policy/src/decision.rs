//! The engine's answer. Owns `Decision` and the stable reason codes that
//! block pages, the `Sekisho-Deny-Reason` header, metrics and the audit trail
//! all share. It must never carry anything secret (tokens, keys).

use std::borrow::Cow;

use chrono::{DateTime, Utc};

/// What `decide` returns: a request passes, or it is blocked for one named reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'a> {
    Allow(Allow<'a>),
    Deny(Deny),
}

/// Who was let through and on what basis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow<'a> {
    pub user: &'a str,
    pub device: &'a str,
    pub basis: Basis,
    /// What the adapter must still read in the request body before any
    /// byte of it goes upstream (`engine::check_held_body`); `None` when
    /// the headers were enough.
    pub inspect: Option<Inspect>,
}

/// Checks that need the whole request body. The adapter holds the body
/// (up to its hold limit; a larger one is refused), then calls
/// `engine::check_held_body` once at its end; a request without a body is
/// checked as an empty one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inspect {
    /// A sign-in post: the login in this field must be one the user may
    /// use (their own, or a shared one they hold).
    pub login_field: Option<String>,
    /// The app the body names (`[apps] field`) must be in development or
    /// reviewed for each of these (Abiko 10.).
    pub reviews: Vec<crate::state::Subject>,
    /// The query already named an app (checked by `decide`): a body that
    /// names none is then about that app.
    pub app_in_query: bool,
}

/// Why the clock allowed the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// The profile is open at every hour.
    AlwaysOpen,
    /// The request fell inside a weekly window.
    Hours,
    /// Outside the windows, but an overtime grant covered the user.
    Overtime,
}

/// A denial: the reason code, which rule produced it, and when trying again may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deny {
    pub reason: DenyReason,
    /// The rule that fired, for the audit trail and the page (`hours.weekly`,
    /// `holiday 勤労感謝の日`, `suspension: lost phone`). Never secret.
    pub rule: Cow<'static, str>,
    /// The user, when the attestation identified one.
    pub user: Option<String>,
    /// The device, when the attestation named a registered one.
    pub device: Option<String>,
    /// When the block is expected to lift (maintenance end, next opening).
    pub retry_at: Option<DateTime<Utc>>,
}

impl Deny {
    pub fn new(reason: DenyReason, rule: impl Into<Cow<'static, str>>) -> Self {
        Self { reason, rule: rule.into(), user: None, device: None, retry_at: None }
    }

    #[must_use]
    pub fn for_user(mut self, user: &str, device: &str) -> Self {
        self.user = Some(user.to_owned());
        self.device = Some(device.to_owned());
        self
    }

    #[must_use]
    pub fn retry_at(mut self, at: Option<DateTime<Utc>>) -> Self {
        self.retry_at = at;
        self
    }
}

impl Decision<'_> {
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }

    pub fn deny_reason(&self) -> Option<DenyReason> {
        match self {
            Decision::Allow(_) => None,
            Decision::Deny(d) => Some(d.reason),
        }
    }
}

/// Every reason a request can be blocked for. The codes are a public
/// interface (headers, JSON, audit, metrics): never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DenyReason {
    PolicyNotInForce,
    EmergencyStop,
    Maintenance,
    UntrustedNetwork,
    AttestationMissing,
    AttestationInvalid,
    DeviceUnknown,
    DevicePending,
    DeviceRevoked,
    UserNotPermitted,
    UserSuspended,
    DeviceNotPermitted,
    OsOutdated,
    SecuritySoftwareMissing,
    SecuritySoftwareOutdated,
    Holiday,
    OutsideHours,
    UserRestricted,
    FeatureNotPermitted,
    IntegrationNotApproved,
    AccountMismatch,
    SpecificPersonalInformation,
}

impl DenyReason {
    pub const ALL: [DenyReason; 22] = [
        DenyReason::PolicyNotInForce,
        DenyReason::EmergencyStop,
        DenyReason::Maintenance,
        DenyReason::UntrustedNetwork,
        DenyReason::AttestationMissing,
        DenyReason::AttestationInvalid,
        DenyReason::DeviceUnknown,
        DenyReason::DevicePending,
        DenyReason::DeviceRevoked,
        DenyReason::UserNotPermitted,
        DenyReason::UserSuspended,
        DenyReason::DeviceNotPermitted,
        DenyReason::OsOutdated,
        DenyReason::SecuritySoftwareMissing,
        DenyReason::SecuritySoftwareOutdated,
        DenyReason::Holiday,
        DenyReason::OutsideHours,
        DenyReason::UserRestricted,
        DenyReason::FeatureNotPermitted,
        DenyReason::IntegrationNotApproved,
        DenyReason::AccountMismatch,
        DenyReason::SpecificPersonalInformation,
    ];

    /// The stable snake_case code.
    pub fn code(self) -> &'static str {
        match self {
            DenyReason::PolicyNotInForce => "policy_not_in_force",
            DenyReason::EmergencyStop => "emergency_stop",
            DenyReason::Maintenance => "maintenance",
            DenyReason::UntrustedNetwork => "untrusted_network",
            DenyReason::AttestationMissing => "attestation_missing",
            DenyReason::AttestationInvalid => "attestation_invalid",
            DenyReason::DeviceUnknown => "device_unknown",
            DenyReason::DevicePending => "device_pending",
            DenyReason::DeviceRevoked => "device_revoked",
            DenyReason::UserNotPermitted => "user_not_permitted",
            DenyReason::UserSuspended => "user_suspended",
            DenyReason::DeviceNotPermitted => "device_not_permitted",
            DenyReason::OsOutdated => "os_outdated",
            DenyReason::SecuritySoftwareMissing => "security_software_missing",
            DenyReason::SecuritySoftwareOutdated => "security_software_outdated",
            DenyReason::Holiday => "holiday",
            DenyReason::OutsideHours => "outside_hours",
            DenyReason::UserRestricted => "user_restricted",
            DenyReason::FeatureNotPermitted => "feature_not_permitted",
            DenyReason::IntegrationNotApproved => "integration_not_approved",
            DenyReason::AccountMismatch => "account_mismatch",
            DenyReason::SpecificPersonalInformation => "specific_personal_information",
        }
    }
}

impl std::fmt::Display for DenyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}
