//! Device attestation tokens: a compact JWS (`Device-Attestation` header)
//! signed by the device's registered key. This module owns the token format:
//! parsing, signature verification against the key in the state, and minting
//! (for the agent and tests). Whether a verified token is good enough for a
//! profile (audience, lifetime, posture) is the engine's call, not this
//! module's. It must never read the clock, touch I/O, or log a token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::device::{DeviceKey, Os, PublicKey, Version};
use crate::state::{Devices, SecuritySoftware};

/// The `typ` every token must carry, so no other JWT can be replayed here.
pub const TOKEN_TYPE: &str = "device-attestation+jwt";
/// Longest header value accepted; real tokens are about 500 bytes.
pub const MAX_TOKEN_LEN: usize = 4096;

/// A token whose signature matched its device's registered key.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    /// The `kid`: the registered device id.
    pub device: String,
    /// Fingerprint of the key that verified it; a cache compares it with the
    /// device's current key so a re-keyed device's old tokens stop passing.
    pub key_fingerprint: [u8; 32],
    pub claims: Claims,
}

/// The claims a device asserts about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    pub sub: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    pub os: Os,
    pub os_version: Version,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_software: Option<SecuritySoftware>,
}

/// Why a token's `iat`/`exp` do not hold at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    IssuedInFuture,
    Expired,
    TooLong,
}

impl Claims {
    /// Checks `iat` and `exp` at `now` (Unix seconds), allowing `leeway`
    /// seconds of clock skew and at most `max_lifetime` seconds of life.
    pub fn check_timing(&self, now: i64, leeway: i64, max_lifetime: i64) -> Result<(), Timing> {
        if self.iat > now + leeway {
            return Err(Timing::IssuedInFuture);
        }
        if self.exp + leeway <= now {
            return Err(Timing::Expired);
        }
        if self.exp <= self.iat || self.exp - self.iat > max_lifetime {
            return Err(Timing::TooLong);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestationError {
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    #[error("token `typ` is not `device-attestation+jwt`")]
    WrongType,
    #[error("token algorithm `{0}` does not match the device key")]
    Algorithm(String),
    #[error("device `{0}` is not registered")]
    UnknownDevice(String),
    #[error("signature does not verify with the device's registered key")]
    BadSignature,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    alg: String,
    typ: String,
    kid: String,
}

#[derive(Serialize)]
struct HeaderOut<'a> {
    alg: &'a str,
    typ: &'a str,
    kid: &'a str,
}

/// Parses `token` and checks its signature with the key registered for its
/// `kid` in `devices`. Any device status passes here: the engine decides
/// what a pending or revoked device may do.
pub fn verify(token: &str, devices: &Devices) -> Result<VerifiedToken, AttestationError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(AttestationError::Malformed("longer than 4096 bytes"));
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(AttestationError::Malformed("not three dot-separated parts"));
    };
    let header: Header = decode_json(h64, ("header is not base64url", "header is not the expected JSON"))?;
    if header.typ != TOKEN_TYPE {
        return Err(AttestationError::WrongType);
    }
    let device = devices.get(&header.kid).ok_or_else(|| AttestationError::UnknownDevice(header.kid.clone()))?;
    if header.alg != device.key.alg() {
        return Err(AttestationError::Algorithm(header.alg));
    }
    let signature = B64.decode(s64).map_err(|_| AttestationError::Malformed("signature is not base64url"))?;
    let signed = token.get(..h64.len() + 1 + p64.len()).unwrap_or_default().as_bytes();
    check_signature(&device.key, signed, &signature)?;
    let claims: Claims = decode_json(p64, ("claims are not base64url", "claims are not the expected JSON"))?;
    Ok(VerifiedToken { device: header.kid, key_fingerprint: device.key.fingerprint(), claims })
}

/// Decodes one base64url JSON part; `errors` are (not base64, not the JSON).
fn decode_json<T: serde::de::DeserializeOwned>(
    part: &str,
    errors: (&'static str, &'static str),
) -> Result<T, AttestationError> {
    let bytes = B64.decode(part).map_err(|_| AttestationError::Malformed(errors.0))?;
    serde_json::from_slice(&bytes).map_err(|_| AttestationError::Malformed(errors.1))
}

fn check_signature(key: &DeviceKey, signed: &[u8], signature: &[u8]) -> Result<(), AttestationError> {
    let ok = match key.public_key() {
        PublicKey::Ed25519(k) => {
            ed25519_dalek::Signature::from_slice(signature).is_ok_and(|sig| k.verify_strict(signed, &sig).is_ok())
        }
        PublicKey::P256(k) => {
            use p256::ecdsa::signature::Verifier as _;
            p256::ecdsa::Signature::from_slice(signature).is_ok_and(|sig| k.verify(signed, &sig).is_ok())
        }
    };
    ok.then_some(()).ok_or(AttestationError::BadSignature)
}

/// A device's private key, for minting tokens (agent, tests, benches).
pub enum SigningKey {
    Ed25519(ed25519_dalek::SigningKey),
    P256(p256::ecdsa::SigningKey),
}

impl SigningKey {
    pub fn public(&self) -> DeviceKey {
        match self {
            SigningKey::Ed25519(k) => DeviceKey::from(PublicKey::Ed25519(k.verifying_key())),
            SigningKey::P256(k) => DeviceKey::from(PublicKey::P256(*k.verifying_key())),
        }
    }
}

/// Signs `claims` as device `kid`. The inverse of [`verify`].
pub fn mint(key: &SigningKey, kid: &str, claims: &Claims) -> String {
    let public = key.public();
    let header = HeaderOut { alg: public.alg(), typ: TOKEN_TYPE, kid };
    // Serialising these plain structs cannot fail; an empty part would only
    // make the token unverifiable, never valid.
    let h = B64.encode(serde_json::to_vec(&header).unwrap_or_default());
    let p = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signing_input = format!("{h}.{p}");
    let sig = match key {
        SigningKey::Ed25519(k) => {
            use ed25519_dalek::Signer as _;
            k.sign(signing_input.as_bytes()).to_bytes().to_vec()
        }
        SigningKey::P256(k) => {
            use p256::ecdsa::signature::Signer as _;
            let sig: p256::ecdsa::Signature = k.sign(signing_input.as_bytes());
            sig.to_bytes().to_vec()
        }
    };
    format!("{signing_input}.{}", B64.encode(sig))
}

#[cfg(test)]
#[path = "attestation_tests.rs"]
mod tests;
