//! Several real gateway processes on loopback sharing one real PostgreSQL
//! (a throwaway cluster per test): a change made through any replica's
//! admin API is enforced by all of them, open connections included; writes
//! from two replicas are serialised by the database; a frozen or killed
//! replica, or one whose notifications were dropped, catches up from the
//! change log.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failed step is a failed test")]

mod support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::postgres::{eventually, Cluster};
use support::{reason, Enrol, Gateway, Person, Upstream, WsUpstream, AUDITOR_TOKEN, ROOT_TOKEN};

/// The heavy tests of this file run one at a time: three gateways and a
/// database each are enough for two cores.
static ONE_AT_A_TIME: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

struct Site {
    _cluster: Cluster,
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
    Site { _cluster: cluster, replicas: gateways, _up: up, ws }
}

/// The reason `gw` gives `who` now (`None` when forwarded).
async fn verdict(gw: &Gateway, who: &Person) -> Option<String> {
    let resp = gw.get_as(who, "app.localhost", "/").await;
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

async fn open_websocket(gw: &Gateway, who: &Person) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://ws.localhost:{}/chat",
        gw.http.port()
    ))
    .unwrap();
    request.headers_mut().insert("device-attestation", who.token("ws.localhost").parse().unwrap());
    let stream = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream).await.unwrap();
    ws.send("hello".into()).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().to_text().unwrap(), "hello");
    ws
}

async fn closed_within(ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, limit: Duration) -> bool {
    tokio::time::timeout(limit, async {
        loop {
            match ws.next().await {
                Some(Ok(m)) if !m.is_close() => continue,
                _ => return,
            }
        }
    })
    .await
    .is_ok()
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
    let mut socket = open_websocket(c, &aoi).await;

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
