//! Reading the request audit trail back, for auditors: `sekisho audit
//! verify` (the hash chain line by line, signed checkpoints, each rotated
//! file against its signed digest, the digests against each other, files
//! against the files before them) and `sekisho audit query` (records by
//! person, device, reason and time over active, rotated and gzip files,
//! as JSON lines or CSV). Read only: it never writes a trail file.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset};
use ed25519_dalek::VerifyingKey;
use serde::Deserialize;

use crate::control::audit::RequestRecord;
use crate::control::chain::{self, Digest, Link, Meta};

/// One thing wrong with the trail, at a file and line (1-based; 0 = the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: u64,
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            0 => write!(f, "{}: {}", self.file, self.what),
            n => write!(f, "{}:{n}: {}", self.file, self.what),
        }
    }
}

/// The outcome of `verify`: problems (empty = intact) and what was checked.
#[derive(Debug, Default)]
pub struct Report {
    pub problems: Vec<Problem>,
    pub notes: Vec<String>,
    pub files: usize,
    pub lines: u64,
    pub digests: usize,
    pub checkpoints: usize,
}

/// One data file as the verifier saw it.
struct Checked {
    name: String,
    first_seq: Option<u64>,
    prev: Option<Link>,
    last: Option<(Link, u64)>,
    lines: u64,
    content_sha256: String,
    checkpoints: Vec<Checkpoint>,
    /// Lines after the last checkpoint.
    unsealed: u64,
    problem: Option<Problem>,
}

struct Checkpoint {
    line: u64,
    time: String,
    head: String,
    sig: String,
}

/// Verifies the given trail files (active, rotated, gzip; `*.digest.json`
/// given or lying beside them are used as digests). With `pinned`, every
/// signature must be by that key; without, by the key the digests name.
pub fn verify(paths: &[PathBuf], pinned: Option<&VerifyingKey>) -> std::io::Result<Report> {
    let (digest_paths, data): (Vec<_>, Vec<_>) = paths.iter().cloned().partition(|p| is_digest(p));
    let digests = load_digests(&data, &digest_paths)?;
    let mut checked = Vec::new();
    for p in &data {
        checked.push(check_file(p)?);
    }
    checked.sort_by_key(|c| c.first_seq.unwrap_or(u64::MAX));
    let mut report = Report { files: checked.len(), ..Report::default() };
    let key = pinned.copied().or_else(|| digests.first().and_then(Digest::embedded_key));
    if pinned.is_none() {
        report.notes.push(
            "signatures checked against the key named in the digests; give --public-key with the key you exported to pin it"
                .into(),
        );
    }
    check_links(&checked, &mut report);
    check_digests(&checked, &digests, pinned, &mut report);
    for c in &checked {
        report.lines += c.lines;
        report.problems.extend(c.problem.clone());
        check_checkpoints(c, key.as_ref(), &mut report);
    }
    if let Some(last) = checked.last().filter(|c| c.unsealed > 0) {
        report.notes.push(format!(
            "{}: the last {} line(s) come after the last signed checkpoint; the chain alone protects them",
            last.name, last.unsealed
        ));
    }
    report.problems.sort_by(|a, b| (a.file.as_str(), a.line).cmp(&(b.file.as_str(), b.line)));
    Ok(report)
}

/// Which records `query` prints.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub user: Option<String>,
    pub device: Option<String>,
    pub reason: Option<String>,
    pub decision: Option<String>,
    pub since: Option<DateTime<FixedOffset>>,
    pub until: Option<DateTime<FixedOffset>>,
}

/// A stored request line: the record plus what the writer added.
#[derive(Debug, Deserialize)]
pub struct Stored {
    #[serde(flatten)]
    pub record: RequestRecord<'static>,
    pub replica: Option<String>,
    pub seq: Option<u64>,
}

impl Filter {
    fn matches(&self, s: &Stored) -> bool {
        let r = &s.record;
        let eq = |want: &Option<String>, got: Option<&str>| want.as_deref().is_none_or(|w| got == Some(w));
        let time = DateTime::parse_from_rfc3339(&r.time).ok();
        eq(&self.user, r.user.as_deref())
            && eq(&self.device, r.device.as_deref())
            && eq(&self.reason, r.reason.as_deref())
            && eq(&self.decision, Some(&r.decision))
            && self.since.is_none_or(|t| time.is_some_and(|x| x >= t))
            && self.until.is_none_or(|t| time.is_some_and(|x| x < t))
    }
}

/// The CSV columns, in order.
pub const CSV_COLUMNS: [&str; 17] = [
    "time",
    "replica",
    "seq",
    "request_id",
    "user",
    "device",
    "client",
    "host",
    "method",
    "path",
    "decision",
    "reason",
    "rule",
    "profile",
    "status",
    "upstream_status",
    "latency_ms",
];

/// Writes the matching records of `paths` (oldest file first) to `out`,
/// as CSV or JSON lines. Returns how many matched.
pub fn query(paths: &[PathBuf], filter: &Filter, csv: bool, out: &mut dyn Write) -> std::io::Result<u64> {
    let mut files: Vec<(u64, &PathBuf)> = Vec::new();
    for p in paths.iter().filter(|p| !is_digest(p)) {
        files.push((first_seq(p)?.unwrap_or(u64::MAX), p));
    }
    files.sort();
    if csv {
        writeln!(out, "{}", CSV_COLUMNS.join(","))?;
    }
    let mut n = 0;
    for (_, p) in files {
        for line in lines(p)? {
            let line = line?;
            let Ok(stored) = serde_json::from_str::<Stored>(&line) else { continue };
            if !filter.matches(&stored) {
                continue;
            }
            n += 1;
            if csv {
                writeln!(out, "{}", csv_row(&stored))?;
            } else {
                writeln!(out, "{line}")?;
            }
        }
    }
    Ok(n)
}

/// The trail files beside the active file `active`: itself, rotated
/// (`audit-….jsonl[.gz]`) and logrotate's (`audit.jsonl.1[.gz]`), with digests.
pub fn discover(active: &Path) -> std::io::Result<Vec<PathBuf>> {
    let dir = active.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let stem = crate::control::trail_writer::stem(active);
    let name = active.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir)?.filter_map(Result::ok) {
        let n = e.file_name().to_string_lossy().into_owned();
        let rotated = n.starts_with(&format!("{stem}-"))
            && [".jsonl", ".jsonl.gz", ".digest.json"].iter().any(|s| n.ends_with(s));
        let logrotated = n
            .strip_prefix(&format!("{name}."))
            .is_some_and(|rest| rest.trim_end_matches(".gz").chars().all(|c| c.is_ascii_digit()) && !rest.is_empty());
        if n == name || rotated || logrotated {
            found.push(e.path());
        }
    }
    found.sort();
    Ok(found)
}

/// The lines of a trail file, gzip or not.
pub fn lines(path: &Path) -> std::io::Result<std::io::Lines<Box<dyn BufRead>>> {
    Ok(reader(path)?.lines())
}

fn reader(path: &Path) -> std::io::Result<Box<dyn BufRead>> {
    let mut file = File::open(path)?;
    let mut magic = [0u8; 2];
    let gz = file.read(&mut magic)? == 2 && magic == [0x1f, 0x8b];
    let file = File::open(path)?;
    Ok(if gz {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    })
}

fn is_digest(p: &Path) -> bool {
    p.to_string_lossy().ends_with(".digest.json")
}

fn shown(p: &Path) -> String {
    p.display().to_string()
}

fn first_seq(p: &Path) -> std::io::Result<Option<u64>> {
    let first = lines(p)?.next().transpose()?;
    Ok(first
        .and_then(|l| chain::open(&l).and_then(|o| serde_json::from_str::<Meta>(&o.content).ok()))
        .and_then(|m| m.seq))
}

/// Digests given, plus those beside the data files.
fn load_digests(data: &[PathBuf], given: &[PathBuf]) -> std::io::Result<Vec<Digest>> {
    let mut paths: Vec<PathBuf> = given.to_vec();
    for d in data.iter().filter_map(|p| p.parent()) {
        let dir = if d.as_os_str().is_empty() { Path::new(".") } else { d };
        for e in std::fs::read_dir(dir)?.filter_map(Result::ok) {
            if is_digest(&e.path()) && !paths.contains(&e.path()) {
                paths.push(e.path());
            }
        }
    }
    let mut digests: Vec<Digest> = paths
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter_map(|t| serde_json::from_str(&t).ok())
        .collect();
    digests.sort_by_key(|d| d.body.first_seq);
    digests.dedup_by(|a, b| a.signature == b.signature);
    Ok(digests)
}

/// Walks one file's chain; stops at its first broken line.
fn check_file(path: &Path) -> std::io::Result<Checked> {
    let name = shown(path);
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    let mut all = Vec::new();
    for line in lines(path)? {
        let line = line?;
        sha2::Digest::update(&mut hasher, line.as_bytes());
        sha2::Digest::update(&mut hasher, b"\n");
        all.push(line);
    }
    let content_sha256 = crate::config::hex(&sha2::Digest::finalize(hasher));
    let mut c = Checked {
        name,
        first_seq: None,
        prev: None,
        last: None,
        lines: all.len() as u64,
        content_sha256,
        checkpoints: Vec::new(),
        unsealed: 0,
        problem: None,
    };
    c.problem = walk(&all, &mut c).err().map(|(line, what)| Problem { file: c.name.clone(), line, what });
    Ok(c)
}

type Broken = (u64, String);

/// The line-by-line check. `Err` names the first line that breaks the chain.
fn walk(all: &[String], c: &mut Checked) -> Result<(), Broken> {
    if all.is_empty() {
        return Err((0, "the file is empty: even its header line is gone".into()));
    }
    let mut prev: Option<Link> = None;
    let mut want: Option<u64> = None;
    for (i, line) in all.iter().enumerate() {
        let n = i as u64 + 1;
        let (opened, meta, seq) = parse(line).ok_or((n, "not a sealed audit line: changed or inserted".to_owned()))?;
        let p = match prev {
            Some(p) => p,
            None => start(&meta, c, seq).map_err(|what| (n, what))?,
        };
        let expected = want.unwrap_or(seq);
        if seq > expected {
            return Err((
                n,
                format!(
                    "seq jumps from {} to {seq}: {} line(s) removed before this line, or lines reordered",
                    expected.saturating_sub(1),
                    seq - expected
                ),
            ));
        }
        if seq < expected {
            return Err((n, format!("seq {seq} comes after seq {}: a line was inserted or moved here", expected - 1)));
        }
        if chain::link(&p, opened.content.as_bytes()) != opened.chain {
            return Err((n, mismatch(all.get(i + 1), &p, seq)));
        }
        if meta.sekisho_audit.as_deref() == Some("checkpoint") {
            let hex = crate::config::hex(&p);
            if meta.head.as_deref() != Some(hex.as_str()) {
                return Err((
                    n,
                    "the checkpoint's head is not the chain before it: lines before it were rewritten".into(),
                ));
            }
            let (time, sig) = (meta.time.clone().unwrap_or_default(), meta.sig.clone().unwrap_or_default());
            c.checkpoints.push(Checkpoint { line: n, time, head: hex, sig });
            c.unsealed = 0;
        } else {
            c.unsealed += 1;
        }
        prev = Some(opened.chain);
        want = Some(seq + 1);
        c.last = Some((opened.chain, seq));
    }
    Ok(())
}

/// The first line must be the file header; it gives where the chain starts.
fn start(meta: &Meta, c: &mut Checked, seq: u64) -> Result<Link, String> {
    if meta.sekisho_audit.as_deref() != Some("file") {
        return Err("the file does not start with its header line: lines were removed from its start".into());
    }
    let prev = meta.prev.as_deref().and_then(crate::config::decode_sha256).ok_or("the header has no `prev`")?;
    (c.first_seq, c.prev) = (Some(seq), Some(prev));
    Ok(prev)
}

/// A line whose hash does not match: inserted (the next line carries the
/// same seq and follows on from the line before) or changed.
fn mismatch(next: Option<&String>, prev: &Link, seq: u64) -> String {
    let follows = next
        .and_then(|l| parse(l))
        .is_some_and(|(o, _, s)| s == seq && chain::link(prev, o.content.as_bytes()) == o.chain);
    if follows {
        "a line was inserted here (the next line follows on from the line before this one)".into()
    } else {
        "line changed: its content does not match its chain hash".into()
    }
}

fn parse(line: &str) -> Option<(chain::Opened<'_>, Meta, u64)> {
    let opened = chain::open(line)?;
    let meta: Meta = serde_json::from_str(&opened.content).ok()?;
    let seq = meta.seq?;
    Some((opened, meta, seq))
}

/// Each file must continue from the one before it.
fn check_links(checked: &[Checked], report: &mut Report) {
    for pair in checked.windows(2) {
        let [a, b] = pair else { continue };
        let (Some((last, last_seq)), Some(prev), Some(first)) = (a.last, b.prev, b.first_seq) else { continue };
        if a.problem.is_some() {
            continue;
        }
        if prev != last || first != last_seq + 1 {
            report.problems.push(Problem {
                file: b.name.clone(),
                line: 1,
                what: format!(
                    "does not continue from {} (which ends at seq {last_seq}; this file starts at seq {first}): a file or lines between them are missing",
                    a.name
                ),
            });
        }
    }
}

/// Every file but the active one must match a signed digest; the digests
/// must chain by signature.
fn check_digests(checked: &[Checked], digests: &[Digest], pinned: Option<&VerifyingKey>, report: &mut Report) {
    let active = checked.last().map(|c| c.name.clone());
    for c in checked {
        let by_content = digests.iter().find(|d| d.body.content_sha256 == c.content_sha256);
        let Some(d) = by_content else {
            let by_name = digests.iter().find(|d| same_file(&d.body.file, &c.name));
            match (by_name, Some(&c.name) == active.as_ref()) {
                (Some(_), _) => report
                    .problems
                    .push(problem(c, "the file's content differs from its signed digest: changed after it was sealed")),
                (None, true) => report.notes.push(format!("{}: no digest yet (the active file)", c.name)),
                (None, false) => report.problems.push(problem(c, "no signed digest found for this rotated file")),
            }
            continue;
        };
        report.digests += 1;
        let key = pinned.copied().or_else(|| d.embedded_key());
        if !key.is_some_and(|k| d.verify(&k)) {
            report.problems.push(problem(c, "its digest's signature does not verify"));
        }
        let agrees = c.lines == d.body.lines
            && c.first_seq == Some(d.body.first_seq)
            && c.last.map(|(l, s)| (crate::config::hex(&l), s)) == Some((d.body.last_chain.clone(), d.body.last_seq));
        if !agrees {
            report.problems.push(problem(c, "the file's chain does not match its signed digest"));
        }
    }
    for pair in digests.windows(2) {
        let [a, b] = pair else { continue };
        if b.body.previous_signature.as_deref() != Some(a.signature.as_str()) {
            report.problems.push(Problem {
                file: b.body.file.clone(),
                line: 0,
                what: format!(
                    "its digest does not name the digest before it ({}): a digest is missing or was replaced",
                    a.body.file
                ),
            });
        }
    }
}

fn check_checkpoints(c: &Checked, key: Option<&VerifyingKey>, report: &mut Report) {
    let Some(key) = key else {
        if !c.checkpoints.is_empty() {
            report.notes.push(format!("{}: checkpoint signatures not checked (no key: give --public-key)", c.name));
        }
        return;
    };
    for cp in &c.checkpoints {
        report.checkpoints += 1;
        if !chain::verify_b64(key, chain::checkpoint_message(&cp.time, &cp.head).as_bytes(), &cp.sig) {
            report.problems.push(Problem {
                file: c.name.clone(),
                line: cp.line,
                what: "the checkpoint's signature does not verify: the lines before it were rewritten".into(),
            });
        }
    }
}

fn problem(c: &Checked, what: &str) -> Problem {
    Problem { file: c.name.clone(), line: 0, what: what.into() }
}

/// Whether a digest's file name is the file at `path` (compressed or not).
fn same_file(digest_name: &str, path: &str) -> bool {
    let base = Path::new(path).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    digest_name.trim_end_matches(".gz") == base.trim_end_matches(".gz")
}

fn csv_row(s: &Stored) -> String {
    let r = &s.record;
    let cells: [String; 17] = [
        r.time.clone(),
        s.replica.clone().unwrap_or_default(),
        s.seq.map(|n| n.to_string()).unwrap_or_default(),
        r.request_id.to_string(),
        r.user.as_deref().unwrap_or_default().to_owned(),
        r.device.as_deref().unwrap_or_default().to_owned(),
        r.client.map(|c| c.to_string()).unwrap_or_default(),
        r.host.to_string(),
        r.method.to_string(),
        r.path.to_string(),
        r.decision.to_string(),
        r.reason.as_deref().unwrap_or_default().to_owned(),
        r.rule.as_deref().unwrap_or_default().to_owned(),
        r.profile.as_deref().unwrap_or_default().to_owned(),
        r.status.to_string(),
        r.upstream_status.map(|n| n.to_string()).unwrap_or_default(),
        r.latency_ms.to_string(),
    ];
    cells.iter().map(|c| csv_cell(c)).collect::<Vec<_>>().join(",")
}

/// RFC 4180 quoting; a cell a spreadsheet would run as a formula (client
/// text such as a path starting with `=`) gets a leading `'`.
pub fn csv_cell(text: &str) -> String {
    let formula = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let text = if formula { format!("'{text}") } else { text.to_owned() };
    if text.contains([',', '"', '\n', '\r']) || formula {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

#[cfg(test)]
#[path = "trail_tests.rs"]
mod tests;
