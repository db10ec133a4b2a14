//! The HTTP/1 wire guard reads every byte a client sends: whatever the
//! bytes and however they are split into reads, it must not panic, must
//! never release more than it was given, and must reach the same verdict.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sekisho::gateway::wire::{Guard, Limits, Scan};

fn run(data: &[u8], split: usize) -> (usize, Option<String>) {
    let mut guard = Guard::new(Limits::default());
    let mut pending = Vec::new();
    let mut released = 0;
    for piece in data.chunks(split.max(1)) {
        pending.extend_from_slice(piece);
        let (n, stop) = match guard.scan(&pending) {
            Scan::Release(n) => (n, None),
            Scan::Stop(n, v) => (n, Some(v.to_string())),
        };
        assert!(n <= pending.len());
        released += n;
        pending.drain(..n);
        if stop.is_some() {
            return (released, stop);
        }
    }
    (released, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    assert_eq!(run(rest, usize::from(split)), run(rest, rest.len()));
});
