use proptest::prelude::*;

use super::*;

/// Feeds `input` in pieces of `split` bytes, releasing as told; returns the
/// bytes released and the violation, if any.
fn run(input: &[u8], split: usize) -> (Vec<u8>, Option<Violation>) {
    let mut guard = Guard::new(Limits::default());
    let mut pending = Vec::new();
    let mut out = Vec::new();
    for piece in input.chunks(split.max(1)) {
        pending.extend_from_slice(piece);
        let (n, stop) = match guard.scan(&pending) {
            Scan::Release(n) => (n, None),
            Scan::Stop(n, v) => (n, Some(v)),
        };
        out.extend(pending.drain(..n));
        if stop.is_some() {
            return (out, stop);
        }
    }
    (out, None)
}

fn verdict(input: &str) -> Result<usize, Violation> {
    match run(input.as_bytes(), input.len()) {
        (out, None) => Ok(out.len()),
        (_, Some(v)) => Err(v),
    }
}

const GET: &str = "GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n";

#[test]
fn well_formed_requests_are_released_whole_and_in_order() {
    let post = "POST /k/v1/record.json HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
    let chunked = "PUT /f HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;name=v\r\nhello\r\n0\r\n\r\n";
    let old = "GET / HTTP/1.0\r\n\r\n";
    let leading = "\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
    for input in [GET, post, chunked, old, leading] {
        assert_eq!(verdict(input), Ok(input.len()), "{input:?}");
    }
    let pipelined = format!("{GET}{post}{chunked}{GET}");
    assert_eq!(verdict(&pipelined), Ok(pipelined.len()));
}

#[test]
fn an_incomplete_head_is_held_back() {
    let partial = "GET / HTTP/1.1\r\nHost: x\r\n";
    assert_eq!(verdict(partial), Ok(0));
    let then = format!("{GET}GET /b HTTP/1.1\r\n");
    assert_eq!(verdict(&then), Ok(GET.len()), "the complete request passes, the partial one waits");
}

#[test]
fn each_wire_rule_is_enforced() {
    let cases: [(&str, Violation); 31] = [
        ("GET / HTTP/1.1\nHost: x\r\n\r\n", Violation::LineEnd),
        ("GET / HTTP/1.1\r\nHost: x\n\r\n", Violation::LineEnd),
        ("GET / HTTP/1.1\r\nHost: x\r\r\n\r\n", Violation::LineEnd),
        ("GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", Violation::ObsFold),
        ("GET / HTTP/1.1\r\nHost: x\r\n\tfolded\r\n\r\n", Violation::ObsFold),
        ("GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", Violation::ControlByte),
        ("GET / HTTP/1.1\r\nX: a\x7fb\r\n\r\n", Violation::ControlByte),
        ("GET  / HTTP/1.1\r\n\r\n", Violation::RequestLine),
        ("GET / HTTP/1.1 x\r\n\r\n", Violation::RequestLine),
        ("G(T / HTTP/1.1\r\n\r\n", Violation::RequestLine),
        ("GET / HTTP/2.0\r\n\r\n", Violation::Version),
        ("GET / http/1.1\r\n\r\n", Violation::Version),
        ("GET /a#frag HTTP/1.1\r\n\r\n", Violation::Target),
        ("GET /a{b} HTTP/1.1\r\n\r\n", Violation::Target),
        ("GET /caf\u{e9} HTTP/1.1\r\n\r\n", Violation::Target),
        ("GET / HTTP/1.1\r\nHost : x\r\n\r\n", Violation::HeaderName),
        ("GET / HTTP/1.1\r\n: x\r\n\r\n", Violation::HeaderName),
        ("POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", Violation::LengthAndChunked),
        ("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", Violation::ContentLength),
        ("POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n", Violation::ContentLength),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n", Violation::TransferEncoding),
        ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", Violation::TransferEncoding),
        (
            "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 3\r\n\r\nabc",
            Violation::UpgradeBody,
        ),
        ("\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n", Violation::RequestLine),
        ("GET admin/secret.txt HTTP/1.1\r\n\r\n", Violation::Target),
        ("GET a:/../admin/x HTTP/1.1\r\n\r\n", Violation::Target),
        ("GET foo:/echo HTTP/1.1\r\n\r\n", Violation::Target),
        ("OPTIONS * HTTP/1.1\r\n\r\n", Violation::Target),
        ("CONNECT x.localhost:443 HTTP/1.1\r\n\r\n", Violation::Target),
        ("GET http://x@h/ HTTP/1.1\r\n\r\n", Violation::Target),
        ("GET http://h%41/ HTTP/1.1\r\n\r\n", Violation::Target),
    ];
    for (input, want) in cases {
        assert_eq!(verdict(input), Err(want), "{input:?}");
    }
}

#[test]
fn chunked_bodies_are_framed_strictly() {
    let head = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let cases: [(&str, Violation); 7] = [
        ("5\nhello\r\n0\r\n\r\n", Violation::LineEnd),
        ("5;a=\x01\r\nhello\r\n0\r\n\r\n", Violation::Chunk),
        ("5\r\nhelloX\r\n0\r\n\r\n", Violation::Chunk),
        ("0\r\nX-Trailer: 1\r\n\r\n", Violation::Trailers),
        ("10000000000000000\r\n", Violation::Chunk),
        ("zz\r\n", Violation::Chunk),
        ("\r\n", Violation::Chunk),
    ];
    for (body, want) in cases {
        let input = format!("{head}{body}");
        let (out, v) = run(input.as_bytes(), input.len());
        assert_eq!(v, Some(want), "{body:?}");
        assert!(out.len() >= head.len(), "the head was released before the body broke a rule");
    }
}

#[test]
fn limits_bound_the_head() {
    let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(70 * 1024));
    assert_eq!(verdict(&big), Err(Violation::HeadTooLarge));
    let endless = "GET / HTTP/1.1\r\nX: a".to_owned() + &"a".repeat(70 * 1024);
    assert_eq!(verdict(&endless), Err(Violation::HeadTooLarge), "a line with no end is refused once too long");
    let many: String = (0..101).map(|i| format!("X-{i}: 1\r\n")).collect();
    assert_eq!(verdict(&format!("GET / HTTP/1.1\r\n{many}\r\n")), Err(Violation::TooManyHeaders));
}

#[test]
fn after_an_upgrade_the_stream_is_not_http() {
    let ws =
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\r\n\x01\x05hello\n";
    assert_eq!(verdict(ws), Ok(ws.len()));
}

#[test]
fn the_stream_tells_when_it_sits_between_messages() {
    let mut g = Guard::new(Limits::default());
    assert!(g.between_messages(0));
    assert_eq!(g.scan(b"GET / HT"), Scan::Release(0));
    assert!(!g.between_messages(8) && g.in_head());
    let mut g = Guard::new(Limits::default());
    assert_eq!(g.scan(GET.as_bytes()), Scan::Release(GET.len()));
    assert!(g.between_messages(0));
    let post = b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nab";
    assert_eq!(g.scan(post), Scan::Release(post.len()));
    assert!(!g.in_head(), "inside a body");
}

proptest! {
    /// However the bytes are split into reads, the guard releases the same
    /// bytes and finds the same violation.
    #[test]
    fn splitting_never_changes_the_verdict(
        input in proptest::collection::vec(prop_oneof![
            Just(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
            Just(b"POST /p HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc".to_vec()),
            Just(b"PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\n\r\n".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..12),
        ], 1..6),
        split in 1usize..40,
    ) {
        let input: Vec<u8> = input.concat();
        let whole = run(&input, input.len());
        prop_assert_eq!(run(&input, split), whole);
    }

    /// Every target the guard lets through is one the URI parser behind it reads.
    #[test]
    fn released_targets_parse(target in "(https?://[a-z0-9.:\\[\\]-]{0,12})?[/a-zA-Z0-9._~%!$&'()*+,;=:@?-]{0,30}") {
        let head = format!("GET {target} HTTP/1.1\r\n\r\n");
        if verdict(&head).is_ok() {
            prop_assert!(http::Uri::try_from(target.as_str()).is_ok(), "{}", target);
        }
    }

    /// Every head the guard releases is one the HTTP parser behind it reads
    /// without an error, with the same number of fields.
    #[test]
    fn released_heads_parse(
        method in "[A-Z]{1,7}",
        target in "/[a-zA-Z0-9._~%!$&'()*+,;=:@/?-]{0,30}",
        headers in proptest::collection::vec(("[A-Za-z0-9-]{1,12}", "[ -~]{0,20}"), 0..8),
    ) {
        let fields: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
        let head = format!("{method} {target} HTTP/1.1\r\n{fields}\r\n");
        if let Ok(n) = verdict(&head) {
            prop_assert_eq!(n, head.len());
            let mut parsed = [httparse::EMPTY_HEADER; 16];
            let mut req = httparse::Request::new(&mut parsed);
            let status = req.parse(head.as_bytes());
            prop_assert!(matches!(status, Ok(httparse::Status::Complete(m)) if m == n), "{:?}", status);
            prop_assert_eq!(req.headers.len(), headers.len());
            prop_assert!(http::Uri::try_from(target.as_str()).is_ok());
        }
    }

    /// The word-at-a-time check finds the same first bad byte as a byte-by-byte look.
    #[test]
    fn field_bytes_are_checked_as_byte_by_byte(
        value in proptest::collection::vec(prop_oneof![4 => 0x20u8..0x7f, 1 => any::<u8>(), 1 => Just(0x7fu8), 1 => Just(b'\t')], 0..80),
    ) {
        let slow = value.iter().copied().find(|b| !FIELD_BYTE[usize::from(*b)]);
        prop_assert_eq!(first_bad_field_byte(&value), slow);
    }

    #[test]
    fn target_chars_are_the_listed_ones(b in any::<u8>()) {
        prop_assert_eq!(is_target_char(b), b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:@/?[]".contains(&b));
    }
}

#[test]
fn a_violation_says_whether_its_request_head_already_went_on() {
    let mid = |input: &str| {
        let mut guard = Guard::new(Limits::default());
        assert!(matches!(guard.scan(input.as_bytes()), Scan::Stop(..)), "{input:?} was not refused");
        guard.refused_mid_message()
    };
    // In a head: nothing of the request reached the server.
    assert!(!mid("GET / HTTP/1.1\nHost: x\n\n"));
    assert!(!mid("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"));
    assert!(!mid(&format!("{GET}GET / HTTP/1.1\r\nX: a\x01\r\n\r\n")));
    // In a body: the head went on, and the server answers that request.
    assert!(mid("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;a\x01b\r\nx\r\n0\r\n\r\n"));
    assert!(mid("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Late: 1\r\n\r\n"));
}
