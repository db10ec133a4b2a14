//! The audit trail for auditors: the request decisions (from the request
//! audit log) and the admin actions (from the store), filtered by person,
//! device, reason, profile and time, a page at a time, and exported as CSV.
//! The request id a block page shows finds its line. Reads go through the
//! admin API's `request_records` and `admin_records` (the same role check);
//! it must never write anything, and a CSV cell a spreadsheet would run as
//! a formula is quoted harmless.

use chrono::{DateTime, FixedOffset, NaiveDate, TimeZone as _};
use http::StatusCode;
use maud::{html, Markup};
use sekisho_policy::DenyReason;

use super::people::local_time;
use super::{layout, Answer, Ctx, Reply};
use crate::control::admin::{Action, Admin, ApiError};
use crate::control::audit::RequestRecord;
use crate::control::audit_search::{Outcome, RequestFilter};
use crate::control::store::{AdminFilter, AuditRecord};

/// Rows per page on screen.
const PAGE: usize = 50;
/// Rows one CSV export holds at most.
const EXPORT_MAX: usize = 50_000;
/// Matches a time-ranged view sums up by person.
const SUMMARY_MAX: usize = 20_000;

/// Which trail a page shows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Requests,
    Admin,
}

pub async fn page(admin: &Admin, ctx: &Ctx) -> Answer {
    layout::may(ctx, Action::ReadAudit)?;
    let kind = kind(ctx);
    let page_no = ctx.query.text("page").and_then(|p| p.parse::<usize>().ok()).unwrap_or(1).max(1);
    let skip = (page_no - 1) * PAGE;
    let title = ctx.t("監査記録", "Audit trail");
    let results = match kind {
        Kind::Requests => requests(admin, ctx, skip).await?,
        Kind::Admin => {
            let limit = u32::try_from(PAGE + 1).unwrap_or(u32::MAX);
            let mut records = admin.admin_records(&ctx.caller(), &admin_filter(ctx, skip, limit)?).await?;
            let more = records.len() > PAGE;
            records.truncate(PAGE);
            (admin_table(ctx, &records), more)
        }
    };
    let body = html! {
        h1 { (title) }
        (find_by_id(ctx))
        (tabs(ctx, kind))
        (filters(admin, ctx, kind))
        (results.0)
        (pager(ctx, page_no, results.1))
    };
    Ok(Reply::Page(StatusCode::OK, layout::page(ctx, title, body)))
}

/// A page of request decisions. With a time range, up to `SUMMARY_MAX`
/// matches are read at once and summed up by person ("who was blocked
/// yesterday, and why") above the page.
async fn requests(admin: &Admin, ctx: &Ctx, skip: usize) -> Result<(Markup, bool), ApiError> {
    let filter = request_filter(ctx)?;
    let ranged = filter.since.is_some();
    let (skip_now, limit) = if ranged { (0, SUMMARY_MAX) } else { (skip, PAGE) };
    let found = admin.request_records(&ctx.caller(), filter, skip_now, limit).await?;
    let (page, more) = match ranged {
        true => {
            let rest = found.records.get(skip..).unwrap_or_default();
            (rest.get(..PAGE.min(rest.len())).unwrap_or_default(), rest.len() > PAGE || found.more)
        }
        false => (found.records.as_slice(), found.more),
    };
    let markup = html! {
        @if found.cut_short { p.warn { (ctx.t("ログが大きいため、古い記録の一部は検索していません。期間を短くしてください。",
                                              "The log is large: older records were not searched. Narrow the time range.")) } }
        @if ranged { (super::summary::by_person(ctx, &admin.shared.snapshot_full(), &found.records, found.more)) }
        @if found.records.is_empty() { p { (ctx.t("該当する記録はありません。", "No matching records.")) } }
        (requests_table(ctx, page, ctx.query.text("request_id")))
    };
    Ok((markup, more))
}

/// The same filters, as a CSV file (UTF-8 with a byte-order mark, which
/// spreadsheet programs in Japan need to read it as UTF-8).
pub async fn csv(admin: &Admin, ctx: &Ctx) -> Answer {
    layout::may(ctx, Action::ReadAudit)?;
    let mut out = String::from("\u{feff}");
    let name = match kind(ctx) {
        Kind::Requests => {
            let found = admin.request_records(&ctx.caller(), request_filter(ctx)?, 0, EXPORT_MAX).await?;
            out.push_str("time,request_id,user,device,client,host,method,path,decision,reason,rule,profile,status,upstream_status,latency_ms\r\n");
            for r in &found.records {
                let client = r.client.map(|c| c.to_string()).unwrap_or_default();
                let cells = [
                    r.time.as_str(),
                    &r.request_id,
                    r.user.as_deref().unwrap_or_default(),
                    r.device.as_deref().unwrap_or_default(),
                    &client,
                    &r.host,
                    &r.method,
                    &r.path,
                    &r.decision,
                    r.reason.as_deref().unwrap_or_default(),
                    r.rule.as_deref().unwrap_or_default(),
                    r.profile.as_deref().unwrap_or_default(),
                    &r.status.to_string(),
                    &r.upstream_status.map(|s| s.to_string()).unwrap_or_default(),
                    &r.latency_ms.to_string(),
                ];
                push_row(&mut out, &cells);
            }
            "sekisho-requests.csv"
        }
        Kind::Admin => {
            let limit = u32::try_from(EXPORT_MAX).unwrap_or(u32::MAX);
            let records = admin.admin_records(&ctx.caller(), &admin_filter(ctx, 0, limit)?).await?;
            out.push_str("id,time,actor,action,target,reason,source,approver\r\n");
            for r in &records {
                let e = &r.entry;
                let id = r.id.to_string();
                let approver = e.approver.as_deref().unwrap_or_default();
                let cells = [id.as_str(), &e.time, &e.actor, &e.action, &e.target, &e.reason, &e.source, approver];
                push_row(&mut out, &cells);
            }
            "sekisho-admin-audit.csv"
        }
    };
    Ok(Reply::File { name: name.into(), content_type: "text/csv; charset=utf-8", body: out.into_bytes() })
}

fn push_row(out: &mut String, cells: &[&str]) {
    let row: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
    out.push_str(&row.join(","));
    out.push_str("\r\n");
}

/// RFC 4180 quoting; text a spreadsheet would run as a formula (a path
/// such as `=HYPERLINK(..)` sent by a client) gets a leading `'`.
pub fn csv_cell(text: &str) -> String {
    let formula = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let text = if formula { format!("'{text}") } else { text.to_owned() };
    if formula || text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

fn kind(ctx: &Ctx) -> Kind {
    match ctx.query.get("kind") {
        Some("admin") => Kind::Admin,
        _ => Kind::Requests,
    }
}

/// `2026-12-01` (from 00:00) or `2026-12-01T09:30`, in Japan time.
fn when_field(ctx: &Ctx, name: &str) -> Result<Option<DateTime<FixedOffset>>, ApiError> {
    let Some(text) = ctx.query.text(name) else { return Ok(None) };
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let jst = FixedOffset::east_opt(9 * 3600);
        return Ok(jst.and_then(|z| z.from_local_datetime(&day.and_hms_opt(0, 0, 0)?).single()));
    }
    local_time(text).map(Some)
}

fn request_filter(ctx: &Ctx) -> Result<RequestFilter, ApiError> {
    let q = |n: &str| ctx.query.text(n).map(str::to_owned);
    Ok(RequestFilter {
        user: q("user"),
        device: q("device"),
        reason: q("reason"),
        profile: q("profile"),
        decision: match ctx.query.text("decision") {
            None => None,
            Some(d) => Some(Outcome::ALL.into_iter().find(|o| o.as_str() == d).ok_or_else(|| {
                ApiError(StatusCode::BAD_REQUEST, format!("`decision` must be allow, deny, error or cut, not `{d}`"))
            })?),
        },
        request_id: q("request_id"),
        since: when_field(ctx, "since")?,
        until: when_field(ctx, "until")?,
    })
}

fn admin_filter(ctx: &Ctx, skip: usize, limit: u32) -> Result<AdminFilter, ApiError> {
    let q = |n: &str| ctx.query.text(n).map(str::to_owned);
    let utc = |t: Option<DateTime<FixedOffset>>| t.map(|t| t.with_timezone(&chrono::Utc));
    Ok(AdminFilter {
        target: q("user"),
        action: q("action"),
        actor: q("actor"),
        since: utc(when_field(ctx, "since")?),
        until: utc(when_field(ctx, "until")?),
        skip: u32::try_from(skip).unwrap_or(u32::MAX),
        limit,
    })
}

fn find_by_id(ctx: &Ctx) -> Markup {
    html! {
        form.act method="get" action="/console/audit" role="search" {
            input type="hidden" name="kind" value="requests";
            label for="request_id" { (ctx.t("受付番号（リクエストID）で探す", "Find by request id")) }
            p.hint #request-id-hint { (ctx.t("遮断の画面に表示される番号です。", "The id shown on the block page.")) }
            div.row {
                input #request_id type="search" name="request_id" value=(ctx.query.text("request_id").unwrap_or_default()) aria-describedby="request-id-hint";
                button type="submit" { (ctx.t("探す", "Find")) }
            }
        }
    }
}

fn tabs(ctx: &Ctx, kind: Kind) -> Markup {
    let yesterday = yesterday();
    html! {
        p.row {
            a.button.secondary[kind != Kind::Requests] href="/console/audit?kind=requests" aria-current=[(kind == Kind::Requests).then_some("page")] { (ctx.t("利用の記録（許可・遮断）", "Request decisions")) }
            a.button.secondary[kind != Kind::Admin] href="/console/audit?kind=admin" aria-current=[(kind == Kind::Admin).then_some("page")] { (ctx.t("管理操作の記録", "Admin actions")) }
            a href={"/console/audit?kind=requests&decision=deny&since=" (yesterday.0) "&until=" (yesterday.1)} { (ctx.t("昨日遮断された人", "Who was blocked yesterday")) }
        }
    }
}

/// Yesterday's and today's midnight in Japan, as a form gives them.
fn yesterday() -> (String, String) {
    let today = chrono::Utc::now().with_timezone(&chrono_tz::Asia::Tokyo).date_naive();
    let day = today.pred_opt().unwrap_or(today);
    (format!("{day}T00:00"), format!("{today}T00:00"))
}

fn filters(admin: &Admin, ctx: &Ctx, kind: Kind) -> Markup {
    let v = |n: &str| ctx.query.text(n).unwrap_or_default().to_owned();
    let snap = admin.shared.snapshot_full();
    let query = ctx.here.split_once('?').map_or("", |(_, q)| q);
    html! {
        form.act method="get" action="/console/audit" {
            h2 { (ctx.t("絞り込み", "Filter")) }
            input type="hidden" name="kind" value=(if kind == Kind::Admin { "admin" } else { "requests" });
            div.filters {
                div { label for="f-user" { (ctx.t("利用者ID（対象）", "Person (user id)")) } input #f-user type="text" name="user" value=(v("user")); }
                @if kind == Kind::Requests {
                    div { label for="f-device" { (ctx.t("端末ID", "Device")) } input #f-device type="text" name="device" value=(v("device")); }
                    div { label for="f-reason" { (ctx.t("遮断の理由", "Reason")) }
                        select #f-reason name="reason" {
                            option value="" { (ctx.t("すべて", "Any")) }
                            @for code in DenyReason::ALL.iter().map(|r| r.code()).chain(crate::metrics::BLOCK_KINDS) {
                                option value=(code) selected[v("reason") == code] { (ctx.lang.reason(code)) }
                            }
                        }
                    }
                    div { label for="f-profile" { (ctx.t("サービス", "Profile")) }
                        select #f-profile name="profile" {
                            option value="" { (ctx.t("すべて", "Any")) }
                            @for p in snap.rules.profiles() { option value=(p.name) selected[v("profile") == p.name] { (p.title) } }
                        }
                    }
                    div { label for="f-decision" { (ctx.t("結果", "Decision")) }
                        select #f-decision name="decision" {
                            option value="" { (ctx.t("すべて", "Any")) }
                            option value="allow" selected[v("decision") == "allow"] { (ctx.t("許可", "Allowed")) }
                            option value="deny" selected[v("decision") == "deny"] { (ctx.t("遮断（規則）", "Denied by a rule")) }
                            option value="error" selected[v("decision") == "error"] { (ctx.t("遮断（関所の都合）", "Blocked by the gateway")) }
                            option value="cut" selected[v("decision") == "cut"] { (ctx.t("途中で切断", "Cut while open")) }
                        }
                    }
                } @else {
                    div { label for="f-actor" { (ctx.t("操作した管理者", "Admin")) } input #f-actor type="text" name="actor" value=(v("actor")); }
                    div { label for="f-action" { (ctx.t("操作（例: user.suspend）", "Action (e.g. user.suspend)")) } input #f-action type="text" name="action" value=(v("action")); }
                }
                div { label for="f-since" { (ctx.t("開始（日本時間）", "From (Japan time)")) } input #f-since type="datetime-local" name="since" value=(v("since")); }
                div { label for="f-until" { (ctx.t("終了（日本時間）", "Until (Japan time)")) } input #f-until type="datetime-local" name="until" value=(v("until")); }
            }
            div.row {
                button type="submit" { (ctx.t("絞り込む", "Filter")) }
                a.button.secondary href={"/console/audit.csv?" (query)} download { (ctx.t("CSVで書き出す", "Export CSV")) }
            }
        }
    }
}

/// Request decisions as a table; `highlight` marks a request id.
pub fn requests_table(ctx: &Ctx, records: &[RequestRecord<'_>], highlight: Option<&str>) -> Markup {
    html! {
        @if !records.is_empty() {
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { (ctx.t("日時", "Time")) }
                    th scope="col" { (ctx.t("利用者", "User")) }
                    th scope="col" { (ctx.t("端末", "Device")) }
                    th scope="col" { (ctx.t("結果", "Decision")) }
                    th scope="col" { (ctx.t("理由", "Reason")) }
                    th scope="col" { (ctx.t("要求", "Request")) }
                    th scope="col" { (ctx.t("受付番号", "Request id")) }
                } }
                tbody { @for r in records {
                    tr.hit[highlight == Some(r.request_id.as_ref())] {
                        td.mono.nowrap { (local(&r.time)) }
                        td { @if let Some(u) = &r.user { a href={"/console/people/" (u)} { (u) } }
                             @else { span.hint { (ctx.t("不明", "unknown")) } @if let Some(c) = r.client { br; code { (c.to_string()) } } } }
                        td.nowrap { @if let Some(d) = &r.device { code { (d) } } @else { "—" } }
                        td { @match r.decision.as_ref() {
                            "allow" => { span.badge.good { (ctx.t("許可", "allowed")) } }
                            "cut" => { span.badge.bad { (ctx.t("途中で切断", "cut")) } }
                            _ => { span.badge.bad { (ctx.t("遮断", "blocked")) } " " (r.status) }
                        } }
                        td { @if let Some(reason) = &r.reason { (ctx.lang.reason(reason)) br; code { (reason) } }
                             @if let Some(rule) = &r.rule { br; span.hint { (rule) } } }
                        td { code { (r.method) " " (r.host) (r.path) } }
                        td.nowrap { code { (r.request_id) } }
                    }
                } }
            } }
        }
    }
}

fn admin_table(ctx: &Ctx, records: &[AuditRecord]) -> Markup {
    html! {
        @if records.is_empty() { p { (ctx.t("該当する記録はありません。", "No matching records.")) } }
        @else {
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { (ctx.t("日時", "Time")) }
                    th scope="col" { (ctx.t("管理者", "Admin")) }
                    th scope="col" { (ctx.t("操作", "Action")) }
                    th scope="col" { (ctx.t("対象", "Target")) }
                    th scope="col" { (ctx.t("理由", "Reason")) }
                    th scope="col" { (ctx.t("承認者", "Approver")) }
                    th scope="col" { (ctx.t("接続元", "From")) }
                } }
                tbody { @for r in records {
                    tr {
                        td.mono.nowrap { (local(&r.entry.time)) }
                        td { (r.entry.actor) }
                        td { (ctx.lang.action(&r.entry.action)) br; code { (r.entry.action) } }
                        td { code { (r.entry.target) } }
                        td { (ctx.lang.admin_reason(&r.entry.reason)) }
                        td { (r.entry.approver.as_deref().unwrap_or("—")) }
                        td.mono { (r.entry.source) }
                    }
                } }
            } }
        }
    }
}

/// A recorded instant shown in Japan time to the second.
pub fn local(text: &str) -> String {
    crate::control::audit_json::jst_display(text).unwrap_or_else(|| text.to_owned())
}

fn pager(ctx: &Ctx, page_no: usize, more: bool) -> Markup {
    let link = |n: usize| {
        let rest: Vec<String> = ctx
            .query
            .fields()
            .filter(|(k, v)| *k != "page" && !v.is_empty())
            .map(|(k, v)| format!("{k}={}", layout::encode(v)))
            .collect();
        format!("/console/audit?{}&page={n}", rest.join("&"))
    };
    html! {
        nav.pager aria-label=(ctx.t("ページ", "Pages")) {
            @if page_no > 1 { a href=(link(page_no - 1)) { "← " (ctx.t("新しい記録", "Newer")) } }
            span { (page_no) (ctx.t("ページ目", "")) }
            @if more { a href=(link(page_no + 1)) { (ctx.t("古い記録", "Older")) " →" } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::csv_cell;

    #[test]
    fn csv_cells_are_quoted_and_formulas_defused() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_cell("-1+2"), "\"'-1+2\"");
        assert_eq!(csv_cell("端末 紛失"), "端末 紛失");
        assert_eq!(csv_cell("two\nlines"), "\"two\nlines\"");
    }
}
