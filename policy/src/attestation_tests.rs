use base64::Engine as _;

use super::*;
use crate::device::{DeviceKind, DeviceStatus, Ownership};
use crate::state::{Device, Devices};

fn device(key: &SigningKey) -> Devices {
    let d = Device {
        id: "d1".into(),
        owner: "u1".into(),
        kind: DeviceKind::Smartphone,
        ownership: Ownership::Personal,
        os: Os::Ios,
        os_version: "17.4".parse().unwrap(),
        security_software: None,
        key: key.public(),
        status: DeviceStatus::Approved,
        certificate: None,
        exception: None,
        previous_certificate: None,
    };
    Devices::from(vec![("d1".to_owned(), std::sync::Arc::new(d))])
}

fn claims() -> Claims {
    Claims {
        sub: "u1".into(),
        aud: "a".into(),
        iat: 1,
        exp: 2,
        jti: "j".into(),
        os: Os::Ios,
        os_version: "17.4".parse().unwrap(),
        security_software: None,
    }
}

fn ed() -> SigningKey {
    SigningKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[1; 32]))
}

fn p256() -> SigningKey {
    SigningKey::P256(p256::ecdsa::SigningKey::from_slice(&[2; 32]).unwrap())
}

#[test]
fn tokens_minted_with_either_algorithm_verify() {
    for key in [ed(), p256()] {
        let token = mint(&key, "d1", &claims());
        let v = verify(&token, &device(&key)).unwrap();
        assert_eq!((v.device.as_str(), &v.claims), ("d1", &claims()));
        assert_eq!(v.key_fingerprint, key.public().fingerprint());
    }
}

#[test]
fn a_key_round_trips_through_its_registration_form() {
    for key in [ed(), p256()] {
        let public = key.public();
        assert_eq!(DeviceKey::parse(public.alg(), &public.to_b64()).unwrap(), public);
    }
    assert_eq!(DeviceKey::parse("RS256", "AAAA").unwrap_err(), crate::device::KeyError::Algorithm("RS256".into()));
    assert!(DeviceKey::parse("EdDSA", "!!").is_err());
    assert!(DeviceKey::parse("ES256", "AAAA").is_err());
}

fn b64(s: &str) -> String {
    B64.encode(s)
}

#[test]
fn tampered_forged_and_confused_tokens_are_refused() {
    let key = ed();
    let devices = device(&key);
    let token = mint(&key, "d1", &claims());
    let (head, rest) = token.split_once('.').unwrap();
    let (_payload, sig) = rest.split_once('.').unwrap();

    let other = mint(&SigningKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[3; 32])), "d1", &claims());
    assert_eq!(verify(&other, &devices).unwrap_err(), AttestationError::BadSignature);

    let mut richer = claims();
    richer.sub = "u2".into();
    let swapped = format!("{head}.{}.{sig}", B64.encode(serde_json::to_vec(&richer).unwrap()));
    assert_eq!(verify(&swapped, &devices).unwrap_err(), AttestationError::BadSignature);

    let none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"device-attestation+jwt","kid":"d1"}"#),
        rest.split_once('.').unwrap().0
    );
    assert_eq!(verify(&none, &devices).unwrap_err(), AttestationError::Algorithm("none".into()));

    let es = mint(&p256(), "d1", &claims());
    assert_eq!(verify(&es, &devices).unwrap_err(), AttestationError::Algorithm("ES256".into()));

    let jwt = format!("{}.{}", b64(r#"{"alg":"EdDSA","typ":"JWT","kid":"d1"}"#), rest);
    assert_eq!(verify(&jwt, &devices).unwrap_err(), AttestationError::WrongType);

    let unknown = mint(&key, "d2", &claims());
    assert_eq!(verify(&unknown, &devices).unwrap_err(), AttestationError::UnknownDevice("d2".into()));
}

#[test]
fn malformed_input_is_an_error_not_a_panic() {
    let devices = device(&ed());
    for bad in ["", ".", "..", "a.b.c", "a.b.c.d", "ey.ey.ey", &"a".repeat(5000), "\u{3042}.\u{3044}.\u{3046}"] {
        assert!(matches!(verify(bad, &devices), Err(AttestationError::Malformed(_))), "{bad:.20}");
    }
    let extra = format!(
        "{}.{}.AAAA",
        b64(r#"{"alg":"EdDSA","typ":"device-attestation+jwt","kid":"d1","crit":["x"]}"#),
        b64("{}")
    );
    assert!(matches!(verify(&extra, &devices), Err(AttestationError::Malformed(_))));
}
