//! The admin API's device actions: registration (one or an asset register
//! in bulk), decisions, client certificates and their one-time enrollment
//! bundles. Each validates its input and commits through the store with
//! its audit record; none decides access (the engine does).

use super::*;

impl Admin {
    pub async fn file_device(&self, caller: &Caller<'_>, input: DeviceInput) -> ApiResult {
        allow(caller, Action::FileDevice)?;
        let device = input.into_device(DeviceStatus::Pending)?;
        let id = device.id.clone();
        let reason = reasons::DEVICE_FILED;
        let (_, v) = self.commit(caller, Change::FileDevice(Box::new(device)), "device.apply", &id, reason).await?;
        Ok((StatusCode::CREATED, v))
    }

    /// Registers devices in bulk, approved (an asset register of city-issued
    /// PCs): all or none, one transaction, one audit record.
    pub async fn import_devices(&self, caller: &Caller<'_>, input: ImportInput) -> ApiResult {
        allow(caller, Action::ImportDevices)?;
        let reason = non_empty(input.reason)?;
        if input.devices.is_empty() || input.devices.len() > MAX_IMPORT {
            return Err(bad(format!("give 1 to {MAX_IMPORT} devices per import, not {}", input.devices.len())));
        }
        let devices =
            input.devices.into_iter().map(|d| d.into_device(DeviceStatus::Approved)).collect::<Result<Vec<_>, _>>()?;
        // Said as what it is: the store would call the second one
        // "already registered", by the first one of the same batch.
        let mut ids = std::collections::HashSet::new();
        if let Some(twice) = devices.iter().find(|d| !ids.insert(d.id.as_str())) {
            return Err(bad(format!("device `{}` is listed more than once in this import", twice.id)));
        }
        let target = format!("{} devices", devices.len());
        let (_, v) = self.commit(caller, Change::ImportDevices(devices), "device.import", &target, &reason).await?;
        Ok((StatusCode::CREATED, v))
    }

    /// A registration decision; an approval may record an exception to the
    /// profiles' minimums with its own reason (熊本 第12条第2項).
    pub async fn device_status(
        &self,
        caller: &Caller<'_>,
        id: &str,
        status: DeviceStatus,
        input: DecisionInput,
    ) -> ApiResult {
        allow(caller, if status == DeviceStatus::Revoked { Action::RevokeDevice } else { Action::DecideDevice })?;
        let reason = non_empty(input.reason)?;
        let exception = match input.exception {
            Some(_) if status != DeviceStatus::Approved => {
                return Err(bad("an `exception` is recorded only with an approval"))
            }
            Some(why) if why.trim().is_empty() => return Err(bad("an `exception` needs its reason")),
            Some(why) => Some(PostureException { reason: why.trim().to_owned(), approver: caller.name.to_owned() }),
            None => None,
        };
        let reason = match &exception {
            Some(e) => format!("{reason}; exception to the minimums: {}", e.reason),
            None => reason,
        };
        let change = Change::SetDeviceStatus { id: id.to_owned(), status, exception };
        self.commit(caller, change, &format!("device.{}", status.as_str()), id, &reason).await
    }

    /// Issues (or, with `renewal`, renews before expiry) a client
    /// certificate for an approved device (熊本 第11条第1項第1号, 第13条). The
    /// answer, for the system manager only, carries the one-time password
    /// and the id of the enrollment bundle (`.mobileconfig`, `.p12`, Android
    /// steps), downloadable once. The store keeps only the fingerprint.
    pub async fn issue_certificate(
        &self,
        caller: &Caller<'_>,
        id: &str,
        input: CertInput,
        renewal: bool,
    ) -> Result<CertificateIssued, ApiError> {
        allow(caller, Action::IssueCertificate)?;
        let ca = self.device_ca.clone().ok_or_else(|| {
            ApiError(StatusCode::CONFLICT, "no device CA is configured ([tls] device_ca_cert)".into())
        })?;
        let title = self.check_certifiable(id, renewal)?;
        let days = input.days.unwrap_or(self.device_cert_days);
        if !(1..=825).contains(&days) {
            return Err(bad("`days` must be 1..=825"));
        }
        if input.pkcs12_password.as_ref().is_some_and(|p| p.chars().count() < 8) {
            return Err(bad("`pkcs12_password` must be at least 8 characters"));
        }
        let failed = |e: crate::tls::TlsError| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
        let issued = ca.issue(id, days).map_err(failed)?;
        let pkcs12 = match input.pkcs12_password.as_deref() {
            Some(p) => Some(base64::engine::general_purpose::STANDARD.encode(issued.pkcs12(&ca, p).map_err(failed)?)),
            None => None,
        };
        let otp = crate::device::enroll::one_time_password();
        let bundle = crate::device::enroll::bundle(&ca, &issued, id, &title, self.server_ca_der.as_deref(), &otp)
            .map_err(failed)?;
        let files: Vec<String> = bundle.files().into_iter().map(|(name, _)| name).collect();
        let change = Change::SetDeviceCert { id: id.to_owned(), sha256: issued.sha256, renewal };
        let action = if renewal { "device.certificate.renew" } else { "device.certificate" };
        let reason = given_or(input.reason, &reasons::certificate(renewal, days));
        self.commit(caller, change, action, id, &reason).await?;
        let (enrollment, expires_at) = self.hold_enrollment(bundle);
        Ok(CertificateIssued {
            device: id.to_owned(),
            renewal,
            certificate_pem: issued.certificate_pem,
            private_key_pem: issued.private_key_pem,
            ca_pem: ca.pem().to_owned(),
            sha256: crate::config::hex(&issued.sha256),
            pkcs12_base64: pkcs12,
            not_after: issued.not_after,
            enrollment: EnrollmentIssued {
                download: format!("POST /v1/enrollments/{enrollment}/download"),
                id: enrollment,
                one_time_password: otp,
                expires_at,
                files,
            },
        })
    }

    /// The device may get a certificate: registered, approved, and for a
    /// renewal already certified. Returns the service title for the profile.
    fn check_certifiable(&self, id: &str, renewal: bool) -> Result<String, ApiError> {
        let snap = self.shared.snapshot();
        let device = snap
            .state
            .devices
            .get(id)
            .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("device `{id}` is not registered")))?;
        if device.status != DeviceStatus::Approved {
            return Err(ApiError(StatusCode::CONFLICT, format!("device `{id}` is not approved")));
        }
        if renewal && device.certificate.is_none() {
            return Err(ApiError(StatusCode::CONFLICT, format!("device `{id}` has no certificate to renew")));
        }
        let profile = snap.state.users.get(&device.owner).and_then(|u| u.profiles.first().cloned());
        Ok(profile.and_then(|p| snap.rules.profile(&p).map(|p| p.title.clone())).unwrap_or_else(|| "関所".into()))
    }

    /// Keeps a bundle for its one download; returns its id and expiry.
    fn hold_enrollment(&self, bundle: crate::device::enroll::Bundle) -> (String, DateTime<Utc>) {
        let id: String = rand::random::<[u8; 16]>().iter().map(|b| format!("{b:02x}")).collect();
        let now = Utc::now();
        let expires = now + chrono::Duration::hours(ENROLLMENT_HOURS);
        if let Ok(mut pending) = self.enrollments.lock() {
            pending.retain(|_, p| p.expires > now);
            pending.insert(id.clone(), PendingEnrollment { bundle, expires });
        }
        (id, expires)
    }

    /// Hands an enrollment bundle out, once: the download is audited first,
    /// and a bundle whose record cannot be written is kept for another try.
    pub async fn download_enrollment(
        &self,
        caller: &Caller<'_>,
        id: &str,
    ) -> Result<crate::device::enroll::Bundle, ApiError> {
        allow(caller, Action::IssueCertificate)?;
        let gone = || {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("enrollment `{id}` was downloaded already, expired, or never issued"),
            )
        };
        let taken = self.enrollments.lock().map_err(|_| gone())?.remove(id).ok_or_else(gone)?;
        if taken.expires <= Utc::now() {
            return Err(gone());
        }
        let entry =
            self.audit_entry(caller, "device.enrollment.download", &taken.bundle.device, reasons::BUNDLE_HANDED_OUT);
        if let Err(e) = self.record(entry).await {
            if let Ok(mut pending) = self.enrollments.lock() {
                pending.insert(id.to_owned(), taken);
            }
            return Err(e.into());
        }
        Ok(taken.bundle)
    }
}

pub(super) fn devices_json(snap: &Snapshot) -> Value {
    let mut devices: Vec<_> = snap.state.devices.values().map(|d| device_json(d)).collect();
    devices.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    json!({ "devices": devices })
}

fn device_json(d: &Device) -> Value {
    json!({
        "id": d.id, "owner": d.owner, "kind": d.kind, "ownership": d.ownership, "os": d.os,
        "os_version": d.os_version, "security_software": d.security_software, "key_alg": d.key.alg(),
        "public_key": d.key.to_b64(), "status": d.status, "exception": d.exception,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionInput {
    pub reason: String,
    /// Approve although the device is below the profiles' minimums (OS
    /// family or version, signature age), for this reason.
    pub exception: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceInput {
    pub id: String,
    pub owner: String,
    pub kind: DeviceKind,
    pub ownership: Ownership,
    pub os: Os,
    pub os_version: Version,
    pub security_software: Option<SecurityInput>,
    pub key_alg: String,
    pub public_key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityInput {
    pub name: String,
    pub updated: NaiveDate,
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
            exception: None,
            previous_certificate: None,
        })
    }
}

/// Devices per import call; about 1 MiB of JSON.
const MAX_IMPORT: usize = 4000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportInput {
    pub reason: String,
    pub devices: Vec<DeviceInput>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CertInput {
    pub days: Option<u32>,
    pub reason: Option<String>,
    /// When given, the answer also carries a PKCS#12 file (base64) protected by it.
    pub pkcs12_password: Option<String>,
}
