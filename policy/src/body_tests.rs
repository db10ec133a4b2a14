use proptest::prelude::*;

use super::*;

#[test]
fn a_form_field_is_read_once_decoded_and_a_second_copy_is_ambiguous() {
    let cases: [(&[u8], Field); 7] = [
        (b"username=tanaka&password=x", Field::One("tanaka".into())),
        (b"password=x&user%6Eame=t%2Etanaka", Field::One("t.tanaka".into())),
        (b"username=a+b", Field::One("a b".into())),
        (b"username=a&username=b", Field::Ambiguous),
        (b"username=%ZZ", Field::Ambiguous),
        (b"password=x", Field::Absent),
        (b"", Field::Absent),
    ];
    for (body, want) in cases {
        assert_eq!(form_field(body, "username"), want, "{}", String::from_utf8_lossy(body));
    }
}

#[test]
fn a_json_member_is_read_with_its_escapes_and_duplicates_are_ambiguous() {
    let cases: [(&str, Field); 8] = [
        (r#"{"username":"tanaka","password":"x"}"#, Field::One("tanaka".into())),
        (r#"{"user\u006eame":"tana\u006ba"}"#, Field::One("tanaka".into())),
        (r#"{"app":12}"#, Field::Absent),
        (r#"{"username":"a","username":"b"}"#, Field::Ambiguous),
        (r#"{"username":["a"]}"#, Field::Ambiguous),
        (r#"{"username":"a"} trailing"#, Field::Ambiguous),
        (r#"["username"]"#, Field::Ambiguous),
        (r#"{"nested":{"username":"a"}}"#, Field::Absent),
    ];
    for (body, want) in cases {
        assert_eq!(json_field(body.as_bytes(), "username"), want, "{body}");
    }
    assert_eq!(json_field(br#"{"app": 12}"#, "app"), Field::One("12".into()), "a number is read as its text");
}

#[test]
fn the_content_type_chooses_the_reader_and_an_unknown_one_is_sniffed() {
    let json = br#"{"username":"tanaka"}"#;
    assert_eq!(body_field(Some("application/json; charset=utf-8"), json, "username"), Field::One("tanaka".into()));
    assert_eq!(body_field(Some("text/plain"), json, "username"), Field::One("tanaka".into()));
    assert_eq!(body_field(None, b"username=tanaka", "username"), Field::One("tanaka".into()));
    assert_eq!(
        body_field(Some("Application/X-WWW-Form-Urlencoded"), b"username=tanaka", "username"),
        Field::One("tanaka".into())
    );
    assert_eq!(body_field(Some("application/json"), b"username=tanaka", "username"), Field::Ambiguous);
}

proptest! {
    /// Any bytes: a verdict, never a panic; a value found is in the input's alphabet.
    #[test]
    fn any_body_gets_a_verdict(body in proptest::collection::vec(any::<u8>(), 0..200), ct in "[a-z/+;= -]{0,30}") {
        let _ = body_field(Some(&ct), &body, "username");
        let _ = body_field(None, &body, "app");
    }

    /// A form with one `username` always yields exactly that value.
    #[test]
    fn one_encoded_value_round_trips(value in "[A-Za-z0-9._@ -]{1,20}", other in "[a-z]{1,8}") {
        prop_assume!(other != "username");
        let encoded: String = value.bytes().map(|b| match b {
            b' ' => "+".to_owned(),
            b'.' | b'@' | b'-' => format!("%{b:02X}"),
            _ => (b as char).to_string(),
        }).collect();
        let body = format!("{other}=1&username={encoded}&{other}2=2");
        prop_assert_eq!(form_field(body.as_bytes(), "username"), Field::One(value));
    }
}
