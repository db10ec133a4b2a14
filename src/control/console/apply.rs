//! Filing a device registration application (様式第1号) from the browser,
//! for the ICT支援員 (第8条) or IT staff: the form's fields become the admin
//! API's own `DeviceInput` (parsed by the same serde types) and go to
//! `Admin::file_device`, which checks the role and records the application
//! as pending. A phone or tablet that will prove itself with its device
//! certificate needs no agent key: the console then registers a fresh
//! public key whose private half it drops at once, so no one can sign with
//! it. It must never keep or show a private key.

use base64::Engine as _;
use http::StatusCode;
use maud::html;
use sekisho_policy::form::Form;
use serde_json::{json, Value};

use super::{layout, Answer, Ctx, Reply};
use crate::control::admin::{Action, Admin, ApiError, DeviceInput};

pub fn page(ctx: &Ctx) -> Answer {
    layout::may(ctx, Action::FileDevice)?;
    let title = ctx.t("端末の登録申請（様式第1号）", "Device registration application");
    let select = |id: &str, name: &str, options: &[(&str, &str)]| {
        html! { select id=(id) name=(name) { @for (value, text) in options { option value=(value) { (text) } } } }
    };
    let kinds = [
        ("smartphone", ctx.lang.kind(sekisho_policy::device::DeviceKind::Smartphone)),
        ("tablet", ctx.lang.kind(sekisho_policy::device::DeviceKind::Tablet)),
        ("pc", ctx.lang.kind(sekisho_policy::device::DeviceKind::Pc)),
    ];
    let ownership = [
        ("personal", ctx.lang.ownership(sekisho_policy::device::Ownership::Personal)),
        ("issued", ctx.lang.ownership(sekisho_policy::device::Ownership::Issued)),
    ];
    let os = [
        ("ios", "iOS"),
        ("ipados", "iPadOS"),
        ("android", "Android"),
        ("windows", "Windows"),
        ("macos", "macOS"),
        ("chromeos", "ChromeOS"),
        ("linux", "Linux"),
    ];
    let body = html! {
        h1 { (title) }
        p.lead { (ctx.t("申請は「審査待ち」として登録され、情報システム責任者が承認するまで利用できません。",
                         "The application is recorded as pending; the device works only once the system manager approves it.")) }
        form.act method="post" action="/console/apply" {
            (layout::csrf(ctx))
            label for="a-owner" { (ctx.t("利用者ID（端末を使う人）", "User id (who uses the device)")) " " span.req { (ctx.t("（必須）", "(required)")) } }
            input #a-owner type="text" name="owner" required autocomplete="off";
            label for="a-id" { (ctx.t("端末ID", "Device id")) " " span.req { (ctx.t("（必須）", "(required)")) } }
            p.hint #a-id-hint { (ctx.t("半角英数字と - _ . @（例: giin-iphone）", "Letters, digits and - _ . @ (e.g. giin-iphone)")) }
            input #a-id type="text" name="id" required autocomplete="off" aria-describedby="a-id-hint";
            label for="a-kind" { (ctx.t("端末の種別", "Kind")) }
            (select("a-kind", "kind", &kinds))
            label for="a-ownership" { (ctx.t("所有区分", "Ownership")) }
            (select("a-ownership", "ownership", &ownership))
            label for="a-os" { "OS" }
            (select("a-os", "os", &os))
            label for="a-version" { (ctx.t("OSのバージョン", "OS version")) " " span.req { (ctx.t("（必須）", "(required)")) } }
            input.short #a-version type="text" name="os_version" required placeholder="17.4.1";
            fieldset {
                legend { (ctx.t("ウイルス対策ソフト", "Security software")) }
                label for="a-sw" { (ctx.t("製品名", "Product")) }
                input #a-sw type="text" name="software";
                label for="a-sw-date" { (ctx.t("定義ファイルの更新日", "Signatures updated on")) }
                input #a-sw-date type="date" name="software_updated";
            }
            fieldset {
                legend { (ctx.t("端末の鍵（エージェントを使う場合のみ）", "Device key (only with the agent)")) }
                p.hint #a-key-hint { (ctx.t("端末証明書で接続するスマートフォン・タブレットは空欄のままにします。エージェントを使う端末は sekisho agent keygen が表示した値を入力します。",
                                            "Leave empty for a phone or tablet that uses its device certificate. For the agent, enter what `sekisho agent keygen` printed.")) }
                label for="a-alg" { (ctx.t("方式", "Algorithm")) }
                (select("a-alg", "key_alg", &[("EdDSA", "EdDSA"), ("ES256", "ES256")]))
                label for="a-key" { (ctx.t("公開鍵", "Public key")) }
                input #a-key type="text" name="public_key" aria-describedby="a-key-hint";
            }
            div.row { button type="submit" { (ctx.t("申請する", "File the application")) } }
        }
    };
    Ok(Reply::Page(StatusCode::OK, layout::page(ctx, title, body)))
}

/// Files the application through the admin API's `file_device`.
pub async fn file(admin: &Admin, ctx: &Ctx, form: &Form) -> Answer {
    let input = device_input(form)?;
    let id = input.id.clone();
    admin.file_device(&ctx.caller(), input).await?;
    let to =
        if ctx.caller().may(Action::ReadState) { format!("/console/devices/{id}") } else { "/console/apply".into() };
    let flash = format!(
        "{} {id} {}",
        ctx.t("端末", "Device"),
        ctx.t("の申請を受け付けました（審査待ち）。", "was filed (pending).")
    );
    Ok(Reply::Done { to, flash })
}

/// The form as the API's JSON body, parsed by the API's own type.
fn device_input(form: &Form) -> Result<DeviceInput, ApiError> {
    let text = |name: &str| form.text(name).map(str::to_owned);
    let security = match (text("software"), text("software_updated")) {
        (Some(name), Some(updated)) => json!({"name": name, "updated": updated}),
        (None, None) => Value::Null,
        _ => return Err(bad("give the security software's name and its update date, or neither")),
    };
    let (key_alg, public_key) = match text("public_key") {
        Some(key) => (text("key_alg").unwrap_or_default(), key),
        None => ("EdDSA".to_owned(), unusable_key()),
    };
    let body = json!({
        "id": text("id").unwrap_or_default(), "owner": text("owner").unwrap_or_default(),
        "kind": text("kind"), "ownership": text("ownership"), "os": text("os"),
        "os_version": text("os_version").unwrap_or_default(), "security_software": security,
        "key_alg": key_alg, "public_key": public_key,
    });
    serde_json::from_value(body).map_err(|e| bad(&format!("the application is incomplete: {e}")))
}

/// The public half of a key pair whose private half is dropped here: a
/// device that proves itself with its certificate only.
fn unusable_key() -> String {
    let signing = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes())
}

fn bad(text: &str) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, text.to_owned())
}
