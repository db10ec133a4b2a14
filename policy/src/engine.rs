//! `decide`: the one place where rules meet a request. Pure: the caller
//! passes the facts it gathered, the state snapshot and the instant; the
//! answer is a value naming the rule that fired. It must never do I/O, read
//! the clock, or return an error: anything it cannot vouch for is a denial.

use std::net::IpAddr;

use base64::Engine as _;
use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone as _, Utc};
use sha2::{Digest, Sha256};

use crate::attestation::{AttestationError, Timing, VerifiedToken};
use crate::body::{self, Field};
use crate::decision::{Allow, Basis, Decision, Deny, DenyReason, Inspect};
use crate::device::{DeviceStatus, Os, Version};
use crate::holidays;
use crate::mynumber::Confidence;
use crate::rules::{Hours, LowConfidence, Network, Open, Profile, RoleRules, Route};
use crate::state::{Device, Grantee, SecuritySoftware, State, Subject, User};

/// What the adapter knows about one request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub profile: &'a Profile,
    pub route: &'a Route,
    /// The effective method (after any override header was resolved).
    pub method: &'a str,
    /// The canonical path that will be forwarded.
    pub path: &'a str,
    pub client: ClientAddr,
    pub attestation: Attestation<'a>,
    /// The profile's integration-token header, all values joined by `,`.
    pub integration_tokens: Option<&'a str>,
    /// The profile's login header (`X-Cybozu-Authorization`), if sent
    /// (once: the adapter refuses a request that repeats it).
    pub login: Option<&'a str>,
    /// The query string (after `?`, undecoded), if any.
    pub query: Option<&'a str>,
    /// The request's `Content-Encoding`, all values joined by `,`, where
    /// the profile forbids 個人番号 (the adapter need not read it elsewhere).
    pub content_encoding: Option<&'a str>,
}

/// The client address, as [`client_addr`] resolved it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAddr {
    Known(IpAddr),
    /// A trusted proxy sent an `X-Forwarded-For` that does not parse.
    Unresolvable,
}

/// The device proof the request carried.
#[derive(Debug, Clone, Copy)]
pub enum Attestation<'a> {
    Missing,
    Rejected(&'a AttestationError),
    Verified(&'a VerifiedToken),
    /// A client certificate the TLS layer verified against the device CA,
    /// by the SHA-256 of its DER (used only where the profile accepts it).
    Certificate([u8; 32]),
}

/// What the device says about itself: from a fresh attestation, or, for a
/// certificate, from its registration record.
struct Posture<'a> {
    os: Os,
    os_version: Version,
    security_software: Option<&'a SecuritySoftware>,
    /// True when `os` came from the device and must match the record.
    attested: bool,
}

/// The client address: the TCP peer, unless the peer is a trusted proxy;
/// then `X-Forwarded-For` is walked right to left past trusted proxies.
/// An IPv4-mapped IPv6 address (`::ffff:10.0.0.5`, from a dual-stack
/// socket or a proxy that writes them) is its IPv4 address: the rules'
/// networks hold IPv4 networks as IPv4.
pub fn client_addr(network: &Network, peer: IpAddr, forwarded_for: Option<&str>) -> ClientAddr {
    let trusted = |a: &IpAddr| network.is_trusted_proxy(*a);
    let peer = peer.to_canonical();
    if !trusted(&peer) {
        return ClientAddr::Known(peer);
    }
    let Some(chain) = forwarded_for else {
        return ClientAddr::Known(peer);
    };
    let mut last = peer;
    for hop in chain.rsplit(',') {
        match hop_addr(hop.trim()).map(|a| a.to_canonical()) {
            Some(addr) if trusted(&addr) => last = addr,
            Some(addr) => return ClientAddr::Known(addr),
            None => return ClientAddr::Unresolvable,
        }
    }
    // Every hop was a trusted proxy: the leftmost one is the best we know.
    ClientAddr::Known(last)
}

/// Whether the client spoke HTTPS to the proxy in front, as a trusted proxy
/// that terminated TLS says in `X-Forwarded-Proto` (its last value: a
/// proxy appends or overwrites). Believed only from a trusted proxy; the
/// answer shapes the scheme the upstream is told and redirects are written
/// with, never access.
pub fn forwarded_https(network: &Network, peer: IpAddr, proto: Option<&str>) -> bool {
    network.is_trusted_proxy(peer)
        && proto.and_then(|p| p.rsplit(',').next()).is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

/// One `X-Forwarded-For` hop: an address, or an address with the client's
/// port as some load balancers write it (`203.0.113.5:54321`,
/// `[2001:db8::5]:443`); the port says nothing about trust.
fn hop_addr(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>().ok().or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
}

/// The method to authorise when a method-override header may be honoured
/// by the upstream: a read only if both the method and the override read;
/// otherwise a write (an unknown override counts as one). Never weaker than
/// either, whichever the upstream believes.
pub fn authorised_method<'a>(method: &'a str, override_value: Option<&str>) -> &'a str {
    let reading = |m: &str| m.trim().eq_ignore_ascii_case("GET") || m.trim().eq_ignore_ascii_case("HEAD");
    match override_value {
        Some(o) if reading(method) && !reading(o) => "POST",
        _ => method,
    }
}

/// Decides one request. Checks run from the broadest (is the policy in force
/// at all) to the narrowest (may this user write).
pub fn decide<'a>(facts: &RequestFacts<'a>, state: &'a State, now: DateTime<Utc>) -> Decision<'a> {
    match check(facts, state, now) {
        Ok(allow) => Decision::Allow(allow),
        Err(deny) => Decision::Deny(deny),
    }
}

fn check<'a>(facts: &RequestFacts<'a>, state: &'a State, now: DateTime<Utc>) -> Result<Allow<'a>, Deny> {
    let profile = facts.profile;
    // One conversion to the profile's zone for every check that reads it.
    let local = now.with_timezone(&profile.timezone).naive_local();
    let local_date = local.date();
    check_validity(profile, local_date)?;
    check_stops(profile, state, now)?;
    check_network(profile, facts.client)?;
    let (device, posture) = prove(profile, state, facts.attestation, now)?;
    let (user, role) = check_user(profile, state, device, now).map_err(|d| d.for_user(&device.owner, &device.id))?;
    let basis = check_posture(profile, role, device, &posture, local_date)
        .and_then(|()| check_path(facts.route, facts.path))
        .and_then(|()| check_target_my_number(profile, facts.path, facts.query))
        .and_then(|()| check_body_encoding(profile, facts.content_encoding))
        .and_then(|()| check_admin_path(profile, &user.role, facts.method, facts.path))
        .and_then(|()| check_integrations(profile, facts.integration_tokens))
        .and_then(|()| check_account(profile, &user.id, facts.login))
        .and_then(|()| check_login_query(profile, &user.id, facts.path, facts.query))
        .and_then(|()| check_hours(profile, state, user, now, local))
        .and_then(|basis| check_method(user, facts.method, now).map(|()| basis))
        .and_then(|basis| check_reviews(profile, state, facts).map(|pending| (basis, pending)))
        .map_err(|d| d.for_user(&user.id, &device.id))?;
    let (basis, reviews) = basis;
    let inspect = body_checks(profile, facts, reviews);
    Ok(Allow { user: &user.id, device: &device.id, basis, inspect })
}

fn is_reading(method: &str) -> bool {
    method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD")
}

/// What only the body can tell, for this request.
fn body_checks(profile: &Profile, facts: &RequestFacts<'_>, reviews: Vec<Subject>) -> Option<Inspect> {
    let reading = is_reading(facts.method);
    let login_field =
        profile.account.as_ref().and_then(|a| a.form_at(facts.path)).filter(|_| !reading).map(str::to_owned);
    let app_in_query = app_in(profile, facts.query).is_some_and(|a| matches!(a, Field::One(_)));
    (login_field.is_some() || !reviews.is_empty()).then_some(Inspect { login_field, reviews, app_in_query })
}

/// The `[apps] field` of a query string, if the profile has app rules.
fn app_in(profile: &Profile, query: Option<&str>) -> Option<Field> {
    let rules = profile.apps.as_ref()?;
    Some(query.map_or(Field::Absent, |q| body::form_field(q.as_bytes(), &rules.field)))
}

/// Abiko 10.: JavaScript/CSS customisation and API-token integrations of an
/// app in operation need a recorded review; an app in development may use
/// them. Returns what the body's app must still satisfy (any request may
/// name the app in its body); an app the request does not determine is treated
/// as in operation, and so unreviewed.
fn check_reviews(profile: &Profile, state: &State, facts: &RequestFacts<'_>) -> Result<Vec<Subject>, Deny> {
    let Some(rules) = &profile.apps else { return Ok(Vec::new()) };
    let mut needs = Vec::new();
    if !is_reading(facts.method) && rules.customize_paths.iter().any(|p| p.matches(facts.path)) {
        needs.push(Subject::Customize);
    }
    if unreviewed_token(profile, state, facts.integration_tokens) {
        needs.push(Subject::ApiToken);
    }
    if needs.is_empty() {
        return Ok(needs);
    }
    match app_in(profile, facts.query) {
        Some(Field::One(app)) => needs.iter().try_for_each(|s| check_app(profile, state, &app, *s))?,
        Some(Field::Ambiguous) => return Err(unreviewed(needs[0], "the app is named more than once")),
        _ => {}
    }
    // The body may (also) name the app, a GET's too (kintone reads a GET's
    // parameters from a JSON body): the adapter reads it, and a request
    // that names no app anywhere is refused there.
    Ok(needs)
}

/// Is any integration token neither approved in the rules nor reviewed by itself?
fn unreviewed_token(profile: &Profile, state: &State, tokens: Option<&str>) -> bool {
    let (Some(rule), Some(tokens)) = (&profile.integrations, tokens) else { return false };
    tokens.split(',').map(str::trim).filter(|t| !t.is_empty()).any(|token| {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        !rule.approved.iter().any(|a| a.sha256 == hash) && !state.apps.token_reviewed(&profile.name, &hex(&hash))
    })
}

/// The app named `app` (decimal) is in development or reviewed for `subject`.
fn check_app(profile: &Profile, state: &State, app: &str, subject: Subject) -> Result<(), Deny> {
    let Ok(id) = app.trim().parse::<u64>() else {
        return Err(unreviewed(subject, "the app is not a number"));
    };
    let register = &state.apps;
    if register.in_development(&profile.name, id) || register.reviewed(&profile.name, id, subject) {
        return Ok(());
    }
    Err(unreviewed(subject, "the app is in operation and this is not reviewed"))
}

fn unreviewed(subject: Subject, why: &str) -> Deny {
    let reason = match subject {
        Subject::ApiToken => DenyReason::IntegrationNotApproved,
        Subject::Customize | Subject::Webhook => DenyReason::FeatureNotPermitted,
    };
    Deny::new(reason, format!("apps: {} needs a recorded review: {why}", subject.as_str()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The checks `decide` left to the body (`Allow::inspect`), over the whole
/// body the adapter held back. Call once, at the end of the body; `body`
/// is empty for a request without one.
pub fn check_held_body(
    profile: &Profile,
    state: &State,
    user: &str,
    inspect: &Inspect,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(), Deny> {
    if let (Some(rules), Some(first)) = (&profile.apps, inspect.reviews.first()) {
        match body::body_field(content_type, body, &rules.field) {
            Field::One(app) => inspect.reviews.iter().try_for_each(|s| check_app(profile, state, &app, *s))?,
            Field::Absent if inspect.app_in_query => {}
            Field::Absent => return Err(unreviewed(*first, "the request does not name its app")),
            Field::Ambiguous => return Err(unreviewed(*first, "the app is named more than once")),
        }
    }
    if let (Some(field), Some(rule)) = (&inspect.login_field, &profile.account) {
        // A sign-in post without a readable login is refused: the SaaS
        // might read a login the gateway did not.
        let allowed = match body::body_field(content_type, body, field) {
            Field::One(login) => rule.may_use(user, &login),
            Field::Absent | Field::Ambiguous => false,
        };
        if !allowed {
            return Err(Deny::new(DenyReason::AccountMismatch, "account.forms"));
        }
    }
    Ok(())
}

/// The refusal for a body `decide` asked to inspect that is larger than the
/// adapter can hold: it cannot be read, so it does not pass.
pub fn body_too_large(inspect: &Inspect) -> Deny {
    match (&inspect.login_field, inspect.reviews.first()) {
        (None, Some(subject)) => unreviewed(*subject, "the body is larger than the gateway holds to read its app"),
        _ => Deny::new(DenyReason::AccountMismatch, "account.forms: body larger than the gateway holds for inspection"),
    }
}

/// A sign-in endpoint may also take the login in its query string.
fn check_login_query(profile: &Profile, user: &str, path: &str, query: Option<&str>) -> Result<(), Deny> {
    let Some(rule) = &profile.account else { return Ok(()) };
    let (Some(field), Some(query)) = (rule.form_at(path), query) else { return Ok(()) };
    match body::form_field(query.as_bytes(), field) {
        Field::Absent => Ok(()),
        Field::One(login) if rule.may_use(user, &login) => Ok(()),
        Field::One(_) | Field::Ambiguous => Err(Deny::new(DenyReason::AccountMismatch, "account.forms (query)")),
    }
}

/// Whether the profile's terms are in force at `now` (its own date), as
/// `decide` judges it: for the admin console's rules page.
pub fn in_force(profile: &Profile, now: DateTime<Utc>) -> bool {
    check_validity(profile, now.with_timezone(&profile.timezone).date_naive()).is_ok()
}

fn check_validity(profile: &Profile, today: NaiveDate) -> Result<(), Deny> {
    if profile.valid_from.is_some_and(|from| today < from) {
        return Err(Deny::new(DenyReason::PolicyNotInForce, "profile.valid_from"));
    }
    if profile.valid_until.is_some_and(|until| today > until) {
        return Err(Deny::new(DenyReason::PolicyNotInForce, "profile.valid_until"));
    }
    Ok(())
}

fn check_stops(profile: &Profile, state: &State, now: DateTime<Utc>) -> Result<(), Deny> {
    if let Some(stop) = &state.stops.global {
        return Err(Deny::new(DenyReason::EmergencyStop, format!("emergency stop (all profiles): {}", stop.reason)));
    }
    if let Some(stop) = state.stops.profiles.get(&profile.name) {
        return Err(Deny::new(DenyReason::EmergencyStop, format!("emergency stop: {}", stop.reason)));
    }
    if let Some(m) = state.maintenance.iter().find(|m| m.covers(&profile.name, now)) {
        return Err(Deny::new(DenyReason::Maintenance, format!("maintenance: {}", m.reason)).retry_at(Some(m.end)));
    }
    Ok(())
}

fn check_network(profile: &Profile, client: ClientAddr) -> Result<(), Deny> {
    match client {
        ClientAddr::Known(addr) if profile.network.is_trusted(addr) => Ok(()),
        ClientAddr::Known(_) => Err(Deny::new(DenyReason::UntrustedNetwork, "network.trusted")),
        ClientAddr::Unresolvable => {
            Err(Deny::new(DenyReason::UntrustedNetwork, "unparsable X-Forwarded-For from a trusted proxy"))
        }
    }
}

fn rejected(e: &AttestationError) -> Deny {
    match e {
        AttestationError::UnknownDevice(_) => Deny::new(DenyReason::DeviceUnknown, "attestation.kid"),
        other => Deny::new(DenyReason::AttestationInvalid, other.to_string()),
    }
}

/// Which registered device the request proved, and its posture.
fn prove<'a>(
    profile: &Profile,
    state: &'a State,
    proof: Attestation<'a>,
    now: DateTime<Utc>,
) -> Result<(&'a Device, Posture<'a>), Deny> {
    let device = match proof {
        Attestation::Missing => return Err(Deny::new(DenyReason::AttestationMissing, "attestation")),
        Attestation::Certificate(_) if !profile.devices.accept_certificates => {
            return Err(Deny::new(DenyReason::AttestationMissing, "devices.accept_certificates is off"))
        }
        Attestation::Rejected(e) => return Err(rejected(e)),
        Attestation::Verified(t) => check_token(profile, state, t, now)?,
        Attestation::Certificate(fingerprint) => state
            .device_by_certificate(&fingerprint)
            .ok_or_else(|| Deny::new(DenyReason::DeviceUnknown, "client certificate"))?,
    };
    check_status(device)?;
    let posture = match proof {
        Attestation::Verified(t) => {
            let c = &t.claims;
            Posture {
                os: c.os,
                os_version: c.os_version,
                security_software: c.security_software.as_ref(),
                attested: true,
            }
        }
        _ => Posture {
            os: device.os,
            os_version: device.os_version,
            security_software: device.security_software.as_ref(),
            attested: false,
        },
    };
    Ok((device, posture))
}

fn check_status(device: &Device) -> Result<(), Deny> {
    let deny = |reason, why: &'static str| Err(Deny::new(reason, why).for_user(&device.owner, &device.id));
    match device.status {
        DeviceStatus::Approved => Ok(()),
        DeviceStatus::Pending => deny(DenyReason::DevicePending, "device registration is pending approval"),
        DeviceStatus::Rejected => deny(DenyReason::DeviceNotPermitted, "device registration was rejected"),
        DeviceStatus::Revoked => deny(DenyReason::DeviceRevoked, "device was revoked"),
    }
}

/// Token freshness, audience, device status and ownership.
fn check_token<'a>(
    profile: &Profile,
    state: &'a State,
    token: &VerifiedToken,
    now: DateTime<Utc>,
) -> Result<&'a Device, Deny> {
    let invalid = |why: &'static str| Deny::new(DenyReason::AttestationInvalid, why);
    let device =
        state.devices.get(&token.device).ok_or_else(|| Deny::new(DenyReason::DeviceUnknown, "attestation.kid"))?;
    if device.key.fingerprint() != token.key_fingerprint {
        return Err(invalid("signed with a key the device no longer has"));
    }
    let c = &token.claims;
    let rules = &profile.attestation;
    let timing =
        c.check_timing(now.timestamp(), i64::from(rules.leeway_secs), i64::from(rules.max_lifetime_secs.get()));
    timing.map_err(|t| {
        invalid(match t {
            Timing::IssuedInFuture => "issued in the future (`iat`)",
            Timing::Expired => "expired (`exp`)",
            Timing::TooLong => "lifetime (`exp` - `iat`) is longer than the profile allows",
        })
    })?;
    if c.aud != profile.audience {
        return Err(invalid("audience (`aud`) is not this profile's"));
    }
    // Status before ownership: a revoked device says so, whoever holds it.
    check_status(device)?;
    let for_device = |d: Deny| d.for_user(&device.owner, &device.id);
    if c.sub != device.owner {
        return Err(for_device(invalid("subject (`sub`) is not the device's registered owner")));
    }
    Ok(device)
}

/// The owner may use this profile: known, not suspended, enrolled, role listed.
fn check_user<'a, 'p>(
    profile: &'p Profile,
    state: &'a State,
    device: &Device,
    now: DateTime<Utc>,
) -> Result<(&'a User, &'p RoleRules), Deny> {
    let user = state
        .users
        .get(&device.owner)
        .ok_or_else(|| Deny::new(DenyReason::UserNotPermitted, "user is not registered"))?;
    if let Some(flag) = user.suspended.as_ref().filter(|f| f.active_at(now)) {
        return Err(Deny::new(DenyReason::UserSuspended, format!("suspension: {}", flag.reason)).retry_at(flag.until));
    }
    if !user.profiles.contains(&profile.name) {
        return Err(Deny::new(DenyReason::UserNotPermitted, "user is not enrolled in this profile"));
    }
    match profile.role(&user.role) {
        Some(role) => Ok((user, role)),
        None => Err(Deny::new(DenyReason::UserNotPermitted, format!("role `{}` may not use this profile", user.role))),
    }
}

/// Device kind, ownership, OS and security software against the profile.
fn check_posture(
    profile: &Profile,
    role: &RoleRules,
    device: &Device,
    c: &Posture<'_>,
    today: NaiveDate,
) -> Result<(), Deny> {
    let not_permitted = |why: String| Deny::new(DenyReason::DeviceNotPermitted, why);
    if !role.kinds.contains(&device.kind) || !role.ownership.contains(&device.ownership) {
        return Err(not_permitted(format!(
            "{} {} devices are not allowed for this role",
            device.ownership.as_str(),
            device.kind.as_str()
        )));
    }
    if c.attested && c.os != device.os {
        return Err(not_permitted(format!("attested os `{}` differs from the registered `{}`", c.os, device.os)));
    }
    // An exception recorded at approval wins over the profile's minimums.
    let waived = device.exception.is_some();
    match profile.min_os(c.os) {
        None if !waived => return Err(not_permitted(format!("os `{}` is not permitted", c.os))),
        Some(Some(min)) if c.os_version < min && !waived => {
            return Err(Deny::new(
                DenyReason::OsOutdated,
                format!("{} {} is older than the required {min}", c.os, c.os_version),
            ));
        }
        _ => {}
    }
    let Some(rule) = profile.devices.security_software else {
        return Ok(());
    };
    let Some(sw) = c.security_software else {
        return Err(Deny::new(DenyReason::SecuritySoftwareMissing, "devices.security_software.required"));
    };
    match rule.max_age_days {
        Some(days) if !waived && sw.updated + Duration::days(i64::from(days)) < today => Err(Deny::new(
            DenyReason::SecuritySoftwareOutdated,
            format!("signatures last updated {}, more than {days} days ago", sw.updated),
        )),
        _ => Ok(()),
    }
}

fn check_path(route: &Route, path: &str) -> Result<(), Deny> {
    match &route.allow_paths {
        Some(patterns) if !patterns.iter().any(|p| p.matches(path)) => {
            Err(Deny::new(DenyReason::FeatureNotPermitted, "routes.allow_paths"))
        }
        _ => Ok(()),
    }
}

/// Whether an allowed request may go on (a long download, a WebSocket)
/// after the state changed or time passed: the terms' validity period, the
/// emergency stops, maintenance, the device's status, the user's suspension
/// and their permitted hours (with overtime granted), as `decide` would
/// judge them now.
pub fn still_allowed(
    profile: &Profile,
    state: &State,
    user: &str,
    device: &str,
    now: DateTime<Utc>,
) -> Result<(), Deny> {
    let local = now.with_timezone(&profile.timezone).naive_local();
    check_validity(profile, local.date())?;
    check_stops(profile, state, now)?;
    match state.devices.get(device).map(|d| d.status) {
        Some(DeviceStatus::Approved) => {}
        _ => return Err(Deny::new(DenyReason::DeviceRevoked, "device was revoked")),
    }
    let Some(u) = state.users.get(user) else {
        return Err(Deny::new(DenyReason::UserNotPermitted, "user is not registered"));
    };
    if let Some(flag) = u.suspended.as_ref().filter(|f| f.active_at(now)) {
        return Err(Deny::new(DenyReason::UserSuspended, format!("suspension: {}", flag.reason)));
    }
    check_hours(profile, state, u, now, local).map(|_| ())
}

/// Domain-wide administration only for the roles the profile names.
fn check_admin_path(profile: &Profile, role: &str, method: &str, path: &str) -> Result<(), Deny> {
    let blocked = profile.admin_paths.iter().find(|a| a.covers(method, path) && !a.roles.iter().any(|r| r == role));
    match blocked {
        Some(a) => Err(Deny::new(
            DenyReason::FeatureNotPermitted,
            format!("admin_paths: only {} may use this path", a.roles.join(", ")),
        )),
        None => Ok(()),
    }
}

/// Every integration token sent must be one the municipality reviewed. With
/// `[apps]`, a token not approved here is judged with its app instead
/// (`check_reviews`).
fn check_integrations(profile: &Profile, tokens: Option<&str>) -> Result<(), Deny> {
    if profile.apps.is_some() {
        return Ok(());
    }
    let (Some(rule), Some(tokens)) = (&profile.integrations, tokens) else { return Ok(()) };
    for token in tokens.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if !rule.approved.iter().any(|a| a.sha256 == hash) {
            return Err(Deny::new(DenyReason::IntegrationNotApproved, "integrations.approved"));
        }
    }
    Ok(())
}

/// A login sent to the SaaS must be one the attested user may use: their
/// own (no ID sharing, Abiko 6.(2)), or a shared one they hold (6.(3)).
fn check_account(profile: &Profile, user: &str, header: Option<&str>) -> Result<(), Deny> {
    let (Some(rule), Some(header)) = (&profile.account, header) else { return Ok(()) };
    let mismatch = || Deny::new(DenyReason::AccountMismatch, "account.header");
    let decoded = base64::engine::general_purpose::STANDARD.decode(header.trim()).map_err(|_| mismatch())?;
    // Only the part before the first `:` is read; the password is never kept.
    let login = decoded.split(|b| *b == b':').next().unwrap_or_default();
    match std::str::from_utf8(login) {
        Ok(login) if rule.may_use(user, login) => Ok(()),
        _ => Err(mismatch()),
    }
}

/// A scanner for the request body, for profiles that forbid 個人番号 in
/// bodies (Abiko 5.(2)); `None` when the profile does not.
pub fn body_scanner(profile: &Profile) -> Option<crate::mynumber::Scanner> {
    profile.my_number.as_ref().map(|r| crate::mynumber::Scanner::new(r.keywords.clone()))
}

/// A request body chunk, for profiles that forbid 個人番号 in bodies. Call
/// with `end = true` once at the end of the body. A high-confidence number
/// is refused; a low-confidence one as the profile says
/// (`my_number_low_confidence`). The adapter must hold back
/// [`crate::mynumber::DECISION_BYTES`] of a streamed body.
pub fn check_body(
    profile: &Profile,
    scanner: &mut crate::mynumber::Scanner,
    chunk: &[u8],
    end: bool,
) -> Result<(), Deny> {
    let Some(rules) = &profile.my_number else { return Ok(()) };
    scanner.feed(chunk);
    let verdict = if end { scanner.finish() } else { scanner.verdict() };
    match (verdict, rules.low) {
        (Some(Confidence::High), _) => Err(Deny::new(
            DenyReason::SpecificPersonalInformation,
            "content.forbid_my_number: high confidence (check digit and keyword or field within 300 characters)",
        )),
        (Some(Confidence::Low), LowConfidence::Block) => Err(Deny::new(
            DenyReason::SpecificPersonalInformation,
            "content.forbid_my_number: low confidence (check digit only)",
        )),
        _ => Ok(()),
    }
}

/// The request target of a profile that forbids 個人番号 (Abiko 5.(2)): a
/// number in the path or the query reaches the SaaS as surely as one in a
/// body (a record search by number). Read as a body is, except that a
/// field code counts wherever it stands (kintone's query language names
/// fields bare: `CODE = "…"`). This is the only 個人番号 refusal `decide` makes, and
/// the adapter must not write the target of a request refused for it (the
/// page says the content was not recorded).
fn check_target_my_number(profile: &Profile, path: &str, query: Option<&str>) -> Result<(), Deny> {
    let Some(rules) = &profile.my_number else { return Ok(()) };
    let mut scanner = crate::mynumber::Scanner::new(rules.target_keywords.clone());
    check_body(profile, &mut scanner, path.as_bytes(), false)?;
    match query {
        Some(q) => check_body(profile, &mut scanner, b"?", false)
            .and_then(|()| check_body(profile, &mut scanner, q.as_bytes(), true)),
        None => check_body(profile, &mut scanner, b"", true),
    }
    .map_err(|d| Deny { rule: format!("{} (request target)", d.rule).into(), ..d })
}

/// A body sent compressed (`Content-Encoding: gzip`) to a profile that
/// forbids 個人番号 (Abiko 5.(2)): the scanner would read compressed bytes
/// and find nothing, while an upstream that decodes the body would store
/// the number. Such a body cannot be checked, so it is refused (fail
/// closed); `identity` is no coding at all. Browsers and kintone's clients
/// do not compress what they send.
fn check_body_encoding(profile: &Profile, coding: Option<&str>) -> Result<(), Deny> {
    let (Some(_), Some(coding)) = (&profile.my_number, coding) else { return Ok(()) };
    let plain = |c: &str| c.trim().is_empty() || c.trim().eq_ignore_ascii_case("identity");
    if coding.split(',').all(plain) {
        return Ok(());
    }
    Err(Deny::new(
        DenyReason::FeatureNotPermitted,
        "content.forbid_my_number: a compressed request body (Content-Encoding) cannot be checked for 個人番号",
    ))
}

/// What the audit line says of a body that passed with a low-confidence
/// finding (never the number itself).
pub fn body_note(scanner: &crate::mynumber::Scanner) -> Option<&'static str> {
    match scanner.verdict() {
        Some(Confidence::Low) => Some("content.forbid_my_number: low confidence (check digit only), passed"),
        _ => None,
    }
}

/// The person's own working hours (Abiko 8.: 各職員の正規の勤務時間) in the
/// profile's time zone (`local` is `now` there), or overtime granted to
/// them or their department.
fn check_hours(
    profile: &Profile,
    state: &State,
    user: &User,
    now: DateTime<Utc>,
    local: NaiveDateTime,
) -> Result<Basis, Deny> {
    let hours = profile.hours_for(user.schedule.as_deref());
    let closed = match closed_because(hours, local) {
        None => return Ok(if matches!(hours.open, Open::Always) { Basis::AlwaysOpen } else { Basis::Hours }),
        Some(deny) => deny,
    };
    let covers =
        |g: &Grantee| state.overtime.get(g).is_some_and(|grants| grants.iter().any(|g| g.covers(&profile.name, now)));
    let granted = profile.hours.overtime_grants
        && (covers(&Grantee::User(user.id.clone()))
            || user.department.as_ref().is_some_and(|d| covers(&Grantee::Department(d.clone()))));
    if granted {
        return Ok(Basis::Overtime);
    }
    let closed = match user.schedule.as_deref().filter(|s| profile.schedules.contains_key(*s)) {
        Some(s) => Deny { rule: format!("schedules.{s}: {}", closed.rule).into(), ..closed },
        None => closed,
    };
    Err(closed.retry_at(next_open_in(profile, hours, now)))
}

/// Why `hours` are closed at local time `t`, or `None` when they are open.
fn closed_because(hours: &Hours, t: NaiveDateTime) -> Option<Deny> {
    let date = t.date();
    if let Some(range) = hours.closed_dates.iter().find(|r| r.contains(date)) {
        return Some(Deny::new(DenyReason::Holiday, format!("hours.closed_dates {range}")));
    }
    if hours.closed_on_holidays {
        if let Some(h) = holidays::holiday(date) {
            return Some(Deny::new(DenyReason::Holiday, format!("national holiday {}", h.name)));
        }
    }
    match &hours.open {
        Open::Always => None,
        Open::Weekly(windows) if windows.iter().any(|w| w.contains(t)) => None,
        Open::Weekly(_) => Some(Deny::new(DenyReason::OutsideHours, "hours.weekly")),
    }
}

/// The next instant within two weeks at which the profile's own hours open
/// by their calendar alone (grants are per person and not predicted).
pub fn next_open(profile: &Profile, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    next_open_in(profile, &profile.hours, now)
}

/// The next opening of `hours` (a person's schedule in `profile`), as
/// [`next_open`]; this is what a person's block page shows.
pub fn next_open_in(profile: &Profile, hours: &Hours, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let tz = profile.timezone;
    let today = now.with_timezone(&tz).date_naive();
    let windows: &[_] = match &hours.open {
        Open::Weekly(w) => w,
        Open::Always => &[],
    };
    (0..15)
        .filter_map(|d| today.checked_add_signed(Duration::days(d)))
        .flat_map(|date| {
            let midnight = date.and_hms_opt(0, 0, 0);
            windows.iter().filter_map(move |w| w.opens_on(date)).chain(midnight)
        })
        .filter_map(|local| tz.from_local_datetime(&local).earliest())
        .map(|at| at.with_timezone(&Utc))
        .filter(|at| *at > now && closed_because(hours, at.with_timezone(&tz).naive_local()).is_none())
        .filter(|at| profile.valid_until.is_none_or(|u| at.with_timezone(&tz).date_naive() <= u))
        .min()
        .filter(|at| at.year() < 10000)
}

fn check_method(user: &User, method: &str, now: DateTime<Utc>) -> Result<(), Deny> {
    let reading = method == "GET" || method == "HEAD";
    match user.restricted.as_ref().filter(|f| f.active_at(now)) {
        Some(flag) if !reading => {
            Err(Deny::new(DenyReason::UserRestricted, format!("read-only: {}", flag.reason)).retry_at(flag.until))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
