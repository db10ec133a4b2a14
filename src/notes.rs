//! Log lines for events that leave no audit line (a connection refused or
//! cut before a request was read), at most one per [`NOTE_EVERY`] per kind
//! of event, with the count since the last. A flood cannot fill the log,
//! and an operator still learns that the gateway turned people away.
//! Lock-free: counted with atomics, only when such an event happens.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// How often, at most, one kind of event is logged.
pub const NOTE_EVERY: Duration = Duration::from_secs(60);

/// One kind of event: how many since the last note, and when the next may be.
pub struct Notes {
    since_note: AtomicU64,
    /// Milliseconds after `base`; 0 lets the first event be logged at once.
    next_note_ms: AtomicU64,
    base: Instant,
}

impl Default for Notes {
    fn default() -> Notes {
        Notes { since_note: AtomicU64::new(0), next_note_ms: AtomicU64::new(0), base: Instant::now() }
    }
}

impl Notes {
    /// Counts one event at `now` and, when a note is due, logs `line(count
    /// since the last note)` as a warning.
    pub fn note(&self, now: Instant, line: impl FnOnce(u64) -> String) {
        if let Some(n) = self.due(now) {
            log::warn!("{}", line(n));
        }
    }

    /// Counts one event at `now`; the count to log, if a note is due.
    fn due(&self, now: Instant) -> Option<u64> {
        self.since_note.fetch_add(1, Relaxed);
        let now_ms = u64::try_from(now.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX);
        let next = self.next_note_ms.load(Relaxed);
        let later = now_ms.saturating_add(u64::try_from(NOTE_EVERY.as_millis()).unwrap_or(u64::MAX));
        // One worker of those seeing events at once wins the note.
        if now_ms < next || self.next_note_ms.compare_exchange(next, later.max(1), Relaxed, Relaxed).is_err() {
            return None;
        }
        Some(self.since_note.swap(0, Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first event is told at once, later ones at most once per
    /// [`NOTE_EVERY`] with the count since the last note.
    #[test]
    fn events_are_noted_at_most_once_a_minute_with_their_count() {
        let notes = Notes::default();
        let at = |secs: u64| notes.base + Duration::from_secs(secs);
        let noted: Vec<_> = [0, 1, 2, 59, 60, 61, 200].iter().map(|s| (*s, notes.due(at(*s)))).collect();
        assert_eq!(noted, [(0, Some(1)), (1, None), (2, None), (59, None), (60, Some(4)), (61, None), (200, Some(2))]);
    }
}
