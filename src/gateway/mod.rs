//! The request path, thread per core: each worker thread runs its own
//! single-threaded runtime with its own listening sockets (SO_REUSEPORT),
//! its own upstream pool and request counter, so a request never crosses
//! threads or takes a shared lock. A connection is admitted (per-address
//! cap, TLS handshake deadline), its bytes pass the wire guard (HTTP/1),
//! and each request is judged with `decide` and answered or forwarded. It
//! reads the hot snapshot (`crate::shared`) and writes the request audit
//! line; it must never touch the store or the disk.

pub mod body;
pub mod conn;
pub mod exchange;
pub mod headers;
pub mod io;
pub mod page_cache;
pub mod pages;
pub mod request;
pub mod rewrite;
pub mod service;
pub mod stall;
pub mod tunnel;
pub mod upstream;
pub mod wire;

use std::cell::Cell;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::control::audit::AuditLog;
use crate::limits::Limiters;
use crate::metrics::Metrics;
use crate::shared::Shared;

/// What every worker shares (read-only but for atomics and sharded maps).
pub struct Gateway {
    pub shared: Arc<Shared>,
    pub audit: Arc<AuditLog>,
    pub metrics: Arc<Metrics>,
    pub limits: Arc<Limiters>,
    pub settings: Settings,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub admission: crate::admission::OpenConns,
    /// Connections cut at the header deadline, and slow readers cut: no
    /// request line was read or answered whole, so no audit line says it.
    pub header_cuts: crate::notes::Notes,
    pub slow_reader_cuts: crate::notes::Notes,
    /// HTTP/2 streams reset for stalling (`stall.rs`): each is audited, but
    /// the line says only that the exchange broke off.
    pub stalled_streams: crate::notes::Notes,
    /// A random prefix, so request ids from two processes never collide.
    prefix: u32,
}

/// The request path's deadlines and limits (from `sekisho.toml`).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub keepalive: Duration,
    pub header_timeout: Duration,
    pub handshake_timeout: Duration,
    /// A client sending a request body must send its next chunk within
    /// this, and `min_body_rate` bytes per second of each such span the
    /// gateway waits on it.
    pub body_idle: Duration,
    pub min_body_rate: u64,
    pub state_max_age: Duration,
    /// Exchanges in flight are judged again at least this often (hours end,
    /// maintenance begins), besides on every committed change.
    pub rejudge: Duration,
    /// A client must read answers at least this fast (bytes per second,
    /// judged over `send_window`) or it is cut.
    pub min_send_rate: u64,
    pub send_window: Duration,
    pub connections_per_client: u32,
    pub wire: wire::Limits,
}

impl Gateway {
    pub fn new(
        shared: Arc<Shared>,
        audit: Arc<AuditLog>,
        metrics: Arc<Metrics>,
        limits: Arc<Limiters>,
        settings: Settings,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Gateway {
        Gateway {
            shared,
            audit,
            metrics,
            limits,
            settings,
            tls,
            admission: crate::admission::OpenConns::new(
                "gateway",
                "`[limits] connections_per_client`; an office whose browsers share one address shares one cap",
            ),
            header_cuts: crate::notes::Notes::default(),
            slow_reader_cuts: crate::notes::Notes::default(),
            stalled_streams: crate::notes::Notes::default(),
            prefix: rand::random(),
        }
    }
}

/// One worker thread's own state.
pub struct Worker {
    pub gateway: Arc<Gateway>,
    pub pool: upstream::Pool,
    /// Connections open on this worker (for draining).
    pub open: Cell<usize>,
}

thread_local! {
    /// This thread's worker number and its next request number.
    static IDS: Cell<(usize, u64)> = const { Cell::new((0, 1)) };
}

impl Gateway {
    /// A request id unique in this process: the process's random prefix
    /// and the worker's number, then the worker's own counter.
    pub fn request_id(&self) -> String {
        let (worker, n) = IDS.with(|ids| {
            let (w, n) = ids.get();
            ids.set((w, n + 1));
            (w, n)
        });
        // As `format!("{:08x}{worker:02x}-{n:x}")`, without the formatter:
        // this runs once per request.
        let mut id = String::with_capacity(28);
        push_hex(&mut id, u64::from(self.prefix), 8);
        push_hex(&mut id, worker as u64, 2);
        id.push('-');
        push_hex(&mut id, n, 1);
        id
    }
}

/// Appends `v` in lowercase hex, zero-padded to at least `width` digits.
fn push_hex(out: &mut String, v: u64, width: usize) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let len = ((64 - v.leading_zeros() as usize).div_ceil(4)).max(width);
    for i in (0..len).rev() {
        let nibble = if i < 16 { (v >> (i * 4)) & 0xf } else { 0 };
        out.push(char::from(DIGITS[nibble as usize]));
    }
}

/// Spawns futures of the current worker for HTTP/2 (they stay on its thread).
#[derive(Clone, Copy)]
pub struct LocalExec;

impl<F: Future + 'static> hyper::rt::Executor<F> for LocalExec {
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// The listening sockets of the request path, by kind.
#[derive(Default)]
pub struct Listeners {
    pub https: Vec<TcpListener>,
    pub http: Vec<TcpListener>,
}

/// The running workers; [`Running::drain`] stops them gracefully.
pub struct Running {
    threads: Vec<std::thread::JoinHandle<()>>,
    drain: tokio::sync::watch::Sender<bool>,
}

/// Binds `count` SO_REUSEPORT sockets on `addr` (one per worker). The
/// caller checked beforehand that no other process listens there.
pub fn bind(addr: SocketAddr, count: usize) -> std::io::Result<Vec<TcpListener>> {
    (0..count.max(1))
        .map(|_| {
            let domain = socket2::Domain::for_address(addr);
            let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
            socket.set_reuse_address(true)?;
            socket.set_reuse_port(true)?;
            socket.set_nonblocking(true)?;
            socket.bind(&addr.into())?;
            socket.listen(1024)?;
            Ok(socket.into())
        })
        .collect()
}

/// Starts `threads` workers over `listeners` (each listener goes to one
/// worker; a worker with none of a kind shares a duplicate of another's).
pub fn start(gateway: Arc<Gateway>, listeners: Listeners, threads: usize) -> std::io::Result<Running> {
    let threads = threads.max(1);
    let mut per_worker: Vec<Vec<(TcpListener, bool)>> = (0..threads).map(|_| Vec::new()).collect();
    for (list, tls) in [(listeners.https, true), (listeners.http, false)] {
        let n = list.len();
        if n == 0 {
            continue;
        }
        // Fewer sockets than workers (a graceful upgrade from a smaller
        // process): the extra workers accept on duplicates.
        for (t, mine) in per_worker.iter_mut().enumerate().skip(n) {
            mine.push((list[t % n].try_clone()?, tls));
        }
        for (i, l) in list.into_iter().enumerate() {
            per_worker[i % threads].push((l, tls));
        }
    }
    let (drain, _) = tokio::sync::watch::channel(false);
    let mut handles = Vec::with_capacity(threads);
    for (index, mine) in per_worker.into_iter().enumerate() {
        let gateway = gateway.clone();
        let drain = drain.subscribe();
        let handle = std::thread::Builder::new()
            .name(format!("sekisho-worker-{index}"))
            .spawn(move || run_worker(gateway, index, mine, drain))?;
        handles.push(handle);
    }
    Ok(Running { threads: handles, drain })
}

impl Running {
    /// Stops accepting, lets open requests finish (up to `grace`), then
    /// returns once every worker has ended.
    pub fn drain(self, grace: Duration) {
        let _ = self.drain.send(true);
        let deadline = std::time::Instant::now() + grace + Duration::from_secs(1);
        for t in self.threads {
            while !t.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

fn run_worker(
    gateway: Arc<Gateway>,
    index: usize,
    listeners: Vec<(TcpListener, bool)>,
    drain: tokio::sync::watch::Receiver<bool>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("worker {index}: cannot start its runtime: {e}");
            return;
        }
    };
    IDS.with(|ids| ids.set((index, 1)));
    let worker = Rc::new(Worker { gateway, pool: upstream::Pool::default(), open: Cell::new(0) });
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, conn::run(worker, listeners, drain));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn hex_is_what_the_formatter_writes(v in any::<u64>(), width in 0usize..20) {
            let mut out = String::new();
            super::push_hex(&mut out, v, width);
            prop_assert_eq!(out, format!("{v:0width$x}"));
        }
    }
}
