//! Any body, cut anywhere: the scanner's verdict does not depend on the cut,
//! and it never panics whatever the bytes (escapes, broken UTF-8, surrogates).
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use sekisho_policy::mynumber::{Keywords, Scanner};

/// Built once: the matcher is immutable.
static KEYWORDS: OnceLock<Option<Arc<Keywords>>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else { return };
    let cut = usize::from(cut).min(body.len());
    let Some(keywords) = KEYWORDS.get_or_init(|| Keywords::new(&["kojin".to_owned()]).ok().map(Arc::new)).clone()
    else {
        return;
    };
    let mut whole = Scanner::new(keywords.clone());
    whole.feed(body);
    let mut split = Scanner::new(keywords);
    split.feed(&body[..cut]);
    split.feed(&body[cut..]);
    assert_eq!(whole.finish(), split.finish());
});
