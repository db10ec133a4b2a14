use proptest::prelude::*;

use super::*;

/// Appends the valid check digit to eleven digits.
fn with_check(eleven: &str) -> String {
    for c in 0..=9u8 {
        let mut digits = [0u8; 12];
        for (i, ch) in eleven.bytes().enumerate() {
            digits[i] = ch - b'0';
        }
        digits[11] = c;
        if check_digit_valid(&digits) {
            return format!("{eleven}{c}");
        }
    }
    unreachable!("one digit is always valid")
}

fn scan(text: &str) -> bool {
    let mut s = Scanner::new();
    s.feed(text.as_bytes());
    s.finish()
}

fn fullwidth(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_digit() { char::from_u32(c as u32 - '0' as u32 + 0xff10).unwrap() } else { c })
        .collect()
}

#[test]
fn the_published_example_check_digits_hold() {
    // 123456789018 is the check-digit example used in the ordinance's explanations.
    assert!(check_digit_valid(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 8]));
    assert!(!check_digit_valid(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 9]));
    assert_eq!(with_check("12345678901"), "123456789018");
}

#[test]
fn numbers_are_found_in_json_forms_and_text_with_any_separator() {
    let n = with_check("12345678901");
    let grouped = format!("{}-{}-{}", &n[..4], &n[4..8], &n[8..]);
    let cases = [
        format!(r#"{{"record":{{"mynumber":{{"value":"{n}"}}}}}}"#),
        format!("name=%E5%B1%B1&no={}+{}+{}", &n[..4], &n[4..8], &n[8..]),
        format!("個人番号：{grouped}です"),
        format!("番号 {}", fullwidth(&grouped)),
        fullwidth(&n).replace('５', "５－"),
        format!("{}\u{3000}{}\u{3000}{}", &n[..4], &n[4..8], &n[8..]),
        n.clone(),
    ];
    for text in cases {
        assert!(scan(&text), "{text}");
    }
}

#[test]
fn wrong_check_digits_and_other_digit_runs_pass() {
    let n = with_check("98765432109");
    let bad_check = format!("{}{}", &n[..11], (n.as_bytes()[11] - b'0' + 1) % 10);
    for text in [
        bad_check,
        format!("{n}7"),                     // thirteen digits: another identifier
        format!("0{n}"),                     // same on the left
        n[..11].to_owned(),                  // eleven digits
        "03-1234-5678".to_owned(),           // a phone number
        format!("{}--{}", &n[..6], &n[6..]), // two separators split the run
        "2026-11-21T10:00:00+09:00".to_owned(),
    ] {
        assert!(!scan(&text), "{text}");
    }
}

#[test]
fn a_number_split_across_chunks_is_found_even_inside_a_character() {
    let text = format!("x={} y", fullwidth(&with_check("11122233344")));
    let bytes = text.as_bytes();
    for cut in 0..bytes.len() {
        let mut s = Scanner::new();
        s.feed(&bytes[..cut]);
        s.feed(&bytes[cut..]);
        assert!(s.finish(), "split at byte {cut}");
    }
    let mut s = Scanner::new();
    for b in bytes {
        s.feed(std::slice::from_ref(b));
    }
    assert!(s.finish(), "one byte at a time");
}

proptest! {
    /// Any valid number surrounded by letters is found however the stream is cut.
    #[test]
    fn any_valid_number_is_found_at_any_split(eleven in "[0-9]{11}", cut in 0usize..40, wide in any::<bool>()) {
        let n = with_check(&eleven);
        let n = if wide { fullwidth(&n) } else { n };
        let text = format!("abc {n} def");
        let bytes = text.as_bytes();
        let cut = cut.min(bytes.len());
        let mut s = Scanner::new();
        s.feed(&bytes[..cut]);
        s.feed(&bytes[cut..]);
        prop_assert!(s.finish());
    }

    /// Arbitrary bytes never make the scanner panic.
    #[test]
    fn arbitrary_bytes_are_scanned_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut s = Scanner::new();
        s.feed(&bytes);
        s.finish();
    }
}
