//! Rules: which profiles are loaded, whether each is in force today (the
//! engine's own `in_force`), which are stopped, and the last reloads
//! (who, when, why, who approved, 我孫子 13.); a reload with an approver
//! and a reason. The reload is the admin API's `reload`: a rules set that
//! fails to parse leaves the running rules in place and the page says why.
//! It must never read or write a rules file itself.

use chrono::Utc;
use http::StatusCode;
use maud::{html, Markup};
use sekisho_policy::form::Form;

use super::{layout, Answer, Ctx, Reply};
use crate::control::admin::{Action, Admin, ReloadInput};
use crate::control::store::{AdminFilter, AuditRecord};
use crate::shared::Snapshot;

pub async fn page(admin: &Admin, ctx: &Ctx) -> Answer {
    let caller = ctx.caller();
    let snap = admin.read(&caller, Action::ReadState)?;
    let reloads = match caller.may(Action::ReadAudit) {
        true => {
            let filter = AdminFilter { action: Some("rules.reload".into()), limit: 5, ..AdminFilter::default() };
            admin.admin_records(&caller, &filter).await?
        }
        false => Vec::new(),
    };
    let title = ctx.t("ルール（プロファイル）", "Rules (profiles)");
    let body = html! {
        h1 { (title) }
        p.lead { (ctx.t("読み込み元:", "Read from:")) " " code { (admin.rules_dir.display().to_string()) } }
        (profiles(ctx, &snap))
        h2 { (ctx.t("最近の再読み込み", "Recent reloads")) }
        (reload_list(ctx, &reloads))
        @if caller.may(Action::ReloadRules) { (reload_form(ctx)) }
    };
    Ok(Reply::Page(StatusCode::OK, layout::page(ctx, title, body)))
}

fn profiles(ctx: &Ctx, snap: &Snapshot) -> Markup {
    let now = Utc::now();
    let stops = &snap.state.stops;
    html! {
        div.table-wrap { table {
            thead { tr {
                th scope="col" { (ctx.t("名前", "Name")) }
                th scope="col" { (ctx.t("サービス", "Service")) }
                th scope="col" { (ctx.t("ホスト", "Hosts")) }
                th scope="col" { (ctx.t("有効期間", "Validity")) }
                th scope="col" { (ctx.t("状態", "State")) }
            } }
            tbody { @for p in snap.rules.profiles() {
                tr {
                    td { code { (p.name) } }
                    td { (p.title) }
                    td { @for r in &p.routes { code { (r.host) } br; } }
                    td { @match (p.valid_from, p.valid_until) {
                        (None, None) => { (ctx.t("定めなし", "open-ended")) }
                        (Some(f), None) => { (f.to_string()) " " (ctx.t("から", "onwards")) }
                        (None, Some(u)) => { (u.to_string()) " " (ctx.t("まで", "at the latest")) }
                        (Some(f), Some(u)) => { (f.to_string()) " – " (u.to_string()) }
                    } }
                    td {
                        @if !sekisho_policy::engine::in_force(p, now) { span.badge.bad { (ctx.t("期間外", "not in force")) } }
                        @else if stops.global.is_some() || stops.profiles.contains_key(&p.name) { span.badge.bad { (ctx.t("緊急停止中", "stopped")) } }
                        @else { span.badge.good { (ctx.t("有効", "in force")) } }
                    }
                }
            } }
        } }
    }
}

fn reload_list(ctx: &Ctx, reloads: &[AuditRecord]) -> Markup {
    html! {
        @if reloads.is_empty() { p { (ctx.t("記録はありません（起動時のルールのままです）。", "None recorded: the rules are those read at start.")) } }
        @else {
            ul { @for r in reloads {
                li {
                    (super::audit::local(&r.entry.time)) " · " (r.entry.actor) " · " (ctx.lang.admin_reason(&r.entry.reason))
                    " · " (ctx.t("承認:", "approved by:")) " " (r.entry.approver.as_deref().unwrap_or(ctx.t("記録なし（シグナルによる再読み込み）", "none (reloaded by a signal)")))
                }
            } }
        }
    }
}

fn reload_form(ctx: &Ctx) -> Markup {
    html! {
        form.act method="post" action="/console/rules/reload" {
            h3 { (ctx.t("ルールを再読み込みする", "Reload the rules")) }
            p { (ctx.t("ルールのファイルを読み直します。誤りがあれば読み込まず、今のルールのまま動きます。",
                       "The rules files are read again; if any has an error, nothing changes and the running rules stay.")) }
            (layout::csrf(ctx))
            label for="approver" { (ctx.t("改正を承認した人（統括情報責任者など）", "Approved by")) " " span.req { (ctx.t("（必須）", "(required)")) } }
            input #approver type="text" name="approver" required;
            (layout::reason_box(ctx, "reload-reason", ctx.t("改正の内容・理由", "What changed and why")))
            div.row { button type="submit" { (ctx.t("再読み込みする", "Reload")) } }
        }
    }
}

pub async fn reload(admin: &Admin, ctx: &Ctx, form: &Form) -> Answer {
    let input = ReloadInput {
        approver: layout::required(ctx, form, "approver", ctx.t("承認した人", "the approver"))?,
        reason: layout::reason(ctx, form)?,
    };
    let (_, answer) = admin.reload(&ctx.caller(), input).await?;
    let flash = format!(
        "{} {}",
        ctx.t("ルールを再読み込みしました。プロファイル数:", "Rules reloaded. Profiles:"),
        answer["profiles"]
    );
    Ok(Reply::Done { to: "/console/rules".into(), flash })
}
