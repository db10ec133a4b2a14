//! The emergency stop (熊本 第6条第4項): one clearly marked control, a
//! confirmation page that names the effect ("すべての利用者のすべての
//! サービスが遮断されます"), a required reason, and resume. Stop and
//! resume are the admin API's `stop`; the confirmation is only a page in
//! between, and the stop itself also refuses a form that skipped it. It
//! must never stop or resume anything without that function.

use http::StatusCode;
use maud::{html, Markup};
use sekisho_policy::form::Form;

use super::{layout, Answer, Ctx, Reply};
use crate::control::admin::{Action, Admin, ApiError, StopInput};
use crate::shared::Snapshot;

pub fn page(admin: &Admin, ctx: &Ctx) -> Answer {
    let snap = admin.read(&ctx.caller(), Action::ReadState)?;
    let title = ctx.t("緊急停止", "Emergency stop");
    let may = ctx.caller().may(Action::EmergencyStop);
    let stops = &snap.state.stops;
    let body = html! {
        h1 { (title) }
        p.lead { (ctx.t("セキュリティ事故などの緊急時に、利用者の承諾なく、関所を通るすべての利用を止めます（熊本市議会クラウドシステム運用管理等基準 第6条第4項）。",
                         "Stops all use through the gateway in an emergency such as a security incident, without the users' consent (Kumamoto City Council cloud standard, art. 6(4)).")) }
        @match &stops.global {
            Some(stop) => {
                div.stop-box {
                    h2 { span.state-on { (ctx.t("停止中", "STOPPED")) } }
                    p.effect { (ctx.t("すべての利用者のすべてのサービスを遮断しています。", "All users of all services are blocked.")) }
                    p { (ctx.t("理由:", "Reason:")) " " (stop.reason) }
                    p { (ctx.t("開始:", "Since:")) " " (layout::when(stop.since)) }
                    @if may { (lift_form(ctx, None)) }
                }
            }
            None => {
                p { (ctx.t("現在の状態:", "Now:")) " " span.state-off { (ctx.t("通常運用（停止していません）", "Normal (not stopped)")) } }
                @if may { (stop_form(ctx, &snap)) }
                @else { p { (ctx.t("緊急停止は統括管理者が行います。", "The general administrator runs the emergency stop.")) } }
            }
        }
        @if !stops.profiles.is_empty() {
            h2 { (ctx.t("サービスごとの停止", "Stopped services")) }
            @for (name, stop) in &stops.profiles {
                div.panel {
                    h3 { code { (name) } " " span.state-on { (ctx.t("停止中", "stopped")) } }
                    p { (stop.reason) " · " (layout::when(stop.since)) }
                    @if may { (lift_form(ctx, Some(name))) }
                }
            }
        }
    };
    Ok(Reply::Page(StatusCode::OK, layout::page(ctx, title, body)))
}

fn stop_form(ctx: &Ctx, snap: &Snapshot) -> Markup {
    html! {
        form.stop-box method="post" action="/console/stop/confirm" {
            h2 { (ctx.t("緊急停止する", "Stop everything")) }
            (layout::csrf(ctx))
            label for="scope" { (ctx.t("止める範囲", "What to stop")) }
            select #scope name="profile" {
                option value="" { (ctx.t("すべてのサービス", "All services")) }
                @for p in snap.rules.profiles() { option value=(p.name) { (p.title) " (" (p.name) ")" } }
            }
            (layout::reason_box(ctx, "stop-reason", ctx.t("理由", "Reason")))
            div.row { button.danger type="submit" { (ctx.t("緊急停止の確認へ進む", "Continue to confirm")) } }
        }
    }
}

fn lift_form(ctx: &Ctx, profile: Option<&str>) -> Markup {
    html! {
        form.act method="post" action="/console/stop/lift" {
            h3 { (ctx.t("再開する", "Resume")) }
            (layout::csrf(ctx))
            @if let Some(p) = profile { input type="hidden" name="profile" value=(p); }
            (layout::reason_box(ctx, &format!("lift-{}", profile.unwrap_or("all")), ctx.t("再開の理由", "Reason")))
            div.row { button type="submit" { (ctx.t("利用を再開する", "Resume access")) } }
        }
    }
}

/// The page between the control and the stop: what will happen, in words.
pub fn confirm(admin: &Admin, ctx: &Ctx, form: &Form) -> Answer {
    layout::may(ctx, Action::EmergencyStop)?;
    let snap = admin.read(&ctx.caller(), Action::ReadState)?;
    let reason = form.text("reason").ok_or_else(|| bad(ctx.t("理由を入力してください。", "Give a reason.")))?;
    let profile = form.text("profile");
    let effect = match profile {
        None => ctx
            .t("すべての利用者のすべてのサービスが遮断されます", "All users of all services will be blocked")
            .to_owned(),
        Some(p) => {
            let title = snap.rules.profile(p).map_or(p, |x| x.title.as_str());
            format!("{}{}", title, ctx.t(" のすべての利用者が遮断されます", ": all of its users will be blocked"))
        }
    };
    let title = ctx.t("緊急停止の確認", "Confirm the emergency stop");
    let body = html! {
        h1 { (title) }
        form.stop-box method="post" action="/console/stop" {
            p.effect role="alert" { (effect) }
            p { (ctx.t("接続中の通信もただちに切断されます。再開するまで、誰も利用できません。",
                       "Open connections are cut at once. Nobody gets through until you resume.")) }
            dl.facts { dt { (ctx.t("理由", "Reason")) } dd { (reason) } }
            (layout::csrf(ctx))
            input type="hidden" name="reason" value=(reason);
            @if let Some(p) = profile { input type="hidden" name="profile" value=(p); }
            label.check for="confirmed" {
                input #confirmed type="checkbox" name="confirmed" value="1" required;
                span { (effect) (ctx.t("。これを理解しました。", ". I understand.")) }
            }
            div.row {
                button.danger type="submit" { (ctx.t("緊急停止を実行する", "Stop now")) }
                a.button.secondary href="/console/stop" { (ctx.t("やめる", "Cancel")) }
            }
        }
    };
    Ok(Reply::Page(StatusCode::OK, layout::page(ctx, title, body)))
}

/// The stop itself, once confirmed.
pub async fn start(admin: &Admin, ctx: &Ctx, form: &Form) -> Answer {
    if form.get("confirmed") != Some("1") {
        return Err(bad(ctx.t(
            "確認の欄にチェックを入れてください。停止していません。",
            "Tick the confirmation; nothing was stopped.",
        )));
    }
    let input = StopInput { profile: form.text("profile").map(str::to_owned), reason: layout::reason(ctx, form)? };
    admin.stop(&ctx.caller(), input, true).await?;
    Ok(Reply::Done {
        to: "/console/stop".into(),
        flash: ctx.t("緊急停止しました。", "The emergency stop is on.").into(),
    })
}

pub async fn lift(admin: &Admin, ctx: &Ctx, form: &Form) -> Answer {
    let input = StopInput { profile: form.text("profile").map(str::to_owned), reason: layout::reason(ctx, form)? };
    admin.stop(&ctx.caller(), input, false).await?;
    Ok(Reply::Done {
        to: "/console/stop".into(), flash: ctx.t("利用を再開しました。", "Access resumed.").into()
    })
}

fn bad(text: &str) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, text.to_owned())
}
