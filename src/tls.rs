//! TLS material for the client-facing listener: on first start, a
//! development CA and a P-256 server certificate for localhost names; and a
//! check that the configured PEM files load, so a bad file fails start-up
//! instead of silently losing the listener. Private keys are written 0600
//! and never logged.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::Arc;

use chrono::{Datelike as _, Duration, Utc};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot write `{0}`: {1}")]
    Write(String, std::io::Error),
    #[error("cannot read `{0}`: {1}")]
    Read(String, std::io::Error),
    #[error("`{0}` holds no PEM certificate")]
    NoCertificate(String),
    #[error("`{0}` holds no PEM private key")]
    NoKey(String),
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("tls configuration: {0}")]
    Config(String),
}

/// Days the development server certificate is valid (under the 398-day browser limit).
pub const DEV_LEAF_DAYS: i64 = 397;

/// Names the development server certificate covers.
const DEV_NAMES: [&str; 4] = ["localhost", "demo.localhost", "127.0.0.1", "::1"];

/// Creates `dev-ca.pem`, `dev-ca.key` beside `cert`, plus `cert` and `key`,
/// unless `cert` already exists. Returns whether files were created.
pub fn ensure_dev_certs(cert: &Path, key: &Path) -> Result<bool, TlsError> {
    if cert.exists() {
        return Ok(false);
    }
    let dir = cert.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| TlsError::Write(dir.display().to_string(), e))?;
    let (ca_cert, ca_key) = new_ca("sekisho development CA")?;
    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::new(DEV_NAMES.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())?;
    server.distinguished_name.push(DnType::CommonName, "localhost");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    // An ECDSA server key only signs handshakes; browsers cap a leaf at
    // 398 days (CA/Browser Forum), so the development leaf lives 397.
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let (from, until) = (Utc::now().date_naive(), Utc::now().date_naive() + Duration::days(DEV_LEAF_DAYS));
    server.not_before = rcgen::date_time_ymd(from.year(), from.month() as u8, from.day() as u8);
    server.not_after = rcgen::date_time_ymd(until.year(), until.month() as u8, until.day() as u8);
    let server_cert = server.signed_by(&server_key, &ca_cert, &ca_key)?;
    write(&dir.join("dev-ca.pem"), ca_cert.pem().as_bytes(), 0o644)?;
    write(&dir.join("dev-ca.key"), ca_key.serialize_pem().as_bytes(), 0o600)?;
    write(key, server_key.serialize_pem().as_bytes(), 0o600)?;
    write(cert, format!("{}{}", server_cert.pem(), ca_cert.pem()).as_bytes(), 0o644)?;
    Ok(true)
}

/// Writes a file atomically (temp file, fsync, rename) with `mode`.
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let err = |e| TlsError::Write(path.display().to_string(), e);
    let tmp = path.with_extension("tmp");
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp).map_err(err)?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// A rustls acceptor for the admin listener, from PEM files.
pub fn acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| TlsError::Read(p.display().to_string(), e));
    let chain: Vec<_> = rustls_pemfile::certs(&mut read(cert)?.as_slice()).filter_map(Result::ok).collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.display().to_string()));
    }
    let key_der = rustls_pemfile::private_key(&mut read(key)?.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| TlsError::NoKey(key.display().to_string()))?;
    let config =
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key_der))
            .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

/// The certificates of a PEM file as trust anchors; an error when there are none.
pub fn root_store(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let pem = std::fs::read(path).map_err(|e| TlsError::Read(path.display().to_string(), e))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()).filter_map(Result::ok) {
        roots.add(cert).map_err(|e| TlsError::Config(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCertificate(path.display().to_string()));
    }
    Ok(roots)
}

/// The DER of the first certificate in a PEM file.
pub fn first_certificate_der(path: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| TlsError::Read(path.display().to_string(), e))?;
    let first = rustls_pemfile::certs(&mut pem.as_slice()).find_map(Result::ok);
    first.map(|c| c.to_vec()).ok_or_else(|| TlsError::NoCertificate(path.display().to_string()))
}

/// A rustls connector trusting only the CAs in `ca` (the admin client).
pub fn connector(ca: &Path) -> Result<tokio_rustls::TlsConnector, TlsError> {
    let roots = root_store(ca)?;
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)))
}

/// A self-signed CA valid for ten years from today, for signing leaf certificates only.
pub fn new_ca(common_name: &str) -> Result<(rcgen::Certificate, KeyPair), TlsError> {
    new_ca_with(common_name, |_| {})
}

/// [`new_ca`], with `tune` applied to the parameters before signing (name constraints).
pub fn new_ca_with(
    common_name: &str,
    tune: impl FnOnce(&mut CertificateParams),
) -> Result<(rcgen::Certificate, KeyPair), TlsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let (from, until) = (Utc::now().date_naive(), Utc::now().date_naive() + Duration::days(3650));
    params.not_before = rcgen::date_time_ymd(from.year(), from.month() as u8, from.day() as u8);
    params.not_after = rcgen::date_time_ymd(until.year(), until.month() as u8, until.day() as u8);
    tune(&mut params);
    Ok((params.self_signed(&key)?, key))
}

/// The gateway's client-facing TLS: the server chain and key, ALPN `h2`
/// and `http/1.1`, client certificates requested (never required) when a
/// device CA verifies them, no 0-RTT, and TLS 1.3 tickets from a rotating
/// ticketer (each key lives 6 h, so a stolen ticket key opens at most that
/// much recorded traffic; see docs/security.md).
pub fn server_config(cert: &Path, key: &Path, device_ca: Option<&Path>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| TlsError::Read(p.display().to_string(), e));
    let chain: Vec<_> = rustls_pemfile::certs(&mut read(cert)?.as_slice()).filter_map(Result::ok).collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.display().to_string()));
    }
    let key_der = rustls_pemfile::private_key(&mut read(key)?.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| TlsError::NoKey(key.display().to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match device_ca {
        Some(ca) => {
            let roots = root_store(ca)?;
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key_der).map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| TlsError::Config(e.to_string()))?;
    config.max_early_data_size = 0;
    Ok(Arc::new(config))
}

/// Client TLS for each route's upstream, built when the rules load (never
/// on the request path): the public roots (Mozilla's, as webpki-roots
/// ships them), or only the route's own `ca_file` when it names one.
/// Certificate and name verification are never turned off.
#[derive(Default)]
pub struct UpstreamTls {
    by_host: sekisho_policy::state::Map<String, RouteTls>,
}

/// One route's upstream material. `pool` tells connections apart: routes
/// that differ in name or trust never share a pooled connection.
#[derive(Clone)]
pub struct RouteTls {
    /// Offers `h2` and `http/1.1`.
    pub any: Arc<rustls::ClientConfig>,
    /// Offers only `http/1.1` (a WebSocket handshake).
    pub http1: Arc<rustls::ClientConfig>,
    pub pool: u64,
    /// The upstream's `host[:port]`, and as the `Host` header it is sent in.
    pub authority: String,
    pub host: http::HeaderValue,
}

static NEXT_POOL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl UpstreamTls {
    /// Loads every route's material; `ca_file` is relative to `rules_dir`.
    pub fn load(rules: &sekisho_policy::Rules, rules_dir: &Path) -> Result<UpstreamTls, String> {
        let mut by_host = sekisho_policy::state::Map::default();
        for profile in rules.profiles() {
            for route in &profile.routes {
                let roots = match &route.ca_file {
                    Some(file) => {
                        let path = rules_dir.join(file);
                        root_store(&path)
                            .map_err(|e| format!("route `{}`: ca_file `{}`: {e}", route.host, path.display()))?
                    }
                    None => rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() },
                };
                let material = RouteTls::new(roots, route.upstream.authority())
                    .map_err(|e| format!("route `{}`: {e}", route.host))?;
                by_host.insert(route.host.clone(), material);
            }
        }
        Ok(UpstreamTls { by_host })
    }

    /// The material of the route serving `host` (every loaded route has one).
    pub fn route(&self, host: &str) -> Option<&RouteTls> {
        self.by_host.get(host)
    }
}

impl RouteTls {
    fn new(roots: rustls::RootCertStore, authority: String) -> Result<RouteTls, TlsError> {
        let host = http::HeaderValue::from_str(&authority)
            .map_err(|_| TlsError::Config(format!("upstream authority `{authority}` is not a header value")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let base = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut any = base.clone();
        any.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut http1 = base;
        http1.alpn_protocols = vec![b"http/1.1".to_vec()];
        let pool = NEXT_POOL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(RouteTls { any: Arc::new(any), http1: Arc::new(http1), pool, authority, host })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use x509_parser::prelude::{FromDer as _, X509Certificate};

    #[test]
    fn the_development_leaf_is_short_lived_and_only_signs() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
        assert!(super::ensure_dev_certs(&cert, &key).unwrap());
        let pem = std::fs::read(&cert).unwrap();
        let ders: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice()).map(Result::unwrap).collect();
        let (_, leaf) = X509Certificate::from_der(ders[0].as_ref()).unwrap();
        let v = leaf.validity();
        let days = (v.not_after.timestamp() - v.not_before.timestamp()) / 86_400;
        assert!(days <= 397, "{days}");
        let ku = leaf.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && !ku.key_cert_sign() && !ku.key_encipherment());
        let (_, ca) = X509Certificate::from_der(ders[1].as_ref()).unwrap();
        let ku = ca.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && !ku.digital_signature());
    }
}
