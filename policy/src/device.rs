//! Device vocabulary shared by rules, state and attestation: kinds,
//! ownership, operating systems, dotted versions and public keys. Every type
//! here is already valid once built; parsing is the only way in.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What the device is (様式第1号: スマートフォン / タブレット / パソコン).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    Smartphone,
    Tablet,
    Pc,
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Smartphone => "smartphone",
            DeviceKind::Tablet => "tablet",
            DeviceKind::Pc => "pc",
        }
    }
}

/// Who owns the device: issued by the municipality, or personal (個人所有端末).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ownership {
    Issued,
    Personal,
}

impl Ownership {
    pub fn as_str(self) -> &'static str {
        match self {
            Ownership::Issued => "issued",
            Ownership::Personal => "personal",
        }
    }
}

/// Operating-system families an attestation may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Os {
    Windows,
    Macos,
    Ios,
    Ipados,
    Android,
    Linux,
    Chromeos,
}

impl Os {
    pub fn as_str(self) -> &'static str {
        match self {
            Os::Windows => "windows",
            Os::Macos => "macos",
            Os::Ios => "ios",
            Os::Ipados => "ipados",
            Os::Android => "android",
            Os::Linux => "linux",
            Os::Chromeos => "chromeos",
        }
    }
}

impl fmt::Display for Os {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lifecycle of a registration (第12条): filed, decided, and possibly revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    Pending,
    Approved,
    Rejected,
    Revoked,
}

impl DeviceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Pending => "pending",
            DeviceStatus::Approved => "approved",
            DeviceStatus::Rejected => "rejected",
            DeviceStatus::Revoked => "revoked",
        }
    }
}

/// A dotted version such as `17.4.1`, compared numerically with missing
/// parts as zero (`10` == `10.0`). Up to six parts, no allocation.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Version {
    parts: [u32; 6],
    len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid version `{0}`: expected dotted numbers such as `17.4.1`")]
pub struct VersionError(pub String);

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = [0u32; 6];
        let mut len = 0usize;
        for piece in s.split('.') {
            let ok = !piece.is_empty() && piece.len() <= 9 && piece.bytes().all(|b| b.is_ascii_digit());
            let slot = parts.get_mut(len);
            match (ok, slot) {
                (true, Some(slot)) => *slot = piece.parse().map_err(|_| VersionError(s.to_owned()))?,
                _ => return Err(VersionError(s.to_owned())),
            }
            len += 1;
        }
        Ok(Version { parts, len: len as u8 })
    }
}

impl TryFrom<String> for Version {
    type Error = VersionError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Version> for String {
    fn from(v: Version) -> String {
        v.to_string()
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.parts.iter().take(self.len as usize).enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.parts == other.parts
    }
}
impl Eq for Version {}
impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Version {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.parts.cmp(&other.parts)
    }
}

/// A device's registered public key. Parsed once at registration, with its
/// fingerprint computed then, so the request path never decodes or hashes
/// key material. Written down (the store's change log) as its algorithm and
/// base64url key, and parsed again on the way in.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "KeyText", into = "KeyText")]
pub struct DeviceKey {
    key: PublicKey,
    fingerprint: [u8; 32],
}

/// The key itself, by algorithm.
#[derive(Clone)]
pub enum PublicKey {
    Ed25519(ed25519_dalek::VerifyingKey),
    P256(p256::ecdsa::VerifyingKey),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("unknown key algorithm `{0}`: expected `EdDSA` or `ES256`")]
    Algorithm(String),
    #[error("public key is not base64url")]
    Encoding,
    #[error("public key is not a valid {0} point")]
    Point(&'static str),
}

impl DeviceKey {
    /// `alg` is the JOSE name (`EdDSA`, `ES256`); `b64` is base64url (no
    /// padding) of the raw Ed25519 key or the SEC1 P-256 point.
    pub fn parse(alg: &str, b64: &str) -> Result<Self, KeyError> {
        let raw =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64.trim()).map_err(|_| KeyError::Encoding)?;
        let key = match alg {
            "EdDSA" => {
                let bytes: [u8; 32] = raw.try_into().map_err(|_| KeyError::Point("Ed25519"))?;
                ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                    .map(PublicKey::Ed25519)
                    .map_err(|_| KeyError::Point("Ed25519"))?
            }
            "ES256" => p256::ecdsa::VerifyingKey::from_sec1_bytes(&raw)
                .map(PublicKey::P256)
                .map_err(|_| KeyError::Point("P-256"))?,
            other => return Err(KeyError::Algorithm(other.to_owned())),
        };
        Ok(DeviceKey::from(key))
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.key
    }

    /// The JOSE algorithm this key verifies; a token naming any other is refused.
    pub fn alg(&self) -> &'static str {
        match self.key {
            PublicKey::Ed25519(_) => "EdDSA",
            PublicKey::P256(_) => "ES256",
        }
    }

    /// base64url of the raw key, as accepted by [`DeviceKey::parse`].
    pub fn to_b64(&self) -> String {
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        match &self.key {
            PublicKey::Ed25519(k) => engine.encode(k.as_bytes()),
            PublicKey::P256(k) => engine.encode(k.to_encoded_point(true).as_bytes()),
        }
    }

    /// SHA-256 over algorithm and key: lets a cache notice a re-keyed device.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }
}

impl From<PublicKey> for DeviceKey {
    fn from(key: PublicKey) -> Self {
        let mut k = DeviceKey { key, fingerprint: [0; 32] };
        let mut h = Sha256::new();
        h.update(k.alg().as_bytes());
        h.update(k.to_b64().as_bytes());
        k.fingerprint = h.finalize().into();
        k
    }
}

/// A [`DeviceKey`] as text: `{"alg": "EdDSA", "public_key": "<base64url>"}`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyText {
    alg: String,
    public_key: String,
}

impl TryFrom<KeyText> for DeviceKey {
    type Error = KeyError;
    fn try_from(k: KeyText) -> Result<Self, KeyError> {
        DeviceKey::parse(&k.alg, &k.public_key)
    }
}

impl From<DeviceKey> for KeyText {
    fn from(k: DeviceKey) -> KeyText {
        KeyText { alg: k.alg().to_owned(), public_key: k.to_b64() }
    }
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceKey({}, {})", self.alg(), self.to_b64())
    }
}

impl PartialEq for DeviceKey {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint() == other.fingerprint()
    }
}
