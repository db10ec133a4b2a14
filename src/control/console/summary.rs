//! "Who was blocked, and why": request decisions in a time range summed up
//! by person (or, where no person was identified, by client address),
//! each with their reasons and counts, most blocked first. Counting only;
//! it must never judge a request or read anything itself.

use std::collections::BTreeMap;

use maud::{html, Markup};

use super::Ctx;
use crate::control::audit::RequestRecord;
use crate::shared::Snapshot;

/// Rows the summary shows.
const ROWS: usize = 100;

/// Who: a person's id and name, or (no id) a client address.
type Who = (Option<String>, String);

/// Blocks by person in `records` (allowed requests are left out).
pub fn by_person(ctx: &Ctx, snap: &Snapshot, records: &[RequestRecord<'_>], partial: bool) -> Markup {
    // A person by their id; where none was identified, a client address.
    let mut people: BTreeMap<Who, BTreeMap<String, u64>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.decision != "allow") {
        let who = match (&r.user, r.client) {
            (Some(u), _) => (Some(u.to_string()), super::people::name_of(snap, u)),
            (None, Some(c)) => (None, format!("{} {c}", ctx.t("接続元", "client"))),
            (None, None) => (None, ctx.t("不明", "unknown").to_owned()),
        };
        let reason = r.reason.as_deref().unwrap_or("-").to_owned();
        *people.entry(who).or_default().entry(reason).or_default() += 1;
    }
    let mut rows: Vec<(Who, u64, BTreeMap<String, u64>)> =
        people.into_iter().map(|(who, reasons)| (who, reasons.values().sum(), reasons)).collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    html! {
        div.panel {
            h2 { (ctx.t("遮断された人と理由（この期間）", "Who was blocked, and why (this period)")) }
            @if partial { p.warn { (ctx.t("記録が多いため、新しい20,000件までを集計しています。", "Many records: the newest 20,000 are counted.")) } }
            @if rows.is_empty() { p { (ctx.t("この期間に遮断はありません。", "No blocks in this period.")) } }
            @else {
                div.table-wrap { table {
                    thead { tr {
                        th scope="col" { (ctx.t("利用者", "Person")) }
                        th.num scope="col" { (ctx.t("遮断の回数", "Blocks")) }
                        th scope="col" { (ctx.t("理由", "Reasons")) }
                    } }
                    tbody { @for ((id, name), total, reasons) in rows.iter().take(ROWS) {
                        tr {
                            td { @match id {
                                Some(id) => { a href={"/console/people/" (id)} { (name) } " " code { (id) } }
                                None => { (name) }
                            } }
                            td.num { (total) }
                            td { @for (code, n) in reasons { (ctx.lang.reason(code)) " " code { (code) } " ×" (n) br; } }
                        }
                    } }
                } }
            }
        }
    }
}
