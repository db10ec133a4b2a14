//! One request: gather the facts (host, target, method, client address,
//! attestation), call `decide`, then either answer with the block page or
//! forward with the gateway's own forwarding headers and stream the answer
//! back. Holds no rule logic; every answer, refusals included, carries a
//! request id and leaves one audit line (through [`Exchange`]).

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use http::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use sekisho_policy::engine::{client_addr, decide, forwarded_https, Attestation, ClientAddr, RequestFacts};
use sekisho_policy::{Decision, Deny, Profile};

use crate::gateway::body::{BodyEnd, Inspection, Moments, Recheck, ReqBody, ResBody};
use crate::gateway::exchange::Exchange;
use crate::gateway::io::ConnClock;
use crate::gateway::pages::Block;
use crate::gateway::request::{
    asks_upgrade, checked_framing, checked_target, content_type, effective_method, is_websocket, joined_header,
    prefers_html, request_host, single_header, strip_for_upstream, strip_response,
};
use crate::gateway::upstream::{Target, UPGRADE_IDLE};
use crate::gateway::Worker;
use crate::shared::Snapshot;

// Header names as constants: a `&str` name is parsed again on every use.
static ATTESTATION: HeaderName = HeaderName::from_static("device-attestation");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static REQUEST_ID: HeaderName = HeaderName::from_static("sekisho-request-id");
static DENY_REASON: HeaderName = HeaderName::from_static("sekisho-deny-reason");
static PAGE_POLICY: HeaderValue = HeaderValue::from_static(
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
);

/// One client connection, as each of its requests sees it.
pub struct Conn {
    pub worker: Rc<Worker>,
    pub clock: Arc<ConnClock>,
    pub peer: SocketAddr,
    pub tls: bool,
    /// SHA-256 of the client certificate the TLS layer verified, if any.
    pub client_cert: Option<[u8; 32]>,
    /// HTTP/1 only: the worker drains, and each answer from now on closes
    /// the connection.
    pub draining: std::cell::Cell<bool>,
    /// The allowed exchanges in flight on this connection, so that a change
    /// that withdraws one can end the connection when hyper no longer polls
    /// the exchange's bodies (an HTTP/2 stream without flow-control window).
    exchanges: std::cell::RefCell<Vec<std::rc::Weak<Recheck>>>,
}

impl Conn {
    pub fn new(
        worker: Rc<Worker>,
        clock: Arc<ConnClock>,
        peer: SocketAddr,
        tls: bool,
        client_cert: Option<[u8; 32]>,
    ) -> Conn {
        Conn {
            worker,
            clock,
            peer,
            tls,
            client_cert,
            draining: std::cell::Cell::new(false),
            exchanges: std::cell::RefCell::default(),
        }
    }

    /// Completes once a committed change (or time: hours that end, a
    /// maintenance window that begins) has withdrawn an exchange in flight
    /// here and that exchange has not ended by itself a moment later (a
    /// body that is polled cuts itself, with its own reason). The caller
    /// then closes the connection.
    pub async fn withdrawn(&self) {
        let mut moments = Moments::new(&self.worker.gateway.shared);
        loop {
            moments.next(tokio::time::Instant::now() + self.worker.gateway.settings.rejudge).await;
            if self.any_withdrawn() {
                tokio::time::sleep(SELF_CUT_GRACE).await;
                if self.any_withdrawn() {
                    return;
                }
            }
        }
    }

    fn track(&self, recheck: &Rc<Recheck>) {
        let mut live = self.exchanges.borrow_mut();
        live.retain(|r| r.strong_count() > 0);
        live.push(Rc::downgrade(recheck));
    }

    /// Whether a change withdrew an exchange in flight here; each one
    /// withdrawn is told ([`Recheck::signal`]), so that one still waiting
    /// for its upstream answers with the block page within the grace.
    fn any_withdrawn(&self) -> bool {
        let live = self.exchanges.borrow();
        let mut any = false;
        for r in live.iter().filter_map(std::rc::Weak::upgrade) {
            if let Err(deny) = r.judge_now() {
                r.signal(deny);
                any = true;
            }
        }
        any
    }
}

/// How long an exchange whose access was withdrawn has to end itself before
/// its connection is closed under it.
const SELF_CUT_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

/// What an allowed request needs to be forwarded.
struct Allowed {
    profile: Arc<Profile>,
    route: usize,
    target: String,
    client: IpAddr,
    user: String,
    device: String,
    /// Checks `decide` left to the whole body, and the one `Content-Type`
    /// they read it by.
    inspect: Option<(sekisho_policy::Inspect, Option<String>)>,
}

/// A block that outlives the snapshot borrow (the policy denial is owned).
enum Refusal {
    Policy(Deny),
    UnknownHost,
    BadRequest(&'static str),
    RateLimited(u64),
    StateUnavailable,
}

/// The hyper service: every request of the connection comes here.
pub async fn handle(conn: Rc<Conn>, req: Request<Incoming>) -> Result<Response<ResBody>, Infallible> {
    let (mut parts, body) = req.into_parts();
    // Read now: forwarding takes the headers.
    let upgrade = asks_upgrade(&parts);
    let mut x = Exchange::new(conn.worker.gateway.clone(), conn.clock.clone(), parts.method.clone());
    let snap = conn.worker.gateway.shared.snapshot_full();
    let verdict = judge(&conn, &parts, &snap, &mut x);
    // The client spoke HTTPS: to this gateway, or to a trusted proxy in
    // front (a TLS load balancer) that says so.
    let https = conn.tls
        || x.profile.as_deref().is_some_and(|p| {
            let proto = parts.headers.get(&X_FORWARDED_PROTO).and_then(|v| v.to_str().ok());
            forwarded_https(&p.network, conn.peer.ip(), proto)
        });
    let hsts = crate::gateway::headers::hsts(x.profile.as_deref(), https).and_then(|v| HeaderValue::from_str(v).ok());
    let mut resp = match verdict {
        Err(refusal) => refuse(&parts, x, &refusal),
        // Boxed: only an allowed request needs the forwarding state, and
        // hyper keeps a box the size of this future for the connection's life.
        Ok(allowed) => Box::pin(forward(&conn, &mut parts, body, x, allowed, https, &snap)).await,
    };
    if let Some(v) = hsts {
        resp.headers_mut().insert(http::header::STRICT_TRANSPORT_SECURITY, v);
    }
    // After an upgrade request the wire guard takes the connection's further
    // bytes for a tunnel's and no longer checks them, so any answer but the
    // switch ends the connection: bytes the client sent behind the request
    // are never read as a request of their own. Not on a 101: the
    // connection is the tunnel's now.
    if (upgrade || conn.draining.get()) && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        resp.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(resp)
}

/// Gathers the facts and decides; `Err` carries the block to answer with.
fn judge(conn: &Conn, req: &Parts, snap: &Snapshot, x: &mut Exchange) -> Result<Allowed, Refusal> {
    let gateway = &conn.worker.gateway;
    x.path = req.uri.path().to_owned();
    // Until a profile says which proxies to believe, the peer is the client:
    // a request refused before that (no `Host`, an unknown host) is still
    // audited with the address it came from.
    x.client = Some(conn.peer.ip());
    // Fail closed: a request that cannot be audited, or judged on a state
    // that could not be confirmed lately, is refused.
    let now = Utc::now();
    if !gateway.audit.healthy() || !gateway.shared.fresh(now, gateway.settings.state_max_age) {
        return Err(Refusal::StateUnavailable);
    }
    let host = request_host(req).map_err(Refusal::BadRequest)?;
    x.host = host.to_owned();
    let (profile, route) = snap.rules.route(host).ok_or(Refusal::UnknownHost)?;
    x.profile = Some(profile.clone());
    let route_index = profile.routes.iter().position(|r| std::ptr::eq(r, route)).unwrap_or_default();
    checked_framing(req).map_err(Refusal::BadRequest)?;
    let target = checked_target(req).map_err(Refusal::BadRequest)?;
    if x.path != target.path {
        x.path = target.path.to_owned();
    }
    let method = effective_method(req).map_err(Refusal::BadRequest)?;
    let forwarded = joined_header(&req.headers, &X_FORWARDED_FOR);
    let client = client_addr(&profile.network, conn.peer.ip(), forwarded.as_deref());
    let client_ip = match client {
        ClientAddr::Known(ip) => ip,
        ClientAddr::Unresolvable => conn.peer.ip(),
    };
    x.client = Some(client_ip);
    gateway.limits.client(client_ip).map_err(Refusal::RateLimited)?;
    let token = single_header(&req.headers, &ATTESTATION)
        .map_err(|_| Refusal::BadRequest("more than one Device-Attestation header"))?;
    let verified = token.map(|v| gateway.shared.tokens.verify(v.to_str().unwrap_or_default(), &snap.state));
    let attestation = match verified.as_deref() {
        None => conn.client_cert.map_or(Attestation::Missing, Attestation::Certificate),
        Some(Ok(v)) => Attestation::Verified(v),
        Some(Err(e)) => Attestation::Rejected(e),
    };
    let integration_tokens = profile.integrations.as_ref().and_then(|i| joined_header(&req.headers, &i.header));
    // The login the rules read: once, in visible ASCII, or the upstream
    // might read another value than the one judged.
    let login = match &profile.account {
        Some(a) => single_header(&req.headers, &a.header)
            .map_err(|_| Refusal::BadRequest("a header the rules read is sent more than once"))?
            .map(|v| v.to_str().map_err(|_| Refusal::BadRequest("a header the rules read is not visible ASCII")))
            .transpose()?,
        None => None,
    };
    let query = target.target.split_once('?').map(|(_, q)| q);
    // Read only where a body is scanned for 個人番号: elsewhere it is not a fact.
    let content_encoding =
        profile.my_number.as_ref().and_then(|_| joined_header(&req.headers, &http::header::CONTENT_ENCODING));
    let facts = RequestFacts {
        profile,
        route,
        method,
        path: target.path,
        client,
        attestation,
        integration_tokens: integration_tokens.as_deref(),
        login,
        query,
        content_encoding: content_encoding.as_deref(),
    };
    match decide(&facts, &snap.state, now) {
        Decision::Allow(a) => {
            x.user = Some(a.user.to_owned());
            x.device = Some(a.device.to_owned());
            gateway.limits.user(a.user).map_err(Refusal::RateLimited)?;
            // Sent twice, the body could be read as one type here and as
            // the other upstream.
            let inspect = match a.inspect {
                Some(inspect) => Some((
                    inspect,
                    content_type(&req.headers).map_err(|_| {
                        Refusal::BadRequest("more than one Content-Type header on a body the rules read")
                    })?,
                )),
                None => None,
            };
            Ok(Allowed {
                profile: profile.clone(),
                route: route_index,
                target: target.target.to_owned(),
                client: client_ip,
                user: a.user.to_owned(),
                device: a.device.to_owned(),
                inspect,
            })
        }
        Decision::Deny(d) => Err(Refusal::Policy(d)),
    }
}

/// The audit line's `path` for a target refused for carrying a 個人番号.
const WITHHELD_PATH: &str = "(withheld: the target carried a 個人番号)";

/// Writes the block page or JSON, with the request id, and audits it.
fn refuse(req: &Parts, mut x: Box<Exchange>, refusal: &Refusal) -> Response<ResBody> {
    let profile = x.profile.clone();
    let block = match (refusal, profile.as_deref()) {
        (Refusal::Policy(deny), Some(profile)) => Block::Policy { deny, profile },
        (Refusal::Policy(_), None) | (Refusal::UnknownHost, _) => Block::UnknownHost,
        (Refusal::BadRequest(why), _) => Block::BadRequest(why),
        (Refusal::RateLimited(secs), _) => Block::RateLimited(*secs),
        (Refusal::StateUnavailable, _) => Block::StateUnavailable,
    };
    match (refusal, block) {
        (Refusal::Policy(deny), Block::Policy { .. }) => {
            // `decide` refuses a 個人番号 only where it sits in the target:
            // the audit line must not carry it (the page says so).
            if deny.reason == sekisho_policy::DenyReason::SpecificPersonalInformation {
                x.path = String::from(WITHHELD_PATH);
            }
            x.denied(deny)
        }
        (Refusal::BadRequest(why), b) => x.blocked(b.code(), Some(Cow::Borrowed(*why))),
        (_, b) => x.blocked(b.code(), None),
    }
    // A refused request's body is never read: the connection cannot be
    // reused (an upgrade request's connection is closed by `handle`).
    page(req, x, block, has_body(req))
}

/// Renders `block` as the answer to `req`.
fn page(req: &Parts, mut x: Box<Exchange>, block: Block<'_>, close: bool) -> Response<ResBody> {
    let html = prefers_html(&req.headers);
    let answer = block.render(html, &x.id, Utc::now());
    x.status = answer.status;
    let id = request_id(&x.id);
    let mut resp = Response::new(ResBody::full(Bytes::from(answer.body), x));
    *resp.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::FORBIDDEN);
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(answer.content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(&DENY_REASON, HeaderValue::from_static(answer.code));
    if html {
        // The page runs nothing and loads nothing: should a string in it
        // ever escape its escaping, the browser still runs no script.
        h.insert(http::header::CONTENT_SECURITY_POLICY, PAGE_POLICY.clone());
        h.insert(http::header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    }
    if let Some(id) = id {
        h.insert(&REQUEST_ID, id);
    }
    if let Some(secs) = answer.retry_after_secs {
        h.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    if close {
        h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// The request id as a header value, marked sensitive: a value that never
/// repeats gains nothing from HTTP/2's header table, and indexing one per
/// answer evicted the answer's other fields from it, so each answer paid
/// to encode and send them in full again (HPACK "never indexed", RFC 7541
/// 6.2.3; no effect on HTTP/1).
fn request_id(id: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(id).ok()?;
    value.set_sensitive(true);
    Some(value)
}

fn has_body(req: &Parts) -> bool {
    let length = req.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    length.is_some_and(|n| n > 0) || req.headers.contains_key(http::header::TRANSFER_ENCODING)
}

/// Sends an allowed request upstream and streams the answer back.
async fn forward(
    conn: &Rc<Conn>,
    req: &mut Parts,
    body: Incoming,
    mut x: Box<Exchange>,
    allowed: Allowed,
    https: bool,
    snap: &Snapshot,
) -> Response<ResBody> {
    let gateway = &conn.worker.gateway;
    gateway.metrics.allowed();
    let Some(route) = allowed.profile.routes.get(allowed.route) else {
        return page(req, x, Block::UpstreamUnavailable, false);
    };
    let Some(tls) = snap.upstreams.route(&route.host) else {
        return page(req, x, Block::UpstreamUnavailable, false);
    };
    let websocket = is_websocket(req);
    let recheck = Rc::new(Recheck {
        worker: conn.worker.clone(),
        profile: allowed.profile.clone(),
        user: allowed.user,
        device: allowed.device,
        generation: std::cell::Cell::new(gateway.shared.generation.load(std::sync::atomic::Ordering::Acquire)),
        next: std::cell::Cell::new(tokio::time::Instant::now() + gateway.settings.rejudge),
        signal: std::cell::RefCell::default(),
    });
    conn.track(&recheck);
    let outcome = std::rc::Rc::new(std::cell::RefCell::new(BodyEnd::Fine));
    let inspection = match allowed.inspect {
        Some((inspect, content_type)) if http_body::Body::is_end_stream(&body) => {
            // Nothing will come: judge the empty body now.
            let held = sekisho_policy::engine::check_held_body(
                &allowed.profile,
                &snap.state,
                &recheck.user,
                &inspect,
                content_type.as_deref(),
                &[],
            );
            if let Err(deny) = held {
                let deny = deny.for_user(&recheck.user, &recheck.device);
                x.denied(&deny);
                return policy_page(req, x, &deny, false);
            }
            None
        }
        Some((inspect, content_type)) => {
            Some(Inspection { inspect, content_type, user: recheck.user.clone(), shared: gateway.shared.clone() })
        }
        None => None,
    };
    let body = ReqBody::new(
        body,
        allowed.profile.clone(),
        inspection,
        crate::gateway::body::Pace::new(gateway.settings.body_idle, gateway.settings.min_body_rate),
        Some(recheck.clone()),
        outcome.clone(),
    );
    let note = body.note.clone();
    let body_sent = body.sent.clone();
    let mut upstream_req = Request::new(body);
    *upstream_req.method_mut() = req.method.clone();
    // Origin-form as received is forwarded as it is (its bytes were judged);
    // absolute-form and HTTP/2 targets go on as their origin-form.
    *upstream_req.uri_mut() = match (req.uri.scheme(), req.uri.authority()) {
        (None, None) => req.uri.clone(),
        _ => match allowed.target.parse() {
            Ok(uri) => uri,
            Err(_) => return page(req, x, Block::BadRequest("the request target is not a URI"), false),
        },
    };
    let mut headers = std::mem::take(&mut req.headers);
    strip_for_upstream(&mut headers, websocket);
    // Room for the four headers below at once: the map hyper parsed is
    // sized to the client's headers, and growing it rehashes them all.
    let _ = headers.try_reserve(4);
    let mut client = String::with_capacity(16);
    crate::control::audit_json::push_ip(&mut client, allowed.client);
    if let Ok(v) = HeaderValue::try_from(client) {
        headers.insert(&X_FORWARDED_FOR, v);
    }
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(if https { "https" } else { "http" }));
    // The client's Host (already read as `x.host`) names the public host;
    // HTTP/2 names it in `:authority` instead.
    let public_host = match headers.insert(http::header::HOST, tls.host.clone()) {
        Some(v) if v.as_bytes() == x.host.as_bytes() => Ok(v),
        _ => HeaderValue::from_str(&x.host),
    };
    if let Ok(v) = public_host {
        headers.insert(&X_FORWARDED_HOST, v);
    }
    *upstream_req.headers_mut() = headers;
    let client_upgrade = if websocket { req.extensions.remove::<hyper::upgrade::OnUpgrade>() } else { None };
    let target = Target { route, tls, websocket, authority: &tls.authority, body_sent: &body_sent };
    let sent = tokio::select! {
        biased;
        sent = conn.worker.pool.send(&target, upstream_req) => sent,
        // Withdrawn while the upstream thinks: the client learns why.
        deny = recheck.signalled() => {
            x.cut(&deny);
            return policy_page(req, x, &deny, true);
        }
    };
    let end = outcome.borrow().clone();
    let (mut resp, lent) = match (sent, end) {
        (_, BodyEnd::Refused(deny)) => {
            let deny = deny.for_user(&recheck.user, &recheck.device);
            x.denied(&deny);
            return policy_page(req, x, &deny, true);
        }
        (_, BodyEnd::Withdrawn(deny)) => {
            x.cut(&deny);
            return policy_page(req, x, &deny, true);
        }
        (_, BodyEnd::TimedOut) => {
            x.blocked("request_timeout", None);
            return page(req, x, Block::RequestTimeout, true);
        }
        (Err(_), BodyEnd::Broken) => {
            x.blocked("bad_request", Some(Cow::Borrowed("the request body could not be read")));
            return page(req, x, Block::BadRequest("the request body could not be read"), true);
        }
        (Err(e), BodyEnd::Fine) => {
            let block = if e.timed_out() { Block::UpstreamTimeout } else { Block::UpstreamUnavailable };
            gateway.metrics.upstream_error();
            x.blocked(block.code(), Some(Cow::Owned(e.to_string())));
            return page(req, x, block, false);
        }
        (Ok(done), _) => done,
    };
    if let Some(note) = note.get() {
        x.note(note);
    }
    x.upstream_status = Some(resp.status().as_u16());
    x.status = resp.status().as_u16();
    let switching = websocket && resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    strip_response(resp.headers_mut(), switching);
    let _ = resp.headers_mut().try_reserve(2);
    if route.upstream.host != x.host {
        crate::gateway::rewrite::location(resp.headers_mut(), &route.upstream, https, &x.host);
        crate::gateway::rewrite::cookies(resp.headers_mut(), &route.upstream.host, &x.host);
    }
    if let Some(id) = request_id(&x.id) {
        resp.headers_mut().insert(&REQUEST_ID, id);
    }
    if switching {
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        crate::gateway::tunnel::spawn(client_upgrade, upstream_upgrade, recheck, UPGRADE_IDLE, x);
        let (head, _) = resp.into_parts();
        return Response::from_parts(head, ResBody::detached());
    }
    let read_timeout = std::time::Duration::from_secs(u64::from(route.timeout_secs.get()));
    let (head, incoming) = resp.into_parts();
    let body = ResBody::upstream(incoming, conn.worker.clone(), lent, Some(recheck), read_timeout, x);
    Response::from_parts(head, body)
}

fn policy_page(req: &Parts, x: Box<Exchange>, deny: &Deny, close: bool) -> Response<ResBody> {
    let profile = x.profile.clone();
    match profile.as_deref() {
        Some(profile) => page(req, x, Block::Policy { deny, profile }, close),
        None => page(req, x, Block::UnknownHost, close),
    }
}
