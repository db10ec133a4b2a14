//! Connection admission, in front of pingora's HTTP handling: a cap on the
//! open connections of one client address, and a deadline for a whole
//! request header (slowloris). pingora bounds each single read (60 s), so a
//! client trickling a byte a minute would otherwise hold a connection and its
//! ~100 KiB of buffers for ever.
//!
//! It owns no policy and must never look at a request: it only counts
//! connections and watches bytes and time. The proxy tells it where a header
//! ends ([`header_complete`]) and where a request ends ([`request_done`]).

use std::collections::HashMap;
use std::fmt;
use std::future::Future as _;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID, UniqueIDType, ALPN,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::metrics::Metrics;

/// Wraps a pingora app (the HTTP proxy) with the admission checks.
pub struct Admission<A> {
    app: Arc<A>,
    per_client: u32,
    header_deadline: Duration,
    open: OpenConns,
    metrics: Arc<Metrics>,
}

impl<A> Admission<A> {
    pub fn new(app: A, per_client: u32, header_deadline: Duration, metrics: Arc<Metrics>) -> Self {
        Admission { app: Arc::new(app), per_client, header_deadline, open: OpenConns::default(), metrics }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Admission<A> {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let ip = stream.get_socket_digest().and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let Some(_slot) = self.open.admit(ip, self.per_client) else {
            let n = self.metrics.connection_refused();
            // One line per 1000 refusals: a flood must not become a log flood.
            if n.is_multiple_of(1000) {
                log::warn!("refused connections: {} from `{}` over the per-client cap", n + 1, fmt_ip(ip));
            }
            return None;
        };
        // HTTP/2 frames its own headers; pingora's h2 settings bound them.
        let stream: Stream = if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            stream
        } else {
            Box::new(HeaderClock::new(stream, self.header_deadline, self.metrics.clone()))
        };
        // pingora's HTTP app runs keep-alive reuse itself and hands nothing
        // back; anything it did would be dropped (closed) with the slot.
        drop(self.app.process_new(stream, shutdown).await);
        None
    }

    /// Called once the listeners stopped (shutdown, or the hand-over of a
    /// graceful upgrade). pingora then drops every connection still waiting
    /// for a request header, including ones accepted a moment before whose
    /// first bytes are still in flight: they would see a reset. A short wait
    /// lets those be read and answered first; idle keep-alive connections
    /// close a second later than they would have.
    async fn cleanup(&self) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.app.cleanup().await;
    }
}

/// Marks the current request's header as read: what follows (body, upgraded
/// bytes) is not under the header deadline.
pub fn header_complete(stream: Option<&Stream>) {
    if let Some(clock) = stream.and_then(|s| s.as_any().downcast_ref::<HeaderClock>()) {
        clock.set_phase(DONE);
    }
}

/// Marks the request as over: the next request's first byte starts the clock.
pub fn request_done(stream: Option<&Stream>) {
    if let Some(clock) = stream.and_then(|s| s.as_any().downcast_ref::<HeaderClock>()) {
        clock.set_phase(WAITING);
    }
}

fn fmt_ip(ip: Option<IpAddr>) -> String {
    ip.map_or_else(|| "-".to_owned(), |ip| ip.to_string())
}

/// Open connections per client address, in shards so that accepting on one
/// thread rarely waits for another. Touched once per connection, never per
/// request.
#[derive(Default)]
struct OpenConns {
    shards: [Mutex<HashMap<IpAddr, u32>>; 16],
}

impl OpenConns {
    fn admit(&self, ip: Option<IpAddr>, cap: u32) -> Option<Slot<'_>> {
        let Some(ip) = ip else { return Some(Slot { conns: self, ip: None }) };
        let mut shard = self.shard(ip);
        let n = shard.entry(ip).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(Slot { conns: self, ip: Some(ip) })
    }

    fn shard(&self, ip: IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, u32>> {
        let h = match ip {
            IpAddr::V4(v4) => u32::from(v4) as usize,
            IpAddr::V6(v6) => (u128::from(v6) >> 64) as usize ^ u128::from(v6) as usize,
        };
        let shard = &self.shards[h % self.shards.len()];
        // A counter map cannot be left inconsistent by a panic elsewhere.
        shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One admitted connection; dropping it frees the place.
struct Slot<'a> {
    conns: &'a OpenConns,
    ip: Option<IpAddr>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let Some(ip) = self.ip else { return };
        let mut shard = self.conns.shard(ip);
        if let Some(n) = shard.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                shard.remove(&ip);
            }
        }
    }
}

const WAITING: u8 = 0;
const READING: u8 = 1;
const DONE: u8 = 2;
/// The deadline passed: every later read fails too.
const EXPIRED: u8 = 3;

/// An HTTP/1 stream whose request headers must arrive within a deadline:
/// from the connection's start for the first request, from the first byte
/// for the next ones (idle keep-alive is the proxy's own timeout).
struct HeaderClock {
    inner: Stream,
    phase: AtomicU8,
    limit: Duration,
    deadline: Pin<Box<Sleep>>,
    metrics: Arc<Metrics>,
}

impl HeaderClock {
    fn new(inner: Stream, limit: Duration, metrics: Arc<Metrics>) -> Self {
        let deadline = Box::pin(tokio::time::sleep(limit));
        HeaderClock { inner, phase: AtomicU8::new(READING), limit, deadline, metrics }
    }

    /// Moves to `phase` unless the deadline already passed: that is final.
    fn set_phase(&self, phase: u8) {
        let _ = self.phase.fetch_update(Relaxed, Relaxed, |p| (p != EXPIRED).then_some(phase));
    }
}

impl fmt::Debug for HeaderClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeaderClock").field("inner", &self.inner).field("phase", &self.phase).finish()
    }
}

impl AsyncRead for HeaderClock {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let phase = this.phase.load(Relaxed);
        let expired = phase == EXPIRED || (phase == READING && this.deadline.as_mut().poll(cx).is_ready());
        if expired {
            if phase != EXPIRED {
                this.phase.store(EXPIRED, Relaxed);
                this.metrics.header_timeout();
            }
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "request header deadline passed")));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if phase == WAITING && matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.phase.store(READING, Relaxed);
            this.deadline.as_mut().reset(Instant::now() + this.limit);
        }
        read
    }
}

impl AsyncWrite for HeaderClock {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

// pingora reads TLS details, digests and ALPN through these; all delegate.

#[async_trait]
impl Shutdown for HeaderClock {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for HeaderClock {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeaderClock {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeaderClock {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeaderClock {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: pingora::protocols::raw_connect::ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for HeaderClock {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: pingora::protocols::SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for HeaderClock {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}
