//! The device side, for administrators, tests and devices without a full
//! agent yet: `sekisho agent keygen` makes a device key, `sekisho agent
//! token` mints an attestation for it. Keys are written 0600 and never
//! printed; only the public key is.

use std::path::Path;

use chrono::{NaiveDate, Utc};
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use rand::rngs::OsRng;
use sekisho_policy::attestation::{mint, Claims, SigningKey};
use sekisho_policy::device::{Os, Version};
use sekisho_policy::state::SecuritySoftware;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot read key `{0}`: {1}")]
    Read(String, std::io::Error),
    #[error("`{0}` is not a PKCS#8 PEM Ed25519 or P-256 private key")]
    Key(String),
    #[error("cannot encode the key: {0}")]
    Encode(String),
    #[error("{0}")]
    Write(#[from] crate::tls::TlsError),
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum KeyAlg {
    Ed25519,
    P256,
}

/// Generates a key into `out` (0600) and returns the registration JSON
/// fields `{"key_alg": ..., "public_key": ...}`.
pub fn keygen(alg: KeyAlg, out: &Path) -> Result<serde_json::Value, AgentError> {
    let (key, pem) = match alg {
        KeyAlg::Ed25519 => {
            let k = ed25519_dalek::SigningKey::generate(&mut OsRng);
            let pem = k.to_pkcs8_pem(Default::default()).map_err(|e| AgentError::Encode(e.to_string()))?;
            (SigningKey::Ed25519(k), pem.to_string())
        }
        KeyAlg::P256 => {
            let k = p256::ecdsa::SigningKey::random(&mut OsRng);
            let pem = p256::pkcs8::EncodePrivateKey::to_pkcs8_pem(&k, Default::default())
                .map_err(|e| AgentError::Encode(e.to_string()))?;
            (SigningKey::P256(k), pem.to_string())
        }
    };
    crate::tls::write(out, pem.as_bytes(), 0o600)?;
    let public = key.public();
    Ok(serde_json::json!({ "key_alg": public.alg(), "public_key": public.to_b64() }))
}

pub fn load_key(path: &Path) -> Result<SigningKey, AgentError> {
    let pem = std::fs::read_to_string(path).map_err(|e| AgentError::Read(path.display().to_string(), e))?;
    if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem) {
        return Ok(SigningKey::Ed25519(k));
    }
    <p256::ecdsa::SigningKey as p256::pkcs8::DecodePrivateKey>::from_pkcs8_pem(&pem)
        .map(SigningKey::P256)
        .map_err(|_| AgentError::Key(path.display().to_string()))
}

/// What a token asserts.
pub struct TokenSpec<'a> {
    pub device: &'a str,
    pub user: &'a str,
    pub audience: &'a str,
    pub os: Os,
    pub os_version: Version,
    pub security_software: Option<(String, NaiveDate)>,
    pub lifetime_secs: i64,
}

pub fn token(key: &SigningKey, spec: &TokenSpec<'_>) -> String {
    let now = Utc::now().timestamp();
    let claims = Claims {
        sub: spec.user.to_owned(),
        aud: spec.audience.to_owned(),
        iat: now,
        exp: now + spec.lifetime_secs,
        jti: format!("{:016x}", rand::random::<u64>()),
        os: spec.os,
        os_version: spec.os_version,
        security_software: spec.security_software.clone().map(|(name, updated)| SecuritySoftware { name, updated }),
    };
    mint(key, spec.device, &claims)
}
