//! A worker's accept loops and each connection's life: admission, the TLS
//! handshake within its deadline, ALPN to HTTP/2 or HTTP/1.1, the wire
//! guard and deadlines (`io`), and the HTTP server over them. Draining
//! stops accepting and lets open requests finish.

use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::gateway::exchange::Exchange;
use crate::gateway::io::{ClientIo, ConnClock, Counted, Cut, Deadlines};
use crate::gateway::pages::Block;
use crate::gateway::service::{handle, Conn};
use crate::gateway::wire::Violation;
use crate::gateway::{stall, Gateway, Worker};

/// Runs the worker's accept loops until drained, then waits (up to the
/// grace period) for its open connections to finish.
pub async fn run(
    worker: Rc<Worker>,
    listeners: Vec<(TcpListener, bool)>,
    mut drain: tokio::sync::watch::Receiver<bool>,
) {
    let mut accepting = Vec::new();
    for (listener, tls) in listeners {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                log::error!("a listening socket could not be used: {e}");
                continue;
            }
        };
        let (worker, drain) = (worker.clone(), drain.clone());
        accepting.push(tokio::task::spawn_local(accept(worker, listener, tls, drain)));
    }
    let evict = {
        let worker = worker.clone();
        tokio::task::spawn_local(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                worker.pool.evict();
            }
        })
    };
    let _ = drain.wait_for(|d| *d).await;
    for a in accepting {
        let _ = a.await;
    }
    let deadline = tokio::time::Instant::now() + DRAIN_GRACE;
    while worker.open.get() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    evict.abort();
}

/// How long a draining worker waits for its open requests.
pub const DRAIN_GRACE: Duration = Duration::from_secs(5);

async fn accept(
    worker: Rc<Worker>,
    listener: tokio::net::TcpListener,
    tls: bool,
    mut drain: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = drain.wait_for(|d| *d) => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((tcp, peer)) => {
                // On a dual-stack listener (`[::]`) an IPv4 client arrives as
                // `::ffff:a.b.c.d`: it is that IPv4 address to the admission
                // limit, the rules, the rate limits and the audit trail.
                let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
                let (worker, drain) = (worker.clone(), drain.clone());
                tokio::task::spawn_local(serve(worker, tcp, peer, tls, drain));
            }
            Err(e) => {
                // Out of descriptors and the like: pause rather than spin.
                log::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Counts an open connection on its worker until dropped.
struct Open(Rc<Worker>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get().saturating_sub(1));
    }
}

async fn serve(
    worker: Rc<Worker>,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: bool,
    drain: tokio::sync::watch::Receiver<bool>,
) {
    let gateway = worker.gateway.clone();
    let settings = gateway.settings;
    let Some(_slot) = gateway.admission.admit(gateway.limits.key(peer.ip()), settings.connections_per_client) else {
        gateway.metrics.connection_refused();
        return;
    };
    worker.open.set(worker.open.get() + 1);
    let _open = Open(worker.clone());
    let _ = tcp.set_nodelay(true);
    let socket = handle_of(&tcp);
    let clock = Arc::new(ConnClock::new());
    let tcp = Counted::new(tcp, clock.clone());
    let acceptor = match (&gateway.tls, tls) {
        (Some(acceptor), true) => acceptor.clone(),
        _ => {
            let conn = Rc::new(Conn::new(worker, clock, peer, false, None));
            return http1(conn, tcp, socket, drain).await;
        }
    };
    // Boxed: inline, the TLS and HTTP/2 states would size every plain
    // connection's task too, for its whole life.
    Box::pin(serve_tls(worker, tcp, acceptor, socket, clock, peer, drain)).await;
}

/// A TLS connection: the handshake within its deadline, then HTTP/2 or
/// HTTP/1.1 as ALPN chose.
async fn serve_tls(
    worker: Rc<Worker>,
    tcp: Counted<tokio::net::TcpStream>,
    acceptor: tokio_rustls::TlsAcceptor,
    socket: Option<socket2::Socket>,
    clock: Arc<ConnClock>,
    peer: SocketAddr,
    drain: tokio::sync::watch::Receiver<bool>,
) {
    let gateway = worker.gateway.clone();
    let stream = match tokio::time::timeout(gateway.settings.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        // A client that is not speaking TLS, or gave up: nothing to answer.
        Ok(Err(_)) => return,
        Err(_) => {
            gateway.metrics.header_timeout();
            let secs = gateway.settings.handshake_timeout.as_secs();
            note_cut(&gateway.header_cuts, peer, || {
                format!("no TLS handshake within {secs} s (`[limits] header_timeout_secs`)")
            });
            return;
        }
    };
    let session = &stream.get_ref().1;
    let cert = session.peer_certificates().and_then(|c| c.first()).map(|c| <[u8; 32]>::from(Sha256::digest(c)));
    let h2 = session.alpn_protocol() == Some(b"h2");
    let conn = Rc::new(Conn::new(worker, clock, peer, true, cert));
    if h2 {
        http2(conn, stream, socket, drain).await;
    } else {
        http1(conn, stream, socket, drain).await;
    }
}

fn deadlines(worker: &Worker) -> Deadlines {
    let s = &worker.gateway.settings;
    Deadlines {
        header: s.header_timeout,
        keepalive: s.keepalive,
        send_window: s.send_window,
        min_send_rate: s.min_send_rate,
    }
}

/// Counts a deadline's cut and logs it (at most once a minute per kind; an
/// idle close is no news). A slow reader's socket is reset, so what the
/// kernel still holds for it is dropped rather than trickled out for hours.
fn on_cut(worker: &Rc<Worker>, socket: Option<socket2::Socket>, peer: SocketAddr) -> impl FnOnce(Cut) + Send + 'static {
    let gateway = worker.gateway.clone();
    move |cut| match cut {
        Cut::HeaderTimeout => {
            gateway.metrics.header_timeout();
            let secs = gateway.settings.header_timeout.as_secs();
            note_cut(&gateway.header_cuts, peer, || {
                format!("no whole request head within {secs} s (`[limits] header_timeout_secs`)")
            });
        }
        Cut::SlowReader => {
            gateway.metrics.slow_reader();
            let rate = gateway.settings.min_send_rate;
            note_cut(&gateway.slow_reader_cuts, peer, || {
                format!("reading answers slower than {rate} bytes/s (`[limits] min_send_rate`)")
            });
            if let Some(s) = socket {
                let _ = s.set_linger(Some(Duration::ZERO));
            }
        }
        Cut::Idle => {}
    }
}

/// Counts an HTTP/2 stream reset for stalling and logs it (at most once a
/// minute): the connection stays, so no cut is logged for it.
fn on_stall(worker: &Rc<Worker>, peer: SocketAddr) -> Arc<dyn Fn() + Send + Sync> {
    let gateway = worker.gateway.clone();
    Arc::new(move || {
        gateway.metrics.stalled_stream();
        let rate = gateway.settings.min_send_rate;
        note(&gateway.stalled_streams, "reset", "HTTP/2 stream(s)", peer, || {
            format!(
                "the client took an answer slower than {rate} bytes/s while its connection had room \
                 (`[limits] min_send_rate`)"
            )
        });
    })
}

/// One cut connection into its kind's notes.
fn note_cut(notes: &crate::notes::Notes, peer: SocketAddr, why: impl FnOnce() -> String) {
    note(notes, "cut", "connection(s)", peer, why);
}

/// One event into its kind's notes: a line, when one is due, saying what
/// was done to how many, why, and the latest from where.
fn note(notes: &crate::notes::Notes, done: &str, what: &str, peer: SocketAddr, why: impl FnOnce() -> String) {
    notes.note(std::time::Instant::now(), |n| {
        format!("gateway: {done} {n} {what} since the last note: {}, the latest from {}", why(), peer.ip())
    });
}

/// A second handle on the client socket, for resetting it on a cut.
fn handle_of(tcp: &tokio::net::TcpStream) -> Option<socket2::Socket> {
    use std::os::fd::AsFd as _;
    tcp.as_fd().try_clone_to_owned().ok().map(socket2::Socket::from)
}

async fn http1<S>(
    conn: Rc<Conn>,
    stream: S,
    socket: Option<socket2::Socket>,
    mut drain: tokio::sync::watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let worker = conn.worker.clone();
    let last_word = {
        let (gateway, clock, peer) = (worker.gateway.clone(), conn.clock.clone(), conn.peer);
        Box::new(move |v: Violation, line: Option<(&[u8], &[u8])>| refuse_wire(&gateway, &clock, peer, v, line))
    };
    let limits = worker.gateway.settings.wire;
    let mut io = ClientIo::http1(stream, conn.clock.clone(), deadlines(&worker), limits, last_word)
        .on_cut(on_cut(&worker, socket, conn.peer));
    let watched = conn.clone();
    let mut service = service_fn(move |req| handle(conn.clone(), req));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .half_close(true)
        .keep_alive(true)
        .header_read_timeout(None)
        // The guard passes hyper only heads within this count, so hyper
        // needs no margin above it; at hyper's default of 100 or under,
        // hyper parses into arrays on the stack (above it, it allocated two
        // 32-byte-per-header arrays for every request).
        .max_headers(worker.gateway.settings.wire.max_headers)
        .max_buf_size(worker.gateway.settings.wire.max_head_bytes * 2);
    loop {
        if *drain.borrow() {
            watched.draining.set(true);
        }
        // Boxed, so that a parked connection frees the server with its buffers.
        let mut server = Box::new(builder.serve_connection(TokioIo::new(io), service).with_upgrades());
        let mut outside = Outside::watch(&watched, &drain);
        let ending = tokio::select! {
            _ = &mut *server => None,
            ending = outside.ending() => Some(ending),
        };
        drop(outside);
        match ending {
            None => {}
            // Dropping the connection closes it and ends its exchanges.
            Some(Ending::Withdrawn) => return,
            Some(Ending::Drain) => {
                // From now on each answer closes the connection. One idle
                // at the drain may have its next request on the way: it has
                // a moment to arrive and be answered, not meet a closed socket.
                watched.draining.set(true);
                if tokio::time::timeout(DRAIN_LINGER, &mut *server).await.is_err() {
                    std::pin::Pin::new(&mut *server).graceful_shutdown();
                    let _ = server.await;
                    return;
                }
            }
        }
        // Upgraded (the tunnel owns the stream now), or closed for good.
        let Some(parts) = server.into_parts() else { return };
        io = parts.io.into_inner();
        if !io.parked() {
            return;
        }
        io.unread(&parts.read_buf);
        service = parts.service;
        // The server's read buffer goes with it (`read_buf` shares it).
        drop(parts.read_buf);
        if !wake(&mut io, &worker, &mut drain).await {
            return;
        }
    }
}

/// A parked connection waits with no server for the client's next bytes
/// (`true`), its close, the idle limit or the drain. Nothing is in flight
/// on it, so no change can withdraw anything while it waits. Once the
/// worker drains, the next bytes have [`DRAIN_LINGER`] to come.
async fn wake<S: AsyncRead + Unpin>(
    io: &mut ClientIo<S>,
    worker: &Worker,
    drain: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    let _parked = Parked::count(worker);
    let woke = if *drain.borrow() {
        None
    } else {
        tokio::select! {
            woke = std::future::poll_fn(|cx| io.poll_unpark(cx)) => Some(matches!(woke, Ok(true))),
            _ = drain.wait_for(|d| *d) => None,
        }
    };
    match woke {
        Some(woke) => woke,
        None => {
            let next = tokio::time::timeout(DRAIN_LINGER, std::future::poll_fn(|cx| io.poll_unpark(cx))).await;
            matches!(next, Ok(Ok(true)))
        }
    }
}

/// Counts a parked connection in the metrics until dropped.
struct Parked(Arc<crate::metrics::Metrics>);

impl Parked {
    fn count(worker: &Worker) -> Parked {
        let metrics = worker.gateway.metrics.clone();
        metrics.parked(1);
        Parked(metrics)
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        self.0.parked(-1);
    }
}

/// How long a draining worker waits for an idle HTTP/1 connection's next
/// request (or a fresh one's first) before closing it: a request already
/// on its way is answered, with `Connection: close`, rather than lost.
const DRAIN_LINGER: Duration = Duration::from_secs(1);

async fn http2<S>(conn: Rc<Conn>, stream: S, socket: Option<socket2::Socket>, drain: tokio::sync::watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let deadlines = deadlines(&conn.worker);
    let io = ClientIo::http2(stream, conn.clock.clone(), deadlines).on_cut(on_cut(&conn.worker, socket, conn.peer));
    let exec = stall::StreamExec {
        window: deadlines.send_window,
        floor: deadlines.send_floor(),
        clock: conn.clock.clone(),
        on_stall: on_stall(&conn.worker, conn.peer),
    };
    let watched = conn.clone();
    let service = service_fn(move |req| handle(conn.clone(), req));
    let mut builder = hyper::server::conn::http2::Builder::new(exec);
    builder
        .max_concurrent_streams(128)
        .max_header_list_size(64 * 1024)
        .max_pending_accept_reset_streams(Some(32))
        .max_local_error_reset_streams(Some(128));
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut outside = Outside::watch(&watched, &drain);
    tokio::select! {
        _ = &mut conn => {}
        ending = outside.ending() => match ending {
            // Dropping the connection closes it and ends its streams.
            Ending::Withdrawn => {}
            Ending::Drain => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        },
    }
}

/// What ends a connection from outside while it serves: a change that
/// withdrew an exchange in flight ([`Conn::withdrawn`]), or the worker's
/// drain. Watched on a task of its own, woken only by a change, its
/// re-judging tick or the drain: in the connection's own select it was
/// polled on every read and write, and each poll took the shared change
/// channel's lock. Aborted when dropped (the server ended, or parked).
struct Outside {
    task: tokio::task::JoinHandle<()>,
    ended: tokio::sync::oneshot::Receiver<Ending>,
}

enum Ending {
    Withdrawn,
    Drain,
}

impl Outside {
    fn watch(conn: &Rc<Conn>, drain: &tokio::sync::watch::Receiver<bool>) -> Outside {
        let (tell, ended) = tokio::sync::oneshot::channel();
        let (conn, mut drain) = (conn.clone(), drain.clone());
        let task = tokio::task::spawn_local(async move {
            let ending = tokio::select! {
                () = conn.withdrawn() => Ending::Withdrawn,
                _ = drain.wait_for(|d| *d) => Ending::Drain,
            };
            let _ = tell.send(ending);
        });
        Outside { task, ended }
    }

    /// Completes once the connection must end. A watcher that died without
    /// a word (it cannot, short of a panic) ends it too: fail closed.
    async fn ending(&mut self) -> Ending {
        (&mut self.ended).await.unwrap_or(Ending::Withdrawn)
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The gateway's answer to a request the wire guard refused: its own 400
/// page with a request id, and one audit line naming the rule.
fn refuse_wire(
    gateway: &Arc<Gateway>,
    clock: &Arc<ConnClock>,
    peer: SocketAddr,
    violation: Violation,
    line: Option<(&[u8], &[u8])>,
) -> Bytes {
    let method = line.and_then(|(m, _)| http::Method::from_bytes(m).ok()).unwrap_or(http::Method::GET);
    let mut x = Exchange::new(gateway.clone(), clock.clone(), method);
    x.client = Some(peer.ip());
    x.path = line.map(|(_, t)| String::from_utf8_lossy(t).chars().take(2048).collect()).unwrap_or_default();
    let why = violation.text();
    x.blocked("bad_request", Some(std::borrow::Cow::Borrowed(why)));
    let block = Block::BadRequest(why);
    let answer = block.render(false, &x.id, chrono::Utc::now());
    x.status = answer.status;
    let head = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: {}\r\ncontent-length: {}\r\ncache-control: no-store\r\n\
         sekisho-deny-reason: {}\r\nsekisho-request-id: {}\r\nconnection: close\r\n\r\n",
        answer.content_type,
        answer.body.len(),
        answer.code,
        x.id
    );
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(answer.body.as_bytes());
    Bytes::from(bytes)
}
