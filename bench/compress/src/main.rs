//! Times flate2 (the backend sekisho builds with, or zlib-rs with
//! `--features zlib-rs`) compressing one audit
//! file at each level, in the same run, and prints CPU seconds per 100 MB,
//! microseconds per audit line and the compressed size.

use std::io::Write as _;

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: compress-bench <audit.jsonl>");
        std::process::exit(2);
    };
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cannot read `{path}`: {e}");
            std::process::exit(1);
        }
    };
    let lines = data.iter().filter(|b| **b == b'\n').count().max(1);
    println!("{} MB, {lines} lines", data.len() / 1_000_000);
    println!("| level | s per 100 MB | µs per line | compressed |");
    println!("| ---: | ---: | ---: | ---: |");
    // LEVELS="1 2 6" picks the levels; 1 (sekisho's) and 6 (flate2's default) otherwise.
    let levels: Vec<u32> = std::env::var("LEVELS")
        .map(|v| v.split_whitespace().filter_map(|l| l.parse().ok()).collect())
        .unwrap_or_else(|_| vec![1, 6]);
    for level in levels {
        let started = std::time::Instant::now();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        let out = enc.write_all(&data).and_then(|()| enc.finish()).unwrap_or_default();
        let secs = started.elapsed().as_secs_f64();
        let per_100mb = secs * 1e8 / data.len() as f64;
        let per_line = secs * 1e6 / lines as f64;
        println!("| {level} | {per_100mb:.2} | {per_line:.2} | {:.1}% |", 100.0 * out.len() as f64 / data.len() as f64);
    }
}
