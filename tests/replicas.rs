//! Several real gateway processes on loopback sharing one real PostgreSQL
//! (a throwaway cluster per test): a change made through any replica's
//! admin API is enforced by all of them, open connections included; writes
//! from two replicas are serialised by the database; a frozen or killed
//! replica, or one whose notifications were dropped, catches up from the
//! change log.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failed step is a failed test")]

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::postgres::{eventually, Cluster};
use support::{closed_within, reason, Enrol, Gateway, Person, Upstream, WsUpstream, AUDITOR_TOKEN, ROOT_TOKEN};

/// The heavy tests of this file run one at a time: three gateways and a
/// database each are enough for two cores.
static ONE_AT_A_TIME: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

struct Site {
    cluster: Cluster,
    replicas: Vec<Gateway>,
    _up: Upstream,
    ws: WsUpstream,
}

async fn site(replicas: usize) -> Site {
    let cluster = Cluster::start();
    let up = Upstream::start().await;
    let ws = WsUpstream::start().await;
    let mut gateways = Vec::new();
    for _ in 0..replicas {
        gateways.push(Gateway::start_with(&up, &ws, &cluster.store_section("postgres")).await);
    }
    Site { cluster, replicas: gateways, _up: up, ws }
}

/// The reason `gw` gives `who` now (`None` when forwarded). A request in
/// flight when a change arrives is re-judged and may be cut (`cut`).
async fn verdict(gw: &Gateway, who: &Person) -> Option<String> {
    let request =
        gw.client().get(gw.url("app.localhost", "/")).header("device-attestation", who.token("app.localhost"));
    let Ok(resp) = request.send().await else { return Some("cut".into()) };
    if resp.status() == 200 {
        return None;
    }
    Some(reason(&resp).unwrap_or_else(|| resp.status().to_string()))
}

async fn until_verdict(gw: &Gateway, who: &Person, want: Option<&str>, limit: Duration) -> Duration {
    let start = Instant::now();
    eventually(limit, &format!("verdict {want:?} on {}", gw.admin), async || verdict(gw, who).await.as_deref() == want)
        .await;
    start.elapsed()
}

#[cfg_attr(skip_postgres, ignore = "SEKISHO_SKIP_POSTGRES=1: PostgreSQL tests not run")]
#[tokio::test]
async fn a_change_through_any_replica_is_enforced_by_all_and_cuts_their_connections() {
    let _turn = ONE_AT_A_TIME.acquire().await.unwrap();
    let s = site(3).await;
    let [a, b, c] = &s.replicas[..] else { unreachable!() };
    let _ = &s.ws;
    let aoi = a.enrol("aoi", Enrol::default()).await;
    for gw in [b, c] {
        until_verdict(gw, &aoi, None, Duration::from_secs(2)).await;
    }
    let mut socket = c.websocket(&aoi).await;

    // Suspended through A: denied on B and C, and C cuts the open WebSocket.
    a.admin("POST", "/v1/users/aoi/suspend", json!({"reason": "端末紛失"})).await;
    assert_eq!(verdict(a, &aoi).await.as_deref(), Some("user_suspended"), "the writing replica, at once");
    let on_b = until_verdict(b, &aoi, Some("user_suspended"), Duration::from_secs(1)).await;
    until_verdict(c, &aoi, Some("user_suspended"), Duration::from_secs(1)).await;
    assert!(closed_within(&mut socket, Duration::from_secs(1)).await, "the WebSocket on C stayed open");
    eprintln!("suspension through A denied on B after {on_b:?}");

    // Lifted through C: allowed everywhere again.
    c.admin("POST", "/v1/users/aoi/unsuspend", json!({"reason": "発見"})).await;
    for gw in [a, b] {
        until_verdict(gw, &aoi, None, Duration::from_secs(1)).await;
    }

    // An emergency stop through B stops all three.
    b.admin("POST", "/v1/emergency-stop", json!({"reason": "不正アクセス"})).await;
    for gw in [a, b, c] {
        until_verdict(gw, &aoi, Some("emergency_stop"), Duration::from_secs(1)).await;
    }
    a.admin("POST", "/v1/emergency-stop/lift", json!({"reason": "復旧"})).await;
    for gw in [a, b, c] {
        until_verdict(gw, &aoi, None, Duration::from_secs(1)).await;
    }

    // Every replica reads the one audit trail.
    let (_, audit) = c.admin_call("GET", "/v1/audit?limit=100", AUDITOR_TOKEN, None).await;
    let actions: Vec<&str> =
        audit["records"].as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
    for want in ["user.suspend", "user.unsuspend", "emergency_stop.on", "emergency_stop.off"] {
        assert!(actions.contains(&want), "{want} missing from {actions:?}");
    }
}

/// Writes to the same user from two replicas at once are serialised by the
/// database: every one is in the audit trail, and all replicas end with the
/// one committed last.
#[cfg_attr(skip_postgres, ignore = "SEKISHO_SKIP_POSTGRES=1: PostgreSQL tests not run")]
#[tokio::test]
async fn concurrent_writes_from_two_replicas_are_serialised_and_the_last_commit_wins() {
    let _turn = ONE_AT_A_TIME.acquire().await.unwrap();
    let s = site(2).await;
    let [a, b] = &s.replicas[..] else { unreachable!() };
    a.enrol("ren", Enrol::default()).await;
    let writes = (0..20).map(|i| {
        let gw = if i % 2 == 0 { a } else { b };
        async move {
            let body = json!({"reason": format!("write {i}")});
            gw.admin_call("POST", "/v1/users/ren/restrict", ROOT_TOKEN, Some(body)).await.0
        }
    });
    let statuses = futures_util::future::join_all(writes).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let (_, audit) = a.admin_call("GET", "/v1/audit?target=ren&action=user.restrict", AUDITOR_TOKEN, None).await;
    let records = audit["records"].as_array().unwrap();
    assert_eq!(records.len(), 20, "every write is in the audit trail");
    let last = records[0]["reason"].as_str().unwrap().to_owned();
    let restriction = |v: &Value| {
        v["users"].as_array().unwrap().iter().find(|u| u["id"] == "ren").unwrap()["restricted"]["reason"].clone()
    };
    for gw in [a, b] {
        eventually(Duration::from_secs(2), "the last commit on every replica", async || {
            restriction(&gw.admin("GET", "/v1/users", json!({})).await) == last.as_str()
        })
        .await;
    }
}

/// Database TLS with rustls: the replica verifies the server against the
/// configured CA and the session is encrypted; a wrong CA stops the start.
#[cfg_attr(skip_postgres, ignore = "SEKISHO_SKIP_POSTGRES=1: PostgreSQL tests not run")]
#[tokio::test]
async fn a_replica_reaches_the_database_over_verified_tls() {
    let _turn = ONE_AT_A_TIME.acquire().await.unwrap();
    let cluster = Cluster::start_with_tls();
    let up = Upstream::start().await;
    let ws = WsUpstream::start().await;
    let tls = format!("{}ca_cert = \"{}\"\n", cluster.store_section("postgres"), cluster.ca_path().display());
    let gw = Gateway::start_with(&up, &ws, &tls).await;
    gw.enrol("sora", Enrol::default()).await;
    let rows = cluster
        .client("postgres")
        .await
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name LIKE 'sekisho%'",
            &[],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty(), "the replica is not connected");
    assert!(rows.iter().all(|r| r.get::<_, bool>(0)), "a replica connection without TLS");

    // The same database with another CA: no start, and the reason is said.
    let other = Cluster::start_with_tls();
    let wrong = format!("{}ca_cert = \"{}\"\n", cluster.store_section("postgres"), other.ca_path().display());
    let config = std::fs::read_to_string(gw.path("sekisho.toml")).unwrap();
    std::fs::write(gw.path("wrong-ca.toml"), config.replace(&tls, &wrong)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sekisho"))
        .current_dir(gw.path(""))
        .args(["--config", "wrong-ca.toml", "store", "migrate"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("certificate") || said.contains("UnknownIssuer"), "{said}");
}

/// The number of kill trials (`SEKISHO_KILL_TRIALS`, default 100).
fn kill_trials() -> usize {
    std::env::var("SEKISHO_KILL_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(100)
}

/// The database killed (`pg_ctl stop -m immediate`) again and again while
/// both replicas serve requests and take admin writes: no replica ever
/// forwards a request of a user suspended before the kills; every write
/// answered 2xx is in the database, with its audit record, and on both
/// replicas once the database is back; after `state_max_age_secs` without
/// the database, requests and admin writes are refused and `/metrics` and
/// the status say so; the replicas catch up without a restart.
#[cfg_attr(skip_postgres, ignore = "SEKISHO_SKIP_POSTGRES=1: PostgreSQL tests not run")]
#[tokio::test]
async fn the_database_killed_under_load_fails_closed_and_loses_no_answered_write() {
    let _turn = ONE_AT_A_TIME.acquire().await.unwrap();
    let cluster = Cluster::start();
    let (up, ws) = (Upstream::start().await, WsUpstream::start().await);
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let store = cluster.store_section("postgres");
        replicas.push(Gateway::start_tuned(&up, &ws, "state_max_age_secs = 2", &store).await);
    }
    let [a, b] = &replicas[..] else { unreachable!() };
    let mika = a.enrol("mika", Enrol::default()).await;
    let nao = a.enrol("nao", Enrol::default()).await;
    a.admin("POST", "/v1/users/mika/suspend", json!({"reason": "退職"})).await;
    until_verdict(b, &mika, Some("user_suspended"), Duration::from_secs(1)).await;
    until_verdict(b, &nao, None, Duration::from_secs(1)).await;

    // Load on both replicas for the whole test, as the suspended user.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let forwarded = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut load = Vec::new();
    for gw in [a, b] {
        let (client, url) = (gw.client(), gw.url("app.localhost", "/"));
        let (stop, forwarded, token) = (stop.clone(), forwarded.clone(), mika.token("app.localhost"));
        load.push(tokio::spawn(async move {
            let mut sent = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let resp = client.get(&url).header("device-attestation", &token).send().await.unwrap();
                if resp.status() == 200 {
                    forwarded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                sent += 1;
            }
            sent
        }));
    }

    // Kill trials: a write, the database killed a few milliseconds into it.
    let mut answered = Vec::new();
    let started = Instant::now();
    for i in 0..kill_trials() {
        let gw = if i % 2 == 0 { a } else { b };
        // The replica reconnected since the last kill (a read goes to the database).
        eventually(Duration::from_secs(5), "the replica reads the database", async || {
            gw.admin_call("GET", "/v1/audit?limit=1", AUDITOR_TOKEN, None).await.0 == 200
        })
        .await;
        let user = format!("t{i}");
        let body = json!({"display_name": user, "role": "staff", "profiles": ["app"]});
        let path = format!("/v1/users/{user}");
        let write = gw.admin_call("PUT", &path, ROOT_TOKEN, Some(body));
        let kill = async {
            tokio::time::sleep(Duration::from_micros(rand::random::<u64>() % 12_000)).await;
            cluster.kill_quick();
        };
        let ((status, _), ()) = tokio::join!(write, kill);
        assert!(status == 200 || status == 503, "trial {i}: write answered {status}");
        answered.push((user, status));
        cluster.restart();
    }
    eprintln!("{} kill trials in {:?}", answered.len(), started.elapsed());

    // A longer outage: both replicas fail closed after 2 s, and say so.
    for gw in [a, b] {
        eventually(Duration::from_secs(5), "the state confirmed just now", async || {
            let status = gw.admin("GET", "/v1/status", json!({})).await;
            status["store"]["confirmed_age_secs"].as_f64().unwrap() < 0.5
        })
        .await;
    }
    cluster.kill();
    let lost = Instant::now();
    for gw in [a, b] {
        until_verdict(gw, &nao, Some("state_unavailable"), Duration::from_secs(4)).await;
    }
    assert!(lost.elapsed() >= Duration::from_millis(1400), "refused before the state was 2 s unconfirmed");
    for gw in [a, b] {
        let metrics = gw.admin_metrics().await;
        assert!(metrics.contains("sekisho_state_fresh{backend=\"postgres\"} 0"), "{metrics}");
        let status = gw.admin("GET", "/v1/status", json!({})).await;
        assert_eq!(status["store"]["fresh"], false, "{status}");
        assert!(status["store"]["error"].is_string(), "{status}");
        let body = json!({"reason": "during the outage"});
        let (code, said) = gw.admin_call("POST", "/v1/users/nao/restrict", ROOT_TOKEN, Some(body)).await;
        assert_eq!(code, 503, "a write without the database answered {code}: {said}");
    }
    cluster.restart();
    for gw in [a, b] {
        until_verdict(gw, &nao, None, Duration::from_secs(5)).await;
        let metrics = gw.admin_metrics().await;
        assert!(metrics.contains("sekisho_state_fresh{backend=\"postgres\"} 1"), "{metrics}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut sent = 0;
    for l in load {
        sent += l.await.unwrap();
    }
    assert_eq!(forwarded.load(std::sync::atomic::Ordering::Relaxed), 0, "a suspended user was forwarded");
    eprintln!("{sent} requests of the suspended user, none forwarded");

    // No answered write lost; the database, its audit trail and both replicas agree.
    let db = cluster.client("postgres").await;
    let in_db: std::collections::BTreeSet<String> =
        db.query("SELECT id FROM users", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    let audited: std::collections::BTreeSet<String> = db
        .query("SELECT target FROM admin_audit WHERE action = 'user.put'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let restricted = db.query("SELECT 1 FROM admin_audit WHERE action = 'user.restrict'", &[]).await.unwrap();
    assert!(restricted.is_empty(), "the write answered 503 during the outage was recorded");
    for (user, status) in &answered {
        if *status == 200 {
            assert!(in_db.contains(user), "{user} was answered 200 but is not in the database");
        }
        assert_eq!(in_db.contains(user), audited.contains(user), "{user}: change and audit record disagree");
    }
    let ok = answered.iter().filter(|(_, s)| *s == 200).count();
    let uncertain = answered.iter().filter(|(u, s)| *s != 200 && in_db.contains(u)).count();
    eprintln!("{ok} writes answered 200, {} answered 503 ({uncertain} of which had committed)", answered.len() - ok);
    for gw in [a, b] {
        eventually(Duration::from_secs(3), "the replica has every committed user", async || {
            let users = gw.admin("GET", "/v1/users", json!({})).await;
            let ids: std::collections::BTreeSet<String> =
                users["users"].as_array().unwrap().iter().map(|u| u["id"].as_str().unwrap().to_owned()).collect();
            ids == in_db
        })
        .await;
    }
}

/// A replica frozen (SIGSTOP) while 200 changes are made elsewhere reads
/// them from the change log when it runs again, without reading the whole
/// state; one killed with `kill -9` and started again has them too.
#[cfg_attr(skip_postgres, ignore = "SEKISHO_SKIP_POSTGRES=1: PostgreSQL tests not run")]
#[tokio::test]
async fn a_frozen_or_killed_replica_catches_up_from_the_change_log() {
    let _turn = ONE_AT_A_TIME.acquire().await.unwrap();
    let mut s = site(2).await;
    let kai = s.replicas[0].enrol("kai", Enrol::default()).await;
    let kou = s.replicas[0].enrol("kou", Enrol::default()).await;
    until_verdict(&s.replicas[1], &kai, None, Duration::from_secs(1)).await;

    let signal = |sig: &str, pid: u32| {
        assert!(std::process::Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success())
    };
    signal("-STOP", s.replicas[1].pid());
    let a = &s.replicas[0];
    for i in 0..200 {
        let action = if i % 2 == 0 { "restrict" } else { "unrestrict" };
        a.admin("POST", &format!("/v1/users/kai/{action}"), json!({"reason": format!("round {i}")})).await;
    }
    a.admin("POST", "/v1/users/kai/suspend", json!({"reason": "凍結中の変更"})).await;
    signal("-CONT", s.replicas[1].pid());
    until_verdict(&s.replicas[1], &kai, Some("user_suspended"), Duration::from_secs(2)).await;
    let position = |v: &Value| v["store"]["position"].as_i64().unwrap();
    let at_a = position(&s.replicas[0].admin("GET", "/v1/status", json!({})).await);
    eventually(Duration::from_secs(2), "B at A's position", async || {
        position(&s.replicas[1].admin("GET", "/v1/status", json!({})).await) == at_a
    })
    .await;
    assert!(!s.replicas[1].log().contains("whole state"), "B re-read the whole state: {}", s.replicas[1].log());

    s.replicas[1].kill9();
    s.replicas[0].admin("POST", "/v1/users/kou/suspend", json!({"reason": "停止中の変更"})).await;
    s.replicas[1].spawn().await;
    assert_eq!(verdict(&s.replicas[1], &kou).await.as_deref(), Some("user_suspended"));
    s.replicas[0].admin("POST", "/v1/users/kou/unsuspend", json!({"reason": "再開"})).await;
    until_verdict(&s.replicas[1], &kou, None, Duration::from_secs(1)).await;
}

/// The listening connections killed from the database side
/// (`pg_terminate_backend`) right before each change: no change is lost,
/// and the replicas listen again.
#[cfg_attr(skip_postgres, ignore = "SEKISHO_SKIP_POSTGRES=1: PostgreSQL tests not run")]
#[tokio::test]
async fn dropped_notifications_lose_no_change() {
    let _turn = ONE_AT_A_TIME.acquire().await.unwrap();
    let s = site(2).await;
    let [a, b] = &s.replicas[..] else { unreachable!() };
    let yui = a.enrol("yui", Enrol::default()).await;
    until_verdict(b, &yui, None, Duration::from_secs(1)).await;
    for round in 0..5 {
        assert_eq!(s.cluster.terminate("-listener").await, 2, "round {round}: both replicas were listening");
        let (action, want) = if round % 2 == 0 { ("suspend", Some("user_suspended")) } else { ("unsuspend", None) };
        a.admin("POST", &format!("/v1/users/yui/{action}"), json!({"reason": format!("round {round}")})).await;
        until_verdict(b, &yui, want, Duration::from_millis(1500)).await;
        eventually(Duration::from_secs(2), "both replicas listen again", async || {
            let db = s.cluster.client("postgres").await;
            let n: i64 = db
                .query_one("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE '%-listener'", &[])
                .await
                .unwrap()
                .get(0);
            n == 2
        })
        .await;
    }
    assert!(b.log().contains("notification connection"), "{}", b.log());
}

/// Every kind of admin write, successes and refusals, then every read:
/// `(call, status, answer)` with the fields that differ from run to run
/// (times, generated keys) removed.
async fn admin_tour(gw: &Gateway) -> Vec<(String, u16, Value)> {
    let p1 = gw.enrol("p1", Enrol::default()).await;
    let key = |n: u8| sekisho_policy::attestation::SigningKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[n; 32]));
    let device = |id: &str, owner: &str, n: u8| {
        let public = key(n).public();
        json!({"id": id, "owner": owner, "kind": "pc", "ownership": "issued", "os": "windows",
               "os_version": "10.0.22631", "key_alg": public.alg(), "public_key": public.to_b64(),
               "security_software": {"name": "Defender", "updated": "2026-11-20"}})
    };
    let until = (chrono::Utc::now() + chrono::Duration::days(2)).to_rfc3339();
    // An evening a month ahead: a fixed date would one day be today, and
    // a maintenance window then in force would block the test's requests.
    let day = (chrono::Utc::now() + chrono::Duration::days(30)).format("%Y-%m-%d").to_string();
    let (start, end) = (format!("{day}T18:00:00+09:00"), format!("{day}T21:00:00+09:00"));
    let (start, end) = (start.as_str(), end.as_str());
    let calls: Vec<(&str, String, Value)> = vec![
        ("PUT", "/v1/users/u1".into(), json!({"display_name": "議員 一", "role": "councillor", "profiles": ["app"]})),
        ("PUT", "/v1/users/u2".into(), json!({"display_name": "職員 二", "role": "staff", "profiles": ["app", "ws"]})),
        ("PUT", "/v1/users/u3".into(), json!({"display_name": "x", "role": "staff", "profiles": ["nope"]})),
        ("POST", "/v1/devices".into(), device("u1-phone", "u1", 11)),
        ("POST", "/v1/devices".into(), device("u1-phone", "u1", 11)),
        ("POST", "/v1/devices".into(), device("ghost-pc", "ghost", 12)),
        ("POST", "/v1/devices/u1-phone/approve".into(), json!({"reason": "様式第1号"})),
        ("POST", "/v1/devices".into(), device("u2-pc", "u2", 13)),
        ("POST", "/v1/devices/u2-pc/reject".into(), json!({"reason": "私物"})),
        ("POST", "/v1/devices/u1-phone/revoke".into(), json!({"reason": "紛失"})),
        ("POST", "/v1/devices/u1-phone/approve".into(), json!({"reason": "再承認"})),
        ("POST", "/v1/devices".into(), device("u1-phone-2", "u1", 11)),
        ("POST", "/v1/devices".into(), device("u1-tablet", "u1", 18)),
        ("POST", "/v1/devices/u1-tablet/approve".into(), json!({"reason": "例外", "exception": "更新予定"})),
        ("PUT", "/v1/apps/kintone/5".into(), json!({"stage": "development", "reason": "新規作成中"})),
        ("POST", "/v1/apps/kintone/5/reviews".into(), json!({"subject": "customize", "reviewer": "課", "note": "js"})),
        ("POST", "/v1/apps/kintone/5/reviews".into(), json!({"subject": "plugin", "reviewer": "課", "note": "p"})),
        ("DELETE", "/v1/reviews/1".into(), json!({"reason": "取消"})),
        ("DELETE", "/v1/reviews/1".into(), json!({"reason": "取消"})),
        (
            "PUT",
            "/v1/users/u4".into(),
            json!({"display_name": "四", "role": "staff", "profiles": ["app"], "department": "総務課"}),
        ),
        ("POST", "/v1/devices/none/approve".into(), json!({"reason": "x"})),
        (
            "POST",
            "/v1/devices/import".into(),
            json!({"reason": "台帳", "devices": [device("a-1", "u2", 14), device("a-2", "u2", 15)]}),
        ),
        (
            "POST",
            "/v1/devices/import".into(),
            json!({"reason": "台帳", "devices": [device("a-3", "u2", 16), device("a-1", "u2", 14)]}),
        ),
        ("POST", "/v1/devices/import".into(), json!({"reason": "台帳", "devices": [device("a-4", "ghost", 17)]})),
        ("POST", "/v1/users/u2/suspend".into(), json!({"reason": "調査", "until": until})),
        ("POST", "/v1/users/u1/restrict".into(), json!({"reason": "閲覧のみ"})),
        ("POST", "/v1/users/u1/unrestrict".into(), json!({"reason": "解除"})),
        ("POST", "/v1/users/ghost/suspend".into(), json!({"reason": "x"})),
        ("POST", "/v1/emergency-stop".into(), json!({"reason": "点検", "profile": "ws"})),
        ("POST", "/v1/emergency-stop".into(), json!({"reason": "全停止"})),
        ("POST", "/v1/emergency-stop/lift".into(), json!({"reason": "復旧"})),
        (
            "POST",
            "/v1/overtime".into(),
            json!({"user": "u2", "approver": "課長", "reason": "議会", "start": start, "end": end}),
        ),
        (
            "POST",
            "/v1/overtime".into(),
            json!({"user": "ghost", "approver": "課長", "reason": "x", "start": start, "end": end}),
        ),
        (
            "POST",
            "/v1/overtime".into(),
            json!({"department": "総務課", "approver": "課長", "reason": "決算", "start": start, "end": end}),
        ),
        ("DELETE", "/v1/overtime/999".into(), json!({"reason": "x"})),
        ("POST", "/v1/maintenance".into(), json!({"reason": "更新", "start": start, "end": end})),
        ("POST", "/v1/maintenance".into(), json!({"reason": "更新", "profile": "app", "start": start, "end": end})),
        ("DELETE", "/v1/maintenance/1".into(), json!({"reason": "中止"})),
        ("DELETE", "/v1/maintenance/1".into(), json!({"reason": "中止"})),
        ("POST", format!("/v1/devices/{}/certificate", p1.device), json!({"days": 30})),
        ("POST", "/v1/devices/u2-pc/certificate".into(), json!({"days": 30})),
        ("POST", format!("/v1/devices/{}/certificate/renew", p1.device), json!({"days": 30})),
        ("POST", format!("/v1/devices/{}/posture", p1.device), json!({"attestation": p1.token("sekisho:posture")})),
    ];
    let mut seen = Vec::new();
    for (method, path, body) in calls {
        let (status, answer) = gw.admin_call(method, &path, ROOT_TOKEN, Some(body)).await;
        seen.push((format!("{method} {path}"), status, scrub(answer)));
    }
    // A newer report, then the same report again (not newer than the one accepted).
    // `iat` has a resolution of a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stale = json!({"attestation": p1.token("sekisho:posture")});
    let path = format!("/v1/devices/{}/posture", p1.device);
    let (status, answer) = gw.admin_call("POST", &path, ROOT_TOKEN, Some(stale.clone())).await;
    seen.push(("posture, newer".into(), status, scrub(answer)));
    let (status, answer) = gw.admin_call("POST", &path, ROOT_TOKEN, Some(stale)).await;
    seen.push(("posture, the same again".into(), status, scrub(answer)));
    seen.extend(reads(gw).await);
    seen
}

/// Every read of the admin API, scrubbed.
async fn reads(gw: &Gateway) -> Vec<(String, u16, Value)> {
    let mut seen = Vec::new();
    for path in ["/v1/users", "/v1/devices", "/v1/overtime", "/v1/maintenance", "/v1/status", "/v1/audit?limit=1000"] {
        let (status, answer) = gw.admin_call("GET", path, AUDITOR_TOKEN, None).await;
        seen.push((format!("GET {path}"), status, scrub(answer)));
    }
    seen
}

/// Removes what differs between two runs of the same calls.
fn scrub(v: Value) -> Value {
    const VARYING: [&str; 14] = [
        "since",
        "enrollment",
        "time",
        "snapshot_built_at",
        "not_after",
        "certificate_pem",
        "private_key_pem",
        "ca_pem",
        "sha256",
        "pkcs12_base64",
        "store",
        "health",
        "until",
        "security_software",
    ];
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter().filter(|(k, _)| !VARYING.contains(&k.as_str())).map(|(k, v)| (k, scrub(v))).collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(scrub).collect()),
        Value::String(s) if s.contains("sekisho:posture") || s.starts_with("windows ") => Value::Null,
        other => other,
    }
}

/// The admin API answers the same on both backends, success or refusal.
#[cfg_attr(skip_postgres, ignore = "SEKISHO_SKIP_POSTGRES=1: PostgreSQL tests not run")]
#[tokio::test]
async fn every_admin_write_answers_the_same_on_sqlite_and_on_postgres() {
    let _turn = ONE_AT_A_TIME.acquire().await.unwrap();
    let cluster = Cluster::start();
    let (up, ws) = (Upstream::start().await, WsUpstream::start().await);
    let on_sqlite = admin_tour(&Gateway::start(&up, &ws).await).await;
    let on_postgres = admin_tour(&Gateway::start_with(&up, &ws, &cluster.store_section("postgres")).await).await;
    assert_eq!(on_sqlite.len(), on_postgres.len());
    for (s, p) in on_sqlite.iter().zip(&on_postgres) {
        assert_eq!(s, p, "SQLite and PostgreSQL answer differently");
    }
    let statuses: Vec<u16> = on_sqlite.iter().map(|(_, s, _)| *s).collect();
    assert!(statuses.contains(&404) && statuses.contains(&409) && statuses.contains(&201), "{statuses:?}");
}

/// `sekisho store migrate` (idempotent, and refusing a newer schema) and
/// `sekisho store copy`: a single gateway's SQLite store moved onto
/// PostgreSQL reads back the same, admin audit trail included, and the
/// gateway started on it enforces the same state.
#[cfg_attr(skip_postgres, ignore = "SEKISHO_SKIP_POSTGRES=1: PostgreSQL tests not run")]
#[tokio::test]
async fn a_single_gateway_moves_onto_postgres_without_losing_a_record() {
    let _turn = ONE_AT_A_TIME.acquire().await.unwrap();
    let cluster = Cluster::start();
    let (up, ws) = (Upstream::start().await, WsUpstream::start().await);
    let mut gw = Gateway::start(&up, &ws).await;
    admin_tour(&gw).await;
    let kenta = gw.enrol("kenta", Enrol::default()).await;
    gw.admin("POST", "/v1/users/kenta/suspend", json!({"reason": "移行前の停止"})).await;
    let before = reads(&gw).await;
    gw.kill9();

    let home = gw.path("");
    let sekisho = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sekisho")).current_dir(&home).args(args).output().unwrap()
    };
    let config = std::fs::read_to_string(gw.path("sekisho.toml")).unwrap();
    std::fs::write(gw.path("postgres.toml"), config + &cluster.store_section("postgres")).unwrap();
    for _ in 0..2 {
        let out = sekisho(&["--config", "postgres.toml", "store", "migrate"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("schema version 2"));
    }
    let password = cluster.password_file();
    let to = format!("postgres:{}", cluster.url("postgres"));
    let copy = ["store", "copy", "--from", "sqlite:data/state.sqlite3", "--to", &to, "--password-file"];
    let copy = [&copy[..], &[password.to_str().unwrap()]].concat();
    let out = sekisho(&copy);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("rows of `admin_audit`") && said.contains("reads back the same"), "{said}");
    let again = sekisho(&copy);
    assert!(!again.status.success(), "a second copy into a non-empty database");
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    std::fs::rename(gw.path("postgres.toml"), gw.path("sekisho.toml")).unwrap();
    std::fs::remove_file(gw.path("data/state.sqlite3")).unwrap();
    gw.spawn().await;
    assert_eq!(gw.admin("GET", "/v1/status", json!({})).await["store"]["backend"], "postgres");
    let after = reads(&gw).await;
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b, a, "the store reads differently after the copy");
    }
    assert_eq!(verdict(&gw, &kenta).await.as_deref(), Some("user_suspended"));
    gw.admin("POST", "/v1/users/kenta/unsuspend", json!({"reason": "移行後"})).await;
    let (_, audit) = gw.admin_call("GET", "/v1/audit?limit=2", AUDITOR_TOKEN, None).await;
    let ids: Vec<i64> = audit["records"].as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids[0], ids[1] + 1, "a new audit record follows the copied ones: {audit}");

    // A database a newer sekisho migrated is refused.
    cluster
        .client("postgres")
        .await
        .execute("UPDATE sekisho_meta SET value = '99' WHERE key = 'schema_version'", &[])
        .await
        .unwrap();
    let out = sekisho(&["store", "migrate"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("newer than this sekisho"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
