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
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Gateway status.
    Status,
    /// Suspend a user now (open connections are cut).
    Suspend {
        user: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        until: Option<String>,
    },
    /// Lift a user's suspension.
    Unsuspend {
        user: String,
        #[arg(long)]
        reason: String,
    },
    /// Emergency stop: everyone, or one profile.
    Stop {
        #[arg(long)]
        reason: String,
        #[arg(long)]
        profile: Option<String>,
    },
    /// Lift an emergency stop.
    Resume {
        #[arg(long)]
        reason: String,
        #[arg(long)]
        profile: Option<String>,
    },
    /// Decide a device registration: approve, reject or revoke.
    Device {
        id: String,
        #[arg(value_parser = ["approve", "reject", "revoke"])]
        decision: String,
        #[arg(long)]
        reason: String,
    },
    /// Reload the rules files.
    Reload,
    /// Any call: METHOD PATH [JSON], e.g. `get /v1/users`.
    Call { method: String, path: String, body: Option<String> },
}

pub fn run(args: AdminArgs, config_path: &Path) -> Result<(), String> {
    let (base, token) = endpoint(args.url, config_path)?;
    let (method, path, body) = match args.action {
        Action::Status => ("GET", "/v1/status".to_owned(), None),
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
        Action::Device { id, decision, reason } => {
            ("POST", format!("/v1/devices/{id}/{decision}"), Some(json!({"reason": reason})))
        }
        Action::Reload => ("POST", "/v1/rules/reload".to_owned(), None),
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
    let (status, text) = runtime.block_on(call(&base, &token, method, &path, body))?;
    println!("{text}");
    if status >= 400 {
        return Err(format!("the gateway answered {status}"));
    }
    Ok(())
}

fn endpoint(url: Option<String>, config_path: &Path) -> Result<(String, String), String> {
    let config = crate::config::Config::load(config_path).ok();
    let base = url
        .or_else(|| config.as_ref().map(|c| format!("http://{}", c.admin.listen)))
        .ok_or("give `--url` or a readable `--config`")?;
    if let Ok(t) = std::env::var("SEKISHO_ADMIN_TOKEN") {
        return Ok((base, t.trim().to_owned()));
    }
    let file = config
        .and_then(|c| c.admin.bootstrap_token_file)
        .ok_or("set SEKISHO_ADMIN_TOKEN (no bootstrap token file is configured)")?;
    let token = std::fs::read_to_string(&file)
        .map_err(|e| format!("cannot read admin token `{}`: {e}; set SEKISHO_ADMIN_TOKEN", file.display()))?;
    Ok((base, token.trim().to_owned()))
}

async fn call(base: &str, token: &str, method: &str, path: &str, body: Option<Value>) -> Result<(u16, String), String> {
    let uri: http::Uri =
        format!("{}{path}", base.trim_end_matches('/')).parse().map_err(|e| format!("bad URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err("the admin client speaks http:// to a loopback admin listener".into());
    }
    let authority = uri.authority().ok_or("URL has no host")?.clone();
    let stream = tokio::net::TcpStream::connect(authority.as_str())
        .await
        .map_err(|e| format!("cannot reach the admin API at {authority}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let req = http::Request::builder()
        .method(method)
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, authority.as_str())
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(payload)))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}
