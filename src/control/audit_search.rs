//! Finding request decisions in the audit trail: by person, device,
//! reason, profile, decision, request id and time, newest first, a page at
//! a time. The active log is read backwards from its end in blocks, then
//! the files it was rotated into, newest first (a gzip file from its start,
//! keeping only the newest matches it may need), so "the last hour" or
//! "yesterday" costs what lies after it, not the whole trail; a search
//! stops at its scan limit and says so. Read only, off the request path
//! (the admin side runs it on a blocking thread); it must never write or
//! lock a trail file.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, FixedOffset};

use crate::control::audit::RequestRecord;

/// Which request records to find. Every field given must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestFilter {
    pub user: Option<String>,
    pub device: Option<String>,
    pub reason: Option<String>,
    pub profile: Option<String>,
    pub decision: Option<Outcome>,
    /// The id a block page shows (`Sekisho-Request-Id`).
    pub request_id: Option<String>,
    /// From this instant, inclusive.
    pub since: Option<DateTime<FixedOffset>>,
    /// Until this instant, exclusive.
    pub until: Option<DateTime<FixedOffset>>,
}

/// What became of a request, as its audit line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Allow,
    /// Refused by a rule (the engine's denial).
    Deny,
    /// Refused by the gateway itself (bad request, rate limit, upstream down).
    Error,
    /// Allowed, then cut by a later change (suspension, stop).
    Cut,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [Outcome::Allow, Outcome::Deny, Outcome::Error, Outcome::Cut];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Error => "error",
            Outcome::Cut => "cut",
        }
    }
}

/// One page of matches, newest first.
#[derive(Debug, Clone, Default)]
pub struct Found {
    pub records: Vec<RequestRecord<'static>>,
    /// More matches lie beyond this page.
    pub more: bool,
    /// The scan stopped at its limit before the start of the log (or of
    /// `since`): older matches may exist.
    pub cut_short: bool,
}

impl RequestFilter {
    pub fn matches(&self, r: &RequestRecord<'_>) -> bool {
        let eq = |want: &Option<String>, got: Option<&str>| want.as_deref().is_none_or(|w| got == Some(w));
        let time = DateTime::parse_from_rfc3339(&r.time).ok();
        eq(&self.user, r.user.as_deref())
            && eq(&self.device, r.device.as_deref())
            && eq(&self.reason, r.reason.as_deref())
            && eq(&self.profile, r.profile.as_deref())
            && self.decision.is_none_or(|d| d.as_str() == r.decision)
            && eq(&self.request_id, Some(&r.request_id))
            && self.since.is_none_or(|t| time.is_some_and(|x| x >= t))
            && self.until.is_none_or(|t| time.is_some_and(|x| x < t))
    }
}

/// Bytes read per step backwards.
const BLOCK: u64 = 1 << 20;
/// Lines are written in the order requests finish, a little out of time
/// order; reading goes this far past `since` before it stops.
const SLACK_MINUTES: i64 = 2;

/// Skips `skip` matches, then returns up to `limit`, reading at most
/// `max_scan` bytes: the active log at `active` from its end, then the
/// files it was rotated into (plain or gzip), newest first.
pub fn search(
    active: &Path,
    filter: &RequestFilter,
    skip: usize,
    limit: usize,
    max_scan: u64,
) -> std::io::Result<Found> {
    let mut scan = Scan {
        filter,
        stop_before: filter.since.map(|t| t - Duration::minutes(SLACK_MINUTES)),
        skip,
        skipped: 0,
        limit,
        scanned: 0,
        max_scan,
        found: Found::default(),
    };
    for file in newest_first(active)? {
        let gzip = file.extension().is_some_and(|x| x == "gz");
        let older_too = if gzip { scan.forwards(&file)? } else { scan.backwards(&file)? };
        if !older_too {
            break;
        }
    }
    Ok(scan.found)
}

/// The trail's files, newest first: the active one, then the rotated ones
/// by when they were closed (the stamp in their name, else their mtime).
fn newest_first(active: &Path) -> std::io::Result<Vec<PathBuf>> {
    let stem = crate::control::trail_writer::stem(active);
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = crate::control::trail::discover(active)?
        .into_iter()
        .filter(|p| *p != active && !p.to_string_lossy().ends_with(".digest.json"))
        .filter_map(|p| Some((closed_at(&p, &stem)?, p)))
        .collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    Ok(std::iter::once(active.to_owned()).chain(files.into_iter().map(|(_, p)| p)).collect())
}

/// `audit-20261201T150000123Z.jsonl[.gz]` was closed at that instant (UTC);
/// another name (logrotate's `audit.jsonl.1`) at its last write.
fn closed_at(path: &Path, stem: &str) -> Option<std::time::SystemTime> {
    let stamp = path.file_name()?.to_str()?.strip_prefix(stem)?.strip_prefix('-')?.get(..19);
    match stamp.and_then(|s| chrono::NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%S%3fZ").ok()) {
        Some(t) => Some(t.and_utc().into()),
        None => path.metadata().ok()?.modified().ok(),
    }
}

/// One search across files.
struct Scan<'a> {
    filter: &'a RequestFilter,
    stop_before: Option<DateTime<FixedOffset>>,
    skip: usize,
    skipped: usize,
    limit: usize,
    scanned: u64,
    max_scan: u64,
    found: Found,
}

/// Whether to read on after a line.
#[derive(PartialEq, Eq)]
enum Step {
    On,
    Done,
}

impl Scan<'_> {
    /// Reads a plain file from its end; `true` when older files may still hold matches.
    fn backwards(&mut self, path: &Path) -> std::io::Result<bool> {
        let Ok(mut file) = File::open(path) else { return Ok(true) };
        let len = file.metadata()?.len();
        let mut end = len;
        // The start of the line that the previous block began in the middle of.
        let mut carry: Vec<u8> = Vec::new();
        while end > 0 {
            let start = end.saturating_sub(BLOCK);
            let mut block = vec![0; usize::try_from(end - start).unwrap_or(0)];
            file.seek(SeekFrom::Start(start))?;
            file.read_exact(&mut block)?;
            block.extend_from_slice(&carry);
            // The first line of a block may be partial unless it starts the file.
            let first_complete =
                if start == 0 { 0 } else { block.iter().position(|b| *b == b'\n').map_or(block.len(), |i| i + 1) };
            carry = block.get(..first_complete).unwrap_or_default().to_vec();
            let lines = block.get(first_complete..).unwrap_or_default();
            for line in lines.split(|b| *b == b'\n').rev().filter(|l| !l.is_empty()) {
                if self.budget(line.len()) == Step::Done || self.offer(line) == Step::Done {
                    return Ok(false);
                }
            }
            end = start;
        }
        Ok(true)
    }

    /// Reads a gzip file from its start (it cannot be read backwards),
    /// keeping only the newest matches it could still need.
    fn forwards(&mut self, path: &Path) -> std::io::Result<bool> {
        let need = self.skip.saturating_sub(self.skipped) + self.limit.saturating_sub(self.found.records.len()) + 1;
        let mut newest: VecDeque<RequestRecord<'static>> = VecDeque::new();
        let mut reached_since = false;
        for line in crate::control::trail::lines(path)? {
            let line = line?;
            if self.budget(line.len()) == Step::Done {
                // What was kept is not this file's newest: none of it counts.
                return Ok(false);
            }
            let Ok(record) = serde_json::from_str::<RequestRecord<'_>>(&line) else { continue };
            if self.before_since(&record) {
                reached_since = true;
            } else if self.filter.matches(&record) {
                newest.push_back(record.into_owned());
                if newest.len() > need {
                    newest.pop_front();
                }
            }
        }
        for record in newest.into_iter().rev() {
            if self.take(record) == Step::Done {
                return Ok(false);
            }
        }
        Ok(!reached_since)
    }

    /// Counts bytes read; past the limit the search is cut short.
    fn budget(&mut self, bytes: usize) -> Step {
        self.scanned += u64::try_from(bytes).unwrap_or(u64::MAX).saturating_add(1);
        if self.scanned > self.max_scan {
            self.found.cut_short = true;
            return Step::Done;
        }
        Step::On
    }

    /// One line, newest first.
    fn offer(&mut self, line: &[u8]) -> Step {
        let Ok(record) = serde_json::from_slice::<RequestRecord<'_>>(line) else { return Step::On };
        if self.before_since(&record) {
            return Step::Done;
        }
        if !self.filter.matches(&record) {
            return Step::On;
        }
        self.take(record.into_owned())
    }

    fn before_since(&self, record: &RequestRecord<'_>) -> bool {
        let time = DateTime::parse_from_rfc3339(&record.time);
        matches!((self.stop_before, time), (Some(stop), Ok(t)) if t < stop)
    }

    /// A match, newest first: skipped, kept, or the sign there are more.
    fn take(&mut self, record: RequestRecord<'static>) -> Step {
        if self.skipped < self.skip {
            self.skipped += 1;
        } else if self.found.records.len() < self.limit {
            self.found.records.push(record);
        } else {
            self.found.more = true;
            return Step::Done;
        }
        Step::On
    }
}

#[cfg(test)]
#[path = "audit_search_tests.rs"]
mod tests;
