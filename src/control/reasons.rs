//! The reasons the control plane writes into an admin audit record itself,
//! when the person acting gave none (or none is asked for): one place for
//! their words, so that the console can show each in Japanese. The record
//! keeps the English words, as written; a person's own reason is never
//! translated.

pub const CREATED: &str = "created";
pub const UPDATED: &str = "updated";
pub const DEVICE_FILED: &str = "registration application filed (様式第1号)";
pub const BUNDLE_HANDED_OUT: &str = "enrollment bundle handed out";
pub const GRANT_WITHDRAWN: &str = "grant withdrawn";
pub const REVIEW_WITHDRAWN: &str = "review withdrawn";
pub const MAINTENANCE_CANCELLED: &str = "maintenance window cancelled";

const CERTIFICATE_ISSUED: &str = "certificate issued for ";
const CERTIFICATE_RENEWED: &str = "certificate renewed for ";
const DAYS: &str = " days";
const SIGNED_IN: &str = "signed in to the console with an ";

/// A device certificate issued or renewed for `days`.
pub fn certificate(renewal: bool, days: u32) -> String {
    let start = if renewal { CERTIFICATE_RENEWED } else { CERTIFICATE_ISSUED };
    format!("{start}{days}{DAYS}")
}

/// A console sign-in, and how the person proved who they are.
pub fn signed_in(how: &str) -> String {
    format!("{SIGNED_IN}{how}")
}

/// The Japanese for a reason written here; `None` for any other text
/// (a person's own words).
pub fn japanese(reason: &str) -> Option<String> {
    let fixed = match reason {
        CREATED => Some("新規登録"),
        UPDATED => Some("登録内容の変更"),
        DEVICE_FILED => Some("端末の登録申請を受付（様式第1号）"),
        BUNDLE_HANDED_OUT => Some("端末の設定一式を受け渡し"),
        GRANT_WITHDRAWN => Some("時間外利用の許可を取消"),
        REVIEW_WITHDRAWN => Some("審査記録を取消"),
        MAINTENANCE_CANCELLED => Some("メンテナンス予定を取消"),
        _ => None,
    };
    if let Some(words) = fixed {
        return Some(words.to_owned());
    }
    let days = |rest: &str| rest.strip_suffix(DAYS).and_then(|d| d.parse::<u32>().ok());
    if let Some(d) = reason.strip_prefix(CERTIFICATE_ISSUED).and_then(days) {
        return Some(format!("端末証明書を発行（有効期間 {d} 日）"));
    }
    if let Some(d) = reason.strip_prefix(CERTIFICATE_RENEWED).and_then(days) {
        return Some(format!("端末証明書を更新（有効期間 {d} 日）"));
    }
    match reason.strip_prefix(SIGNED_IN) {
        Some("admin token") => Some("管理トークンでコンソールにサインイン".to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_written_here_has_its_japanese_and_a_persons_words_have_none() {
        let written = [
            CREATED.to_owned(),
            UPDATED.to_owned(),
            DEVICE_FILED.to_owned(),
            BUNDLE_HANDED_OUT.to_owned(),
            GRANT_WITHDRAWN.to_owned(),
            REVIEW_WITHDRAWN.to_owned(),
            MAINTENANCE_CANCELLED.to_owned(),
            certificate(false, 365),
            certificate(true, 30),
            signed_in("admin token"),
        ];
        for reason in &written {
            let ja = japanese(reason);
            assert!(ja.as_deref().is_some_and(|j| !j.is_ascii() && j != reason), "`{reason}`: {ja:?}");
        }
        assert_eq!(japanese(&certificate(false, 365)).as_deref(), Some("端末証明書を発行（有効期間 365 日）"));
        for own in ["スマートフォン紛失のため", "created by hand", "certificate issued for many days", ""] {
            assert_eq!(japanese(own), None, "`{own}` is a person's own words");
        }
    }
}
