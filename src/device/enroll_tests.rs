//! The bundle parsed back by independent readers: the `plist` crate for the
//! configuration profile, `openssl pkcs12` for the PKCS#12 file.

use std::process::Command;

use super::*;

fn issued() -> (tempfile::TempDir, DeviceCa, Issued) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
    crate::device::ca::init(&cert, &key).unwrap();
    let ca = DeviceCa::load(&cert, &key).unwrap();
    let issued = ca.issue("giin-iphone", 365).unwrap();
    (dir, ca, issued)
}

fn dict_str<'a>(d: &'a plist::Dictionary, key: &str) -> &'a str {
    d.get(key).and_then(plist::Value::as_string).unwrap_or_else(|| panic!("no string `{key}` in {d:?}"))
}

#[test]
fn the_configuration_profile_is_a_plist_with_the_identity_and_the_gateway_ca() {
    let (_dir, ca, issued) = issued();
    let server_ca = b"\x30\x03\x02\x01\x01";
    let otp = one_time_password();
    let bundle = bundle(&ca, &issued, "giin-iphone", "熊本市議会 <LINE WORKS> & 関所", Some(server_ca), &otp).unwrap();
    let root = plist::Value::from_reader_xml(bundle.mobileconfig.as_bytes()).unwrap();
    let top = root.as_dictionary().unwrap();
    assert_eq!(dict_str(top, "PayloadType"), "Configuration");
    assert_eq!(top.get("PayloadVersion").and_then(plist::Value::as_signed_integer), Some(1));
    assert!(dict_str(top, "PayloadDisplayName").contains("<LINE WORKS> & 関所"), "escaped and read back");
    let payloads = top.get("PayloadContent").and_then(plist::Value::as_array).unwrap();
    assert_eq!(payloads.len(), 2);
    let identity = payloads[0].as_dictionary().unwrap();
    assert_eq!(dict_str(identity, "PayloadType"), "com.apple.security.pkcs12");
    assert_eq!(identity.get("PayloadContent").and_then(plist::Value::as_data), Some(&bundle.pkcs12[..]));
    assert!(identity.get("Password").is_none(), "the password is never in the profile");
    let gateway = payloads[1].as_dictionary().unwrap();
    assert_eq!(dict_str(gateway, "PayloadType"), "com.apple.security.root");
    assert_eq!(gateway.get("PayloadContent").and_then(plist::Value::as_data), Some(&server_ca[..]));
    let uuids: Vec<&str> = [top, identity, gateway].iter().map(|d| dict_str(d, "PayloadUUID")).collect();
    assert!(uuids.iter().all(|u| u.len() == 36) && uuids[0] != uuids[1] && uuids[1] != uuids[2], "{uuids:?}");
    assert!(!bundle.mobileconfig.contains(&otp) && !bundle.android_steps.contains(&otp));
    assert!(bundle.android_steps.contains("giin-iphone.p12") && bundle.android_steps.contains("ワンタイムパスワード"));
}

#[test]
fn the_pkcs12_opens_with_the_one_time_password_only_in_openssl() {
    let (dir, ca, issued) = issued();
    let otp = one_time_password();
    let bundle = bundle(&ca, &issued, "giin-iphone", "関所", None, &otp).unwrap();
    let path = dir.path().join("giin-iphone.p12");
    std::fs::write(&path, &bundle.pkcs12).unwrap();
    let open = |password: &str| {
        Command::new("openssl")
            .args(["pkcs12", "-info", "-nodes", "-in"])
            .arg(&path)
            .args(["-passin", &format!("pass:{password}")])
            .output()
            .expect("openssl (Debian package `openssl`) is needed for this test")
    };
    let out = open(&otp);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("BEGIN PRIVATE KEY") && text.contains("BEGIN CERTIFICATE"), "{text}");
    assert!(text.contains("3DES") || text.contains("pbeWithSHA1And3-KeyTripleDES-CBC"), "legacy encryption: {text}");
    assert!(!open("wrong-password").status.success(), "another password does not open it");
    let otp_shape = otp.split('-').map(str::len).collect::<Vec<_>>();
    assert_eq!(otp_shape, [4, 4, 4, 4]);
    assert!(otp.bytes().all(|b| b == b'-' || ALPHABET.contains(&b)));
}
