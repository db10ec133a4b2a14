//! Finding request decisions in the audit log: by person, device, reason,
//! profile, decision, request id and time, newest first, a page at a time.
//! The log is read backwards from its end in blocks, so "the last hour" or
//! "yesterday" costs what lies after it, not the whole file; a search stops
//! at its scan limit and says so. Read only, off the request path (the
//! admin side runs it on a blocking thread); it must never write or lock
//! the log.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

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
/// `max_scan` bytes from the end of the log at `path`.
pub fn search(path: &Path, filter: &RequestFilter, skip: usize, limit: usize, max_scan: u64) -> std::io::Result<Found> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let stop_before = filter.since.map(|t| t - Duration::minutes(SLACK_MINUTES));
    let mut found = Found::default();
    let mut skipped = 0;
    let mut end = len;
    // The start of the line that the previous block began in the middle of.
    let mut carry: Vec<u8> = Vec::new();
    while end > 0 {
        if len - end >= max_scan {
            found.cut_short = true;
            break;
        }
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
            let Ok(record) = serde_json::from_slice::<RequestRecord<'_>>(line) else { continue };
            if let (Some(stop), Ok(t)) = (stop_before, DateTime::parse_from_rfc3339(&record.time)) {
                if t < stop {
                    return Ok(found);
                }
            }
            if !filter.matches(&record) {
                continue;
            }
            if skipped < skip {
                skipped += 1;
            } else if found.records.len() < limit {
                found.records.push(record.into_owned());
            } else {
                found.more = true;
                return Ok(found);
            }
        }
        end = start;
    }
    Ok(found)
}

#[cfg(test)]
#[path = "audit_search_tests.rs"]
mod tests;
