//! The pingora adapter: for each request, gather the facts (host, path,
//! method, client address, attestation), call `decide`, and either write
//! the block answer or forward with the gateway's own forwarding headers.
//! It holds no rule logic and must never log a token or touch the disk
//! (the audit log is written by its own thread).

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use chrono::Utc;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType};
use sekisho_policy::engine::{
    body_note, body_scanner, body_too_large, check_body, check_held_body, client_addr, decide, still_allowed,
    Attestation, ClientAddr, RequestFacts,
};
use sekisho_policy::mynumber::Scanner;
use sekisho_policy::{Decision, Profile};

use crate::control::audit::{AuditLog, RequestRecord};
use crate::gateway::pages::Block;
use crate::gateway::request::{
    checked_framing, checked_target, client_certificate, content_type, effective_method, has_body, is_tls,
    joined_header, prefers_html, raw_target, request_host, single_header, strip_protected, upstream_authority,
};
use crate::gateway::upstream::Resolver;
use crate::limits::Limiters;
use crate::metrics::Metrics;
use crate::shared::{LiveEntry, Shared, Snapshot};

pub struct Gateway {
    pub shared: Arc<Shared>,
    pub audit: Arc<AuditLog>,
    pub metrics: Arc<Metrics>,
    pub resolver: Resolver,
    pub limits: Arc<Limiters>,
    pub keepalive_secs: u64,
    pub state_max_age: std::time::Duration,
    id_prefix: String,
    next_id: AtomicU64,
}

/// Per-request context: what was decided, for forwarding and the audit line.
#[derive(Default)]
pub struct Ctx {
    start: Option<Instant>,
    request_id: String,
    snapshot: Option<Arc<Snapshot>>,
    profile: Option<Arc<Profile>>,
    route: usize,
    host: String,
    /// The origin-form target forwarded and its path, judged and audited;
    /// empty until the target was read.
    target: String,
    path_len: usize,
    client: Option<IpAddr>,
    user: Option<String>,
    device: Option<String>,
    reason: Option<&'static str>,
    rule: Option<String>,
    decision: &'static str,
    upstream_status: Option<u16>,
    live: Option<u64>,
    /// `Shared::generation` when this request was last judged.
    generation: u64,
    /// pingora dropped a Content-Length that came with Transfer-Encoding.
    repaired_framing: bool,
    /// Body scanning for profiles that forbid 個人番号 in bodies.
    scanner: Option<Scanner>,
    /// Body bytes held back until scanned, so a refused small body never
    /// reaches the upstream; released once past `HOLD_BYTES`.
    held: BytesMut,
    released: bool,
    /// A denial found in the body, answered by `fail_to_proxy`.
    body_deny: Option<sekisho_policy::Deny>,
    /// Checks `decide` left to the whole body (`Allow::inspect`), and the
    /// body's content type for them.
    inspect: Option<sekisho_policy::Inspect>,
    content_type: Option<String>,
}

/// Bodies up to this size reach the upstream only after the whole body was
/// scanned; larger ones stream on with a bounded hold (a refusal then aborts
/// the upstream request mid-body).
const HOLD_BYTES: usize = 1 << 20;
/// A streamed body keeps this much back: every byte a verdict on a number
/// can still depend on (its context reaches 300 characters past it).
const TAIL_BYTES: usize = sekisho_policy::mynumber::DECISION_BYTES;

const ATTESTATION: &str = "device-attestation";

impl Gateway {
    pub fn new(
        shared: Arc<Shared>,
        audit: Arc<AuditLog>,
        metrics: Arc<Metrics>,
        limits: Arc<Limiters>,
        keepalive_secs: u64,
        state_max_age: std::time::Duration,
    ) -> Gateway {
        let id_prefix = format!("{:08x}", rand::random::<u32>());
        Gateway {
            shared,
            audit,
            metrics,
            resolver: Resolver::default(),
            limits,
            keepalive_secs,
            state_max_age,
            id_prefix,
            next_id: AtomicU64::new(1),
        }
    }

    /// Gathers the facts and decides; `Err` carries the block to answer with.
    fn judge(&self, session: &Session, ctx: &mut Ctx, snap: &Arc<Snapshot>) -> Result<(), BlockOwned> {
        // Fail closed: a request that cannot be audited, or judged on a
        // state that could not be confirmed lately, is refused.
        let now = Utc::now();
        if !self.audit.healthy() || !self.shared.fresh(now, self.state_max_age) {
            return Err(BlockOwned::StateUnavailable);
        }
        let req = session.req_header();
        let host = request_host(req).map_err(BlockOwned::BadRequest)?;
        ctx.host = host.to_owned();
        let (profile, route) = snap.rules.route(host).ok_or(BlockOwned::UnknownHost)?;
        ctx.profile = Some(profile.clone());
        ctx.route = profile.routes.iter().position(|r| std::ptr::eq(r, route)).unwrap_or_default();
        if ctx.repaired_framing {
            return Err(BlockOwned::BadRequest("both Content-Length and Transfer-Encoding"));
        }
        checked_framing(req).map_err(BlockOwned::BadRequest)?;
        let target = checked_target(req, host).map_err(BlockOwned::BadRequest)?;
        ctx.target = target.target.to_owned();
        ctx.path_len = target.path.len();
        let path = target.path;
        let method = effective_method(req).map_err(BlockOwned::BadRequest)?;
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
            .ok_or(BlockOwned::BadRequest("no client address"))?;
        let forwarded = joined_header(req, "x-forwarded-for");
        let client = client_addr(&profile.network, peer, forwarded.as_deref());
        let client_ip = match client {
            ClientAddr::Known(ip) => ip,
            ClientAddr::Unresolvable => peer,
        };
        ctx.client = Some(client_ip);
        self.limits.client(client_ip).map_err(BlockOwned::RateLimited)?;
        let mut tokens = req.headers.get_all(ATTESTATION).iter();
        let verified = match (tokens.next(), tokens.next()) {
            (None, _) => None,
            (Some(_), Some(_)) => return Err(BlockOwned::BadRequest("more than one Device-Attestation header")),
            (Some(v), None) => Some(self.shared.tokens.verify(v.to_str().unwrap_or_default(), &snap.state)),
        };
        let attestation = match verified.as_deref() {
            None => client_certificate(session).map_or(Attestation::Missing, Attestation::Certificate),
            Some(Ok(v)) => Attestation::Verified(v),
            Some(Err(e)) => Attestation::Rejected(e),
        };
        let integration_tokens = profile.integrations.as_ref().and_then(|i| joined_header(req, &i.header));
        let login = match &profile.account {
            Some(a) => single_header(&req.headers, &a.header).map_err(BlockOwned::BadRequest)?,
            None => None,
        };
        let query = target.target.split_once('?').map(|(_, q)| q);
        let facts = RequestFacts {
            profile,
            route,
            method,
            path,
            client,
            attestation,
            integration_tokens: integration_tokens.as_deref(),
            login,
            query,
        };
        match decide(&facts, &snap.state, now) {
            Decision::Allow(a) => {
                ctx.user = Some(a.user.to_owned());
                ctx.device = Some(a.device.to_owned());
                self.limits.user(a.user).map_err(BlockOwned::RateLimited)?;
                if let Some(inspect) = a.inspect {
                    ctx.content_type = content_type(&req.headers);
                    if !has_body(req) {
                        // Nothing will come: judge the empty body now.
                        check_held_body(profile, &snap.state, a.user, &inspect, ctx.content_type.as_deref(), &[])
                            .map_err(|d| BlockOwned::Policy(d.for_user(a.user, a.device)))?;
                    }
                    ctx.inspect = Some(inspect);
                }
                Ok(())
            }
            Decision::Deny(d) => {
                ctx.user.clone_from(&d.user);
                ctx.device.clone_from(&d.device);
                Err(BlockOwned::Policy(d))
            }
        }
    }

    /// Writes a block answer and records it in the context.
    async fn answer(&self, session: &mut Session, ctx: &mut Ctx, block: &BlockOwned) -> pingora::Result<()> {
        let profile = ctx.profile.clone();
        self.answer_block(session, ctx, block.as_block(profile.as_deref())).await
    }

    /// Writes the block page or JSON and records the outcome for the audit line.
    async fn answer_block(&self, session: &mut Session, ctx: &mut Ctx, block: Block<'_>) -> pingora::Result<()> {
        let html = prefers_html(session.req_header());
        let answer = block.render(html, &ctx.request_id, Utc::now());
        ctx.decision = if matches!(block, Block::Policy { .. }) { "deny" } else { "error" };
        ctx.reason = Some(answer.code);
        if let Block::Policy { deny, .. } = block {
            ctx.rule = Some(deny.rule.to_string());
            self.metrics.denied(deny.reason);
        } else {
            self.metrics.blocked(answer.code);
        }
        let mut resp = ResponseHeader::build(answer.status, Some(8))?;
        resp.insert_header("content-type", answer.content_type)?;
        resp.insert_header("content-length", answer.body.len())?;
        resp.insert_header("cache-control", "no-store")?;
        resp.insert_header("sekisho-deny-reason", answer.code)?;
        resp.insert_header("sekisho-request-id", ctx.request_id.as_str())?;
        if let Some(secs) = answer.retry_after_secs {
            resp.insert_header("retry-after", secs)?;
        }
        if has_body(session.req_header()) {
            // The body was never read: do not reuse a connection with bytes left on it.
            session.set_keepalive(None);
        }
        let head = session.req_header().method == http::Method::HEAD;
        session.write_response_header(Box::new(resp), head).await?;
        if !head {
            session.write_response_body(Some(Bytes::from(answer.body)), true).await?;
        }
        Ok(())
    }

    /// Registers an upgrade (WebSocket) so a suspension can cut it while idle.
    fn register_live(&self, session: &Session, ctx: &mut Ctx) {
        let (Some(user), Some(device), Some(profile)) = (&ctx.user, &ctx.device, &ctx.profile) else { return };
        let Some(fd) = session.stream().map(|s| s.id()) else { return };
        let Ok(cookie) = pingora::protocols::l4::ext::get_socket_cookie(fd) else { return };
        let entry = LiveEntry {
            user: user.clone(),
            device: device.clone(),
            profile: profile.name.clone(),
            socket: (fd, cookie),
        };
        ctx.live = Some(self.shared.conns.register(entry));
    }

    /// In a body filter: has an admin change since the decision ended this request?
    fn recheck(&self, ctx: &mut Ctx) -> pingora::Result<()> {
        let now = self.shared.generation.load(Ordering::Acquire);
        if now == ctx.generation {
            return Ok(());
        }
        ctx.generation = now;
        let snap = self.shared.snapshot_full();
        let (Some(profile), Some(user), Some(device)) = (&ctx.profile, &ctx.user, &ctx.device) else { return Ok(()) };
        match still_allowed(profile, &snap.state, user, device, Utc::now()) {
            Ok(()) => Ok(()),
            Err(deny) => {
                ctx.reason = Some(deny.reason.code());
                ctx.decision = "cut";
                Error::e_explain(ErrorType::HTTPStatus(403), "access withdrawn by an administrator")
            }
        }
    }
}

/// A block that outlives the snapshot borrow (the policy denial is owned).
pub enum BlockOwned {
    Policy(sekisho_policy::Deny),
    UnknownHost,
    BadRequest(&'static str),
    RateLimited(u64),
    StateUnavailable,
}

impl BlockOwned {
    fn as_block<'a>(&'a self, profile: Option<&'a Profile>) -> Block<'a> {
        match (self, profile) {
            (BlockOwned::Policy(deny), Some(profile)) => Block::Policy { deny, profile },
            (BlockOwned::Policy(_), None) | (BlockOwned::UnknownHost, _) => Block::UnknownHost,
            (BlockOwned::BadRequest(why), _) => Block::BadRequest(why),
            (BlockOwned::RateLimited(secs), _) => Block::RateLimited(*secs),
            (BlockOwned::StateUnavailable, _) => Block::StateUnavailable,
        }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        Ctx {
            start: Some(Instant::now()),
            request_id: format!("{}-{n:x}", self.id_prefix),
            decision: "allow",
            ..Ctx::default()
        }
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<()> {
        // pingora repairs Content-Length + Transfer-Encoding (drops the
        // length, turns keep-alive off) before any filter runs. sekisho
        // refuses ambiguous framing instead; the only trace left is an
        // HTTP/1.1 chunked request whose keep-alive was turned off although
        // the client did not ask to close.
        let req = session.req_header();
        let asked_to_close =
            req.headers.get(http::header::CONNECTION).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        ctx.repaired_framing = !session.is_http2()
            && req.headers.contains_key(http::header::TRANSFER_ENCODING)
            && !asked_to_close
            && session.get_keepalive().is_none();
        // pingora keeps idle keep-alive connections forever unless told otherwise.
        session.set_keepalive(Some(self.keepalive_secs));
        // A client that reads the answer slower than 1 KiB/s (slow read)
        // is cut instead of holding the connection and its buffers.
        session.set_min_send_rate(Some(1024));
        crate::gateway::admission::header_complete(session.stream());
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
        ctx.generation = self.shared.generation.load(Ordering::Acquire);
        let snap = self.shared.snapshot_full();
        let verdict = self.judge(session, ctx, &snap);
        ctx.snapshot = Some(snap);
        match verdict {
            Ok(()) => {
                self.metrics.allowed();
                if session.is_upgrade_req() {
                    // A chat socket may sit idle for long; suspension and
                    // revocation cut it through `register_live`, not a timer.
                    session.set_read_timeout(Some(crate::gateway::upstream::UPGRADE_IDLE));
                    self.register_live(session, ctx);
                }
                Ok(false)
            }
            Err(block) => {
                self.answer(session, ctx, &block).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<Box<HttpPeer>> {
        let (Some(snap), Some(profile)) = (&ctx.snapshot, &ctx.profile) else {
            return Error::e_explain(ErrorType::InternalError, "no route decided");
        };
        let route =
            profile.routes.get(ctx.route).ok_or_else(|| Error::explain(ErrorType::InternalError, "route vanished"))?;
        let addr = self
            .resolver
            .resolve(&route.upstream.host, route.upstream.port)
            .await
            .map_err(|e| Error::because(ErrorType::ConnectError, "resolving upstream", e))?;
        let upgrade = session.is_upgrade_req();
        Ok(Box::new(snap.upstreams.peer(route, addr, upgrade)))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        strip_protected(req);
        // Forward exactly the target that was judged (absolute-form goes
        // upstream as origin-form).
        if req.raw_path() != ctx.target.as_bytes() {
            req.set_raw_path(ctx.target.as_bytes())?;
        }
        if let Some(ip) = ctx.client {
            req.insert_header("x-forwarded-for", ip.to_string())?;
        }
        req.insert_header("x-forwarded-proto", if is_tls(session) { "https" } else { "http" })?;
        req.insert_header("x-forwarded-host", ctx.host.as_str())?;
        if let Some(route) = ctx.profile.as_ref().and_then(|p| p.routes.get(ctx.route)) {
            req.insert_header("host", upstream_authority(&route.upstream))?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        ctx.upstream_status = Some(resp.status.as_u16());
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        resp.insert_header("sekisho-request-id", ctx.request_id.as_str())?;
        let Some(route) = ctx.profile.as_ref().and_then(|p| p.routes.get(ctx.route)) else { return Ok(()) };
        if route.upstream.host == ctx.host {
            return Ok(());
        }
        let public = format!("{}://{}", if is_tls(session) { "https" } else { "http" }, ctx.host);
        crate::gateway::rewrite::location(resp, &route.upstream, &public)?;
        crate::gateway::rewrite::cookies(resp, &route.upstream.host, &ctx.host)?;
        Ok(())
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        eos: bool,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        self.recheck(ctx)?;
        let Some(profile) = ctx.profile.clone().filter(|p| p.my_number.is_some() || ctx.inspect.is_some()) else {
            return Ok(());
        };
        if session.was_upgraded() {
            return Ok(());
        }
        let chunk = body.as_deref().unwrap_or_default();
        if ctx.scanner.is_none() {
            ctx.scanner = body_scanner(&profile);
        }
        if let Some(Err(deny)) = ctx.scanner.as_mut().map(|s| check_body(&profile, s, chunk, eos)) {
            return refuse_body(ctx, deny);
        }
        if eos {
            if let Some(note) = ctx.scanner.as_ref().and_then(body_note) {
                ctx.rule = Some(note.to_owned());
            }
        }
        if let Some(inspect) = &ctx.inspect {
            if ctx.held.len() + chunk.len() > HOLD_BYTES {
                return refuse_body(ctx, body_too_large(inspect));
            }
        }
        hold_back(ctx, body, eos);
        if let (true, Some(inspect)) = (eos, ctx.inspect.take()) {
            // Held whole (never past HOLD_BYTES): `body` is all of it.
            let whole = body.as_deref().unwrap_or_default();
            let user = ctx.user.as_deref().unwrap_or_default();
            let snap = self.shared.snapshot_full();
            let state = &snap.state;
            if let Err(deny) = check_held_body(&profile, state, user, &inspect, ctx.content_type.as_deref(), whole) {
                return refuse_body(ctx, deny);
            }
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _s: &mut Session,
        _b: &mut Option<Bytes>,
        _eos: bool,
        ctx: &mut Ctx,
    ) -> pingora::Result<Option<std::time::Duration>> {
        self.recheck(ctx).map(|()| None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        if let Some(deny) = ctx.body_deny.take() {
            let block = BlockOwned::Policy(deny);
            if session.response_written().is_none() {
                let _ = self.answer(session, ctx, &block).await;
            }
            return FailToProxy { error_code: 403, can_reuse_downstream: false };
        }
        if ctx.decision == "cut" {
            // Cut mid-response by an admin change: nothing more to say.
            return FailToProxy { error_code: 0, can_reuse_downstream: false };
        }
        let block = match (e.esource(), e.etype()) {
            (ErrorSource::Downstream, ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed) => {
                None
            }
            (ErrorSource::Downstream, _) => Some(Block::BadRequest("the request could not be read")),
            (
                ErrorSource::Upstream,
                ErrorType::ConnectTimedout
                | ErrorType::ReadTimedout
                | ErrorType::WriteTimedout
                | ErrorType::TLSHandshakeTimedout,
            ) => Some(Block::UpstreamTimeout),
            (ErrorSource::Upstream, _) => Some(Block::UpstreamUnavailable),
            (_, ErrorType::HTTPStatus(400..=499)) => Some(Block::BadRequest("the request was refused by the gateway")),
            _ => Some(Block::UpstreamUnavailable),
        };
        if matches!(block, Some(Block::UpstreamTimeout | Block::UpstreamUnavailable)) {
            self.metrics.upstream_error();
        }
        let Some(block) = block else {
            return FailToProxy { error_code: 0, can_reuse_downstream: false };
        };
        let code = block.status();
        if session.response_written().is_none() {
            let _ = self.answer_block(session, ctx, block).await;
        } else {
            (ctx.decision, ctx.reason) = ("error", Some(block.code()));
        }
        ctx.rule = Some(e.etype().as_str().to_owned());
        FailToProxy { error_code: code, can_reuse_downstream: false }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        crate::gateway::admission::request_done(session.stream());
        if let Some(id) = ctx.live.take() {
            self.shared.conns.deregister(id);
        }
        let micros = ctx.start.map_or(0, |s| s.elapsed().as_micros() as u64);
        self.metrics.latency(micros);
        let req = session.req_header();
        let path = match ctx.target.get(..ctx.path_len) {
            Some(p) if !p.is_empty() => Cow::Borrowed(p),
            _ => Cow::Owned(raw_target(req)),
        };
        let record = RequestRecord {
            time: Utc::now().with_timezone(&chrono_tz::Asia::Tokyo).to_rfc3339(),
            request_id: Cow::Borrowed(&ctx.request_id),
            user: ctx.user.as_deref().map(Cow::Borrowed),
            device: ctx.device.as_deref().map(Cow::Borrowed),
            client: ctx.client,
            host: Cow::Borrowed(&ctx.host),
            method: Cow::Borrowed(req.method.as_str()),
            path,
            decision: Cow::Borrowed(ctx.decision),
            reason: ctx.reason.map(Cow::Borrowed),
            rule: ctx.rule.as_deref().map(Cow::Borrowed),
            profile: ctx.profile.as_ref().map(|p| Cow::Borrowed(p.name.as_str())),
            status: session.response_written().map_or(0, |r| r.status.as_u16()),
            upstream_status: ctx.upstream_status,
            latency_ms: micros as f64 / 1000.0,
        };
        self.audit.record(&record);
    }
}

/// Records a denial found in the body; `fail_to_proxy` answers it and no
/// held byte goes upstream.
fn refuse_body(ctx: &mut Ctx, deny: sekisho_policy::Deny) -> pingora::Result<()> {
    let deny = match (&ctx.user, &ctx.device) {
        (Some(u), Some(d)) => deny.for_user(u, d),
        _ => deny,
    };
    ctx.body_deny = Some(deny);
    Error::e_explain(ErrorType::HTTPStatus(403), "request body refused by policy")
}

/// Holds body chunks until `HOLD_BYTES` or the end; past that, streams on
/// but always keeps the last `TAIL_BYTES` back, so the bytes of a number
/// the scanner has not finished reading never reach the upstream first.
fn hold_back(ctx: &mut Ctx, body: &mut Option<Bytes>, eos: bool) {
    if let Some(chunk) = body.take() {
        ctx.held.extend_from_slice(&chunk);
    }
    if eos {
        *body = Some(ctx.held.split().freeze());
        return;
    }
    let limit = if ctx.released { TAIL_BYTES } else { HOLD_BYTES };
    if ctx.held.len() > limit {
        ctx.released = true;
        let send = ctx.held.len() - TAIL_BYTES;
        *body = Some(ctx.held.split_to(send).freeze());
    } else {
        // Empty, not `None`: pingora reads `None` as the end of the body.
        *body = Some(Bytes::new());
    }
}
