//! The audit writer thread's file work: sealing lines into the chain,
//! signed checkpoints, rotation by size and by day with a signed digest,
//! reopening after an external rename, gzip on a helper thread, and
//! retention. Only the audit writer thread (and `AuditLog::open` before it
//! starts) touches a `Trail`; it must never be reached from the request path.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use ed25519_dalek::SigningKey;
use sha2::{Digest as _, Sha256};

use crate::control::audit::{AuditError, AuditSettings};
use crate::control::chain::{self, Digest, DigestBody, Link, Meta, GENESIS};

pub struct Trail {
    settings: AuditSettings,
    key: SigningKey,
    out: BufWriter<File>,
    /// The inode written to, to tell whether the path was renamed away.
    ino: u64,
    /// The chain value of the last line written, and the next line's `seq`.
    head: Link,
    seq: u64,
    file: FileState,
    last_signature: Option<String>,
    last_checkpoint: Instant,
    since_checkpoint: u64,
    /// No rotation attempt before this (after a failed one).
    retry_after: Instant,
    helpers: Vec<JoinHandle<()>>,
}

/// What the active file holds so far, for its digest.
struct FileState {
    first_seq: u64,
    prev: Link,
    lines: u64,
    bytes: u64,
    day: NaiveDate,
}

impl Trail {
    /// Opens the trail; the flag says whether its first write (the header)
    /// reached the file. A trail that cannot be written still opens, so the
    /// gateway starts and refuses requests (fail closed) with its admin API up.
    pub fn open(settings: AuditSettings) -> Result<(Trail, bool), AuditError> {
        let path = settings.path.clone();
        let io = |e| AuditError::Io(path.display().to_string(), e);
        let dir = parent(&path);
        std::fs::create_dir_all(&dir).map_err(io)?;
        let key = chain::load_or_create_key(&settings.keep.signing_key)?;
        let newest = newest_digest(&dir, &stem(&path));
        let scanned = match std::fs::metadata(&path) {
            Ok(m) if m.len() > 0 => scan_existing(&path, newest.as_ref()).map_err(io)?,
            _ => None,
        };
        let (head, seq) = match (&scanned, &newest) {
            (Some(s), _) => (s.head, s.next_seq),
            (None, Some(d)) => (decode(&d.body.last_chain), d.body.last_seq + 1),
            (None, None) => (GENESIS, 0),
        };
        let out = OpenOptions::new().create(true).append(true).open(&path).map_err(io)?;
        let ino = out.metadata().map_err(io)?.ino();
        let file = match scanned {
            Some(s) => s.file,
            None => FileState::new(seq, head),
        };
        let mut trail = Trail {
            settings,
            key,
            out: BufWriter::with_capacity(256 << 10, out),
            ino,
            head,
            seq,
            file,
            last_signature: newest.map(|d| d.signature),
            last_checkpoint: Instant::now(),
            since_checkpoint: 0,
            retry_after: Instant::now(),
            helpers: Vec::new(),
        };
        let mut written = true;
        if trail.file.lines == 0 {
            written = trail.write_header().is_ok();
        }
        written &= trail.flush().is_ok();
        if !written {
            log::error!("audit log `{}` cannot be written: refusing requests until it can", path.display());
        }
        trail.spawn_maintenance(None);
        Ok((trail, written))
    }

    pub fn public_key(&self) -> ed25519_dalek::VerifyingKey {
        self.key.verifying_key()
    }

    /// Seals one serialised record into the chain and writes it.
    pub fn append(&mut self, object: &str) -> std::io::Result<()> {
        let (line, link) = chain::seal(&self.head, self.seq, &self.settings.replica, object);
        self.head = link;
        self.seq += 1;
        self.since_checkpoint += 1;
        self.file.add(line.as_bytes());
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    /// Between batches: a checkpoint when one is due, a reopen when asked,
    /// a rotation when the file is full or the day changed.
    pub fn housekeeping(&mut self, reopen: bool, closing: bool) {
        if closing {
            return;
        }
        let every = Duration::from_secs(u64::from(self.settings.keep.checkpoint_secs));
        if self.since_checkpoint > 0 && self.last_checkpoint.elapsed() >= every {
            let _ = self.checkpoint().and_then(|()| self.flush());
        }
        if reopen {
            if let Err(e) = self.reopen() {
                log::error!("audit log: reopening `{}` failed: {e}", self.settings.path.display());
            }
            return;
        }
        if Instant::now() < self.retry_after || !self.rotation_due() {
            return;
        }
        if let Err(e) = self.rotate() {
            log::error!("audit log: rotating `{}` failed, writing on: {e}", self.settings.path.display());
            self.retry_after = Instant::now() + Duration::from_secs(60);
        }
    }

    /// On close: a last signed checkpoint, fsync, and wait for the helpers.
    pub fn finish(mut self) {
        if self.since_checkpoint > 0 {
            let _ = self.checkpoint();
        }
        let _ = self.out.flush();
        let _ = self.out.get_ref().sync_all();
        for h in self.helpers.drain(..) {
            let _ = h.join();
        }
    }

    /// Rotates at once when the file reached `rotate_bytes`.
    pub fn rotate_if_full(&mut self) {
        if self.file.bytes >= self.settings.keep.rotate_bytes && Instant::now() >= self.retry_after {
            if let Err(e) = self.rotate() {
                log::error!("audit log: rotating `{}` failed, writing on: {e}", self.settings.path.display());
                self.retry_after = Instant::now() + Duration::from_secs(60);
            }
        }
    }

    fn rotation_due(&self) -> bool {
        let keep = &self.settings.keep;
        // A file holding only its header is not rotated for the date alone.
        self.file.bytes >= keep.rotate_bytes || (keep.rotate_daily && self.file.lines > 1 && today() != self.file.day)
    }

    fn write_header(&mut self) -> std::io::Result<()> {
        let header = chain::header(&now_text(), &self.head);
        self.append(&header)?;
        self.since_checkpoint = 0;
        Ok(())
    }

    fn checkpoint(&mut self) -> std::io::Result<()> {
        let line = chain::checkpoint(&self.key, &now_text(), &self.head);
        self.append(&line)?;
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// Seals the file (checkpoint, fsync), signs its digest, and writes it.
    /// The digest's content hash is read back from the file at this point,
    /// once, rather than kept up to date line by line: a second SHA-256
    /// pass over every line cost the request path's core about 3% of a
    /// denied request (bench/README.md), and what is signed is then what
    /// the disk holds. Tampering before the seal still shows: the digest
    /// names the chain value the writer holds, which a changed line breaks.
    fn seal_file(&mut self, file_name: String) -> std::io::Result<PathBuf> {
        self.checkpoint()?;
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        let f = &self.file;
        let body = DigestBody {
            format: chain::DIGEST_FORMAT.into(),
            file: file_name,
            replica: self.settings.replica.clone(),
            lines: f.lines,
            first_seq: f.first_seq,
            last_seq: self.seq - 1,
            prev_chain: crate::config::hex(&f.prev),
            last_chain: crate::config::hex(&self.head),
            content_sha256: written_sha256(self.out.get_ref())?,
            closed: now_text(),
            previous_signature: self.last_signature.clone(),
            public_key: chain::public_b64(&self.key.verifying_key()),
        };
        let digest = Digest::sign(&self.key, body);
        let dir = parent(&self.settings.path);
        let name = format!("{}-{}.digest.json", stem(&self.settings.path), stamp());
        let at = unique(&dir, &name);
        let text = serde_json::to_string_pretty(&digest).map_err(std::io::Error::other)?;
        crate::tls::write(&at, text.as_bytes(), 0o640).map_err(|e| std::io::Error::other(e.to_string()))?;
        self.last_signature = Some(digest.signature);
        Ok(at)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let path = self.settings.path.clone();
        let dir = parent(&path);
        let rotated = unique(&dir, &format!("{}-{}.jsonl", stem(&path), stamp()));
        let shown = file_name(&rotated);
        let compress = self.settings.keep.compress;
        let previous = self.last_signature.clone();
        let digest = self.seal_file(if compress { format!("{shown}.gz") } else { shown })?;
        if let Err(e) = std::fs::rename(&path, &rotated) {
            // The digest names a file that was never made: take it back.
            let _ = std::fs::remove_file(&digest);
            self.last_signature = previous;
            return Err(e);
        }
        self.start_new_file()?;
        self.spawn_maintenance(compress.then_some(rotated));
        Ok(())
    }

    /// After logrotate (`create` mode) renamed the file: seal what was
    /// written to the old name and start a new file at the path.
    fn reopen(&mut self) -> std::io::Result<()> {
        let path = self.settings.path.clone();
        if std::fs::metadata(&path).is_ok_and(|m| m.ino() == self.ino) {
            log::warn!("audit log: reopen asked, but `{}` was not renamed; writing on", path.display());
            return Ok(());
        }
        let fd = std::os::fd::AsRawFd::as_raw_fd(self.out.get_ref());
        let old = std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .map_or_else(|_| "(renamed)".to_owned(), |p| file_name(&p).trim_end_matches(" (deleted)").to_owned());
        self.seal_file(old)?;
        self.start_new_file()
    }

    fn start_new_file(&mut self) -> std::io::Result<()> {
        let path = self.settings.path.clone();
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        self.ino = file.metadata()?.ino();
        self.out = BufWriter::with_capacity(256 << 10, file);
        self.file = FileState::new(self.seq, self.head);
        self.write_header()?;
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        File::open(parent(&path)).and_then(|d| d.sync_all())
    }

    /// Compression of a rotated file and retention, off the writer's path.
    fn spawn_maintenance(&mut self, compress: Option<PathBuf>) {
        self.helpers.retain(|h| !h.is_finished());
        let dir = parent(&self.settings.path);
        let (stem, keep) = (stem(&self.settings.path), self.settings.keep.clone());
        let spawned = std::thread::Builder::new().name("sekisho-audit-gzip".into()).spawn(move || {
            yield_to_requests();
            // One helper at a time: two (rotations in quick succession) both
            // listing the leftovers would write the same `.gz.tmp` at once
            // and could rename a corrupt archive over a removed original.
            let _one = COMPRESSING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut files = if keep.compress { uncompressed(&dir, &stem) } else { Vec::new() };
            // Gone already: an earlier helper took it among its leftovers.
            if let Some(c) = compress.filter(|c| !files.contains(c) && c.exists()) {
                files.push(c);
            }
            for file in files {
                if let Err(e) = gzip(&file) {
                    log::error!("audit log: compressing `{}` failed, it stays uncompressed: {e}", file.display());
                }
            }
            if let Some(days) = keep.retention_days {
                prune(&dir, &stem, days);
            }
        });
        match spawned {
            Ok(h) => self.helpers.push(h),
            Err(e) => log::error!("audit log: no helper thread for compression: {e}"),
        }
    }
}

impl FileState {
    fn new(first_seq: u64, prev: Link) -> FileState {
        FileState { first_seq, prev, lines: 0, bytes: 0, day: today() }
    }

    fn add(&mut self, line: &[u8]) {
        self.bytes += line.len() as u64 + 1;
        self.lines += 1;
    }
}

/// SHA-256 of every byte of `written` (opened for appending only), read
/// again through `/proc/self/fd`: the path may already name another file
/// (logrotate renamed this one), the descriptor never does.
fn written_sha256(written: &File) -> std::io::Result<String> {
    let fd = std::os::fd::AsRawFd::as_raw_fd(written);
    let mut file = File::open(format!("/proc/self/fd/{fd}"))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 256 << 10];
    loop {
        match std::io::Read::read(&mut file, &mut buf)? {
            0 => break,
            n => hasher.update(&buf[..n]),
        }
    }
    Ok(crate::config::hex(&hasher.finalize()))
}

/// What an existing active file holds, read once at start.
struct Scanned {
    file: FileState,
    head: Link,
    next_seq: u64,
}

/// Reads the active file left by the last run, to continue its chain.
/// A file without a header (written before the chain existed) is moved
/// aside; a file whose digest was signed but which was not yet renamed
/// (a crash mid-rotation) is renamed now.
fn scan_existing(path: &Path, newest: Option<&Digest>) -> std::io::Result<Option<Scanned>> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut buf = Vec::new();
    let mut file: Option<FileState> = None;
    let mut hasher = Sha256::new();
    let (mut bytes, mut lines, mut torn) = (0u64, 0u64, false);
    let mut last: Option<(Link, u64)> = None;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        hasher.update(&buf);
        bytes += buf.len() as u64;
        lines += 1;
        torn = buf.last() != Some(&b'\n');
        let text = String::from_utf8_lossy(&buf);
        let Some(opened) = chain::open(text.trim_end_matches('\n')) else { continue };
        let Ok(meta) = serde_json::from_str::<Meta>(&opened.content) else { continue };
        let Some(seq) = meta.seq else { continue };
        if file.is_none() && lines == 1 && meta.sekisho_audit.as_deref() == Some("file") {
            let prev = meta.prev.as_deref().and_then(crate::config::decode_sha256).unwrap_or(GENESIS);
            let day = meta.time.as_deref().and_then(jst_date).unwrap_or_else(today);
            file = Some(FileState { first_seq: seq, prev, lines: 0, bytes: 0, day });
        }
        last = Some((opened.chain, seq));
    }
    let content = crate::config::hex(&hasher.clone().finalize());
    let dir = parent(path);
    if let Some(d) = newest.filter(|d| d.body.content_sha256 == content && !dir.join(&d.body.file).exists()) {
        let target = dir.join(d.body.file.trim_end_matches(".gz"));
        log::warn!("audit log: finishing an interrupted rotation: `{}` -> `{}`", path.display(), target.display());
        std::fs::rename(path, &target)?;
        return Ok(None);
    }
    let (Some(mut file), Some((head, seq))) = (file, last) else {
        let aside = dir.join(format!("{}.unchained-{}.jsonl", stem(path), stamp()));
        log::warn!("audit log: `{}` has no chain header; moved to `{}`", path.display(), aside.display());
        std::fs::rename(path, &aside)?;
        return Ok(None);
    };
    if torn {
        // A line cut by a crash: end it, so the next line starts clean. The
        // verifier reports the cut line.
        OpenOptions::new().append(true).open(path)?.write_all(b"\n")?;
        bytes += 1;
    }
    (file.lines, file.bytes) = (lines, bytes);
    Ok(Some(Scanned { file, head, next_seq: seq + 1 }))
}

/// The digest with the highest `last_seq` in `dir`.
fn newest_digest(dir: &Path, stem: &str) -> Option<Digest> {
    let prefix = format!("{stem}-");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(&prefix) && n.ends_with(".digest.json")
        })
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| serde_json::from_str::<Digest>(&t).ok())
        .max_by_key(|d| d.body.last_seq)
}

/// Rotated files of this trail left uncompressed (a stop during gzip).
fn uncompressed(dir: &Path, stem: &str) -> Vec<PathBuf> {
    let prefix = format!("{stem}-");
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let n = file_name(p);
            n.starts_with(&prefix) && n.ends_with(".jsonl")
        })
        .collect()
}

/// Lowers the calling thread to the lowest CPU priority (nice 19). A
/// rotation comes when the trail grows fastest, that is at peak load, and
/// its gzip (about 1.9 µs of CPU per audit line, bench/README.md) would
/// otherwise take its share of the cores from the workers then; at nice 19
/// it gets what they leave (Linux's nice is per thread). On failure the
/// helper runs at the normal priority.
fn yield_to_requests() {
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19) {
        log::warn!("audit log: the compression helper keeps the normal priority: {e}");
    }
}

/// Held by the compression helper for its whole pass.
static COMPRESSING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `file` to `file.gz` (written beside, fsynced, renamed), then removes `file`.
fn gzip(file: &Path) -> std::io::Result<()> {
    let gz = PathBuf::from(format!("{}.gz", file.display()));
    let tmp = PathBuf::from(format!("{}.gz.tmp", file.display()));
    let mut input = File::open(file)?;
    // The fastest level: on 100 MB of audit lines flate2's default level
    // took 2.87 s and wrote 13.2 MB, level 1 took 0.49 s and wrote 13.6 MB.
    // At the default level this helper cost more CPU per request than the
    // checks themselves (bench/README.md, "The audit trail's compression").
    let mut enc = flate2::write::GzEncoder::new(File::create(&tmp)?, flate2::Compression::fast());
    std::io::copy(&mut input, &mut enc)?;
    enc.finish()?.sync_all()?;
    std::fs::rename(&tmp, &gz)?;
    std::fs::remove_file(file)?;
    File::open(parent(file)).and_then(|d| d.sync_all())
}

/// Removes this trail's rotated files and digests older than `days`.
fn prune(dir: &Path, stem: &str, days: u32) {
    let prefix = format!("{stem}-");
    let Some(cutoff) = std::time::SystemTime::now().checked_sub(Duration::from_secs(u64::from(days) * 86_400)) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours =
            name.starts_with(&prefix) && [".jsonl.gz", ".jsonl", ".digest.json"].iter().any(|s| name.ends_with(s));
        let old = e.metadata().and_then(|m| m.modified()).is_ok_and(|t| t < cutoff);
        if ours && old {
            match std::fs::remove_file(e.path()) {
                Ok(()) => log::warn!("audit log: removed `{name}` (older than retention_days = {days})"),
                Err(err) => log::error!("audit log: cannot remove `{name}`: {err}"),
            }
        }
    }
}

fn decode(hex: &str) -> Link {
    crate::config::decode_sha256(hex).unwrap_or(GENESIS)
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// The active file's name without its extension (`audit` for `audit.jsonl`).
pub fn stem(path: &Path) -> String {
    path.file_stem().map_or_else(|| "audit".to_owned(), |s| s.to_string_lossy().into_owned())
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// A name in `dir` that does not exist yet (`name`, else `name` with `-N`).
fn unique(dir: &Path, name: &str) -> PathBuf {
    let first = dir.join(name);
    if !first.exists() {
        return first;
    }
    let (base, ext) = name.split_once('.').unwrap_or((name, ""));
    (1..).map(|n| dir.join(format!("{base}-{n}.{ext}"))).find(|p| !p.exists()).unwrap_or(first)
}

/// UTC, sortable, to the millisecond.
fn stamp() -> String {
    Utc::now().format("%Y%m%dT%H%M%S%3fZ").to_string()
}

fn now_text() -> String {
    Utc::now().with_timezone(&chrono_tz::Asia::Tokyo).to_rfc3339()
}

/// Today in Asia/Tokyo: the day a municipality's records belong to.
fn today() -> NaiveDate {
    Utc::now().with_timezone(&chrono_tz::Asia::Tokyo).date_naive()
}

fn jst_date(rfc3339: &str) -> Option<NaiveDate> {
    chrono::DateTime::parse_from_rfc3339(rfc3339).ok().map(|t| t.with_timezone(&chrono_tz::Asia::Tokyo).date_naive())
}

#[cfg(test)]
mod tests {
    /// The compression helper's thread runs at nice 19, as the kernel
    /// reports it.
    #[test]
    fn the_compression_helper_yields_the_cpu_to_requests() {
        let nice = std::thread::spawn(|| {
            super::yield_to_requests();
            let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
            // Field 19 (nice), counted from field 3, the first after the
            // command name's closing parenthesis.
            let after = &stat[stat.rfind(')').unwrap() + 2..];
            after.split(' ').nth(16).unwrap().parse::<i32>().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(nice, 19);
    }
}
