//! `sekisho agent proxy`: the device agent's forward proxy on loopback, for
//! browsers and apps that cannot present a device certificate. Its PAC file
//! (`GET /proxy.pac`) sends the configured SaaS hosts here and everything
//! else DIRECT. A `CONNECT` to a SaaS host is answered with TLS from a leaf
//! of the agent's own local CA, whose name constraints confine it to the SaaS
//! names; each request inside goes on to the gateway over verified TLS with a
//! fresh `Device-Attestation` header signed by the device key.
//!
//! It decides nothing (the gateway does). It must never relay a host it has
//! no route for, never listen beyond loopback, and never log a token.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{Datelike, Utc};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, GeneralSubtree, KeyPair, NameConstraints, SanType};
use sekisho_policy::rules::strip_port;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::device::agent::Identity;
use crate::tls::{write, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("route `{0}`: expected `HOST` or `HOST=AUDIENCE`, HOST a DNS name or `*.domain`")]
    Route(String),
    #[error("`{0}` is not a loopback address: the proxy signs for whoever connects, so it stays on this machine")]
    NotLoopback(SocketAddr),
    #[error("give at least one `--route`")]
    NoRoutes,
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("the local CA `{0}` was made for other hosts ({1}); delete it to make a new one, then trust the new one")]
    StaleCa(String, String),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A SaaS host the proxy relays, and the audience its tokens name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    host: HostPattern,
    audience: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.example.jp`: any name under the domain, not the domain itself.
    Under(String),
}

impl FromStr for Route {
    type Err = ForwardError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ForwardError::Route(s.to_owned());
        let (host, audience) = s.split_once('=').unwrap_or((s, s));
        let host = host.to_ascii_lowercase();
        let (pattern, name) = match host.strip_prefix("*.") {
            Some(domain) => (HostPattern::Under(domain.to_owned()), domain),
            None => (HostPattern::Exact(host.clone()), host.as_str()),
        };
        // DNS names only: they end up in the PAC script and in certificates.
        let label_ok =
            |l: &str| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !name.split('.').all(label_ok) || audience.is_empty() || audience.len() > 255 {
            return Err(bad());
        }
        Ok(Route { host: pattern, audience: audience.to_owned() })
    }
}

impl Route {
    fn matches(&self, host: &str) -> bool {
        match &self.host {
            HostPattern::Exact(h) => host.eq_ignore_ascii_case(h),
            HostPattern::Under(d) => host
                .len()
                .checked_sub(d.len() + 1)
                .is_some_and(|cut| host.as_bytes()[cut] == b'.' && host[cut + 1..].eq_ignore_ascii_case(d)),
        }
    }

    /// The DNS subtree the local CA may sign for.
    fn subtree(&self) -> &str {
        match &self.host {
            HostPattern::Exact(h) | HostPattern::Under(h) => h,
        }
    }

    fn pac_test(&self) -> String {
        match &self.host {
            HostPattern::Exact(h) => format!("host == \"{h}\""),
            HostPattern::Under(d) => format!("dnsDomainIs(host, \".{d}\")"),
        }
    }
}

pub struct Settings {
    pub listen: SocketAddr,
    /// `host:port` of the gateway's HTTPS listener.
    pub gateway: String,
    /// The CA that signed the gateway's certificate.
    pub gateway_ca: PathBuf,
    pub routes: Vec<Route>,
    /// Holds the local CA (`local-ca.pem`, `local-ca.key`).
    pub state_dir: PathBuf,
    pub identity: Identity,
}

/// Runs the proxy until the process ends.
pub async fn run(settings: Settings) -> Result<(), ForwardError> {
    if !settings.listen.ip().is_loopback() {
        return Err(ForwardError::NotLoopback(settings.listen));
    }
    if settings.routes.is_empty() {
        return Err(ForwardError::NoRoutes);
    }
    let listener = TcpListener::bind(settings.listen).await.map_err(|e| ForwardError::Bind(settings.listen, e))?;
    let proxy = Arc::new(Proxy::new(settings)?);
    eprintln!(
        "sekisho agent: proxy on http://{0}, PAC at http://{0}/proxy.pac; browsers must trust {1}",
        proxy.listen,
        proxy.ca.cert_path.display()
    );
    loop {
        let Ok((tcp, _)) = listener.accept().await else { continue };
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| proxy.clone().front(req));
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service);
            drop(conn.with_upgrades().await);
        });
    }
}

type Body = Either<Incoming, Full<Bytes>>;

struct Proxy {
    listen: SocketAddr,
    gateway: String,
    connector: TlsConnector,
    routes: Vec<Route>,
    ca: LocalCa,
    leaves: Mutex<HashMap<String, (Instant, TlsAcceptor)>>,
    identity: Identity,
    tokens: Mutex<HashMap<String, (String, i64)>>,
}

/// Leaf certificates are reissued after a day; they are valid for seven.
const LEAF_REUSE: Duration = Duration::from_secs(24 * 3600);

impl Proxy {
    fn new(s: Settings) -> Result<Proxy, ForwardError> {
        let mut subtrees: Vec<String> = Vec::new();
        for r in &s.routes {
            if !subtrees.iter().any(|t| t == r.subtree()) {
                subtrees.push(r.subtree().to_owned());
            }
        }
        let ca = LocalCa::load_or_create(&s.state_dir, &subtrees)?;
        let roots = crate::tls::root_store(&s.gateway_ca)?;
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::Config(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Proxy {
            listen: s.listen,
            gateway: s.gateway,
            connector: TlsConnector::from(Arc::new(config)),
            routes: s.routes,
            ca,
            leaves: Mutex::default(),
            identity: s.identity,
            tokens: Mutex::default(),
        })
    }

    fn route(&self, host: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(host))
    }

    /// Requests to the proxy itself: CONNECT, the PAC file, plain http://.
    async fn front(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        if req.method() == Method::CONNECT {
            return Ok(self.connect(req));
        }
        if req.uri().authority().is_none() {
            return Ok(match req.uri().path() {
                "/proxy.pac" => self.pac(),
                _ => text(StatusCode::NOT_FOUND, "sekisho agent: only /proxy.pac is served here"),
            });
        }
        // http:// to a SaaS host: send the browser to https://, which is tunnelled.
        let host = req.uri().host().unwrap_or_default();
        if self.route(host).is_none() {
            return Ok(text(StatusCode::FORBIDDEN, "sekisho agent: this host is not relayed; the PAC sends it DIRECT"));
        }
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let location = format!("https://{host}{path}");
        let mut resp = text(StatusCode::PERMANENT_REDIRECT, "https only");
        if let Ok(v) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        Ok(resp)
    }

    fn pac(&self) -> Response<Body> {
        let tests: Vec<String> = self.routes.iter().map(Route::pac_test).collect();
        let script = format!(
            "function FindProxyForURL(url, host) {{\n  host = host.toLowerCase();\n  if ({}) return \"PROXY {}\";\n  return \"DIRECT\";\n}}\n",
            tests.join(" || "),
            self.listen
        );
        let mut resp = Response::new(Either::Right(Full::new(Bytes::from(script))));
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ns-proxy-autoconfig"));
        resp
    }

    fn connect(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let Some(host) = req.uri().host().map(str::to_ascii_lowercase) else {
            return text(StatusCode::BAD_REQUEST, "sekisho agent: CONNECT needs host:port");
        };
        let Some(audience) = self.route(&host).map(|r| r.audience.clone()) else {
            return text(StatusCode::FORBIDDEN, "sekisho agent: this host is not relayed; the PAC sends it DIRECT");
        };
        let acceptor = match self.leaf(&host) {
            Ok(a) => a,
            Err(e) => {
                log::error!("agent: no certificate for `{host}`: {e}");
                return text(StatusCode::INTERNAL_SERVER_ERROR, "sekisho agent: cannot make a certificate");
            }
        };
        tokio::spawn(async move {
            let Ok(upgraded) = hyper::upgrade::on(req).await else { return };
            let Ok(tls) = acceptor.accept(TokioIo::new(upgraded)).await else { return };
            let tunnel = Arc::new(Tunnel { proxy: self, host, audience, upstream: tokio::sync::Mutex::new(None) });
            let service = hyper::service::service_fn(move |req| tunnel.clone().relay(req));
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service);
            drop(conn.with_upgrades().await);
        });
        Response::new(Either::Right(Full::new(Bytes::new())))
    }

    fn leaf(&self, host: &str) -> Result<TlsAcceptor, TlsError> {
        let mut leaves = self.leaves.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((made, acceptor)) = leaves.get(host) {
            if made.elapsed() < LEAF_REUSE {
                return Ok(acceptor.clone());
            }
        }
        let acceptor = self.ca.server_acceptor(host)?;
        leaves.insert(host.to_owned(), (Instant::now(), acceptor.clone()));
        Ok(acceptor)
    }

    /// A token for `audience`, reused while more than half its life is left.
    fn token(&self, audience: &str) -> Result<String, crate::device::agent::AgentError> {
        let now = Utc::now().timestamp();
        let mut tokens = self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((token, renew_at)) = tokens.get(audience) {
            if now < *renew_at {
                return Ok(token.clone());
            }
        }
        let (token, lifetime) = self.identity.token(audience)?;
        tokens.insert(audience.to_owned(), (token.clone(), now + lifetime / 2));
        Ok(token)
    }
}

/// One browser connection tunnelled to one SaaS host, relayed over one
/// gateway connection at a time.
struct Tunnel {
    proxy: Arc<Proxy>,
    host: String,
    audience: String,
    upstream: tokio::sync::Mutex<Option<SendRequest<Incoming>>>,
}

impl Tunnel {
    async fn relay(self: Arc<Self>, mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        // A tunnel is for its host only: a token for one SaaS is never sent
        // with a request meant for another.
        let named =
            req.headers().get(header::HOST).map(|h| h.to_str().map(|h| strip_port(h).eq_ignore_ascii_case(&self.host)));
        if matches!(named, Some(Ok(false) | Err(_))) {
            return Ok(text(StatusCode::MISDIRECTED_REQUEST, "sekisho agent: Host does not match the tunnel"));
        }
        let token = match self.proxy.token(&self.audience).map(|t| HeaderValue::from_str(&t)) {
            Ok(Ok(v)) => v,
            Ok(Err(_)) => return Ok(text(StatusCode::INTERNAL_SERVER_ERROR, "sekisho agent: bad token")),
            Err(e) => {
                log::error!("agent: cannot sign: {e}");
                return Ok(text(StatusCode::INTERNAL_SERVER_ERROR, "sekisho agent: cannot read this device's posture"));
            }
        };
        let headers = req.headers_mut();
        headers.insert("device-attestation", token);
        if named.is_none() {
            if let Ok(v) = HeaderValue::from_str(&self.host) {
                headers.insert(header::HOST, v);
            }
        }
        let upgrade = req.headers().contains_key(header::UPGRADE).then(|| hyper::upgrade::on(&mut req));
        let mut sender = match self.sender().await {
            Ok(s) => s,
            Err(e) => {
                log::warn!("agent: cannot reach the gateway {}: {e}", self.proxy.gateway);
                return Ok(text(
                    StatusCode::BAD_GATEWAY,
                    "sekisho agent: cannot reach the gateway / ゲートウェイに接続できません",
                ));
            }
        };
        let mut resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                log::warn!("agent: the gateway exchange failed: {e}");
                return Ok(text(StatusCode::BAD_GATEWAY, "sekisho agent: the gateway exchange failed"));
            }
        };
        match (resp.status(), upgrade) {
            (StatusCode::SWITCHING_PROTOCOLS, Some(down)) => {
                // The gateway connection now carries the upgraded protocol.
                let up = hyper::upgrade::on(&mut resp);
                tokio::spawn(async move {
                    if let (Ok(down), Ok(up)) = tokio::join!(down, up) {
                        let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(down), &mut TokioIo::new(up)).await;
                    }
                });
            }
            _ => *self.upstream.lock().await = Some(sender),
        }
        Ok(resp.map(Either::Left))
    }

    /// The idle gateway connection, or a new one.
    async fn sender(&self) -> Result<SendRequest<Incoming>, String> {
        if let Some(mut s) = self.upstream.lock().await.take() {
            if s.ready().await.is_ok() {
                return Ok(s);
            }
        }
        let tcp = TcpStream::connect(&self.proxy.gateway).await.map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let name = rustls::pki_types::ServerName::try_from(self.host.clone()).map_err(|e| e.to_string())?;
        let tls = self.proxy.connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn.with_upgrades());
        Ok(sender)
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from_static(body.as_bytes()))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

/// The agent's own CA, name-constrained to the SaaS names so that its key,
/// if stolen, cannot vouch for any other site.
struct LocalCa {
    cert_path: PathBuf,
    issuer: rcgen::Certificate,
    key: KeyPair,
    leaf_key: KeyPair,
}

impl LocalCa {
    fn load_or_create(dir: &Path, subtrees: &[String]) -> Result<LocalCa, ForwardError> {
        let (cert_path, key_path) = (dir.join("local-ca.pem"), dir.join("local-ca.key"));
        let wanted: Vec<GeneralSubtree> = subtrees.iter().map(|s| GeneralSubtree::DnsName(s.clone())).collect();
        if !cert_path.exists() {
            std::fs::create_dir_all(dir).map_err(|e| TlsError::Write(dir.display().to_string(), e))?;
            let (cert, key) = crate::tls::new_ca_with("sekisho agent local CA", |p| {
                p.name_constraints =
                    Some(NameConstraints { permitted_subtrees: wanted.clone(), excluded_subtrees: Vec::new() });
            })?;
            write(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
            write(&cert_path, cert.pem().as_bytes(), 0o644)?;
        }
        let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| TlsError::Read(p.display().to_string(), e));
        let key = KeyPair::from_pem(&read(&key_path)?).map_err(TlsError::from)?;
        let params = CertificateParams::from_ca_cert_pem(&read(&cert_path)?).map_err(TlsError::from)?;
        let permitted = params.name_constraints.as_ref().map(|n| n.permitted_subtrees.clone()).unwrap_or_default();
        if wanted.iter().any(|w| !permitted.contains(w)) {
            let names: Vec<String> = permitted
                .iter()
                .map(|p| match p {
                    GeneralSubtree::DnsName(d) => d.clone(),
                    other => format!("{other:?}"),
                })
                .collect();
            return Err(ForwardError::StaleCa(cert_path.display().to_string(), names.join(", ")));
        }
        // Re-signing the same subject with the same key yields an issuer
        // that chains to the certificate on disk.
        let issuer = params.self_signed(&key).map_err(TlsError::from)?;
        let leaf_key = KeyPair::generate().map_err(TlsError::from)?;
        Ok(LocalCa { cert_path, issuer, key, leaf_key })
    }

    fn server_acceptor(&self, host: &str) -> Result<TlsAcceptor, TlsError> {
        let mut params = CertificateParams::new(vec![host.to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, host);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.subject_alt_names = vec![SanType::DnsName(
            rcgen::Ia5String::try_from(host.to_owned()).map_err(|e| TlsError::Config(e.to_string()))?,
        )];
        let today = Utc::now().date_naive();
        let (from, until) = (today - chrono::Duration::days(1), today + chrono::Duration::days(7));
        params.not_before = rcgen::date_time_ymd(from.year(), from.month() as u8, from.day() as u8);
        params.not_after = rcgen::date_time_ymd(until.year(), until.month() as u8, until.day() as u8);
        let cert = params.signed_by(&self.leaf_key, &self.issuer, &self.key)?;
        let key = rustls::pki_types::PrivateKeyDer::try_from(self.leaf_key.serialize_der())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .and_then(|b| b.with_no_client_auth().with_single_cert(vec![cert.der().clone()], key))
                .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_and_match_only_their_names() {
        let exact: Route = "App.localhost".parse().unwrap();
        assert_eq!(exact.audience, "App.localhost");
        assert!(exact.matches("app.localhost") && !exact.matches("x.app.localhost"));
        let under: Route = "*.cybozu.com=kintone".parse().unwrap();
        assert_eq!(under.audience, "kintone");
        assert!(under.matches("city.cybozu.com") && under.matches("a.b.cybozu.com"));
        assert!(!under.matches("cybozu.com") && !under.matches("evilcybozu.com") && !under.matches("cybozu.com.evil"));
        for bad in ["", "*.", "a..b", "a b", "x\";alert(1);\"", "*.a/b=x", "host="] {
            assert!(bad.parse::<Route>().is_err(), "{bad:?}");
        }
    }
}
