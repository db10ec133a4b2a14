//! A tiny world for conformance tests: the real rules files from `rules/`,
//! people with devices, and `decide` at a given Tokyo wall-clock time.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test helpers")]

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use sekisho_policy::attestation::{self, Claims, SigningKey};
use sekisho_policy::device::{DeviceKind, DeviceStatus, Os, Ownership};
use sekisho_policy::engine::{
    body_scanner, check_body, check_held_body, decide, Attestation, ClientAddr, RequestFacts,
};
use sekisho_policy::state::{
    AppStage, Device, Flag, Grantee, OvertimeGrant, PostureException, Review, SecuritySoftware, Stage, State, Stop,
    Subject, User,
};
use sekisho_policy::{Allow, Decision, DenyReason, Rules};

pub fn jst(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    chrono_tz::Asia::Tokyo.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap().with_timezone(&Utc)
}

fn shipped_files() -> Vec<(&'static str, String)> {
    vec![
        (
            "rules/kumamoto-council-lineworks.toml",
            include_str!("../../../rules/kumamoto-council-lineworks.toml").to_owned(),
        ),
        ("rules/abiko-kintone.toml", include_str!("../../../rules/abiko-kintone.toml").to_owned()),
        ("rules/demo.toml", include_str!("../../../rules/demo.toml").to_owned()),
    ]
}

/// The bundled rules, exactly as shipped.
pub fn shipped_rules() -> Rules {
    let files = shipped_files();
    Rules::from_sources(files.iter().map(|(f, t)| (*f, t.as_str()))).unwrap()
}

pub struct World {
    pub rules: Rules,
    files: Vec<(&'static str, String)>,
    pub state: State,
    keys: HashMap<String, SigningKey>,
}

/// A request as a test describes it.
pub struct Req<'a> {
    pub host: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub device: &'a str,
    pub at: DateTime<Utc>,
    pub api_tokens: Option<&'a str>,
    pub login: Option<&'a str>,
    pub os_version: Option<&'a str>,
    pub query: Option<&'a str>,
    pub content_encoding: Option<&'a str>,
    /// Days since the attested security software's last signature update;
    /// `None`: no security software reported.
    pub av_age_days: Option<i64>,
}

impl<'a> Req<'a> {
    pub fn get(host: &'a str, path: &'a str, device: &'a str, at: DateTime<Utc>) -> Req<'a> {
        Req {
            host,
            method: "GET",
            path,
            device,
            at,
            api_tokens: None,
            login: None,
            os_version: None,
            av_age_days: Some(0),
            query: None,
            content_encoding: None,
        }
    }
}

impl World {
    pub fn new() -> World {
        World { rules: shipped_rules(), files: shipped_files(), state: State::default(), keys: HashMap::new() }
    }

    pub fn user(&mut self, id: &str, role: &str, profiles: &[&str]) -> &mut Self {
        let user = User {
            id: id.into(),
            display_name: id.into(),
            role: role.into(),
            profiles: profiles.iter().map(|p| (*p).to_owned()).collect(),
            suspended: None,
            restricted: None,
            department: None,
            schedule: None,
        };
        self.state.users.insert(id.into(), Arc::new(user));
        self
    }

    /// Registers a device (approved unless `status` says otherwise).
    pub fn device(
        &mut self,
        id: &str,
        owner: &str,
        kind: DeviceKind,
        ownership: Ownership,
        os: Os,
        status: DeviceStatus,
    ) -> &mut Self {
        let seed: [u8; 32] = sha2_seed(id);
        let key = SigningKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&seed));
        let device = Device {
            id: id.into(),
            owner: owner.into(),
            kind,
            ownership,
            os,
            os_version: default_version(os).parse().unwrap(),
            security_software: None,
            key: key.public(),
            status,
            certificate: None,
            exception: None,
            previous_certificate: None,
        };
        self.state.devices.insert(id.into(), Arc::new(device));
        self.keys.insert(id.into(), key);
        self
    }

    pub fn suspend(&mut self, user: &str, at: DateTime<Utc>) {
        let flag = Flag { reason: "第18条".into(), since: at, until: None };
        Arc::make_mut(self.state.users.get_mut(user).unwrap()).suspended = Some(flag);
    }

    pub fn restrict(&mut self, user: &str, at: DateTime<Utc>) {
        let flag = Flag { reason: "第18条".into(), since: at, until: None };
        Arc::make_mut(self.state.users.get_mut(user).unwrap()).restricted = Some(flag);
    }

    /// Registers `app` of `profile` as in development (Abiko 10.).
    pub fn in_development(&mut self, profile: &str, app: u64) {
        let stage = AppStage {
            profile: profile.into(),
            app,
            stage: Stage::Development,
            reason: "開発中".into(),
            since: jst(2026, 11, 1, 9, 0),
        };
        Arc::make_mut(&mut self.state.apps).stages.insert((profile.into(), app), stage);
    }

    /// Records a review of `subject` for `app` (of one token, by its hash, if given).
    pub fn review(&mut self, profile: &str, app: u64, subject: Subject, token_sha256: Option<String>) {
        let register = Arc::make_mut(&mut self.state.apps);
        let review = Review {
            id: register.reviews.len() as i64 + 1,
            profile: profile.into(),
            app,
            subject,
            token_sha256,
            reviewer: "行政管理課".into(),
            reviewed_on: chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
            note: "コードレビュー・動作検証".into(),
        };
        register.reviews.push(review);
    }

    /// Approval with a recorded exception to the profile's minimums (熊本 第12条第2項).
    pub fn except(&mut self, device: &str, reason: &str) {
        let exception = PostureException { reason: reason.into(), approver: "情報システム責任者".into() };
        Arc::make_mut(self.state.devices.get_mut(device).unwrap()).exception = Some(exception);
    }

    pub fn revoke(&mut self, device: &str) {
        Arc::make_mut(self.state.devices.get_mut(device).unwrap()).status = DeviceStatus::Revoked;
    }

    pub fn stop(&mut self, profile: Option<&str>, at: DateTime<Utc>) {
        let stop = Stop { reason: "第6条第4項".into(), since: at };
        let stops = Arc::make_mut(&mut self.state.stops);
        match profile {
            Some(p) => drop(stops.profiles.insert(p.into(), stop)),
            None => stops.global = Some(stop),
        }
    }

    pub fn grant(&mut self, user: &str, start: DateTime<Utc>, end: DateTime<Utc>) {
        self.grant_to(Grantee::User(user.into()), start, end);
    }

    /// Overtime for every member of a department (Abiko 8.(1) 所属長が命ずる).
    pub fn grant_department(&mut self, department: &str, start: DateTime<Utc>, end: DateTime<Utc>) {
        self.grant_to(Grantee::Department(department.into()), start, end);
    }

    fn grant_to(&mut self, grantee: Grantee, start: DateTime<Utc>, end: DateTime<Utc>) {
        let g = OvertimeGrant {
            id: 1,
            grantee: grantee.clone(),
            profile: None,
            approver: "所属長".into(),
            reason: "議会対応".into(),
            start,
            end,
        };
        Arc::make_mut(&mut self.state.overtime).entry(grantee).or_default().push(g);
    }

    /// Puts a user in a department and on a named schedule.
    pub fn works(&mut self, user: &str, department: Option<&str>, schedule: Option<&str>) {
        let u = Arc::make_mut(self.state.users.get_mut(user).unwrap());
        u.department = department.map(str::to_owned);
        u.schedule = schedule.map(str::to_owned);
    }

    /// Why a request was refused, with the instant the person's hours open next.
    pub fn deny(&self, r: &Req<'_>) -> Option<sekisho_policy::Deny> {
        self.judge(r, None, b"").err()
    }

    /// Replaces text in one shipped rules file and re-parses all of them,
    /// as an administrator editing a file and reloading would.
    pub fn edit_rules(&mut self, file: &str, from: &str, to: &str) {
        let files = &mut self.files;
        let entry = files.iter_mut().find(|(f, _)| f.ends_with(file)).expect("a shipped rules file");
        assert!(entry.1.contains(from), "`{from}` is not in {file}");
        entry.1 = entry.1.replace(from, to);
        self.rules = Rules::from_sources(files.iter().map(|(f, t)| (*f, t.as_str()))).unwrap();
    }

    /// Decides a request; `None` means allowed.
    pub fn decide(&self, r: &Req<'_>) -> Option<DenyReason> {
        self.decide_with_body(r, None, b"")
    }

    /// Decides a request with a body, as the adapter would: `decide`, then
    /// the checks it left to the body over the whole (held) body.
    pub fn decide_with_body(&self, r: &Req<'_>, content_type: Option<&str>, body: &[u8]) -> Option<DenyReason> {
        self.judge(r, content_type, body).err().map(|d| d.reason)
    }

    fn judge(&self, r: &Req<'_>, content_type: Option<&str>, body: &[u8]) -> Result<(), sekisho_policy::Deny> {
        let (profile, route) = self.rules.route(r.host).expect("host is routed by the shipped rules");
        let device = &self.state.devices[r.device];
        let claims = Claims {
            sub: device.owner.clone(),
            aud: profile.audience.clone(),
            iat: r.at.timestamp() - 10,
            exp: r.at.timestamp() + 290,
            jti: "j".into(),
            os: device.os,
            os_version: r.os_version.unwrap_or(default_version(device.os)).parse().unwrap(),
            security_software: r.av_age_days.map(|days| SecuritySoftware {
                name: "ウイルスバスター".into(),
                updated: r.at.with_timezone(&chrono_tz::Asia::Tokyo).date_naive() - chrono::Duration::days(days),
            }),
        };
        let token = attestation::mint(&self.keys[r.device], r.device, &claims);
        let verified = attestation::verify(&token, &self.state.devices);
        let attestation = match &verified {
            Ok(v) => Attestation::Verified(v),
            Err(e) => Attestation::Rejected(e),
        };
        let facts = RequestFacts {
            profile,
            route,
            method: r.method,
            path: r.path,
            client: ClientAddr::Known("198.51.100.7".parse().unwrap()),
            attestation,
            integration_tokens: r.api_tokens,
            login: r.login,
            query: r.query,
            content_encoding: r.content_encoding,
        };
        match decide(&facts, &self.state, r.at) {
            Decision::Deny(d) => Err(d),
            Decision::Allow(Allow { inspect: None, .. }) => Ok(()),
            Decision::Allow(Allow { inspect: Some(inspect), user, .. }) => {
                check_held_body(profile, &self.state, user, &inspect, content_type, body)
            }
        }
    }

    /// Scans a body, split into `chunks`, for the profile serving `host`.
    pub fn body(&self, host: &str, chunks: &[&[u8]]) -> Option<DenyReason> {
        let (profile, _) = self.rules.route(host).unwrap();
        let mut scanner = body_scanner(profile)?;
        let last = chunks.len().saturating_sub(1);
        for (i, c) in chunks.iter().enumerate() {
            if let Err(d) = check_body(profile, &mut scanner, c, i == last) {
                return Some(d.reason);
            }
        }
        None
    }
}

fn default_version(os: Os) -> &'static str {
    match os {
        Os::Windows => "10.0.22631",
        Os::Macos => "14.5",
        Os::Ios | Os::Ipados => "17.5",
        Os::Android => "14",
        Os::Linux => "6.1",
        Os::Chromeos => "126",
    }
}

fn sha2_seed(id: &str) -> [u8; 32] {
    let mut seed = [7u8; 32];
    for (i, b) in id.bytes().enumerate() {
        seed[i % 32] ^= b;
    }
    seed
}
