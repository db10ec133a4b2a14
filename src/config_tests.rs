//! `[store]`: the default, PostgreSQL, and every way to get it wrong, each
//! refused with a message naming what to do.

use super::*;

const BASE: &str = r#"
[gateway]
http = "127.0.0.1:8080"
data_dir = "data"
rules_dir = "rules"
audit_log = "data/audit.jsonl"

[tls]
cert = "c.pem"
key = "k.pem"

[admin]
listen = "127.0.0.1:9090"
bootstrap_token_file = "data/admin-token"
"#;

fn parse(store: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("/etc/sekisho/sekisho.toml"), &format!("{BASE}\n[store]\n{store}"))
}

#[test]
fn sqlite_in_the_data_directory_is_the_default() {
    let config = Config::parse(Path::new("/etc/sekisho/sekisho.toml"), BASE).unwrap();
    match config.store {
        StoreConfig::Sqlite { path } => assert_eq!(path, Path::new("/etc/sekisho/data/state.sqlite3")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn postgres_takes_a_url_and_a_password_from_a_file_or_a_variable() {
    let config = parse(
        "backend = \"postgres\"\nurl = \"postgres://sekisho@db1,db2/sekisho?target_session_attrs=read-write\"\n\
         password_file = \"pg-password\"\nca_cert = \"db-ca.pem\"\ntimeout_secs = 3",
    )
    .unwrap();
    let StoreConfig::Postgres(pg) = config.store else { panic!("not postgres") };
    assert_eq!(pg.password, Some(PasswordSource::File("/etc/sekisho/pg-password".into())));
    assert_eq!(pg.ca_cert.as_deref(), Some(Path::new("/etc/sekisho/db-ca.pem")));
    assert_eq!(pg.connect.get_hosts().len(), 2);
    assert_eq!(pg.connect.get_ssl_mode(), tokio_postgres::config::SslMode::Require, "a CA means TLS is required");
    assert_eq!(pg.timeout, std::time::Duration::from_secs(3));
    let config = parse("backend = \"postgres\"\nurl = \"host=db user=sekisho\"\npassword_env = \"PGPW\"").unwrap();
    let StoreConfig::Postgres(pg) = config.store else { panic!("not postgres") };
    assert_eq!(pg.password, Some(PasswordSource::Env("PGPW".into())));
    assert_eq!(pg.connect.get_ssl_mode(), tokio_postgres::config::SslMode::Disable);
}

#[test]
fn a_store_section_that_cannot_be_right_is_refused_with_what_to_do() {
    let cases = [
        ("backend = \"postgres\"\nurl = \"postgres://sekisho:secret@db/sekisho\"", "must not contain a password"),
        ("backend = \"postgres\"\nurl = \"host=db password=secret\"", "must not contain a password"),
        ("backend = \"postgres\"", "needs a `url`"),
        ("backend = \"postgres\"\nurl = \"postgres://db/s?sslmode=require\"", "needs `ca_cert`"),
        ("backend = \"postgres\"\nurl = \"postgres://db/s?sslmode=disable\"\nca_cert = \"ca.pem\"", "sslmode=disable"),
        ("backend = \"postgres\"\nurl = \"postgres://db/s\"\npassword_file = \"f\"\npassword_env = \"V\"", "not both"),
        ("backend = \"postgres\"\nurl = \"postgres://db/s\"\npath = \"x.sqlite3\"", "`path` is for"),
        ("backend = \"postgres\"\nurl = \"postgres://db/s\"\nclient_cert = \"c.pem\"", "both `client_cert`"),
        ("url = \"postgres://db/s\"", "are for `backend = \"postgres\"`"),
        ("backend = \"mysql\"", "unknown variant"),
        ("backend = \"postgres\"\nurl = \"postgres://db/s\"\npassword = \"x\"", "unknown field"),
    ];
    for (store, want) in cases {
        let message = parse(store).map(|_| ()).unwrap_err().to_string();
        assert!(message.contains(want), "{store:?}: {message}");
    }
}

#[test]
fn hex_is_two_lowercase_digits_per_byte_at_any_length() {
    let bytes: Vec<u8> = (0..=255u8).chain(0..=40).collect();
    for n in [0, 1, 31, 32, 33, 64, bytes.len()] {
        let want: String = bytes[..n].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(super::hex(&bytes[..n]), want);
        let mut appended = String::from("x");
        super::push_hex(&mut appended, &bytes[..n]);
        assert_eq!(appended, format!("x{want}"));
    }
}

#[test]
fn the_ipv6_prefix_of_one_client_is_64_unless_set_and_checked() {
    let path = Path::new("/etc/sekisho/sekisho.toml");
    assert_eq!(Config::parse(path, BASE).unwrap().limits.ipv6_prefix.bits(), 64);
    let set = Config::parse(path, &format!("{BASE}\n[limits]\nipv6_prefix = 128\n")).unwrap();
    assert_eq!(set.limits.ipv6_prefix.bits(), 128);
    let message = Config::parse(path, &format!("{BASE}\n[limits]\nipv6_prefix = 16\n")).unwrap_err().to_string();
    assert!(message.contains("`ipv6_prefix` must be 32..=128") && message.contains("`16`"), "{message}");
}

#[test]
fn the_minimum_body_rate_is_1024_unless_set_and_never_zero() {
    let path = Path::new("/etc/sekisho/sekisho.toml");
    assert_eq!(Config::parse(path, BASE).unwrap().limits.min_body_rate.get(), 1024);
    let set = Config::parse(path, &format!("{BASE}\n[limits]\nmin_body_rate = 64\n")).unwrap();
    assert_eq!(set.limits.min_body_rate.get(), 64);
    let message = Config::parse(path, &format!("{BASE}\n[limits]\nmin_body_rate = 0\n")).unwrap_err().to_string();
    assert!(message.contains("sekisho.toml:") && message.contains("nonzero"), "{message}");
}
