//! The admin API's actions that open or close access in time: emergency
//! stops, overtime grants (a supervisor's own department only) and
//! maintenance windows. Each validates its input and commits through the
//! store with its audit record; none decides access (the engine does).

use super::*;

impl Admin {
    /// Stops (`on`) or resumes everything, or one profile (第6条第4項).
    pub async fn stop(&self, caller: &Caller<'_>, input: StopInput, on: bool) -> ApiResult {
        allow(caller, Action::EmergencyStop)?;
        let reason = non_empty(input.reason)?;
        check_profile(&self.shared.snapshot(), input.profile.as_deref())?;
        let target = input.profile.clone().unwrap_or_else(|| "*".to_owned());
        let stop = on.then(|| Stop { reason: reason.clone(), since: Utc::now() });
        let action = if on { "emergency_stop.on" } else { "emergency_stop.off" };
        self.commit(caller, Change::SetStop { profile: input.profile, stop }, action, &target, &reason).await
    }

    /// Every grant; a supervisor sees their own department's.
    pub fn overtime(&self, caller: &Caller<'_>) -> Result<Vec<OvertimeGrant>, ApiError> {
        allow(caller, Action::ReadOvertime)?;
        let snap = self.shared.snapshot();
        let sees_all = caller.roles.iter().any(|r| *r != Role::Supervisor);
        let mut grants: Vec<_> = snap
            .state
            .overtime
            .values()
            .flatten()
            .filter(|g| sees_all || self.check_department(caller, &g.grantee).is_ok())
            .cloned()
            .collect();
        grants.sort_by_key(|g| g.id);
        Ok(grants)
    }

    /// Overtime ordered by a supervisor (Abiko 8.(1)) for a person or a
    /// whole department. A `supervisor` token orders it for its own
    /// department's members only, and is recorded as the approver; IT staff
    /// (`general_admin`) record it for anyone, naming the approver.
    pub async fn add_grant(&self, caller: &Caller<'_>, input: GrantInput) -> ApiResult {
        allow(caller, Action::ManageOvertime)?;
        let (start, end) = window(input.start, input.end)?;
        // A grant opens every hour it covers: a mistyped year would lift
        // the person's hours for good, and no one would notice.
        if end - start > MAX_GRANT {
            return Err(bad(format!(
                "an overtime order covers at most {} days from `start` to `end`: order a longer period in parts",
                MAX_GRANT.num_days()
            )));
        }
        check_profile(&self.shared.snapshot(), input.profile.as_deref())?;
        let reason = non_empty(input.reason)?;
        let grantee = match (input.user, input.department) {
            (Some(u), None) => Grantee::User(u),
            (None, Some(d)) if !d.trim().is_empty() => Grantee::Department(d.trim().to_owned()),
            _ => return Err(bad("give exactly one of `user` and `department`")),
        };
        let approver = match (caller.roles.contains(&Role::GeneralAdmin), input.approver) {
            (true, Some(a)) => non_empty(a)?,
            (true, None) => return Err(bad("`approver`: the supervisor (所属長) who ordered the overtime")),
            (false, Some(a)) if a.trim() != caller.name => {
                return Err(bad("a supervisor's grant is recorded with their own name; leave out `approver`"))
            }
            (false, _) => {
                self.check_department(caller, &grantee)?;
                caller.name.to_owned()
            }
        };
        let target = match &grantee {
            Grantee::User(u) => u.clone(),
            Grantee::Department(d) => format!("department:{d}"),
        };
        let grant =
            OvertimeGrant { id: 0, grantee, profile: input.profile, approver, reason: reason.clone(), start, end };
        let mut entry = self.audit_entry(caller, "overtime.grant", &target, &reason);
        entry.approver = Some(grant.approver.clone());
        let (_, v) = self.commit_entry(Change::AddGrant(grant), entry).await?;
        Ok((StatusCode::CREATED, v))
    }

    /// A supervisor acts only within their own department: the department
    /// itself, or a person whose record names it.
    fn check_department(&self, caller: &Caller<'_>, grantee: &Grantee) -> Result<(), ApiError> {
        let own = caller.department;
        let theirs = match grantee {
            Grantee::Department(d) => Some(d.clone()),
            Grantee::User(u) => {
                let snap = self.shared.snapshot();
                let user = snap
                    .state
                    .users
                    .get(u)
                    .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("user `{u}` does not exist")))?;
                user.department.clone()
            }
        };
        match (own, theirs.as_deref()) {
            (Some(o), Some(t)) if o == t => Ok(()),
            _ => Err(ApiError(
                StatusCode::FORBIDDEN,
                format!(
                    "supervisor `{}` orders overtime for their own department (`{}`) only",
                    caller.name,
                    own.unwrap_or("-")
                ),
            )),
        }
    }

    /// Withdraws an overtime grant; `reason` may be empty (one is derived).
    pub async fn withdraw_grant(&self, caller: &Caller<'_>, id: i64, reason: Option<String>) -> ApiResult {
        allow(caller, Action::ManageOvertime)?;
        self.may_withdraw(caller, id)?;
        let reason = given_or(reason, reasons::GRANT_WITHDRAWN);
        self.commit(caller, Change::RemoveGrant(id), "overtime.remove", &id.to_string(), &reason).await
    }

    /// Only IT staff, or the supervisor of the grant's department, withdraw it.
    fn may_withdraw(&self, caller: &Caller<'_>, id: i64) -> Result<(), ApiError> {
        if caller.roles.contains(&Role::GeneralAdmin) {
            return Ok(());
        }
        let snap = self.shared.snapshot();
        let grant = snap.state.overtime.values().flatten().find(|g| g.id == id);
        match grant {
            Some(g) => self.check_department(caller, &g.grantee),
            None => Err(ApiError(StatusCode::NOT_FOUND, format!("overtime grant `{id}` does not exist"))),
        }
    }

    pub async fn add_maintenance(&self, caller: &Caller<'_>, input: MaintenanceInput) -> ApiResult {
        allow(caller, Action::ManageMaintenance)?;
        let (start, end) = window(input.start, input.end)?;
        check_profile(&self.shared.snapshot(), input.profile.as_deref())?;
        let reason = non_empty(input.reason)?;
        let target = input.profile.clone().unwrap_or_else(|| "*".to_owned());
        let m = MaintenanceWindow { id: 0, profile: input.profile, reason: reason.clone(), start, end };
        let (_, v) = self.commit(caller, Change::AddMaintenance(m), "maintenance.add", &target, &reason).await?;
        Ok((StatusCode::CREATED, v))
    }

    /// Cancels a maintenance window; `reason` may be empty.
    pub async fn remove_maintenance(&self, caller: &Caller<'_>, id: i64, reason: Option<String>) -> ApiResult {
        allow(caller, Action::ManageMaintenance)?;
        let reason = given_or(reason, reasons::MAINTENANCE_CANCELLED);
        self.commit(caller, Change::RemoveMaintenance(id), "maintenance.remove", &id.to_string(), &reason).await
    }
}

/// The longest overtime order: a month of continuous access.
const MAX_GRANT: chrono::TimeDelta = chrono::TimeDelta::days(31);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopInput {
    pub profile: Option<String>,
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantInput {
    /// One person, or
    pub user: Option<String>,
    /// every member of a department.
    pub department: Option<String>,
    pub profile: Option<String>,
    /// The supervisor who ordered it; a supervisor's own token records itself.
    pub approver: Option<String>,
    pub reason: String,
    #[serde(deserialize_with = "rfc3339::required")]
    pub start: DateTime<FixedOffset>,
    #[serde(deserialize_with = "rfc3339::required")]
    pub end: DateTime<FixedOffset>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceInput {
    pub profile: Option<String>,
    pub reason: String,
    #[serde(deserialize_with = "rfc3339::required")]
    pub start: DateTime<FixedOffset>,
    #[serde(deserialize_with = "rfc3339::required")]
    pub end: DateTime<FixedOffset>,
}
