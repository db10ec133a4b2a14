//! The admin API (hyper): JSON in, JSON out, every route behind a bearer
//! token compared in constant time, each token limited to its roles. It
//! only validates input and calls the store through `Shared::commit`; the
//! audit record is part of the same transaction, so no action answers 2xx
//! unless it and its audit line are durable. It must never log a token.

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
use sekisho_policy::state::{Device, Flag, MaintenanceWindow, OvertimeGrant, SecuritySoftware, Stop};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{AdminToken, Role};
use crate::control::audit::AuditLog;
use crate::control::backend::AuditFilter;
use crate::control::store::{AuditEntry, Change, FlagKind, StoreError};
use crate::control::writer::{RulesReloadError, Writer};
use crate::limits::Limiters;
use crate::metrics::Metrics;
use crate::shared::Shared;

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
}

/// An API failure: status and a message for the JSON body.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

type ApiResult = Result<(StatusCode, Value), ApiError>;

const MAX_BODY: usize = 1 << 20;
const OPENAPI: &str = include_str!("../../docs/admin-openapi.yaml");

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

/// Serves the admin API on `listener` (over TLS when `tls` is given) until
/// `shutdown` turns true.
pub async fn serve(
    admin: Arc<Admin>,
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => { log::warn!("admin accept failed: {e}"); continue; }
            },
        };
        let admin = admin.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(admin.handle(req, peer).await) }
            });
            let http = hyper::server::conn::http1::Builder::new();
            match tls {
                None => drop(http.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await),
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(stream)).await;
                    if let Ok(Ok(tls_stream)) = handshake {
                        drop(http.serve_connection(hyper_util::rt::TokioIo::new(tls_stream), service).await);
                    }
                }
            }
        });
    }
}

/// Who is calling, once the token matched.
struct Caller<'a> {
    token: &'a AdminToken,
    source: SocketAddr,
}

impl Admin {
    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
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
        let caller = Caller { token, source: peer };
        if method == Method::GET && path == "/metrics" {
            let age = (Utc::now() - self.shared.snapshot().built_at).num_milliseconds() as f64 / 1000.0;
            let mut text = self.metrics.render(age, self.shared.conns.count());
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
        let presented = presented.trim();
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for t in &self.tokens {
            if bool::from(t.sha256.ct_eq(&hash)) {
                found = Some(t);
            }
        }
        found
    }

    async fn route(&self, caller: &Caller<'_>, method: &Method, seg: &[&str], query: &str, body: &[u8]) -> ApiResult {
        use Role::{Applicant, Auditor, GeneralAdmin, SystemManager};
        let any = &[SystemManager, GeneralAdmin, Auditor][..];
        match (method.as_str(), seg) {
            ("GET", ["v1", "status"]) => allow(caller, any).map(|()| self.status()),
            ("GET", ["v1", "users"]) => allow(caller, any).map(|()| self.list_users()),
            ("PUT", ["v1", "users", id]) => {
                allow(caller, &[GeneralAdmin])?;
                self.put_user(caller, id, parse(body)?).await
            }
            ("POST", ["v1", "users", id, action @ ("suspend" | "restrict")]) => {
                allow(caller, &[GeneralAdmin])?;
                let kind = if *action == "suspend" { FlagKind::Suspended } else { FlagKind::Restricted };
                let input: FlagInput = parse(body)?;
                let until = input.until.map(|u| u.with_timezone(&Utc));
                if until.is_some_and(|u| u <= Utc::now()) {
                    return Err(bad("`until` is already past"));
                }
                self.set_flag(caller, id, kind, Some(until), input.reason).await
            }
            ("POST", ["v1", "users", id, action @ ("unsuspend" | "unrestrict")]) => {
                allow(caller, &[GeneralAdmin])?;
                let kind = if *action == "unsuspend" { FlagKind::Suspended } else { FlagKind::Restricted };
                let input: Reason = parse(body)?;
                self.set_flag(caller, id, kind, None, input.reason).await
            }
            ("GET", ["v1", "devices"]) => allow(caller, any).map(|()| self.list_devices()),
            ("POST", ["v1", "devices", "import"]) => {
                allow(caller, &[SystemManager])?;
                self.import_devices(caller, parse(body)?).await
            }
            ("POST", ["v1", "devices"]) => {
                allow(caller, &[SystemManager, GeneralAdmin, Applicant])?;
                self.file_device(caller, parse(body)?).await
            }
            ("POST", ["v1", "devices", id, action @ ("approve" | "reject" | "revoke")]) => {
                let (roles, status) = match *action {
                    "approve" => (&[SystemManager][..], DeviceStatus::Approved),
                    "reject" => (&[SystemManager][..], DeviceStatus::Rejected),
                    _ => (&[SystemManager, GeneralAdmin][..], DeviceStatus::Revoked),
                };
                allow(caller, roles)?;
                self.device_status(caller, id, status, parse(body)?).await
            }
            ("POST", ["v1", "devices", id, "certificate"]) => {
                allow(caller, &[SystemManager])?;
                self.issue_certificate(caller, id, parse(body)?).await
            }
            ("POST", ["v1", "emergency-stop"]) => {
                allow(caller, &[GeneralAdmin])?;
                self.stop(caller, parse(body)?, true).await
            }
            ("POST", ["v1", "emergency-stop", "lift"]) => {
                allow(caller, &[GeneralAdmin])?;
                self.stop(caller, parse(body)?, false).await
            }
            ("GET", ["v1", "overtime"]) => allow(caller, any).map(|()| self.list_overtime()),
            ("POST", ["v1", "overtime"]) => {
                allow(caller, &[GeneralAdmin])?;
                self.add_grant(caller, parse(body)?).await
            }
            ("DELETE", ["v1", "overtime", id]) => {
                allow(caller, &[GeneralAdmin])?;
                let id = id.parse().map_err(|_| bad(format!("grant id `{id}` is not a number")))?;
                self.commit(
                    caller,
                    Change::RemoveGrant(id),
                    "overtime.remove",
                    &id.to_string(),
                    &optional_reason(body)?,
                )
                .await
            }
            ("GET", ["v1", "maintenance"]) => allow(caller, any).map(|()| self.list_maintenance()),
            ("POST", ["v1", "maintenance"]) => {
                allow(caller, &[SystemManager])?;
                self.add_maintenance(caller, parse(body)?).await
            }
            ("DELETE", ["v1", "maintenance", id]) => {
                allow(caller, &[SystemManager])?;
                let id = id.parse().map_err(|_| bad(format!("maintenance id `{id}` is not a number")))?;
                self.commit(
                    caller,
                    Change::RemoveMaintenance(id),
                    "maintenance.remove",
                    &id.to_string(),
                    &optional_reason(body)?,
                )
                .await
            }
            ("POST", ["v1", "rules", "reload"]) => {
                allow(caller, &[SystemManager])?;
                self.reload(caller).await
            }
            ("GET", ["v1", "audit"]) => {
                allow(caller, any)?;
                self.query_audit(query).await
            }
            _ => Err(ApiError(StatusCode::NOT_FOUND, format!("no route `{method} /{}`", seg.join("/")))),
        }
    }

    fn audit_entry(&self, caller: &Caller<'_>, action: &str, target: &str, reason: &str) -> AuditEntry {
        AuditEntry {
            time: Utc::now(),
            actor: caller.token.name.clone(),
            action: action.to_owned(),
            target: target.to_owned(),
            reason: reason.to_owned(),
            source: caller.source.ip().to_string(),
        }
    }

    async fn commit(&self, caller: &Caller<'_>, change: Change, action: &str, target: &str, reason: &str) -> ApiResult {
        let entry = self.audit_entry(caller, action, target, reason);
        let stored = self.writer.commit(change, entry).await?;
        let id = match stored {
            Change::AddGrant(g) => Some(g.id),
            Change::AddMaintenance(m) => Some(m.id),
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
        };
        self.writer.commit(change, entry).await?;
        Ok((StatusCode::OK, json!({"ok": true, "action": "device.posture", "target": id})))
    }

    fn status(&self) -> (StatusCode, Value) {
        let snap = self.shared.snapshot();
        let stops = &snap.state.stops;
        (
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
                "live_requests": self.shared.conns.count(),
                "snapshot_built_at": snap.built_at,
                "store": self.writer.status(),
            }),
        )
    }

    fn list_users(&self) -> (StatusCode, Value) {
        let snap = self.shared.snapshot();
        let mut users: Vec<&sekisho_policy::state::User> = snap.state.users.values().map(|u| &**u).collect();
        users.sort_by(|a, b| a.id.cmp(&b.id));
        (StatusCode::OK, json!({ "users": users }))
    }

    async fn put_user(&self, caller: &Caller<'_>, id: &str, input: UserInput) -> ApiResult {
        check_id(id, "user id")?;
        let snap = self.shared.snapshot();
        if let Some(unknown) = input.profiles.iter().find(|p| snap.rules.profile(p).is_none()) {
            return Err(bad(format!("profile `{unknown}` does not exist")));
        }
        if input.role.trim().is_empty() || input.display_name.trim().is_empty() {
            return Err(bad("`role` and `display_name` must not be empty"));
        }
        let change = Change::PutUser {
            id: id.to_owned(),
            display_name: input.display_name,
            role: input.role,
            profiles: input.profiles,
        };
        self.commit(caller, change, "user.put", id, &input.reason.unwrap_or_default()).await
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

    fn list_devices(&self) -> (StatusCode, Value) {
        let snap = self.shared.snapshot();
        let mut devices: Vec<_> = snap.state.devices.values().map(|d| device_json(d)).collect();
        devices.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        (StatusCode::OK, json!({ "devices": devices }))
    }

    async fn file_device(&self, caller: &Caller<'_>, input: DeviceInput) -> ApiResult {
        let device = input.into_device(DeviceStatus::Pending)?;
        let id = device.id.clone();
        let (_, v) = self.commit(caller, Change::FileDevice(Box::new(device)), "device.apply", &id, "").await?;
        Ok((StatusCode::CREATED, v))
    }

    /// Registers devices in bulk, approved (an asset register of city-issued
    /// PCs): all or none, one transaction, one audit record.
    async fn import_devices(&self, caller: &Caller<'_>, input: ImportInput) -> ApiResult {
        let reason = non_empty(input.reason)?;
        if input.devices.is_empty() || input.devices.len() > MAX_IMPORT {
            return Err(bad(format!("give 1 to {MAX_IMPORT} devices per import, not {}", input.devices.len())));
        }
        let devices =
            input.devices.into_iter().map(|d| d.into_device(DeviceStatus::Approved)).collect::<Result<Vec<_>, _>>()?;
        let target = format!("{} devices", devices.len());
        let (_, v) = self.commit(caller, Change::ImportDevices(devices), "device.import", &target, &reason).await?;
        Ok((StatusCode::CREATED, v))
    }

    async fn device_status(&self, caller: &Caller<'_>, id: &str, status: DeviceStatus, input: Reason) -> ApiResult {
        let reason = non_empty(input.reason)?;
        let change = Change::SetDeviceStatus { id: id.to_owned(), status };
        self.commit(caller, change, &format!("device.{}", status.as_str()), id, &reason).await
    }

    /// Issues a client certificate to an approved device. The private key is
    /// in this answer only; the store keeps the certificate's fingerprint.
    async fn issue_certificate(&self, caller: &Caller<'_>, id: &str, input: CertInput) -> ApiResult {
        let ca = self.device_ca.clone().ok_or_else(|| {
            ApiError(StatusCode::CONFLICT, "no device CA is configured ([tls] device_ca_cert)".into())
        })?;
        let approved = self.shared.snapshot().state.devices.get(id).map(|d| d.status == DeviceStatus::Approved);
        match approved {
            None => return Err(ApiError(StatusCode::NOT_FOUND, format!("device `{id}` is not registered"))),
            Some(false) => return Err(ApiError(StatusCode::CONFLICT, format!("device `{id}` is not approved"))),
            Some(true) => {}
        }
        let days = input.days.unwrap_or(365);
        if !(1..=825).contains(&days) {
            return Err(bad("`days` must be 1..=825"));
        }
        if input.pkcs12_password.as_ref().is_some_and(|p| p.chars().count() < 8) {
            return Err(bad("`pkcs12_password` must be at least 8 characters"));
        }
        let issued = ca.issue(id, days).map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let pkcs12 = match input.pkcs12_password.as_deref() {
            Some(p) => {
                let der =
                    issued.pkcs12(&ca, p).map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
                Some(base64::engine::general_purpose::STANDARD.encode(der))
            }
            None => None,
        };
        let change = Change::SetDeviceCert { id: id.to_owned(), sha256: issued.sha256 };
        self.commit(caller, change, "device.certificate", id, &input.reason.unwrap_or_default()).await?;
        Ok((
            StatusCode::CREATED,
            json!({
                "device": id,
                "certificate_pem": issued.certificate_pem,
                "private_key_pem": issued.private_key_pem,
                "ca_pem": ca.pem(),
                "sha256": crate::config::hex(&issued.sha256),
                "pkcs12_base64": pkcs12,
                "not_after": issued.not_after,
            }),
        ))
    }

    async fn stop(&self, caller: &Caller<'_>, input: StopInput, on: bool) -> ApiResult {
        let reason = non_empty(input.reason)?;
        if let Some(p) = &input.profile {
            if self.shared.snapshot().rules.profile(p).is_none() {
                return Err(bad(format!("profile `{p}` does not exist")));
            }
        }
        let target = input.profile.clone().unwrap_or_else(|| "*".to_owned());
        let stop = on.then(|| Stop { reason: reason.clone(), since: Utc::now() });
        let action = if on { "emergency_stop.on" } else { "emergency_stop.off" };
        self.commit(caller, Change::SetStop { profile: input.profile, stop }, action, &target, &reason).await
    }

    fn list_overtime(&self) -> (StatusCode, Value) {
        let snap = self.shared.snapshot();
        let mut grants: Vec<_> = snap.state.overtime.values().flatten().collect();
        grants.sort_by_key(|g| g.id);
        (StatusCode::OK, json!({ "grants": grants }))
    }

    async fn add_grant(&self, caller: &Caller<'_>, input: GrantInput) -> ApiResult {
        let (start, end) = window(input.start, input.end)?;
        let reason = non_empty(input.reason)?;
        let approver = non_empty(input.approver)?;
        let grant = OvertimeGrant {
            id: 0,
            user: input.user.clone(),
            profile: input.profile,
            approver,
            reason: reason.clone(),
            start,
            end,
        };
        let (_, v) = self.commit(caller, Change::AddGrant(grant), "overtime.grant", &input.user, &reason).await?;
        Ok((StatusCode::CREATED, v))
    }

    fn list_maintenance(&self) -> (StatusCode, Value) {
        let snap = self.shared.snapshot();
        (StatusCode::OK, json!({ "windows": &*snap.state.maintenance }))
    }

    async fn add_maintenance(&self, caller: &Caller<'_>, input: MaintenanceInput) -> ApiResult {
        let (start, end) = window(input.start, input.end)?;
        let reason = non_empty(input.reason)?;
        let target = input.profile.clone().unwrap_or_else(|| "*".to_owned());
        let m = MaintenanceWindow { id: 0, profile: input.profile, reason: reason.clone(), start, end };
        let (_, v) = self.commit(caller, Change::AddMaintenance(m), "maintenance.add", &target, &reason).await?;
        Ok((StatusCode::CREATED, v))
    }

    async fn reload(&self, caller: &Caller<'_>) -> ApiResult {
        let entry = self.audit_entry(caller, "rules.reload", &self.rules_dir.display().to_string(), "");
        match self.writer.reload_rules(&self.rules_dir, entry).await {
            Ok(n) => Ok((StatusCode::OK, json!({"ok": true, "profiles": n}))),
            Err(RulesReloadError::Store(e)) => Err(e.into()),
            Err(e) => Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("rules not reloaded, the running rules stay: {e}"),
            )),
        }
    }

    async fn query_audit(&self, query: &str) -> ApiResult {
        let q: AuditQuery = serde_urlencoded_lite(query)?;
        let limit = q.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(bad(format!("`limit` must be 1 to 1000, not `{limit}`")));
        }
        match q.kind.as_deref().unwrap_or("admin") {
            "admin" => {
                let filter = AuditFilter {
                    target: q.target.clone().or_else(|| q.user.clone()),
                    action: q.action.clone(),
                    limit,
                };
                let records = self.writer.store.audit(filter).await?;
                Ok((StatusCode::OK, json!({ "records": records })))
            }
            "requests" => {
                let records = self
                    .audit
                    .query(q.user.as_deref(), q.reason.as_deref(), limit as usize)
                    .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("audit log unreadable: {e}")))?;
                Ok((StatusCode::OK, json!({ "records": records })))
            }
            other => Err(bad(format!("`kind` must be `admin` or `requests`, not `{other}`"))),
        }
    }
}

fn allow(caller: &Caller<'_>, roles: &[Role]) -> Result<(), ApiError> {
    if caller.token.roles.iter().any(|r| roles.contains(r)) {
        return Ok(());
    }
    let needed: Vec<_> = roles.iter().map(|r| r.as_str()).collect();
    Err(ApiError(
        StatusCode::FORBIDDEN,
        format!("token `{}` lacks the role for this action (needs one of: {})", caller.token.name, needed.join(", ")),
    ))
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON body: {e}")))
}

fn optional_reason(body: &[u8]) -> Result<String, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(String::new());
    }
    parse::<Reason>(body).map(|r| r.reason)
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
        ["v1", "overtime" | "maintenance", _] => "DELETE",
        ["v1", "users", _, "suspend" | "restrict" | "unsuspend" | "unrestrict"]
        | ["v1", "devices", "import"]
        | ["v1", "devices", _, "approve" | "reject" | "revoke" | "certificate" | "posture"]
        | ["v1", "emergency-stop"]
        | ["v1", "emergency-stop", "lift"]
        | ["v1", "rules", "reload"] => "POST",
        _ => return None,
    })
}

fn check_id(id: &str, what: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
    ok.then_some(()).ok_or_else(|| bad(format!("{what} `{id}` must be 1-128 of letters, digits, `-_.@`")))
}

fn window(
    start: DateTime<FixedOffset>,
    end: DateTime<FixedOffset>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let (start, end) = (start.with_timezone(&Utc), end.with_timezone(&Utc));
    if end <= start {
        return Err(bad("`end` must be after `start`"));
    }
    Ok((start, end))
}

fn device_json(d: &Device) -> Value {
    json!({
        "id": d.id, "owner": d.owner, "kind": d.kind, "ownership": d.ownership, "os": d.os,
        "os_version": d.os_version, "security_software": d.security_software, "key_alg": d.key.alg(),
        "public_key": d.key.to_b64(), "status": d.status,
    })
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
        let v = percent_decode(v).ok_or_else(|| bad(format!("query value for `{k}` is not valid percent-encoding")))?;
        let value = match k {
            "limit" => {
                v.parse::<u32>().map(Value::from).map_err(|_| bad(format!("`limit` must be a number, not `{v}`")))?
            }
            _ => Value::String(v),
        };
        map.insert(k.to_owned(), value);
    }
    serde_json::from_value(Value::Object(map)).map_err(|e| bad(format!("invalid query: {e}")))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserInput {
    display_name: String,
    role: String,
    profiles: Vec<String>,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlagInput {
    reason: String,
    until: Option<DateTime<FixedOffset>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reason {
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceInput {
    id: String,
    owner: String,
    kind: DeviceKind,
    ownership: Ownership,
    os: Os,
    os_version: Version,
    security_software: Option<SecurityInput>,
    key_alg: String,
    public_key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecurityInput {
    name: String,
    updated: NaiveDate,
}

impl DeviceInput {
    fn into_device(self, status: DeviceStatus) -> Result<Device, ApiError> {
        check_id(&self.id, "device id")?;
        let key =
            DeviceKey::parse(&self.key_alg, &self.public_key).map_err(|e| bad(format!("device `{}`: {e}", self.id)))?;
        Ok(Device {
            id: self.id,
            owner: self.owner,
            kind: self.kind,
            ownership: self.ownership,
            os: self.os,
            os_version: self.os_version,
            security_software: self.security_software.map(|s| SecuritySoftware { name: s.name, updated: s.updated }),
            key,
            status,
            certificate: None,
        })
    }
}

/// Devices per import call; about 1 MiB of JSON.
const MAX_IMPORT: usize = 4000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportInput {
    reason: String,
    devices: Vec<DeviceInput>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostureInput {
    attestation: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertInput {
    days: Option<u32>,
    reason: Option<String>,
    /// When given, the answer also carries a PKCS#12 file (base64) protected by it.
    pkcs12_password: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StopInput {
    profile: Option<String>,
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantInput {
    user: String,
    profile: Option<String>,
    approver: String,
    reason: String,
    start: DateTime<FixedOffset>,
    end: DateTime<FixedOffset>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MaintenanceInput {
    profile: Option<String>,
    reason: String,
    start: DateTime<FixedOffset>,
    end: DateTime<FixedOffset>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    kind: Option<String>,
    user: Option<String>,
    target: Option<String>,
    action: Option<String>,
    reason: Option<String>,
    limit: Option<u32>,
}
