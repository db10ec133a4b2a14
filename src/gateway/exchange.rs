//! One request's record from its first byte to its last: what was decided,
//! why, and how the answer went. Whatever path the request takes (refused,
//! forwarded, cut, abandoned by the client), its [`Exchange`] is dropped
//! exactly once, and that writes its one audit line, counts its latency and
//! frees its place on the connection. It holds no token, key or body byte.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use sekisho_policy::Deny;

use crate::control::audit::RequestRecord;
use crate::gateway::io::ConnClock;
use crate::gateway::Gateway;
use crate::shared::LiveRequest;

pub struct Exchange {
    gateway: Arc<Gateway>,
    clock: Arc<ConnClock>,
    _live: LiveRequest,
    started: Instant,
    pub id: String,
    pub method: http::Method,
    pub host: String,
    /// The path judged and forwarded, or the raw target of a refused one.
    pub path: String,
    pub client: Option<IpAddr>,
    pub user: Option<String>,
    pub device: Option<String>,
    pub profile: Option<std::sync::Arc<sekisho_policy::Profile>>,
    decision: &'static str,
    reason: Option<&'static str>,
    rule: Option<Cow<'static, str>>,
    pub status: u16,
    pub upstream_status: Option<u16>,
}

impl Exchange {
    /// Boxed: the exchange travels with the answer (inside its body), and
    /// the answer is moved several times per request.
    pub fn new(gateway: Arc<Gateway>, clock: Arc<ConnClock>, method: http::Method) -> Box<Exchange> {
        clock.request_started();
        let id = gateway.request_id();
        let live = gateway.shared.live_request();
        Box::new(Exchange {
            gateway,
            clock,
            _live: live,
            started: Instant::now(),
            id,
            method,
            host: String::new(),
            path: String::new(),
            client: None,
            user: None,
            device: None,
            profile: None,
            decision: "allow",
            reason: None,
            rule: None,
            status: 0,
            upstream_status: None,
        })
    }

    /// A policy denial.
    pub fn denied(&mut self, deny: &Deny) {
        self.decision = "deny";
        self.reason = Some(deny.reason.code());
        self.rule = Some(deny.rule.clone());
        if self.user.is_none() {
            self.user.clone_from(&deny.user);
            self.device.clone_from(&deny.device);
        }
        self.gateway.metrics.denied(deny.reason);
    }

    /// One of the gateway's own blocks (bad request, upstream failure, ...).
    pub fn blocked(&mut self, code: &'static str, rule: Option<Cow<'static, str>>) {
        self.decision = "error";
        self.reason = Some(code);
        self.rule = rule;
        self.gateway.metrics.blocked(code);
    }

    /// An administrator's change ended the exchange midway.
    pub fn cut(&mut self, deny: &Deny) {
        self.decision = "cut";
        self.reason = Some(deny.reason.code());
        self.rule = Some(deny.rule.clone());
    }

    /// A remark for the audit line on an allowed exchange (a low-confidence
    /// number that passed); never the number itself.
    pub fn note(&mut self, note: &'static str) {
        if self.rule.is_none() {
            self.rule = Some(Cow::Borrowed(note));
        }
    }

    /// The upstream broke off or went silent after its answer began.
    pub fn upstream_broke(&mut self) {
        if self.decision == "allow" {
            self.decision = "error";
            self.reason = Some("upstream_unavailable");
            self.gateway.metrics.upstream_error();
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.clock.request_finished();
        let micros = self.started.elapsed().as_micros() as u64;
        let gateway = &self.gateway;
        gateway.metrics.latency(micros);
        let record = RequestRecord {
            time: crate::control::audit_json::jst_time(chrono::Utc::now()),
            request_id: Cow::Borrowed(&self.id),
            user: self.user.as_deref().map(Cow::Borrowed),
            device: self.device.as_deref().map(Cow::Borrowed),
            client: self.client,
            host: Cow::Borrowed(&self.host),
            method: Cow::Borrowed(self.method.as_str()),
            path: Cow::Borrowed(&self.path),
            decision: Cow::Borrowed(self.decision),
            reason: self.reason.map(Cow::Borrowed),
            rule: self.rule.as_deref().map(Cow::Borrowed),
            profile: self.profile.as_ref().map(|p| Cow::Borrowed(p.name.as_str())),
            status: self.status,
            upstream_status: self.upstream_status,
            latency_ms: micros as f64 / 1000.0,
        };
        gateway.audit.record(&record);
    }
}
