//! Raw HTTP/1 on a socket, for tests that write their own bytes: one
//! answer read whole, and a header of it.

use std::time::Duration;

use tokio::io::AsyncReadExt as _;

/// A header of `answer` (its head), by name in any case.
pub fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next()?;
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Reads one answer whose body has a `Content-Length`.
pub async fn read_answer<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = header(&text, "content-length").expect("a content-length").parse().unwrap();
            if got.len() >= end + 4 + length {
                return text;
            }
        }
        let n =
            tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("an answer in 5 s").unwrap();
        assert!(n > 0, "closed before the whole answer: {text}");
        got.extend_from_slice(&buf[..n]);
    }
}
