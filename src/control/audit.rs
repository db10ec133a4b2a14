//! The request audit trail: one JSON line per request, allowed or denied,
//! appended by a writer thread so the request path only formats and pushes
//! onto a lock-free queue (`record`) and reads one flag (`healthy`). All
//! the rest happens on the writer thread: sealing each line into the hash
//! chain (`chain.rs`), signed checkpoints, rotation by size and by day,
//! reopening after an external logrotate (SIGUSR1), signed digests of
//! rotated files, gzip (on a helper thread) and retention. Closing the log
//! drains the queue first, so no line is lost on shutdown or rotation.
//! Values are JSON-escaped (`audit_json.rs`), so client text cannot forge a line. It
//! must never receive a token, key or My Number: callers pass only the
//! fields below.

use std::borrow::Cow;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use serde::{Deserialize, Serialize};

use crate::config::AuditConfig;
use crate::control::trail_writer::Trail;

/// One request's record. Borrows from the request where it can, so writing
/// it costs one serialisation and no copies; read back, it owns its text.
#[derive(Debug, Serialize, Deserialize, PartialEq, Clone)]
pub struct RequestRecord<'a> {
    pub time: String,
    pub request_id: Cow<'a, str>,
    pub user: Option<Cow<'a, str>>,
    pub device: Option<Cow<'a, str>>,
    pub client: Option<IpAddr>,
    pub host: Cow<'a, str>,
    pub method: Cow<'a, str>,
    pub path: Cow<'a, str>,
    pub decision: Cow<'a, str>,
    pub reason: Option<Cow<'a, str>>,
    pub rule: Option<Cow<'a, str>>,
    pub profile: Option<Cow<'a, str>>,
    pub status: u16,
    pub upstream_status: Option<u16>,
    pub latency_ms: f64,
}

/// Where the trail goes and how it is kept.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// The active file; rotated files sit beside it.
    pub path: PathBuf,
    /// Written into every line (`replica`).
    pub replica: String,
    pub keep: AuditConfig,
}

pub struct AuditLog {
    queue: Arc<ArrayQueue<String>>,
    closed: Arc<AtomicBool>,
    /// False while writing fails (disk full, file gone): the gateway then
    /// refuses requests it could not record.
    healthy: Arc<AtomicBool>,
    /// Set by a reopen signal; the writer reopens the path at its next pass.
    reopen: Arc<AtomicBool>,
    writer: Mutex<Option<JoinHandle<()>>>,
    path: PathBuf,
    public_key: ed25519_dalek::VerifyingKey,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log `{0}`: {1}")]
    Io(String, std::io::Error),
    #[error(transparent)]
    Key(#[from] crate::control::chain::ChainError),
}

/// Lines buffered between writer passes (about ten seconds at 25k req/s).
const QUEUE: usize = 1 << 18;
/// How often the writer drains the queue. The request path never wakes
/// the writer: a wake-up per request would cost a context switch each.
const DRAIN_EVERY: Duration = Duration::from_millis(10);

impl AuditLog {
    /// Opens (or continues) the trail at `settings.path`: the chain goes on
    /// from the last line written, across restarts and rotations.
    pub fn open(settings: AuditSettings) -> Result<AuditLog, AuditError> {
        let path = settings.path.clone();
        let shown = path.display().to_string();
        let (trail, written) = Trail::open(settings)?;
        let public_key = trail.public_key();
        let queue = Arc::new(ArrayQueue::new(QUEUE));
        let closed = Arc::new(AtomicBool::new(false));
        let healthy = Arc::new(AtomicBool::new(written));
        let reopen = Arc::new(AtomicBool::new(false));
        let (q, c, h, r) = (queue.clone(), closed.clone(), healthy.clone(), reopen.clone());
        let writer = std::thread::Builder::new()
            .name("sekisho-audit".into())
            .spawn(move || write_loop(trail, &q, &c, &h, &r))
            .map_err(|e| AuditError::Io(shown, e))?;
        Ok(AuditLog { queue, closed, healthy, reopen, writer: Mutex::new(Some(writer)), path, public_key })
    }

    /// Queues one record. When the queue is full (the disk stalls) the
    /// request waits for room rather than losing the line.
    pub fn record(&self, record: &RequestRecord<'_>) {
        let mut line = crate::control::audit_json::to_line(record);
        while !self.closed.load(Ordering::Acquire) {
            match self.queue.push(line) {
                Ok(()) => return,
                Err(back) => {
                    line = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    /// Whether the last write reached the file.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Asks the writer to close the file and open the path again (after an
    /// external tool such as logrotate renamed it). Returns at once.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }

    /// The key that signs digests and checkpoints, for auditors.
    pub fn public_key(&self) -> ed25519_dalek::VerifyingKey {
        self.public_key
    }

    /// The active file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops the writer after it wrote everything queued, and waits for it
    /// (and for any compression still running).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(w) = writer {
            let _ = w.join();
        }
    }
}

/// Reopens the trail on every SIGUSR1 (for logrotate's `postrotate`); SIGHUP
/// stays the rules reload. Runs until the runtime stops.
pub async fn reopen_on_signal(audit: Arc<AuditLog>) {
    let Ok(mut usr1) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) else {
        log::error!("cannot listen for SIGUSR1: the audit log will not reopen on signal");
        return;
    };
    while usr1.recv().await.is_some() {
        log::warn!("SIGUSR1: reopening the audit log {}", audit.path.display());
        audit.reopen();
    }
}

impl RequestRecord<'_> {
    pub fn into_owned(self) -> RequestRecord<'static> {
        let own = |c: Cow<'_, str>| Cow::Owned(c.into_owned());
        RequestRecord {
            time: self.time,
            request_id: own(self.request_id),
            user: self.user.map(own),
            device: self.device.map(own),
            client: self.client,
            host: own(self.host),
            method: own(self.method),
            path: own(self.path),
            decision: own(self.decision),
            reason: self.reason.map(own),
            rule: self.rule.map(own),
            profile: self.profile.map(own),
            status: self.status,
            upstream_status: self.upstream_status,
            latency_ms: self.latency_ms,
        }
    }
}

fn write_loop(
    mut trail: Trail,
    queue: &ArrayQueue<String>,
    closed: &AtomicBool,
    healthy: &AtomicBool,
    reopen: &AtomicBool,
) {
    loop {
        // Read the flag before draining so nothing queued before close is missed.
        let last = closed.load(Ordering::Acquire);
        let mut wrote = false;
        let mut ok = true;
        while let Some(line) = queue.pop() {
            wrote = true;
            ok &= trail.append(&line).is_ok();
            // A full file rotates between two lines, even within a burst.
            trail.rotate_if_full();
        }
        if wrote {
            ok &= trail.flush().is_ok();
            // Log only the transitions, not every failed pass.
            if healthy.swap(ok, Ordering::AcqRel) != ok {
                match ok {
                    true => log::warn!("audit log writable again"),
                    false => log::error!("audit log write failed: refusing requests until it recovers"),
                }
            }
        }
        // Rotation and reopening happen between batches, on this thread
        // only: every line lands in exactly one file.
        trail.housekeeping(reopen.swap(false, Ordering::AcqRel), last);
        if last {
            break;
        }
        std::thread::sleep(DRAIN_EVERY);
    }
    trail.finish();
}
