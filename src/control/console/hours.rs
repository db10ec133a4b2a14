//! Hours: overtime grants (我孫子 8.(1)) for a person or a whole
//! department, listed and withdrawn, and maintenance windows (熊本 第14条
//! ただし書き). A supervisor sees and orders only their own department's:
//! the admin API's `overtime`, `add_grant` and `withdraw_grant` enforce
//! that, the page only leaves out what the role cannot use. Times are
//! entered and shown in Japan time. It must never decide who is at work.

use chrono::Utc;
use http::StatusCode;
use maud::{html, Markup};
use sekisho_policy::form::Form;
use sekisho_policy::state::{Grantee, OvertimeGrant};

use super::people::local_time;
use super::{layout, Answer, Ctx, Reply};
use crate::control::admin::{Action, Admin, ApiError, GrantInput, MaintenanceInput};
use crate::shared::Snapshot;

pub fn page(admin: &Admin, ctx: &Ctx) -> Answer {
    let caller = ctx.caller();
    let grants = admin.overtime(&caller)?;
    let snap = admin.shared.snapshot_full();
    let reads_state = caller.may(Action::ReadState);
    let title = ctx.t("時間外勤務と保守", "Overtime and maintenance");
    let body = html! {
        h1 { (title) }
        h2 { (ctx.t("時間外勤務の命令（我孫子市 利用規約 8.(1)）", "Overtime grants")) }
        (grants_table(ctx, &snap, &grants, reads_state))
        @if caller.may(Action::ManageOvertime) { (grant_form(ctx, &snap, reads_state)) }
        @if reads_state { (maintenance(ctx, &snap)) }
    };
    Ok(Reply::Page(StatusCode::OK, layout::page(ctx, title, body)))
}

fn grants_table(ctx: &Ctx, snap: &Snapshot, grants: &[OvertimeGrant], names: bool) -> Markup {
    let now = Utc::now();
    let may_withdraw = ctx.caller().may(Action::ManageOvertime);
    html! {
        @if grants.is_empty() {
            p { (ctx.t("時間外勤務の命令はありません。", "No overtime grants.")) }
        } @else {
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { (ctx.t("対象", "For")) }
                    th scope="col" { (ctx.t("期間", "When")) }
                    th scope="col" { (ctx.t("サービス", "Profile")) }
                    th scope="col" { (ctx.t("命令した所属長", "Ordered by")) }
                    th scope="col" { (ctx.t("理由", "Reason")) }
                    @if may_withdraw { th scope="col" { (ctx.t("取り消し", "Withdraw")) } }
                } }
                tbody { @for g in grants {
                    tr {
                        td { @match &g.grantee {
                            Grantee::User(u) => { @if names { (super::people::name_of(snap, u)) " " } code { (u) } }
                            Grantee::Department(d) => { (d) " " span.badge { (ctx.t("所属全員", "whole department")) } }
                        } }
                        td { (layout::when(g.start)) " – " (layout::when(g.end))
                             @if g.end <= now { " " span.badge { (ctx.t("終了", "ended")) } } }
                        td { code { (g.profile.as_deref().unwrap_or("*")) } }
                        td { (g.approver) }
                        td { (g.reason) }
                        @if may_withdraw { td {
                            form method="post" action={"/console/overtime/" (g.id) "/withdraw"} {
                                (layout::csrf(ctx))
                                button.secondary type="submit" aria-label={(ctx.t("取り消す: ", "Withdraw: ")) (g.id)} { (ctx.t("取り消す", "Withdraw")) }
                            }
                        } }
                    }
                } }
            } }
        }
    }
}

fn grant_form(ctx: &Ctx, snap: &Snapshot, general: bool) -> Markup {
    let own = ctx.session.person.department.as_deref();
    html! {
        form.act method="post" action="/console/overtime" {
            h3 { (ctx.t("時間外勤務を命令する", "Order overtime")) }
            (layout::csrf(ctx))
            fieldset {
                legend { (ctx.t("対象", "For")) }
                label for="grant-user" { (ctx.t("職員のID（1人の場合）", "A person's id")) }
                input #grant-user type="text" name="user";
                label for="grant-department" { (ctx.t("所属（所属全員の場合）", "Or a whole department")) }
                input #grant-department type="text" name="department";
                p.hint { (ctx.t("どちらか一方だけを入力します。", "Fill in exactly one of the two."))
                    @if let Some(d) = own { " " (ctx.t("あなたの所属:", "Your department:")) " " (d) } }
            }
            @if general {
                label for="grant-profile" { (ctx.t("サービス（空欄ならすべて）", "Profile (empty: all)")) }
                select #grant-profile name="profile" {
                    option value="" { (ctx.t("すべて", "All")) }
                    @for p in snap.rules.profiles() { option value=(p.name) { (p.title) } }
                }
            }
            label for="grant-approver" { (ctx.t("命令した所属長", "Ordered by (supervisor)")) }
            p.hint #grant-approver-hint { (ctx.t("所属長ご本人が登録するときは空欄にします（ご本人の名前で記録されます）。",
                                                 "Leave empty when you are the supervisor yourself (your name is recorded).")) }
            input #grant-approver type="text" name="approver" aria-describedby="grant-approver-hint";
            (times(ctx, "grant"))
            (layout::reason_box(ctx, "grant-reason", ctx.t("業務の内容・理由", "Work and reason")))
            div.row { button type="submit" { (ctx.t("命令を登録する", "Record the grant")) } }
        }
    }
}

fn times(ctx: &Ctx, prefix: &str) -> Markup {
    html! {
        label for={(prefix) "-start"} { (ctx.t("開始（日本時間）", "Start (Japan time)")) " " span.req { (ctx.t("（必須）", "(required)")) } }
        input id={(prefix) "-start"} type="datetime-local" name="start" required;
        label for={(prefix) "-end"} { (ctx.t("終了（日本時間）", "End (Japan time)")) " " span.req { (ctx.t("（必須）", "(required)")) } }
        input id={(prefix) "-end"} type="datetime-local" name="end" required;
    }
}

fn maintenance(ctx: &Ctx, snap: &Snapshot) -> Markup {
    let now = Utc::now();
    let mut windows: Vec<_> = snap.state.maintenance.iter().collect();
    windows.sort_by_key(|m| m.start);
    let may = ctx.caller().may(Action::ManageMaintenance);
    html! {
        h2 { (ctx.t("メンテナンス（保守）の予定", "Maintenance windows")) }
        @if windows.is_empty() { p { (ctx.t("予定はありません。", "None scheduled.")) } }
        @else {
            ul { @for m in windows {
                li {
                    @if m.start <= now && now < m.end { span.badge.bad { (ctx.t("実施中", "now")) } " " }
                    @if m.end <= now { span.badge { (ctx.t("終了", "ended")) } " " }
                    (layout::when(m.start)) " – " (layout::when(m.end)) " " code { (m.profile.as_deref().unwrap_or("*")) } " " (m.reason)
                    @if may && m.end > now {
                        form method="post" action={"/console/maintenance/" (m.id) "/cancel"} {
                            (layout::csrf(ctx))
                            button.secondary type="submit" { (ctx.t("中止する", "Cancel")) }
                        }
                    }
                }
            } }
        }
        @if may {
            form.act method="post" action="/console/maintenance" {
                h3 { (ctx.t("メンテナンスを予定する", "Schedule maintenance")) }
                p { (ctx.t("期間中は対象のサービスを利用できません。利用者の画面には再開の予定時刻が表示されます。", "The service is closed during the window; people see when it reopens.")) }
                (layout::csrf(ctx))
                label for="m-profile" { (ctx.t("サービス（空欄ならすべて）", "Profile (empty: all)")) }
                select #m-profile name="profile" {
                    option value="" { (ctx.t("すべて", "All")) }
                    @for p in snap.rules.profiles() { option value=(p.name) { (p.title) } }
                }
                (times(ctx, "m"))
                (layout::reason_box(ctx, "m-reason", ctx.t("内容・理由", "What and why")))
                div.row { button type="submit" { (ctx.t("予定を登録する", "Schedule")) } }
            }
        }
    }
}

fn time_field(form: &Form, name: &str) -> Result<chrono::DateTime<chrono::FixedOffset>, ApiError> {
    let text = form.text(name).ok_or_else(|| ApiError(StatusCode::BAD_REQUEST, format!("`{name}` is required")))?;
    local_time(text)
}

pub async fn grant(admin: &Admin, ctx: &Ctx, form: &Form) -> Answer {
    let input = GrantInput {
        user: form.text("user").map(str::to_owned),
        department: form.text("department").map(str::to_owned),
        profile: form.text("profile").map(str::to_owned),
        approver: form.text("approver").map(str::to_owned),
        reason: layout::reason(ctx, form)?,
        start: time_field(form, "start")?,
        end: time_field(form, "end")?,
    };
    admin.add_grant(&ctx.caller(), input).await?;
    Ok(Reply::Done {
        to: "/console/hours".into(),
        flash: ctx.t("時間外勤務の命令を登録しました。", "Overtime recorded.").into(),
    })
}

pub async fn withdraw(admin: &Admin, ctx: &Ctx, id: &str, form: &Form) -> Answer {
    let id = number(id)?;
    admin.withdraw_grant(&ctx.caller(), id, form.text("reason").map(str::to_owned)).await?;
    Ok(Reply::Done {
        to: "/console/hours".into(),
        flash: ctx.t("時間外勤務の命令を取り消しました。", "Grant withdrawn.").into(),
    })
}

pub async fn schedule(admin: &Admin, ctx: &Ctx, form: &Form) -> Answer {
    let input = MaintenanceInput {
        profile: form.text("profile").map(str::to_owned),
        reason: layout::reason(ctx, form)?,
        start: time_field(form, "start")?,
        end: time_field(form, "end")?,
    };
    admin.add_maintenance(&ctx.caller(), input).await?;
    Ok(Reply::Done {
        to: "/console/hours".into(),
        flash: ctx.t("メンテナンスを予定しました。", "Maintenance scheduled.").into(),
    })
}

pub async fn cancel(admin: &Admin, ctx: &Ctx, id: &str, form: &Form) -> Answer {
    let id = number(id)?;
    admin.remove_maintenance(&ctx.caller(), id, form.text("reason").map(str::to_owned)).await?;
    Ok(Reply::Done {
        to: "/console/hours".into(),
        flash: ctx.t("メンテナンスを中止しました。", "Maintenance cancelled.").into(),
    })
}

fn number(id: &str) -> Result<i64, ApiError> {
    id.parse().map_err(|_| ApiError(StatusCode::BAD_REQUEST, format!("`{id}` is not a number")))
}
