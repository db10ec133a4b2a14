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

fn keywords() -> Arc<Keywords> {
    Arc::new(Keywords::new(&["kojin".to_owned(), "個人番号欄".to_owned()]).unwrap())
}

fn scan(text: &str) -> Option<Confidence> {
    let mut s = Scanner::new(keywords());
    s.feed(text.as_bytes());
    s.finish()
}

/// Digits of another script: `zero` is the code point of its 0.
fn script(s: &str, zero: u32) -> String {
    s.chars().map(|c| c.to_digit(10).map_or(c, |d| char::from_u32(zero + d).unwrap())).collect()
}

fn grouped(n: &str, sep: &str) -> String {
    format!("{}{sep}{}{sep}{}", &n[..4], &n[4..8], &n[8..])
}

/// `\uXXXX` for every character (surrogate pairs beyond the BMP).
fn json_escaped(s: &str) -> String {
    s.encode_utf16().map(|u| format!("\\u{u:04x}")).collect()
}

fn percent(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

#[test]
fn the_published_example_check_digits_hold() {
    // 123456789018 is the check-digit example used in the ordinance's explanations.
    assert!(check_digit_valid(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 8]));
    assert!(!check_digit_valid(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 9]));
    assert_eq!(with_check("12345678901"), "123456789018");
}

#[test]
fn a_labelled_number_is_high_confidence_in_every_encoding() {
    let n = with_check("12345678901");
    let cases = [
        format!(r#"{{"record":{{"kojin":{{"value":"{n}"}}}}}}"#),
        format!("name=%E5%B1%B1&kojin={}", grouped(&n, "+")),
        format!("個人番号：{}です", grouped(&n, "-")),
        format!("マイナンバー {}", script(&grouped(&n, "－"), 0xFF10)),
        format!("My Number: {}", grouped(&n, ".")),
        format!("MYNUMBER {}", grouped(&n, "\u{3000}")),
        format!("個人番号 {}", grouped(&n, "ー")),
        format!("個人番号 {}", grouped(&n, "・")),
        format!("個人番号 {}", grouped(&n, "\u{2212}")),
        format!(r#"{{"note":"マイナンバー {}"}}"#, json_escaped(&n)),
        format!(r#"{{"note":"{} {}"}}"#, json_escaped("個人番号"), json_escaped(&script(&n, 0xFF10))),
        format!(r#"{{"note":"個人番号 {}"}}"#, json_escaped(&script(&n, 0x1D7CE))),
        format!("kojin={}", percent(&script(&n, 0xFF10))),
        format!("kojin={}", percent(&format!(r#"{{"v":"{}"}}"#, json_escaped(&n)))),
        format!("<p>個人番号 {}</p>", n.chars().map(|c| format!("&#{};", c as u32)).collect::<String>()),
        format!(
            "<p>個人番号 {}</p>",
            script(&n, 0xFF10).chars().map(|c| format!("&#x{:X};", c as u32)).collect::<String>()
        ),
        format!("個人番号 {}", script(&n, 0x0660)),
        format!("個人番号 {}", script(&n, 0x0966)),
        format!("--b\r\nContent-Disposition: form-data; name=\"kojin\"\r\n\r\n{n}\r\n--b--"),
        format!("{n} is the individual number"),
    ];
    for text in cases {
        assert_eq!(scan(&text), Some(Confidence::High), "{text}");
    }
}

#[test]
fn the_300_character_proximity_is_counted_in_characters_both_ways() {
    let n = with_check("98765432109");
    let pad = |k: usize| "あ".repeat(k);
    assert_eq!(scan(&format!("個人番号{}{n}", pad(299))), Some(Confidence::High));
    assert_eq!(scan(&format!("個人番号{}{n}", pad(302))), Some(Confidence::Low));
    assert_eq!(scan(&format!("{n}{}マイナンバー", pad(299))), Some(Confidence::High));
    assert_eq!(scan(&format!("{n}{}マイナンバー", pad(302))), Some(Confidence::Low));
    assert_eq!(scan(&format!("{n}{}%E5%80%8B%E4%BA%BA%E7%95%AA%E5%8F%B7", pad(10))), Some(Confidence::High));
}

#[test]
fn a_field_code_counts_only_as_a_field_name() {
    let n = with_check("98765432109");
    assert_eq!(scan(&format!(r#"{{"kojin":{{"value":"{n}"}}}}"#)), Some(Confidence::High));
    assert_eq!(scan(&format!("a=1&kojin={n}")), Some(Confidence::High));
    assert_eq!(scan(&format!("kojin={n}")), Some(Confidence::High), "the first form field");
    assert_eq!(scan(&format!(r#"{{"kojinmei":"x","v":"{n}"}}"#)), Some(Confidence::Low), "a longer name");
    assert_eq!(scan(&format!("notkojin={n}")), Some(Confidence::Low), "a name that ends with it");
    assert_eq!(scan(&format!(r#"{{"個人番号欄":"{n}"}}"#)), Some(Confidence::High), "a Japanese field code");
}

#[test]
fn the_pattern_is_purviews_four_four_four() {
    let n = with_check("13572468024");
    for text in [n.clone(), grouped(&n, " "), format!("{} {}", &n[..4], &n[4..]), format!("{}-{}", &n[..8], &n[8..])] {
        assert_eq!(scan(&format!("個人番号 {text}")), Some(Confidence::High), "{text}");
    }
    let bad_check = format!("{}{}", &n[..11], (n.as_bytes()[11] - b'0' + 1) % 10);
    for text in [
        bad_check,
        format!("{n}7"),                      // thirteen digits: another identifier
        format!("0{n}"),                      // same on the left
        format!("{}-7777", grouped(&n, "-")), // sixteen digits (a card number)
        n[..11].to_owned(),                   // eleven digits
        format!("{}-{}-{}-{}", &n[..3], &n[3..6], &n[6..9], &n[9..]), // 3-3-3-3
        format!("{}--{}", &n[..4], &n[4..]),  // two separators in a row
        format!("{}.00", n),                  // an amount with decimals
        "03-1234-5678".to_owned(),
        "2026-11-21T10:00:00+09:00".to_owned(),
    ] {
        assert_eq!(scan(&format!("個人番号 {text}")), None, "{text}");
    }
}

#[test]
fn plainly_other_values_are_not_numbers_at_low_confidence_only() {
    // Each value has a valid check digit; alone it would be low confidence.
    let stamp = (0..)
        .map(|i: u32| format!("2026112{}{:04}", 4 + i / 2400 % 5, i % 2400))
        .find(|s| s.len() == 12 && is_timestamp(&digits(s)) && check_digit_valid(&digits(s)))
        .unwrap();
    let phone = (0..).map(|i: u32| format!("8190{i:08}")).find(|s| check_digit_valid(&digits(s))).unwrap();
    let order = (0..).map(|i: u32| format!("1000{i:08}")).find(|s| check_digit_valid(&digits(s))).unwrap();
    for text in [
        format!("scan_{stamp}.pdf"),
        format!(r#"{{"updated":"{stamp}"}}"#),
        format!("tel=%2B{phone}"),
        format!(r#"{{"tel":"+{phone}"}}"#),
        format!("ORD-{order}"),
        format!("INV{order}"),
        format!("No.{order}"),
        format!("#{order}"),
        format!("path/{order}"),
        format!("¥{order}"),
        format!("{order}円"),
    ] {
        assert_eq!(scan(&text), None, "{text}");
        assert_eq!(scan(&format!("マイナンバー: {text}")), Some(Confidence::High), "with a keyword: {text}");
    }
    assert_eq!(scan(&format!("受付 {order} 件")), Some(Confidence::Low), "a bare 12-digit value is low confidence");
}

fn digits(s: &str) -> [u8; 12] {
    let mut d = [0u8; 12];
    for (slot, b) in d.iter_mut().zip(s.bytes()) {
        *slot = b - b'0';
    }
    d
}

#[test]
fn a_number_split_across_chunks_is_found_even_inside_an_escape_or_character() {
    let n = with_check("11122233344");
    let text = format!("kojin={}&x={}", percent(&script(&n, 0xFF10)), json_escaped("マイナンバー"));
    let bytes = text.as_bytes();
    for cut in 0..bytes.len() {
        let mut s = Scanner::new(keywords());
        s.feed(&bytes[..cut]);
        s.feed(&bytes[cut..]);
        assert_eq!(s.finish(), Some(Confidence::High), "split at byte {cut}");
    }
    let mut s = Scanner::new(keywords());
    for b in bytes {
        s.feed(std::slice::from_ref(b));
    }
    assert_eq!(s.finish(), Some(Confidence::High), "one byte at a time");
}

#[test]
fn every_unicode_decimal_digit_block_reads_zero_to_nine() {
    for zero in DIGIT_ZEROS {
        for d in 0..10u32 {
            assert_eq!(digit_value(zero + d), Some(d as u8), "U+{:04X}", zero + d);
        }
    }
    assert_eq!(digit_value('①' as u32), None, "circled digits are not decimal digits");
    assert_eq!(digit_value('一' as u32), None);
}

proptest! {
    /// Any valid labelled number is found however the stream is cut, in any script.
    #[test]
    fn any_labelled_number_is_found_at_any_split(eleven in "[0-9]{11}", cut in 0usize..80, zero in prop::sample::select(vec![0x30u32, 0xFF10, 0x660, 0x1D7CE])) {
        let n = script(&with_check(&eleven), zero);
        let text = format!("個人番号 {n} です");
        let bytes = text.as_bytes();
        let cut = cut.min(bytes.len());
        let mut s = Scanner::new(keywords());
        s.feed(&bytes[..cut]);
        s.feed(&bytes[cut..]);
        prop_assert_eq!(s.finish(), Some(Confidence::High));
    }

    /// Arbitrary bytes never make the scanner panic, and the verdict does not depend on the cut.
    #[test]
    fn arbitrary_bytes_get_the_same_verdict_however_cut(bytes in proptest::collection::vec(any::<u8>(), 0..512), cut in 0usize..512) {
        let cut = cut.min(bytes.len());
        let mut whole = Scanner::new(keywords());
        whole.feed(&bytes);
        let mut split = Scanner::new(keywords());
        split.feed(&bytes[..cut]);
        split.feed(&bytes[cut..]);
        prop_assert_eq!(whole.finish(), split.finish());
    }
}
