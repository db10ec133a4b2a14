//! Turns the Cabinet Office holiday list (`data/syukujitsu.csv`) into a
//! sorted Rust table at build time, so the policy crate never reads files at
//! run time. A malformed row fails the build with the file and line number.

use std::fmt;
use std::fmt::Write as _;
use std::path::PathBuf;

const CSV_PATH: &str = "data/syukujitsu.csv";
const HEADER: &str = "国民の祝日・休日月日,国民の祝日・休日名称";
const OUT_FILE: &str = "syukujitsu.rs";

/// Build-script error. `Debug` prints the plain message because that is what
/// cargo shows when `main` returns `Err`.
struct BuildError(String);

impl fmt::Debug for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for BuildError {
    fn from(message: String) -> Self {
        Self(message)
    }
}

struct Row {
    year: u16,
    month: u8,
    day: u8,
    name: String,
}

fn main() -> Result<(), BuildError> {
    println!("cargo:rerun-if-changed={CSV_PATH}");
    println!("cargo:rerun-if-changed=build.rs");

    let text = std::fs::read_to_string(CSV_PATH).map_err(|e| {
        format!(
            "{CSV_PATH}: cannot read as UTF-8 ({e}); the file must be the UTF-8 conversion of the Cabinet Office list"
        )
    })?;
    let rows = parse(&text)?;
    check_last_year_complete(&rows)?;

    let out_dir = std::env::var_os("OUT_DIR").ok_or_else(|| "OUT_DIR is not set".to_owned())?;
    let out_path = PathBuf::from(out_dir).join(OUT_FILE);
    std::fs::write(&out_path, render(&rows)?).map_err(|e| format!("cannot write {}: {e}", out_path.display()))?;
    Ok(())
}

/// Parses every data row, then sorts and rejects duplicate dates so the
/// runtime can binary-search the table.
fn parse(text: &str) -> Result<Vec<Row>, String> {
    // Tolerate a BOM and CRLF line ends: both appear in copies of this file
    // that went through spreadsheet tools.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, header)) if header.trim_end() == HEADER => {}
        Some((_, header)) => return Err(format!("{CSV_PATH}:1: expected header `{HEADER}`, found `{header}`")),
        None => return Err(format!("{CSV_PATH}: file is empty")),
    }

    let mut rows = Vec::new();
    for (index, line) in lines {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        let row = parse_row(line).map_err(|e| format!("{CSV_PATH}:{}: {e}: `{line}`", index + 1))?;
        rows.push(row);
    }
    if rows.is_empty() {
        return Err(format!("{CSV_PATH}: no data rows"));
    }

    rows.sort_by_key(|r| (r.year, r.month, r.day));
    for pair in rows.windows(2) {
        if let [a, b] = pair {
            if (a.year, a.month, a.day) == (b.year, b.month, b.day) {
                return Err(format!("{CSV_PATH}: date {}/{}/{} appears twice", a.year, a.month, a.day));
            }
        }
    }
    Ok(rows)
}

/// Parses `YYYY/M/D,name`.
fn parse_row(line: &str) -> Result<Row, String> {
    let (date, name) = line.split_once(',').ok_or_else(|| "expected `YYYY/M/D,name`".to_owned())?;
    let name = name.trim();
    if name.is_empty() || name.contains(',') {
        return Err("expected exactly one non-empty name field".to_owned());
    }
    let mut parts = date.trim().split('/');
    let (Some(y), Some(m), Some(d), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err("date is not `YYYY/M/D`".to_owned());
    };
    let year: u16 = y.parse().map_err(|_| format!("bad year `{y}`"))?;
    let month: u8 = m.parse().map_err(|_| format!("bad month `{m}`"))?;
    let day: u8 = d.parse().map_err(|_| format!("bad day `{d}`"))?;
    if !(1948..=9999).contains(&year) {
        return Err(format!("year {year} is outside the Act on National Holidays era"));
    }
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(format!("{year}/{month}/{day} is not a calendar date"));
    }
    Ok(Row { year, month, day, name: name.to_owned() })
}

fn days_in_month(year: u16, month: u8) -> u8 {
    // Gregorian leap year, written as a match rather than `% n == 0` because
    // clippy prefers `is_multiple_of`, which needs Rust 1.87 (MSRV is 1.85).
    let leap = matches!((year % 4, year % 100, year % 400), (0, 1.., _) | (_, _, 0));
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The runtime treats the last listed year as fully covered. Every year
/// since 1948 has 勤労感謝の日 on 11/23, so a last year ending earlier means
/// the file was truncated.
fn check_last_year_complete(rows: &[Row]) -> Result<(), String> {
    match rows.last() {
        Some(last) if (last.month, last.day) >= (11, 23) => Ok(()),
        Some(last) => Err(format!(
            "{CSV_PATH}: last row is {}/{}/{}; the last year looks truncated (no row on or after 11/23)",
            last.year, last.month, last.day
        )),
        None => Err(format!("{CSV_PATH}: no data rows")),
    }
}

fn render(rows: &[Row]) -> Result<String, String> {
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Err(format!("{CSV_PATH}: no data rows"));
    };
    let mut out = String::new();
    let fmt_err = |e: fmt::Error| format!("formatting generated table: {e}");
    writeln!(out, "// @generated by build.rs from {CSV_PATH}; do not edit.").map_err(fmt_err)?;
    writeln!(out, "pub(crate) const FIRST_YEAR: i32 = {};", first.year).map_err(fmt_err)?;
    writeln!(out, "pub(crate) const LAST_YEAR: i32 = {};", last.year).map_err(fmt_err)?;
    writeln!(out, "#[allow(dead_code, reason = \"the last listed date is stated for readers and tests\")]")
        .map_err(fmt_err)?;
    writeln!(out, "pub(crate) const LAST_LISTED: (u16, u8, u8) = ({}, {}, {});", last.year, last.month, last.day)
        .map_err(fmt_err)?;
    writeln!(out, "pub(crate) static OFFICIAL: &[(u16, u8, u8, &str)] = &[").map_err(fmt_err)?;
    for r in rows {
        // `{:?}` yields a valid Rust string literal with any escaping needed.
        writeln!(out, "    ({}, {}, {}, {:?}),", r.year, r.month, r.day, r.name).map_err(fmt_err)?;
    }
    writeln!(out, "];").map_err(fmt_err)?;
    Ok(out)
}
