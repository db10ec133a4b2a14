//! The HTTP/1 wire rules sekisho enforces before any byte reaches the HTTP
//! server (RFC 9112, strictly). A [`Guard`] reads the client's byte stream
//! ahead of the server and releases only what is well-formed: a request head
//! is held back until its blank line proves it valid, bodies are released as
//! their framing is checked. What a front proxy could read differently from
//! the gateway is refused instead of repaired: bare LF or CR, obs-fold,
//! control bytes, `Content-Length` with `Transfer-Encoding`, a repeated or
//! non-decimal length, any coding but one `chunked`, chunk extensions with
//! control bytes, trailer fields, a body on an upgrade request. Pure: no
//! I/O; it never changes a byte, it only says how many may pass.

use sekisho_policy::path::origin_form;

/// Limits on one request head.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The request line and all header lines, with their line ends.
    pub max_head_bytes: usize,
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_head_bytes: 64 * 1024, max_headers: 100 }
    }
}

/// Why the stream was refused. The message is shown on the 400 page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    LineEnd,
    ObsFold,
    ControlByte,
    RequestLine,
    Version,
    Target,
    HeaderName,
    HeadTooLarge,
    TooManyHeaders,
    LengthAndChunked,
    ContentLength,
    TransferEncoding,
    Chunk,
    Trailers,
    UpgradeBody,
}

impl Violation {
    pub fn text(self) -> &'static str {
        match self {
            Violation::LineEnd => "a line ends with a bare LF or CR instead of CRLF",
            Violation::ObsFold => "a header line is folded (obs-fold)",
            Violation::ControlByte => "the request head holds a control character",
            Violation::RequestLine => "the request line is not `METHOD target HTTP/1.x`",
            Violation::Version => "only HTTP/1.0 and HTTP/1.1 are served on this connection",
            Violation::Target => {
                "the request target must be a path starting with `/` (or an `http(s)://` URL for this host)"
            }
            Violation::HeaderName => "a header name is empty or holds a character a token may not hold",
            Violation::HeadTooLarge => "the request head is larger than the gateway accepts",
            Violation::TooManyHeaders => "the request has more header fields than the gateway accepts",
            Violation::LengthAndChunked => "both Content-Length and Transfer-Encoding",
            Violation::ContentLength => "invalid or repeated Content-Length",
            Violation::TransferEncoding => "Transfer-Encoding other than a single `chunked` on HTTP/1.1",
            Violation::Chunk => "a chunk size line is malformed",
            Violation::Trailers => "trailer fields are not accepted",
            Violation::UpgradeBody => "an upgrade request may not carry a body",
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text())
    }
}

impl std::error::Error for Violation {}

/// What a scan found in the pending bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// The first `n` pending bytes may go to the server; the rest wait for more input.
    Release(usize),
    /// The first `n` may go; what follows them breaks a rule and must never be read.
    Stop(usize, Violation),
}

/// Reads one client connection's byte stream ahead of the server.
#[derive(Debug)]
pub struct Guard {
    limits: Limits,
    state: State,
    /// Pending bytes already checked (they start at the first unreleased byte).
    scanned: usize,
    head: HeadScan,
    /// The violation came inside a body, after its head went to the server.
    mid_message: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Length(u64),
    ChunkSize(ChunkLine),
    ChunkData(u64),
    /// The CRLF after a chunk's data: `true` once the CR was seen.
    ChunkDataEnd(bool),
    /// After the last chunk: only an empty trailer section (CRLF) may follow.
    LastChunkEnd(bool),
    /// After an upgrade request: the bytes are no longer HTTP/1.
    Opaque,
    Failed(Violation),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct ChunkLine {
    digits: u8,
    size: u64,
    /// Past the size: in extensions or whitespace.
    ext: bool,
    ext_len: u16,
    cr: bool,
}

/// What the current head has shown so far (offsets are into the pending bytes).
#[derive(Debug, Default)]
struct HeadScan {
    line_start: usize,
    lines: usize,
    /// Leading empty lines before the request line (tolerated, at most two).
    leading: usize,
    http11: bool,
    content_length: Option<u64>,
    lengths: u8,
    codings: u8,
    chunked: bool,
    upgrade: bool,
    connection_upgrade: bool,
}

impl Guard {
    pub fn new(limits: Limits) -> Guard {
        Guard { limits, state: State::Head, scanned: 0, head: HeadScan::default(), mid_message: false }
    }

    /// Whether the violation found came inside a request's body: the server
    /// already has that request's head and answers it itself (its body
    /// ends there), so the gateway must not answer it a second time.
    pub fn refused_mid_message(&self) -> bool {
        self.mid_message
    }

    /// Whether the stream sits between messages: nothing of a next request
    /// read yet (the keep-alive idle time runs, not the header deadline).
    pub fn between_messages(&self, pending: usize) -> bool {
        self.state == State::Head && pending == 0 && self.head.lines == 0
    }

    /// Whether the stream is inside a request head (the header deadline runs).
    pub fn in_head(&self) -> bool {
        self.state == State::Head
    }

    /// Checks the pending bytes (which start at the first byte not yet
    /// released) from where the last scan stopped. The caller must release
    /// exactly the bytes a `Release` or `Stop` names before the next scan.
    pub fn scan(&mut self, pending: &[u8]) -> Scan {
        let mut released = 0;
        let result = loop {
            if let State::Failed(v) = self.state {
                break Scan::Stop(released, v);
            }
            if self.scanned >= pending.len() {
                break Scan::Release(released);
            }
            match self.step(pending, &mut released) {
                Ok(()) => {}
                Err(v) => {
                    self.mid_message = !matches!(self.state, State::Head);
                    self.state = State::Failed(v);
                    break Scan::Stop(released, v);
                }
            }
        };
        let n = match result {
            Scan::Release(n) | Scan::Stop(n, _) => n,
        };
        self.scanned -= n;
        self.head.line_start = self.head.line_start.saturating_sub(n);
        result
    }

    /// Advances over the next run of bytes in the current state.
    fn step(&mut self, pending: &[u8], released: &mut usize) -> Result<(), Violation> {
        let rest = &pending[self.scanned..];
        match self.state {
            State::Head => {
                let Some(lf) = memchr::memchr(b'\n', rest) else {
                    self.scanned = pending.len();
                    return self.check_head_size(pending.len() - *released);
                };
                let end = self.scanned + lf + 1;
                self.scanned = end;
                self.check_head_size(end - *released)?;
                if self.head_line(pending, end)? {
                    *released = end;
                }
            }
            State::Length(left) => {
                let take = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                self.scanned += take;
                *released = self.scanned;
                let left = left - take as u64;
                self.state = State::Length(left);
                if left == 0 {
                    self.next_message();
                }
            }
            State::ChunkData(left) => {
                let take = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                self.scanned += take;
                *released = self.scanned;
                let left = left - take as u64;
                self.state = if left == 0 { State::ChunkDataEnd(false) } else { State::ChunkData(left) };
            }
            State::ChunkSize(line) => {
                self.state = chunk_size_byte(line, rest[0])?;
                self.scanned += 1;
                *released = self.scanned;
            }
            State::ChunkDataEnd(cr) | State::LastChunkEnd(cr) => {
                let last = matches!(self.state, State::LastChunkEnd(_));
                self.state = match (cr, rest[0]) {
                    (false, b'\r') if last => State::LastChunkEnd(true),
                    (false, b'\r') => State::ChunkDataEnd(true),
                    (true, b'\n') if last => State::LastChunkEnd(true),
                    (true, b'\n') => State::ChunkSize(ChunkLine::default()),
                    (false, _) if last => return Err(Violation::Trailers),
                    _ => return Err(Violation::Chunk),
                };
                self.scanned += 1;
                *released = self.scanned;
                if last && rest[0] == b'\n' {
                    self.next_message();
                }
            }
            State::Opaque => {
                self.scanned = pending.len();
                *released = self.scanned;
            }
            State::Failed(v) => return Err(v),
        }
        Ok(())
    }

    /// A message ended at the scan position: the next head starts there.
    fn next_message(&mut self) {
        self.state = State::Head;
        self.head.line_start = self.scanned;
    }

    fn check_head_size(&self, head_bytes: usize) -> Result<(), Violation> {
        match head_bytes > self.limits.max_head_bytes {
            true => Err(Violation::HeadTooLarge),
            false => Ok(()),
        }
    }

    /// One line of a head, ending at `end` (just past its LF). Returns
    /// whether the head is complete (and valid) with it.
    fn head_line(&mut self, pending: &[u8], end: usize) -> Result<bool, Violation> {
        let start = self.head.line_start;
        self.head.line_start = end;
        let line = match pending[start..end - 1].strip_suffix(b"\r") {
            Some(line) => line,
            None => return Err(Violation::LineEnd),
        };
        // A CR inside the line is a control byte every line check refuses.
        if line.is_empty() {
            let complete = self.blank_line()?;
            // The next head starts here (the scan shifts it once released).
            self.head.line_start = end;
            return Ok(complete);
        }
        self.head.lines += 1;
        if self.head.lines > self.limits.max_headers + 1 {
            return Err(Violation::TooManyHeaders);
        }
        match self.head.lines {
            1 => self.request_line(line),
            _ => self.header_line(line),
        }
        .map(|()| false)
    }

    fn blank_line(&mut self) -> Result<bool, Violation> {
        if self.head.lines == 0 {
            // A stray CRLF before a request line (RFC 9112 2.2 lets a server
            // ignore one); more than two is not a client's slip.
            self.head.leading += 1;
            return match self.head.leading > 2 {
                true => Err(Violation::RequestLine),
                false => Ok(false),
            };
        }
        let head = std::mem::take(&mut self.head);
        self.state = framing(&head)?;
        Ok(true)
    }

    fn request_line(&mut self, line: &[u8]) -> Result<(), Violation> {
        let mut parts = line.split(|b| *b == b' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Violation::RequestLine);
        };
        if method.is_empty() || !method.iter().all(|b| TCHAR[usize::from(*b)]) {
            return Err(Violation::RequestLine);
        }
        if !target.iter().all(|b| is_target_char(*b)) {
            return Err(Violation::Target);
        }
        // Only origin-form, or absolute-form `http(s)://authority/path` with
        // a plain authority: a target the server could read in another form
        // (a relative path, `*`, authority-form, another scheme) never
        // reaches it, so the path judged is the one forwarded.
        match origin_form(target) {
            Ok(t) if t.authority.is_none_or(authority_ok) => {}
            _ => return Err(Violation::Target),
        }
        self.head.http11 = match version {
            b"HTTP/1.1" => true,
            b"HTTP/1.0" => false,
            _ => return Err(Violation::Version),
        };
        Ok(())
    }

    fn header_line(&mut self, line: &[u8]) -> Result<(), Violation> {
        if matches!(line[0], b' ' | b'\t') {
            return Err(Violation::ObsFold);
        }
        let colon = memchr::memchr(b':', line).ok_or(Violation::HeaderName)?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|b| TCHAR[usize::from(*b)]) {
            return Err(Violation::HeaderName);
        }
        if let Some(bad) = first_bad_field_byte(value) {
            return Err(if bad == b'\r' { Violation::LineEnd } else { Violation::ControlByte });
        }
        let head = &mut self.head;
        // Only four names shape the framing; most lines stop here.
        if !matches!(name.len(), 7 | 10 | 14 | 17) {
            return Ok(());
        }
        let value = value.trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            head.lengths = head.lengths.saturating_add(1);
            head.content_length = decimal(value);
            if head.content_length.is_none() || head.lengths > 1 {
                return Err(Violation::ContentLength);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            head.codings = head.codings.saturating_add(1);
            head.chunked = value.eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            head.upgrade = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            head.connection_upgrade |=
                value.split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
        }
        Ok(())
    }
}

/// How the body after a complete head is framed, or why it cannot be read one way.
fn framing(head: &HeadScan) -> Result<State, Violation> {
    if head.lengths > 0 && head.codings > 0 {
        return Err(Violation::LengthAndChunked);
    }
    if head.codings > 0 && !(head.codings == 1 && head.chunked && head.http11) {
        return Err(Violation::TransferEncoding);
    }
    let body = head.codings > 0 || head.content_length.is_some_and(|n| n > 0);
    if head.upgrade && head.connection_upgrade {
        return match body {
            true => Err(Violation::UpgradeBody),
            false => Ok(State::Opaque),
        };
    }
    Ok(match (head.codings > 0, head.content_length) {
        (true, _) => State::ChunkSize(ChunkLine::default()),
        (false, Some(n)) if n > 0 => State::Length(n),
        _ => State::Head,
    })
}

/// One byte of a chunk-size line: `1*HEXDIG [ chunk-ext ] CRLF`.
fn chunk_size_byte(mut line: ChunkLine, b: u8) -> Result<State, Violation> {
    const MAX_EXT: u16 = 4096;
    if line.cr {
        return match b {
            b'\n' if line.size == 0 => Ok(State::LastChunkEnd(false)),
            b'\n' => Ok(State::ChunkData(line.size)),
            _ => Err(Violation::LineEnd),
        };
    }
    match b {
        b'\r' if line.digits > 0 => line.cr = true,
        _ if !line.ext && b.is_ascii_hexdigit() => {
            line.digits += 1;
            if line.digits > 16 {
                return Err(Violation::Chunk);
            }
            let digit = u64::from((b as char).to_digit(16).unwrap_or(0));
            line.size = line.size * 16 + digit;
        }
        b';' | b' ' | b'\t' if line.digits > 0 => line.ext = true,
        _ if line.ext && (b >= 0x20 && b != 0x7f) => {
            line.ext_len += 1;
            if line.ext_len > MAX_EXT {
                return Err(Violation::Chunk);
            }
        }
        b'\n' => return Err(Violation::LineEnd),
        _ => return Err(Violation::Chunk),
    }
    Ok(State::ChunkSize(line))
}

fn decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A host name or IPv4 address, or a bracketed IPv6 address, and an
/// optional decimal port: nothing a URI parser could read two ways.
fn authority_ok(authority: &str) -> bool {
    let (host_ok, port) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((addr, rest)) => (addr.parse::<std::net::Ipv6Addr>().is_ok(), rest),
            None => return false,
        },
        None => {
            let end = authority.find(':').unwrap_or(authority.len());
            let host = &authority[..end];
            let name = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b));
            (name, &authority[end..])
        }
    };
    let port_ok = port.is_empty() || port.strip_prefix(':').is_some_and(|p| p.parse::<u16>().is_ok());
    host_ok && port_ok
}

/// `tchar` (RFC 9110 5.6.2): the characters of a method or a header name.
const TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
            );
        b += 1;
    }
    t
};

/// The bytes a field value may hold: visible ASCII, space, tab, and
/// obs-text (0x80 and up, as UTF-8 in file names arrives); no control byte.
const FIELD_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = b == 0x09 || (b >= 0x20 && b != 0x7f);
        b += 1;
    }
    t
};

/// The first byte of a field value that may not appear in one (a control
/// byte other than HTAB, or DEL), if any. Eight bytes at a time: a value
/// is mostly a long token that needs no byte-by-byte look.
fn first_bad_field_byte(value: &[u8]) -> Option<u8> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let byte_wise = |bytes: &[u8]| bytes.iter().copied().find(|b| !FIELD_BYTE[usize::from(*b)]);
    let mut words = value.chunks_exact(8);
    for word in &mut words {
        let x = u64::from_le_bytes(<[u8; 8]>::try_from(word).unwrap_or([0; 8]));
        // Exact as a yes/no (Bit Twiddling Hacks, `hasless`): is any byte
        // below 0x20, or is any byte 0x7f? HTAB also says yes; the byte
        // look below lets it through.
        let low = x.wrapping_sub(ONES * 0x20) & !x & HIGHS;
        let del = x ^ (ONES * 0x7f);
        let del = del.wrapping_sub(ONES) & !del & HIGHS;
        if low | del != 0 {
            if let Some(bad) = byte_wise(word) {
                return Some(bad);
            }
        }
    }
    byte_wise(words.remainder())
}

/// The characters of a request target (RFC 3986: unreserved, `%`,
/// sub-delims, `:` `@` `/` `?`, and `[` `]` for an IPv6 authority). A
/// fragment, a space, quotes, `<>\^{|}` and anything outside ASCII are refused.
fn is_target_char(b: u8) -> bool {
    TARGET_CHAR[usize::from(b)]
}

const TARGET_CHAR: [bool; 256] = {
    let mut t = [false; 256];
    let extra = b"-._~%!$&'()*+,;=:@/?[]";
    let mut b = 0;
    while b < 256 {
        t[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
};

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
