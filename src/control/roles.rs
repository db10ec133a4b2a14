//! Who may do what: the one table from each admin action to the roles that
//! may take it (熊本市議会基準 第5条–第8条, 我孫子 8.(1)). The admin API
//! refuses with it and the console offers only what it permits, so the two
//! can never disagree. It must never grow a second table elsewhere: a new
//! action gets its row here and nowhere else.

use crate::config::Role;

/// Every admin action a person can take or page they can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Status, users, devices, maintenance windows, apps.
    ReadState,
    /// The admin audit trail and the request decisions.
    ReadAudit,
    PutUser,
    /// Suspend, restrict, or lift either (第6条, 第18条).
    FlagUser,
    /// File a registration application (様式第1号).
    FileDevice,
    /// Register city-issued devices in bulk, approved.
    ImportDevices,
    /// Approve or reject an application (第12条).
    DecideDevice,
    /// Revoke a lost or stolen device (第17条).
    RevokeDevice,
    /// Issue or renew a device certificate, and hand out its bundle once.
    IssueCertificate,
    /// Emergency stop and resume (第6条第4項).
    EmergencyStop,
    ReadOvertime,
    /// Order or withdraw overtime (我孫子 8.(1)); a supervisor only for
    /// their own department, which the action itself checks.
    ManageOvertime,
    ManageMaintenance,
    /// The app register and its reviews (我孫子 10.).
    ManageApps,
    /// Reload the rules as an approved revision (我孫子 13.).
    ReloadRules,
}

impl Action {
    /// The roles that may take this action.
    pub fn roles(self) -> &'static [Role] {
        use Role::{Applicant, Auditor, GeneralAdmin, Supervisor, SystemManager};
        match self {
            Action::ReadState | Action::ReadAudit => &[SystemManager, GeneralAdmin, Auditor],
            Action::PutUser | Action::FlagUser | Action::EmergencyStop => &[GeneralAdmin],
            Action::FileDevice => &[SystemManager, GeneralAdmin, Applicant],
            Action::ImportDevices
            | Action::DecideDevice
            | Action::IssueCertificate
            | Action::ManageMaintenance
            | Action::ManageApps
            | Action::ReloadRules => &[SystemManager],
            Action::RevokeDevice => &[SystemManager, GeneralAdmin],
            Action::ReadOvertime => &[SystemManager, GeneralAdmin, Auditor, Supervisor],
            Action::ManageOvertime => &[GeneralAdmin, Supervisor],
        }
    }

    /// Whether someone holding `roles` may take this action.
    pub fn permits(self, roles: &[Role]) -> bool {
        roles.iter().any(|r| self.roles().contains(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The articles' division of powers, spelled out once more as the
    /// documents state it, so a slip in the table is caught.
    #[test]
    fn each_official_may_do_what_the_articles_give_them_and_no_more() {
        use Role::*;
        let cases: &[(Role, Action, bool)] = &[
            (SystemManager, Action::DecideDevice, true),
            (GeneralAdmin, Action::DecideDevice, false),
            (GeneralAdmin, Action::RevokeDevice, true),
            (GeneralAdmin, Action::FlagUser, true),
            (SystemManager, Action::FlagUser, false),
            (GeneralAdmin, Action::EmergencyStop, true),
            (SystemManager, Action::EmergencyStop, false),
            (Auditor, Action::ReadAudit, true),
            (Auditor, Action::FlagUser, false),
            (Auditor, Action::EmergencyStop, false),
            (Applicant, Action::FileDevice, true),
            (Applicant, Action::ReadState, false),
            (Supervisor, Action::ManageOvertime, true),
            (Supervisor, Action::ReadState, false),
            (SystemManager, Action::ReloadRules, true),
            (GeneralAdmin, Action::ReloadRules, false),
        ];
        for (role, action, expected) in cases {
            assert_eq!(action.permits(&[*role]), *expected, "{role:?} {action:?}");
        }
    }
}
