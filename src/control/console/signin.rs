//! Signing in and out. A person signs in with their own admin credential
//! (a named admin token today); a wrong one counts against the same
//! lockout as the admin API (`Limiters::admin_failure`). A sign-in is an
//! admin audit record, and a session starts only once it is recorded.
//! It must never echo, log or keep the credential itself.

use std::net::SocketAddr;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use maud::html;

use super::session::Person;
use super::{guard, layout, session_cookie, Answer, Console, Lang, Reply};
use crate::control::admin::{Admin, Caller};

/// A line above the sign-in form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// The credential matched no admin.
    Unknown,
    /// A change was sent without a live session (expired or signed out).
    Expired,
    SignedOut,
}

pub fn page(lang: Lang, notice: Option<Notice>, status: StatusCode) -> Reply {
    let title = lang.t("サインイン", "Sign in");
    let notice = notice.map(|n| match n {
        Notice::Unknown => ("error", lang.t("管理用トークンが違います。", "That admin token is not recognised.")),
        Notice::Expired => (
            "warn",
            lang.t(
                "サインインの有効期限が切れたため、操作は行われていません。もう一度サインインしてください。",
                "Your session ended, so nothing was changed. Please sign in again.",
            ),
        ),
        Notice::SignedOut => ("notice", lang.t("サインアウトしました。", "You are signed out.")),
    });
    let body = html! {
        h1 { (title) }
        @if let Some((class, text)) = notice {
            p class=(class) role="alert" { (text) }
        }
        form.act method="post" action="/console/signin" {
            label for="token" { (lang.t("管理用トークン", "Admin token")) }
            p.hint #token-hint {
                (lang.t("ご自身に発行された管理用トークンを入力してください。操作はこの名前で記録されます。",
                        "Enter the admin token issued to you. Your actions are recorded under its name."))
            }
            input #token type="password" name="token" required autocomplete="current-password" aria-describedby="token-hint";
            div.row { button type="submit" { (lang.t("サインイン", "Sign in")) } }
        }
    };
    Reply::Page(status, layout::bare(lang, title, body))
}

/// Checks the credential; on success records the sign-in and starts a session.
pub async fn post(admin: &Admin, req: Request<Incoming>, peer: SocketAddr, lang: Lang) -> Answer {
    guard::same_origin(req.headers(), admin.console.secure)?;
    let form = super::read_form(req).await?;
    let presented = form.get("token").map(str::trim).unwrap_or_default();
    let Some(token) = admin.token_matching(presented).filter(|_| !presented.is_empty()) else {
        admin.limits.admin_failure(peer.ip());
        return Ok(page(lang, Some(Notice::Unknown), StatusCode::UNAUTHORIZED));
    };
    let caller = Caller::token(token, peer);
    let person = Person::from_token(token);
    let reason = crate::control::reasons::signed_in(person.how.as_str());
    admin.record_action(&caller, "console.signin", &token.name, &reason).await?;
    let id = admin.console.sessions.start(person);
    Ok(Reply::Go { to: "/console/".into(), cookie: Some(session_cookie(admin.console.secure, Some(&id))) })
}

pub fn sign_out(console: &Console, session_id: &str) -> Reply {
    console.sessions.end(session_id);
    Reply::Go { to: "/console/signin?bye=1".into(), cookie: Some(session_cookie(console.secure, None)) }
}

/// The answer while the address is locked out after failed sign-ins.
pub fn locked(lang: Lang, secs: u64) -> Reply {
    let title = lang.t("しばらくお待ちください", "Please wait");
    let minutes = secs.div_ceil(60);
    let body = html! {
        h1 { (title) }
        p.error role="alert" {
            (lang.t("サインインの失敗が続いたため、この端末からの操作を一時的に止めています。",
                    "Too many failed sign-ins: this address is locked out for now."))
            " " (lang.t("再試行までの目安:", "Try again in about:")) " " (minutes) (lang.t("分", " min"))
        }
    };
    Reply::Page(StatusCode::TOO_MANY_REQUESTS, layout::bare(lang, title, body))
}
