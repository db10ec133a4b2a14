//! The device side: `sekisho agent keygen` makes a device key, `register`
//! files its registration application with the OS read from the machine,
//! `token` mints one attestation, and `proxy` runs the loopback forward
//! proxy (`forward.rs`) that attests every request for the SaaS hosts.
//! Keys are written 0600 and never printed; only the public key is. Tokens
//! are printed only by `token`, on request.

use std::path::{Path, PathBuf};

use chrono::{NaiveDate, Utc};
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use rand::rngs::OsRng;
use sekisho_policy::attestation::{mint, Claims, SigningKey};
use sekisho_policy::device::{Os, Version, VersionError};
use sekisho_policy::state::SecuritySoftware;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot read key `{0}`: {1}")]
    Read(String, std::io::Error),
    #[error("`{0}` is not a PKCS#8 PEM Ed25519 or P-256 private key")]
    Key(String),
    #[error("cannot encode the key: {0}")]
    Encode(String),
    #[error("{0}")]
    Write(#[from] crate::tls::TlsError),
    #[error("cannot tell this machine's OS: {0}")]
    Os(String),
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum KeyAlg {
    Ed25519,
    P256,
}

#[derive(clap::Subcommand)]
pub enum AgentCommand {
    /// Generate a device key (written 0600) and print its public half for registration.
    Keygen {
        #[arg(long, value_enum, default_value = "ed25519")]
        alg: KeyAlg,
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a Device-Attestation token signed by a device key.
    Token {
        /// The profile's audience (its `audience` in the rules file).
        #[arg(long)]
        aud: String,
        #[command(flatten)]
        who: IdentityArgs,
    },
    /// File this device's registration application with the admin API
    /// (an `applicant` token in SEKISHO_ADMIN_TOKEN); the OS is read from the machine.
    Register {
        /// Admin API base URL, e.g. https://gateway.city.local:9090.
        #[arg(long)]
        admin: String,
        /// CA certificate to trust for an https:// admin API.
        #[arg(long)]
        cacert: Option<PathBuf>,
        /// `pc` or `phone`.
        #[arg(long, default_value = "pc")]
        kind: String,
        /// `issued` (city-issued) or `personal`.
        #[arg(long, default_value = "issued")]
        ownership: String,
        #[command(flatten)]
        who: IdentityArgs,
    },
    /// Report this device's posture (OS read from the machine, security
    /// software) to the admin API, signed by the device key; with `--every`,
    /// keep reporting. Devices proved by certificate are judged on it.
    Posture {
        /// Admin API base URL, e.g. https://gateway.city.local:9090.
        #[arg(long)]
        admin: String,
        /// CA certificate to trust for an https:// admin API.
        #[arg(long)]
        cacert: Option<PathBuf>,
        /// Report again every this many seconds (at least 60) instead of once.
        #[arg(long)]
        every: Option<u64>,
        #[command(flatten)]
        who: IdentityArgs,
    },
    /// Run the forward proxy on loopback (PAC at /proxy.pac) that adds a fresh
    /// Device-Attestation to requests for the configured SaaS hosts.
    Proxy {
        #[arg(long, default_value = "127.0.0.1:3128")]
        listen: std::net::SocketAddr,
        /// The gateway's HTTPS listener, HOST:PORT.
        #[arg(long)]
        gateway: String,
        /// The CA that signed the gateway's certificate.
        #[arg(long)]
        gateway_ca: PathBuf,
        /// A relayed SaaS host and its profile audience: `HOST=AUDIENCE`, `*.domain=AUDIENCE` or `HOST`.
        #[arg(long = "route", required = true)]
        routes: Vec<crate::device::forward::Route>,
        /// Where the agent keeps its local CA.
        #[arg(long, default_value = "agent")]
        state_dir: PathBuf,
        #[command(flatten)]
        who: IdentityArgs,
    },
}

/// The device, its owner and its posture, for `token`, `register`, `posture` and `proxy`.
#[derive(clap::Args)]
pub struct IdentityArgs {
    /// The device key (`sekisho agent keygen`).
    #[arg(long)]
    key: PathBuf,
    #[arg(long)]
    device: String,
    /// The device's owner, the user its tokens name.
    #[arg(long)]
    user: String,
    /// Override the OS read from the machine (with `--os-version`).
    #[arg(long, requires = "os_version")]
    os: Option<String>,
    #[arg(long, requires = "os")]
    os_version: Option<String>,
    /// Security software name; with `--security-updated`.
    #[arg(long, requires = "security_updated")]
    security_software: Option<String>,
    /// Date of its last signature update (YYYY-MM-DD).
    #[arg(long, requires = "security_software")]
    security_updated: Option<NaiveDate>,
    #[arg(long, default_value_t = 300)]
    lifetime_secs: i64,
}

impl IdentityArgs {
    fn identity(self) -> Result<Identity, String> {
        let key = load_key(&self.key).map_err(|e| e.to_string())?;
        let os = match (self.os, self.os_version) {
            (Some(os), Some(v)) => Some((parse_os(&os)?, v.parse().map_err(|e: VersionError| e.to_string())?)),
            _ => None,
        };
        if !(30..=3600).contains(&self.lifetime_secs) {
            return Err(format!("`--lifetime-secs` must be 30..=3600, not `{}`", self.lifetime_secs));
        }
        let identity = Identity {
            key,
            device: self.device,
            user: self.user,
            os,
            security_software: self
                .security_software
                .zip(self.security_updated)
                .map(|(name, updated)| SecuritySoftware { name, updated }),
            lifetime_secs: self.lifetime_secs,
        };
        identity.os().map_err(|e| e.to_string())?;
        Ok(identity)
    }
}

pub fn run(cmd: AgentCommand) -> Result<(), String> {
    match cmd {
        AgentCommand::Keygen { alg, out } => {
            println!("{}", keygen(alg, &out).map_err(|e| e.to_string())?);
            Ok(())
        }
        AgentCommand::Token { aud, who } => {
            let (token, _) = who.identity()?.token(&aud).map_err(|e| e.to_string())?;
            println!("{token}");
            Ok(())
        }
        AgentCommand::Register { admin, cacert, kind, ownership, who } => {
            register(&admin, cacert.as_deref(), &kind, &ownership, who)
        }
        AgentCommand::Posture { admin, cacert, every, who } => posture(&admin, cacert.as_deref(), every, who),
        AgentCommand::Proxy { listen, gateway, gateway_ca, routes, state_dir, who } => {
            let settings = crate::device::forward::Settings {
                listen,
                gateway,
                gateway_ca,
                routes,
                state_dir,
                identity: who.identity()?,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(crate::device::forward::run(settings)).map_err(|e| e.to_string())
        }
    }
}

fn posture(admin: &str, cacert: Option<&Path>, every: Option<u64>, who: IdentityArgs) -> Result<(), String> {
    if every.is_some_and(|s| s < 60) {
        return Err("`--every` must be at least 60 seconds".into());
    }
    let identity = who.identity()?;
    let path = format!("/v1/devices/{}/posture", identity.device);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    loop {
        let (token, _) = identity.token(sekisho_policy::posture::POSTURE_AUDIENCE).map_err(|e| e.to_string())?;
        let body = serde_json::json!({ "attestation": token });
        let sent = runtime.block_on(crate::admin_client::call(admin, None, cacert, "POST", &path, Some(body)));
        let outcome = match sent {
            Ok((status, text)) if status < 300 => Ok(text),
            Ok((status, text)) => Err(format!("the gateway answered {status}: {text}")),
            Err(e) => Err(e),
        };
        match (outcome, every) {
            (Ok(text), None) => {
                println!("{text}");
                return Ok(());
            }
            (Err(e), None) => return Err(e),
            // A long-running reporter outlives a gateway restart.
            (Ok(_), Some(_)) => {}
            (Err(e), Some(_)) => eprintln!("sekisho agent: posture report failed: {e}"),
        }
        std::thread::sleep(std::time::Duration::from_secs(every.unwrap_or(60)));
    }
}

fn parse_os(os: &str) -> Result<Os, String> {
    serde_json::from_value(serde_json::Value::String(os.to_owned())).map_err(|_| format!("unknown os `{os}`"))
}

fn register(admin: &str, cacert: Option<&Path>, kind: &str, ownership: &str, who: IdentityArgs) -> Result<(), String> {
    let token = std::env::var("SEKISHO_ADMIN_TOKEN").map_err(|_| "set SEKISHO_ADMIN_TOKEN to an applicant token")?;
    let identity = who.identity()?;
    let (os, os_version) = identity.os().map_err(|e| e.to_string())?;
    let public = identity.key.public();
    let mut body = serde_json::json!({
        "id": identity.device, "owner": identity.user, "kind": kind, "ownership": ownership,
        "os": os, "os_version": os_version.to_string(), "key_alg": public.alg(), "public_key": public.to_b64(),
    });
    if let (Some(software), Some(obj)) = (&identity.security_software, body.as_object_mut()) {
        obj.insert("security_software".into(), serde_json::json!(software));
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let (status, text) = runtime.block_on(crate::admin_client::call(
        admin,
        Some(token.trim()),
        cacert,
        "POST",
        "/v1/devices",
        Some(body),
    ))?;
    println!("{text}");
    if status >= 400 {
        return Err(format!("the registration was not filed: the gateway answered {status}"));
    }
    Ok(())
}

/// Generates a key into `out` (0600) and returns the registration JSON
/// fields `{"key_alg": ..., "public_key": ...}`.
pub fn keygen(alg: KeyAlg, out: &Path) -> Result<serde_json::Value, AgentError> {
    let (key, pem) = match alg {
        KeyAlg::Ed25519 => {
            let k = ed25519_dalek::SigningKey::generate(&mut OsRng);
            let pem = k.to_pkcs8_pem(Default::default()).map_err(|e| AgentError::Encode(e.to_string()))?;
            (SigningKey::Ed25519(k), pem.to_string())
        }
        KeyAlg::P256 => {
            let k = p256::ecdsa::SigningKey::random(&mut OsRng);
            let pem = p256::pkcs8::EncodePrivateKey::to_pkcs8_pem(&k, Default::default())
                .map_err(|e| AgentError::Encode(e.to_string()))?;
            (SigningKey::P256(k), pem.to_string())
        }
    };
    crate::tls::write(out, pem.as_bytes(), 0o600)?;
    let public = key.public();
    Ok(serde_json::json!({ "key_alg": public.alg(), "public_key": public.to_b64() }))
}

pub fn load_key(path: &Path) -> Result<SigningKey, AgentError> {
    let pem = std::fs::read_to_string(path).map_err(|e| AgentError::Read(path.display().to_string(), e))?;
    if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem) {
        return Ok(SigningKey::Ed25519(k));
    }
    <p256::ecdsa::SigningKey as p256::pkcs8::DecodePrivateKey>::from_pkcs8_pem(&pem)
        .map(SigningKey::P256)
        .map_err(|_| AgentError::Key(path.display().to_string()))
}

/// Who the agent signs as, and where its posture comes from.
pub struct Identity {
    pub key: SigningKey,
    pub device: String,
    pub user: String,
    /// A fixed OS and version; `None` reads them from the machine for every
    /// token, so an OS update shows at the gateway without a restart.
    pub os: Option<(Os, Version)>,
    pub security_software: Option<SecuritySoftware>,
    pub lifetime_secs: i64,
}

impl Identity {
    /// The OS the tokens will name; an error when it cannot be read.
    pub fn os(&self) -> Result<(Os, Version), AgentError> {
        self.os.map_or_else(machine_os, Ok)
    }

    /// A fresh token for `audience` and its lifetime in seconds.
    pub fn token(&self, audience: &str) -> Result<(String, i64), AgentError> {
        let (os, os_version) = self.os()?;
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: self.user.clone(),
            aud: audience.to_owned(),
            iat: now,
            exp: now + self.lifetime_secs,
            jti: format!("{:016x}", rand::random::<u64>()),
            os,
            os_version,
            security_software: self.security_software.clone(),
        };
        Ok((mint(&self.key, &self.device, &claims), self.lifetime_secs))
    }
}

/// This machine's OS and version, as a registration or a token states them.
pub fn machine_os() -> Result<(Os, Version), AgentError> {
    #[cfg(target_os = "linux")]
    {
        let text =
            std::fs::read_to_string("/etc/os-release").map_err(|e| AgentError::Read("/etc/os-release".into(), e))?;
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix("VERSION_ID="))
            .map(|v| v.trim().trim_matches('"').to_owned())
            .ok_or_else(|| AgentError::Os("/etc/os-release has no VERSION_ID; give --os and --os-version".into()))?;
        let version = id.parse().map_err(|_| AgentError::Os(format!("VERSION_ID `{id}` is not a dotted version")))?;
        Ok((Os::Linux, version))
    }
    #[cfg(target_os = "macos")]
    {
        let out = std::process::Command::new("sw_vers")
            .arg("-productVersion")
            .output()
            .map_err(|e| AgentError::Read("sw_vers".into(), e))?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let version = text.parse().map_err(|_| AgentError::Os(format!("sw_vers said `{text}`")))?;
        Ok((Os::Macos, version))
    }
    #[cfg(target_os = "windows")]
    {
        let out = std::process::Command::new("cmd")
            .args(["/c", "ver"])
            .output()
            .map_err(|e| AgentError::Read("cmd /c ver".into(), e))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let version = windows_version(&text).ok_or_else(|| AgentError::Os(format!("`ver` said `{}`", text.trim())))?;
        Ok((Os::Windows, version))
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
    {
        Err(AgentError::Os("reading the OS is not supported here; give --os and --os-version".into()))
    }
}

/// The Windows version in the `10.0.22631` form (major.minor.build) from
/// what `cmd /c ver` prints (`Microsoft Windows [Version 10.0.22631.4460]`,
/// `[バージョン 10.0.22631.4460]` on a Japanese system): the update revision
/// is dropped, since profiles compare builds.
pub fn windows_version(ver: &str) -> Option<Version> {
    let inside = ver.split_once('[')?.1.split_once(']')?.0;
    let dotted = inside.split_whitespace().last()?;
    let parts: Vec<&str> = dotted.split('.').collect();
    if parts.len() < 3 || parts.iter().any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    parts[..3].join(".").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_windows_version_is_read_from_ver_in_english_and_japanese() {
        let cases = [
            ("\r\nMicrosoft Windows [Version 10.0.22631.4460]\r\n", Some("10.0.22631")),
            ("Microsoft Windows [バージョン 10.0.19045.5131]", Some("10.0.19045")),
            ("Microsoft Windows [Version 10.0.26100]", Some("10.0.26100")),
            ("Microsoft Windows [Version 6.1.7601]", Some("6.1.7601")),
            ("Microsoft Windows [Version 10.0]", None),
            ("Microsoft Windows [Version ten]", None),
            ("Microsoft Windows", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(windows_version(text).map(|v| v.to_string()), want.map(str::to_owned), "{text:?}");
        }
    }
}
