//! `sekisho admin`: a small command-line client of the admin API for
//! administrators (suspend at 2 a.m. without writing JSON by hand). It
//! reads the token from `SEKISHO_ADMIN_TOKEN` or the bootstrap token file,
//! and never prints it.

use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

#[derive(clap::Args)]
pub struct AdminArgs {
    /// Admin API base URL (default: from the configuration's `[admin] listen`).
    #[arg(long)]
    url: Option<String>,
    /// CA certificate to trust for an https:// admin API (default: `dev-ca.pem`
    /// beside the admin certificate).
    #[arg(long)]
    cacert: Option<std::path::PathBuf>,
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Gateway status: whether requests are served, the audit log, stops,
    /// profiles and the host checks that need attention.
    Status {
        /// Print the API's JSON instead (for scripts and monitoring).
        #[arg(long)]
        json: bool,
    },
    /// Suspend a user now (open connections are cut).
    Suspend {
        /// The user id (as registered: letters, digits, `-_.@`).
        #[arg(value_parser = id)]
        user: String,
        /// Why, for the audit trail (for example `lost phone`).
        #[arg(long)]
        reason: String,
        /// Lift it by itself at this time, with its offset (for example
        /// `2026-12-03T09:00:00+09:00`); default: until lifted.
        #[arg(long)]
        until: Option<String>,
    },
    /// Lift a user's suspension.
    Unsuspend {
        #[arg(value_parser = id)]
        user: String,
        #[arg(long)]
        reason: String,
    },
    /// Emergency stop: everyone, or one profile.
    Stop {
        #[arg(long)]
        reason: String,
        /// Only this profile (default: every profile, everyone).
        #[arg(long, value_parser = profile)]
        profile: Option<String>,
    },
    /// Lift an emergency stop.
    Resume {
        #[arg(long)]
        reason: String,
        #[arg(long, value_parser = profile)]
        profile: Option<String>,
    },
    /// Decide a device registration: approve, reject or revoke.
    Device {
        #[arg(value_parser = id)]
        id: String,
        #[arg(value_parser = ["approve", "reject", "revoke"])]
        decision: String,
        #[arg(long)]
        reason: String,
        /// With `approve`: approve although the device is below the
        /// profiles' minimums (OS, signature age), for this reason.
        #[arg(long)]
        exception: Option<String>,
    },
    /// Issue a client certificate to an approved device (or renew it before
    /// it expires): prints the one-time password and the enrollment id.
    Certificate {
        #[arg(value_parser = id)]
        device: String,
        /// Lifetime in days (default: `[tls] device_cert_days`).
        #[arg(long)]
        days: Option<u32>,
        #[arg(long)]
        renew: bool,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Download an enrollment bundle, once, into a directory: DEVICE.mobileconfig
    /// (iOS/iPadOS), DEVICE.p12 and the Android steps in Japanese.
    Enrollment {
        #[arg(value_parser = id)]
        id: String,
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Reload the rules files: a revision, recorded with its approver
    /// (Abiko 13.: the 統括情報責任者) and reason.
    Reload {
        #[arg(long)]
        approver: String,
        #[arg(long)]
        reason: String,
    },
    /// Register approved devices in bulk from a JSON-lines file (one
    /// registration object per line, as for `POST /v1/devices`), in batches
    /// of 2000; each batch is all or nothing.
    ImportDevices {
        file: std::path::PathBuf,
        #[arg(long)]
        reason: String,
    },
    /// Order overtime (Abiko 8.(1)) for one person or a whole department. A
    /// supervisor's token orders it for its own department and is recorded
    /// as the approver; IT staff name the approving supervisor.
    OvertimeGrant {
        #[arg(long, conflicts_with = "department", required_unless_present = "department", value_parser = id)]
        user: Option<String>,
        #[arg(long)]
        department: Option<String>,
        /// RFC 3339, e.g. 2026-12-01T17:15:00+09:00.
        #[arg(long)]
        start: String,
        #[arg(long)]
        end: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        approver: Option<String>,
    },
    /// List overtime grants (a supervisor sees their own department's).
    OvertimeList,
    /// Withdraw an overtime grant.
    OvertimeWithdraw {
        id: i64,
        #[arg(long)]
        reason: String,
    },
    /// Register a kintone app as `development` or `operation` (Abiko 10.:
    /// customisation and integrations need a review before operation).
    AppStage {
        #[arg(value_parser = profile)]
        profile: String,
        app: u64,
        #[arg(value_parser = ["development", "operation"])]
        stage: String,
        #[arg(long)]
        reason: String,
    },
    /// Record a review in the register: app, what, by whom, when.
    AppReview {
        #[arg(value_parser = profile)]
        profile: String,
        app: u64,
        #[arg(long, value_parser = ["customize", "api_token", "webhook"])]
        subject: String,
        #[arg(long)]
        reviewer: String,
        #[arg(long)]
        note: String,
        /// YYYY-MM-DD (default today).
        #[arg(long)]
        reviewed_on: Option<String>,
        /// For an `api_token` review of one token: its SHA-256.
        #[arg(long)]
        token_sha256: Option<String>,
    },
    /// Any call: METHOD PATH [JSON], e.g. `get /v1/users`.
    Call { method: String, path: String, body: Option<String> },
}

/// A user, device or enrollment id, checked as the API checks it, so that a
/// typo (a space, `/`, `?`) is named here rather than becoming another URL.
fn id(s: &str) -> Result<String, String> {
    match crate::control::admin::is_id(s) {
        true => Ok(s.to_owned()),
        false => Err("an id is 1-128 of letters, digits, `-_.@`".to_owned()),
    }
}

/// A profile name as rules files allow it.
fn profile(s: &str) -> Result<String, String> {
    match sekisho_policy::rules::is_name(s) {
        true => Ok(s.to_owned()),
        false => Err("a profile name is letters, digits, `-` or `_`".to_owned()),
    }
}

pub fn run(args: AdminArgs, config_path: &Path) -> Result<(), String> {
    let (base, token, default_ca) = endpoint(args.url, config_path)?;
    let ca = args.cacert.or(default_ca);
    // `admin status` reads the same answer as `--json`, for a person.
    let for_a_person = matches!(args.action, Action::Status { json: false });
    let (method, path, body) = match args.action {
        Action::ImportDevices { file, reason } => return import_devices(&base, &token, ca.as_deref(), &file, &reason),
        Action::Enrollment { id, out } => return download_enrollment(&base, &token, ca.as_deref(), &id, &out),
        Action::Certificate { device, days, renew, reason } => {
            let path = if renew { "certificate/renew" } else { "certificate" };
            ("POST", format!("/v1/devices/{device}/{path}"), Some(json!({"days": days, "reason": reason})))
        }
        Action::Status { .. } => ("GET", "/v1/status".to_owned(), None),
        Action::Suspend { user, reason, until } => {
            ("POST", format!("/v1/users/{user}/suspend"), Some(json!({"reason": reason, "until": until})))
        }
        Action::Unsuspend { user, reason } => {
            ("POST", format!("/v1/users/{user}/unsuspend"), Some(json!({"reason": reason})))
        }
        Action::Stop { reason, profile } => {
            ("POST", "/v1/emergency-stop".to_owned(), Some(json!({"reason": reason, "profile": profile})))
        }
        Action::Resume { reason, profile } => {
            ("POST", "/v1/emergency-stop/lift".to_owned(), Some(json!({"reason": reason, "profile": profile})))
        }
        Action::Device { id, decision, reason, exception } => {
            ("POST", format!("/v1/devices/{id}/{decision}"), Some(json!({"reason": reason, "exception": exception})))
        }
        Action::OvertimeGrant { user, department, start, end, reason, approver } => (
            "POST",
            "/v1/overtime".to_owned(),
            Some(json!({"user": user, "department": department, "start": start, "end": end,
                        "reason": reason, "approver": approver})),
        ),
        Action::OvertimeList => ("GET", "/v1/overtime".to_owned(), None),
        Action::OvertimeWithdraw { id, reason } => {
            ("DELETE", format!("/v1/overtime/{id}"), Some(json!({"reason": reason})))
        }
        Action::AppStage { profile, app, stage, reason } => {
            ("PUT", format!("/v1/apps/{profile}/{app}"), Some(json!({"stage": stage, "reason": reason})))
        }
        Action::AppReview { profile, app, subject, reviewer, note, reviewed_on, token_sha256 } => (
            "POST",
            format!("/v1/apps/{profile}/{app}/reviews"),
            Some(json!({"subject": subject, "reviewer": reviewer, "note": note,
                        "reviewed_on": reviewed_on, "token_sha256": token_sha256})),
        ),
        Action::Reload { approver, reason } => {
            ("POST", "/v1/rules/reload".to_owned(), Some(json!({"approver": approver, "reason": reason})))
        }
        Action::Call { method, path, body } => {
            let body = body
                .map(|b| serde_json::from_str::<Value>(&b).map_err(|e| format!("body is not JSON: {e}")))
                .transpose()?;
            let method: &'static str = match method.to_ascii_uppercase().as_str() {
                "GET" => "GET",
                "POST" => "POST",
                "PUT" => "PUT",
                "DELETE" => "DELETE",
                other => return Err(format!("unsupported method `{other}`")),
            };
            (method, path, body)
        }
    };
    let body = body.map(|mut b| {
        if let Some(obj) = b.as_object_mut() {
            obj.retain(|_, v| !v.is_null());
        }
        b
    });
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let (status, text) = runtime.block_on(call(&base, Some(&token), ca.as_deref(), method, &path, body))?;
    if status >= 400 {
        println!("{text}");
        return Err(format!("the gateway answered {status}"));
    }
    if for_a_person {
        let value: Value = serde_json::from_str(&text).map_err(|e| format!("the status is not JSON: {e}"))?;
        print!("{}", crate::admin_status::render(&value));
    } else {
        println!("{text}");
    }
    Ok(())
}

fn import_devices(base: &str, token: &str, ca: Option<&Path>, file: &Path, reason: &str) -> Result<(), String> {
    const BATCH: usize = 2000;
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read `{}`: {e}", file.display()))?;
    let mut devices = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let value: Value =
            serde_json::from_str(line).map_err(|e| format!("`{}` line {}: not JSON: {e}", file.display(), n + 1))?;
        devices.push(value);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let mut done = 0;
    for batch in devices.chunks(BATCH) {
        let body = json!({ "reason": reason, "devices": batch });
        let (status, text) = runtime.block_on(call(base, Some(token), ca, "POST", "/v1/devices/import", Some(body)))?;
        if status >= 300 {
            return Err(format!(
                "batch of devices {}..{} refused ({status}): {text}; {done} devices before it were registered",
                done + 1,
                done + batch.len()
            ));
        }
        done += batch.len();
        eprintln!("registered {done} of {}", devices.len());
    }
    println!("{{\"ok\":true,\"registered\":{done}}}");
    Ok(())
}

/// Writes a downloaded enrollment bundle's files into `out` (mode 0600).
fn download_enrollment(base: &str, token: &str, ca: Option<&Path>, id: &str, out: &Path) -> Result<(), String> {
    use base64::Engine as _;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let path = format!("/v1/enrollments/{id}/download");
    let (status, text) = runtime.block_on(call(base, Some(token), ca, "POST", &path, None))?;
    if status >= 300 {
        return Err(format!("the gateway answered {status}: {text}"));
    }
    let answer: Value = serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
    let files = answer["files_base64"].as_object().ok_or("the answer has no files")?;
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create `{}`: {e}", out.display()))?;
    for (name, data) in files {
        if name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(format!("refusing file name `{name}`"));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .map_err(|e| format!("`{name}` is not base64: {e}"))?;
        crate::tls::write(&out.join(name), &bytes, 0o600).map_err(|e| e.to_string())?;
        println!("{}", out.join(name).display());
    }
    Ok(())
}

/// Base URL, token and default CA file.
type Endpoint = (String, String, Option<std::path::PathBuf>);

fn endpoint(url: Option<String>, config_path: &Path) -> Result<Endpoint, String> {
    let config = crate::config::Config::load(config_path).ok();
    let default_ca = config
        .as_ref()
        .and_then(|c| c.admin.tls.as_ref())
        .and_then(|(cert, _)| cert.parent().map(|d| d.join("dev-ca.pem")));
    let from_config = |c: &crate::config::Config| {
        let scheme = if c.admin.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", c.admin.listen)
    };
    let base = url.or_else(|| config.as_ref().map(from_config)).ok_or("give `--url` or a readable `--config`")?;
    if let Ok(t) = std::env::var("SEKISHO_ADMIN_TOKEN") {
        return Ok((base, t.trim().to_owned(), default_ca));
    }
    let file = config
        .and_then(|c| c.admin.bootstrap_token_file)
        .ok_or("set SEKISHO_ADMIN_TOKEN (no bootstrap token file is configured)")?;
    let token = std::fs::read_to_string(&file)
        .map_err(|e| format!("cannot read admin token `{}`: {e}; set SEKISHO_ADMIN_TOKEN", file.display()))?;
    Ok((base, token.trim().to_owned(), default_ca))
}

pub(crate) async fn call(
    base: &str,
    token: Option<&str>,
    ca: Option<&Path>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, String), String> {
    let uri: http::Uri =
        format!("{}{path}", base.trim_end_matches('/')).parse().map_err(|e| format!("bad URL: {e}"))?;
    let authority = uri.authority().ok_or("URL has no host")?.clone();
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = http::Request::builder()
        .method(method)
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, authority.as_str())
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let req = req.body(Full::new(Bytes::from(payload))).map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(authority.as_str())
        .await
        .map_err(|e| format!("cannot reach the admin API at {authority}: {e}"))?;
    match uri.scheme_str() {
        Some("http") => send(tcp, req).await,
        Some("https") => {
            let ca = ca.ok_or("an https:// admin API needs `--cacert`")?;
            let connector = crate::tls::connector(ca).map_err(|e| e.to_string())?;
            let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
            let name = rustls::pki_types::ServerName::try_from(host).map_err(|e| format!("bad host name: {e}"))?;
            let tls = connector.connect(name, tcp).await.map_err(|e| format!("TLS to the admin API failed: {e}"))?;
            send(tls, req).await
        }
        _ => Err("the admin URL must be http:// or https://".into()),
    }
}

async fn send<IO>(io: IO, req: http::Request<Full<Bytes>>) -> Result<(u16, String), String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}
