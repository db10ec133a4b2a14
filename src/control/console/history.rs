//! The last hour of requests, for "today at a glance": the gateway's
//! counters sampled once a minute by a task on the admin side, so the
//! request path pays nothing for it (it only bumps the counters it always
//! did). Owns the samples and the arithmetic from samples to the last hour
//! by reason and by five minutes. Counts are this process's since its
//! start; it must never read the audit log.

use std::collections::VecDeque;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::metrics::Counts;

/// Samples kept: one a minute for a little over an hour.
const KEEP: usize = 62;
/// Bars in the chart: twelve of five minutes.
pub const BUCKETS: usize = 12;
const BUCKET_MINUTES: i64 = 5;

#[derive(Default)]
pub struct History {
    samples: Mutex<VecDeque<(DateTime<Utc>, Counts)>>,
}

/// Requests in (about) the last hour.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hour {
    /// Where the counting starts: an hour ago, or the gateway's start.
    pub since: Option<DateTime<Utc>>,
    pub allowed: u64,
    pub denied: u64,
    /// Reasons with at least one block, most first.
    pub by_reason: Vec<(&'static str, u64)>,
    /// Allowed and blocked per five minutes, oldest first.
    pub buckets: [(u64, u64); BUCKETS],
}

impl History {
    /// Keeps one sample of the counters.
    pub fn record(&self, at: DateTime<Utc>, counts: Counts) {
        if let Ok(mut samples) = self.samples.lock() {
            samples.push_back((at, counts));
            while samples.len() > KEEP {
                samples.pop_front();
            }
        }
    }

    /// The hour up to `now`, whose counters read `current`.
    pub fn last_hour(&self, now: DateTime<Utc>, current: &Counts) -> Hour {
        let samples = self.samples.lock().map(|s| s.clone()).unwrap_or_default();
        last_hour(&samples, now, current)
    }
}

/// Sums the growth between consecutive samples (and from the last one to
/// `current`) that ended within the hour before `now`.
fn last_hour(samples: &VecDeque<(DateTime<Utc>, Counts)>, now: DateTime<Utc>, current: &Counts) -> Hour {
    let mut hour = Hour::default();
    let mut reasons: Vec<(&'static str, u64)> = current.by_reason.iter().map(|(c, _)| (*c, 0)).collect();
    let points: Vec<(DateTime<Utc>, &Counts)> =
        samples.iter().map(|(t, c)| (*t, c)).chain(std::iter::once((now, current))).collect();
    for pair in points.windows(2) {
        let [(start, before), (end, after)] = pair else { continue };
        let age_minutes = (now - *end).num_minutes();
        if age_minutes >= BUCKET_MINUTES * BUCKETS as i64 {
            continue;
        }
        hour.since.get_or_insert(*start);
        let allowed = after.allowed.saturating_sub(before.allowed);
        let mut denied = 0;
        for (slot, ((_, a), (_, b))) in reasons.iter_mut().zip(after.by_reason.iter().zip(&before.by_reason)) {
            let grew = a.saturating_sub(*b);
            slot.1 += grew;
            denied += grew;
        }
        let bucket = BUCKETS - 1 - usize::try_from(age_minutes.max(0) / BUCKET_MINUTES).unwrap_or(0);
        if let Some(b) = hour.buckets.get_mut(bucket) {
            b.0 += allowed;
            b.1 += denied;
        }
        hour.allowed += allowed;
        hour.denied += denied;
    }
    reasons.retain(|(_, n)| *n > 0);
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    hour.by_reason = reasons;
    hour
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
