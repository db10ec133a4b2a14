//! A WebSocket after its handshake: bytes copied both ways untouched until
//! either side closes, both stay silent for the idle limit, or a committed
//! change (suspension, revocation, stop) withdraws access, which cuts it at
//! once. The exchange is audited when the tunnel ends, as `cut` if it was.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::gateway::body::Recheck;
use crate::gateway::exchange::Exchange;

/// Runs the tunnel on this worker once both sides have switched.
pub fn spawn(
    client: Option<OnUpgrade>,
    upstream: OnUpgrade,
    recheck: Rc<Recheck>,
    idle: Duration,
    mut x: Box<Exchange>,
) {
    tokio::task::spawn_local(async move {
        let Some(client) = client else { return };
        let (Ok(client), Ok(upstream)) = tokio::join!(client, upstream) else { return };
        let last = Rc::new(Cell::new(Instant::now()));
        let mut a = Active { inner: TokioIo::new(client), last: last.clone() };
        let mut b = Active { inner: TokioIo::new(upstream), last: last.clone() };
        let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
        tokio::pin!(copy);
        let mut withdrawn = recheck.withdrawn();
        loop {
            let deadline = last.get() + idle;
            tokio::select! {
                _ = &mut copy => break,
                deny = &mut withdrawn => {
                    x.cut(&deny);
                    break;
                }
                () = tokio::time::sleep_until(deadline) => {
                    if last.get() + idle <= Instant::now() {
                        break;
                    }
                }
            }
        }
    });
}

/// A stream that notes when it last read anything.
struct Active<T> {
    inner: T,
    last: Rc<Cell<Instant>>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Active<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.last.set(Instant::now());
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Active<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
