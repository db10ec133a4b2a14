//! Where allowed requests go: per-route upstream TLS material loaded when
//! the rules load (never on the request path), address resolution with a
//! short cache, and building pingora's `HttpPeer`. It must never turn off
//! certificate verification for an HTTPS upstream.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora::protocols::tls::CaType;
use pingora::upstreams::peer::{HttpPeer, ALPN};
use pingora::utils::tls::{parse_x509, WrappedX509};
use sekisho_policy::rules::Route;
use sekisho_policy::Rules;

/// How long an upgraded connection (WebSocket) may stay silent both ways.
pub const UPGRADE_IDLE: Duration = Duration::from_secs(3600);

/// Extra CAs per route host, parsed and checked at load time.
#[derive(Default)]
pub struct Upstreams {
    cas: HashMap<String, (Arc<CaType>, u64)>,
}

impl Upstreams {
    /// Loads every route's `ca_file` (relative to the rules directory).
    pub fn load(rules: &Rules, rules_dir: &Path) -> Result<Upstreams, String> {
        let mut cas = HashMap::new();
        for profile in rules.profiles() {
            for route in &profile.routes {
                let Some(file) = &route.ca_file else { continue };
                let path = rules_dir.join(file);
                let ders =
                    read_ca(&path).map_err(|e| format!("route `{}`: ca_file `{}`: {e}", route.host, path.display()))?;
                let group = ders.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, d| fnv(h, d));
                let certs: Vec<WrappedX509> = ders.into_iter().map(|d| WrappedX509::new(d, parse_x509)).collect();
                cas.insert(route.host.clone(), (Arc::from(certs.into_boxed_slice()), group));
            }
        }
        Ok(Upstreams { cas })
    }

    /// The peer for one request. `upgrade` forces HTTP/1.1 (WebSocket).
    /// The peer for `route`: the route's timeout bounds each read and write,
    /// except that an upgraded connection (WebSocket) may stay silent for
    /// [`UPGRADE_IDLE`].
    pub fn peer(&self, route: &Route, addr: SocketAddr, upgrade: bool) -> HttpPeer {
        let (route_host, upstream) = (&route.host, &route.upstream);
        let timeout = Duration::from_secs(u64::from(route.timeout_secs.get()));
        let mut peer = HttpPeer::new(addr, upstream.tls, upstream.host.clone());
        peer.options.connection_timeout = Some(Duration::from_secs(5));
        peer.options.total_connection_timeout = Some(Duration::from_secs(10));
        peer.options.read_timeout = Some(if upgrade { UPGRADE_IDLE.max(timeout) } else { timeout });
        peer.options.write_timeout = Some(timeout);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        peer.options.alpn = if upstream.tls && !upgrade { ALPN::H2H1 } else { ALPN::H1 };
        if let Some((ca, group)) = self.cas.get(route_host.as_str()) {
            peer.options.ca = Some(ca.clone());
            // pingora's pool key ignores the CA; keep private-CA connections apart.
            peer.group_key = *group;
        }
        peer
    }
}

/// DER certificates from a PEM file, each checked to parse as X.509 so
/// pingora's parser (which panics on bad input) only ever sees good ones.
fn read_ca(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let pem = std::fs::read(path).map_err(|e| e.to_string())?;
    let ders: Vec<Vec<u8>> = rustls_pemfile::certs(&mut pem.as_slice())
        .map(|c| c.map(|c| c.to_vec()).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    if ders.is_empty() {
        return Err("no PEM certificates found".into());
    }
    for der in &ders {
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("not a valid certificate: {e}"))?;
    }
    Ok(ders)
}

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Resolves upstream host names off the blocking path, caching answers
/// briefly so a changed DNS record is followed.
pub struct Resolver {
    cache: quick_cache::sync::Cache<(String, u16), (SocketAddr, Instant)>,
}

const DNS_TTL: Duration = Duration::from_secs(30);

impl Default for Resolver {
    fn default() -> Self {
        Resolver { cache: quick_cache::sync::Cache::new(1024) }
    }
}

impl Resolver {
    pub async fn resolve(&self, host: &str, port: u16) -> std::io::Result<SocketAddr> {
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
        let key = (host.to_owned(), port);
        if let Some((addr, at)) = self.cache.get(&key) {
            if at.elapsed() < DNS_TTL {
                return Ok(addr);
            }
        }
        let addr = tokio::net::lookup_host((host, port))
            .await?
            .next()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("`{host}` has no address")))?;
        self.cache.insert(key, (addr, Instant::now()));
        Ok(addr)
    }
}
