//! What a blocked person sees. Owns the one exhaustive mapping from every
//! kind of block (policy denials and gateway errors) to a status code, a
//! stable reason code and bilingual text, and renders it as an HTML page
//! (Japanese first, English below) or JSON. It must never show a token,
//! key or anything the client sent except the request id.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use sekisho_policy::{Deny, DenyReason, Profile};

/// Everything that can stop a request.
#[derive(Debug, Clone, Copy)]
pub enum Block<'a> {
    Policy {
        deny: &'a Deny,
        profile: &'a Profile,
    },
    UnknownHost,
    BadRequest(&'static str),
    UpstreamUnavailable,
    UpstreamTimeout,
    /// Over a rate limit; try again after this many seconds.
    RateLimited(u64),
    /// The gateway cannot record the request (audit log failing): fail closed.
    StateUnavailable,
    /// The client stopped sending its request body for too long.
    RequestTimeout,
}

/// A rendered answer, ready to write.
pub struct Answer {
    pub status: u16,
    pub code: &'static str,
    pub content_type: &'static str,
    pub body: String,
    pub retry_after_secs: Option<i64>,
}

/// The JSON answer: borrowed fields, written in one pass.
#[derive(serde::Serialize)]
struct JsonBody<'a> {
    reason: &'static str,
    message: &'static str,
    message_ja: &'static str,
    action: &'static str,
    request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    profile: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    contact: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    contact_hours: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
}

/// Japanese and English: the headline and what to do.
struct Text {
    ja: &'static str,
    ja_do: &'static str,
    en: &'static str,
    en_do: &'static str,
}

impl Block<'_> {
    pub fn status(&self) -> u16 {
        match self {
            Block::Policy { deny, .. } => policy_status(deny.reason),
            Block::UnknownHost => 421,
            Block::BadRequest(_) => 400,
            Block::UpstreamUnavailable => 502,
            Block::UpstreamTimeout => 504,
            Block::RateLimited(_) => 429,
            Block::StateUnavailable => 503,
            Block::RequestTimeout => 408,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Block::Policy { deny, .. } => deny.reason.code(),
            Block::UnknownHost => "unknown_host",
            Block::BadRequest(_) => "bad_request",
            Block::UpstreamUnavailable => "upstream_unavailable",
            Block::UpstreamTimeout => "upstream_timeout",
            Block::RateLimited(_) => "rate_limited",
            Block::StateUnavailable => "state_unavailable",
            Block::RequestTimeout => "request_timeout",
        }
    }

    /// Seconds for `Retry-After`, on the 503s.
    fn retry_after(&self, now: DateTime<Utc>) -> Option<i64> {
        let retry_at = match self {
            Block::Policy { deny, .. } if policy_status(deny.reason) == 503 => deny.retry_at,
            Block::RateLimited(secs) => return Some(i64::try_from(*secs).unwrap_or(60)),
            Block::StateUnavailable => return Some(30),
            _ => return None,
        };
        Some(retry_at.map_or(300, |at| (at - now).num_seconds().clamp(1, 86_400)))
    }

    fn text(&self) -> Text {
        match self {
            Block::Policy { deny, .. } => policy_text(deny.reason),
            Block::UnknownHost => Text {
                ja: "このアドレスは関所（sekisho）で扱っていません",
                ja_do: "アドレスに誤りがないか確認してください。",
                en: "This gateway does not serve this host name",
                en_do: "Check the address you entered.",
            },
            Block::BadRequest(_) => Text {
                ja: "要求の形式が正しくありません",
                ja_do: "ページを再読み込みしてください。続く場合は連絡先に伝えてください。",
                en: "The request was malformed",
                en_do: "Reload the page. If this continues, tell the contact below.",
            },
            Block::UpstreamUnavailable => Text {
                ja: "接続先のサービスに接続できません",
                ja_do: "しばらく待ってから再度お試しください。",
                en: "The service behind the gateway cannot be reached",
                en_do: "Wait a moment and try again.",
            },
            Block::StateUnavailable => Text {
                ja: "関所が記録を残せないため、安全のため通信を止めています",
                ja_do: "しばらく待ってから再度お試しください。続く場合は問い合わせ先へ。",
                en: "The gateway cannot record access right now, so it is blocking it to stay safe",
                en_do: "Wait a moment and try again. If this continues, tell the contact below.",
            },
            Block::RateLimited(_) => Text {
                ja: "短時間に多くの要求があったため、一時的に制限しています",
                ja_do: "少し待ってから再度お試しください。",
                en: "Too many requests in a short time",
                en_do: "Wait a moment and try again.",
            },
            Block::RequestTimeout => Text {
                ja: "送信が途中で止まったため、要求を打ち切りました",
                ja_do: "通信状態を確認して、もう一度送信してください。",
                en: "The request stopped arriving before it was complete",
                en_do: "Check your connection and send it again.",
            },
            Block::UpstreamTimeout => Text {
                ja: "接続先のサービスが時間内に応答しませんでした",
                ja_do: "しばらく待ってから再度お試しください。",
                en: "The service behind the gateway did not answer in time",
                en_do: "Wait a moment and try again.",
            },
        }
    }

    /// Renders the answer; HTML when the client prefers it, JSON otherwise.
    pub fn render(&self, html: bool, request_id: &str, now: DateTime<Utc>) -> Answer {
        let fresh = |id: &str| if html { self.html(id) } else { self.json(id) };
        let body = match self {
            Block::Policy { deny, profile } => {
                super::page_cache::body(deny, profile, html, request_id, fresh).unwrap_or_else(|| fresh(request_id))
            }
            _ => fresh(request_id),
        };
        Answer {
            status: self.status(),
            code: self.code(),
            content_type: if html { "text/html; charset=utf-8" } else { "application/json" },
            body,
            retry_after_secs: self.retry_after(now),
        }
    }

    /// The body as rendered without the cache.
    #[cfg(test)]
    pub fn fresh_body(&self, html: bool, request_id: &str) -> String {
        if html {
            self.html(request_id)
        } else {
            self.json(request_id)
        }
    }

    fn profile(&self) -> Option<&Profile> {
        match self {
            Block::Policy { profile, .. } => Some(profile),
            _ => None,
        }
    }

    /// When access is expected back, in the profile's zone.
    fn retry_at_local(&self) -> Option<String> {
        match self {
            Block::Policy { deny, profile } => {
                deny.retry_at.map(|at| at.with_timezone(&profile.timezone).format("%Y-%m-%d (%a) %H:%M %Z").to_string())
            }
            _ => None,
        }
    }

    /// The validity period, on `policy_not_in_force` pages.
    fn validity(&self) -> Option<String> {
        match self {
            Block::Policy { deny, profile } if deny.reason == DenyReason::PolicyNotInForce => {
                let show = |d: Option<chrono::NaiveDate>| d.map_or_else(|| "…".to_owned(), |d| d.to_string());
                Some(format!("{} – {}", show(profile.valid_from), show(profile.valid_until)))
            }
            _ => None,
        }
    }

    fn json(&self, request_id: &str) -> String {
        let t = self.text();
        let (policy, retry_at) = match self {
            Block::Policy { deny, profile } => {
                (Some((deny, profile)), deny.retry_at.map(|at| at.with_timezone(&profile.timezone).to_rfc3339()))
            }
            _ => (None, None),
        };
        let body = JsonBody {
            reason: self.code(),
            message: t.en,
            message_ja: t.ja,
            action: t.en_do,
            request_id,
            rule: policy.map(|(d, _)| d.rule.as_ref()),
            profile: policy.map(|(_, p)| p.name.as_str()),
            contact: policy.map(|(_, p)| p.contact.as_str()),
            contact_hours: policy.and_then(|(_, p)| p.contact_hours.as_deref()),
            retry_at,
            detail: match self {
                Block::BadRequest(why) => Some(why),
                _ => None,
            },
        };
        serde_json::to_string(&body).unwrap_or_default()
    }

    fn html(&self, request_id: &str) -> String {
        let t = self.text();
        let service = self.profile().map_or("sekisho", |p| p.title.as_str());
        let contact = self.profile().map_or("システム管理者 / your IT administrator", |p| p.contact.as_str());
        let contact_hours = self.profile().and_then(|p| p.contact_hours.as_deref());
        let retry = self.retry_at_local();
        let mut page = String::with_capacity(3072);
        let _ = write!(
            page,
            "<!doctype html>\n<html lang=\"ja\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{ja} | sekisho</title><style>{CSS}</style></head><body><main>\
             <p class=\"svc\">{service}</p><h1>{ja}</h1><p>{ja_do}</p>",
            ja = esc(t.ja),
            ja_do = esc(t.ja_do),
            service = esc(service),
        );
        if let Some(at) = &retry {
            let _ = write!(page, "<p class=\"when\">再開予定 / Expected back: <strong>{}</strong></p>", esc(at));
        }
        if let Some(period) = self.validity() {
            let _ = write!(page, "<p class=\"when\">有効期間 / Terms in force: <strong>{}</strong></p>", esc(&period));
        }
        let _ = writeln!(
            page,
            "<p>問い合わせ先: {contact}{hours}</p><hr lang=\"en\"><h2 lang=\"en\">{en}</h2><p lang=\"en\">{en_do}</p>\
             <p lang=\"en\">Contact: {contact}</p><dl><dt>理由 / Reason</dt><dd><code>{code}</code></dd>\
             <dt>受付番号 / Request ID</dt><dd><code>{rid}</code></dd></dl></main></body></html>",
            contact = esc(contact),
            hours = contact_hours.map(|h| format!("（受付: {}）", esc(h))).unwrap_or_default(),
            en = esc(t.en),
            en_do = esc(t.en_do),
            code = self.code(),
            rid = esc(request_id),
        );
        page
    }
}

const CSS: &str =
    "body{font-family:system-ui,'Hiragino Sans','Noto Sans JP',sans-serif;background:#f5f5f0;color:#222;margin:0}\
main{max-width:40rem;margin:3rem auto;background:#fff;padding:2rem;border-top:6px solid #b22;border-radius:4px}\
h1{font-size:1.4rem}h2{font-size:1.1rem;color:#444}.svc{color:#666;margin:0}.when{background:#ffe;padding:.5rem}\
dt{font-weight:bold;margin-top:.5rem}code{background:#eee;padding:0 .3rem}";

/// 503 for blocks that lift by themselves, 403 for the rest.
fn policy_status(reason: DenyReason) -> u16 {
    match reason {
        DenyReason::Maintenance | DenyReason::EmergencyStop => 503,
        DenyReason::PolicyNotInForce
        | DenyReason::UntrustedNetwork
        | DenyReason::AttestationMissing
        | DenyReason::AttestationInvalid
        | DenyReason::DeviceUnknown
        | DenyReason::DevicePending
        | DenyReason::DeviceRevoked
        | DenyReason::UserNotPermitted
        | DenyReason::UserSuspended
        | DenyReason::DeviceNotPermitted
        | DenyReason::OsOutdated
        | DenyReason::SecuritySoftwareMissing
        | DenyReason::SecuritySoftwareOutdated
        | DenyReason::Holiday
        | DenyReason::OutsideHours
        | DenyReason::UserRestricted
        | DenyReason::FeatureNotPermitted
        | DenyReason::IntegrationNotApproved
        | DenyReason::AccountMismatch
        | DenyReason::SpecificPersonalInformation => 403,
    }
}

fn policy_text(reason: DenyReason) -> Text {
    let t = |ja, ja_do, en, en_do| Text { ja, ja_do, en, en_do };
    match reason {
        DenyReason::PolicyNotInForce => t(
            "このサービスの利用規約は有効期間外です",
            "利用規約の有効期間が終了したか、まだ始まっていません。新しい期間が定められるまで利用できません。",
            "The terms of use for this service are not in force",
            "The terms have expired or have not started yet. Access resumes once a new period is set.",
        ),
        DenyReason::EmergencyStop => t(
            "緊急停止中です",
            "セキュリティ上の理由で、管理者がこのサービスの利用を一時停止しています。再開のお知らせをお待ちください。",
            "Access is suspended by an emergency stop",
            "An administrator has stopped this service for security reasons. Wait for the all-clear.",
        ),
        DenyReason::Maintenance => t(
            "メンテナンス中です",
            "メンテナンスが終わるまでお待ちください。",
            "The service is under maintenance",
            "Please wait until the maintenance ends.",
        ),
        DenyReason::UntrustedNetwork => t(
            "接続元のネットワークは許可されていません",
            "庁内ネットワークなど、許可されたネットワークから接続してください。公衆Wi-Fiからは利用できません。",
            "Your network is not permitted",
            "Connect from an approved network, such as the office network. Public Wi-Fi is not allowed.",
        ),
        DenyReason::AttestationMissing => t(
            "登録済み端末であることを確認できません",
            "登録済みの端末から接続してください。ブラウザでは端末証明書の導入が、アプリでは sekisho エージェントの起動が必要です。",
            "Your device could not be identified",
            "Connect from a registered device: browsers need its device certificate installed, apps need the sekisho agent running.",
        ),
        DenyReason::AttestationInvalid => t(
            "端末証明が無効です",
            "端末証明の期限切れ、時刻のずれ、または改ざんの可能性があります。エージェントを再起動して再度お試しください。",
            "Your device attestation is not valid",
            "It may have expired, the clock may be wrong, or it was altered. Restart the agent and try again.",
        ),
        DenyReason::DeviceUnknown => t(
            "この端末は登録されていません",
            "利用端末の登録申請（様式第1号）を提出し、承認を受けてください。",
            "This device is not registered",
            "File a device registration application and wait for approval.",
        ),
        DenyReason::DevicePending => t(
            "この端末の登録申請は審査中です",
            "情報システム責任者の承認をお待ちください。",
            "This device's registration is awaiting approval",
            "Wait until the registration is approved.",
        ),
        DenyReason::DeviceRevoked => t(
            "この端末の利用登録は取り消されています",
            "紛失・盗難の届出などにより、この端末は利用できません。心当たりがない場合はすぐに問い合わせ先へ連絡してください。",
            "This device's registration has been revoked",
            "The device was reported lost or stolen, or withdrawn. If this is unexpected, contact us at once.",
        ),
        DenyReason::UserNotPermitted => t(
            "このサービスの利用者として登録されていません",
            "アカウントの登録について管理者に問い合わせてください。",
            "You are not registered to use this service",
            "Ask the administrator about your account.",
        ),
        DenyReason::UserSuspended => t(
            "アカウントの利用が停止されています",
            "管理者に問い合わせてください。",
            "Your account is suspended",
            "Contact the administrator.",
        ),
        DenyReason::DeviceNotPermitted => t(
            "この端末では利用できません",
            "私物端末や指定外の端末からは利用できません。貸与・指定された端末を使ってください。",
            "This device may not be used for this service",
            "Personal or non-designated devices are not allowed. Use an issued or designated device.",
        ),
        DenyReason::OsOutdated => t(
            "OSのバージョンが古いため利用できません",
            "OSを最新の状態に更新してから再度接続してください。",
            "Your operating system is out of date",
            "Update the operating system, then try again.",
        ),
        DenyReason::SecuritySoftwareMissing => t(
            "セキュリティ対策ソフトが確認できません",
            "セキュリティ対策ソフトを導入し、有効にしてください。",
            "No security software was reported",
            "Install and enable security software.",
        ),
        DenyReason::SecuritySoftwareOutdated => t(
            "セキュリティ対策ソフトの定義ファイルが古くなっています",
            "定義ファイルを更新してから再度接続してください。",
            "Your security software's signatures are out of date",
            "Update the signatures, then try again.",
        ),
        DenyReason::Holiday => t(
            "本日は利用できない日です（休日・閉庁日）",
            "開庁日にご利用ください。時間外勤務を命じられた場合は、所属長の承認を管理者に登録してもらってください。",
            "The service is closed today (holiday)",
            "Use it on a working day. For ordered overtime, ask your supervisor to have it registered.",
        ),
        DenyReason::OutsideHours => t(
            "利用できる時間外です",
            "勤務時間内にご利用ください。時間外勤務を命じられた場合は、所属長の承認を管理者に登録してもらってください。",
            "The service is closed at this hour",
            "Use it during working hours. For ordered overtime, ask your supervisor to have it registered.",
        ),
        DenyReason::UserRestricted => t(
            "閲覧のみに制限されています",
            "変更が必要な場合は管理者に問い合わせてください。",
            "Your access is restricted to reading",
            "Contact the administrator if you need to make changes.",
        ),
        DenyReason::FeatureNotPermitted => t(
            "この機能の利用は認められていません",
            "規程で認められた機能のみ利用できます。",
            "This feature is not permitted",
            "Only the features allowed by the rules may be used.",
        ),
        DenyReason::IntegrationNotApproved => t(
            "審査を受けていない連携（APIトークン）です",
            "サービス連携は、本格運用の前に担当課のコードレビュー・動作検証を受けて承認される必要があります。",
            "This integration has not been reviewed",
            "Integrations must be reviewed and approved before they are used.",
        ),
        DenyReason::AccountMismatch => t(
            "ログインしたアカウントが端末の利用者と一致しません",
            "アカウントの共有は禁止されています。ご自身のアカウントでログインしてください。",
            "The account does not match the device's user",
            "Accounts may not be shared. Sign in with your own account.",
        ),
        DenyReason::SpecificPersonalInformation => t(
            "特定個人情報（マイナンバー）は送信できません",
            "このサービスでは個人番号を含む情報を扱えません。内容から個人番号を除いてください。送信内容は記録していません。",
            "Specific personal information (My Number) may not be sent",
            "This service may not hold Individual Numbers. Remove them and try again. The content was not recorded.",
        ),
    }
}

/// HTML-escapes text for element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::Block;

    #[test]
    fn every_gateway_block_has_its_metrics_counter() {
        let blocks = [
            Block::UnknownHost,
            Block::BadRequest("x"),
            Block::UpstreamUnavailable,
            Block::UpstreamTimeout,
            Block::RateLimited(1),
            Block::StateUnavailable,
            Block::RequestTimeout,
        ];
        let codes: Vec<_> = blocks.iter().map(Block::code).collect();
        assert_eq!(codes, crate::metrics::BLOCK_KINDS);
    }
}
