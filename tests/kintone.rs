//! kintone-specific rules through the real gateway: 個人番号 in request
//! bodies, reviewed integration tokens, and no shared accounts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failed step is a failed test")]

mod support;

use base64::Engine as _;
use support::{reason, Enrol, Gateway, Person, Upstream, WsUpstream, REVIEWED_TOKEN};

const HOST: &str = "kintone.localhost";
/// 1234 5678 9018 has a valid check digit.
const MY_NUMBER: &str = "123456789018";

async fn setup() -> (Upstream, WsUpstream, Gateway, Person) {
    let up = Upstream::start().await;
    let ws = WsUpstream::start().await;
    let gw = Gateway::start(&up, &ws).await;
    let p = gw.enrol("sato", Enrol::default()).await;
    (up, ws, gw, p)
}

fn post(gw: &Gateway, who: &Person, path: &str, body: impl Into<reqwest::Body>) -> reqwest::RequestBuilder {
    gw.client().post(gw.url(HOST, path)).header("device-attestation", who.token(HOST)).body(body)
}

#[tokio::test]
async fn a_record_carrying_a_my_number_is_refused_and_never_reaches_kintone() {
    let (up, _ws, gw, sato) = setup().await;
    let record = format!(
        r#"{{"app":1,"record":{{"kojin":{{"value":"{}-{}-{}"}}}}}}"#,
        &MY_NUMBER[..4],
        &MY_NUMBER[4..8],
        &MY_NUMBER[8..]
    );
    let resp =
        post(&gw, &sato, "/k/v1/record.json", record).header("content-type", "application/json").send().await.unwrap();
    assert_eq!((resp.status().as_u16(), reason(&resp).as_deref()), (403, Some("specific_personal_information")));
    assert!(up.seen().iter().all(|s| s.body_len == 0), "no body byte reached the upstream: {:?}", up.seen());

    let clean = post(&gw, &sato, "/k/v1/record.json", r#"{"app":1,"record":{"kojin":{"value":"123456789019"}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(clean.status(), 200, "a wrong check digit is not a My Number");

    let lines = gw.audit_lines("sato").await;
    assert!(lines.iter().any(|l| l["reason"] == "specific_personal_information"));
    let everything = format!("{}{}", std::fs::read_to_string(gw.path("data/audit.jsonl")).unwrap(), gw.log());
    assert!(!everything.contains(MY_NUMBER) && !everything.contains("5678-9018"), "the number was written to a log");
}

/// A CSV attached through kintone's file API arrives as one part of a
/// multipart body: its text is scanned like any other body's.
#[tokio::test]
async fn a_csv_file_carrying_a_my_number_is_refused_at_the_file_api() {
    let (up, _ws, gw, sato) = setup().await;
    let upload = |csv: String| {
        let body = format!(
            "--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"meibo.csv\"\r\n\
             Content-Type: text/csv\r\n\r\n{csv}\r\n--b0undary--\r\n"
        );
        post(&gw, &sato, "/k/v1/file.json", body)
            .header("content-type", "multipart/form-data; boundary=b0undary")
            .send()
    };
    let refused = upload(format!("氏名,個人番号\r\n田中 太郎,{MY_NUMBER}\r\n")).await.unwrap();
    assert_eq!((refused.status().as_u16(), reason(&refused).as_deref()), (403, Some("specific_personal_information")));
    assert!(up.seen().iter().all(|s| s.body_len == 0), "no byte of the file reached kintone: {:?}", up.seen());
    let clean = upload("氏名,内線\r\n田中 太郎,1234\r\n".to_owned()).await.unwrap();
    assert_eq!(clean.status(), 200);
}

#[tokio::test]
async fn a_my_number_in_a_search_or_a_path_is_refused_and_never_written_down() {
    let (up, _ws, gw, sato) = setup().await;
    let get =
        |target: String| gw.client().get(gw.url(HOST, &target)).header("device-attestation", sato.token(HOST)).send();
    let dashed = format!("{}-{}-{}", &MY_NUMBER[..4], &MY_NUMBER[4..8], &MY_NUMBER[8..]);
    // A record search by number, and a number as a path segment.
    let search = format!("/k/v1/records.json?app=1&query=kojin%20%3D%20%22{dashed}%22");
    let in_path = format!("/k/v1/kojin/{MY_NUMBER}");
    for target in [search, in_path] {
        let resp = get(target.clone()).await.unwrap();
        assert_eq!(
            (resp.status().as_u16(), reason(&resp).as_deref()),
            (403, Some("specific_personal_information")),
            "{target}"
        );
    }
    assert!(up.seen().is_empty(), "nothing reached kintone: {:?}", up.seen());
    let ordinary = get("/k/v1/records.json?app=1&query=kojin%20%3D%20%22123456789019%22".into()).await.unwrap();
    assert_eq!(ordinary.status(), 200, "a wrong check digit is not a My Number");

    let lines = gw.audit_lines("sato").await;
    let refused: Vec<_> = lines.iter().filter(|l| l["reason"] == "specific_personal_information").collect();
    assert_eq!(refused.len(), 2, "{lines:?}");
    assert!(refused.iter().all(|l| l["path"].as_str().is_some_and(|p| p.starts_with("(withheld"))), "{refused:?}");
    let everything = format!("{}{}", std::fs::read_to_string(gw.path("data/audit.jsonl")).unwrap(), gw.log());
    assert!(!everything.contains(MY_NUMBER) && !everything.contains(&dashed), "the number was written down");
}

/// A compressed body hides what it carries from the scanner (and an
/// upstream that decodes it would store the number): it is refused before
/// a byte goes upstream, the page naming the rule; `identity` is no coding.
#[tokio::test]
async fn a_compressed_upload_is_refused_because_it_cannot_be_checked() {
    use std::io::Write as _;
    let (up, _ws, gw, sato) = setup().await;
    // Long enough to be compressed (a tiny input is stored as it is).
    let note = "申請内容の確認をお願いします。".repeat(20);
    let record = format!(r#"{{"app":1,"record":{{"note":{{"value":"{note}"}},"kojin":{{"value":"{MY_NUMBER}"}}}}}}"#);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(record.as_bytes()).unwrap();
    let gzipped = gz.finish().unwrap();
    assert!(!gzipped.windows(MY_NUMBER.len()).any(|w| w == MY_NUMBER.as_bytes()), "the number shows in the gzip");
    for coding in ["gzip", "identity, gzip", "br"] {
        let resp = post(&gw, &sato, "/k/v1/record.json", gzipped.clone())
            .header("content-type", "application/json")
            .header("content-encoding", coding)
            .send()
            .await
            .unwrap();
        assert_eq!(
            (resp.status().as_u16(), reason(&resp).as_deref()),
            (403, Some("feature_not_permitted")),
            "{coding}"
        );
        let page = resp.text().await.unwrap();
        assert!(page.contains("Content-Encoding"), "the page names the rule: {page}");
    }
    assert!(up.seen().is_empty(), "nothing reached kintone: {:?}", up.seen());
    let clean = r#"{"app":1,"record":{"title":{"value":"ok"}}}"#;
    let resp = post(&gw, &sato, "/k/v1/record.json", clean)
        .header("content-type", "application/json")
        .header("content-encoding", "identity")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.last().body_len, clean.len() as u64);
}

#[tokio::test]
async fn a_my_number_deep_in_a_large_streamed_upload_aborts_it() {
    let (up, _ws, gw, sato) = setup().await;
    let mut body = vec![b'a'; 3 << 20];
    body.extend_from_slice(format!(" 個人番号 {} ", "１２３４５６７８９０１８").as_bytes());
    let total = body.len() as u64;
    let chunks: Vec<_> =
        body.chunks(64 << 10).map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c))).collect();
    let resp = post(&gw, &sato, "/k/v1/file.json", reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(reason(&resp).as_deref(), Some("specific_personal_information"));
    assert!(up.seen().iter().all(|s| s.body_len < total), "the upstream never got the whole upload");

    // Without the number the same upload streams through whole.
    let clean = vec![b'a'; (3 << 20) + 12345];
    let chunks: Vec<_> =
        clean.chunks(64 << 10).map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c))).collect();
    let resp = post(&gw, &sato, "/k/v1/file.json", reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), format!("ok {}", clean.len()));
}

#[tokio::test]
async fn only_reviewed_integration_tokens_pass() {
    let (_up, _ws, gw, sato) = setup().await;
    let call = |token: &'static str| {
        gw.client()
            .get(gw.url(HOST, "/k/v1/records.json"))
            .header("device-attestation", sato.token(HOST))
            .header("x-cybozu-api-token", token)
            .send()
    };
    assert_eq!(call(REVIEWED_TOKEN).await.unwrap().status(), 200);
    assert_eq!(reason(&call("some-unreviewed-token").await.unwrap()).as_deref(), Some("integration_not_approved"));
}

#[tokio::test]
async fn a_login_must_be_the_attested_users_own() {
    let (_up, _ws, gw, sato) = setup().await;
    let login = |name: &str| base64::engine::general_purpose::STANDARD.encode(format!("{name}:pass"));
    let call = |header: String| {
        gw.client()
            .get(gw.url(HOST, "/k/"))
            .header("device-attestation", sato.token(HOST))
            .header("x-cybozu-authorization", header)
            .send()
    };
    assert_eq!(call(login("sato")).await.unwrap().status(), 200);
    assert_eq!(reason(&call(login("suzuki")).await.unwrap()).as_deref(), Some("account_mismatch"));
}

/// Abiko 6.(2)(3) over the wire: a shared account passes for its holders,
/// a login header sent twice is refused (400), and the browser sign-in post
/// is read: another person's login never reaches kintone.
#[tokio::test]
async fn abiko_6_logins_are_checked_in_headers_and_in_the_browser_sign_in() {
    let (up, ws, gw, sato) = setup().await;
    let _ = ws;
    let suzuki = gw.enrol("suzuki", support::Enrol::default()).await;
    let basic = |name: &str| base64::engine::general_purpose::STANDARD.encode(format!("{name}:pass"));
    let with_login = |who: &support::Person, header: String| {
        gw.client()
            .get(gw.url(HOST, "/k/v1/records.json"))
            .header("device-attestation", who.token(HOST))
            .header("x-cybozu-authorization", header)
            .send()
    };
    assert_eq!(with_login(&sato, basic("kyoyu")).await.unwrap().status(), 200, "sato holds the shared account");
    assert_eq!(reason(&with_login(&suzuki, basic("kyoyu")).await.unwrap()).as_deref(), Some("account_mismatch"));
    let twice = gw
        .client()
        .get(gw.url(HOST, "/k/"))
        .header("device-attestation", sato.token(HOST))
        .header("x-cybozu-authorization", basic("sato"))
        .header("x-cybozu-authorization", basic("suzuki"))
        .send()
        .await
        .unwrap();
    assert_eq!((twice.status().as_u16(), reason(&twice).as_deref()), (400, Some("bad_request")));

    let sign_in = |who: &support::Person, body: &'static str| {
        post(&gw, who, "/api/auth/login.json", body).header("content-type", "application/json").send()
    };
    let resp = sign_in(&suzuki, r#"{"username":"sato","password":"x","keepUsername":false}"#).await.unwrap();
    assert_eq!((resp.status().as_u16(), reason(&resp).as_deref()), (403, Some("account_mismatch")));
    assert!(
        up.seen().iter().all(|s| s.path != "/api/auth/login.json" || s.body_len == 0),
        "no byte of the refused sign-in (the login) reached kintone: {:?}",
        up.seen()
    );
    let resp = sign_in(&suzuki, r#"{"username":"suzuki","password":"x"}"#).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.last().path, "/api/auth/login.json");
    let empty = post(&gw, &suzuki, "/api/auth/login.json", "").send().await.unwrap();
    assert_eq!(reason(&empty).as_deref(), Some("account_mismatch"), "a sign-in without a readable login");
    let everything = format!("{}{}", std::fs::read_to_string(gw.path("data/audit.jsonl")).unwrap(), gw.log());
    assert!(!everything.contains("cGFzcw") && !everything.contains("\"x\""), "no credential in the logs");
}

/// Abiko 10. over the wire: customising an app in operation needs a review
/// in the register; an app in development may; an API token of an app in
/// operation needs an api_token review. The register lives in the admin API.
#[tokio::test]
async fn abiko_10_the_review_register_decides_customisation_and_tokens() {
    let (up, _ws, gw, sato) = setup().await;
    let customize = |app: u64| {
        gw.client()
            .put(gw.url(HOST, "/k/v1/preview/app/customize.json"))
            .header("device-attestation", sato.token(HOST))
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"app":{app},"scope":"ALL","desktop":{{"js":[{{"type":"URL","url":"https://x/a.js"}}]}}}}"#
            ))
            .send()
    };
    let refused = customize(5).await.unwrap();
    assert_eq!((refused.status().as_u16(), reason(&refused).as_deref()), (403, Some("feature_not_permitted")));
    assert!(up.seen().iter().all(|s| s.body_len == 0), "no byte of the refused customisation reached kintone");
    gw.admin("PUT", "/v1/apps/kintone/5", serde_json::json!({"stage": "development", "reason": "作成中"})).await;
    assert_eq!(customize(5).await.unwrap().status(), 200, "an app in development");
    assert_eq!(reason(&customize(6).await.unwrap()).as_deref(), Some("feature_not_permitted"));
    gw.admin(
        "POST",
        "/v1/apps/kintone/6/reviews",
        serde_json::json!({"subject": "customize", "reviewer": "行政管理課 山田", "note": "desktop.js 確認", "reviewed_on": "2026-11-20"}),
    )
    .await;
    assert_eq!(customize(6).await.unwrap().status(), 200, "reviewed before operation");
    // The body names the reviewed app 6 as JSON and the unreviewed app 5 as
    // a form: with two types sent, kintone might read either.
    let before = up.seen().len();
    let two_types = gw
        .client()
        .put(gw.url(HOST, "/k/v1/preview/app/customize.json"))
        .header("device-attestation", sato.token(HOST))
        .header("content-type", "application/json")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"app":6,"x":"&app=5&"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!((two_types.status().as_u16(), reason(&two_types).as_deref()), (400, Some("bad_request")));
    assert_eq!(up.seen().len(), before, "nothing of it reached kintone");

    let token = "creators-own-token";
    let records = |app: u64| {
        gw.client()
            .get(gw.url(HOST, &format!("/k/v1/records.json?app={app}")))
            .header("device-attestation", sato.token(HOST))
            .header("x-cybozu-api-token", token)
            .send()
    };
    assert_eq!(records(5).await.unwrap().status(), 200, "a token of an app in development");
    // kintone reads a GET's parameters from a JSON body too: the app the
    // body names is the one judged, whatever the query says.
    let before = up.seen().len();
    let body_names_another = gw
        .client()
        .get(gw.url(HOST, "/k/v1/records.json?app=5"))
        .header("device-attestation", sato.token(HOST))
        .header("x-cybozu-api-token", token)
        .header("content-type", "application/json")
        .body(r#"{"app":7}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(reason(&body_names_another).as_deref(), Some("integration_not_approved"));
    // The head may have gone ahead while the body was held: no byte of it did.
    assert!(up.seen()[before..].iter().all(|s| s.body_len == 0), "no byte of the body reached kintone");
    assert_eq!(reason(&records(7).await.unwrap()).as_deref(), Some("integration_not_approved"));
    let hash: String = <sha2::Sha256 as sha2::Digest>::digest(token).iter().map(|b| format!("{b:02x}")).collect();
    gw.admin(
        "POST",
        "/v1/apps/kintone/7/reviews",
        serde_json::json!({"subject": "api_token", "reviewer": "行政管理課", "note": "連携先の動作検証", "token_sha256": hash}),
    )
    .await;
    assert_eq!(records(7).await.unwrap().status(), 200);
    let (_, register) = gw.admin_call("GET", "/v1/apps", support::AUDITOR_TOKEN, None).await;
    assert_eq!(register["reviews"].as_array().unwrap().len(), 2, "{register}");
    assert_eq!(register["reviews"][0]["reviewer"], "行政管理課 山田");
    let (_, audit) = gw.admin_call("GET", "/v1/audit?action=app.review", support::AUDITOR_TOKEN, None).await;
    assert!(audit["records"][1]["reason"].as_str().unwrap().contains("desktop.js 確認"), "{audit}");
    assert!(!gw.log().contains(token), "the token is never logged");
}

/// Abiko 5.(2): what the body really says is read (a percent-encoded
/// full-width number next to a JSON-escaped keyword is refused), and a
/// number on its check digit alone passes, recorded in the audit line
/// without the number.
#[tokio::test]
async fn abiko_5_2_encoded_numbers_are_read_and_a_bare_one_is_recorded_not_refused() {
    let (up, _ws, gw, sato) = setup().await;
    let wide: String = MY_NUMBER.chars().map(|c| char::from_u32(c as u32 - 0x30 + 0xFF10).unwrap()).collect();
    let encoded: String = wide.bytes().map(|b| format!("%{b:02X}")).collect();
    let form = format!("note=%5Cu500b%5Cu4eba%5Cu756a%5Cu53f7&v={encoded}");
    let resp = post(&gw, &sato, "/k/v1/record.json", form)
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    assert_eq!(reason(&resp).as_deref(), Some("specific_personal_information"));
    assert!(up.seen().iter().all(|s| s.body_len == 0), "no byte of it reached kintone");

    let bare = format!(r#"{{"app":1,"record":{{"受付":{{"value":"{MY_NUMBER}"}}}}}}"#);
    let resp =
        post(&gw, &sato, "/k/v1/record.json", bare).header("content-type", "application/json").send().await.unwrap();
    assert_eq!(resp.status(), 200, "low confidence passes (the default)");
    let lines = gw.audit_lines("sato").await;
    let last = lines.last().unwrap();
    assert_eq!(last["decision"], "allow");
    assert!(last["rule"].as_str().unwrap().contains("low confidence"), "{last}");
    let everything = format!("{}{}", std::fs::read_to_string(gw.path("data/audit.jsonl")).unwrap(), gw.log());
    assert!(!everything.contains(MY_NUMBER) && !everything.contains(&encoded), "the number was written to a log");
}
