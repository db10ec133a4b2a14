//! Rules files: one TOML profile per file, parsed strictly into types that
//! cannot be invalid. Raw serde structs (`deny_unknown_fields`) are
//! converted into [`Profile`]; any typo is an error naming file, line and
//! column. This module owns the file format and host routing; it must never
//! read files (callers pass the text) or the clock.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::Arc;

use chrono::NaiveDate;
use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use crate::device::{DeviceKind, Os, Ownership, Version};
use crate::schedule::{ClosedDates, Window};
use crate::state::{Hasher, Map};

/// Every profile, and which public host goes to which profile and route.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    profiles: Vec<Arc<Profile>>,
    hosts: Map<String, (usize, usize)>,
}

/// One municipality's rules for one service (one rules file).
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    /// Shown on block pages (`熊本市議会クラウドシステム (LINE WORKS)`).
    pub title: String,
    /// Whom a blocked user should contact; shown on block pages.
    pub contact: String,
    /// When that contact answers (熊本 第14条第2項), shown on block pages.
    pub contact_hours: Option<String>,
    pub timezone: chrono_tz::Tz,
    /// The `aud` every attestation for this profile must carry.
    pub audience: String,
    pub valid_from: Option<NaiveDate>,
    pub valid_until: Option<NaiveDate>,
    pub routes: Vec<Route>,
    /// The profile's own working hours: everyone's unless assigned a schedule.
    pub hours: Hours,
    /// Named working-hours schedules (Abiko 8.: each person's regular
    /// hours), each with its own holidays and closed dates.
    pub schedules: Map<String, Hours>,
    pub network: Network,
    pub attestation: AttestationRules,
    pub devices: DeviceRules,
    /// Device kinds and ownership allowed per user role; a role not listed may not use the profile.
    pub roles: Map<String, RoleRules>,
    /// Paths only some roles may use (customisation, plugins, deploys).
    pub admin_paths: Vec<AdminPaths>,
    /// Reviewed integration tokens; any other token is refused.
    pub integrations: Option<Integrations>,
    /// The SaaS login must be the attested user (no shared accounts).
    pub account: Option<AccountRule>,
    /// Customisation and integrations need a review once an app is in operation.
    pub apps: Option<AppRules>,
    /// Refuse request bodies that contain a 個人番号 (My Number), and how.
    pub my_number: Option<MyNumberRules>,
    /// The `Strict-Transport-Security` value the gateway sends on HTTPS
    /// answers (`[hsts]`); `None` sends none of its own.
    pub hsts: Option<String>,
}

/// `[content]` My Number detection (Abiko 5.(2)).
#[derive(Debug, Clone, PartialEq)]
pub struct MyNumberRules {
    /// Built-in keywords plus the profile's kintone field codes.
    pub keywords: Arc<crate::mynumber::Keywords>,
    /// The same for a request target, where field codes stand bare.
    pub target_keywords: Arc<crate::mynumber::Keywords>,
    /// What a low-confidence finding (the check digit alone) does.
    pub low: LowConfidence,
}

/// What a number found on its check digit alone, with no context, does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LowConfidence {
    /// Passes; the audit line notes it (never the number).
    Record,
    /// Refused like a high-confidence one.
    Block,
}

/// Paths reserved for some roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminPaths {
    pub paths: Vec<PathPattern>,
    /// Paths under `paths` that are not reserved (kintone's per-app settings
    /// under `/k/admin/app/`).
    pub except: Vec<PathPattern>,
    /// The methods reserved, upper case; empty: every method.
    pub methods: Vec<String>,
    pub roles: Vec<String>,
}

impl AdminPaths {
    /// Does this entry reserve `method` on `path`?
    pub fn covers(&self, method: &str, path: &str) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
            && self.paths.iter().any(|p| p.matches(path))
            && !self.except.iter().any(|p| p.matches(path))
    }
}

/// Apps and their reviews (Abiko 10.): which request field names the app,
/// and which paths change an app's JavaScript / CSS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRules {
    /// Query parameter and top-level JSON member naming the app (`app`).
    pub field: String,
    /// Writes to these paths customise the app: it must be in development
    /// or reviewed for `customize`.
    pub customize_paths: Vec<PathPattern>,
}

/// A path pattern: `*` stands for exactly one non-empty segment, a final
/// `**` for any rest (including none); segments compare case-insensitively
/// and one trailing `/` is ignored, so neither a case trick nor a slash can
/// slip past a rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PathPattern(String);

impl PathPattern {
    pub fn matches(&self, path: &str) -> bool {
        let mut want = self.0.split('/');
        let mut got = path.split('/');
        loop {
            match (want.next(), got.next()) {
                (None, None) | (Some("**"), _) => return true,
                (None, Some("")) => return got.next().is_none(),
                (Some("*"), Some(seg)) if !seg.is_empty() => {}
                (Some(w), Some(g)) if w.eq_ignore_ascii_case(g) => {}
                _ => return false,
            }
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PathPattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        let misplaced = s.split('/').rev().skip(1).any(|seg| seg == "**");
        match s.starts_with('/') && !s.contains(['?', '#']) && !misplaced {
            true => Ok(PathPattern(s)),
            false => {
                Err(format!("path pattern `{s}` must start with `/`, hold no query, and use `**` only at the end"))
            }
        }
    }
}

/// Integration tokens a municipality reviewed (Abiko 10.).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Integrations {
    /// Request header carrying the tokens, lower case; several may be comma-separated.
    pub header: String,
    pub approved: Vec<ApprovedToken>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovedToken {
    pub app: u64,
    /// SHA-256 of the token, so the rules never hold it in clear.
    pub sha256: [u8; 32],
}

/// Which header carries the SaaS login (`X-Cybozu-Authorization`:
/// base64 of `login:password`), where a browser posts it, and which logins
/// each user may use: their own, and shared ones they hold (Abiko 6.(3)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRule {
    pub header: String,
    /// sekisho user id to SaaS login name, where they differ.
    pub logins: HashMap<String, String>,
    /// Shared logins and the users given operating rights on them.
    pub shared: HashMap<String, Vec<String>>,
    /// Sign-in endpoints and the field that carries the login there.
    pub forms: Vec<LoginForm>,
}

/// A sign-in endpoint: requests to `path` carry the login in `field` (a
/// JSON member, a form field, or a query parameter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginForm {
    pub path: PathPattern,
    pub field: String,
}

impl AccountRule {
    pub fn login_for<'a>(&'a self, user: &'a str) -> &'a str {
        self.logins.get(user).map_or(user, String::as_str)
    }

    /// May `user` sign in as `login`? Their own login, or a shared one they hold.
    pub fn may_use(&self, user: &str, login: &str) -> bool {
        login == self.login_for(user) || self.shared.get(login).is_some_and(|holders| holders.iter().any(|h| h == user))
    }

    /// The login field of the sign-in endpoint at `path`, if it is one.
    pub fn form_at(&self, path: &str) -> Option<&str> {
        self.forms.iter().find(|f| f.path.matches(path)).map(|f| f.field.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Public host name, lower case, without port.
    pub host: String,
    pub upstream: Upstream,
    /// Extra PEM CA file trusted for this upstream (private CAs).
    pub ca_file: Option<String>,
    /// When set, only paths matching one of these patterns pass.
    pub allow_paths: Option<Vec<PathPattern>>,
    /// Longest wait for the upstream between reads (504 after it).
    pub timeout_secs: NonZeroU32,
}

/// Where a route forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl Upstream {
    /// `host` or `host:port` (IPv6 in brackets) as the upstream expects in `Host`.
    pub fn authority(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// `scheme://authority`.
    pub fn origin(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.authority())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hours {
    pub open: Open,
    pub closed_on_holidays: bool,
    pub closed_dates: Vec<ClosedDates>,
    /// Whether overtime grants from the state open the profile outside hours.
    pub overtime_grants: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Open {
    Always,
    Weekly(Vec<Window>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub trusted: Trusted,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trusted {
    /// Any network: the rule is about the device, not the address.
    Any,
    Cidrs(Vec<IpNet>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttestationRules {
    /// Longest `exp - iat` accepted.
    pub max_lifetime_secs: NonZeroU32,
    /// Clock skew tolerated on `iat` and `exp`.
    pub leeway_secs: u32,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeviceRules {
    /// Permitted operating systems with their minimum versions; empty means any.
    pub min_os: Vec<(Os, Version)>,
    pub security_software: Option<SecurityRule>,
    /// A client certificate issued to a registered device proves the device
    /// (browsers cannot send attestation headers); its posture then comes
    /// from the registration record.
    pub accept_certificates: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecurityRule {
    /// Signatures must have been updated within this many days.
    pub max_age_days: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRules {
    pub kinds: Vec<DeviceKind>,
    pub ownership: Vec<Ownership>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    #[error("{file}:{line}:{column}: {message}")]
    Invalid { file: String, line: usize, column: usize, message: String },
    #[error("{file}: host `{host}` is already routed by profile `{other}`")]
    DuplicateHost { file: String, host: String, other: String },
    #[error("{file}: profile name `{name}` is already used by another file")]
    DuplicateProfile { file: String, name: String },
}

impl Rules {
    /// Builds the rules from `(file name, text)` pairs; the first error wins.
    pub fn from_sources<'a>(sources: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Rules, RulesError> {
        let mut rules = Rules::default();
        for (file, text) in sources {
            rules.add(file, Profile::parse(file, text)?)?;
        }
        Ok(rules)
    }

    /// The profile and route serving a `Host` header value (port and case ignored).
    pub fn route(&self, host: &str) -> Option<(&Arc<Profile>, &Route)> {
        let name = strip_port(host);
        let found = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            self.hosts.get(&name.to_ascii_lowercase())
        } else {
            self.hosts.get(name)
        };
        let (p, r) = *found?;
        let profile = self.profiles.get(p)?;
        Some((profile, profile.routes.get(r)?))
    }

    pub fn profiles(&self) -> &[Arc<Profile>] {
        &self.profiles
    }

    pub fn profile(&self, name: &str) -> Option<&Arc<Profile>> {
        self.profiles.iter().find(|p| p.name == name)
    }

    fn add(&mut self, file: &str, profile: Profile) -> Result<(), RulesError> {
        if self.profile(&profile.name).is_some() {
            return Err(RulesError::DuplicateProfile { file: file.to_owned(), name: profile.name });
        }
        let index = self.profiles.len();
        for (r, route) in profile.routes.iter().enumerate() {
            if let Some((p, _)) = self.hosts.get(&route.host) {
                let other = self.profiles.get(*p).map(|p| p.name.clone()).unwrap_or_default();
                return Err(RulesError::DuplicateHost { file: file.to_owned(), host: route.host.clone(), other });
            }
            self.hosts.insert(route.host.clone(), (index, r));
        }
        self.profiles.push(Arc::new(profile));
        Ok(())
    }
}

/// `host:port`, `[v6]:port` or a bare host, to the bare host.
pub fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').map_or(host, |(h, _)| h);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

impl Profile {
    /// Parses one rules file. `file` is only used in error messages.
    pub fn parse(file: &str, text: &str) -> Result<Profile, RulesError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            invalid(file, text, at, e.message().to_owned())
        })?;
        raw.convert(file, text)
    }

    /// The hours of a person assigned `schedule` (the profile's own when
    /// unassigned or when this profile has no such schedule).
    pub fn hours_for(&self, schedule: Option<&str>) -> &Hours {
        schedule.and_then(|s| self.schedules.get(s)).unwrap_or(&self.hours)
    }

    pub fn role(&self, role: &str) -> Option<&RoleRules> {
        self.roles.get(role)
    }

    pub fn min_os(&self, os: Os) -> Option<Option<Version>> {
        if self.devices.min_os.is_empty() {
            return Some(None);
        }
        self.devices.min_os.iter().find(|(o, _)| *o == os).map(|(_, v)| Some(*v))
    }
}

/// Whether `name` can name a profile or a schedule: letters, digits, `-`, `_`.
pub fn is_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Network {
    /// Whether `addr` is a proxy whose forwarding headers are believed.
    pub fn is_trusted_proxy(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        self.trusted_proxies.iter().any(|n| n.contains(&addr))
    }

    pub fn is_trusted(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        match &self.trusted {
            Trusted::Any => true,
            Trusted::Cidrs(nets) => nets.iter().any(|n| n.contains(&addr)),
        }
    }
}

fn invalid(file: &str, text: &str, offset: usize, message: String) -> RulesError {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    RulesError::Invalid { file: file.to_owned(), line, column, message }
}

// ---- raw file format -------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    profile: RawProfile,
    #[serde(default)]
    routes: Vec<RawRoute>,
    hours: Spanned<RawHours>,
    #[serde(default)]
    schedules: HashMap<String, Spanned<RawSchedule>>,
    network: RawNetwork,
    #[serde(default)]
    attestation: Option<Spanned<RawAttestation>>,
    #[serde(default)]
    devices: RawDevices,
    #[serde(default)]
    roles: HashMap<String, RawRole>,
    #[serde(default)]
    admin_paths: Vec<RawAdminPaths>,
    integrations: Option<RawIntegrations>,
    account: Option<RawAccount>,
    apps: Option<RawApps>,
    #[serde(default)]
    content: RawContent,
    #[serde(default)]
    hsts: Option<Spanned<RawHsts>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHsts {
    #[serde(default = "default_hsts_max_age")]
    max_age_secs: u32,
    #[serde(default)]
    include_subdomains: bool,
    #[serde(default)]
    preload: bool,
}

/// One year: what scanners and the HSTS preload list ask for.
fn default_hsts_max_age() -> u32 {
    31_536_000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdminPaths {
    paths: Vec<PathPattern>,
    #[serde(default)]
    except: Vec<PathPattern>,
    #[serde(default)]
    methods: Vec<Method>,
    roles: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApps {
    field: Spanned<String>,
    #[serde(default)]
    customize_paths: Vec<PathPattern>,
}

/// An HTTP method name (letters only), kept upper case.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
struct Method(String);

impl TryFrom<String> for Method {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        match !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphabetic()) {
            true => Ok(Method(s.to_ascii_uppercase())),
            false => Err(format!("`{s}` is not an HTTP method")),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntegrations {
    header: String,
    #[serde(default)]
    approved: Vec<RawApproved>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApproved {
    app: u64,
    sha256: Sha256Hex,
    /// Free text for people (who reviewed, when); not used by the engine.
    #[serde(default, rename = "note")]
    _note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    header: Spanned<String>,
    #[serde(default)]
    logins: HashMap<String, String>,
    shared: Option<Spanned<HashMap<String, Vec<String>>>>,
    #[serde(default)]
    forms: Vec<RawLoginForm>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLoginForm {
    path: PathPattern,
    field: Spanned<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawContent {
    #[serde(default)]
    forbid_my_number: bool,
    my_number_low_confidence: Option<LowConfidence>,
    #[serde(default)]
    my_number_fields: Vec<String>,
}

/// 64 hex digits.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
struct Sha256Hex([u8; 32]);

impl TryFrom<String> for Sha256Hex {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        let bad = || format!("`{s}` is not a SHA-256 in 64 hex digits");
        if s.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = s.get(i * 2..i * 2 + 2).and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or_else(bad)?;
        }
        Ok(Sha256Hex(out))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: Spanned<String>,
    title: String,
    contact: String,
    contact_hours: Option<String>,
    timezone: TimeZone,
    audience: String,
    valid_from: Option<Date>,
    valid_until: Option<Spanned<Date>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    host: Spanned<String>,
    upstream: Upstream,
    ca_file: Option<String>,
    allow_paths: Option<Vec<PathPattern>>,
    timeout_secs: Option<NonZeroU32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHours {
    always: Option<bool>,
    weekly: Option<Vec<Window>>,
    #[serde(default)]
    closed_on_holidays: bool,
    #[serde(default)]
    closed_dates: Vec<ClosedDates>,
    #[serde(default)]
    overtime_grants: bool,
}

/// A named schedule: `[hours]` without `overtime_grants` (a profile-wide choice).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    always: Option<bool>,
    weekly: Option<Vec<Window>>,
    #[serde(default)]
    closed_on_holidays: bool,
    #[serde(default)]
    closed_dates: Vec<ClosedDates>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    trusted: Vec<NetSpec>,
    #[serde(default)]
    trusted_proxies: Vec<IpNetSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAttestation {
    max_lifetime_secs: Option<u32>,
    leeway_secs: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDevices {
    #[serde(default)]
    min_os: HashMap<Os, Version>,
    security_software: Option<RawSecurity>,
    #[serde(default)]
    accept_certificates: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecurity {
    required: bool,
    max_age_days: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    kinds: Vec<DeviceKind>,
    ownership: Vec<Ownership>,
}

/// How long an upstream may stay silent by default (a SaaS export can be slow).
const DEFAULT_TIMEOUT: NonZeroU32 = NonZeroU32::MIN.saturating_add(59);

/// Default and ceiling for token lifetimes (issue 2: at most 10 minutes by default).
const DEFAULT_LIFETIME: u32 = 600;
const MAX_LIFETIME: u32 = 3600;
const MAX_LEEWAY: u32 = 60;

impl RawFile {
    fn convert(self, file: &str, text: &str) -> Result<Profile, RulesError> {
        let err = |span: std::ops::Range<usize>, msg: String| invalid(file, text, span.start, msg);
        let p = self.profile;
        let name = p.name.get_ref().clone();
        if !is_name(&name) {
            return Err(err(p.name.span(), format!("profile name `{name}` must be letters, digits, `-` or `_`")));
        }
        if p.audience == crate::posture::POSTURE_AUDIENCE || p.audience.is_empty() {
            let msg =
                format!("profile `{name}`: `audience` must be non-empty and not `sekisho:posture` (posture reports)");
            return Err(err(p.name.span(), msg));
        }
        let valid_from = p.valid_from.map(|d| d.0);
        if let (Some(from), Some(until)) = (valid_from, &p.valid_until) {
            if from > until.get_ref().0 {
                return Err(err(
                    until.span(),
                    format!("`valid_until` {} is before `valid_from` {from}", until.get_ref().0),
                ));
            }
        }
        let routes = self.routes.into_iter().map(|r| convert_route(r, &err)).collect::<Result<Vec<_>, _>>()?;
        Ok(Profile {
            name,
            title: p.title,
            contact: p.contact,
            contact_hours: p.contact_hours,
            timezone: p.timezone.0,
            audience: p.audience,
            valid_from,
            valid_until: p.valid_until.map(|d| d.into_inner().0),
            routes,
            schedules: convert_schedules(self.schedules, self.hours.get_ref().overtime_grants, &err)?,
            hours: convert_hours(self.hours, &err)?,
            network: Network {
                trusted: convert_trusted(self.network.trusted),
                trusted_proxies: self.network.trusted_proxies.into_iter().map(|n| n.0).collect(),
            },
            attestation: convert_attestation(self.attestation, &err)?,
            devices: DeviceRules {
                min_os: sorted_min_os(self.devices.min_os),
                security_software: self
                    .devices
                    .security_software
                    .filter(|s| s.required)
                    .map(|s| SecurityRule { max_age_days: s.max_age_days }),
                accept_certificates: self.devices.accept_certificates,
            },
            roles: self
                .roles
                .into_iter()
                .map(|(k, r)| (k, RoleRules { kinds: r.kinds, ownership: r.ownership }))
                .collect(),
            admin_paths: self
                .admin_paths
                .into_iter()
                .map(|a| AdminPaths {
                    paths: a.paths,
                    except: a.except,
                    methods: a.methods.into_iter().map(|m| m.0).collect(),
                    roles: a.roles,
                })
                .collect(),
            integrations: self.integrations.map(|i| Integrations {
                header: i.header.to_ascii_lowercase(),
                approved: i.approved.into_iter().map(|a| ApprovedToken { app: a.app, sha256: a.sha256.0 }).collect(),
            }),
            account: self.account.map(|a| convert_account(a, &err)).transpose()?,
            apps: self.apps.map(|a| convert_apps(a, &err)).transpose()?,
            my_number: convert_content(self.content).map_err(|m| err(0..0, m))?,
            hsts: convert_hsts(self.hsts, &err)?,
        })
    }
}

type ErrAt<'a> = dyn Fn(std::ops::Range<usize>, String) -> RulesError + 'a;

/// `[hsts]` to the header value; absent means one year, `max_age_secs = 0` none.
fn convert_hsts(raw: Option<Spanned<RawHsts>>, err: &ErrAt<'_>) -> Result<Option<String>, RulesError> {
    let Some(raw) = raw else { return Ok(Some(format!("max-age={}", default_hsts_max_age()))) };
    let span = raw.span();
    let h = raw.into_inner();
    if h.preload && (!h.include_subdomains || h.max_age_secs < default_hsts_max_age()) {
        return Err(err(
            span,
            "[hsts] `preload` needs `include_subdomains = true` and `max_age_secs` of at least 31536000".into(),
        ));
    }
    if h.max_age_secs == 0 {
        return Ok(None);
    }
    let mut value = format!("max-age={}", h.max_age_secs);
    if h.include_subdomains {
        value.push_str("; includeSubDomains");
    }
    if h.preload {
        value.push_str("; preload");
    }
    Ok(Some(value))
}

fn convert_route(r: RawRoute, err: &ErrAt<'_>) -> Result<Route, RulesError> {
    let host = r.host.get_ref().trim().to_ascii_lowercase();
    if host.is_empty() || host.contains(['/', ':', ' ']) {
        return Err(err(r.host.span(), format!("route host `{}` must be a bare host name", r.host.get_ref())));
    }
    Ok(Route {
        host,
        upstream: r.upstream,
        ca_file: r.ca_file,
        allow_paths: r.allow_paths,
        timeout_secs: r.timeout_secs.unwrap_or(DEFAULT_TIMEOUT),
    })
}

fn convert_content(c: RawContent) -> Result<Option<MyNumberRules>, String> {
    if !c.forbid_my_number {
        if c.my_number_low_confidence.is_some() || !c.my_number_fields.is_empty() {
            return Err("[content] `my_number_*` keys need `forbid_my_number = true`".into());
        }
        return Ok(None);
    }
    let keywords = crate::mynumber::Keywords::new(&c.my_number_fields).map_err(|e| format!("[content] {e}"))?;
    let target_keywords =
        crate::mynumber::Keywords::for_target(&c.my_number_fields).map_err(|e| format!("[content] {e}"))?;
    Ok(Some(MyNumberRules {
        keywords: Arc::new(keywords),
        target_keywords: Arc::new(target_keywords),
        low: c.my_number_low_confidence.unwrap_or(LowConfidence::Record),
    }))
}

fn convert_apps(a: RawApps, err: &ErrAt<'_>) -> Result<AppRules, RulesError> {
    if a.field.get_ref().trim().is_empty() {
        return Err(err(a.field.span(), "[apps] `field` names the query parameter and JSON member of the app".into()));
    }
    Ok(AppRules { field: a.field.into_inner(), customize_paths: a.customize_paths })
}

fn convert_account(a: RawAccount, err: &ErrAt<'_>) -> Result<AccountRule, RulesError> {
    let header = a.header.get_ref().trim().to_ascii_lowercase();
    if header.is_empty() || !header.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(err(a.header.span(), format!("account header `{}` is not a header name", a.header.get_ref())));
    }
    let (span, shared) = a.shared.map_or((0..0, HashMap::new()), |s| (s.span(), s.into_inner()));
    if let Some((login, _)) = shared.iter().find(|(l, holders)| l.trim().is_empty() || holders.is_empty()) {
        return Err(err(span, format!("shared login `{login}` needs a name and at least one holder")));
    }
    let mut forms = Vec::with_capacity(a.forms.len());
    for f in a.forms {
        if f.field.get_ref().trim().is_empty() {
            return Err(err(f.field.span(), "a login form needs the `field` that carries the login".into()));
        }
        forms.push(LoginForm { path: f.path, field: f.field.into_inner() });
    }
    Ok(AccountRule { header, logins: a.logins, shared, forms })
}

fn convert_hours(h: Spanned<RawHours>, err: &ErrAt<'_>) -> Result<Hours, RulesError> {
    let span = h.span();
    let h = h.into_inner();
    let open = match (h.always, h.weekly) {
        (Some(true), None) => Open::Always,
        (None | Some(false), Some(w)) if !w.is_empty() => Open::Weekly(w),
        _ => {
            return Err(err(
                span,
                "[hours] needs exactly one of `always = true` or a non-empty `weekly = [...]`".into(),
            ))
        }
    };
    Ok(Hours {
        open,
        closed_on_holidays: h.closed_on_holidays,
        closed_dates: h.closed_dates,
        overtime_grants: h.overtime_grants,
    })
}

fn convert_schedules(
    raw: HashMap<String, Spanned<RawSchedule>>,
    overtime_grants: bool,
    err: &ErrAt<'_>,
) -> Result<Map<String, Hours>, RulesError> {
    let mut out = Map::with_capacity_and_hasher(raw.len(), Hasher::default());
    for (name, s) in raw {
        let span = s.span();
        if !is_name(&name) {
            return Err(err(span, format!("schedule name `{name}` must be letters, digits, `-` or `_`")));
        }
        let s = s.into_inner();
        let raw = RawHours {
            always: s.always,
            weekly: s.weekly,
            closed_on_holidays: s.closed_on_holidays,
            closed_dates: s.closed_dates,
            overtime_grants,
        };
        let hours = convert_hours(Spanned::new(span, raw), err)?;
        out.insert(name, hours);
    }
    Ok(out)
}

fn convert_trusted(specs: Vec<NetSpec>) -> Trusted {
    if specs.iter().any(|s| matches!(s, NetSpec::Any)) {
        return Trusted::Any;
    }
    Trusted::Cidrs(
        specs
            .into_iter()
            .filter_map(|s| match s {
                NetSpec::Net(n) => Some(n),
                NetSpec::Any => None,
            })
            .collect(),
    )
}

fn convert_attestation(a: Option<Spanned<RawAttestation>>, err: &ErrAt<'_>) -> Result<AttestationRules, RulesError> {
    let Some(a) = a else {
        return Ok(AttestationRules {
            max_lifetime_secs: NonZeroU32::MIN.saturating_add(DEFAULT_LIFETIME - 1),
            leeway_secs: MAX_LEEWAY,
        });
    };
    let span = a.span();
    let a = a.into_inner();
    let lifetime = a.max_lifetime_secs.unwrap_or(DEFAULT_LIFETIME);
    let leeway = a.leeway_secs.unwrap_or(MAX_LEEWAY);
    let max_lifetime_secs = NonZeroU32::new(lifetime).filter(|l| l.get() <= MAX_LIFETIME).ok_or_else(|| {
        err(span.clone(), format!("`max_lifetime_secs` must be 1..={MAX_LIFETIME}, not `{lifetime}`"))
    })?;
    if leeway > MAX_LEEWAY {
        return Err(err(span, format!("`leeway_secs` must be at most {MAX_LEEWAY}, not `{leeway}`")));
    }
    Ok(AttestationRules { max_lifetime_secs, leeway_secs: leeway })
}

fn sorted_min_os(map: HashMap<Os, Version>) -> Vec<(Os, Version)> {
    let mut v: Vec<_> = map.into_iter().collect();
    v.sort_by_key(|(os, _)| *os);
    v
}

/// A calendar date, written as a TOML date (`2023-05-31`) or a string.
#[derive(Debug, Clone, Copy)]
struct Date(NaiveDate);

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = match toml::Value::deserialize(d)? {
            toml::Value::Datetime(dt) if dt.time.is_none() && dt.offset.is_none() => dt.to_string(),
            toml::Value::String(s) => s,
            other => {
                return Err(serde::de::Error::custom(format!("expected a date such as `2023-05-31`, not `{other}`")))
            }
        };
        NaiveDate::parse_from_str(&text, "%Y-%m-%d")
            .map(Date)
            .map_err(|_| serde::de::Error::custom(format!("invalid date `{text}`: expected `YYYY-MM-DD`")))
    }
}

/// An IANA time zone name such as `Asia/Tokyo`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
struct TimeZone(chrono_tz::Tz);

impl TryFrom<String> for TimeZone {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        chrono_tz::Tz::from_str(&s)
            .map(TimeZone)
            .map_err(|_| format!("unknown time zone `{s}`: use an IANA name such as `Asia/Tokyo`"))
    }
}

/// `any` or a CIDR.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
enum NetSpec {
    Any,
    Net(IpNet),
}

impl TryFrom<String> for NetSpec {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s == "any" {
            return Ok(NetSpec::Any);
        }
        IpNetSpec::try_from(s).map(|n| NetSpec::Net(n.0))
    }
}

/// A CIDR (`10.0.0.0/8`, `2001:db8::/32`) or a single address. An
/// IPv4-mapped one (`::ffff:10.0.0.0/104`) is held as the IPv4 network it
/// names, as client addresses are (see `engine::client_addr`).
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
struct IpNetSpec(IpNet);

impl TryFrom<String> for IpNetSpec {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if let Ok(net) = s.parse::<IpNet>() {
            if net.trunc() != net {
                return Err(format!("network `{s}` has host bits set; did you mean `{}`?", net.trunc()));
            }
            return Ok(IpNetSpec(unmapped(net)));
        }
        s.parse::<IpAddr>()
            .map(|a| IpNetSpec(unmapped(IpNet::from(a))))
            .map_err(|_| format!("invalid network `{s}`: expected a CIDR such as `10.0.0.0/8` or `any`"))
    }
}

/// `::ffff:a.b.c.d/n` (n ≥ 96) as `a.b.c.d/(n − 96)`; any other network as it is.
fn unmapped(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => v6
            .addr()
            .to_ipv4_mapped()
            .and_then(|v4| ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).ok())
            .map_or(net, IpNet::V4),
        _ => net,
    }
}

impl<'de> Deserialize<'de> for Upstream {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for Upstream {
    type Err = String;

    /// `https://host[:port]` or `http://host[:port]`, nothing after the authority.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("invalid upstream `{s}`: expected `https://host[:port]` or `http://host[:port]`");
        let (tls, rest) = match s.split_once("://") {
            Some(("https", rest)) => (true, rest),
            Some(("http", rest)) => (false, rest),
            _ => return Err(bad()),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
            return Err(bad());
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && !h.ends_with(':') && (!h.contains(':') || h.ends_with(']')) => {
                (h, p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?)
            }
            _ => (rest, default_port),
        };
        let host = match host.strip_prefix('[') {
            Some(v6) => v6.strip_suffix(']').filter(|h| h.parse::<std::net::Ipv6Addr>().is_ok()).ok_or_else(bad)?,
            None if host.contains([':', '[', ']']) => return Err(bad()),
            None => host,
        };
        Ok(Upstream { tls, host: host.to_ascii_lowercase(), port })
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
