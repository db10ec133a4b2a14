//! The admin console in the browser (`/console/` on the admin listener),
//! Japanese first. Owns sign-in and sessions, the CSRF and origin checks,
//! the security headers, the routing of console pages and the pages
//! themselves (server-rendered maud templates, with a small embedded style
//! sheet and script). Every action calls the very function the admin API
//! calls (`Admin::flag`, `Admin::device_status`, ...), which checks the
//! role from the one table in `control::roles`; the console only decides
//! what to offer. It must never decide a request, hold a second role
//! table, log a credential or a session id, or answer 2xx for a change
//! that was not committed.

mod apply;
mod assets;
mod audit;
mod chart;
mod dashboard;
mod devices;
mod guard;
mod history;
mod hours;
mod i18n;
mod layout;
mod people;
mod rules;
mod session;
mod signin;
mod stop;
mod summary;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use maud::Markup;
use sekisho_policy::form::Form;

use crate::config::ConsoleConfig;
use crate::control::admin::{Admin, ApiError, Caller};

pub use history::History;
use i18n::Lang;
use session::{Session, Sessions};

/// The console's state inside the admin API.
pub struct Console {
    enabled: bool,
    /// The admin listener speaks TLS: cookies are `Secure`, HSTS is sent.
    secure: bool,
    sessions: Sessions,
    /// The last hour's counters, sampled by [`sample_every_minute`].
    pub history: History,
}

impl Console {
    pub fn new(config: &ConsoleConfig, secure: bool) -> Console {
        Console { enabled: config.enabled, secure, sessions: Sessions::new(config), history: History::default() }
    }
}

/// Whether `path` belongs to the console (the admin API routes it here).
pub fn owns(path: &str) -> bool {
    path == "/console" || path.starts_with("/console/")
}

/// Samples the gateway's counters once a minute for the last-hour view,
/// until `shutdown`.
pub async fn sample_every_minute(admin: Arc<Admin>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        admin.console.history.record(chrono::Utc::now(), admin.metrics.counts());
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
        }
    }
}

/// Largest form body the console reads.
const MAX_FORM: usize = 64 * 1024;
/// The session cookie; over TLS with the `__Host-` prefix (no Domain, Path=/).
const COOKIE: &str = "sekisho_console";
const SECURE_COOKIE: &str = "__Host-sekisho_console";
const LANG_COOKIE: &str = "sekisho_lang";

/// What one console request knows once it is past sign-in and the checks.
pub(crate) struct Ctx {
    pub lang: Lang,
    pub session: Session,
    session_id: String,
    pub source: SocketAddr,
    /// The query string's fields (filters, page numbers).
    pub query: Form,
    /// The request's own path and query, to come back to after a change.
    pub here: String,
}

impl Ctx {
    /// The signed-in person as the admin functions see a caller.
    pub fn caller(&self) -> Caller<'_> {
        let p = &self.session.person;
        Caller { name: &p.name, roles: &p.roles, department: p.department.as_deref(), source: self.source }
    }

    pub fn t<'a>(&self, ja: &'a str, en: &'a str) -> &'a str {
        self.lang.t(ja, en)
    }
}

/// A console answer before its headers.
pub(crate) enum Reply {
    Page(StatusCode, Markup),
    /// 303 to `to`, leaving `flash` for the next page.
    Done {
        to: String,
        flash: String,
    },
    /// 303 to `to`, setting a cookie (sign-in, sign-out, language).
    Go {
        to: String,
        cookie: Option<String>,
    },
    /// A file to save (CSV export, enrollment bundle).
    File {
        name: String,
        content_type: &'static str,
        body: Vec<u8>,
    },
    Json(serde_json::Value),
}

type Answer = Result<Reply, ApiError>;

/// Serves one console request.
pub async fn handle(admin: &Admin, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
    let console = &admin.console;
    let path = req.uri().path().to_owned();
    if let Some(asset) = path.strip_prefix("/console/assets/").filter(|_| console.enabled) {
        return assets::serve(asset, console.secure);
    }
    let lang = Lang::from_code(cookie(&req, LANG_COOKIE));
    let (answer, ctx) = answer(admin, req, peer, lang, &path).await;
    let mut resp = finish(console, lang, answer, ctx.as_ref());
    if let Some(secs) = admin.limits.admin_locked(peer.ip()) {
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    resp
}

async fn answer(
    admin: &Admin,
    req: Request<Incoming>,
    peer: SocketAddr,
    lang: Lang,
    path: &str,
) -> (Answer, Option<Ctx>) {
    if !admin.console.enabled {
        return (layout::not_found(lang), None);
    }
    if let Some(secs) = admin.limits.admin_locked(peer.ip()) {
        return (Ok(signin::locked(lang, secs)), None);
    }
    let query = Form::parse(req.uri().query().unwrap_or_default().as_bytes()).unwrap_or_default();
    let segments: Vec<String> = path
        .trim_start_matches("/console")
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| sekisho_policy::body::percent_decode(s.as_bytes()).unwrap_or_default())
        .collect();
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = req.method().clone();
    match (&method, seg.as_slice()) {
        (&Method::GET, []) if path == "/console" => (Ok(go("/console/", None)), None),
        (&Method::GET, ["lang"]) => (Ok(switch_language(&query)), None),
        (&Method::GET, ["signin"]) => {
            let notice = query.get("bye").map(|_| signin::Notice::SignedOut);
            (Ok(signin::page(lang, notice, StatusCode::OK)), None)
        }
        (&Method::POST, ["signin"]) => (signin::post(admin, req, peer, lang).await, None),
        _ => match signed_in(admin, req, peer, lang, query).await {
            Ok(ctx) => {
                let (answer, ctx) = (route(admin, &ctx.0, &method, &seg, &ctx.1).await, ctx.0);
                (answer.map(|r| with_flash(&admin.console, &ctx, r)), Some(ctx))
            }
            Err(refused) => (refused, None),
        },
    }
}

/// The session of a request, and for a change its form once the origin
/// and CSRF checks passed. A request without a live session goes to the
/// sign-in page; a change without one is refused (nothing changed).
async fn signed_in(
    admin: &Admin,
    req: Request<Incoming>,
    peer: SocketAddr,
    lang: Lang,
    query: Form,
) -> Result<(Ctx, Form), Answer> {
    let console = &admin.console;
    let id = cookie(&req, cookie_name(console.secure)).map(str::to_owned);
    let session = id.as_deref().and_then(|id| console.sessions.get(id));
    let reading = matches!(*req.method(), Method::GET | Method::HEAD);
    let (Some(session_id), Some(session)) = (id, session) else {
        return Err(match reading {
            true => Ok(go("/console/signin", None)),
            false => Ok(signin::page(lang, Some(signin::Notice::Expired), StatusCode::UNAUTHORIZED)),
        });
    };
    let here = req.uri().path_and_query().map_or_else(|| "/console/".to_owned(), |p| p.as_str().to_owned());
    let form = match reading {
        true => Form::default(),
        false => {
            guard::same_origin(req.headers(), console.secure).map_err(|r| Err(r.into()))?;
            let form = read_form(req).await.map_err(Err)?;
            if !session::csrf_matches(&session, form.get("csrf")) {
                return Err(Err(guard::Refusal::Csrf.into()));
            }
            form
        }
    };
    Ok((Ctx { lang, session, session_id, source: peer, query, here }, form))
}

async fn read_form(req: Request<Incoming>) -> Result<Form, ApiError> {
    let body = Limited::new(req.into_body(), MAX_FORM)
        .collect()
        .await
        .map_err(|_| ApiError(StatusCode::PAYLOAD_TOO_LARGE, "the form is larger than 64 KiB".into()))?
        .to_bytes();
    Form::parse(&body).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))
}

async fn route(admin: &Admin, ctx: &Ctx, method: &Method, seg: &[&str], form: &Form) -> Answer {
    match (method.as_str(), seg) {
        ("GET", []) => dashboard::page(admin, ctx),
        ("GET", ["glance.json"]) => dashboard::live(admin, ctx),
        ("POST", ["signout"]) => Ok(signin::sign_out(&admin.console, &ctx.session_id)),
        ("GET", ["apply"]) => apply::page(ctx),
        ("POST", ["apply"]) => apply::file(admin, ctx, form).await,
        ("GET", ["devices"]) => devices::list(admin, ctx),
        ("GET", ["devices", id]) => devices::detail(admin, ctx, id).await,
        ("POST", ["devices", id, "certificate"]) => devices::certificate(admin, ctx, id, form).await,
        ("POST", ["devices", id, action]) => devices::decide(admin, ctx, id, action, form).await,
        ("POST", ["enrollments", id]) => devices::download(admin, ctx, id).await,
        ("GET", ["people"]) => people::search(admin, ctx),
        ("GET", ["people", id]) => people::detail(admin, ctx, id).await,
        ("POST", ["people", id, action]) => people::act(admin, ctx, id, action, form).await,
        ("GET", ["stop"]) => stop::page(admin, ctx),
        ("POST", ["stop", "confirm"]) => stop::confirm(admin, ctx, form),
        ("POST", ["stop"]) => stop::start(admin, ctx, form).await,
        ("POST", ["stop", "lift"]) => stop::lift(admin, ctx, form).await,
        ("GET", ["hours"]) => hours::page(admin, ctx),
        ("POST", ["overtime"]) => hours::grant(admin, ctx, form).await,
        ("POST", ["overtime", id, "withdraw"]) => hours::withdraw(admin, ctx, id, form).await,
        ("POST", ["maintenance"]) => hours::schedule(admin, ctx, form).await,
        ("POST", ["maintenance", id, "cancel"]) => hours::cancel(admin, ctx, id, form).await,
        ("GET", ["audit"]) => audit::page(admin, ctx).await,
        ("GET", ["audit.csv"]) => audit::csv(admin, ctx).await,
        ("GET", ["rules"]) => rules::page(admin, ctx).await,
        ("POST", ["rules", "reload"]) => rules::reload(admin, ctx, form).await,
        _ => layout::not_found(ctx.lang),
    }
}

/// Stores a successful change's notice in the session for the next page.
fn with_flash(console: &Console, ctx: &Ctx, reply: Reply) -> Reply {
    if let Reply::Done { flash, .. } = &reply {
        console.sessions.flash(&ctx.session_id, flash.clone());
    }
    reply
}

/// `?to=en&back=/console/people`: remembers the language, goes back
/// (only ever to a console page).
fn switch_language(query: &Form) -> Reply {
    let lang = Lang::from_code(query.get("to"));
    let back = query.get("back").filter(|b| owns(b) && !b.contains(['\\', '\r', '\n'])).unwrap_or("/console/");
    let cookie = format!("{LANG_COOKIE}={}; Path=/; Max-Age=31536000; SameSite=Strict; HttpOnly", lang.code());
    go(back, Some(cookie))
}

fn go(to: &str, cookie: Option<String>) -> Reply {
    Reply::Go { to: to.to_owned(), cookie }
}

/// The session cookie's name for this listener.
fn cookie_name(secure: bool) -> &'static str {
    if secure {
        SECURE_COOKIE
    } else {
        COOKIE
    }
}

/// The session cookie, as set at sign-in (`id`) or cleared at sign-out (`None`).
fn session_cookie(secure: bool, id: Option<&str>) -> String {
    let name = cookie_name(secure);
    let secure = if secure { "; Secure" } else { "" };
    match id {
        Some(id) => format!("{name}={id}; Path=/; HttpOnly; SameSite=Strict{secure}"),
        None => format!("{name}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{secure}"),
    }
}

fn cookie<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    // Several Cookie headers are joined as one list (RFC 9113 §8.2.3);
    // a name found in two of them counts as absent.
    let mut found = None;
    for value in req.headers().get_all(header::COOKIE) {
        if let Some(v) = value.to_str().ok().and_then(|h| sekisho_policy::form::cookie(h, name)) {
            if found.replace(v).is_some() {
                return None;
            }
        }
    }
    found
}

/// The console's answer with every security header.
fn finish(console: &Console, lang: Lang, answer: Answer, ctx: Option<&Ctx>) -> Response<Full<Bytes>> {
    let mut resp = match answer {
        Ok(Reply::Page(status, markup)) => html(status, markup.into_string()),
        Ok(Reply::Done { to, .. }) => redirect(&to, None),
        Ok(Reply::Go { to, cookie }) => redirect(&to, cookie),
        Ok(Reply::File { name, content_type, body }) => file(&name, content_type, body),
        Ok(Reply::Json(v)) => {
            let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        Err(e) => html(e.0, layout::error_page(lang, ctx, &e).into_string()),
    };
    layout::security_headers(resp.headers_mut(), console.secure);
    resp
}

fn html(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    resp
}

fn file(name: &str, content_type: &'static str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Names are ids of letters, digits and `-_.@` (check_id) plus a fixed suffix.
    let safe: String = name.chars().filter(|c| c.is_ascii_alphanumeric() || "-_.@".contains(*c)).collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{safe}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

fn redirect(to: &str, set_cookie: Option<String>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    if let Some(c) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}
