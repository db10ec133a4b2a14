//! Any body, cut anywhere: the scanner's verdict does not depend on the cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sekisho_policy::mynumber::Scanner;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else { return };
    let cut = usize::from(cut).min(body.len());
    let mut whole = Scanner::new();
    whole.feed(body);
    let mut split = Scanner::new();
    split.feed(&body[..cut]);
    split.feed(&body[cut..]);
    assert_eq!(whole.finish(), split.finish());
});
