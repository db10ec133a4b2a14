//! The municipality's device CA: `sekisho ca init` creates it, approving a
//! device can issue a client certificate from it (the private key goes to
//! the caller once and is never stored), and the HTTPS listener verifies
//! client certificates against it. A certificate only proves a device while
//! that device's record names the certificate's fingerprint and is
//! approved: revocation needs no CRL.

use std::path::Path;

use chrono::{Datelike, Duration, Utc};
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose, SanType};
use sha2::{Digest, Sha256};

use crate::tls::{write, TlsError};

/// A loaded device CA, able to issue client certificates.
pub struct DeviceCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    pem: String,
}

/// A freshly issued client certificate.
pub struct Issued {
    pub certificate_pem: String,
    pub private_key_pem: String,
    pub sha256: [u8; 32],
    pub not_after: chrono::NaiveDate,
    certificate_der: Vec<u8>,
    private_key_der: Vec<u8>,
}

impl Issued {
    /// The key, certificate and CA as a PKCS#12 file for installation
    /// (AES-256 with PBKDF2 and an HMAC-SHA256 MAC), protected by `password`.
    pub fn pkcs12(&self, ca: &DeviceCa, password: &str) -> Result<Vec<u8>, TlsError> {
        self.keystore(ca)?.writer(password).write().map_err(p12_error)
    }

    /// The same with the legacy encryption phones import (3DES and a SHA-1
    /// MAC): iOS 17 and Android 12 and older refuse the AES-256 form. Only
    /// for a file protected by a one-time password and handed over once.
    pub fn pkcs12_legacy(&self, ca: &DeviceCa, password: &str) -> Result<Vec<u8>, TlsError> {
        self.keystore(ca)?
            .writer(password)
            .encryption_algorithm(p12_keystore::EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc)
            .mac_algorithm(p12_keystore::MacAlgorithm::HmacSha1)
            .write()
            .map_err(p12_error)
    }

    fn keystore(&self, ca: &DeviceCa) -> Result<p12_keystore::KeyStore, TlsError> {
        let chain = [
            p12_keystore::Certificate::from_der(&self.certificate_der).map_err(p12_error)?,
            p12_keystore::Certificate::from_der(ca.cert.der()).map_err(p12_error)?,
        ];
        let entry = p12_keystore::PrivateKeyChain::new(&self.private_key_der, &self.sha256[..20], chain);
        let mut store = p12_keystore::KeyStore::new();
        store.add_entry("sekisho device", p12_keystore::KeyStoreEntry::PrivateKeyChain(entry));
        Ok(store)
    }
}

fn p12_error(e: p12_keystore::error::Error) -> TlsError {
    TlsError::Config(format!("pkcs#12: {e}"))
}

/// Creates the CA files; refuses to overwrite an existing CA.
pub fn init(cert: &Path, key: &Path) -> Result<(), TlsError> {
    if cert.exists() || key.exists() {
        return Err(TlsError::Config(format!(
            "`{}` or `{}` already exists; not overwriting a CA",
            cert.display(),
            key.display()
        )));
    }
    if let Some(dir) = cert.parent() {
        std::fs::create_dir_all(dir).map_err(|e| TlsError::Write(dir.display().to_string(), e))?;
    }
    let (ca, ca_key) = crate::tls::new_ca("sekisho device CA")?;
    write(key, ca_key.serialize_pem().as_bytes(), 0o600)?;
    write(cert, ca.pem().as_bytes(), 0o644)
}

impl DeviceCa {
    pub fn load(cert: &Path, key: &Path) -> Result<DeviceCa, TlsError> {
        let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| TlsError::Read(p.display().to_string(), e));
        let pem = read(cert)?;
        let key = KeyPair::from_pem(&read(key)?)?;
        let params = CertificateParams::from_ca_cert_pem(&pem)?;
        // Re-signing the same subject with the same key yields an issuer
        // that chains to the CA certificate on disk.
        let cert = params.self_signed(&key)?;
        Ok(DeviceCa { cert, key, pem })
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A client certificate for `device`, valid for `days` from today.
    pub fn issue(&self, device: &str, days: u32) -> Result<Issued, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, device);
        let uri = rcgen::Ia5String::try_from(format!("urn:sekisho:device:{device}"))
            .map_err(|e| TlsError::Config(e.to_string()))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let today = Utc::now().date_naive();
        let until = today + Duration::days(i64::from(days));
        params.not_before = rcgen::date_time_ymd(today.year(), today.month() as u8, today.day() as u8);
        params.not_after = rcgen::date_time_ymd(until.year(), until.month() as u8, until.day() as u8);
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(Issued {
            sha256: Sha256::digest(cert.der()).into(),
            certificate_pem: cert.pem(),
            private_key_pem: key.serialize_pem(),
            not_after: until,
            certificate_der: cert.der().to_vec(),
            private_key_der: key.serialize_der(),
        })
    }
}
