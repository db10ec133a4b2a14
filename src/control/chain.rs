//! Tamper evidence for the audit trail, after AWS CloudTrail's log file
//! integrity validation: every request line and every admin record carries
//! the SHA-256 of the one before it and of itself (a hash chain), every
//! rotated file gets a digest signed with the gateway's Ed25519 key that
//! names the signature of the digest before it, and the writer signs the
//! chain head at intervals (checkpoints). Owns the line format, the admin
//! record hash (one function for every store backend), digests and the
//! signing key file. It must never do I/O on the request path: only the
//! audit writer thread, the store and the `sekisho audit` commands call it.

use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _, EncodePublicKey as _};
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A chain value: the SHA-256 of the previous value and a line's content.
pub type Link = [u8; 32];

/// The chain value before the first line ever written.
pub const GENESIS: Link = [0; 32];

/// What every sealed line ends with: `,"chain":"<64 hex>"}`.
const SUFFIX_LEN: usize = r#","chain":""}"#.len() + 64;

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("cannot read the signing key `{0}`: {1}")]
    Read(String, std::io::Error),
    #[error("cannot write the signing key `{0}`: {1}")]
    Write(String, String),
    #[error("`{0}` is not an Ed25519 key in PEM: {1}")]
    Key(String, String),
}

/// The next chain value.
pub fn link(prev: &Link, content: &[u8]) -> Link {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(content);
    h.finalize().into()
}

/// Seals one JSON object (`{...}`) as line `seq` of the chain after `prev`:
/// adds `replica` and `seq`, then the chain value. Returns the line (no
/// newline) and its chain value. `object` must be a serialised JSON object.
pub fn seal(prev: &Link, seq: u64, replica: &str, object: &str) -> (String, Link) {
    let open = object.strip_suffix('}').unwrap_or(object);
    let mut content = String::with_capacity(open.len() + replica.len() + SUFFIX_LEN + 40);
    content.push_str(open);
    if open.len() > 1 {
        content.push(',');
    }
    content.push_str("\"replica\":");
    crate::control::audit_json::string(&mut content, replica);
    content.push_str(",\"seq\":");
    let _ = std::fmt::Write::write_fmt(&mut content, format_args!("{seq}"));
    content.push('}');
    let chain = link(prev, content.as_bytes());
    content.pop();
    content.push_str(",\"chain\":\"");
    crate::config::push_hex(&mut content, &chain);
    content.push_str("\"}");
    (content, chain)
}

/// A sealed line taken apart: the content its chain value covers, and the
/// chain value it states.
pub struct Opened<'a> {
    pub content: std::borrow::Cow<'a, str>,
    pub chain: Link,
}

/// Splits a sealed line; `None` when it does not end with a chain value.
pub fn open(line: &str) -> Option<Opened<'_>> {
    let at = line.len().checked_sub(SUFFIX_LEN)?;
    let (body, suffix) = (line.get(..at)?, line.get(at..)?);
    let hex = suffix.strip_prefix(",\"chain\":\"")?.strip_suffix("\"}")?;
    let chain = crate::config::decode_sha256(hex)?;
    Some(Opened { content: std::borrow::Cow::Owned(format!("{body}}}")), chain })
}

/// The fields of a line the verifier reads (every line has `seq`; the
/// gateway's own lines have `sekisho_audit`).
#[derive(Debug, Deserialize)]
pub struct Meta {
    pub seq: Option<u64>,
    pub sekisho_audit: Option<String>,
    pub prev: Option<String>,
    pub head: Option<String>,
    pub time: Option<String>,
    pub sig: Option<String>,
}

/// The first line of every file: where its chain continues from.
pub fn header(time: &str, prev: &Link) -> String {
    serde_json::json!({"sekisho_audit": "file", "time": time, "prev": crate::config::hex(prev)}).to_string()
}

/// A signed statement that the chain stood at `head` (the value of the line
/// before this one) at `time`.
pub fn checkpoint(key: &SigningKey, time: &str, head: &Link) -> String {
    let head = crate::config::hex(head);
    let sig = B64.encode(key.sign(checkpoint_message(time, &head).as_bytes()).to_bytes());
    serde_json::json!({"sekisho_audit": "checkpoint", "time": time, "head": head, "sig": sig}).to_string()
}

/// What a checkpoint signs.
pub fn checkpoint_message(time: &str, head_hex: &str) -> String {
    format!("sekisho-audit-checkpoint\n{time}\n{head_hex}")
}

/// The hash of one admin audit record, chained to the record before it.
/// Every store backend (SQLite, PostgreSQL) calls this one function, so a
/// trail moved between them verifies the same way.
pub fn admin_link(prev: &Link, id: i64, fields: [&str; 6], approver: Option<&str>) -> Link {
    let [time, actor, action, target, reason, source] = fields;
    let content = serde_json::json!([id, time, actor, action, target, reason, source, approver]).to_string();
    link(prev, content.as_bytes())
}

/// What a rotated file's digest states, signed (CloudTrail's digest file).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DigestBody {
    pub format: String,
    /// The rotated file's name when the digest was written (it may be
    /// compressed or renamed later; it is found again by `content_sha256`).
    pub file: String,
    pub replica: String,
    pub lines: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    /// The chain value the file's first line follows.
    pub prev_chain: String,
    pub last_chain: String,
    /// SHA-256 of the file's uncompressed bytes.
    pub content_sha256: String,
    pub closed: String,
    /// The signature of the digest before this one (None for the first).
    pub previous_signature: Option<String>,
    /// The public key that signed it (base64 of the 32 raw bytes).
    pub public_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Digest {
    #[serde(flatten)]
    pub body: DigestBody,
    pub signature: String,
}

pub const DIGEST_FORMAT: &str = "sekisho-audit-digest/1";

impl Digest {
    pub fn sign(key: &SigningKey, body: DigestBody) -> Digest {
        let message = serde_json::to_vec(&body).unwrap_or_default();
        let signature = B64.encode(key.sign(&message).to_bytes());
        Digest { body, signature }
    }

    /// Whether the signature holds for the body under `key`.
    pub fn verify(&self, key: &VerifyingKey) -> bool {
        let Ok(message) = serde_json::to_vec(&self.body) else { return false };
        verify_b64(key, &message, &self.signature)
    }

    /// The key named in the digest itself.
    pub fn embedded_key(&self) -> Option<VerifyingKey> {
        let bytes: [u8; 32] = B64.decode(&self.body.public_key).ok()?.try_into().ok()?;
        VerifyingKey::from_bytes(&bytes).ok()
    }
}

/// Checks a base64 Ed25519 signature over `message`.
pub fn verify_b64(key: &VerifyingKey, message: &[u8], sig_b64: &str) -> bool {
    let Some(bytes) = B64.decode(sig_b64).ok().and_then(|b| <[u8; 64]>::try_from(b).ok()) else { return false };
    key.verify(message, &ed25519_dalek::Signature::from_bytes(&bytes)).is_ok()
}

/// Base64 of a public key's raw bytes, as digests name it.
pub fn public_b64(key: &VerifyingKey) -> String {
    B64.encode(key.as_bytes())
}

/// Reads an existing signing key.
pub fn read_key(path: &Path) -> Result<SigningKey, ChainError> {
    let pem = std::fs::read_to_string(path).map_err(|e| ChainError::Read(path.display().to_string(), e))?;
    SigningKey::from_pkcs8_pem(&pem).map_err(|e| ChainError::Key(path.display().to_string(), e.to_string()))
}

/// Loads the signing key, creating it (mode 0600) when the file is missing.
pub fn load_or_create_key(path: &Path) -> Result<SigningKey, ChainError> {
    match std::fs::read_to_string(path) {
        Ok(_) => read_key(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SigningKey::generate(&mut rand::rngs::OsRng);
            let pem = key
                .to_pkcs8_pem(Default::default())
                .map_err(|e| ChainError::Write(path.display().to_string(), e.to_string()))?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| ChainError::Write(path.display().to_string(), e.to_string()))?;
            }
            crate::tls::write(path, pem.as_bytes(), 0o600)
                .map_err(|e| ChainError::Write(path.display().to_string(), e.to_string()))?;
            Ok(key)
        }
        Err(e) => Err(ChainError::Read(path.display().to_string(), e)),
    }
}

/// The public key as PEM (SubjectPublicKeyInfo), for auditors.
pub fn public_pem(key: &VerifyingKey) -> String {
    key.to_public_key_pem(Default::default()).unwrap_or_default()
}

/// Reads a public key PEM an auditor was given.
pub fn read_public_pem(path: &Path) -> Result<VerifyingKey, ChainError> {
    let pem = std::fs::read_to_string(path).map_err(|e| ChainError::Read(path.display().to_string(), e))?;
    VerifyingKey::from_public_key_pem(&pem).map_err(|e| ChainError::Key(path.display().to_string(), e.to_string()))
}

#[cfg(test)]
#[path = "chain_tests.rs"]
mod tests;
