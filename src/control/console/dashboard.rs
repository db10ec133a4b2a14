//! "Today at a glance": the emergency-stop state, the last hour's requests
//! and blocks by reason, maintenance windows, pending device applications
//! and the gateway's health (the state confirmed against the store, the
//! audit log writable, requests in flight, and whatever the admin status
//! adds, such as replicas). Read only; it must never change anything.

use chrono::Utc;
use http::StatusCode;
use maud::{html, Markup};
use sekisho_policy::device::DeviceStatus;
use serde_json::{json, Value};

use super::{chart, layout, Answer, Ctx, Reply};
use crate::control::admin::{Action, Admin};
use crate::shared::Snapshot;

/// Seconds since the last confirmation beyond which the health panel warns
/// (the store is confirmed every second).
const CONFIRM_WARN_SECS: i64 = 5;

pub fn page(admin: &Admin, ctx: &Ctx) -> Answer {
    let caller = ctx.caller();
    if !caller.may(Action::ReadState) {
        return Ok(Reply::Page(StatusCode::OK, limited(ctx)));
    }
    let snap = admin.read(&caller, Action::ReadState)?;
    let (_, status) = admin.status(&caller)?;
    let now = Utc::now();
    let hour = admin.console.history.last_hour(now, &admin.metrics.counts());
    let pending = pending(&snap);
    let title = ctx.t("今日の状況", "Today at a glance");
    let body = html! {
        h1 { (title) }
        p.lead { (ctx.t("表示時刻", "As of")) " " (layout::when(now)) (ctx.t("（日本時間）", " (Japan time)")) }
        (cards(ctx, admin, &snap, &hour, pending.len()))
        div.panel {
            h2 { (ctx.t("この1時間の要求", "Requests in the last hour")) }
            @if let Some(since) = hour.since.filter(|s| now - *s < chrono::Duration::minutes(59)) {
                p.hint { (ctx.t("関所の起動後の集計です（起動:", "Counted since the gateway started (")) " " (layout::when(since)) (ctx.t("）", ")")) }
            }
            (chart::columns(ctx.lang, &hour))
            h3 { (ctx.t("遮断の理由", "Blocks by reason")) }
            (chart::reasons(ctx.lang, &hour))
        }
        (maintenance(ctx, &snap))
        (applications(ctx, &snap, &pending))
        (health(ctx, admin, &status))
    };
    Ok(Reply::Page(StatusCode::OK, layout::page(ctx, title, body)))
}

/// The figures the page's script refreshes.
pub fn live(admin: &Admin, ctx: &Ctx) -> Answer {
    let caller = ctx.caller();
    let snap = admin.read(&caller, Action::ReadState)?;
    let hour = admin.console.history.last_hour(Utc::now(), &admin.metrics.counts());
    Ok(Reply::Json(json!({
        "live_requests": admin.shared.live_requests(),
        "requests_hour": hour.allowed + hour.denied,
        "denied_hour": hour.denied,
        "pending": pending(&snap).len(),
    })))
}

fn pending(snap: &Snapshot) -> Vec<&sekisho_policy::state::Device> {
    let mut p: Vec<_> =
        snap.state.devices.values().map(|d| &**d).filter(|d| d.status == DeviceStatus::Pending).collect();
    p.sort_by(|a, b| a.id.cmp(&b.id));
    p
}

fn cards(ctx: &Ctx, admin: &Admin, snap: &Snapshot, hour: &super::history::Hour, pending: usize) -> Markup {
    let stops = &snap.state.stops;
    let now = Utc::now();
    let suspended =
        snap.state.users.values().filter(|u| u.suspended.as_ref().is_some_and(|f| f.active_at(now))).count();
    html! {
        div.cards {
            @if let Some(stop) = &stops.global {
                div.card.alert {
                    h2 { (ctx.t("緊急停止", "Emergency stop")) }
                    p.big.state-on { (ctx.t("停止中", "STOPPED")) }
                    p { (ctx.t("すべての利用者のすべてのサービスを遮断しています。", "All users of all services are blocked.")) }
                    p { (ctx.t("理由:", "Reason:")) " " (stop.reason) " (" (layout::when(stop.since)) ")" }
                    p { a href="/console/stop" { (ctx.t("再開の操作へ", "To resume")) } }
                }
            } @else {
                div.card.good {
                    h2 { (ctx.t("緊急停止", "Emergency stop")) }
                    p.big { (ctx.t("通常運用", "Normal")) }
                    @if !stops.profiles.is_empty() {
                        p.state-on { (ctx.t("一部のサービスを停止中:", "Some services stopped:")) " "
                            @for name in stops.profiles.keys() { code { (name) } " " } }
                    }
                }
            }
            div.card {
                h2 { (ctx.t("この1時間の要求", "Requests, last hour")) }
                p.big data-live="requests_hour" { (hour.allowed + hour.denied) }
                p { (ctx.t("うち遮断", "of which blocked")) " " strong data-live="denied_hour" { (hour.denied) } }
            }
            div.card {
                h2 { (ctx.t("審査待ちの端末申請", "Pending device applications")) }
                p.big data-live="pending" { (pending) }
                p { a href="/console/devices" { (ctx.t("申請の一覧へ", "To the applications")) } }
            }
            div.card {
                h2 { (ctx.t("利用停止中の利用者", "Suspended users")) }
                p.big { (suspended) }
                p { a href="/console/people?flag=suspended" { (ctx.t("一覧へ", "To the list")) } }
            }
            div.card {
                h2 { (ctx.t("処理中の要求", "Requests in flight")) }
                p.big data-live="live_requests" { (admin.shared.live_requests()) }
            }
        }
    }
}

fn maintenance(ctx: &Ctx, snap: &Snapshot) -> Markup {
    let now = Utc::now();
    let mut windows: Vec<_> = snap.state.maintenance.iter().filter(|m| m.end > now).collect();
    windows.sort_by_key(|m| m.start);
    html! {
        div.panel {
            h2 { (ctx.t("メンテナンス", "Maintenance windows")) }
            @if windows.is_empty() {
                p { (ctx.t("予定はありません。", "None scheduled.")) }
            } @else {
                ul {
                    @for m in windows {
                        li {
                            @if m.start <= now { span.badge.bad { (ctx.t("実施中", "Now")) } " " }
                            (layout::when(m.start)) " – " (layout::when(m.end)) " "
                            code { (m.profile.as_deref().unwrap_or("*")) } " " (m.reason)
                        }
                    }
                }
            }
            p { a href="/console/hours" { (ctx.t("時間外・保守の画面へ", "To hours and maintenance")) } }
        }
    }
}

fn applications(ctx: &Ctx, snap: &Snapshot, pending: &[&sekisho_policy::state::Device]) -> Markup {
    html! {
        div.panel {
            h2 { (ctx.t("審査待ちの端末申請（様式第1号）", "Pending device applications")) }
            @if pending.is_empty() {
                p { (ctx.t("審査待ちの申請はありません。", "No application is waiting.")) }
            } @else {
                ul {
                    @for d in pending.iter().take(10) {
                        li {
                            a href={"/console/devices/" (d.id)} { code { (d.id) } }
                            " " (super::people::name_of(snap, &d.owner)) " · " (ctx.lang.kind(d.kind))
                            " · " (ctx.lang.ownership(d.ownership))
                        }
                    }
                }
            }
        }
    }
}

fn health(ctx: &Ctx, admin: &Admin, status: &Value) -> Markup {
    let confirmed = admin.shared.confirmed_at();
    let age = (Utc::now() - confirmed).num_seconds();
    let audit_ok = admin.audit.healthy();
    html! {
        div.panel {
            h2 { (ctx.t("関所の稼働状態", "Gateway health")) }
            dl.facts {
                dt { (ctx.t("状態の確認（保存先）", "State confirmed against the store")) }
                dd {
                    @if age <= CONFIRM_WARN_SECS { span.badge.good { (ctx.t("正常", "OK")) } }
                    @else { span.badge.bad { (ctx.t("確認できていません", "Not confirmed")) } }
                    " " (layout::when(confirmed)) (ctx.t("（", " (")) (age) (ctx.t("秒前）", " s ago)"))
                }
                dt { (ctx.t("監査ログへの書き込み", "Audit log writable")) }
                dd {
                    @if audit_ok { span.badge.good { (ctx.t("正常", "OK")) } }
                    @else { span.badge.bad { (ctx.t("書き込めません（要求はすべて遮断中）", "Failing (every request is refused)")) } }
                }
                dt { (ctx.t("処理中の要求", "Requests in flight")) }
                dd data-live="live_requests" { (admin.shared.live_requests()) }
                dt { (ctx.t("利用者・端末", "Users, devices")) }
                dd { (status["users"]) " / " (status["devices"]) }
                @if let Some(store) = status.get("store").filter(|v| !v.is_null()) {
                    dt { (ctx.t("保存先", "State store")) }
                    dd { (store_facts(ctx, store)) }
                }
            }
            (doctor(ctx, admin.health.get().as_deref()))
        }
    }
}

/// The latest in-gateway `doctor` checks: problems first, with what to do.
fn doctor(ctx: &Ctx, report: Option<&crate::control::doctor::Report>) -> Markup {
    use crate::control::doctor::Level;
    let Some(report) = report else {
        return html! { p.hint { (ctx.t("自己診断はまだ行われていません（起動後5分ごと）。", "No self-check yet (every 5 minutes after start).")) } };
    };
    let mut problems: Vec<_> = report.findings.iter().filter(|f| f.level != Level::Ok).collect();
    problems.sort_by_key(|f| std::cmp::Reverse(f.level));
    let fine = report.findings.len() - problems.len();
    html! {
        h3 { (ctx.t("自己診断（sekisho doctor）", "Self-check (sekisho doctor)")) }
        p { (ctx.t("実施:", "Checked:")) " " (super::audit::local(&report.checked_at)) " · "
            (ctx.t("問題なし", "fine")) " " (fine) " · " (ctx.t("要確認", "to look at")) " " (problems.len()) }
        @if !problems.is_empty() {
            ul { @for f in problems {
                li {
                    @match f.level { Level::Error => { span.badge.bad { (ctx.t("異常", "error")) } } _ => { span.badge.wait { (ctx.t("注意", "warning")) } } }
                    " " strong { (ctx.lang.check(f.check)) } " " code { (f.check) } " " (f.subject) ": " (ctx.lang.finding(f))
                    @if let Some(step) = f.next_step { br; span.hint { (ctx.t("対処:", "Next step:")) " " (ctx.lang.step(step)) } }
                }
            } }
        }
    }
}

/// The state store as the administrator needs it: which one, whether it
/// answers, how long the gateway serves without it, the last error. (Its
/// freshness is the line above.)
fn store_facts(ctx: &Ctx, store: &Value) -> Markup {
    let backend = match store["backend"].as_str() {
        Some("postgres") => "PostgreSQL",
        Some("sqlite") => "SQLite",
        Some(other) => other,
        None => "?",
    };
    let max_age = store["state_max_age_secs"].as_u64();
    html! {
        dl.facts {
            dt { (ctx.t("種類", "Kind")) }
            dd { (backend) }
            dt { (ctx.t("接続", "Reachable")) }
            dd {
                @match store["reachable"].as_bool() {
                    Some(true) => { span.badge.good { (ctx.t("正常", "OK")) } }
                    Some(false) => { span.badge.bad { (ctx.t("接続できません", "Unreachable")) } }
                    None => { "?" }
                }
            }
            @if let Some(secs) = max_age {
                dt { (ctx.t("保存先なしで動ける時間", "Serves without it for")) }
                dd {
                    (secs) (ctx.t(" 秒（過ぎるとすべての要求を 503 で断ります）", " s (then every request is refused with 503)"))
                }
            }
            dt { (ctx.t("変更の位置", "Change position")) }
            dd { code { (store["position"]) } }
            dt { (ctx.t("最後のエラー", "Last error")) }
            dd {
                @match store["error"].as_str() {
                    Some(e) => { (e) }
                    None => { (ctx.t("なし", "none")) }
                }
            }
        }
    }
}

/// For a role without the overview (a supervisor, an applicant).
fn limited(ctx: &Ctx) -> Markup {
    let title = ctx.t("管理コンソール", "Console");
    let overtime = ctx.caller().may(Action::ReadOvertime);
    layout::page(
        ctx,
        title,
        html! {
            h1 { (title) }
            @if overtime {
                p { (ctx.t("所属の職員の時間外勤務の命令は、次の画面で行います。", "Order overtime for your department's staff here:")) }
                p { a.button href="/console/hours" { (ctx.t("時間外・保守", "Hours")) } }
            }
            @if ctx.caller().may(Action::FileDevice) {
                p { (ctx.t("議員の端末の登録申請（様式第1号）は、次の画面で入力します。", "File councillors' device applications here:")) }
                p { a.button href="/console/apply" { (ctx.t("端末の登録申請", "Device application")) } }
            }
        },
    )
}
