//! Where allowed requests go: one pool of upstream connections per worker
//! thread (no lock, no task per idle connection), HTTP/1.1 or HTTP/2 as
//! the upstream's TLS offers, name resolution with a short cache, connect
//! and answer deadlines, and one safe retry: a request sent on a pooled
//! connection that turns out closed before the request was written goes
//! once more on a fresh one. It never turns off certificate or name
//! verification, and never reuses a connection across routes that differ
//! in name or trust.

use rustc_hash::FxHashMap;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use sekisho_policy::rules::Route;
use tokio::time::Instant;

use crate::gateway::body::ReqBody;
use crate::tls::RouteTls;

/// How long a WebSocket may stay silent both ways.
pub const UPGRADE_IDLE: Duration = Duration::from_secs(3600);
/// Connecting (TCP and TLS) to an upstream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A pooled connection unused this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per upstream and thread: enough for the requests
/// an HTTP/2 client multiplexes (at 64, 320 streams in flight closed and
/// reopened a connection for most requests), and what nginx's `keepalive`
/// is set to in the bench's peer.
const MAX_IDLE: usize = 256;
const DNS_TTL: Duration = Duration::from_secs(30);

/// Why an upstream exchange failed, for the 502/504 answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting to `{0}` timed out")]
    ConnectTimeout(String),
    #[error("cannot connect to `{0}`: {1}")]
    Connect(String, std::io::Error),
    #[error("tls with `{0}`: {1}")]
    Tls(String, std::io::Error),
    #[error("`{0}` did not answer in time")]
    AnswerTimeout(String),
    #[error("exchange with `{0}` failed: {1}")]
    Exchange(String, hyper::Error),
    #[error("cannot resolve `{0}`: {1}")]
    Resolve(String, std::io::Error),
}

impl UpstreamError {
    pub fn timed_out(&self) -> bool {
        matches!(self, UpstreamError::ConnectTimeout(_) | UpstreamError::AnswerTimeout(_))
    }
}

type Http1Sender = hyper::client::conn::http1::SendRequest<ReqBody>;

/// A connection's request sender.
pub enum Sender {
    Http1(Http1Sender),
    Http2(hyper::client::conn::http2::SendRequest<ReqBody>),
}

/// Pool key: the address and the route's material (name and trust).
type Key = (SocketAddr, u64);

/// An HTTP/1 connection lent to one exchange; it goes back to the pool
/// when the answer's body was read to its end.
pub struct Lent {
    key: Key,
    sender: hyper::client::conn::http1::SendRequest<ReqBody>,
}

/// One worker thread's upstream connections. Keyed by the configured
/// upstreams (never by client input), so the maps use a fast hash rather
/// than a DoS-resistant one: each request looks up two of them.
#[derive(Default)]
pub struct Pool {
    idle: RefCell<FxHashMap<Key, Vec<(Http1Sender, Instant)>>>,
    http2: RefCell<FxHashMap<Key, hyper::client::conn::http2::SendRequest<ReqBody>>>,
    /// Resolved upstream names: a handful, looked up per request without
    /// building a key.
    dns: RefCell<Vec<(String, u16, SocketAddr, Instant)>>,
}

/// Where one exchange goes.
pub struct Target<'a> {
    pub route: &'a Route,
    pub tls: &'a RouteTls,
    /// A WebSocket handshake: HTTP/1.1 only, never pooled.
    pub websocket: bool,
    /// `host[:port]` of the upstream, for an HTTP/2 `:authority`.
    pub authority: &'a str,
    /// When the request body was all handed on (`None` while sending).
    pub body_sent: &'a std::cell::Cell<Option<Instant>>,
}

impl Pool {
    /// Sends `req` and waits for the answer's head (within the route's
    /// timeout). Returns the answer and, for HTTP/1, the connection to give
    /// back once its body was read.
    pub async fn send(
        &self,
        target: &Target<'_>,
        req: Request<ReqBody>,
    ) -> Result<(Response<Incoming>, Option<Lent>), UpstreamError> {
        let name = &target.route.upstream.host;
        // The rare paths (a DNS lookup, a new connection with its TLS
        // handshake) are boxed: inline, their state would size every
        // request's future, which is moved per request and which hyper keeps
        // for the connection's life.
        let port = target.route.upstream.port;
        // One clock read for the name's and the idle connection's age (read
        // again after a lookup, which may take a while).
        let mut now = Instant::now();
        let addr = match self.cached(name, port, now) {
            Some(addr) => addr,
            None => {
                let addr = Box::pin(self.resolve(name, port)).await?;
                now = Instant::now();
                addr
            }
        };
        let key = (addr, target.tls.pool);
        let timeout = Duration::from_secs(u64::from(target.route.timeout_secs.get()));
        // Pinned here, in this frame: moved into `answer_within`, it would
        // take its size twice in every request's future.
        let exchange = std::pin::pin!(async {
            let req = match self.checkout(key, target.websocket, now) {
                Some(sender) => match try_send(sender, req, target).await {
                    Ok(done) => return Ok(done),
                    // Closed before the request was written: once more, fresh.
                    Err(Retry::Again(req)) => *req,
                    Err(Retry::Failed(e)) => return Err(UpstreamError::Exchange(name.clone(), e)),
                },
                None => req,
            };
            let sender = Box::pin(self.connect(target, addr)).await?;
            match try_send(sender, req, target).await {
                Ok(done) => Ok(done),
                Err(Retry::Again(_)) => {
                    Err(UpstreamError::Connect(name.clone(), std::io::ErrorKind::ConnectionReset.into()))
                }
                Err(Retry::Failed(e)) => Err(UpstreamError::Exchange(name.clone(), e)),
            }
        });
        let (resp, sender) = answer_within(exchange, timeout, target.body_sent)
            .await
            .ok_or_else(|| UpstreamError::AnswerTimeout(name.clone()))??;
        let lent = match sender {
            Sender::Http1(sender) if !target.websocket => Some(Lent { key, sender }),
            Sender::Http1(_) => None,
            Sender::Http2(sender) => {
                self.http2.borrow_mut().insert(key, sender);
                None
            }
        };
        Ok((resp, lent))
    }

    /// Gives an HTTP/1 connection back after its answer was read whole.
    pub fn give_back(&self, lent: Lent) {
        if lent.sender.is_closed() {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(lent.key).or_default();
        if list.len() < MAX_IDLE {
            list.push((lent.sender, Instant::now()));
        }
    }

    /// Closes idle connections past their time (called now and then).
    pub fn evict(&self) {
        let now = Instant::now();
        self.idle.borrow_mut().retain(|_, list| {
            list.retain(|(s, since)| !s.is_closed() && now.duration_since(*since) < IDLE_TIMEOUT);
            !list.is_empty()
        });
        self.http2.borrow_mut().retain(|_, s| !s.is_closed());
    }

    fn checkout(&self, key: Key, websocket: bool, now: Instant) -> Option<Sender> {
        if websocket {
            return None;
        }
        if let Some(h2) = self.http2.borrow().get(&key).filter(|s| s.is_ready()) {
            return Some(Sender::Http2(h2.clone()));
        }
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&key)?;
        while let Some((sender, since)) = list.pop() {
            if sender.is_ready() && now.saturating_duration_since(since) < IDLE_TIMEOUT {
                return Some(Sender::Http1(sender));
            }
        }
        None
    }

    async fn connect(&self, target: &Target<'_>, addr: SocketAddr) -> Result<Sender, UpstreamError> {
        let name = &target.route.upstream.host;
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout(name.clone()))?
            .map_err(|e| UpstreamError::Connect(name.clone(), e))?;
        let _ = tcp.set_nodelay(true);
        if !target.route.upstream.tls {
            return http1(TokioIo::new(tcp), name).await;
        }
        let config = if target.websocket { target.tls.http1.clone() } else { target.tls.any.clone() };
        let server_name = rustls::pki_types::ServerName::try_from(name.clone())
            .map_err(|e| UpstreamError::Tls(name.clone(), std::io::Error::other(e)))?;
        let tls =
            tokio::time::timeout(CONNECT_TIMEOUT, tokio_rustls::TlsConnector::from(config).connect(server_name, tcp))
                .await
                .map_err(|_| UpstreamError::ConnectTimeout(name.clone()))?
                .map_err(|e| UpstreamError::Tls(name.clone(), e))?;
        if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
            let (sender, conn) = hyper::client::conn::http2::Builder::new(super::LocalExec)
                .handshake(TokioIo::new(tls))
                .await
                .map_err(|e| UpstreamError::Exchange(name.clone(), e))?;
            tokio::task::spawn_local(conn);
            return Ok(Sender::Http2(sender));
        }
        http1(TokioIo::new(tls), name).await
    }

    /// An address literal, or a name resolved within `DNS_TTL`.
    fn cached(&self, host: &str, port: u16, now: Instant) -> Option<SocketAddr> {
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return Some(SocketAddr::new(ip, port));
        }
        let dns = self.dns.borrow();
        let (_, _, addr, at) = dns.iter().find(|(h, p, _, _)| h == host && *p == port)?;
        (now.saturating_duration_since(*at) < DNS_TTL).then_some(*addr)
    }

    async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, UpstreamError> {
        let addr = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| UpstreamError::Resolve(host.to_owned(), e))?
            .next()
            .ok_or_else(|| UpstreamError::Resolve(host.to_owned(), std::io::ErrorKind::NotFound.into()))?;
        let mut dns = self.dns.borrow_mut();
        dns.retain(|(h, p, _, _)| !(h == host && *p == port));
        dns.push((host.to_owned(), port, addr, Instant::now()));
        Ok(addr)
    }
}

/// Runs `exchange` until the upstream answers within `timeout` of the
/// request body's end. While the client is still sending, the body's own
/// idle deadline governs (a slow client is its fault, answered 408, never
/// the upstream's 504).
async fn answer_within<F: std::future::Future>(
    mut exchange: std::pin::Pin<&mut F>,
    timeout: Duration,
    body_sent: &std::cell::Cell<Option<Instant>>,
) -> Option<F::Output> {
    loop {
        let deadline = body_sent.get().unwrap_or_else(Instant::now) + timeout;
        tokio::select! {
            out = exchange.as_mut() => return Some(out),
            () = tokio::time::sleep_until(deadline) => {
                if body_sent.get().is_some_and(|at| at + timeout <= Instant::now()) {
                    return None;
                }
            }
        }
    }
}

async fn http1<T>(io: TokioIo<T>, name: &str) -> Result<Sender, UpstreamError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(io)
        .await
        .map_err(|e| UpstreamError::Exchange(name.to_owned(), e))?;
    tokio::task::spawn_local(conn.with_upgrades());
    Ok(Sender::Http1(sender))
}

enum Retry {
    /// Not written: the request may go again.
    Again(Box<Request<ReqBody>>),
    Failed(hyper::Error),
}

async fn try_send(
    sender: Sender,
    mut req: Request<ReqBody>,
    target: &Target<'_>,
) -> Result<(Response<Incoming>, Sender), Retry> {
    let outcome = match sender {
        Sender::Http1(mut s) => {
            let sent = s.try_send_request(req).await;
            sent.map(|r| (r, Sender::Http1(s)))
        }
        Sender::Http2(mut s) => {
            // HTTP/2 carries scheme and authority as pseudo-headers.
            let scheme = if target.route.upstream.tls { "https" } else { "http" };
            let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
            if let Ok(uri) = format!("{scheme}://{}{pq}", target.authority).parse() {
                *req.uri_mut() = uri;
            }
            req.headers_mut().remove(http::header::HOST);
            *req.version_mut() = http::Version::HTTP_2;
            let sent = s.try_send_request(req).await;
            sent.map(|r| (r, Sender::Http2(s)))
        }
    };
    outcome.map_err(|mut e| match e.take_message() {
        Some(req) => Retry::Again(Box::new(req)),
        None => Retry::Failed(e.into_error()),
    })
}
