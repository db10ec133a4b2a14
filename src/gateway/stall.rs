//! HTTP/2 streams whose client stops taking the answer. A client that
//! grants a stream no flow-control window leaves the socket free, so the
//! connection's slow-reader rule (`io`) never sees it, and hyper stops
//! polling the answer's body, so the body cannot judge itself either. Each
//! stream's task therefore runs inside a [`Watched`] future: the answer's
//! body reports what it handed over (through the task's [`Progress`]), and
//! a stream that was given less than `min_send_rate` bytes a second over
//! `send_window` while its body waited on the client is dropped, which
//! resets that stream alone (RST_STREAM, CANCEL) and closes its upstream
//! connection. The body hands the upstream's bytes on in pieces of about
//! one window's floor (h2 takes a whole chunk whatever the window, and the
//! body is polled again only once that went out), so a stream read at the
//! minimum rate shows a piece's progress each window. Two waits are never
//! judged here: a body waiting on its upstream (the route's timeout), and a
//! window in which the TCP socket was full (the connection's slow-reader
//! rule in `io`, which then judges every stream at once).
//!
//! It owns no exchange and writes no audit line (dropping the stream drops
//! its exchange, which does).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::gateway::io::ConnClock;

/// Spawns each HTTP/2 stream's task on the worker, watched for stalling.
#[derive(Clone)]
pub struct StreamExec {
    pub window: Duration,
    /// Bytes a stream must be handed per `window` while it waits on the client.
    pub floor: u64,
    pub clock: Arc<ConnClock>,
    /// Called once per stream reset for stalling (counts it, logs it).
    pub on_stall: Arc<dyn Fn() + Send + Sync>,
}

impl StreamExec {
    /// The most a watched body hands over at once: a window's floor, kept
    /// between 1 KiB (fewer polls) and 16 KiB (one HTTP/2 frame at the
    /// default size).
    fn piece(&self) -> usize {
        usize::try_from(self.floor).unwrap_or(usize::MAX).clamp(1024, 16 * 1024)
    }
}

impl<F: Future + 'static> hyper::rt::Executor<F> for StreamExec {
    fn execute(&self, fut: F) {
        let watched = Watched {
            task: Box::pin(fut),
            progress: Rc::new(Progress { piece: self.piece(), ..Progress::default() }),
            exec: self.clone(),
            mark: None,
        };
        tokio::task::spawn_local(watched);
    }
}

/// The answer's body is about to be sent: until it is first polled, the
/// stream waits on the client's window. On a watched stream, the most the
/// body should hand over at once.
pub fn body_ready() -> Option<usize> {
    with_current(|p| {
        p.waiting.set(true);
        p.piece
    })
}

/// The answer's body is being polled: whatever it handed before was taken.
pub fn body_polled() {
    let _ = with_current(|p| p.waiting.set(false));
}

/// The answer's body handed `bytes` on; it waits until polled again.
pub fn body_handed(bytes: usize) {
    let _ = with_current(|p| {
        p.waiting.set(true);
        p.handed.set(p.handed.get().saturating_add(bytes as u64));
    });
}

thread_local! {
    /// The progress of the stream whose task is being polled on this thread.
    static CURRENT: Cell<Option<Rc<Progress>>> = const { Cell::new(None) };
}

/// `f` on the progress of the stream being polled, if this is one.
fn with_current<R>(f: impl FnOnce(&Progress) -> R) -> Option<R> {
    CURRENT.with(|c| {
        let current = c.take();
        let r = current.as_deref().map(f);
        c.set(current);
        r
    })
}

/// What one stream's answer body has done.
#[derive(Default)]
struct Progress {
    /// Bytes handed to hyper so far.
    handed: Cell<u64>,
    /// Handed (or ready) and not polled since: hyper waits for window.
    waiting: Cell<bool>,
    piece: usize,
}

/// A stream's task and the clock that judges it.
struct Watched<F> {
    task: Pin<Box<F>>,
    progress: Rc<Progress>,
    exec: StreamExec,
    /// While waiting: the window's end, and the bytes handed and the
    /// socket's write waits when it began.
    mark: Option<Mark>,
}

struct Mark {
    timer: Pin<Box<Sleep>>,
    handed: u64,
    write_waits: u64,
}

impl Mark {
    /// Whether the socket was full at some moment of this window: it
    /// still is, or a write found it so since the window began.
    fn socket_was_full(&self, (write_waits, full_now): (u64, bool)) -> bool {
        full_now || write_waits != self.write_waits
    }
}

impl<F: Future> Future for Watched<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let outer = CURRENT.with(|c| c.replace(Some(this.progress.clone())));
        let polled = this.task.as_mut().poll(cx);
        CURRENT.with(|c| c.replace(outer));
        if polled.is_ready() {
            return Poll::Ready(());
        }
        if this.stalled(cx) {
            // Returning drops the task: h2 resets the stream, the body and
            // its upstream connection go, and the exchange is audited.
            (this.exec.on_stall)();
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl<F> Watched<F> {
    /// Whether the client took less than the floor over a whole window while
    /// the body waited on it; arms the window's timer otherwise.
    fn stalled(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.progress.waiting.get() {
            self.mark = None;
            return false;
        }
        let handed = self.progress.handed.get();
        let socket = self.exec.clock.socket_full();
        let window = self.exec.window;
        // Progress comes in pieces, so a window asks for at most one.
        let floor = self.exec.floor.min(self.progress.piece as u64);
        let mark = self.mark.get_or_insert_with(|| Mark {
            timer: Box::pin(tokio::time::sleep(window)),
            handed,
            write_waits: socket.0,
        });
        while mark.timer.as_mut().poll(cx).is_ready() {
            if handed.saturating_sub(mark.handed) < floor && !mark.socket_was_full(socket) {
                return true;
            }
            mark.handed = handed;
            mark.write_waits = socket.0;
            mark.timer.as_mut().reset(Instant::now() + window);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    /// What the answer's body does on its stream, as the task hyper runs.
    #[derive(Clone, Copy)]
    enum Body {
        /// Ready, never polled: the client granted no window.
        NeverPolled,
        /// Waiting on its upstream: it was polled and had nothing yet.
        WaitingUpstream,
        /// Hands this many bytes every half second.
        Hands(usize),
    }

    /// Runs a watched stream for five (paused) seconds: when it was reset, if it was.
    async fn reset_after(body: Body, socket_full: bool) -> Option<Duration> {
        let clock = Arc::new(ConnClock::new());
        if socket_full {
            clock.note_write(&Poll::Pending);
        }
        let metrics = Arc::new(Metrics::default());
        let counted = metrics.clone();
        let on_stall = Arc::new(move || counted.stalled_stream());
        let exec = StreamExec { window: Duration::from_secs(1), floor: 1024, clock, on_stall };
        let task = async move {
            let _ = body_ready();
            loop {
                match body {
                    Body::NeverPolled => {}
                    Body::WaitingUpstream => body_polled(),
                    Body::Hands(n) => {
                        body_polled();
                        body_handed(n);
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        };
        let watched = Watched {
            task: Box::pin(task),
            progress: Rc::new(Progress { piece: exec.piece(), ..Progress::default() }),
            exec,
            mark: None,
        };
        let started = Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(5), watched).await.is_ok();
        assert_eq!(metrics.render(0.0, 0).contains("sekisho_stalled_streams_total 1"), ended);
        ended.then(|| started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_is_reset_only_when_the_client_takes_less_than_the_floor_through_a_free_socket() {
        let cases = [
            (Body::NeverPolled, false, true),
            (Body::Hands(100), false, true),
            (Body::Hands(1024), false, false),
            (Body::WaitingUpstream, false, false),
            // A full socket is the connection's slow-reader rule's to judge.
            (Body::NeverPolled, true, false),
            (Body::Hands(100), true, false),
        ];
        for (body, full, reset) in cases {
            let after = reset_after(body, full).await;
            assert_eq!(after.is_some(), reset, "socket full: {full}, after {after:?}");
            if let Some(after) = after {
                assert!(after >= Duration::from_secs(1) && after < Duration::from_secs(3), "reset after {after:?}");
            }
        }
    }
}
