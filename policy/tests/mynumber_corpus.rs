//! 我孫子市 kintone 利用規約 5.(2) (no 特定個人情報 in kintone), measured on a
//! deterministic corpus against the shipped `rules/abiko-kintone.toml`:
//! every labelled number in every supported encoding is refused, ordinary
//! 12-digit business data is not. `cargo test -p sekisho-policy --test
//! mynumber_corpus -- --nocapture` prints the figures quoted in
//! docs/policy-mapping.md.

#![allow(clippy::unwrap_used, clippy::panic, reason = "test code: a failed step is a failed test")]

mod common;
mod corpus;

use corpus::{Rng, BUSINESS, ENCODINGS};
use sekisho_policy::engine::{body_note, body_scanner, check_body};
use sekisho_policy::{DenyReason, Profile};

fn abiko() -> std::sync::Arc<Profile> {
    common::shipped_rules().profile("abiko-kintone").unwrap().clone()
}

/// What the gateway does with a body cut into up to three chunks:
/// refused, passed with a low-confidence note, or passed.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Refused,
    Noted,
    Passed,
}

fn judge(profile: &Profile, rng: &mut Rng, body: &[u8]) -> Outcome {
    let mut scanner = body_scanner(profile).unwrap();
    let a = rng.below(body.len() as u64 + 1) as usize;
    let b = a + rng.below((body.len() - a) as u64 + 1) as usize;
    let chunks = [&body[..a], &body[a..b], &body[b..]];
    for (i, chunk) in chunks.iter().enumerate() {
        if let Err(d) = check_body(profile, &mut scanner, chunk, i == 2) {
            assert_eq!(d.reason, DenyReason::SpecificPersonalInformation);
            return Outcome::Refused;
        }
    }
    if body_note(&scanner).is_some() {
        Outcome::Noted
    } else {
        Outcome::Passed
    }
}

const PER_ENCODING: usize = 300;
const PER_KIND: usize = 4000;

#[test]
fn abiko_5_2_every_labelled_number_in_every_supported_encoding_is_refused() {
    let profile = abiko();
    let mut rng = Rng::new(11);
    for (e, name) in ENCODINGS.iter().enumerate() {
        for _ in 0..PER_ENCODING {
            let (_, body) = corpus::labelled(&mut rng, e);
            assert_eq!(judge(&profile, &mut rng, body.as_bytes()), Outcome::Refused, "{name}: {body}");
        }
    }
    eprintln!(
        "labelled: {} numbers in {} encodings x 5 body shapes, split at random: all refused",
        PER_ENCODING * ENCODINGS.len(),
        ENCODINGS.len()
    );
}

#[test]
fn abiko_5_2_ordinary_12_digit_business_data_is_not_refused() {
    let profile = abiko();
    let mut rng = Rng::new(23);
    let (mut refused, mut noted, mut check_digit_only) = (0usize, 0usize, 0usize);
    let total = PER_KIND * BUSINESS.len();
    for (k, name) in BUSINESS.iter().enumerate() {
        let (mut r, mut n) = (0, 0);
        for _ in 0..PER_KIND {
            let (_, body) = corpus::business(&mut rng, k);
            // What the check digit alone says (the previous scanner refused these).
            check_digit_only += usize::from(
                body.split(|c: char| !c.is_ascii_digit())
                    .any(|run| run.len() == 12 && sekisho_policy::mynumber::check_digit_valid(&corpus::digits(run))),
            );
            match judge(&profile, &mut rng, body.as_bytes()) {
                Outcome::Refused => r += 1,
                Outcome::Noted => n += 1,
                Outcome::Passed => {}
            }
        }
        eprintln!("{name:36} refused {r:5} / {PER_KIND}, recorded (low confidence) {n:5}");
        (refused, noted) = (refused + r, noted + n);
    }
    let rate = refused as f64 / total as f64;
    eprintln!(
        "business data: {total} records, refused {refused} ({:.3} %), recorded low-confidence {noted} ({:.1} %)",
        rate * 100.0,
        noted as f64 * 100.0 / total as f64
    );
    eprintln!(
        "check digit alone (the previous scanner refused these): {check_digit_only} ({:.1} %)",
        check_digit_only as f64 * 100.0 / total as f64
    );
    assert!(rate < 0.001, "false positives {:.3} % of ordinary data", rate * 100.0);
}

#[test]
fn abiko_5_2_a_mention_of_my_number_near_another_12_digit_value_is_high_confidence_as_in_purview() {
    let profile = abiko();
    let mut rng = Rng::new(31);
    let n = 4000;
    let refused = (0..n)
        .filter(|_| {
            let (_, body) = corpus::mentions(&mut rng);
            judge(&profile, &mut rng, body.as_bytes()) == Outcome::Refused
        })
        .count();
    let rate = refused as f64 / n as f64;
    eprintln!(
        "mentions of マイナンバー with a 12-digit receipt number: refused {refused} / {n} ({:.1} %)",
        rate * 100.0
    );
    // About one value in eleven has a valid check digit: the known limit of
    // keyword proximity, stated in the mapping.
    assert!((0.05..0.14).contains(&rate), "{rate}");
}
