//! The request audit trail: one JSON line per request, allowed or denied,
//! appended by a writer thread so the request path only formats and pushes
//! onto a lock-free queue. The writer drains it every 10 ms and flushes each
//! batch; closing the log drains the queue first, so no line is lost on
//! shutdown. Values are JSON-escaped
//! by serde, so client text cannot forge a line. It must never receive a
//! token, key or My Number: callers pass only the fields below.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;

use serde::{Deserialize, Serialize};

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

pub struct AuditLog {
    queue: Arc<ArrayQueue<String>>,
    closed: Arc<AtomicBool>,
    /// False while writing fails (disk full, file gone): the gateway then
    /// refuses requests it could not record.
    healthy: Arc<AtomicBool>,
    writer: Mutex<Option<JoinHandle<()>>>,
    path: PathBuf,
}

/// Lines buffered between writer passes (about ten seconds at 25k req/s).
const QUEUE: usize = 1 << 18;
/// How often the writer drains the queue. The request path never wakes
/// the writer: a wake-up per request would cost a context switch each.
const DRAIN_EVERY: Duration = Duration::from_millis(10);

impl AuditLog {
    pub fn open(path: &Path) -> std::io::Result<AuditLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let queue = Arc::new(ArrayQueue::new(QUEUE));
        let closed = Arc::new(AtomicBool::new(false));
        let healthy = Arc::new(AtomicBool::new(true));
        let (q, c, h) = (queue.clone(), closed.clone(), healthy.clone());
        let writer =
            std::thread::Builder::new().name("sekisho-audit".into()).spawn(move || write_loop(file, &q, &c, &h))?;
        Ok(AuditLog { queue, closed, healthy, writer: Mutex::new(Some(writer)), path: path.to_owned() })
    }

    /// Queues one record. When the queue is full (the disk stalls) the
    /// request waits for room rather than losing the line.
    pub fn record(&self, record: &RequestRecord<'_>) {
        let Ok(mut line) = serde_json::to_string(record) else { return };
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

    /// Stops the writer after it wrote everything queued, and waits for it.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(w) = writer {
            let _ = w.join();
        }
    }

    /// The file the trail is written to (read by `audit_search`).
    pub fn path(&self) -> &Path {
        &self.path
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

fn write_loop(file: File, queue: &ArrayQueue<String>, closed: &AtomicBool, healthy: &AtomicBool) {
    let mut out = BufWriter::with_capacity(256 << 10, file);
    loop {
        // Read the flag before draining so nothing queued before close is missed.
        let last = closed.load(Ordering::Acquire);
        let mut wrote = false;
        let mut ok = true;
        while let Some(line) = queue.pop() {
            wrote = true;
            ok &= out.write_all(line.as_bytes()).and_then(|()| out.write_all(b"\n")).is_ok();
        }
        if wrote {
            ok &= out.flush().is_ok();
            // Log only the transitions, not every failed pass.
            if healthy.swap(ok, Ordering::AcqRel) != ok {
                match ok {
                    true => log::warn!("audit log writable again"),
                    false => log::error!("audit log write failed: refusing requests until it recovers"),
                }
            }
        }
        if last {
            break;
        }
        std::thread::sleep(DRAIN_EVERY);
    }
    let _ = out.flush();
    let _ = out.get_ref().sync_all();
}
