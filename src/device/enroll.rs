//! Enrollment bundles for certificate devices (熊本 第11条第1項第1号, 第13条):
//! what a councillor's phone or tablet installs to present its client
//! certificate. For iOS and iPadOS a configuration profile
//! (`.mobileconfig`: a `com.apple.security.pkcs12` identity payload and a
//! `com.apple.security.root` payload with the CA of the gateway's HTTPS
//! certificate); for Android the PKCS#12 file and the install steps in
//! Japanese. The PKCS#12 is protected by a one-time password that only the
//! issuing answer shows. This module builds the files; it must never store
//! a key or a password, or write anything to disk.

use base64::Engine as _;
use chrono::NaiveDate;

use crate::device::ca::{DeviceCa, Issued};
use crate::tls::TlsError;

/// The files one device installs, built at issue time.
pub struct Bundle {
    pub device: String,
    pub not_after: NaiveDate,
    /// `DEVICE.mobileconfig` (XML property list).
    pub mobileconfig: String,
    /// `DEVICE.p12`, protected by the one-time password.
    pub pkcs12: Vec<u8>,
    /// `android-ja.txt`: how to install `DEVICE.p12` on Android.
    pub android_steps: String,
}

impl Bundle {
    /// The file names and contents, for a download.
    pub fn files(&self) -> [(String, Vec<u8>); 3] {
        [
            (format!("{}.mobileconfig", self.device), self.mobileconfig.clone().into_bytes()),
            (format!("{}.p12", self.device), self.pkcs12.clone()),
            (format!("{}-android-ja.txt", self.device), self.android_steps.clone().into_bytes()),
        ]
    }
}

/// Letters and digits that cannot be mistaken for each other when read out
/// (no 0/O, 1/l/I).
const ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz";

/// A one-time password: 16 characters (about 93 bits) in groups of four.
pub fn one_time_password() -> String {
    let picks: Vec<char> = (0..16)
        .map(|_| char::from(ALPHABET.get(rand::random::<usize>() % ALPHABET.len()).copied().unwrap_or(b'x')))
        .collect();
    picks.chunks(4).map(|c| c.iter().collect::<String>()).collect::<Vec<_>>().join("-")
}

/// Builds the bundle for a freshly issued certificate. `server_ca_der` is
/// the CA of the gateway's HTTPS certificate when devices must be told to
/// trust it (a private CA); `title` names the service on the phone.
pub fn bundle(
    ca: &DeviceCa,
    issued: &Issued,
    device: &str,
    title: &str,
    server_ca_der: Option<&[u8]>,
    password: &str,
) -> Result<Bundle, TlsError> {
    // Legacy PKCS#12 encryption (3DES, SHA-1 MAC): what iOS 17 and Android
    // 12 and older import; the AES-256 form is refused there.
    let pkcs12 = issued.pkcs12_legacy(ca, password)?;
    Ok(Bundle {
        device: device.to_owned(),
        not_after: issued.not_after,
        mobileconfig: mobileconfig(device, title, &pkcs12, server_ca_der, issued.not_after),
        pkcs12,
        android_steps: android_steps(device, title, issued.not_after),
    })
}

/// The configuration profile, as an XML property list. It carries no
/// password: iOS asks for the PKCS#12's when the profile is installed.
pub fn mobileconfig(
    device: &str,
    title: &str,
    pkcs12: &[u8],
    server_ca_der: Option<&[u8]>,
    not_after: NaiveDate,
) -> String {
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let id = format!("jp.sekisho.device.{}", xml(device));
    let mut payloads = vec![payload(&[
        ("PayloadCertificateFileName", Value::Str(&format!("{device}.p12"))),
        ("PayloadContent", Value::Data(&b64(pkcs12))),
        ("PayloadDescription", Value::Str("この端末の利用登録を証明する端末証明書です。インストール時に、情報システム責任者から受け取ったワンタイムパスワードを入力してください。")),
        ("PayloadDisplayName", Value::Str(&format!("端末証明書 {device}（{not_after} まで）"))),
        ("PayloadIdentifier", Value::Str(&format!("{id}.identity"))),
        ("PayloadType", Value::Str("com.apple.security.pkcs12")),
        ("PayloadUUID", Value::Str(&uuid())),
        ("PayloadVersion", Value::Int(1)),
    ])];
    if let Some(der) = server_ca_der {
        payloads.push(payload(&[
            ("PayloadCertificateFileName", Value::Str("sekisho-gateway-ca.cer")),
            ("PayloadContent", Value::Data(&b64(der))),
            ("PayloadDescription", Value::Str("関所（アクセスゲートウェイ）のサーバー証明書を発行した認証局です。")),
            ("PayloadDisplayName", Value::Str("関所 ゲートウェイ認証局")),
            ("PayloadIdentifier", Value::Str(&format!("{id}.gateway-ca"))),
            ("PayloadType", Value::Str("com.apple.security.root")),
            ("PayloadUUID", Value::Str(&uuid())),
            ("PayloadVersion", Value::Int(1)),
        ]));
    }
    let outer = [
        ("PayloadContent", Value::Raw(&format!("<array>\n{}</array>", payloads.concat()))),
        ("PayloadDescription", Value::Str(&format!("{title} を登録端末から利用するための設定です。"))),
        ("PayloadDisplayName", Value::Str(&format!("{title} 端末証明書"))),
        ("PayloadIdentifier", Value::Str(&id)),
        ("PayloadOrganization", Value::Str(title)),
        ("PayloadRemovalDisallowed", Value::Raw("<false/>")),
        ("PayloadType", Value::Str("Configuration")),
        ("PayloadUUID", Value::Str(&uuid())),
        ("PayloadVersion", Value::Int(1)),
    ];
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \
         \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n<plist version=\"1.0\">\n{}</plist>\n",
        payload(&outer)
    )
}

/// The Android install steps, in Japanese.
pub fn android_steps(device: &str, title: &str, not_after: NaiveDate) -> String {
    [
        format!("{title} 端末証明書のインストール手順（Android）"),
        format!("端末: {device}　有効期限: {not_after}"),
        String::new(),
        format!("1. ファイル「{device}.p12」をこの端末に保存します（メールの添付やUSB接続で受け取ってください）。"),
        "2. 「設定」→「セキュリティとプライバシー」→「その他のセキュリティ設定」→「暗号化と認証情報」".to_owned(),
        "　→「証明書のインストール」→「VPN とアプリのユーザー証明書」を開きます。".to_owned(),
        "　（機種により「設定」→「セキュリティ」→「証明書をインストール」など名称が異なります。）".to_owned(),
        format!(
            "3. 保存した「{device}.p12」を選び、情報システム責任者から受け取ったワンタイムパスワードを入力します。"
        ),
        format!("4. 証明書の名前に「{title}」と入力し、「OK」を押します。"),
        format!("5. ブラウザで{title}を開き、証明書の選択を求められたら「{title}」を選びます。"),
        String::new(),
        "・ワンタイムパスワードは一度きりです。他人に教えないでください。".to_owned(),
        "・端末を紛失したときは、直ちに統括管理者に報告してください（第17条）。証明書は使えなくなります。".to_owned(),
        "・有効期限が近づいたら、情報システム責任者が更新した証明書を配布します。".to_owned(),
        String::new(),
    ]
    .join("\n")
}

enum Value<'a> {
    Str(&'a str),
    Data(&'a str),
    Int(i64),
    Raw(&'a str),
}

fn payload(entries: &[(&str, Value<'_>)]) -> String {
    let mut out = String::from("<dict>\n");
    for (key, value) in entries {
        out.push_str(&format!("<key>{}</key>", xml(key)));
        match value {
            Value::Str(s) => out.push_str(&format!("<string>{}</string>", xml(s))),
            Value::Data(b64) => out.push_str(&format!("<data>{b64}</data>")),
            Value::Int(n) => out.push_str(&format!("<integer>{n}</integer>")),
            Value::Raw(r) => out.push_str(r),
        }
        out.push('\n');
    }
    out.push_str("</dict>\n");
    out
}

/// XML text, escaped.
fn xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A random (version 4) UUID, upper case as Apple writes them.
fn uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02X}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

#[cfg(test)]
#[path = "enroll_tests.rs"]
mod tests;
