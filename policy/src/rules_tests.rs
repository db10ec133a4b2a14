use chrono::NaiveDate;

use super::*;

const MINIMAL: &str = r#"
[profile]
name = "demo"
title = "Demo"
contact = "IT desk"
timezone = "Asia/Tokyo"
audience = "demo.localhost"

[[routes]]
host = "Demo.Localhost"
upstream = "http://127.0.0.1:8081"

[hours]
always = true

[network]
trusted = ["any"]

[roles.staff]
kinds = ["pc"]
ownership = ["issued"]
"#;

fn parse_err(text: &str) -> String {
    Profile::parse("rules/x.toml", text).unwrap_err().to_string()
}

#[test]
fn a_minimal_profile_gets_safe_defaults() {
    let p = Profile::parse("demo.toml", MINIMAL).unwrap();
    assert_eq!(p.routes[0].host, "demo.localhost");
    assert_eq!(p.routes[0].upstream, Upstream { tls: false, host: "127.0.0.1".into(), port: 8081 });
    assert_eq!(p.attestation.max_lifetime_secs.get(), 600);
    assert_eq!(p.attestation.leeway_secs, 60);
    assert_eq!(p.hours.open, Open::Always);
    assert_eq!(p.network.trusted, Trusted::Any);
}

#[test]
fn routes_match_hosts_without_case_or_port() {
    let rules = Rules::from_sources([("demo.toml", MINIMAL)]).unwrap();
    for host in ["demo.localhost", "DEMO.localhost:8443", "demo.localhost:443"] {
        assert_eq!(rules.route(host).map(|(p, _)| p.name.as_str()), Some("demo"), "{host}");
    }
    assert!(rules.route("other.localhost").is_none());
    assert!(rules.route("demo.localhost.evil").is_none());
    let dup =
        Rules::from_sources([("a.toml", MINIMAL), ("b.toml", &MINIMAL.replace("name = \"demo\"", "name = \"demo2\""))]);
    assert!(matches!(dup, Err(RulesError::DuplicateHost { .. })));
}

#[test]
fn typos_are_errors_with_file_line_and_column() {
    let e = parse_err(&MINIMAL.replace("always = true", "alwyas = true"));
    assert!(e.starts_with("rules/x.toml:14:"), "{e}");
    assert!(e.contains("alwyas"), "{e}");
}

#[test]
fn ipv4_mapped_networks_are_held_as_the_ipv4_networks_they_name() {
    let nets = r#"trusted = ["::ffff:10.0.0.0/104", "::ffff:192.0.2.7", "2001:db8::/32", "::/0"]
trusted_proxies = ["::ffff:127.0.0.1"]"#;
    let p = Profile::parse("x.toml", &MINIMAL.replace(r#"trusted = ["any"]"#, nets)).unwrap();
    let want: Vec<IpNet> = ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "::/0"].map(|n| n.parse().unwrap()).into();
    assert_eq!(p.network.trusted, Trusted::Cidrs(want));
    assert_eq!(p.network.trusted_proxies, vec!["127.0.0.1/32".parse::<IpNet>().unwrap()]);
}

#[test]
fn invalid_values_name_the_value_and_its_line() {
    let cases = [
        (MINIMAL.replace(r#"trusted = ["any"]"#, r#"trusted = ["10.0.0.0/33"]"#), 17, "10.0.0.0/33"),
        (MINIMAL.replace(r#"trusted = ["any"]"#, r#"trusted = ["10.0.0.1/8"]"#), 17, "10.0.0.0/8"),
        (MINIMAL.replace("always = true", r#"weekly = ["mon-fry 08:30-17:15"]"#), 14, "mon-fry"),
        (MINIMAL.replace("Asia/Tokyo", "Asia/Tokio"), 6, "Asia/Tokio"),
        (MINIMAL.replace("http://127.0.0.1:8081", "ftp://x"), 11, "ftp://x"),
        (MINIMAL.replace("\"pc\"", "\"laptop\""), 20, "laptop"),
    ];
    for (text, line, needle) in cases {
        let e = parse_err(&text);
        assert!(e.starts_with(&format!("rules/x.toml:{line}:")), "{e}");
        assert!(e.contains(needle), "{e}");
    }
}

#[test]
fn contradictions_are_refused() {
    let e = parse_err(&MINIMAL.replace("always = true", "always = true\nweekly = [\"mon 09:00-10:00\"]"));
    assert!(e.contains("exactly one"), "{e}");
    let e = parse_err(&MINIMAL.replace("[hours]", "[attestation]\nmax_lifetime_secs = 0\n\n[hours]"));
    assert!(e.contains("max_lifetime_secs"), "{e}");
    let e = parse_err(&MINIMAL.replace("audience", "valid_from = 2024-01-02\nvalid_until = 2024-01-01\naudience"));
    assert!(e.contains("before `valid_from`"), "{e}");
    let e = parse_err(&MINIMAL.replace("audience", "valid_until = 2024-01-01T10:00:00\naudience"));
    assert!(e.contains("date"), "{e}");
    let quoted =
        Profile::parse("q.toml", &MINIMAL.replace("audience", "valid_until = \"2023-05-31\"\naudience")).unwrap();
    assert_eq!(quoted.valid_until, NaiveDate::from_ymd_opt(2023, 5, 31));
}

#[test]
fn upstreams_parse_strictly() {
    let ok = [
        ("https://example.cybozu.com", true, "example.cybozu.com", 443),
        ("http://[::1]:8080", false, "::1", 8080),
        ("http://h:1/", false, "h", 1),
    ];
    for (s, tls, host, port) in ok {
        assert_eq!(s.parse::<Upstream>().unwrap(), Upstream { tls, host: host.into(), port }, "{s}");
    }
    for bad in
        ["example.com", "https://", "https://h/path", "https://h:0", "https://h:99999", "https://u@h", "http://::1:80"]
    {
        assert!(bad.parse::<Upstream>().is_err(), "{bad}");
    }
}

#[test]
fn path_patterns_match_segments_and_rests() {
    let p = |s: &str| PathPattern::try_from(s.to_owned()).unwrap();
    assert!(p("/k/guest/*/v1/plugin.json").matches("/k/guest/12/v1/plugin.json"));
    assert!(p("/k/guest/*/v1/plugin.json").matches("/K/Guest/12/V1/Plugin.json"));
    assert!(!p("/k/guest/*/v1/plugin.json").matches("/k/guest//v1/plugin.json"));
    assert!(!p("/k/guest/*/v1/plugin.json").matches("/k/guest/1/2/v1/plugin.json"));
    assert!(p("/drive/**").matches("/drive"));
    assert!(p("/drive/**").matches("/drive/a/b"));
    assert!(!p("/drive/**").matches("/drives/a"));
    // One trailing slash is the same resource to most servers; two are not.
    assert!(p("/k/v1/plugin.json").matches("/k/v1/plugin.json/"));
    assert!(!p("/k/v1/plugin.json").matches("/k/v1/plugin.json//"));
    assert!(!p("/k/v1/plugin.json").matches("/k/v1/plugin.json/x"));
    assert!(p("/k/v1/").matches("/k/v1/"));
    assert!(PathPattern::try_from("/a/**/b".to_owned()).is_err());
    assert!(PathPattern::try_from("a/b".to_owned()).is_err());
}

#[test]
fn strip_port_keeps_only_the_host() {
    for (given, host) in [
        ("app.localhost:8443", "app.localhost"),
        ("app.localhost", "app.localhost"),
        ("[::1]:443", "::1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
    ] {
        assert_eq!(super::strip_port(given), host, "{given}");
    }
}

#[test]
fn hsts_is_one_year_by_default_and_configurable_per_profile() {
    let cases: [(&str, Option<&str>); 5] = [
        ("", Some("max-age=31536000")),
        ("[hsts]\nmax_age_secs = 0\n", None),
        ("[hsts]\nmax_age_secs = 600\n", Some("max-age=600")),
        ("[hsts]\ninclude_subdomains = true\n", Some("max-age=31536000; includeSubDomains")),
        (
            "[hsts]\nmax_age_secs = 63072000\ninclude_subdomains = true\npreload = true\n",
            Some("max-age=63072000; includeSubDomains; preload"),
        ),
    ];
    for (extra, want) in cases {
        let p = Profile::parse("demo.toml", &format!("{MINIMAL}{extra}")).unwrap();
        assert_eq!(p.hsts.as_deref(), want, "{extra}");
    }
    let e = parse_err(&format!("{MINIMAL}[hsts]\npreload = true\n"));
    assert!(e.contains("rules/x.toml:") && e.contains("preload"), "{e}");
    assert!(parse_err(&format!("{MINIMAL}[hsts]\nmax_age = 5\n")).contains("max_age"));
}
