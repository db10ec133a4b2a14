//! A deterministic corpus for the 個人番号 detector (Abiko 5.(2)), made in
//! code (no downloads): labelled numbers written every way the scanner
//! claims to read, and ordinary municipal business data that carries
//! 12-digit values (telephone numbers, time stamps, order and receipt
//! numbers, amounts) in the shapes a kintone record, a form post, a CSV
//! upload or a multipart upload has. Used by `policy/tests/mynumber_corpus.rs`
//! (detection and false-positive rates) and `benches/micro.rs` (throughput).

#![allow(dead_code, clippy::unwrap_used, reason = "test data helpers")]

use sekisho_policy::mynumber::check_digit_valid;

/// xorshift64*: the same corpus on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn digits(&mut self, n: usize) -> String {
        (0..n).map(|_| char::from(b'0' + self.below(10) as u8)).collect()
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// A 12-digit string with a valid check digit.
pub fn my_number(rng: &mut Rng) -> String {
    let eleven = rng.digits(11);
    (0..=9u8).map(|c| format!("{eleven}{c}")).find(|s| check_digit_valid(&digits(s))).unwrap()
}

pub fn digits(s: &str) -> [u8; 12] {
    let mut d = [0u8; 12];
    for (slot, b) in d.iter_mut().zip(s.bytes()) {
        *slot = b.wrapping_sub(b'0');
    }
    d
}

/// Every way of writing a number the scanner claims to read.
pub const ENCODINGS: [&str; 18] = [
    "ascii",
    "ascii 4-4-4 hyphen",
    "ascii 4-4-4 space",
    "ascii 4-4-4 dot",
    "full-width",
    "full-width 4-4-4 full-width hyphen",
    "4-4-4 ideographic space",
    "4-4-4 長音符",
    "4-4-4 minus sign",
    "arabic-indic digits",
    "devanagari digits",
    "mathematical bold digits",
    "json \\u escapes",
    "json \\u escapes of full-width",
    "percent-encoded form",
    "percent-encoded full-width",
    "html numeric references",
    "form-encoded json escapes",
];

fn script(s: &str, zero: u32) -> String {
    s.chars().map(|c| c.to_digit(10).map_or(c, |d| char::from_u32(zero + d).unwrap())).collect()
}

fn grouped(n: &str, sep: &str) -> String {
    let c: Vec<char> = n.chars().collect();
    let part = |r: std::ops::Range<usize>| c[r].iter().collect::<String>();
    format!("{}{sep}{}{sep}{}", part(0..4), part(4..8), part(8..12))
}

fn json_escaped(s: &str) -> String {
    s.encode_utf16().map(|u| format!("\\u{u:04x}")).collect()
}

fn percent(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// The number `n` written in encoding `e` (an index into [`ENCODINGS`]).
pub fn encode(n: &str, e: usize) -> String {
    match e {
        0 => n.to_owned(),
        1 => grouped(n, "-"),
        2 => grouped(n, " "),
        3 => grouped(n, "."),
        4 => script(n, 0xFF10),
        5 => grouped(&script(n, 0xFF10), "－"),
        6 => grouped(n, "\u{3000}"),
        7 => grouped(n, "ー"),
        8 => grouped(n, "\u{2212}"),
        9 => script(n, 0x0660),
        10 => script(n, 0x0966),
        11 => script(n, 0x1D7CE),
        12 => json_escaped(n),
        13 => json_escaped(&script(n, 0xFF10)),
        14 => grouped(n, "+"),
        15 => percent(&script(n, 0xFF10)),
        16 => n.chars().map(|c| format!("&#{};", c as u32)).collect(),
        _ => percent(&json_escaped(n)),
    }
}

/// A labelled number in a realistic body: a kintone record whose field code
/// is configured, a free-text note naming it, a form post, a CSV upload or
/// a multipart part. Returns the content type and the body.
pub fn labelled(rng: &mut Rng, e: usize) -> (&'static str, String) {
    let n = my_number(rng);
    let v = encode(&n, e);
    let pad = "備考".repeat(rng.below(60) as usize);
    match rng.below(5) {
        0 => (
            "application/json",
            format!(r#"{{"app":12,"record":{{"氏名":{{"value":"山田 太郎"}},"kojin_bangou":{{"value":"{v}"}}}}}}"#),
        ),
        1 => ("application/json", format!(r#"{{"app":12,"record":{{"note":{{"value":"マイナンバー {pad}{v}"}}}}}}"#)),
        2 => ("application/x-www-form-urlencoded", format!("name=%E5%B1%B1%E7%94%B0&kojin_bangou={v}&submit=1")),
        3 => ("text/csv", format!("氏名,個人番号,住所\r\n山田 太郎,{v},我孫子市{pad}\r\n")),
        _ => (
            "multipart/form-data; boundary=xyz",
            format!("--xyz\r\nContent-Disposition: form-data; name=\"kojin_bangou\"\r\n\r\n{v}\r\n--xyz--\r\n"),
        ),
    }
}

/// Kinds of ordinary 12-digit business data.
pub const BUSINESS: [&str; 9] = [
    "telephone (E.164)",
    "telephone (domestic)",
    "time stamp in a field",
    "time stamp in a file name",
    "order number with a prefix",
    "receipt number (date + sequence)",
    "amount in yen",
    "sequential customer number",
    "amount in a table",
];

/// One ordinary record of kind `k` (an index into [`BUSINESS`]) carrying a
/// 12-digit value, in a realistic body. No My Number keyword or field code.
pub fn business(rng: &mut Rng, k: usize) -> (&'static str, String) {
    let twelve = rng.digits(12);
    let stamp = format!(
        "20{:02}{:02}{:02}{:02}{:02}",
        20 + rng.below(8),
        1 + rng.below(12),
        1 + rng.below(28),
        rng.below(24),
        rng.below(60)
    );
    let value = match k {
        0 => format!("+8190{}", rng.digits(8)),
        1 => format!("0{}-{}-{}", rng.pick(&["90", "80", "70", "3", "4"]), rng.digits(4), rng.digits(4)),
        2 => stamp.clone(),
        3 => format!("scan_{stamp}.pdf"),
        4 => format!("{}-{twelve}", rng.pick(&["ORD", "INV", "PO", "REQ"])),
        5 => format!("{}{}", &stamp[..8], rng.digits(4)),
        6 => format!("{twelve}円"),
        7 => twelve.clone(),
        _ => format!("¥{twelve}"),
    };
    let field = rng.pick(&["電話番号", "更新日時", "添付", "注文番号", "受付番号", "金額", "顧客番号", "備考"]);
    match rng.below(4) {
        0 => (
            "application/json",
            format!(r#"{{"app":7,"record":{{"{field}":{{"value":"{value}"}},"件名":{{"value":"会議室予約"}}}}}}"#),
        ),
        1 => (
            "application/x-www-form-urlencoded",
            format!("title=%E4%BC%9A%E8%AD%B0&value={}&n=3", value.replace('+', "%2B")),
        ),
        2 => ("text/csv", format!("日付,{field},担当\r\n2026-11-24,{value},総務課\r\n")),
        _ => (
            "multipart/form-data; boundary=xyz",
            format!("--xyz\r\nContent-Disposition: form-data; name=\"{field}\"\r\n\r\n{value}\r\n--xyz--\r\n"),
        ),
    }
}

/// Business data that mentions マイナンバー in its ordinary sense (a counter
/// handling card applications) with an unrelated 12-digit reception
/// number within 300 characters: Purview's definition calls this high
/// confidence, and so does the scanner. Measured separately.
pub fn mentions(rng: &mut Rng) -> (&'static str, String) {
    let receipt = rng.digits(12);
    (
        "application/json",
        format!(
            r#"{{"record":{{"件名":{{"value":"マイナンバーカード交付予約"}},"受付番号":{{"value":"{receipt}"}}}}}}"#
        ),
    )
}

/// About `bytes` of ordinary business bodies, concatenated (for the bench).
pub fn business_bytes(bytes: usize) -> Vec<u8> {
    let mut rng = Rng::new(7);
    let mut out = Vec::with_capacity(bytes + 512);
    let mut k = 0;
    while out.len() < bytes {
        out.extend_from_slice(business(&mut rng, k % BUSINESS.len()).1.as_bytes());
        k += 1;
    }
    out
}
