//! Bodies as they cross the gateway. [`ReqBody`] carries the client's body
//! upstream: bodies a profile inspects are scanned for 個人番号 and held
//! back until judged (whole up to `HOLD_BYTES`, then always the last
//! `TAIL_BYTES`), a client that stops sending for `body_idle`, or sends
//! less than `min_body_rate` over a `body_idle` spent waiting on it, is
//! answered 408 ([`Pace`]), and a change of state (suspension,
//! revocation, stop) ends it. [`ResBody`] carries the answer back: the
//! gateway's own pages, or the upstream's body streamed untouched, ended
//! when the state changes against it; when it is done (or dropped) the
//! exchange is audited and a pooled connection goes back. No byte is
//! altered; none of a refused body reaches the upstream.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use sekisho_policy::mynumber::Scanner;
use sekisho_policy::{Deny, Profile};
use tokio::time::{Instant, Sleep};

use crate::gateway::exchange::Exchange;
use crate::gateway::stall;
use crate::gateway::upstream::Lent;
use crate::gateway::Worker;

/// Bodies up to this size reach the upstream only after the whole body was
/// scanned; larger ones stream on with a bounded hold (a refusal then aborts
/// the upstream request mid-body).
const HOLD_BYTES: usize = 1 << 20;
/// A streamed body keeps this much back: every byte a verdict on a number
/// can still depend on (its context reaches 300 characters past it).
const TAIL_BYTES: usize = sekisho_policy::mynumber::DECISION_BYTES;

/// Why the client's body ended early, for the answer the client gets.
#[derive(Debug, Clone, Default)]
pub enum BodyEnd {
    #[default]
    Fine,
    /// The body broke a policy rule (a 個人番号).
    Refused(Deny),
    /// The client stopped sending for longer than the body deadline.
    TimedOut,
    /// An administrator's change withdrew access meanwhile.
    Withdrawn(Deny),
    /// The client's stream broke (closed, reset, malformed framing).
    Broken,
}

/// What the request's body learned, shared with the exchange that reads it.
pub type BodyOutcome = Rc<std::cell::RefCell<BodyEnd>>;

/// Checks `decide` left to the whole body (`Allow::inspect`): the body is
/// held whole (up to `HOLD_BYTES`) and judged at its end before any of it
/// goes upstream.
pub struct Inspection {
    pub inspect: sekisho_policy::Inspect,
    pub content_type: Option<String>,
    pub user: String,
    pub shared: std::sync::Arc<crate::shared::Shared>,
}

/// Re-judges an exchange in flight when the state changed.
pub struct Recheck {
    pub worker: Rc<Worker>,
    pub profile: std::sync::Arc<Profile>,
    pub user: String,
    pub device: String,
    pub generation: Cell<u64>,
    /// When time alone calls for the next judgement (`Settings::rejudge`).
    pub next: Cell<Instant>,
    /// The connection's watcher found access withdrawn: the denial, and the
    /// task waiting for it ([`Recheck::signalled`]).
    pub signal: RefCell<(Option<Deny>, Option<std::task::Waker>)>,
}

impl Recheck {
    /// `Err` once a committed change or the passing time (hours that
    /// ended, a maintenance window that began) withdrew this exchange's
    /// access. Judged on a change, and at most every `rejudge` otherwise.
    pub fn still_allowed(&self) -> Result<(), Deny> {
        let shared = &self.worker.gateway.shared;
        let now = shared.generation.load(std::sync::atomic::Ordering::Acquire);
        let at = Instant::now();
        if now == self.generation.get() && at < self.next.get() {
            return Ok(());
        }
        self.generation.set(now);
        self.next.set(at + self.worker.gateway.settings.rejudge);
        self.judge_now()
    }

    /// The judgement itself, without consuming the change (the connection's
    /// watcher calls it too, and must not hide a change from the exchange).
    pub fn judge_now(&self) -> Result<(), Deny> {
        let snap = self.worker.gateway.shared.snapshot();
        sekisho_policy::engine::still_allowed(&self.profile, &snap.state, &self.user, &self.device, chrono::Utc::now())
    }

    /// Tells the exchange that a change withdrew its access (the
    /// connection's watcher judged it), so that a wait for the upstream
    /// ends with the block page rather than with the connection.
    pub fn signal(&self, deny: Deny) {
        let waiting = {
            let mut signal = self.signal.borrow_mut();
            signal.0 = Some(deny);
            signal.1.take()
        };
        if let Some(waker) = waiting {
            waker.wake();
        }
    }

    /// Completes once [`Recheck::signal`] was called. It costs nothing but
    /// a waker while it waits: no timer, no subscription.
    pub fn signalled(&self) -> impl Future<Output = Deny> + '_ {
        std::future::poll_fn(|cx| {
            let mut signal = self.signal.borrow_mut();
            match signal.0.take() {
                Some(deny) => Poll::Ready(deny),
                None => {
                    if !signal.1.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        signal.1 = Some(cx.waker().clone());
                    }
                    Poll::Pending
                }
            }
        })
    }

    /// A future that completes when access is withdrawn (for waiting
    /// exchanges): on a committed change, or when `rejudge` has passed.
    pub fn withdrawn(self: &Rc<Self>) -> Pin<Box<dyn Future<Output = Deny>>> {
        let me = self.clone();
        let mut moments = Moments::new(&self.worker.gateway.shared);
        Box::pin(async move {
            loop {
                if let Err(deny) = me.still_allowed() {
                    return deny;
                }
                moments.next(me.next.get()).await;
            }
        })
    }
}

/// The moments to judge exchanges in flight again: each committed change,
/// and the time given.
pub struct Moments {
    changes: tokio::sync::watch::Receiver<u64>,
    /// The channel closes when the gateway shuts down; time still passes.
    open: bool,
}

impl Moments {
    pub fn new(shared: &crate::shared::Shared) -> Moments {
        Moments { changes: shared.changes(), open: true }
    }

    /// Waits for the next committed change, or until `at`.
    pub async fn next(&mut self, at: Instant) {
        tokio::select! {
            changed = self.changes.changed(), if self.open => self.open = changed.is_ok(),
            () = tokio::time::sleep_until(at) => {}
        }
    }
}

/// The client's body on its way upstream.
pub struct ReqBody {
    inner: Incoming,
    profile: std::sync::Arc<Profile>,
    // Boxed: only some profiles use them, and every request's future
    // carries this body (inside its `Request`) several times over.
    scanner: Option<Box<Scanner>>,
    inspection: Option<Box<Inspection>>,
    /// A low-confidence number passed: recorded (without the number).
    pub note: Rc<Cell<Option<&'static str>>>,
    /// When the whole body had been handed on: the upstream's time to
    /// answer runs from there, not while the client is still sending.
    pub sent: Rc<Cell<Option<Instant>>>,
    held: BytesMut,
    released: bool,
    /// Set once the body ended; the frame that ends it is emitted first.
    done: bool,
    outcome: BodyOutcome,
    pace: Pace,
    timer: Option<Pin<Box<Sleep>>>,
    recheck: Option<Rc<Recheck>>,
}

impl ReqBody {
    pub fn new(
        inner: Incoming,
        profile: std::sync::Arc<Profile>,
        inspection: Option<Inspection>,
        pace: Pace,
        recheck: Option<Rc<Recheck>>,
        outcome: BodyOutcome,
    ) -> ReqBody {
        let sent = Rc::new(Cell::new(http_body::Body::is_end_stream(&inner).then(Instant::now)));
        ReqBody {
            inner,
            scanner: sekisho_policy::engine::body_scanner(&profile).map(Box::new),
            profile,
            inspection: inspection.map(Box::new),
            note: Rc::default(),
            sent,
            held: BytesMut::new(),
            released: false,
            done: false,
            outcome,
            pace,
            timer: None,
            recheck,
        }
    }

    fn fail(&mut self, why: BodyEnd) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        *self.outcome.borrow_mut() = why;
        self.done = true;
        Poll::Ready(Some(Err(BodyError)))
    }

    /// Scans a chunk and decides what of the held bytes may go now.
    fn take(&mut self, chunk: Bytes, end: bool) -> Result<Option<Bytes>, Deny> {
        if self.scanner.is_none() && self.inspection.is_none() {
            return Ok(Some(chunk));
        }
        if let Some(scanner) = &mut self.scanner {
            sekisho_policy::engine::check_body(&self.profile, scanner, &chunk, end)?;
            if end {
                self.note.set(sekisho_policy::engine::body_note(scanner));
            }
        }
        if let Some(i) = &self.inspection {
            if self.held.len() + chunk.len() > HOLD_BYTES {
                return Err(sekisho_policy::engine::body_too_large(&i.inspect));
            }
        }
        self.held.extend_from_slice(&chunk);
        if end {
            if let Some(i) = &self.inspection {
                let snap = i.shared.snapshot();
                let (ty, user) = (i.content_type.as_deref(), i.user.as_str());
                sekisho_policy::engine::check_held_body(&self.profile, &snap.state, user, &i.inspect, ty, &self.held)?;
            }
            return Ok(Some(self.held.split().freeze()));
        }
        let limit = if self.released { TAIL_BYTES } else { HOLD_BYTES };
        if self.inspection.is_none() && self.held.len() > limit {
            self.released = true;
            let send = self.held.len() - TAIL_BYTES;
            return Ok(Some(self.held.split_to(send).freeze()));
        }
        Ok(None)
    }

    /// The client has nothing for now: too slow already, or the timer is
    /// armed for the moment it would be.
    fn too_slow(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            let Ok(due) = self.pace.wait(Instant::now()) else { return true };
            let timer = match &mut self.timer {
                Some(t) => {
                    if t.deadline() != due {
                        t.as_mut().reset(due);
                    }
                    t
                }
                None => self.timer.insert(Box::pin(tokio::time::sleep_until(due))),
            };
            // Fired: judged again (a span that brought enough starts the next).
            if timer.as_mut().poll(cx).is_pending() {
                return false;
            }
        }
    }
}

/// How fast a request body must come, judged only while the gateway waits
/// on the client (never while the upstream is slow to take what it has):
/// no pause may last `idle`, and each `idle` spent waiting must bring
/// `floor` bytes, so a body trickled just inside the pause limit is cut
/// too. Pure bookkeeping over the instants it is given.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    idle: Duration,
    floor: u64,
    /// When the current pause began, and when its part in the current span did.
    pause: Option<(Instant, Instant)>,
    /// Time spent waiting in the current span, in pauses already over.
    waited: Duration,
    /// Bytes that came in the current span.
    bytes: u64,
}

impl Pace {
    /// `rate` bytes per second, judged over each `idle` spent waiting.
    pub fn new(idle: Duration, rate: u64) -> Pace {
        let floor = rate.saturating_mul(idle.as_secs().max(1));
        Pace { idle, floor, pause: None, waited: Duration::ZERO, bytes: 0 }
    }

    /// The client has nothing for now: `Err` if it is too slow already,
    /// else the moment it will be unless bytes come first.
    pub fn wait(&mut self, now: Instant) -> Result<Instant, TooSlow> {
        let (paused, mut span) = *self.pause.get_or_insert((now, now));
        if now.duration_since(paused) >= self.idle {
            return Err(TooSlow);
        }
        if self.waited + now.duration_since(span) >= self.idle {
            if self.bytes < self.floor {
                return Err(TooSlow);
            }
            // A span that brought enough: the next one starts now.
            (span, self.waited, self.bytes) = (now, Duration::ZERO, 0);
            self.pause = Some((paused, now));
        }
        Ok((paused + self.idle).min(span + self.idle.saturating_sub(self.waited)))
    }

    /// `n` bytes came (none: a frame without data), ending any pause;
    /// `now` is asked for only then.
    pub fn arrived(&mut self, n: usize, now: impl FnOnce() -> Instant) {
        if let Some((_, span)) = self.pause.take() {
            self.waited += now().duration_since(span);
        }
        self.bytes = self.bytes.saturating_add(n as u64);
    }
}

/// The client's body came slower than [`Pace`] allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooSlow;

/// The body could not be carried to its end; the exchange knows why.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not carried to its end")]
pub struct BodyError;

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(Err(deny)) = this.recheck.as_ref().map(|r| r.still_allowed()) {
                return this.fail(BodyEnd::Withdrawn(deny));
            }
            let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => {
                    if this.too_slow(cx) {
                        return this.fail(BodyEnd::TimedOut);
                    }
                    return Poll::Pending;
                }
                Poll::Ready(f) => f,
            };
            let got = match &frame {
                Some(Ok(f)) => f.data_ref().map_or(0, Bytes::len),
                _ => 0,
            };
            this.pace.arrived(got, Instant::now);
            let (chunk, end) = match frame {
                None => (Bytes::new(), true),
                Some(Err(_)) => return this.fail(BodyEnd::Broken),
                // Trailers from the client are dropped on purpose (HTTP/1
                // trailers are refused by the wire guard).
                Some(Ok(f)) => match f.into_data() {
                    Ok(data) => (data, this.inner.is_end_stream()),
                    Err(_) => continue,
                },
            };
            match this.take(chunk, end) {
                Err(deny) => return this.fail(BodyEnd::Refused(deny)),
                Ok(out) => {
                    this.done = end;
                    if end {
                        this.sent.set(Some(Instant::now()));
                    }
                    match out {
                        Some(data) if !data.is_empty() => return Poll::Ready(Some(Ok(Frame::data(data)))),
                        _ if end => return Poll::Ready(None),
                        _ => {}
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || (self.inner.is_end_stream() && self.held.is_empty())
    }

    fn size_hint(&self) -> SizeHint {
        // Holding back changes when bytes go, never how many.
        self.inner.size_hint()
    }
}

/// The answer's body on its way to the client.
pub struct ResBody {
    kind: Kind,
    exchange: Option<Box<Exchange>>,
}

enum Kind {
    Full(Option<Bytes>),
    Upstream(Box<Streamed>),
}

struct Streamed {
    inner: Incoming,
    worker: Rc<Worker>,
    lent: Option<Lent>,
    recheck: Option<Rc<Recheck>>,
    withdrawn: Option<Pin<Box<dyn Future<Output = Deny>>>>,
    /// The upstream must send each next chunk within this (the route's timeout).
    read_timeout: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// On HTTP/2, the upstream's bytes go on in pieces of at most this
    /// (`stall`); what is left of the last chunk waits in `rest`.
    piece: Option<usize>,
    rest: Bytes,
}

impl Streamed {
    /// The next piece to hand on: what is left of the last chunk first,
    /// else `data`, cut to the piece size on HTTP/2.
    fn next_piece(&mut self, data: Bytes) -> Bytes {
        let mut data = if self.rest.is_empty() { data } else { std::mem::take(&mut self.rest) };
        if let Some(piece) = self.piece.filter(|p| data.len() > *p) {
            self.rest = data.split_off(piece);
        }
        data
    }
}

impl Drop for Streamed {
    /// The server stops polling once the body says it ended, so the upstream
    /// connection goes back here, if and only if its answer was read whole.
    fn drop(&mut self) {
        if let Some(lent) = self.lent.take().filter(|_| self.inner.is_end_stream()) {
            self.worker.pool.give_back(lent);
        }
    }
}

impl ResBody {
    /// The gateway's own answer (a page or JSON), audited when written.
    pub fn full(bytes: Bytes, exchange: Box<Exchange>) -> ResBody {
        // A page is small: it goes as one piece.
        let _ = stall::body_ready();
        ResBody { kind: Kind::Full(Some(bytes)), exchange: Some(exchange) }
    }

    /// The empty body of a 101: the exchange lives on in its tunnel.
    pub fn detached() -> ResBody {
        ResBody { kind: Kind::Full(None), exchange: None }
    }

    /// The upstream's body, streamed.
    pub fn upstream(
        inner: Incoming,
        worker: Rc<Worker>,
        lent: Option<Lent>,
        recheck: Option<Rc<Recheck>>,
        read_timeout: Duration,
        exchange: Box<Exchange>,
    ) -> ResBody {
        let piece = stall::body_ready();
        let streamed = Streamed {
            inner,
            worker,
            lent,
            recheck,
            withdrawn: None,
            read_timeout,
            timer: None,
            piece,
            rest: Bytes::new(),
        };
        ResBody { kind: Kind::Upstream(Box::new(streamed)), exchange: Some(exchange) }
    }

    fn cut(&mut self, deny: Deny) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(x) = &mut self.exchange {
            x.cut(&deny);
        }
        Poll::Ready(Some(Err(BodyError)))
    }
}

impl Body for ResBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        // Over HTTP/2 the stream's watcher learns whether the client takes
        // what is handed (`stall`); over HTTP/1 the socket tells.
        stall::body_polled();
        let polled = self.poll_inner(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            stall::body_handed(frame.data_ref().map_or(0, Bytes::len));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(b) => b.is_none(),
            Kind::Upstream(s) => s.rest.is_empty() && s.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream(s) => {
                let inner = s.inner.size_hint();
                let rest = s.rest.len() as u64;
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower().saturating_add(rest));
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper.saturating_add(rest));
                }
                hint
            }
        }
    }
}

impl ResBody {
    fn poll_inner(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let s = match &mut this.kind {
            Kind::Full(bytes) => return Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(s) => s,
        };
        if let Some(Err(deny)) = s.recheck.as_ref().map(|r| r.still_allowed()) {
            return this.cut(deny);
        }
        if !s.rest.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(s.next_piece(Bytes::new())))));
        }
        match Pin::new(&mut s.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(t) = &mut s.timer {
                    t.as_mut().reset(Instant::now() + s.read_timeout);
                }
                // Upstream trailers are not forwarded: hop by hop, like the framing.
                match frame.into_data() {
                    Ok(data) => Poll::Ready(Some(Ok(Frame::data(s.next_piece(data))))),
                    Err(_) => Poll::Ready(Some(Ok(Frame::data(Bytes::new())))),
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(x) = &mut this.exchange {
                    x.upstream_broke();
                }
                Poll::Ready(Some(Err(BodyError)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                // Waiting on the upstream: a change of state must still end
                // this at once, and a silent upstream within the route's timeout.
                if let Some(r) = &s.recheck {
                    let withdrawn = s.withdrawn.get_or_insert_with(|| r.withdrawn());
                    if let Poll::Ready(deny) = withdrawn.as_mut().poll(cx) {
                        return this.cut(deny);
                    }
                }
                let timeout = s.read_timeout;
                let timer = s.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if timer.as_mut().poll(cx).is_ready() {
                    if let Some(x) = &mut this.exchange {
                        x.upstream_broke();
                    }
                    return Poll::Ready(Some(Err(BodyError)));
                }
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Rhythm = Vec<(f64, usize)>;

    /// Replays a body's rhythm: `(seconds after the start, bytes)` arrivals,
    /// the last one ending it, with the client waited on between them; the
    /// second of the cut, if any.
    fn cut_at(idle_secs: u64, rate: u64, arrivals: &[(f64, usize)]) -> Option<f64> {
        let start = Instant::now();
        let at = |s: f64| start + Duration::from_secs_f64(s);
        let mut pace = Pace::new(Duration::from_secs(idle_secs), rate);
        let mut now = 0.0;
        for &(when, n) in arrivals {
            // Waiting until `when`: the gateway wakes at each deadline.
            loop {
                match pace.wait(at(now)) {
                    Err(TooSlow) => return Some(now),
                    Ok(due) if due <= at(when) => now = (due - start).as_secs_f64(),
                    Ok(_) => break,
                }
            }
            now = when;
            pace.arrived(n, || at(when));
        }
        None
    }

    #[test]
    fn a_body_is_cut_for_a_long_pause_or_a_slow_span_and_only_then() {
        let trickle: Vec<(f64, usize)> = (1..40).map(|i| (f64::from(i) * 0.9, 10)).collect();
        let steady: Vec<(f64, usize)> = (1..40).map(|i| (f64::from(i) * 0.9, 2000)).collect();
        let cases: [(&str, Rhythm, Option<f64>); 6] = [
            ("a pause of the idle limit", vec![(0.5, 20_000), (30.0, 100)], Some(10.5)),
            ("too little before a pause: the span is judged first", vec![(0.5, 5000), (30.0, 100)], Some(10.0)),
            ("10 bytes every 0.9 s: never idle, far below 1 KiB/s", trickle, Some(10.0)),
            ("2,000 bytes every 0.9 s", steady, None),
            ("a fast body, then a pause just inside the limit", vec![(0.1, 20_000), (10.0, 20_000)], None),
            ("nothing at all", vec![(36.0, 0)], Some(10.0)),
        ];
        for (name, arrivals, want) in cases {
            let got = cut_at(10, 1024, &arrivals);
            match (got, want) {
                (None, None) => {}
                (Some(g), Some(w)) => assert!((g - w).abs() < 0.01, "{name}: cut at {g} s, not {w} s"),
                _ => panic!("{name}: cut at {got:?}, expected {want:?}"),
            }
        }
    }

    #[test]
    fn time_the_gateway_does_not_wait_on_the_client_does_not_count() {
        // The upstream held the body back for 30 s between two chunks: the
        // gateway was not waiting on the client, so nothing is judged.
        let start = Instant::now();
        let mut pace = Pace::new(Duration::from_secs(10), 1024);
        pace.arrived(5000, || start);
        assert!(pace.wait(start + Duration::from_secs(30)).is_ok());
    }
}
