//! The console's two languages: Japanese first (what a municipal IT
//! administrator reads all day), English on request. Owns the choice of
//! language and the names of things an administrator sees (roles, reason
//! codes, device kinds). It must never hold rule logic: a label is only a
//! name for a code the engine or the store already defined.

use sekisho_policy::device::{DeviceKind, DeviceStatus, Os, Ownership};
use sekisho_policy::DenyReason;

use crate::config::Role;

/// The console's language, chosen by the `sekisho_lang` cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    Ja,
    En,
}

impl Lang {
    pub fn from_code(code: Option<&str>) -> Lang {
        match code {
            Some("en") => Lang::En,
            _ => Lang::Ja,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::Ja => "ja",
            Lang::En => "en",
        }
    }

    /// The other language, for the switch.
    pub fn other(self) -> Lang {
        match self {
            Lang::Ja => Lang::En,
            Lang::En => Lang::Ja,
        }
    }

    /// The language's own name, as the switch shows it.
    pub fn name(self) -> &'static str {
        match self {
            Lang::Ja => "日本語",
            Lang::En => "English",
        }
    }

    /// One text in this language.
    pub fn t<'a>(self, ja: &'a str, en: &'a str) -> &'a str {
        match self {
            Lang::Ja => ja,
            Lang::En => en,
        }
    }

    /// An official's title after 熊本市議会基準 第5条–第8条 and 我孫子 8.(1).
    pub fn role(self, role: Role) -> &'static str {
        match role {
            Role::SystemManager => self.t("情報システム責任者", "System manager"),
            Role::GeneralAdmin => self.t("統括管理者", "General administrator"),
            Role::Auditor => self.t("管理者（監査）", "Auditor"),
            Role::Applicant => self.t("申請者（ICT支援員）", "Applicant"),
            Role::Supervisor => self.t("所属長", "Supervisor"),
        }
    }

    /// A short name for a block reason, as an administrator reads it in a
    /// chart or a table (the block page itself speaks to the person blocked).
    pub fn reason(self, code: &str) -> &'static str {
        if let Some(r) = DenyReason::ALL.iter().find(|r| r.code() == code) {
            return self.deny_reason(*r);
        }
        match code {
            "unknown_host" => self.t("扱っていないホスト名", "Unknown host"),
            "bad_request" => self.t("形式が不正な要求", "Malformed request"),
            "upstream_unavailable" => self.t("接続先に接続できない", "Service unreachable"),
            "upstream_timeout" => self.t("接続先が応答しない", "Service timed out"),
            "rate_limited" => self.t("回数制限", "Rate limited"),
            "state_unavailable" => self.t("記録できないため遮断", "Could not record, blocked"),
            "request_timeout" => self.t("送信の途中停止", "Request stalled"),
            _ => self.t("その他", "Other"),
        }
    }

    fn deny_reason(self, r: DenyReason) -> &'static str {
        match r {
            DenyReason::PolicyNotInForce => self.t("規約の有効期間外", "Terms not in force"),
            DenyReason::EmergencyStop => self.t("緊急停止中", "Emergency stop"),
            DenyReason::Maintenance => self.t("メンテナンス中", "Maintenance"),
            DenyReason::UntrustedNetwork => self.t("許可外のネットワーク", "Network not permitted"),
            DenyReason::AttestationMissing => self.t("端末証明なし", "No device proof"),
            DenyReason::AttestationInvalid => self.t("端末証明が無効", "Invalid device proof"),
            DenyReason::DeviceUnknown => self.t("未登録の端末", "Unregistered device"),
            DenyReason::DevicePending => self.t("審査中の端末", "Device awaiting approval"),
            DenyReason::DeviceRevoked => self.t("登録取消済みの端末", "Revoked device"),
            DenyReason::UserNotPermitted => self.t("利用者として未登録", "Not a permitted user"),
            DenyReason::UserSuspended => self.t("利用停止中", "User suspended"),
            DenyReason::DeviceNotPermitted => self.t("許可されていない端末", "Device not permitted"),
            DenyReason::OsOutdated => self.t("OSが古い", "OS outdated"),
            DenyReason::SecuritySoftwareMissing => self.t("ウイルス対策ソフトなし", "No security software"),
            DenyReason::SecuritySoftwareOutdated => self.t("ウイルス定義が古い", "Signatures outdated"),
            DenyReason::Holiday => self.t("休日", "Holiday"),
            DenyReason::OutsideHours => self.t("利用時間外", "Outside hours"),
            DenyReason::UserRestricted => self.t("閲覧のみに制限中", "Read-only user"),
            DenyReason::FeatureNotPermitted => self.t("許可されていない機能", "Feature not permitted"),
            DenyReason::IntegrationNotApproved => self.t("未承認の連携", "Integration not approved"),
            DenyReason::AccountMismatch => self.t("アカウントの不一致", "Account mismatch"),
            DenyReason::SpecificPersonalInformation => self.t("個人番号を含む送信", "My Number in the request"),
        }
    }

    /// An admin record's reason as the console shows it: the words the
    /// control plane wrote itself in this language, a person's as written.
    pub fn admin_reason(self, reason: &str) -> std::borrow::Cow<'_, str> {
        match (self, crate::control::reasons::japanese(reason)) {
            (Lang::Ja, Some(ja)) => std::borrow::Cow::Owned(ja),
            _ => std::borrow::Cow::Borrowed(reason),
        }
    }

    /// A self-check (`sekisho doctor`) by its name, as the dashboard lists it.
    pub fn check(self, check: &str) -> &'static str {
        match check {
            "config" => self.t("設定ファイル", "Configuration"),
            "admin" => self.t("管理 API", "Admin API"),
            "rules" => self.t("ルール", "Rules"),
            "certificate" => self.t("証明書", "Certificate"),
            "store" => self.t("管理データ", "Store"),
            "audit_log" => self.t("監査ログ", "Audit log"),
            "upstream" => self.t("接続先", "Upstream"),
            "clock" => self.t("時刻", "Clock"),
            _ => self.t("その他", "Other"),
        }
    }

    /// What the self-check found, in this language where it has the words.
    pub fn finding(self, f: &crate::control::doctor::Finding) -> &str {
        match (self, &f.message_ja) {
            (Lang::Ja, Some(ja)) => ja,
            _ => &f.message,
        }
    }

    /// What the self-check says to do.
    pub fn step(self, step: crate::control::doctor::Step) -> &'static str {
        let (ja, en) = step.words();
        self.t(ja, en)
    }

    /// A user's role as the rules name it (`councillor`), in words where
    /// the documents have them.
    pub fn user_role(self, role: &str) -> &str {
        match role {
            "councillor" => self.t("議員", "Councillor"),
            "staff" => self.t("職員", "Staff"),
            "kintone_admin" => self.t("kintone システム管理者", "kintone administrator"),
            other => other,
        }
    }

    /// An admin audit record's action (`user.suspend`), in words.
    pub fn action(self, action: &str) -> &'static str {
        match action {
            "user.put" => self.t("利用者の登録・変更", "User added or changed"),
            "user.suspend" => self.t("利用停止", "Suspended"),
            "user.unsuspend" => self.t("利用停止の解除", "Suspension lifted"),
            "user.restrict" => self.t("閲覧のみに制限", "Restricted to reading"),
            "user.unrestrict" => self.t("閲覧制限の解除", "Restriction lifted"),
            "device.apply" => self.t("端末の登録申請", "Device application"),
            "device.import" => self.t("端末の一括登録", "Devices imported"),
            "device.approved" => self.t("端末の承認", "Device approved"),
            "device.rejected" => self.t("申請の却下", "Application rejected"),
            "device.revoked" => self.t("登録の取消", "Device revoked"),
            "device.certificate" => self.t("端末証明書の発行", "Certificate issued"),
            "device.certificate.renew" => self.t("端末証明書の更新", "Certificate renewed"),
            "device.enrollment.download" => self.t("登録用ファイルの受け渡し", "Enrollment files handed out"),
            "device.posture" => self.t("端末の状態の報告", "Device posture reported"),
            "emergency_stop.on" => self.t("緊急停止", "Emergency stop"),
            "emergency_stop.off" => self.t("緊急停止の解除", "Emergency stop lifted"),
            "overtime.grant" => self.t("時間外勤務の命令", "Overtime granted"),
            "overtime.remove" => self.t("時間外勤務の取消", "Overtime withdrawn"),
            "maintenance.add" => self.t("保守の予定", "Maintenance scheduled"),
            "maintenance.remove" => self.t("保守の中止", "Maintenance cancelled"),
            "app.stage" => self.t("アプリの段階の登録", "App stage set"),
            "app.review" => self.t("審査の記録", "Review recorded"),
            "app.review.remove" => self.t("審査記録の取消", "Review withdrawn"),
            "rules.reload" => self.t("ルールの再読み込み", "Rules reloaded"),
            "console.signin" => self.t("コンソールへのサインイン", "Console sign-in"),
            _ => self.t("その他の操作", "Other action"),
        }
    }

    /// An operating system's own spelling.
    pub fn os(self, os: Os) -> &'static str {
        match os {
            Os::Windows => "Windows",
            Os::Macos => "macOS",
            Os::Ios => "iOS",
            Os::Ipados => "iPadOS",
            Os::Android => "Android",
            Os::Linux => "Linux",
            Os::Chromeos => "ChromeOS",
        }
    }

    pub fn kind(self, kind: DeviceKind) -> &'static str {
        match kind {
            DeviceKind::Smartphone => self.t("スマートフォン", "Smartphone"),
            DeviceKind::Tablet => self.t("タブレット", "Tablet"),
            DeviceKind::Pc => self.t("パソコン", "PC"),
        }
    }

    pub fn ownership(self, ownership: Ownership) -> &'static str {
        match ownership {
            Ownership::Issued => self.t("貸与端末", "City-issued"),
            Ownership::Personal => self.t("私物端末", "Personal"),
        }
    }

    pub fn status(self, status: DeviceStatus) -> &'static str {
        match status {
            DeviceStatus::Pending => self.t("審査待ち", "Pending"),
            DeviceStatus::Approved => self.t("承認済み", "Approved"),
            DeviceStatus::Rejected => self.t("却下", "Rejected"),
            DeviceStatus::Revoked => self.t("取消済み", "Revoked"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_the_gateway_can_count_has_a_name_in_both_languages() {
        let codes = DenyReason::ALL.iter().map(|r| r.code()).chain(crate::metrics::BLOCK_KINDS);
        for code in codes {
            for lang in [Lang::Ja, Lang::En] {
                assert_ne!(lang.reason(code), lang.reason("no-such-code"), "{code} in {lang:?}");
            }
        }
    }
}
