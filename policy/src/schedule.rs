//! Calendar rules in a profile's own time zone: weekly windows
//! (`mon-fri 08:30-17:15`, end exclusive, may cross midnight) and closed
//! date ranges (`12-29..01-03`). Parsing builds values that cannot be
//! invalid. It must never read the clock: callers pass local times.

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike, Weekday};
use serde::Deserialize;

/// A set of weekdays, bit 0 = Monday.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Days(u8);

impl Days {
    pub fn contains(self, day: Weekday) -> bool {
        self.0 & (1 << day.num_days_from_monday()) != 0
    }
}

/// One weekly window: on `days`, from `start` (minutes after midnight) up
/// to but excluding `end`. When `end <= start` the window runs past
/// midnight into the next day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Window {
    days: Days,
    start: u16,
    end: u16,
    text: WindowText,
}

/// The window as written, kept for messages without allocating per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WindowText([u8; 40], u8);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid window `{input}`: {why} (expected e.g. `mon-fri 08:30-17:15` or `daily 22:00-06:00`)")]
pub struct WindowError {
    input: String,
    why: &'static str,
}

impl Window {
    /// Is the local instant `t` inside this window? `end` may be 1440 (`24:00`).
    pub fn contains(&self, t: NaiveDateTime) -> bool {
        let minute = (t.hour() * 60 + t.minute()) as u16;
        let today = self.days.contains(t.weekday());
        if self.start < self.end {
            return today && self.start <= minute && minute < self.end;
        }
        // Crosses midnight: the evening part belongs to today, the early
        // morning part to the window that opened yesterday.
        let yesterday = self.days.contains(t.weekday().pred());
        (today && minute >= self.start) || (yesterday && minute < self.end)
    }

    /// Local opening instants on `date` (used to say when access opens next).
    pub fn opens_on(&self, date: NaiveDate) -> Option<NaiveDateTime> {
        if !self.days.contains(date.weekday()) {
            return None;
        }
        date.and_hms_opt(u32::from(self.start / 60), u32::from(self.start % 60), 0)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.text.0.get(..self.text.1 as usize).unwrap_or_default()).unwrap_or_default()
    }
}

impl FromStr for Window {
    type Err = WindowError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| WindowError { input: s.to_owned(), why };
        let text = s.trim();
        if text.len() > 40 {
            return Err(err("too long"));
        }
        let (days, times) = text.split_once(' ').ok_or_else(|| err("missing days or times"))?;
        let days = parse_days(days.trim())
            .ok_or_else(|| err("unknown day; use mon..sun, ranges `mon-fri`, lists `mon,wed` or `daily`"))?;
        let (start, end) = times.trim().split_once('-').ok_or_else(|| err("times must be `HH:MM-HH:MM`"))?;
        let start = parse_minute(start, false).ok_or_else(|| err("bad start time"))?;
        let end = parse_minute(end, true).ok_or_else(|| err("bad end time"))?;
        if start == end {
            return Err(err("start and end are equal; use `00:00-24:00` for a whole day"));
        }
        let mut buf = [0u8; 40];
        buf.get_mut(..text.len()).ok_or_else(|| err("too long"))?.copy_from_slice(text.as_bytes());
        Ok(Window { days, start, end, text: WindowText(buf, text.len() as u8) })
    }
}

impl TryFrom<String> for Window {
    type Error = WindowError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn parse_days(s: &str) -> Option<Days> {
    if s.eq_ignore_ascii_case("daily") {
        return Some(Days(0x7f));
    }
    let mut bits = 0u8;
    for part in s.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b) = (parse_weekday(a)?, parse_weekday(b)?);
        let (a, b) = (a.num_days_from_monday(), b.num_days_from_monday());
        if a > b {
            return None;
        }
        for d in a..=b {
            bits |= 1 << d;
        }
    }
    Some(Days(bits))
}

fn parse_weekday(s: &str) -> Option<Weekday> {
    const NAMES: [(&str, Weekday); 7] = [
        ("mon", Weekday::Mon),
        ("tue", Weekday::Tue),
        ("wed", Weekday::Wed),
        ("thu", Weekday::Thu),
        ("fri", Weekday::Fri),
        ("sat", Weekday::Sat),
        ("sun", Weekday::Sun),
    ];
    NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(s.trim())).map(|(_, d)| *d)
}

/// `HH:MM` to minutes after midnight; `24:00` only as an end.
fn parse_minute(s: &str, is_end: bool) -> Option<u16> {
    let (h, m) = s.trim().split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) if is_end => Some(1440),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

/// A yearly closed period such as the year end `12-29..01-03` (inclusive,
/// may wrap into the next year) or a single day `05-01`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ClosedDates {
    from: (u32, u32),
    to: (u32, u32),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid closed dates `{0}`: expected `MM-DD` or `MM-DD..MM-DD` such as `12-29..01-03`")]
pub struct ClosedDatesError(String);

impl ClosedDates {
    pub fn contains(&self, date: NaiveDate) -> bool {
        let d = (date.month(), date.day());
        if self.from <= self.to {
            self.from <= d && d <= self.to
        } else {
            d >= self.from || d <= self.to
        }
    }
}

impl fmt::Display for ClosedDates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}-{:02}..{:02}-{:02}", self.from.0, self.from.1, self.to.0, self.to.1)
    }
}

impl TryFrom<String> for ClosedDates {
    type Error = ClosedDatesError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        let (a, b) = s.split_once("..").unwrap_or((&s, &s));
        match (parse_month_day(a), parse_month_day(b)) {
            (Some(from), Some(to)) => Ok(ClosedDates { from, to }),
            _ => Err(ClosedDatesError(s)),
        }
    }
}

fn parse_month_day(s: &str) -> Option<(u32, u32)> {
    let (m, d) = s.trim().split_once('-')?;
    let (m, d): (u32, u32) = (m.parse().ok()?, d.parse().ok()?);
    // 2000 is a leap year, so 02-29 is accepted.
    NaiveDate::from_ymd_opt(2000, m, d).map(|_| (m, d))
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
