//! The admin API (hyper): JSON in, JSON out, every route behind a bearer
//! token compared in constant time, each token limited to its roles. It
//! only validates input and calls the store through `Shared::commit`; the
//! audit record is part of the same transaction, so no action answers 2xx
//! unless it and its audit line are durable. It must never log a token.
//! This file holds the server, authentication, routing, users and their
//! flags, rules reloads and audit queries; the device actions, the actions
//! that open or close access in time, and the app register are in
//! `devices.rs`, `schedule.rs` and `apps.rs`, as further `impl Admin` blocks.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use sekisho_policy::device::{DeviceKey, DeviceKind, DeviceStatus, Os, Ownership, Version};
use sekisho_policy::posture::{self, ReportError};
use sekisho_policy::state::{
    AppStage, Device, Flag, Grantee, MaintenanceWindow, OvertimeGrant, PostureException, Review, SecuritySoftware,
    Stage, Stop, Subject,
};
use sekisho_policy::Profile;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::{AdminToken, Role};
use crate::control::audit::AuditLog;
use crate::control::audit_search::{Found, Outcome, RequestFilter};
use crate::control::reasons;
pub use crate::control::roles::Action;
use crate::control::store::{AdminFilter, AuditEntry, AuditRecord, Change, FlagKind, StoreError};
use crate::control::writer::{RulesReloadError, Writer};
use crate::limits::Limiters;
use crate::metrics::Metrics;
use crate::shared::{Shared, Snapshot};

mod apps;
mod devices;
mod schedule;

use apps::apps_json;
pub use apps::{ReviewInput, StageInput};
use devices::devices_json;
pub use devices::{CertInput, DecisionInput, DeviceInput, ImportInput, SecurityInput};
pub use schedule::{GrantInput, MaintenanceInput, StopInput};

pub struct Admin {
    pub shared: Arc<Shared>,
    pub writer: Arc<Writer>,
    pub audit: Arc<AuditLog>,
    pub metrics: Arc<Metrics>,
    pub limits: Arc<Limiters>,
    /// Issues device client certificates, when a device CA is configured.
    pub device_ca: Option<Arc<crate::device::ca::DeviceCa>>,
    pub tokens: Vec<AdminToken>,
    pub rules_dir: PathBuf,
    /// Default lifetime of an issued device certificate.
    pub device_cert_days: u32,
    /// The CA of the HTTPS certificate, for enrollment profiles.
    pub server_ca_der: Option<Vec<u8>>,
    /// Enrollment bundles issued and not yet downloaded, by id. Held in
    /// memory only (the key never touches the disk), each for a day and
    /// handed out once; a restart drops them (issue again).
    pub enrollments: std::sync::Mutex<HashMap<String, PendingEnrollment>>,
    /// The browser console served at `/console/` (sessions, last hour).
    pub console: crate::control::console::Console,
    /// The latest in-gateway `doctor` checks, for `/metrics` and the status.
    pub health: Arc<crate::control::doctor::Latest>,
}

/// A certificate just issued: everything the API answers once. The store
/// keeps only its fingerprint.
#[derive(Debug, serde::Serialize)]
pub struct CertificateIssued {
    pub device: String,
    pub renewal: bool,
    pub certificate_pem: String,
    pub private_key_pem: String,
    pub ca_pem: String,
    pub sha256: String,
    pub pkcs12_base64: Option<String>,
    pub not_after: NaiveDate,
    pub enrollment: EnrollmentIssued,
}

/// The bundle held for its one download, and the password that opens it.
#[derive(Debug, serde::Serialize)]
pub struct EnrollmentIssued {
    pub id: String,
    pub one_time_password: String,
    pub expires_at: DateTime<Utc>,
    pub files: Vec<String>,
    pub download: String,
}

/// An enrollment bundle waiting for its one download.
pub struct PendingEnrollment {
    bundle: crate::device::enroll::Bundle,
    expires: DateTime<Utc>,
}

/// How long an enrollment bundle waits for its download.
const ENROLLMENT_HOURS: i64 = 24;

/// An API failure: status and a message for the JSON body.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

type ApiResult = Result<(StatusCode, Value), ApiError>;

const MAX_BODY: usize = 1 << 20;
const OPENAPI: &str = include_str!("../../../docs/admin-openapi.yaml");

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => ApiError(StatusCode::NOT_FOUND, m),
            StoreError::Conflict(m) => ApiError(StatusCode::CONFLICT, m),
            uncertain @ StoreError::Uncertain(_) => {
                log::error!("admin write: {uncertain}");
                ApiError(StatusCode::SERVICE_UNAVAILABLE, uncertain.to_string())
            }
            other => {
                log::error!("admin write failed: {other}");
                ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("the change was not saved: {other}"))
            }
        }
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

/// Open admin connections per client address (keyed as the rate limits
/// are): a whole IT department's browsers behind one NAT address stay far
/// below it, and a client opening connections to exhaust the process's
/// file descriptors (which the gateway's listeners share) is stopped there.
const ADMIN_CONNECTIONS_PER_CLIENT: u32 = 256;

/// Serves the admin API on `listener` (over TLS when `tls` is given) until
/// `shutdown` turns true. A connection must finish its TLS handshake, and
/// each request head, within `header_timeout`, which also closes a
/// connection idle that long (slowloris; no request needs a login first).
pub async fn serve(
    admin: Arc<Admin>,
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    header_timeout: std::time::Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(crate::control::console::sample_every_minute(admin.clone(), shutdown.clone()));
    let conns = Arc::new(crate::admission::OpenConns::new("admin listener", "a fixed cap"));
    let mut open = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => { log::warn!("admin accept failed: {e}"); continue; }
            },
        };
        while open.try_join_next().is_some() {}
        let (admin, tls, shutdown, conns) = (admin.clone(), tls.clone(), shutdown.clone(), conns.clone());
        open.spawn(async move {
            let Some(_slot) = conns.admit(admin.limits.key(peer.ip()), ADMIN_CONNECTIONS_PER_CLIENT) else { return };
            let used = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let seen = used.clone();
            let service = hyper::service::service_fn(move |req| {
                seen.store(true, std::sync::atomic::Ordering::Relaxed);
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(admin.handle(req, peer).await) }
            });
            match tls {
                None => serve_one(hyper_util::rt::TokioIo::new(stream), service, header_timeout, shutdown, &used).await,
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(header_timeout, acceptor.accept(stream)).await;
                    if let Ok(Ok(tls_stream)) = handshake {
                        serve_one(hyper_util::rt::TokioIo::new(tls_stream), service, header_timeout, shutdown, &used)
                            .await;
                    }
                }
            }
        });
    }
    // Stopping: no new connection; a request being answered is finished
    // (its write is committed or not, and the caller learns which).
    let _ =
        tokio::time::timeout(std::time::Duration::from_secs(10), async { while open.join_next().await.is_some() {} })
            .await;
}

/// One admin connection; on shutdown it finishes the request in hand and
/// closes. A connection accepted just before the shutdown (during an
/// upgrade's hand-over) gets a moment for its first request, so that
/// request is answered rather than its connection closed unread.
async fn serve_one<I, S>(
    io: I,
    service: S,
    header_timeout: std::time::Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    used: &std::sync::atomic::AtomicBool,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = Full<Bytes>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // hyper's header deadline runs from when it waits for a head, so it
    // bounds both a trickled head and an idle keep-alive connection.
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let stopping = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    tokio::select! {
        _ = &mut conn => {}
        () = stopping => {
            let first = tokio::time::Instant::now() + FIRST_REQUEST_GRACE;
            while !used.load(std::sync::atomic::Ordering::Relaxed) && tokio::time::Instant::now() < first {
                tokio::select! {
                    _ = &mut conn => return,
                    () = tokio::time::sleep(std::time::Duration::from_millis(10)) => {}
                }
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// How long a stopping admin API waits for a fresh connection's first request.
const FIRST_REQUEST_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Who acts: a named person with roles, however they proved it (a named
/// admin token today, a city SSO later). The API and the console both act
/// through one, so a role means the same on either.
pub struct Caller<'a> {
    pub name: &'a str,
    pub roles: &'a [Role],
    /// The department a supervisor heads.
    pub department: Option<&'a str>,
    pub source: SocketAddr,
}

impl<'a> Caller<'a> {
    /// The holder of an admin token, calling from `source`.
    pub fn token(token: &'a AdminToken, source: SocketAddr) -> Caller<'a> {
        Caller { name: &token.name, roles: &token.roles, department: token.department.as_deref(), source }
    }

    /// Whether the caller may take `action` (the one role table).
    pub fn may(&self, action: Action) -> bool {
        action.permits(self.roles)
    }
}

impl Admin {
    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        if crate::control::console::owns(req.uri().path()) {
            return crate::control::console::handle(self, req, peer).await;
        }
        if let Some(secs) = self.limits.admin_locked(peer.ip()) {
            let body = json!({"error": "too many failed authentications from this address"});
            let mut resp = reply(StatusCode::TOO_MANY_REQUESTS, &body, "application/json");
            if let Ok(v) = http::HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(http::header::RETRY_AFTER, v);
            }
            return resp;
        }
        let (method, path, query) =
            (req.method().clone(), req.uri().path().to_owned(), req.uri().query().unwrap_or("").to_owned());
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        // Posture reports are signed by the device's own key, not a bearer token.
        if let (&Method::POST, ["v1", "devices", id, "posture"]) = (&method, segments.as_slice()) {
            return answer(self.posture_report(id, req, peer).await);
        }
        let Some(token) = self.authenticate(&req) else {
            self.limits.admin_failure(peer.ip());
            return reply(
                StatusCode::UNAUTHORIZED,
                &json!({"error": "missing or unknown bearer token"}),
                "application/json",
            );
        };
        let caller = Caller::token(token, peer);
        if method == Method::GET && path == "/metrics" {
            let age = (Utc::now() - self.shared.snapshot().built_at).num_milliseconds() as f64 / 1000.0;
            let mut text = self.metrics.render(age, self.shared.live_requests());
            if let Some(report) = self.health.get() {
                text.push_str(&report.prometheus());
            }
            text.push_str(&self.writer.metrics().render());
            return reply_text(StatusCode::OK, text, "text/plain; version=0.0.4");
        }
        if method == Method::GET && path == "/v1/openapi.yaml" {
            return reply_text(StatusCode::OK, OPENAPI.to_owned(), "application/yaml");
        }
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return reply(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &json!({"error": "body larger than 1 MiB or unreadable"}),
                    "application/json",
                )
            }
        };
        if let Some(allow) = allowed_methods(&segments).filter(|a| !a.split(", ").any(|m| m == method.as_str())) {
            let body = json!({"error": format!("`{method}` is not allowed here: {allow}")});
            let mut resp = reply(StatusCode::METHOD_NOT_ALLOWED, &body, "application/json");
            resp.headers_mut().insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
            return resp;
        }
        answer(self.route(&caller, &method, &segments, &query, &body).await)
    }

    /// Finds the token whose hash matches, comparing every hash in constant time.
    fn authenticate(&self, req: &Request<Incoming>) -> Option<&AdminToken> {
        let presented = req.headers().get(http::header::AUTHORIZATION)?.to_str().ok()?;
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let (scheme, presented) = presented.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        self.token_matching(presented.trim())
    }

    /// The admin token whose hash matches `presented`, comparing every
    /// hash in constant time (the console's sign-in uses it too).
    pub fn token_matching(&self, presented: &str) -> Option<&AdminToken> {
        AdminToken::matching(&self.tokens, presented)
    }

    /// Parses the request and calls the action; each action checks its
    /// own role, so the console calling it is refused the same way.
    async fn route(&self, caller: &Caller<'_>, method: &Method, seg: &[&str], query: &str, body: &[u8]) -> ApiResult {
        match (method.as_str(), seg) {
            ("GET", ["v1", "status"]) => self.status(caller),
            ("GET", ["v1", "users"]) => self.read(caller, Action::ReadState).map(|s| ok(users_json(&s))),
            ("PUT", ["v1", "users", id]) => self.put_user(caller, id, parse(body)?).await,
            ("POST", ["v1", "users", id, action @ ("suspend" | "restrict")]) => {
                let kind = if *action == "suspend" { FlagKind::Suspended } else { FlagKind::Restricted };
                self.flag(caller, id, kind, parse(body)?).await
            }
            ("POST", ["v1", "users", id, action @ ("unsuspend" | "unrestrict")]) => {
                let kind = if *action == "unsuspend" { FlagKind::Suspended } else { FlagKind::Restricted };
                self.unflag(caller, id, kind, parse::<Reason>(body)?.reason).await
            }
            ("GET", ["v1", "devices"]) => self.read(caller, Action::ReadState).map(|s| ok(devices_json(&s))),
            ("POST", ["v1", "devices", "import"]) => self.import_devices(caller, parse(body)?).await,
            ("POST", ["v1", "devices"]) => self.file_device(caller, parse(body)?).await,
            ("POST", ["v1", "devices", id, action @ ("approve" | "reject" | "revoke")]) => {
                let status = match *action {
                    "approve" => DeviceStatus::Approved,
                    "reject" => DeviceStatus::Rejected,
                    _ => DeviceStatus::Revoked,
                };
                self.device_status(caller, id, status, parse(body)?).await
            }
            ("POST", ["v1", "devices", id, "certificate"]) => {
                let issued = self.issue_certificate(caller, id, parse(body)?, false).await?;
                Ok((StatusCode::CREATED, json!(issued)))
            }
            ("POST", ["v1", "devices", id, "certificate", "renew"]) => {
                let input = if body.iter().all(u8::is_ascii_whitespace) { CertInput::default() } else { parse(body)? };
                let issued = self.issue_certificate(caller, id, input, true).await?;
                Ok((StatusCode::CREATED, json!(issued)))
            }
            ("POST", ["v1", "enrollments", id, "download"]) => {
                let bundle = self.download_enrollment(caller, id).await?;
                let b64 = base64::engine::general_purpose::STANDARD;
                let files: serde_json::Map<String, Value> =
                    bundle.files().into_iter().map(|(name, data)| (name, Value::String(b64.encode(data)))).collect();
                Ok(ok(json!({"device": bundle.device, "not_after": bundle.not_after, "files_base64": files})))
            }
            ("POST", ["v1", "emergency-stop"]) => self.stop(caller, parse(body)?, true).await,
            ("POST", ["v1", "emergency-stop", "lift"]) => self.stop(caller, parse(body)?, false).await,
            ("GET", ["v1", "overtime"]) => self.overtime(caller).map(|grants| ok(json!({ "grants": grants }))),
            ("POST", ["v1", "overtime"]) => self.add_grant(caller, parse(body)?).await,
            ("DELETE", ["v1", "overtime", id]) => {
                let id = id.parse().map_err(|_| bad(format!("grant id `{id}` is not a number")))?;
                self.withdraw_grant(caller, id, optional_reason(body)?).await
            }
            ("GET", ["v1", "maintenance"]) => {
                self.read(caller, Action::ReadState).map(|s| ok(json!({ "windows": &*s.state.maintenance })))
            }
            ("POST", ["v1", "maintenance"]) => self.add_maintenance(caller, parse(body)?).await,
            ("DELETE", ["v1", "maintenance", id]) => {
                let id = id.parse().map_err(|_| bad(format!("maintenance id `{id}` is not a number")))?;
                self.remove_maintenance(caller, id, optional_reason(body)?).await
            }
            ("GET", ["v1", "apps"]) => self.read(caller, Action::ReadState).map(|s| ok(apps_json(&s))),
            ("PUT", ["v1", "apps", profile, app]) => self.set_app_stage(caller, profile, app, parse(body)?).await,
            ("POST", ["v1", "apps", profile, app, "reviews"]) => {
                self.add_review(caller, profile, app, parse(body)?).await
            }
            ("DELETE", ["v1", "reviews", id]) => {
                let id = id.parse().map_err(|_| bad(format!("review id `{id}` is not a number")))?;
                self.remove_review(caller, id, optional_reason(body)?).await
            }
            ("POST", ["v1", "rules", "reload"]) => self.reload(caller, parse(body)?).await,
            ("GET", ["v1", "audit"]) => self.query_audit(caller, serde_urlencoded_lite(query)?).await,
            _ => Err(ApiError(StatusCode::NOT_FOUND, format!("no route `{method} /{}`", seg.join("/")))),
        }
    }

    /// The current snapshot, for a caller who may take `action` (a read).
    pub fn read(&self, caller: &Caller<'_>, action: Action) -> Result<Arc<Snapshot>, ApiError> {
        allow(caller, action)?;
        Ok(self.shared.snapshot_full())
    }

    fn audit_entry(&self, caller: &Caller<'_>, action: &str, target: &str, reason: &str) -> AuditEntry {
        AuditEntry {
            time: Utc::now(),
            actor: caller.name.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            reason: reason.to_owned(),
            source: caller.source.ip().to_string(),
            approver: None,
        }
    }

    /// Records an admin action that changes no state (a download, a sign-in).
    pub async fn record_action(
        &self,
        caller: &Caller<'_>,
        action: &str,
        target: &str,
        reason: &str,
    ) -> Result<(), ApiError> {
        Ok(self.record(self.audit_entry(caller, action, target, reason)).await?)
    }

    async fn record(&self, entry: AuditEntry) -> Result<(), StoreError> {
        self.writer.store.record(entry).await
    }

    async fn commit(&self, caller: &Caller<'_>, change: Change, action: &str, target: &str, reason: &str) -> ApiResult {
        self.commit_entry(change, self.audit_entry(caller, action, target, reason)).await
    }

    async fn commit_entry(&self, change: Change, entry: AuditEntry) -> ApiResult {
        let (action, target) = (entry.action.clone(), entry.target.clone());
        let stored = self.writer.commit(change, entry).await?;
        let id = match stored {
            Change::AddGrant(g) => Some(g.id),
            Change::AddMaintenance(m) => Some(m.id),
            Change::AddReview(r) => Some(r.id),
            _ => None,
        };
        Ok((StatusCode::OK, json!({"ok": true, "action": action, "target": target, "id": id})))
    }

    /// A device's agent reports its posture with a token for `sekisho:posture`.
    async fn posture_report(&self, id: &str, req: Request<Incoming>, peer: SocketAddr) -> ApiResult {
        let body = Limited::new(req.into_body(), 16 * 1024)
            .collect()
            .await
            .map_err(|_| ApiError(StatusCode::PAYLOAD_TOO_LARGE, "body larger than 16 KiB or unreadable".into()))?
            .to_bytes();
        let input: PostureInput = parse(&body)?;
        if input.attestation.len() > sekisho_policy::attestation::MAX_TOKEN_LEN {
            return Err(bad("`attestation` is longer than 4096 bytes"));
        }
        let snap = self.shared.snapshot();
        let claims = match posture::check_report(&input.attestation, id, &snap.state.devices, Utc::now()) {
            Ok(c) => c,
            Err(e) => {
                self.limits.admin_failure(peer.ip());
                let status = match &e {
                    ReportError::Token(_) | ReportError::Stale => StatusCode::UNAUTHORIZED,
                    ReportError::OtherDevice(..) | ReportError::NotOwner(_) | ReportError::NotApproved => {
                        StatusCode::FORBIDDEN
                    }
                    ReportError::Audience => StatusCode::BAD_REQUEST,
                };
                return Err(ApiError(status, e.to_string()));
            }
        };
        let summary = format!("{} {}", claims.os, claims.os_version);
        let change = Change::SetDevicePosture {
            id: id.to_owned(),
            os: claims.os,
            os_version: claims.os_version,
            security_software: claims.security_software,
            reported_at: claims.iat,
        };
        let entry = AuditEntry {
            time: Utc::now(),
            actor: format!("device:{id}"),
            action: "device.posture".into(),
            target: id.to_owned(),
            reason: summary,
            source: peer.ip().to_string(),
            approver: None,
        };
        self.writer.commit(change, entry).await?;
        Ok((StatusCode::OK, json!({"ok": true, "action": "device.posture", "target": id})))
    }

    /// The gateway at a glance: profiles, stops, counts, live requests.
    pub fn status(&self, caller: &Caller<'_>) -> ApiResult {
        let snap = self.read(caller, Action::ReadState)?;
        let stops = &snap.state.stops;
        Ok((
            StatusCode::OK,
            json!({
                "profiles": snap.rules.profiles().iter().map(|p| json!({
                    "name": p.name, "title": p.title,
                    "hosts": p.routes.iter().map(|r| r.host.as_str()).collect::<Vec<_>>(),
                    "valid_from": p.valid_from, "valid_until": p.valid_until,
                    "emergency_stop": stops.profiles.get(&p.name),
                })).collect::<Vec<_>>(),
                "emergency_stop": stops.global,
                "users": snap.state.users.len(),
                "devices": snap.state.devices.len(),
                "live_requests": self.shared.live_requests(),
                "snapshot_built_at": snap.built_at,
                "audit_log_writable": self.audit.healthy(),
                "health": self.health.get().as_deref(),
                "store": self.writer.status(),
            }),
        ))
    }

    pub async fn put_user(&self, caller: &Caller<'_>, id: &str, input: UserInput) -> ApiResult {
        allow(caller, Action::PutUser)?;
        check_id(id, "user id")?;
        let snap = self.shared.snapshot();
        input.profiles.iter().try_for_each(|p| check_profile(&snap, Some(p)))?;
        if input.role.trim().is_empty() || input.display_name.trim().is_empty() {
            return Err(bad("`role` and `display_name` must not be empty"));
        }
        check_role(&input.role, &input.profiles, &snap)?;
        let derived = if snap.state.users.contains_key(id) { reasons::UPDATED } else { reasons::CREATED };
        let reason = given_or(input.reason, derived);
        let department = input.department.map(|d| d.trim().to_owned()).filter(|d| !d.is_empty());
        if let Some(s) = &input.schedule {
            let known =
                input.profiles.iter().filter_map(|p| snap.rules.profile(p)).any(|p| p.schedules.contains_key(s));
            if !known {
                return Err(bad(format!("schedule `{s}` is not defined in any of the user's profiles")));
            }
        }
        let change = Change::PutUser {
            id: id.to_owned(),
            display_name: input.display_name,
            role: input.role,
            profiles: input.profiles,
            department,
            schedule: input.schedule,
        };
        self.commit(caller, change, "user.put", id, &reason).await
    }

    /// Suspends or restricts a user (第18条), open-ended or until a time.
    pub async fn flag(&self, caller: &Caller<'_>, user: &str, kind: FlagKind, input: FlagInput) -> ApiResult {
        allow(caller, Action::FlagUser)?;
        let until = input.until.map(|u| u.with_timezone(&Utc));
        if until.is_some_and(|u| u <= Utc::now()) {
            return Err(bad("`until` is already past"));
        }
        self.set_flag(caller, user, kind, Some(until), input.reason).await
    }

    /// Lifts a suspension or restriction.
    pub async fn unflag(&self, caller: &Caller<'_>, user: &str, kind: FlagKind, reason: String) -> ApiResult {
        allow(caller, Action::FlagUser)?;
        self.set_flag(caller, user, kind, None, reason).await
    }

    /// Sets (`Some(until)`) or lifts (`None`) a flag; either way the reason
    /// is required and goes into the audit record.
    async fn set_flag(
        &self,
        caller: &Caller<'_>,
        user: &str,
        kind: FlagKind,
        set: Option<Option<DateTime<Utc>>>,
        reason: String,
    ) -> ApiResult {
        let reason = non_empty(reason)?;
        let flag = set.map(|until| Flag { reason: reason.clone(), since: Utc::now(), until });
        let action = match (kind, flag.is_some()) {
            (FlagKind::Suspended, true) => "user.suspend",
            (FlagKind::Suspended, false) => "user.unsuspend",
            (FlagKind::Restricted, true) => "user.restrict",
            (FlagKind::Restricted, false) => "user.unrestrict",
        };
        self.commit(caller, Change::SetFlag { user: user.to_owned(), kind, flag }, action, user, &reason).await
    }

    /// A rules revision (Abiko 13.) names who approved it and why.
    pub async fn reload(&self, caller: &Caller<'_>, input: ReloadInput) -> ApiResult {
        allow(caller, Action::ReloadRules)?;
        let (reason, approver) = (non_empty(input.reason)?, non_empty(input.approver)?);
        let mut entry = self.audit_entry(caller, "rules.reload", &self.rules_dir.display().to_string(), &reason);
        entry.approver = Some(approver);
        match self.writer.reload_rules(&self.rules_dir, entry).await {
            Ok(n) => Ok((StatusCode::OK, json!({"ok": true, "profiles": n}))),
            Err(RulesReloadError::Store(e)) => Err(e.into()),
            Err(e) => Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("rules not reloaded, the running rules stay: {e}"),
            )),
        }
    }

    /// `GET /v1/audit`: the admin trail (`kind=admin`) or the request
    /// decisions (`kind=requests`), filtered, newest first, paged.
    async fn query_audit(&self, caller: &Caller<'_>, q: AuditQuery) -> ApiResult {
        let limit = q.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(bad(format!("`limit` must be 1 to 1000, not `{limit}`")));
        }
        let skip = q.offset.unwrap_or(0);
        let utc = |t: Option<DateTime<FixedOffset>>| t.map(|t| t.with_timezone(&Utc));
        match q.kind.as_deref().unwrap_or("admin") {
            "admin" => {
                let filter = AdminFilter {
                    target: q.target.or(q.user),
                    action: q.action,
                    actor: q.actor,
                    since: utc(q.since),
                    until: utc(q.until),
                    skip,
                    limit,
                };
                let records = self.admin_records(caller, &filter).await?;
                Ok(ok(json!({ "records": records })))
            }
            "requests" => {
                let filter = RequestFilter {
                    user: q.user,
                    device: q.device,
                    reason: q.reason,
                    profile: q.profile,
                    decision: q.decision,
                    request_id: q.request_id,
                    since: q.since,
                    until: q.until,
                };
                let found = self.request_records(caller, filter, skip as usize, limit as usize).await?;
                Ok(ok(json!({ "records": found.records, "more": found.more, "cut_short": found.cut_short })))
            }
            other => Err(bad(format!("`kind` must be `admin` or `requests`, not `{other}`"))),
        }
    }

    /// The admin audit trail, for a caller who may read it.
    pub async fn admin_records(&self, caller: &Caller<'_>, filter: &AdminFilter) -> Result<Vec<AuditRecord>, ApiError> {
        allow(caller, Action::ReadAudit)?;
        Ok(self.writer.store.audit(filter.clone()).await?)
    }

    /// Request decisions from the audit log, for a caller who may read them.
    pub async fn request_records(
        &self,
        caller: &Caller<'_>,
        filter: RequestFilter,
        skip: usize,
        limit: usize,
    ) -> Result<Found, ApiError> {
        allow(caller, Action::ReadAudit)?;
        let path = self.audit.path().to_owned();
        let found = tokio::task::spawn_blocking(move || {
            crate::control::audit_search::search(&path, &filter, skip, limit, AUDIT_SCAN_BYTES)
        })
        .await
        .map_err(|_| ApiError(StatusCode::SERVICE_UNAVAILABLE, "audit log search failed".into()))?;
        found.map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("audit log unreadable: {e}")))
    }
}

/// How much of the request audit log one search reads, from its end.
const AUDIT_SCAN_BYTES: u64 = 256 << 20;

/// The role check every action starts with (the table is `roles::Action`).
fn allow(caller: &Caller<'_>, action: Action) -> Result<(), ApiError> {
    if caller.may(action) {
        return Ok(());
    }
    let needed: Vec<_> = action.roles().iter().map(|r| r.as_str()).collect();
    Err(ApiError(
        StatusCode::FORBIDDEN,
        format!("`{}` lacks the role for this action (needs one of: {})", caller.name, needed.join(", ")),
    ))
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON body: {e}")))
}

/// The reason in an optional body, if one was given.
fn optional_reason(body: &[u8]) -> Result<Option<String>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    parse::<Reason>(body).map(|r| Some(r.reason))
}

/// The caller's reason when it says something, else one the API derives,
/// so that no admin record has an empty reason.
fn given_or(given: Option<String>, derived: &str) -> String {
    match given.as_deref().map(str::trim) {
        Some(g) if !g.is_empty() => g.to_owned(),
        _ => derived.to_owned(),
    }
}

fn non_empty(s: String) -> Result<String, ApiError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(bad("`reason` (and `approver` where asked) must not be empty"));
    }
    Ok(t.to_owned())
}

/// The methods a known path answers, for a 405 instead of a 404.
fn allowed_methods(seg: &[&str]) -> Option<&'static str> {
    Some(match seg {
        ["metrics"] | ["v1", "openapi.yaml" | "status" | "users" | "audit"] => "GET",
        ["v1", "users", _] => "PUT",
        ["v1", "devices" | "overtime" | "maintenance"] => "GET, POST",
        ["v1", "overtime" | "maintenance" | "reviews", _] => "DELETE",
        ["v1", "apps"] => "GET",
        ["v1", "apps", _, _] => "PUT",
        ["v1", "apps", _, _, "reviews"] => "POST",
        ["v1", "users", _, "suspend" | "restrict" | "unsuspend" | "unrestrict"]
        | ["v1", "devices", "import"]
        | ["v1", "devices", _, "approve" | "reject" | "revoke" | "certificate" | "posture"]
        | ["v1", "devices", _, "certificate", "renew"]
        | ["v1", "enrollments", _, "download"]
        | ["v1", "emergency-stop"]
        | ["v1", "emergency-stop", "lift"]
        | ["v1", "rules", "reload"] => "POST",
        _ => return None,
    })
}

/// A profile an action names must exist: a typo would otherwise be stored
/// and apply to nothing (a user's access, a maintenance window, an overtime
/// grant, a stop, an app's stage).
fn check_profile(snap: &Snapshot, profile: Option<&str>) -> Result<(), ApiError> {
    match profile {
        Some(p) if snap.rules.profile(p).is_none() => Err(bad(format!("profile `{p}` does not exist"))),
        _ => Ok(()),
    }
}

/// A user's role must be one a profile of theirs defines: the engine
/// refuses every request of a user whose role no profile lists, so a typo
/// here (`satff`, ` staff`) would lock them out with nothing said. A user
/// with no profiles uses nothing yet; their role is checked when profiles
/// are given.
fn check_role(role: &str, profiles: &[String], snap: &Snapshot) -> Result<(), ApiError> {
    let mine: Vec<&Profile> = profiles.iter().filter_map(|p| snap.rules.profile(p)).map(|p| &**p).collect();
    if mine.is_empty() || mine.iter().any(|p| p.roles.contains_key(role)) {
        return Ok(());
    }
    let mut defined: Vec<&str> = mine.iter().flat_map(|p| p.roles.keys().map(String::as_str)).collect();
    defined.sort_unstable();
    defined.dedup();
    let defined = defined.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", ");
    Err(bad(format!("role `{role}` is not defined in any of the user's profiles (they define {defined})")))
}

/// Times in the API's input: RFC 3339 with an offset (as chrono reads it,
/// which also takes a space for the `T`). A time without one
/// (`2026-12-02T18:00:00`) is ambiguous between Japan and UTC, so it is
/// refused, with an error that shows the form (chrono's own said only
/// "premature end of input").
mod rfc3339 {
    use chrono::{DateTime, FixedOffset};
    use serde::{Deserialize as _, Deserializer};

    pub fn required<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<FixedOffset>, D::Error> {
        parse(&String::deserialize(d)?)
    }

    pub fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<FixedOffset>>, D::Error> {
        Option::<String>::deserialize(d)?.map(|t| parse(&t)).transpose()
    }

    fn parse<E: serde::de::Error>(text: &str) -> Result<DateTime<FixedOffset>, E> {
        let text = text.trim();
        text.parse::<DateTime<FixedOffset>>().ok().or_else(|| plus_lost_in_a_query(text)).ok_or_else(|| {
            E::custom(format!("`{text}` is not a time with its UTC offset, such as `2026-12-02T18:00:00+09:00`"))
        })
    }

    /// `?since=2026-12-02T18:00:00+09:00` typed into a URL arrives with a
    /// space for the `+` (form encoding): a space before a final `HH:MM`
    /// can only have been that plus.
    fn plus_lost_in_a_query(text: &str) -> Option<DateTime<FixedOffset>> {
        let (time, offset) = text.rsplit_once(' ')?;
        let is_offset = offset.len() == 5 && offset.get(2..3) == Some(":");
        is_offset.then(|| format!("{time}+{offset}").parse().ok()).flatten()
    }
}

/// Whether `id` is a user or device id as the API takes them.
pub fn is_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
}

fn check_id(id: &str, what: &str) -> Result<(), ApiError> {
    is_id(id).then_some(()).ok_or_else(|| bad(format!("{what} `{id}` must be 1-128 of letters, digits, `-_.@`")))
}

fn window(
    start: DateTime<FixedOffset>,
    end: DateTime<FixedOffset>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let (start, end) = (start.with_timezone(&Utc), end.with_timezone(&Utc));
    if end <= start {
        return Err(bad("`end` must be after `start`"));
    }
    // A window that is over would be stored and change nothing.
    if end <= Utc::now() {
        return Err(bad("`end` is already past"));
    }
    Ok((start, end))
}

fn ok(value: Value) -> (StatusCode, Value) {
    (StatusCode::OK, value)
}

fn users_json(snap: &Snapshot) -> Value {
    let mut users: Vec<&sekisho_policy::state::User> = snap.state.users.values().map(|u| &**u).collect();
    users.sort_by(|a, b| a.id.cmp(&b.id));
    json!({ "users": users })
}

fn answer(result: ApiResult) -> Response<Full<Bytes>> {
    match result {
        Ok((status, value)) => reply(status, &value, "application/json"),
        Err(ApiError(status, message)) => reply(status, &json!({ "error": message }), "application/json"),
    }
}

fn reply(status: StatusCode, value: &Value, content_type: &str) -> Response<Full<Bytes>> {
    reply_text(status, value.to_string(), content_type)
}

fn reply_text(status: StatusCode, body: String, content_type: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
    }
    resp
}

/// `a=b&c=d` into a struct, percent-decoding values.
fn serde_urlencoded_lite<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let mut map = serde_json::Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = sekisho_policy::body::percent_decode(v.as_bytes())
            .ok_or_else(|| bad(format!("query value for `{k}` is not valid percent-encoding")))?;
        let value = match k {
            "limit" | "offset" => {
                v.parse::<u32>().map(Value::from).map_err(|_| bad(format!("`{k}` must be a number, not `{v}`")))?
            }
            _ => Value::String(v),
        };
        map.insert(k.to_owned(), value);
    }
    serde_json::from_value(Value::Object(map)).map_err(|e| bad(format!("invalid query: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserInput {
    pub display_name: String,
    pub role: String,
    pub profiles: Vec<String>,
    /// 所属: whose supervisor orders this person's overtime.
    pub department: Option<String>,
    /// A named working-hours schedule of one of the profiles (Abiko 8.).
    pub schedule: Option<String>,
    pub reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagInput {
    pub reason: String,
    #[serde(default, deserialize_with = "rfc3339::optional")]
    pub until: Option<DateTime<FixedOffset>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadInput {
    /// Who approved the revision (Abiko 13.: the 統括情報責任者).
    pub approver: String,
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostureInput {
    attestation: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub kind: Option<String>,
    pub user: Option<String>,
    pub target: Option<String>,
    pub action: Option<String>,
    pub actor: Option<String>,
    pub reason: Option<String>,
    pub device: Option<String>,
    pub profile: Option<String>,
    pub decision: Option<Outcome>,
    pub request_id: Option<String>,
    #[serde(default, deserialize_with = "rfc3339::optional")]
    pub since: Option<DateTime<FixedOffset>>,
    #[serde(default, deserialize_with = "rfc3339::optional")]
    pub until: Option<DateTime<FixedOffset>>,
    pub offset: Option<u32>,
    pub limit: Option<u32>,
}
