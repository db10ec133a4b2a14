//! The frame every console page shares: the header naming who is signed in
//! and with which roles, the navigation (only what the roles may open), the
//! language switch, the notice of the last change, and the security
//! headers of every answer. Also the small pieces forms share (the CSRF
//! field, a reason box). It must never render an action's button without
//! asking the role table first (`Ctx::caller().may`).

use chrono::{DateTime, Utc};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use maud::{html, Markup, DOCTYPE};

use super::{Ctx, Lang, Reply};
use crate::control::admin::{Action, ApiError};

/// No inline script or style anywhere: the console's own files only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The headers of every console answer. Pages carry personal data, so
/// nothing is stored by the browser or a proxy.
pub fn security_headers(h: &mut HeaderMap, secure: bool) {
    let fixed = [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
        (header::HeaderName::from_static("cross-origin-opener-policy"), "same-origin"),
        (header::HeaderName::from_static("cross-origin-resource-policy"), "same-origin"),
    ];
    for (name, value) in fixed {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    }
    if secure {
        h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
    }
}

/// The navigation: a page, the action that opens it, its names.
const NAV: [(&str, Action, &str, &str); 7] = [
    ("/console/", Action::ReadState, "今日の状況", "Today"),
    ("/console/devices", Action::ReadState, "端末の申請", "Devices"),
    ("/console/people", Action::ReadState, "利用者", "People"),
    ("/console/stop", Action::ReadState, "緊急停止", "Emergency stop"),
    ("/console/hours", Action::ReadOvertime, "時間外・保守", "Hours"),
    ("/console/audit", Action::ReadAudit, "監査記録", "Audit"),
    ("/console/rules", Action::ReadState, "ルール", "Rules"),
];

/// A whole page: header, navigation, notice, then `body`.
pub fn page(ctx: &Ctx, title: &str, body: Markup) -> Markup {
    let caller = ctx.caller();
    let lang = ctx.lang;
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            (head(lang, title))
            body {
                a.skip href="#main" { (lang.t("本文へ移動", "Skip to content")) }
                header.top {
                    p.brand { a href="/console/" { (lang.t("関所 管理コンソール", "sekisho console")) } }
                    p.who {
                        span.label { (lang.t("サインイン中:", "Signed in:")) } " "
                        strong { (ctx.session.person.name) }
                        @for role in &ctx.session.person.roles {
                            " " span.role { (lang.role(*role)) }
                        }
                        @if let Some(d) = &ctx.session.person.department { " " span.role { (d) } }
                    }
                    (switch(lang, &ctx.here))
                    form.signout method="post" action="/console/signout" {
                        (csrf(ctx))
                        button type="submit" { (lang.t("サインアウト", "Sign out")) }
                    }
                }
                nav aria-label=(lang.t("画面", "Pages")) {
                    ul {
                        @for (href, action, ja, en) in NAV {
                            @if caller.may(action) {
                                li { a href=(href) aria-current=[current(&ctx.here, href)] { (lang.t(ja, en)) } }
                            }
                        }
                    }
                }
                main #main {
                    @if let Some(flash) = &ctx.session.flash {
                        p.notice role="status" { (flash) }
                    }
                    (body)
                }
            }
        }
    }
}

/// A page outside a session (sign-in, lockout).
pub fn bare(lang: Lang, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            (head(lang, title))
            body.bare {
                header.top {
                    p.brand { (lang.t("関所 管理コンソール", "sekisho console")) }
                    (switch(lang, "/console/signin"))
                }
                main #main { (body) }
            }
        }
    }
}

fn head(lang: Lang, title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="referrer" content="no-referrer";
            title { (title) " | " (lang.t("関所", "sekisho")) }
            link rel="icon" type="image/svg+xml" href=(super::assets::ICON_PATH.as_str());
            link rel="stylesheet" href=(super::assets::CSS_PATH.as_str());
            script src=(super::assets::JS_PATH.as_str()) defer {}
        }
    }
}

fn switch(lang: Lang, here: &str) -> Markup {
    let other = lang.other();
    let href = format!("/console/lang?to={}&back={}", other.code(), encode(here));
    html! { p.lang { a href=(href) lang=(other.code()) hreflang=(other.code()) { (other.name()) } } }
}

fn current(here: &str, href: &str) -> Option<&'static str> {
    let path = here.split('?').next().unwrap_or(here);
    let on = if href == "/console/" { path == href } else { path == href || path.starts_with(&format!("{href}/")) };
    on.then_some("page")
}

/// The hidden CSRF field every form that changes something carries.
pub fn csrf(ctx: &Ctx) -> Markup {
    html! { input type="hidden" name="csrf" value=(ctx.session.csrf); }
}

/// A required reason box with its label.
pub fn reason_box(ctx: &Ctx, id: &str, label: &str) -> Markup {
    html! {
        label for=(id) { (label) " " span.req { (ctx.t("（必須）", "(required)")) } }
        textarea id=(id) name="reason" required rows="2" {}
    }
}

/// The reason a form must carry, said in the page's language when it is
/// blank (the admin API refuses a blank one too, in English).
pub fn reason(ctx: &Ctx, form: &sekisho_policy::form::Form) -> Result<String, ApiError> {
    required(ctx, form, "reason", ctx.t("理由", "a reason"))
}

/// A field a form must fill, with its name for the message.
pub fn required(ctx: &Ctx, form: &sekisho_policy::form::Form, field: &str, what: &str) -> Result<String, ApiError> {
    form.text(field).map(str::to_owned).ok_or_else(|| {
        let text = format!("{}{}", what, ctx.t("を入力してください。", ": please fill it in."));
        ApiError(StatusCode::BAD_REQUEST, text)
    })
}

/// An instant as an administrator in Kumamoto or Abiko reads it.
pub fn when(t: DateTime<Utc>) -> String {
    t.with_timezone(&chrono_tz::Asia::Tokyo).format("%Y-%m-%d %H:%M").to_string()
}

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A page for an action refused or failed: what happened, in words, and
/// that nothing was changed unless the store said otherwise.
pub fn error_page(lang: Lang, ctx: Option<&Ctx>, e: &ApiError) -> Markup {
    let headline = match e.0 {
        StatusCode::FORBIDDEN => lang.t("この操作はできません", "This action is not allowed"),
        StatusCode::UNAUTHORIZED => lang.t("サインインが必要です", "Sign-in needed"),
        StatusCode::NOT_FOUND => lang.t("見つかりません", "Not found"),
        StatusCode::CONFLICT => lang.t("現在の状態ではできません", "Not possible in the current state"),
        StatusCode::SERVICE_UNAVAILABLE => lang.t("保存できませんでした", "The change was not saved"),
        StatusCode::TOO_MANY_REQUESTS => lang.t("しばらくお待ちください", "Please wait"),
        s if s.is_client_error() => lang.t("入力内容を確認してください", "Please check what you entered"),
        _ => lang.t("処理できませんでした", "The request failed"),
    };
    let body = html! {
        h1 { (headline) }
        p.error role="alert" { (e.1) }
        p { (lang.t("変更は行われていません。", "Nothing was changed.")) }
        p { a href="/console/" data-back="1" { (lang.t("前の画面に戻る", "Go back")) } }
    };
    match ctx {
        Some(ctx) => page(ctx, headline, body),
        None => bare(lang, headline, body),
    }
}

pub fn not_found(lang: Lang) -> Result<Reply, ApiError> {
    Err(ApiError(StatusCode::NOT_FOUND, lang.t("この画面はありません。", "There is no such page.").to_owned()))
}

/// Refuses a page the caller's roles may not open.
pub fn may(ctx: &Ctx, action: Action) -> Result<(), ApiError> {
    if ctx.caller().may(action) {
        return Ok(());
    }
    Err(ApiError(
        StatusCode::FORBIDDEN,
        ctx.t("この画面を開く権限がありません。", "Your roles may not open this page.").to_owned(),
    ))
}
