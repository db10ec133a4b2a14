//! People: find a user; see their role, department, profiles, schedule,
//! suspension and restriction, devices and recent decisions (from the
//! request audit log); suspend, restrict to reading, or lift either, each
//! with a reason. The change is the admin API's `flag`/`unflag`, which
//! commits, publishes and cuts open connections before it returns, so the
//! page answers only once the change is in force. It must never judge a
//! request itself.

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone as _};
use http::StatusCode;
use maud::{html, Markup};
use sekisho_policy::form::Form;
use sekisho_policy::state::{Flag, User};

use super::{layout, Answer, Ctx, Reply};
use crate::control::admin::{Action, Admin, ApiError, FlagInput};
use crate::control::audit_search::RequestFilter;
use crate::control::store::FlagKind;
use crate::shared::Snapshot;

/// People shown per search.
const PAGE: usize = 200;

/// A user's display name, or their id when unknown.
pub fn name_of(snap: &Snapshot, id: &str) -> String {
    snap.state.users.get(id).map_or_else(|| id.to_owned(), |u| u.display_name.clone())
}

pub fn search(admin: &Admin, ctx: &Ctx) -> Answer {
    let snap = admin.read(&ctx.caller(), Action::ReadState)?;
    let q = ctx.query.text("q").unwrap_or_default().to_lowercase();
    let flag = ctx.query.text("flag");
    let now = chrono::Utc::now();
    let active = |f: &Option<Flag>| f.as_ref().is_some_and(|f| f.active_at(now));
    let mut users: Vec<&User> = snap
        .state
        .users
        .values()
        .map(|u| &**u)
        .filter(|u| {
            q.is_empty()
                || u.id.to_lowercase().contains(&q)
                || u.display_name.to_lowercase().contains(&q)
                || u.department.as_deref().is_some_and(|d| d.to_lowercase().contains(&q))
        })
        .filter(|u| match flag {
            Some("suspended") => active(&u.suspended),
            Some("restricted") => active(&u.restricted),
            _ => true,
        })
        .collect();
    users.sort_by(|a, b| a.id.cmp(&b.id));
    let total = users.len();
    let title = ctx.t("利用者", "People");
    let body = html! {
        h1 { (title) }
        form.filters method="get" action="/console/people" role="search" {
            div {
                label for="q" { (ctx.t("氏名・ID・所属で検索", "Search by name, id or department")) }
                input #q type="search" name="q" value=(ctx.query.text("q").unwrap_or_default());
            }
            div {
                label for="flag" { (ctx.t("状態", "State")) }
                select #flag name="flag" {
                    option value="" { (ctx.t("すべて", "Everyone")) }
                    option value="suspended" selected[flag == Some("suspended")] { (ctx.t("利用停止中", "Suspended")) }
                    option value="restricted" selected[flag == Some("restricted")] { (ctx.t("閲覧のみ", "Read-only")) }
                }
            }
            div { button type="submit" { (ctx.t("検索", "Search")) } }
        }
        p { (total) (ctx.t("人", " people")) @if total > PAGE { " " (ctx.t("（先頭の200人を表示）", "(first 200 shown)")) } }
        div.table-wrap {
            table {
                thead { tr {
                    th scope="col" { (ctx.t("氏名", "Name")) }
                    th scope="col" { "ID" }
                    th scope="col" { (ctx.t("役割", "Role")) }
                    th scope="col" { (ctx.t("所属", "Department")) }
                    th scope="col" { (ctx.t("状態", "State")) }
                } }
                tbody {
                    @for u in users.iter().take(PAGE) {
                        tr {
                            td { a href={"/console/people/" (u.id)} { (u.display_name) } }
                            td { code { (u.id) } }
                            td { (ctx.lang.user_role(&u.role)) }
                            td { (u.department.as_deref().unwrap_or("—")) }
                            td { (flags(ctx, u)) }
                        }
                    }
                }
            }
        }
    };
    Ok(Reply::Page(StatusCode::OK, layout::page(ctx, title, body)))
}

fn flags(ctx: &Ctx, u: &User) -> Markup {
    let now = chrono::Utc::now();
    let on = |f: &Option<Flag>| f.as_ref().is_some_and(|f| f.active_at(now));
    html! {
        @if on(&u.suspended) { span.badge.bad { (ctx.t("利用停止中", "Suspended")) } " " }
        @if on(&u.restricted) { span.badge.wait { (ctx.t("閲覧のみ", "Read-only")) } }
        @if !on(&u.suspended) && !on(&u.restricted) { span.badge.good { (ctx.t("通常", "Normal")) } }
    }
}

pub async fn detail(admin: &Admin, ctx: &Ctx, id: &str) -> Answer {
    let caller = ctx.caller();
    let snap = admin.read(&caller, Action::ReadState)?;
    let user = snap
        .state
        .users
        .get(id)
        .cloned()
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("user `{id}` does not exist")))?;
    let recent = match caller.may(Action::ReadAudit) {
        true => {
            let filter = RequestFilter { user: Some(id.to_owned()), ..RequestFilter::default() };
            Some(admin.request_records(&caller, filter, 0, 20).await)
        }
        false => None,
    };
    let title = format!("{} ({})", user.display_name, user.id);
    let body = html! {
        h1 { (user.display_name) " " (flags(ctx, &user)) }
        (facts(ctx, &snap, &user))
        (devices(ctx, &snap, id))
        (actions(ctx, &user))
        h2 { (ctx.t("最近の利用（許可・遮断）", "Recent decisions")) }
        @match recent {
            Some(Ok(found)) => { (super::audit::requests_table(ctx, &found.records, None)) }
            Some(Err(e)) => { p.error { (e.1) } }
            None => {}
        }
        p { a href={"/console/audit?kind=requests&user=" (layout::encode(id))} { (ctx.t("この人の記録をすべて見る", "All records of this person")) } }
    };
    Ok(Reply::Page(StatusCode::OK, layout::page(ctx, &title, body)))
}

fn facts(ctx: &Ctx, snap: &Snapshot, u: &User) -> Markup {
    html! {
        dl.facts {
            dt { "ID" } dd { code { (u.id) } }
            dt { (ctx.t("役割", "Role")) } dd { (ctx.lang.user_role(&u.role)) " " code { (u.role) } }
            dt { (ctx.t("所属", "Department")) } dd { (u.department.as_deref().unwrap_or("—")) }
            dt { (ctx.t("利用できるサービス", "Profiles")) }
            dd { @for p in &u.profiles {
                code { (p) } @if let Some(profile) = snap.rules.profile(p) { " " (profile.title) } br;
            } }
            dt { (ctx.t("勤務時間", "Working hours")) }
            dd { (u.schedule.as_deref().unwrap_or(ctx.t("各サービスの標準の時間", "each profile's standard hours"))) }
            @if let Some(f) = &u.suspended { dt { (ctx.t("利用停止", "Suspended")) } dd { (flag_text(ctx, f)) } }
            @if let Some(f) = &u.restricted { dt { (ctx.t("閲覧のみに制限", "Read-only")) } dd { (flag_text(ctx, f)) } }
        }
    }
}

fn flag_text(ctx: &Ctx, f: &Flag) -> Markup {
    html! {
        (f.reason) " · " (ctx.t("開始", "since")) " " (layout::when(f.since))
        @if let Some(until) = f.until { " · " (ctx.t("終了予定", "until")) " " (layout::when(until)) }
    }
}

fn devices(ctx: &Ctx, snap: &Snapshot, owner: &str) -> Markup {
    let mut devices: Vec<_> = snap.state.devices.values().filter(|d| d.owner == owner).collect();
    devices.sort_by(|a, b| a.id.cmp(&b.id));
    html! {
        h2 { (ctx.t("端末", "Devices")) }
        @if devices.is_empty() { p { (ctx.t("登録された端末はありません。", "No registered device.")) } }
        @else {
            ul { @for d in devices {
                li {
                    a href={"/console/devices/" (d.id)} { code { (d.id) } } " " (ctx.lang.kind(d.kind)) " · "
                    (ctx.lang.os(d.os)) " " (d.os_version.to_string()) " " (super::devices::status_badge(ctx, d.status))
                }
            } }
        }
    }
}

/// Suspend, restrict and lift, as the roles allow.
fn actions(ctx: &Ctx, u: &User) -> Markup {
    if !ctx.caller().may(Action::FlagUser) {
        return html! {};
    }
    let form = |action: &str, heading: &str, button: &str, danger: bool, until: bool| {
        html! {
            form.act method="post" action={"/console/people/" (u.id) "/" (action)} {
                h3 { (heading) }
                (layout::csrf(ctx))
                (layout::reason_box(ctx, &format!("{action}-reason"), ctx.t("理由", "Reason")))
                @if until {
                    label for={(action) "-until"} { (ctx.t("終了日時（空欄なら解除するまで）", "Until (empty: until lifted)")) }
                    input id={(action) "-until"} type="datetime-local" name="until";
                }
                div.row { button.danger[danger] type="submit" { (button) } }
            }
        }
    };
    html! {
        h2 { (ctx.t("操作", "Actions")) }
        @if u.suspended.is_some() {
            (form("unsuspend", ctx.t("利用停止を解除する", "Lift the suspension"), ctx.t("解除する", "Lift"), false, false))
        } @else {
            (form("suspend", ctx.t("利用を停止する（第18条）", "Suspend"), ctx.t("利用を停止する", "Suspend"), true, true))
        }
        @if u.restricted.is_some() {
            (form("unrestrict", ctx.t("閲覧のみの制限を解除する", "Lift the read-only restriction"), ctx.t("解除する", "Lift"), false, false))
        } @else {
            (form("restrict", ctx.t("閲覧のみに制限する", "Restrict to reading"), ctx.t("閲覧のみにする", "Restrict"), false, true))
        }
    }
}

/// Suspend, restrict or lift: the admin API's `flag` and `unflag`.
pub async fn act(admin: &Admin, ctx: &Ctx, id: &str, action: &str, form: &Form) -> Answer {
    let caller = ctx.caller();
    let reason = layout::reason(ctx, form)?;
    let (kind, set, ja, en) = match action {
        "suspend" => (FlagKind::Suspended, true, "の利用を停止しました。", ": suspended."),
        "restrict" => (FlagKind::Restricted, true, "を閲覧のみに制限しました。", ": restricted to reading."),
        "unsuspend" => (FlagKind::Suspended, false, "の利用停止を解除しました。", ": suspension lifted."),
        "unrestrict" => (FlagKind::Restricted, false, "の閲覧制限を解除しました。", ": restriction lifted."),
        _ => return layout::not_found(ctx.lang),
    };
    match set {
        true => {
            let until = form.text("until").map(local_time).transpose()?;
            admin.flag(&caller, id, kind, FlagInput { reason, until }).await?;
        }
        false => {
            admin.unflag(&caller, id, kind, reason).await?;
        }
    }
    let snap = admin.shared.snapshot_full();
    Ok(Reply::Done { to: format!("/console/people/{id}"), flash: format!("{}{}", name_of(&snap, id), ctx.t(ja, en)) })
}

/// A `datetime-local` value, read as Japan time.
pub fn local_time(text: &str) -> Result<DateTime<FixedOffset>, ApiError> {
    let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S"))
        .map_err(|_| {
            ApiError(StatusCode::BAD_REQUEST, format!("`{text}` is not a date and time (YYYY-MM-DDTHH:MM)"))
        })?;
    let jst =
        FixedOffset::east_opt(9 * 3600).ok_or_else(|| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "offset".into()))?;
    jst.from_local_datetime(&naive)
        .single()
        .ok_or_else(|| ApiError(StatusCode::BAD_REQUEST, format!("`{text}` is not a date and time")))
}
