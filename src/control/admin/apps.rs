//! The admin API's app register (Abiko 10.): an app's stage and the
//! reviews of its customisation and integrations. Each change validates its
//! input and commits through the store with its audit record; the engine
//! reads the register.

use super::*;

impl Admin {
    /// The profile and app of a register path, both checked.
    fn app_key(&self, profile: &str, app: &str) -> Result<(String, u64), ApiError> {
        check_profile(&self.shared.snapshot(), Some(profile))?;
        let id = app.parse::<u64>().ok().filter(|a| i64::try_from(*a).is_ok());
        let id = id.ok_or_else(|| bad(format!("app `{app}` is not an app id (a number)")))?;
        Ok((profile.to_owned(), id))
    }

    /// Registers an app as in development or in operation (Abiko 10.).
    pub async fn set_app_stage(&self, caller: &Caller<'_>, profile: &str, app: &str, input: StageInput) -> ApiResult {
        allow(caller, Action::ManageApps)?;
        let (profile, app) = self.app_key(profile, app)?;
        let reason = non_empty(input.reason)?;
        let target = format!("{profile}/{app}");
        let stage = AppStage { profile, app, stage: input.stage, reason: reason.clone(), since: Utc::now() };
        self.commit(caller, Change::SetAppStage(stage), "app.stage", &target, &reason).await
    }

    /// Records a review: app, what was reviewed, by whom, when (Abiko 10.).
    pub async fn add_review(&self, caller: &Caller<'_>, profile: &str, app: &str, input: ReviewInput) -> ApiResult {
        allow(caller, Action::ManageApps)?;
        let (profile, app) = self.app_key(profile, app)?;
        let (reviewer, note) = (non_empty(input.reviewer)?, non_empty(input.note)?);
        let token_sha256 = match (input.token_sha256, input.subject) {
            (None, _) => None,
            (Some(h), Subject::ApiToken) => Some(
                crate::config::decode_sha256(h.trim())
                    .map(|b| crate::config::hex(&b))
                    .ok_or_else(|| bad("`token_sha256` must be 64 hex digits (`printf %s TOKEN | sha256sum`)"))?,
            ),
            (Some(_), _) => return Err(bad("`token_sha256` belongs only to an `api_token` review")),
        };
        let target = format!("{profile}/{app}");
        let reason = format!("{} reviewed by {reviewer}: {note}", input.subject.as_str());
        let review = Review {
            id: 0,
            profile,
            app,
            subject: input.subject,
            token_sha256,
            reviewer,
            reviewed_on: input
                .reviewed_on
                .unwrap_or_else(|| Utc::now().with_timezone(&chrono_tz::Asia::Tokyo).date_naive()),
            note,
        };
        let (_, v) = self.commit(caller, Change::AddReview(review), "app.review", &target, &reason).await?;
        Ok((StatusCode::CREATED, v))
    }

    /// Withdraws a review from the register; `reason` may be empty.
    pub async fn remove_review(&self, caller: &Caller<'_>, id: i64, reason: Option<String>) -> ApiResult {
        allow(caller, Action::ManageApps)?;
        let reason = given_or(reason, reasons::REVIEW_WITHDRAWN);
        self.commit(caller, Change::RemoveReview(id), "app.review.remove", &id.to_string(), &reason).await
    }
}

pub(super) fn apps_json(snap: &Snapshot) -> Value {
    let mut stages: Vec<&AppStage> = snap.state.apps.stages.values().collect();
    stages.sort_by(|a, b| (&a.profile, a.app).cmp(&(&b.profile, b.app)));
    json!({ "stages": stages, "reviews": snap.state.apps.reviews })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageInput {
    pub stage: Stage,
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewInput {
    pub subject: Subject,
    /// Who reviewed (行政管理課, or the technical staff it appointed).
    pub reviewer: String,
    /// When; today (Asia/Tokyo) if absent.
    pub reviewed_on: Option<NaiveDate>,
    /// What was reviewed.
    pub note: String,
    /// An `api_token` review of one token only: its SHA-256.
    pub token_sha256: Option<String>,
}
