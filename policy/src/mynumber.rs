//! Detection of 個人番号 (My Number, the 12-digit Individual Number) in a
//! byte stream, for rules that forbid specific personal information in a
//! SaaS (Abiko 5.(2)). A streaming scanner with constant memory: bytes go in
//! chunk by chunk, split anywhere (even inside a UTF-8 character). It must
//! never keep or report the number itself, only that one was seen.
//!
//! What counts: a run of exactly twelve digits (ASCII or full-width), with
//! at most one separator (hyphen, space, `+`, full-width or typographic
//! dashes, ideographic space) between two digits, not adjacent to further
//! digits, whose twelfth digit is the check digit of the first eleven as
//! defined by the ministerial ordinance (行政手続における特定の個人を識別する
//! ための番号の利用等に関する法律施行令 / 総務省令 第5条). Longer digit runs are
//! other identifiers and are not flagged; this keeps phone numbers, amounts
//! and timestamps from being refused.

/// Streaming detector. Feed chunks, then call [`Scanner::finish`].
#[derive(Debug, Clone, Default)]
pub struct Scanner {
    digits: [u8; 12],
    count: u8,
    after_separator: bool,
    /// An unfinished multi-byte UTF-8 character carried to the next chunk.
    partial: [u8; 4],
    partial_len: u8,
    found: bool,
}

/// What one character is to the scanner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Digit(u8),
    Separator,
    Other,
}

impl Scanner {
    pub fn new() -> Scanner {
        Scanner::default()
    }

    /// Scans the next chunk; returns true once a number has been seen.
    pub fn feed(&mut self, chunk: &[u8]) -> bool {
        for &b in chunk {
            if self.found {
                break;
            }
            self.byte(b);
        }
        self.found
    }

    /// Ends the stream (a number right at the end counts); returns the verdict.
    pub fn finish(&mut self) -> bool {
        if self.partial_len > 0 {
            self.partial_len = 0;
            self.class(Class::Other);
        }
        self.end_run();
        self.found
    }

    pub fn found(&self) -> bool {
        self.found
    }

    fn byte(&mut self, b: u8) {
        if self.partial_len == 0 {
            match b {
                b'0'..=b'9' => return self.class(Class::Digit(b - b'0')),
                b'-' | b' ' | b'+' => return self.class(Class::Separator),
                0x00..=0x7f => return self.class(Class::Other),
                0xc0..=0xf7 => {
                    self.partial[0] = b;
                    self.partial_len = 1;
                    return;
                }
                _ => return self.class(Class::Other),
            }
        }
        if b & 0xc0 != 0x80 {
            // A broken sequence: count it as one other character, then
            // process this byte afresh.
            self.partial_len = 0;
            self.class(Class::Other);
            return self.byte(b);
        }
        let len = self.partial_len as usize;
        if let Some(slot) = self.partial.get_mut(len) {
            *slot = b;
        }
        self.partial_len += 1;
        let need = match self.partial[0] {
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            _ => 4,
        };
        if self.partial_len as usize == need {
            let class = classify(&self.partial[..need]);
            self.partial_len = 0;
            self.class(class);
        }
    }

    fn class(&mut self, c: Class) {
        match c {
            Class::Digit(d) => {
                if let Some(slot) = self.digits.get_mut(self.count as usize) {
                    *slot = d;
                }
                self.count = self.count.saturating_add(1).min(13);
                self.after_separator = false;
            }
            Class::Separator if self.count > 0 && !self.after_separator => self.after_separator = true,
            Class::Separator | Class::Other => self.end_run(),
        }
    }

    fn end_run(&mut self) {
        if self.count == 12 && check_digit_valid(&self.digits) {
            self.found = true;
        }
        self.count = 0;
        self.after_separator = false;
    }
}

/// A complete multi-byte UTF-8 character.
fn classify(bytes: &[u8]) -> Class {
    match bytes {
        // U+FF10..U+FF19 full-width digits
        [0xef, 0xbc, d @ 0x90..=0x99] => Class::Digit(d - 0x90),
        // U+FF0D full-width hyphen-minus, U+3000 ideographic space,
        // U+2010..U+2015 dashes, U+2212 minus sign, U+30FC prolonged sound mark
        [0xef, 0xbc, 0x8d]
        | [0xe3, 0x80, 0x80]
        | [0xe2, 0x80, 0x90..=0x95]
        | [0xe2, 0x88, 0x92]
        | [0xe3, 0x83, 0xbc] => Class::Separator,
        _ => Class::Other,
    }
}

/// The check digit rule: with P(n) the n-th digit counted from the right of
/// the first eleven and Q(n) = n+1 for n <= 6, n-5 for n >= 7, the check
/// digit is 0 when sum(P*Q) mod 11 <= 1, else 11 - that remainder.
pub fn check_digit_valid(digits: &[u8; 12]) -> bool {
    let sum: u32 = (1..=11u32)
        .map(|n| {
            let p = u32::from(digits[11 - n as usize]);
            let q = if n <= 6 { n + 1 } else { n - 5 };
            p * q
        })
        .sum();
    let remainder = sum % 11;
    let check = if remainder <= 1 { 0 } else { 11 - remainder };
    u32::from(digits[11]) == check
}

#[cfg(test)]
#[path = "mynumber_tests.rs"]
mod tests;
