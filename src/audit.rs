//! The request audit trail: one JSON line per request, allowed or denied,
//! appended by a writer thread so the request path only formats and queues.
//! Lines are batched and flushed after each batch; closing the log drains
//! the queue first, so no line is lost on shutdown. Values are JSON-escaped
//! by serde, so client text cannot forge a line. It must never receive a
//! token, key or My Number: callers pass only the fields below.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

/// One request's record. Borrowed so building it allocates nothing extra.
#[derive(Debug, Serialize, Deserialize, PartialEq, Clone)]
pub struct RequestRecord {
    pub time: String,
    pub request_id: String,
    pub user: Option<String>,
    pub device: Option<String>,
    pub client: Option<String>,
    pub host: String,
    pub method: String,
    pub path: String,
    pub decision: String,
    pub reason: Option<String>,
    pub rule: Option<String>,
    pub profile: Option<String>,
    pub status: u16,
    pub upstream_status: Option<u16>,
    pub latency_ms: f64,
}

pub struct AuditLog {
    tx: Mutex<Option<SyncSender<String>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    path: PathBuf,
}

/// Lines queued before `record` waits for the writer.
const QUEUE: usize = 65_536;

impl AuditLog {
    pub fn open(path: &Path) -> std::io::Result<AuditLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let (tx, rx) = sync_channel(QUEUE);
        let writer = std::thread::Builder::new().name("sekisho-audit".into()).spawn(move || write_loop(file, rx))?;
        Ok(AuditLog { tx: Mutex::new(Some(tx)), writer: Mutex::new(Some(writer)), path: path.to_owned() })
    }

    /// Queues one record. Serialising cannot fail for this struct.
    pub fn record(&self, record: &RequestRecord) {
        let Ok(line) = serde_json::to_string(record) else { return };
        let tx = self.tx.lock().ok().and_then(|g| g.clone());
        if let Some(tx) = tx {
            let _ = tx.send(line);
        }
    }

    /// Stops accepting lines, writes everything queued, and waits for it.
    pub fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(w) = writer {
            let _ = w.join();
        }
    }

    /// The newest records (up to `limit`) matching the filters, newest first,
    /// from the last 16 MiB of the log.
    pub fn query(&self, user: Option<&str>, reason: Option<&str>, limit: usize) -> std::io::Result<Vec<RequestRecord>> {
        let mut file = File::open(&self.path)?;
        let len = file.metadata()?.len();
        let start = len.saturating_sub(16 << 20);
        file.seek(SeekFrom::Start(start))?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        let lines = text.lines().skip(usize::from(start > 0));
        let mut found: Vec<RequestRecord> = lines
            .filter_map(|l| serde_json::from_str::<RequestRecord>(l).ok())
            .filter(|r| user.is_none_or(|u| r.user.as_deref() == Some(u)))
            .filter(|r| reason.is_none_or(|x| r.reason.as_deref() == Some(x)))
            .collect();
        found.reverse();
        found.truncate(limit);
        Ok(found)
    }
}

fn write_loop(file: File, rx: Receiver<String>) {
    let mut out = BufWriter::with_capacity(256 << 10, file);
    while let Ok(first) = rx.recv() {
        let mut batch = std::iter::once(first).chain(rx.try_iter().take(4096));
        let ok = batch.try_for_each(|line| out.write_all(line.as_bytes()).and_then(|()| out.write_all(b"\n")));
        if ok.and_then(|()| out.flush()).is_err() {
            log::error!("audit log write failed; lines may be missing");
        }
    }
    let _ = out.flush();
    let _ = out.get_ref().sync_all();
}
