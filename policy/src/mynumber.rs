//! Detection of 個人番号 (My Number, the 12-digit Individual Number) in a
//! request body, for rules that forbid specific personal information in a
//! SaaS (Abiko 5.(2)). A streaming scanner with constant memory: bytes go
//! in chunk by chunk, split anywhere. It must never keep or report the
//! number itself, only how confident it is that one was seen.
//!
//! What it reads: the body as the SaaS would understand it. Before looking
//! for digits it decodes, in one pass and whatever the content type says,
//! percent-encoding (`%31`, `%EF%BC%91`), backslash escapes (JSON's
//! `\u0031`, surrogate pairs, `\"`), HTML numeric character references
//! (`&#49;`, `&#xFF11;`) and UTF-8; every Unicode decimal digit counts
//! (ASCII, full-width, Arabic-Indic, Devanagari, mathematical, ...).
//!
//! What counts (the pattern of Microsoft Purview's "Japan My Number -
//! Personal"): twelve digits, as three groups of four with an optional
//! separator after the fourth and the eighth (Purview's space, dot and
//! hyphen; a form's `+`; and the Japanese ones: ideographic space,
//! full-width hyphen and full stop, dashes, minus, 長音符, 中黒), not
//! adjacent to further digits, whose twelfth digit is the check digit of the
//! first eleven (総務省令 第5条).
//!
//! Confidence, after Purview: **high** when a keyword (個人番号,
//! マイナンバー, my number, ...) or one of the profile's kintone field codes
//! is within 300 characters before or after the number; **low** on the
//! check digit alone. At low confidence only, values that are plainly
//! something else are not numbers: a valid `YYYYMMDDhhmm` time stamp written
//! as twelve digits, an E.164 telephone number (`+` right before), an
//! identifier with a prefix (`ORD-`, `INV`, `No.`, `_`, `#`, `/`) and an
//! amount (`¥`, `$` before or `円` after).

use std::sync::Arc;

use aho_corasick::automaton::Automaton;
use aho_corasick::dfa::DFA;
use aho_corasick::{Anchored, StartKind};

/// Characters within which a keyword raises a number to high confidence.
pub const PROXIMITY: u64 = 300;

/// The most body bytes a verdict on one number can still depend on after
/// its bytes were read: 300 characters of context plus the longest
/// keyword, at 12 bytes per character (a percent-encoded or escaped
/// surrogate pair). An adapter that streams a body on must hold back at
/// least this many bytes so that a number is refused before it is sent.
pub const DECISION_BYTES: usize = 8192;

/// Keywords that say a number is a 個人番号 (this project's list; ASCII
/// ones match in any case).
pub const KEYWORDS: [&str; 18] = [
    "個人番号",
    "マイナンバー",
    "ﾏｲﾅﾝﾊﾞｰ",
    "マイナ番号",
    "共通番号",
    "通知カード",
    "社会保障・税番号",
    "マイナポータル",
    "my number",
    "mynumber",
    "my_number",
    "my-number",
    "individual number",
    "individual_number",
    "individualnumber",
    "kojin bango",
    "kojin_bango",
    "kojinbango",
];

/// How sure the scanner is that a body carries a 個人番号.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Confidence {
    /// The check digit holds, with no keyword or field code near.
    Low,
    /// The check digit holds and a keyword or field code is within 300 characters.
    High,
}

/// The keyword matcher of one profile: the built-in keywords plus its
/// kintone field codes (as a JSON key or multipart name `"CODE"`, or a
/// form field `&CODE=`; the body is read as if it began with `&`). Built
/// once, when the rules are parsed.
pub struct Keywords {
    dfa: DFA,
    start: aho_corasick::automaton::StateID,
    /// Per pattern: its length in characters.
    patterns: Vec<u64>,
    /// The longest pattern, in characters.
    longest: u64,
    fields: Vec<String>,
}

impl Keywords {
    pub fn new(fields: &[String]) -> Result<Keywords, String> {
        Keywords::build(fields, |f| vec![format!("\"{f}\""), format!("&{f}=")])
    }

    /// For a request target, where a field code may stand bare (kintone's
    /// query language: `CODE = "…"`, `CODE in (…)`): any occurrence counts.
    pub fn for_target(fields: &[String]) -> Result<Keywords, String> {
        Keywords::build(fields, |f| vec![f.to_owned()])
    }

    fn build(fields: &[String], forms: impl Fn(&str) -> Vec<String>) -> Result<Keywords, String> {
        let mut texts: Vec<String> = KEYWORDS.iter().map(|k| (*k).to_owned()).collect();
        for f in fields {
            if f.is_empty() || f.contains(['"', '=', '&']) {
                return Err(format!("field code `{f}` must be non-empty without `\"`, `=` or `&`"));
            }
            texts.extend(forms(f));
        }
        let dfa = DFA::builder()
            .ascii_case_insensitive(true)
            .start_kind(StartKind::Unanchored)
            .build(&texts)
            .map_err(|e| e.to_string())?;
        let start = dfa.start_state(Anchored::No).map_err(|e| e.to_string())?;
        let patterns: Vec<u64> = texts.iter().map(|t| t.chars().count() as u64).collect();
        let longest = patterns.iter().copied().max().unwrap_or(0);
        Ok(Keywords { dfa, start, patterns, longest, fields: fields.to_vec() })
    }

    pub fn fields(&self) -> &[String] {
        &self.fields
    }
}

impl std::fmt::Debug for Keywords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keywords").field("fields", &self.fields).finish_non_exhaustive()
    }
}

impl PartialEq for Keywords {
    fn eq(&self, other: &Self) -> bool {
        self.fields == other.fields
    }
}

/// Streaming detector. Feed chunks, then call [`Scanner::finish`].
#[derive(Debug, Clone)]
pub struct Scanner {
    keywords: Arc<Keywords>,
    decode: Decode,
    run: Run,
    /// Characters read so far (decoded).
    pos: u64,
    /// The decoded text, as UTF-8, in a ring (the last `RING` bytes), and
    /// how many bytes were written. Keywords are looked for only near a
    /// number: the matcher catches up over the ring when one is found or
    /// waits for context, so ordinary text never goes through it.
    text: Box<[u8; RING as usize]>,
    written: u64,
    /// Keyword matcher state, how far into `text` it has read, and the
    /// character position there.
    state: aho_corasick::automaton::StateID,
    matched_to: u64,
    matched_chars: u64,
    /// Where the last keyword match ended (character position).
    last_keyword: Option<u64>,
    /// Numbers waiting for a keyword after them: (start, end, low-confidence exclusion).
    pending: Vec<(u64, u64, bool)>,
    /// The last two characters before the current one (for prefixes).
    prev: [u32; 2],
    verdict: Option<Confidence>,
}

/// Bytes of decoded text kept: 300 characters of context and the longest
/// keyword, at four bytes a character, with room to spare.
const RING: u64 = 4096;

/// Decoder state between chunks.
#[derive(Debug, Clone, Copy, Default)]
struct Decode {
    /// Percent-escape in progress: 1 after `%`, 2 after `%H`, with the high nibble.
    pct: u8,
    pct_hi: u8,
    /// Backslash escape: 1 after `\`, 2..=5 inside `\uXXXX` (hex digits read + 2).
    esc: u8,
    esc_acc: u32,
    /// A high surrogate waiting for its `\uDCxx` partner.
    high: Option<u32>,
    /// HTML character reference in progress (`&#...;`): bytes held, value.
    ent: u8,
    ent_hex: bool,
    ent_acc: u32,
    ent_buf: [u8; 10],
    /// An unfinished UTF-8 sequence: its code point so far, bytes read and needed.
    utf8_cp: u32,
    utf8_len: u8,
    utf8_need: u8,
}

/// The digit run being read.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    digits: [u8; 12],
    count: u8,
    /// Bit n: a separator after the n-th digit.
    seps: u16,
    after_sep: bool,
    start: u64,
    /// The two characters before the first digit.
    before: [u32; 2],
}

impl Scanner {
    pub fn new(keywords: Arc<Keywords>) -> Scanner {
        let state = keywords.start;
        let mut s = Scanner {
            keywords,
            decode: Decode::default(),
            run: Run::default(),
            pos: 0,
            text: Box::new([0; RING as usize]),
            written: 0,
            state,
            matched_to: 0,
            matched_chars: 0,
            last_keyword: None,
            pending: Vec::new(),
            prev: [0; 2],
            verdict: None,
        };
        // A form body's first field has no `&` before it: read as if it had.
        s.push_text(b'&');
        s.char_in(u32::from(b'&'));
        s
    }

    /// Scans the next chunk; returns the verdict so far.
    pub fn feed(&mut self, chunk: &[u8]) -> Option<Confidence> {
        let mut i = 0;
        while let Some(&b) = chunk.get(i) {
            if self.verdict == Some(Confidence::High) {
                break;
            }
            if !self.decode.escapes_idle() || self.decode.utf8_len > 0 || ESCAPE_START[usize::from(b)] {
                self.pct_in(b);
                i += 1;
                continue;
            }
            if self.run.count == 0 {
                // While numbers wait for context, in stretches the keyword
                // matcher then reads at once (well inside its ring).
                let waiting = !self.pending.is_empty();
                let end = if waiting { chunk.len().min(i + 1024) } else { chunk.len() };
                let quiet = self.quiet(&chunk[i..end]);
                if waiting && quiet > 0 {
                    self.catch_up();
                    self.expire();
                }
                if quiet > 0 {
                    i += quiet;
                    continue;
                }
            }
            // Decoded text as it stands: whole characters at a time.
            let len = match b {
                0x00..=0x7f => 1,
                0xc2..=0xdf => 2,
                0xe0..=0xef => 3,
                0xf0..=0xf4 => 4,
                _ => 0,
            };
            let Some(bytes) = chunk.get(i..i + len).filter(|s| len > 0 && s[1..].iter().all(|c| c & 0xc0 == 0x80))
            else {
                // A character cut by the chunk's end, or broken: byte by byte.
                self.pct_in(b);
                i += 1;
                continue;
            };
            let c = match len {
                1 => u32::from(b),
                _ => bytes[1..].iter().fold(u32::from(b & (0x7f >> len)), |cp, c| (cp << 6) | u32::from(c & 0x3f)),
            };
            for &t in bytes {
                self.push_text(t);
            }
            if self.run.count == 0 && self.pending.is_empty() && classify(c) == Class::Other {
                // Text between numbers: only counted.
                self.pos += 1;
                self.prev = [c, self.prev[0]];
            } else {
                self.char_in(c);
            }
            i += len;
        }
        self.verdict
    }

    /// Ends the stream (a number right at the end counts); returns the verdict.
    pub fn finish(&mut self) -> Option<Confidence> {
        self.flush_decoders();
        self.end_run(0);
        self.catch_up();
        let pending = std::mem::take(&mut self.pending);
        for (_, _, excluded) in pending {
            self.low(excluded);
        }
        self.verdict
    }

    pub fn verdict(&self) -> Option<Confidence> {
        self.verdict
    }

    // ---- decoding ----------------------------------------------------------

    /// Stage 1: percent-decoding.
    fn pct_in(&mut self, b: u8) {
        let d = &mut self.decode;
        match d.pct {
            0 if b == b'%' => d.pct = 1,
            0 => self.esc_in(b),
            1 => match hex(b) {
                Some(h) => (d.pct, d.pct_hi) = (2, h),
                None => {
                    d.pct = 0;
                    self.esc_in(b'%');
                    self.pct_in(b);
                }
            },
            _ => match hex(b) {
                Some(l) => {
                    let byte = (d.pct_hi << 4) | l;
                    d.pct = 0;
                    self.esc_in(byte);
                }
                None => {
                    let hi = d.pct_hi;
                    d.pct = 0;
                    self.esc_in(b'%');
                    self.esc_in(HEX[usize::from(hi)]);
                    self.pct_in(b);
                }
            },
        }
    }

    /// Stage 2: backslash escapes (`\uXXXX` with surrogate pairs, `\x`).
    fn esc_in(&mut self, b: u8) {
        let d = &mut self.decode;
        match d.esc {
            0 if b == b'\\' => d.esc = 1,
            0 => {
                if d.high.take().is_some() {
                    // A high surrogate with no partner.
                    self.unit(Unit::Char(0xFFFD));
                }
                self.ent_in(b)
            }
            1 if b == b'u' || b == b'U' => (d.esc, d.esc_acc) = (2, 0),
            1 => {
                d.esc = 0;
                if d.high.take().is_some() {
                    self.unit(Unit::Char(0xFFFD));
                }
                let c = match b {
                    b'n' | b'r' | b't' | b'b' | b'f' => u32::from(b'\n'),
                    other => u32::from(other),
                };
                self.unit(Unit::Char(c));
            }
            _ => match hex(b) {
                Some(h) => {
                    d.esc_acc = (d.esc_acc << 4) | u32::from(h);
                    d.esc += 1;
                    if d.esc == 6 {
                        d.esc = 0;
                        let cp = d.esc_acc;
                        self.escaped(cp);
                    }
                }
                None => {
                    // Not an escape after all: a replacement, then this byte afresh.
                    d.esc = 0;
                    self.unit(Unit::Char(0xFFFD));
                    self.esc_in(b);
                }
            },
        }
    }

    /// A `\uXXXX` code unit: pairs surrogates.
    fn escaped(&mut self, cp: u32) {
        match (self.decode.high.take(), cp) {
            (None, 0xD800..=0xDBFF) => self.decode.high = Some(cp),
            (Some(h), 0xDC00..=0xDFFF) => self.unit(Unit::Char(0x10000 + ((h - 0xD800) << 10) + (cp - 0xDC00))),
            (Some(_), 0xD800..=0xDBFF) => {
                self.unit(Unit::Char(0xFFFD));
                self.decode.high = Some(cp);
            }
            (Some(_), c) => {
                self.unit(Unit::Char(0xFFFD));
                self.unit(Unit::Char(c));
            }
            (None, c) => self.unit(Unit::Char(c)),
        }
    }

    /// Stage 3: HTML numeric character references (`&#49;`, `&#xFF11;`).
    fn ent_in(&mut self, b: u8) {
        let d = &mut self.decode;
        if d.ent == 0 {
            if b == b'&' {
                d.ent_buf[0] = b;
                (d.ent, d.ent_hex, d.ent_acc) = (1, false, 0);
                return;
            }
            return self.unit(Unit::Byte(b));
        }
        let n = usize::from(d.ent);
        let ok = match (n, b) {
            (1, b'#') => true,
            (2, b'x' | b'X') if !d.ent_hex => {
                d.ent_hex = true;
                true
            }
            (3.., b';') if d.ent_acc <= 0x10FFFF && !(n == 3 && d.ent_hex) => {
                let cp = d.ent_acc;
                d.ent = 0;
                return self.unit(Unit::Char(cp));
            }
            (2.., _) if n < d.ent_buf.len() => match (d.ent_hex, b) {
                (false, b'0'..=b'9') => {
                    d.ent_acc = d.ent_acc.saturating_mul(10).saturating_add(u32::from(b - b'0'));
                    true
                }
                (true, _) => match hex(b) {
                    Some(h) => {
                        d.ent_acc = d.ent_acc.saturating_mul(16).saturating_add(u32::from(h));
                        true
                    }
                    None => false,
                },
                _ => false,
            },
            _ => false,
        };
        if ok {
            if let Some(slot) = d.ent_buf.get_mut(n) {
                *slot = b;
            }
            d.ent += 1;
            return;
        }
        // Not a reference: what was held goes on as it was, then this byte.
        let (held, buf) = (n, d.ent_buf);
        d.ent = 0;
        for &h in buf.get(..held).unwrap_or_default() {
            self.unit(Unit::Byte(h));
        }
        self.ent_in(b);
    }

    /// Stage 4: UTF-8 bytes and decoded characters into characters; the
    /// keyword matcher reads the decoded text as UTF-8.
    fn unit(&mut self, u: Unit) {
        match u {
            Unit::Char(c) => {
                self.drop_partial_utf8();
                let mut buf = [0u8; 4];
                for &t in char::from_u32(c).unwrap_or('\u{FFFD}').encode_utf8(&mut buf).as_bytes() {
                    self.push_text(t);
                }
                self.char_in(c);
            }
            Unit::Byte(b) => {
                self.push_text(b);
                self.utf8_in(b);
            }
        }
    }

    /// The common case, in a tight loop: text that is no digit, no escape
    /// and no separator-led number, while no number is in progress.
    /// Returns the bytes consumed (whole characters).
    fn quiet(&mut self, bytes: &[u8]) -> usize {
        let (mut pos, mut written) = (self.pos, self.written);
        let [mut p0, mut p1] = self.prev;
        let text = &mut *self.text;
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            let len = if b.is_ascii_digit() {
                // A digit run that cannot be a number (not exactly twelve
                // digits), ending on plain ASCII in this chunk, is text.
                let Some(end) = short_run(&bytes[i..]) else { break };
                if end >= 2 {
                    (p1, p0) = (u32::from(bytes[i + end - 2]), u32::from(bytes[i + end - 1]));
                } else {
                    (p1, p0) = (p0, u32::from(b));
                }
                for &t in &bytes[i..i + end] {
                    text[(written & (RING - 1)) as usize] = t;
                    written += 1;
                }
                pos += end as u64;
                i += end;
                continue;
            } else if b < 0x80 {
                if ESCAPE_START[usize::from(b)] {
                    break;
                }
                (p1, p0) = (p0, u32::from(b));
                1
            } else {
                let len = match b {
                    0xc2..=0xdf => 2,
                    0xe0..=0xef => 3,
                    0xf0..=0xf4 => 4,
                    _ => break,
                };
                let Some(tail) = bytes.get(i + 1..i + len) else { break };
                if tail.iter().any(|c| c & 0xc0 != 0x80) {
                    break;
                }
                let c = tail.iter().fold(u32::from(b & (0x7f >> len)), |cp, c| (cp << 6) | u32::from(c & 0x3f));
                if classify(c) != Class::Other {
                    break;
                }
                (p1, p0) = (p0, c);
                len
            };
            for &t in &bytes[i..i + len] {
                text[(written & (RING - 1)) as usize] = t;
                written += 1;
            }
            pos += 1;
            i += len;
        }
        (self.pos, self.written, self.prev) = (pos, written, [p0, p1]);
        i
    }

    #[inline]
    fn push_text(&mut self, b: u8) {
        self.text[(self.written & (RING - 1)) as usize] = b;
        self.written += 1;
    }

    /// Runs the keyword matcher over the text it has not read yet, from no
    /// earlier than `reach` characters back (older text is beyond any
    /// keyword's reach for what is being decided).
    fn catch_up_within(&mut self, reach: u64) {
        // The oldest byte worth reading: `reach` characters back, inside the ring.
        let floor = self.written.saturating_sub(RING - 1);
        if self.matched_to < floor || self.pos.saturating_sub(self.matched_chars) > reach {
            let (mut at, mut chars) = (self.written, 0u64);
            while at > floor && chars < reach {
                at -= 1;
                chars += u64::from(self.text_at(at) & 0xc0 != 0x80);
            }
            while at < self.written && self.text_at(at) & 0xc0 == 0x80 {
                at += 1;
            }
            if at > self.matched_to {
                let chars = (at..self.written).filter(|i| self.text_at(*i) & 0xc0 != 0x80).count() as u64;
                (self.matched_to, self.matched_chars, self.state) = (at, self.pos - chars, self.keywords.start);
            }
        }
        let (dfa, patterns) = (&self.keywords.dfa, &self.keywords.patterns);
        let mut state = self.state;
        for at in self.matched_to..self.written {
            let b = self.text[(at & (RING - 1)) as usize];
            self.matched_chars += u64::from(b & 0xc0 != 0x80);
            state = dfa.next_state(Anchored::No, state, b);
            if !dfa.is_match(state) {
                continue;
            }
            for i in 0..dfa.match_len(state) {
                let chars = patterns.get(dfa.match_pattern(state, i).as_usize()).copied().unwrap_or_default();
                let (start, end) = (self.matched_chars.saturating_sub(chars), self.matched_chars);
                // Numbers up to 300 characters before the keyword's start are
                // high confidence; `end_run` reads `last_keyword` for those after.
                self.last_keyword = Some(end);
                if self.pending.iter().any(|(_, num_end, _)| start <= num_end + PROXIMITY) {
                    self.verdict = Some(Confidence::High);
                }
            }
        }
        (self.state, self.matched_to) = (state, self.written);
    }

    fn catch_up(&mut self) {
        self.catch_up_within(PROXIMITY + self.keywords.longest + 16);
    }

    fn text_at(&self, at: u64) -> u8 {
        self.text[(at & (RING - 1)) as usize]
    }

    fn utf8_in(&mut self, b: u8) {
        let d = &mut self.decode;
        if d.utf8_len == 0 {
            match b {
                0x00..=0x7f => self.char_in(u32::from(b)),
                0xc2..=0xdf => (d.utf8_cp, d.utf8_len, d.utf8_need) = (u32::from(b & 0x1f), 1, 2),
                0xe0..=0xef => (d.utf8_cp, d.utf8_len, d.utf8_need) = (u32::from(b & 0x0f), 1, 3),
                0xf0..=0xf4 => (d.utf8_cp, d.utf8_len, d.utf8_need) = (u32::from(b & 0x07), 1, 4),
                _ => self.char_in(0xFFFD),
            }
            return;
        }
        if b & 0xc0 != 0x80 {
            self.drop_partial_utf8();
            return self.utf8_in(b);
        }
        d.utf8_cp = (d.utf8_cp << 6) | u32::from(b & 0x3f);
        d.utf8_len += 1;
        if d.utf8_len == d.utf8_need {
            d.utf8_len = 0;
            let c = d.utf8_cp;
            self.char_in(c);
        }
    }

    fn drop_partial_utf8(&mut self) {
        if self.decode.utf8_len > 0 {
            self.decode.utf8_len = 0;
            self.char_in(0xFFFD);
        }
    }

    /// Ends every decoder: what they hold is read as it was.
    fn flush_decoders(&mut self) {
        let d = self.decode;
        self.decode = Decode::default();
        if d.pct >= 1 {
            self.esc_in(b'%');
            if d.pct == 2 {
                self.esc_in(HEX[usize::from(d.pct_hi)]);
            }
        }
        if d.esc > 0 || d.high.is_some() {
            self.unit(Unit::Char(0xFFFD));
        }
        for &h in d.ent_buf.get(..usize::from(d.ent)).unwrap_or_default() {
            self.unit(Unit::Byte(h));
        }
        if d.utf8_len > 0 {
            self.char_in(0xFFFD);
        }
    }

    // ---- characters ----------------------------------------------------------

    #[inline]
    fn char_in(&mut self, c: u32) {
        self.pos += 1;
        match classify(c) {
            Class::Digit(d) => self.digit(d),
            Class::Separator if self.run.count > 0 && !self.run.after_sep => {
                self.run.after_sep = true;
                self.run.seps |= 1 << self.run.count.min(15);
            }
            Class::Separator | Class::Other if self.run.count > 0 => self.end_run(c),
            Class::Separator | Class::Other => {}
        }
        self.prev = [c, self.prev[0]];
        if !self.pending.is_empty() {
            self.catch_up();
            self.expire();
        }
    }

    fn digit(&mut self, d: u8) {
        let run = &mut self.run;
        if run.count == 0 {
            *run = Run { start: self.pos, before: self.prev, ..Run::default() };
        }
        if let Some(slot) = run.digits.get_mut(usize::from(run.count)) {
            *slot = d;
        }
        run.count = run.count.saturating_add(1).min(13);
        run.after_sep = false;
    }

    /// The run ended at character `next` (0 at the end of the body).
    fn end_run(&mut self, next: u32) {
        let run = std::mem::take(&mut self.run);
        if run.count != 12 {
            return;
        }
        // A separator after the last digit is not part of the number.
        let seps = run.seps & !(1 << 12);
        if seps & !((1 << 4) | (1 << 8)) != 0 || !check_digit_valid(&run.digits) {
            return;
        }
        let end = self.pos - 1 - u64::from(run.after_sep);
        self.catch_up();
        let near_before = self.last_keyword.is_some_and(|k| k + PROXIMITY >= run.start);
        if near_before {
            self.verdict = Some(Confidence::High);
            return;
        }
        let excluded = plainly_other(&run, seps == 0, next);
        if self.pending.len() >= 64 {
            let (_, _, oldest) = self.pending.remove(0);
            self.low(oldest);
        }
        self.pending.push((run.start, end, excluded));
    }

    /// Numbers whose window closed without a keyword are low confidence.
    fn expire(&mut self) {
        let horizon = PROXIMITY + self.keywords.longest;
        while let Some(&(_, end, excluded)) = self.pending.first() {
            if end + horizon >= self.pos {
                break;
            }
            self.pending.remove(0);
            self.low(excluded);
        }
    }

    fn low(&mut self, excluded: bool) {
        if !excluded && self.verdict.is_none() {
            self.verdict = Some(Confidence::Low);
        }
    }
}

impl Decode {
    /// No percent, backslash or reference escape is in progress.
    #[inline]
    fn escapes_idle(&self) -> bool {
        self.pct == 0 && self.esc == 0 && self.high.is_none() && self.ent == 0
    }
}

#[derive(Debug, Clone, Copy)]
enum Unit {
    Byte(u8),
    Char(u32),
}

/// What one character is to the number pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Digit(u8),
    Separator,
    Other,
}

const HEX: [u8; 16] = *b"0123456789ABCDEF";

/// The length of the ASCII digit run (with single ASCII separators) at the
/// start of `bytes` when it is certainly not a number: its digit count is
/// not twelve and it ends on plain ASCII text within `bytes`.
fn short_run(bytes: &[u8]) -> Option<usize> {
    let (mut digits, mut after_sep) = (0u32, false);
    for (j, &c) in bytes.iter().enumerate() {
        match c {
            b'0'..=b'9' => (digits, after_sep) = (digits + 1, false),
            b' ' | b'.' | b'-' | b'+' if !after_sep => after_sep = true,
            b' ' | b'.' | b'-' | b'+' => return None,
            c if c < 0x80 && !ESCAPE_START[usize::from(c)] => return (digits != 12).then_some(j),
            _ => return None,
        }
    }
    None
}

/// Bytes that may start an escape (`%`, `\`, `&`).
const ESCAPE_START: [bool; 256] = {
    let mut t = [false; 256];
    t[b'%' as usize] = true;
    t[b'\\' as usize] = true;
    t[b'&' as usize] = true;
    t
};

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The first code point of each block of ten Unicode decimal digits (Nd).
const DIGIT_ZEROS: [u32; 66] = [
    0x0660, 0x06F0, 0x07C0, 0x0966, 0x09E6, 0x0A66, 0x0AE6, 0x0B66, 0x0BE6, 0x0C66, 0x0CE6, 0x0D66, 0x0DE6, 0x0E50,
    0x0ED0, 0x0F20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90, 0x1B50, 0x1BB0, 0x1C40, 0x1C50,
    0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10, 0x104A0, 0x10D30, 0x11066, 0x110F0, 0x11136,
    0x111D0, 0x112F0, 0x11450, 0x114D0, 0x11650, 0x116C0, 0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0,
    0x16A60, 0x16AC0, 0x16B50, 0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E950, 0x1FBF0, 0x0030,
];

/// The decimal value of a Unicode decimal digit.
pub fn digit_value(c: u32) -> Option<u8> {
    if c < 0x80 {
        return (c as u8).is_ascii_digit().then(|| c as u8 - b'0');
    }
    DIGIT_ZEROS.iter().find(|z| (**z..**z + 10).contains(&c)).map(|z| (c - z) as u8)
}

#[inline]
fn classify(c: u32) -> Class {
    if c < 0x80 {
        return match c as u8 {
            d @ b'0'..=b'9' => Class::Digit(d - b'0'),
            b' ' | b'.' | b'-' | b'+' => Class::Separator,
            _ => Class::Other,
        };
    }
    match c {
        0xFF10..=0xFF19 => return Class::Digit((c - 0xFF10) as u8),
        // Kana, CJK and the rest up to U+A61F hold no decimal digit (the
        // separators among them are matched below).
        0x3001..=0x30FA | 0x30FD..=0xA61F => return Class::Other,
        _ => {}
    }
    if let Some(d) = digit_value(c) {
        return Class::Digit(d);
    }
    match c {
        // Purview's space, dot, hyphen; a form's `+` (a space); NBSP.
        0x20 | 0x2E | 0x2D | 0x2B | 0xA0 => Class::Separator,
        // Ideographic space, full-width hyphen-minus and full stop, dashes,
        // minus sign, small hyphen, 長音符 (full and half width), 中黒.
        0x3000 | 0xFF0D | 0xFF0E | 0x2010..=0x2015 | 0x2212 | 0xFE63 | 0x30FC | 0xFF70 | 0x30FB | 0xFF65 => {
            Class::Separator
        }
        _ => Class::Other,
    }
}

/// At low confidence: a value that is plainly something else.
fn plainly_other(run: &Run, contiguous: bool, next: u32) -> bool {
    let [c1, c2] = run.before;
    let ascii_word = |c: u32| c < 0x80 && is_word(c as u8);
    let e164 = c1 == u32::from(b'+');
    let prefixed = ascii_word(c1)
        || c1 == u32::from(b'#')
        || c1 == u32::from(b'/')
        || (matches!(c1, 0x2D | 0x2E | 0x3A | 0x5F) && ascii_word(c2));
    let amount = matches!(c1, 0x24 | 0xA5 | 0xFFE5) || next == 0x5186;
    e164 || prefixed || amount || (contiguous && is_timestamp(&run.digits))
}

/// `YYYYMMDDhhmm` with a real calendar date (1900-2099) and time.
fn is_timestamp(d: &[u8; 12]) -> bool {
    let n = |i: usize, len: usize| d.iter().skip(i).take(len).fold(0u32, |acc, x| acc * 10 + u32::from(*x));
    let (y, m, day, h, min) = (n(0, 4), n(4, 2), n(6, 2), n(8, 2), n(10, 2));
    (1900..=2099).contains(&y) && chrono::NaiveDate::from_ymd_opt(y as i32, m, day).is_some() && h < 24 && min < 60
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
