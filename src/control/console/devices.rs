//! Device applications (様式第1号) and their life: the queue of pending
//! applications with what the applicant declared, approval (with an
//! exception and its reason, 第12条第2項) or rejection, revocation of a
//! lost device (第17条), and the device certificate with its enrollment
//! bundle, downloadable once (第11条第1項第1号, 第13条). Every change is
//! the admin API's own function; the one-time password appears on the
//! issuing page only. It must never show or keep a private key.

use std::io::Write as _;

use http::StatusCode;
use maud::{html, Markup};
use sekisho_policy::device::DeviceStatus;
use sekisho_policy::form::Form;
use sekisho_policy::state::Device;

use super::{layout, Answer, Ctx, Reply};
use crate::control::admin::{Action, Admin, ApiError, CertInput, DecisionInput};
use crate::control::store::{AdminFilter, AuditRecord};
use crate::shared::Snapshot;

pub fn list(admin: &Admin, ctx: &Ctx) -> Answer {
    let snap = admin.read(&ctx.caller(), Action::ReadState)?;
    let q = ctx.query.text("q").unwrap_or_default().to_lowercase();
    let status = ctx.query.text("status").and_then(parse_status);
    let mut devices: Vec<&Device> = snap
        .state
        .devices
        .values()
        .map(|d| &**d)
        .filter(|d| q.is_empty() || d.id.to_lowercase().contains(&q) || d.owner.to_lowercase().contains(&q))
        .filter(|d| status.is_none_or(|s| d.status == s))
        .collect();
    devices.sort_by(|a, b| (a.status != DeviceStatus::Pending, &a.id).cmp(&(b.status != DeviceStatus::Pending, &b.id)));
    let pending: Vec<&Device> = devices.iter().copied().filter(|d| d.status == DeviceStatus::Pending).collect();
    let title = ctx.t("端末の申請と登録", "Device applications and registrations");
    let body = html! {
        h1 { (title) }
        @if ctx.caller().may(Action::FileDevice) {
            p { a.button.secondary href="/console/apply" { (ctx.t("申請を入力する（様式第1号）", "File an application")) } }
        }
        h2 { (ctx.t("審査待ちの申請（様式第1号）", "Pending applications")) " " span.badge.wait { (pending.len()) } }
        @if pending.is_empty() {
            p { (ctx.t("審査待ちの申請はありません。", "No application is waiting.")) }
        } @else {
            (table(ctx, &snap, &pending))
        }
        h2 { (ctx.t("すべての端末", "All devices")) }
        form.filters method="get" action="/console/devices" role="search" {
            div {
                label for="q" { (ctx.t("端末IDまたは利用者ID", "Device or user id")) }
                input #q type="search" name="q" value=(ctx.query.text("q").unwrap_or_default());
            }
            div {
                label for="status" { (ctx.t("状態", "Status")) }
                select #status name="status" {
                    option value="" { (ctx.t("すべて", "All")) }
                    @for s in [DeviceStatus::Pending, DeviceStatus::Approved, DeviceStatus::Rejected, DeviceStatus::Revoked] {
                        option value=(s.as_str()) selected[status == Some(s)] { (ctx.lang.status(s)) }
                    }
                }
            }
            div { button type="submit" { (ctx.t("絞り込む", "Filter")) } }
        }
        (table(ctx, &snap, &devices))
    };
    Ok(Reply::Page(StatusCode::OK, layout::page(ctx, title, body)))
}

fn parse_status(s: &str) -> Option<DeviceStatus> {
    [DeviceStatus::Pending, DeviceStatus::Approved, DeviceStatus::Rejected, DeviceStatus::Revoked]
        .into_iter()
        .find(|x| x.as_str() == s)
}

fn table(ctx: &Ctx, snap: &Snapshot, devices: &[&Device]) -> Markup {
    html! {
        div.table-wrap {
            table {
                thead { tr {
                    th scope="col" { (ctx.t("端末ID", "Device")) }
                    th scope="col" { (ctx.t("申請者（利用者）", "Owner")) }
                    th scope="col" { (ctx.t("種別", "Kind")) }
                    th scope="col" { (ctx.t("所有", "Ownership")) }
                    th scope="col" { "OS" }
                    th scope="col" { (ctx.t("ウイルス対策", "Security software")) }
                    th scope="col" { (ctx.t("状態", "Status")) }
                } }
                tbody {
                    @for d in devices {
                        tr {
                            td { a href={"/console/devices/" (d.id)} { code { (d.id) } } }
                            td { a href={"/console/people/" (d.owner)} { (super::people::name_of(snap, &d.owner)) } }
                            td { (ctx.lang.kind(d.kind)) }
                            td { (ctx.lang.ownership(d.ownership)) }
                            td { (ctx.lang.os(d.os)) " " (d.os_version.to_string()) }
                            td { @match &d.security_software {
                                Some(s) => { (s.name) " (" (s.updated.to_string()) ")" }
                                None => { span.badge.bad { (ctx.t("なし", "none")) } }
                            } }
                            td { (status_badge(ctx, d.status)) }
                        }
                    }
                }
            }
        }
    }
}

pub fn status_badge(ctx: &Ctx, status: DeviceStatus) -> Markup {
    let class = match status {
        DeviceStatus::Pending => "badge wait",
        DeviceStatus::Approved => "badge good",
        DeviceStatus::Rejected | DeviceStatus::Revoked => "badge bad",
    };
    html! { span class=(class) { (ctx.lang.status(status)) } }
}

pub async fn detail(admin: &Admin, ctx: &Ctx, id: &str) -> Answer {
    let caller = ctx.caller();
    let snap = admin.read(&caller, Action::ReadState)?;
    let device = snap
        .state
        .devices
        .get(id)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("device `{id}` is not registered")))?;
    let title = format!("{} {}", ctx.t("端末", "Device"), device.id);
    let body = html! {
        h1 { (title) " " (status_badge(ctx, device.status)) }
        (facts(ctx, &snap, device))
        (actions(admin, ctx, device))
        @if caller.may(Action::ReadAudit) { (history(ctx, &admin.admin_records(&caller, &AdminFilter {
            target: Some(id.to_owned()), limit: 20, ..AdminFilter::default()
        }).await?)) }
        p { a href="/console/devices" { (ctx.t("端末の一覧へ戻る", "Back to all devices")) } }
    };
    Ok(Reply::Page(StatusCode::OK, layout::page(ctx, &title, body)))
}

/// What the applicant declared, and what the gateway recorded since.
fn facts(ctx: &Ctx, snap: &Snapshot, d: &Device) -> Markup {
    let user = snap.state.users.get(&d.owner);
    html! {
        h2 { (ctx.t("申請内容（様式第1号）", "As declared (form 1)")) }
        dl.facts {
            dt { (ctx.t("利用者", "User")) }
            dd {
                a href={"/console/people/" (d.owner)} { (super::people::name_of(snap, &d.owner)) }
                " (" code { (d.owner) } ")"
                @if let Some(u) = user { " · " (ctx.lang.user_role(&u.role)) }
            }
            dt { (ctx.t("端末の種別", "Kind")) } dd { (ctx.lang.kind(d.kind)) }
            dt { (ctx.t("所有区分", "Ownership")) } dd { (ctx.lang.ownership(d.ownership)) }
            dt { (ctx.t("OSとバージョン", "OS and version")) } dd { (ctx.lang.os(d.os)) " " (d.os_version.to_string()) }
            dt { (ctx.t("ウイルス対策ソフト", "Security software")) }
            dd { @match &d.security_software {
                Some(s) => { (s.name) " · " (ctx.t("定義更新日", "signatures of")) " " (s.updated.to_string()) }
                None => { span.badge.bad { (ctx.t("申告なし", "none declared")) } }
            } }
            dt { (ctx.t("端末の鍵", "Device key")) } dd { code { (d.key.alg()) } }
            dt { (ctx.t("端末証明書", "Certificate")) }
            dd { @match d.certificate {
                Some(sha) => { (ctx.t("発行済み", "issued")) " · SHA-256 " code { (crate::config::hex(&sha[..8])) "…" } }
                None => { (ctx.t("未発行", "none")) }
            } }
            @if let Some(e) = &d.exception {
                dt { (ctx.t("基準の例外", "Exception to the minimums")) }
                dd { (e.reason) " (" (ctx.t("承認", "approved by")) ": " (e.approver) ")" }
            }
        }
    }
}

/// What was done to the device, newest first (filed, approved, ...).
fn history(ctx: &Ctx, records: &[AuditRecord]) -> Markup {
    html! {
        h2 { (ctx.t("これまでの記録", "History")) }
        @if records.is_empty() { p { (ctx.t("記録はありません。", "No records.")) } }
        @else {
            ul { @for r in records {
                li { (super::audit::local(&r.entry.time)) " · " code { (r.entry.action) } " · " (r.entry.actor) " · " (ctx.lang.admin_reason(&r.entry.reason)) }
            } }
        }
    }
}

/// The forms this person's roles may use on this device in its state.
fn actions(admin: &Admin, ctx: &Ctx, d: &Device) -> Markup {
    let caller = ctx.caller();
    let id = &d.id;
    html! {
        @if d.status == DeviceStatus::Pending && caller.may(Action::DecideDevice) {
            form.act method="post" action={"/console/devices/" (id) "/approve"} {
                h3 { (ctx.t("承認する", "Approve")) }
                (layout::csrf(ctx))
                (layout::reason_box(ctx, "approve-reason", ctx.t("承認の理由（確認した内容）", "Reason (what was checked)")))
                label for="exception" { (ctx.t("基準の例外として承認する場合、その理由（第12条第2項）", "To approve below the minimums, the reason for the exception")) }
                p.hint #exception-hint { (ctx.t("通常は空欄のままにします。", "Leave empty unless an exception is intended.")) }
                input #exception type="text" name="exception" aria-describedby="exception-hint";
                div.row { button type="submit" { (ctx.t("承認する", "Approve")) } }
            }
            form.act method="post" action={"/console/devices/" (id) "/reject"} {
                h3 { (ctx.t("却下する", "Reject")) }
                (layout::csrf(ctx))
                (layout::reason_box(ctx, "reject-reason", ctx.t("却下の理由", "Reason")))
                div.row { button.danger type="submit" { (ctx.t("却下する", "Reject")) } }
            }
        }
        @if d.status == DeviceStatus::Approved && caller.may(Action::IssueCertificate) && admin.device_ca.is_some() {
            form.act method="post" action={"/console/devices/" (id) "/certificate"} {
                h3 { @if d.certificate.is_some() { (ctx.t("端末証明書を更新する", "Renew the device certificate")) }
                     @else { (ctx.t("端末証明書を発行する", "Issue a device certificate")) } }
                (layout::csrf(ctx))
                @if d.certificate.is_some() { input type="hidden" name="renew" value="1"; }
                label for="days" { (ctx.t("有効日数", "Valid for (days)")) }
                input.short #days type="text" inputmode="numeric" name="days" value=(admin.device_cert_days);
                p.hint { (ctx.t("発行後、登録用ファイル（iPhone/iPad用 .mobileconfig、Android用 .p12 と手順書）を1回だけダウンロードできます。パスワードは発行画面にだけ表示されます。",
                                "After issuing, the enrollment files (.mobileconfig for iPhone/iPad, .p12 and steps for Android) can be downloaded once. The password is shown on the issuing page only.")) }
                div.row { button type="submit" { (ctx.t("発行する", "Issue")) } }
            }
        }
        @if d.status == DeviceStatus::Approved && caller.may(Action::RevokeDevice) {
            form.act method="post" action={"/console/devices/" (id) "/revoke"} {
                h3 { (ctx.t("登録を取り消す（紛失・盗難など、第17条）", "Revoke (lost or stolen, art. 17)")) }
                p { (ctx.t("この端末からの接続はただちに遮断されます。同じ利用者の他の端末は使えます。", "This device is cut off at once; the owner's other devices keep working.")) }
                (layout::csrf(ctx))
                (layout::reason_box(ctx, "revoke-reason", ctx.t("取消の理由", "Reason")))
                div.row { button.danger type="submit" { (ctx.t("登録を取り消す", "Revoke")) } }
            }
        }
    }
}

/// Approve, reject or revoke: the admin API's `device_status`.
pub async fn decide(admin: &Admin, ctx: &Ctx, id: &str, action: &str, form: &Form) -> Answer {
    let (status, done_ja, done_en) = match action {
        "approve" => (DeviceStatus::Approved, "を承認しました。", "was approved."),
        "reject" => (DeviceStatus::Rejected, "の申請を却下しました。", "was rejected."),
        "revoke" => (DeviceStatus::Revoked, "の登録を取り消しました。", "was revoked."),
        _ => return layout::not_found(ctx.lang),
    };
    let input =
        DecisionInput { reason: layout::reason(ctx, form)?, exception: form.text("exception").map(str::to_owned) };
    admin.device_status(&ctx.caller(), id, status, input).await?;
    let flash = format!("{} {id} {}", ctx.t("端末", "Device"), ctx.t(done_ja, done_en));
    Ok(Reply::Done { to: format!("/console/devices/{id}"), flash })
}

/// Issues (or renews) the certificate and shows, once, the password and
/// the button that downloads the bundle.
pub async fn certificate(admin: &Admin, ctx: &Ctx, id: &str, form: &Form) -> Answer {
    let days =
        match form.text("days") {
            Some(d) => Some(d.parse::<u32>().map_err(|_| {
                ApiError(StatusCode::BAD_REQUEST, format!("`days` must be a number of days, not `{d}`"))
            })?),
            None => None,
        };
    let input = CertInput { days, reason: form.text("reason").map(str::to_owned), pkcs12_password: None };
    let issued = admin.issue_certificate(&ctx.caller(), id, input, form.get("renew") == Some("1")).await?;
    let title = ctx.t("端末証明書を発行しました", "Device certificate issued");
    let e = &issued.enrollment;
    let body = html! {
        h1 { (title) }
        p.notice role="status" { (ctx.t("端末", "Device")) " " code { (issued.device) } " · "
            (ctx.t("有効期限", "valid until")) " " (issued.not_after.to_string()) }
        div.secret-box {
            h2 { (ctx.t("パスワード（この画面でのみ表示）", "Password (shown on this page only)")) }
            p.secret #otp { (e.one_time_password) }
            p { button.secondary type="button" data-copy="otp" data-done=(ctx.t("コピーしました", "Copied")) { (ctx.t("コピー", "Copy")) } }
            p { (ctx.t("端末に登録用ファイルを入れるときに入力します。議員本人に口頭または別の経路で伝えてください。メールに書かないでください。",
                       "It is asked for when the files are installed. Tell it to the owner in person or by another channel; never by e-mail.")) }
        }
        form.act method="post" action={"/console/enrollments/" (e.id)} {
            h3 { (ctx.t("登録用ファイル", "Enrollment files")) }
            (layout::csrf(ctx))
            ul { @for f in &e.files { li { code { (f) } " " (file_use(ctx, f)) } } }
            p.hint { (ctx.t("ダウンロードは1回だけです（期限:", "One download only (until")) " " (layout::when(e.expires_at)) (ctx.t("）。", ").")) }
            div.row { button type="submit" { (ctx.t("ZIPでダウンロード", "Download as ZIP")) } }
        }
        p { a href={"/console/devices/" (issued.device)} { (ctx.t("端末の画面へ戻る", "Back to the device")) } }
    };
    Ok(Reply::Page(StatusCode::CREATED, layout::page(ctx, title, body)))
}

/// What each file of a bundle is for.
fn file_use<'a>(ctx: &'a Ctx, name: &str) -> &'a str {
    if name.ends_with(".mobileconfig") {
        ctx.t("iPhone・iPad 用の構成プロファイル", "profile for iPhone and iPad")
    } else if name.ends_with(".p12") {
        ctx.t("Android・パソコン用の証明書ファイル", "certificate file for Android and PCs")
    } else {
        ctx.t("Android での導入手順", "steps for Android")
    }
}

/// The bundle, once, as a ZIP of its files.
pub async fn download(admin: &Admin, ctx: &Ctx, id: &str) -> Answer {
    let bundle = admin.download_enrollment(&ctx.caller(), id).await?;
    let failed = |e: std::io::Error| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot build the ZIP: {e}"));
    let zip = zip_files(&bundle.files()).map_err(failed)?;
    Ok(Reply::File { name: format!("{}-enrollment.zip", bundle.device), content_type: "application/zip", body: zip })
}

fn zip_files(files: &[(String, Vec<u8>)]) -> std::io::Result<Vec<u8>> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in files {
        zip.start_file(name.as_str(), options).map_err(std::io::Error::other)?;
        zip.write_all(data)?;
    }
    Ok(zip.finish().map_err(std::io::Error::other)?.into_inner())
}
