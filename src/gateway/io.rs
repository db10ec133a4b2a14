//! The client socket as the HTTP server sees it. On HTTP/1 every byte the
//! client sends passes the wire [`Guard`] first: a request head reaches the
//! server only once it is known to be well-formed, and after a violation
//! the server reads the end of the stream while the gateway keeps its own
//! last word (a 400 page, written once the answers before it are out; none
//! for a violation inside a body, whose request the server answers).
//! Deadlines live here too: the whole request head within
//! `header_timeout` (from the connection's start for the first request,
//! from its first byte for later ones), an idle keep-alive connection closed
//! after `keepalive`, and a client that reads the answers slower than the
//! minimum rate cut, so a slow reader holds no more than the server's
//! bounded buffers (its bytes counted below TLS by [`Counted`]). It never
//! changes a byte that passes.
//!
//! An HTTP/1 connection idle for [`PARK_AFTER`] is parked: the server is
//! told the stream ended (it has no request and no unread byte then), its
//! buffers are freed, and the socket waits with none until the client's
//! next bytes start a new server over the same stream ([`ClientIo::poll_unpark`]).

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf as _, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::gateway::wire::{Guard, Limits, Scan, Violation};

/// How long an HTTP/1 connection waits idle before it is parked: long
/// enough that a busy client's next request finds its server still there,
/// short enough that thousands of idle browsers hold no HTTP buffers.
pub const PARK_AFTER: Duration = Duration::from_millis(250);

/// How many bytes a connection reads in one turn before the worker's other
/// connections get theirs. A client whose bytes never run out (HTTP/2
/// frames back to back, a fast upload) would otherwise hold its worker for
/// as long as tokio's budget of 128 socket reads lasts, megabytes of
/// frames; everyone else on that worker waits that long for each step of
/// theirs. Uploads lose nothing by it: 2,720 MB/s through one worker with
/// the turn, 2,744 without (`UPLOAD=1 bench/run.sh`, bench/README).
const TURN: usize = 64 * 1024;

/// What the connection tells its socket and learns from it.
#[derive(Debug)]
pub struct ConnClock {
    /// Requests whose answer is not finished yet; deadlines for reading
    /// the next request only run while there are none.
    in_flight: AtomicU32,
    /// A request has begun on this connection.
    used: AtomicBool,
    /// When the last answer finished (or the connection started), in
    /// milliseconds after `base`.
    idle_since_ms: AtomicU64,
    base: Instant,
    /// Bytes the client's TCP socket took, counted below TLS ([`Counted`]).
    sent: AtomicU64,
    /// Times a write found the TCP socket full, and whether the last one
    /// did: HTTP/2's per-stream watcher leaves a window in which the socket
    /// was full to the slow-reader rule.
    write_waits: AtomicU64,
    full: AtomicBool,
}

impl ConnClock {
    pub fn new() -> ConnClock {
        ConnClock {
            in_flight: AtomicU32::new(0),
            used: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(0),
            base: Instant::now(),
            sent: AtomicU64::new(0),
            write_waits: AtomicU64::new(0),
            full: AtomicBool::new(false),
        }
    }

    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Relaxed);
        self.used.store(true, Relaxed);
    }

    /// Whether a request has begun on this connection yet.
    pub fn used(&self) -> bool {
        self.used.load(Relaxed)
    }

    pub fn request_finished(&self) {
        if self.in_flight.fetch_sub(1, Relaxed) <= 1 {
            self.in_flight.store(0, Relaxed);
            let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.idle_since_ms.store(ms, Relaxed);
        }
    }

    /// How many times a write has found the TCP socket full so far, and
    /// whether the last write did.
    pub fn socket_full(&self) -> (u64, bool) {
        (self.write_waits.load(Relaxed), self.full.load(Relaxed))
    }

    /// Counts a write to the TCP socket: the bytes it took, or that it was full.
    pub fn note_write(&self, written: &Poll<io::Result<usize>>) {
        match written {
            Poll::Ready(Ok(n)) => {
                self.sent.fetch_add(*n as u64, Relaxed);
                self.full.store(false, Relaxed);
            }
            Poll::Pending => {
                self.write_waits.fetch_add(1, Relaxed);
                self.full.store(true, Relaxed);
            }
            Poll::Ready(Err(_)) => {}
        }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Relaxed)
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Relaxed) > 0
    }

    fn idle_since(&self) -> Instant {
        self.base + Duration::from_millis(self.idle_since_ms.load(Relaxed))
    }
}

impl Default for ConnClock {
    fn default() -> Self {
        ConnClock::new()
    }
}

/// The deadlines and rates a connection is held to.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub header: Duration,
    pub keepalive: Duration,
    /// A stalled writer must have moved at least `min_send_rate` bytes per
    /// second over each window of this length.
    pub send_window: Duration,
    pub min_send_rate: u64,
}

impl Deadlines {
    /// The bytes a stalled writer must have moved over each `send_window`.
    pub fn send_floor(&self) -> u64 {
        self.min_send_rate.saturating_mul(self.send_window.as_secs().max(1))
    }
}

/// Why a connection was closed by its own deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    HeaderTimeout,
    Idle,
    SlowReader,
}

/// Renders the gateway's answer to a wire violation (and records it):
/// the refused request's method and target bytes, if its line was whole.
pub type LastWord = Box<dyn FnOnce(Violation, Option<(&[u8], &[u8])>) -> Bytes + Send>;

pub struct ClientIo<S> {
    inner: S,
    /// `None` on HTTP/2, whose framing the HTTP/2 layer checks.
    guard: Option<Guard>,
    /// Bytes read but not yet handed to the server; the first `ready` of
    /// them are released, the rest belong to a head still being read.
    pending: BytesMut,
    ready: usize,
    stopped: bool,
    last_word: Option<LastWord>,
    answer: Option<Bytes>,
    clock: Arc<ConnClock>,
    deadlines: Deadlines,
    /// When the head being read began (the connection's start for the first).
    head_since: Instant,
    /// No request has been released yet: the first head's deadline runs
    /// from the connection's start, bytes or not.
    first: bool,
    read_timer: Option<(Instant, Pin<Box<Sleep>>)>,
    /// Told the server the stream ended, having idled [`PARK_AFTER`].
    parked: bool,
    /// The stall window, if one runs, and the bytes sent when it began.
    stall: Option<(u64, Pin<Box<Sleep>>)>,
    on_cut: Option<Box<dyn FnOnce(Cut) + Send>>,
    /// Bytes read since the connection last let the worker's other
    /// connections run, and the yield it owes them once that reaches [`TURN`].
    turn: usize,
    others_turn: Option<Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
}

impl<S> ClientIo<S> {
    /// An HTTP/1 connection: the guard reads ahead of the server.
    pub fn http1(inner: S, clock: Arc<ConnClock>, deadlines: Deadlines, limits: Limits, last_word: LastWord) -> Self {
        let mut io = ClientIo::http2(inner, clock, deadlines);
        io.guard = Some(Guard::new(limits));
        io.last_word = Some(last_word);
        io
    }

    /// An HTTP/2 connection: only the idle deadline and the send rate apply.
    pub fn http2(inner: S, clock: Arc<ConnClock>, deadlines: Deadlines) -> Self {
        ClientIo {
            inner,
            guard: None,
            pending: BytesMut::new(),
            ready: 0,
            stopped: false,
            last_word: None,
            answer: None,
            clock,
            deadlines,
            head_since: Instant::now(),
            first: true,
            read_timer: None,
            parked: false,
            stall: None,
            on_cut: None,
            turn: 0,
            others_turn: None,
        }
    }

    /// Called once if a deadline closes the connection (for metrics).
    pub fn on_cut(mut self, f: impl FnOnce(Cut) + Send + 'static) -> Self {
        self.on_cut = Some(Box::new(f));
        self
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The server was told the stream ended because the connection idled
    /// (not because the client closed it): the socket is open and waits.
    pub fn parked(&self) -> bool {
        self.parked
    }

    /// Bytes a parked server had read but not used (none in practice: it
    /// parks only with an empty buffer) are the first the next one reads.
    pub fn unread(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut pending = BytesMut::with_capacity(bytes.len() + self.pending.len());
        pending.extend_from_slice(bytes);
        pending.extend_from_slice(&self.pending);
        self.pending = pending;
        self.ready += bytes.len();
    }

    fn cut(&mut self, why: Cut) -> io::Error {
        if let Some(f) = self.on_cut.take() {
            f(why);
        }
        let what = match why {
            Cut::HeaderTimeout => "request head not complete in time",
            Cut::Idle => "idle keep-alive connection closed",
            Cut::SlowReader => "client reads slower than the minimum rate",
        };
        io::Error::new(io::ErrorKind::TimedOut, what)
    }

    /// Stops reading at a violation: the refused head stays unread and the
    /// gateway's answer waits for the shutdown. A violation inside a body
    /// gets no answer of its own: the server answers that request (its
    /// body ends there) and the connection closes after it.
    fn refuse(&mut self, v: Violation, head: &[u8], mid_message: bool) {
        self.stopped = true;
        let render = self.last_word.take();
        if let Some(render) = render.filter(|_| !mid_message) {
            self.answer = Some(render(v, request_line(head)));
        }
    }

    /// Which read deadline runs now, if any.
    fn read_deadline(&self) -> Option<(Instant, Due)> {
        if self.clock.busy() {
            return None;
        }
        let idle_since = self.clock.idle_since();
        let idle = (idle_since + self.deadlines.keepalive, Due::Cut(Cut::Idle));
        match &self.guard {
            None => Some(idle),
            Some(g) if g.in_head() && (self.first || !self.pending.is_empty()) => {
                Some((self.head_since + self.deadlines.header, Due::Cut(Cut::HeaderTimeout)))
            }
            // Idle between HTTP/1 requests: parked first, then closed.
            Some(g) if g.in_head() && !self.parked && PARK_AFTER < self.deadlines.keepalive => {
                Some((idle_since + PARK_AFTER, Due::Park))
            }
            Some(g) if g.in_head() => Some(idle),
            // Inside a body: its deadline belongs to the request.
            Some(_) => None,
        }
    }

    /// On a read that would wait: `Pending`, the end of the stream (the
    /// connection parks), or the deadline's error.
    fn wait_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some((at, due)) = self.read_deadline() else { return Poll::Pending };
        match &mut self.read_timer {
            Some((set, timer)) if *set == at => {
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
            Some((set, timer)) => {
                *set = at;
                timer.as_mut().reset(at);
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
            None => {
                let mut timer = Box::pin(tokio::time::sleep_until(at));
                let fired = timer.as_mut().poll(cx).is_ready();
                self.read_timer = Some((at, timer));
                if !fired {
                    return Poll::Pending;
                }
            }
        }
        match due {
            Due::Cut(why) => Poll::Ready(Err(self.cut(why))),
            Due::Park => {
                self.parked = true;
                Poll::Ready(Ok(()))
            }
        }
    }
}

/// What a read deadline brings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    Cut(Cut),
    Park,
}

impl<S: AsyncRead + Unpin> AsyncRead for ClientIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(others) = &mut this.others_turn {
            ready!(others.as_mut().poll(cx));
            this.others_turn = None;
        }
        let before = buf.filled().len();
        let read = this.read(cx, buf);
        match read {
            Poll::Pending => this.turn = 0,
            Poll::Ready(_) => {
                this.turn += buf.filled().len() - before;
                if this.turn >= TURN {
                    this.turn = 0;
                    this.others_turn = Some(Box::pin(tokio::task::yield_now()));
                }
            }
        }
        read
    }
}

impl<S: AsyncRead + Unpin> ClientIo<S> {
    fn read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self;
        loop {
            if this.ready > 0 {
                this.first = false;
                let n = this.ready.min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                this.ready -= n;
                if this.pending.is_empty() {
                    // An idle connection keeps no buffer.
                    this.pending = BytesMut::new();
                }
                return Poll::Ready(Ok(()));
            }
            if this.stopped {
                return Poll::Ready(Ok(()));
            }
            let got = if this.pending.is_empty() {
                ready!(this.read_direct(cx, buf))?
            } else {
                ready!(this.read_pending(cx))?
            };
            match got {
                Read::Eof => return Poll::Ready(Ok(())),
                Read::Released => {
                    this.first = false;
                    return Poll::Ready(Ok(()));
                }
                Read::Held => {}
            }
        }
    }
}

enum Read {
    Eof,
    /// Bytes were handed to the server.
    Released,
    /// Bytes were read but are held (a head still incomplete): read again.
    Held,
}

impl<S: AsyncRead + Unpin> ClientIo<S> {
    /// Reads straight into the server's buffer, then holds back what the
    /// guard does not release yet.
    fn read_direct(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<Read>> {
        if self.guard.is_none() {
            // HTTP/2 frames that open no request (PRIORITY, WINDOW_UPDATE)
            // can come back to back, so that a read never waits and the
            // deadline in `wait_read` never runs: an HTTP/2 connection past
            // its idle limit reads nothing more. (An HTTP/1 client cannot
            // do that: its bytes are a request head, under the head's size
            // limit.)
            if let Some((at, Due::Cut(why))) = self.read_deadline() {
                if Instant::now() >= at {
                    return Poll::Ready(Err(self.cut(why)));
                }
            }
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Pending => return self.wait_read(cx).map_ok(|()| Read::Eof),
            Poll::Ready(r) => r?,
        }
        let got = buf.filled().len() - before;
        if got == 0 {
            return Poll::Ready(Ok(Read::Eof));
        }
        let Some(guard) = &mut self.guard else { return Poll::Ready(Ok(Read::Released)) };
        let new = &buf.filled()[before..];
        let (pass, stop) = match guard.scan(new) {
            Scan::Release(n) => (n, None),
            Scan::Stop(n, v) => (n, Some(v)),
        };
        let mid_message = guard.refused_mid_message();
        if pass < got {
            let held = new[pass..].to_vec();
            buf.set_filled(before + pass);
            match stop {
                Some(v) => self.refuse(v, &held, mid_message),
                None => {
                    // The first bytes of a new head: its deadline starts now
                    // (the first request's ran from the connection's start).
                    if !self.first || pass > 0 {
                        self.head_since = Instant::now();
                    }
                    self.pending.extend_from_slice(&held);
                }
            }
        } else if let Some(v) = stop {
            self.refuse(v, &[], mid_message);
        }
        Poll::Ready(Ok(if pass > 0 { Read::Released } else { Read::Held }))
    }

    /// Reads more of a held head into the pending buffer and scans it.
    fn read_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Read>> {
        let n = if self.pending.is_empty() {
            // A parked connection: nothing is reserved until bytes come.
            let mut first = [0u8; 2048];
            let mut buf = ReadBuf::new(&mut first);
            match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                Poll::Pending => return self.wait_read(cx).map_ok(|()| Read::Eof),
                Poll::Ready(r) => r?,
            }
            self.pending.extend_from_slice(buf.filled());
            buf.filled().len()
        } else {
            self.pending.reserve(4096);
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.inner), cx, &mut self.pending) {
                Poll::Pending => return self.wait_read(cx).map_ok(|()| Read::Eof),
                Poll::Ready(r) => r?,
            }
        };
        if n == 0 {
            // The client went away in the middle of a head: nothing of it
            // ever reached the server.
            return Poll::Ready(Ok(Read::Eof));
        }
        let Some(guard) = &mut self.guard else { return Poll::Ready(Ok(Read::Held)) };
        match guard.scan(&self.pending) {
            Scan::Release(n) => self.ready = n,
            Scan::Stop(n, v) => {
                self.ready = n;
                let held = self.pending[n..].to_vec();
                let mid_message = guard.refused_mid_message();
                self.refuse(v, &held, mid_message);
            }
        }
        Poll::Ready(Ok(Read::Held))
    }

    /// A parked connection waits for the client's next bytes with no
    /// server behind it: `true` once they came (the next server reads
    /// them), `false` if the client closed; the idle deadline still runs.
    pub fn poll_unpark(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        match ready!(self.read_pending(cx))? {
            Read::Eof => Poll::Ready(Ok(false)),
            Read::Held | Read::Released => {
                // The first bytes of a new head: its deadline starts now.
                self.head_since = Instant::now();
                self.parked = false;
                Poll::Ready(Ok(true))
            }
        }
    }
}

impl<S> ClientIo<S> {
    /// Tracks a stalled write or flush: over each window the TCP socket
    /// must have taken at least `min_send_rate` bytes a second. Counted
    /// below TLS, so a flush of TLS records that drains slowly still counts.
    fn wait_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let window = self.deadlines.send_window;
        let floor = self.deadlines.send_floor();
        let sent = self.clock.sent();
        loop {
            let (start, timer) =
                self.stall.get_or_insert_with(|| (sent, Box::pin(tokio::time::sleep_until(Instant::now() + window))));
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if sent.saturating_sub(*start) < floor {
                return Poll::Ready(self.cut(Cut::SlowReader));
            }
            // Enough moved: judge the next window.
            *start = sent;
            timer.as_mut().reset(Instant::now() + window);
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ClientIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Pending => this.wait_write(cx).map(Err),
            done => done,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.wait_write(cx).map(Err),
            done => done,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    /// Over TLS a stalled reader shows here: the records are written, the
    /// socket does not take them.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.wait_write(cx).map(Err),
            done => done,
        }
    }

    /// The gateway's answer to a violation goes out last, after the
    /// answers to the requests before it.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.parked {
            // The server ends, the connection does not.
            return Poll::Ready(Ok(()));
        }
        while let Some(answer) = this.answer.as_mut().filter(|a| !a.is_empty()) {
            let n = ready!(Pin::new(&mut this.inner).poll_write(cx, answer))?;
            if n == 0 {
                break;
            }
            answer.advance(n);
        }
        this.answer = None;
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// The client's TCP socket, counting what the kernel took and how often it
/// was full (into the connection's [`ConnClock`]). It sits below TLS, so the
/// slow-reader rules judge bytes that really left, not records queued.
pub struct Counted<S> {
    inner: S,
    clock: Arc<ConnClock>,
}

impl<S> Counted<S> {
    pub fn new(inner: S, clock: Arc<ConnClock>) -> Counted<S> {
        Counted { inner, clock }
    }

    fn count(&self, written: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        self.clock.note_write(&written);
        written
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, data);
        self.count(written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.count(written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The method and target of a request line, if the line is whole.
fn request_line(head: &[u8]) -> Option<(&[u8], &[u8])> {
    let start = head.iter().position(|b| !matches!(b, b'\r' | b'\n'))?;
    let line = &head[start..];
    let line = &line[..line.iter().position(|b| *b == b'\n')?];
    let mut parts = line.split(|b| *b == b' ');
    Some((parts.next()?, parts.next()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client whose bytes never run out (here `repeat`, always ready)
    /// gets [`TURN`] bytes, then the worker's other connections run.
    /// Without the turn, tokio's budget of 128 reads would let it take
    /// 128 reads' worth first (2 MiB of 16 KiB reads).
    #[tokio::test]
    async fn a_client_whose_bytes_never_run_out_yields_after_each_turn() {
        let deadlines = Deadlines {
            header: Duration::from_secs(5),
            keepalive: Duration::from_secs(5),
            send_window: Duration::from_secs(5),
            min_send_rate: 1024,
        };
        let mut io = ClientIo::http2(tokio::io::repeat(b'x'), Arc::new(ConnClock::new()), deadlines);
        let mut buf = vec![0u8; 16 * 1024];
        for turn in 0..3 {
            let taken = std::future::poll_fn(|cx| {
                let mut taken = 0;
                loop {
                    let mut read = ReadBuf::new(&mut buf);
                    match Pin::new(&mut io).poll_read(cx, &mut read) {
                        Poll::Ready(Ok(())) => taken += read.filled().len(),
                        Poll::Ready(Err(e)) => panic!("turn {turn}: {e}"),
                        Poll::Pending => return Poll::Ready(taken),
                    }
                }
            })
            .await;
            assert_eq!(taken, TURN, "turn {turn}");
        }
    }
}
