//! The certificate and upstream probes behind `sekisho doctor`: a PEM
//! chain's expiry, key match and issuer links; a TLS handshake to each
//! upstream with the same trust the gateway uses (`tls::UpstreamTls`: the
//! route's `ca_file`, or the bundled web roots) and the upstream's own
//! name. Read only.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sekisho_policy::rules::Upstream;
use x509_parser::prelude::{FromDer as _, X509Certificate};

use crate::control::doctor::{Level, Step};

/// What `inspect` found in one PEM file.
pub struct Chain {
    /// The first certificate: subject and names.
    pub summary: String,
    /// Days until the earliest expiry in the chain (negative: expired).
    pub days_left: i64,
    pub not_after: String,
    /// Errors: key mismatch, broken links.
    pub problems: Vec<String>,
    /// A warning about where the chain ends.
    pub note: Option<String>,
}

/// Reads `cert` (a PEM chain, leaf first) and, when given, its `key`.
pub fn inspect(cert: &Path, key: Option<&Path>) -> Result<Chain, String> {
    let pem = std::fs::read(cert).map_err(|e| format!("cannot read: {e}"))?;
    let ders: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice()).filter_map(Result::ok).collect();
    if ders.is_empty() {
        return Err("no PEM certificate in the file".into());
    }
    let parsed: Vec<X509Certificate<'_>> = ders
        .iter()
        .map(|d| X509Certificate::from_der(d.as_ref()).map(|(_, c)| c).map_err(|e| format!("not a certificate: {e}")))
        .collect::<Result<_, _>>()?;
    let mut problems = Vec::new();
    for pair in parsed.windows(2) {
        if let [a, b] = pair {
            if a.issuer() != b.subject() {
                problems.push(format!(
                    "`{}` is not issued by the next certificate in the file (`{}`)",
                    a.subject(),
                    b.subject()
                ));
            }
        }
    }
    if let Some(key) = key {
        if let Err(e) = key_matches(&ders, key) {
            problems.push(e);
        }
    }
    let earliest = parsed.iter().map(|c| c.validity().not_after).min_by_key(|t| t.timestamp()).ok_or("empty chain")?;
    let days_left = (earliest.timestamp() - chrono::Utc::now().timestamp()).div_euclid(86_400);
    let last = parsed.last().ok_or("empty chain")?;
    let note = (last.issuer() != last.subject() && parsed.len() == 1 && key.is_some())
        .then(|| format!("the file holds only the leaf, issued by `{}`", last.issuer()));
    let leaf = &parsed[0];
    let names = leaf
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| san.value.general_names.iter().map(name).collect::<Vec<_>>().join(", "))
        .unwrap_or_default();
    let summary =
        if names.is_empty() { format!("`{}`", leaf.subject()) } else { format!("`{}` for {names}", leaf.subject()) };
    Ok(Chain { summary, days_left, not_after: earliest.to_string(), problems, note })
}

fn name(n: &x509_parser::extensions::GeneralName<'_>) -> String {
    use x509_parser::extensions::GeneralName;
    match n {
        GeneralName::DNSName(d) => (*d).to_owned(),
        GeneralName::IPAddress(b) => match b.len() {
            4 => <[u8; 4]>::try_from(*b).map(|a| std::net::IpAddr::from(a).to_string()).unwrap_or_default(),
            16 => <[u8; 16]>::try_from(*b).map(|a| std::net::IpAddr::from(a).to_string()).unwrap_or_default(),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

fn key_matches(chain: &[rustls::pki_types::CertificateDer<'static>], key: &Path) -> Result<(), String> {
    let pem = std::fs::read(key).map_err(|e| format!("cannot read the key `{}`: {e}", key.display()))?;
    let der = rustls_pemfile::private_key(&mut pem.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| format!("`{}` holds no PEM private key", key.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = rustls::sign::CertifiedKey::from_der(chain.to_vec(), der, &provider)
        .map_err(|e| format!("the key `{}` does not belong to the certificate: {e}", key.display()))?;
    certified.keys_match().map_err(|e| format!("the key `{}` does not belong to the certificate: {e}", key.display()))
}

/// What one probe of an upstream found, in both of the console's languages.
pub struct Probe {
    pub level: Level,
    pub message: String,
    pub message_ja: Option<String>,
    pub next: Option<Step>,
}

impl Probe {
    fn bad(level: Level, message: impl Into<String>, ja: impl Into<String>, next: Step) -> Probe {
        Probe { level, message: message.into(), message_ja: Some(ja.into()), next: Some(next) }
    }
}

/// One connection to the upstream as the gateway would make it.
pub async fn probe_upstream(up: &Upstream, tls: Option<Arc<rustls::ClientConfig>>) -> Probe {
    let addr = format!("{}:{}", up.host, up.port);
    let connect = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(&addr)).await;
    let tcp = match connect {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Probe::bad(
                Level::Error,
                format!("cannot connect: {e}"),
                format!("接続できません: {e}"),
                Step::UpstreamUnreachable,
            )
        }
        Err(_) => {
            return Probe::bad(
                Level::Error,
                "no connection within 5 s",
                "5 秒以内に接続できません",
                Step::UpstreamSilent,
            )
        }
    };
    if !up.tls {
        return Probe::bad(
            Level::Warn,
            "reachable over plain HTTP (no TLS)",
            "暗号化なしの HTTP で接続しています（TLS なし）",
            Step::UpstreamPlainHttp,
        );
    }
    let Some(config) = tls else {
        return Probe::bad(
            Level::Error,
            "no TLS material for this route",
            "このルートの TLS 設定がありません",
            Step::FixRouteCaFile,
        );
    };
    let connector = tokio_rustls::TlsConnector::from(config);
    let Ok(name) = rustls::pki_types::ServerName::try_from(up.host.clone()) else {
        return Probe::bad(
            Level::Error,
            "the upstream host is not a valid TLS name",
            "接続先のホスト名が TLS の名前として正しくありません",
            Step::FixRouteUpstream,
        );
    };
    match tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp)).await {
        Ok(Ok(tls)) => {
            let version = tls.get_ref().1.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default();
            Probe {
                level: Level::Ok,
                message: format!("TLS verified for `{}` ({version})", up.host),
                message_ja: None,
                next: None,
            }
        }
        Ok(Err(e)) => Probe::bad(
            Level::Error,
            format!("TLS failed: {e}"),
            format!("TLS 接続に失敗しました: {e}"),
            Step::UpstreamCertificate,
        ),
        Err(_) => Probe::bad(
            Level::Error,
            "no TLS handshake within 5 s",
            "5 秒以内に TLS 接続が確立しません",
            Step::TlsIntercepted,
        ),
    }
}
