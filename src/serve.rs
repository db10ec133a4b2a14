//! Start-up: load and check everything that can be wrong (config, TLS
//! files, rules, store, ports) before pingora starts, so a mistake stops
//! the gateway with a clear message instead of a silently missing listener;
//! then run the proxy, the admin API, the demo upstream and SIGHUP reloads
//! until a shutdown signal, and flush the audit log on the way out.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use sha2::{Digest, Sha256};

use crate::config::{AdminToken, Config, Role};
use crate::control::admin::Admin;
use crate::control::audit::AuditLog;
use crate::control::store::AuditEntry;
use crate::control::writer::Writer;
use crate::gateway::admission::Admission;
use crate::gateway::proxy::Gateway;
use crate::limits::Limiters;
use crate::metrics::Metrics;
use crate::shared::{load_rules, Shared};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("rules: {0}")]
    Rules(#[from] crate::shared::ReloadError),
    #[error(transparent)]
    Store(#[from] crate::control::store::StoreError),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("`{0}`: {1}")]
    Io(String, std::io::Error),
}

/// Runs the gateway. With `upgrade`, the proxy's listening sockets come from
/// the running process (pingora's graceful upgrade, triggered by sending it
/// SIGQUIT), and the admin and demo ports are taken once it lets them go.
pub fn run(config_path: &Path, upgrade: bool) -> Result<(), StartError> {
    let config = Config::load(config_path)?;
    std::fs::create_dir_all(&config.data_dir).map_err(|e| StartError::Io(config.data_dir.display().to_string(), e))?;
    let tokens = admin_tokens(&config)?;
    if config.https.is_some() {
        if config.tls.generate_dev_certs && crate::tls::ensure_dev_certs(&config.tls.cert, &config.tls.key)? {
            println!("created a development CA and server certificate under {}", display_dir(&config.tls.cert));
        }
        crate::tls::check_pem(&config.tls.cert, &config.tls.key)?;
        if let (true, Some((cert, key))) = (config.tls.generate_dev_certs, &config.tls.device_ca) {
            if !cert.exists() && !key.exists() {
                crate::device::ca::init(cert, key)?;
                println!("created a development device CA: {}", cert.display());
            }
        }
    }
    let (rules, upstreams) = load_rules(&config.rules_dir)?;
    let (store, state, position) = crate::control::backend::start(&config.store)?;
    let audit = Arc::new(
        AuditLog::open(&config.audit_log).map_err(|e| StartError::Io(config.audit_log.display().to_string(), e))?,
    );
    let shared = Arc::new(Shared::new(rules, upstreams, state));
    let writer = Arc::new(Writer::new(store, shared.clone(), position, config.state_max_age));
    let metrics = Arc::new(Metrics::default());
    // An upgrade finds every port taken by the process it replaces.
    let later = |addr| if upgrade { Ok(Listen::Later(addr)) } else { bind(addr).map(Listen::Bound) };
    if !upgrade {
        for addr in [config.https, config.http].into_iter().flatten() {
            drop(TcpListener::bind(addr).map_err(|e| StartError::Bind(addr, e))?);
        }
    }
    let admin_listener = later(config.admin.listen)?;
    let admin_tls = config.admin.tls.as_ref().map(|(cert, key)| crate::tls::acceptor(cert, key)).transpose()?;
    let device_ca = config
        .tls
        .device_ca
        .as_ref()
        .map(|(cert, key)| crate::device::ca::DeviceCa::load(cert, key))
        .transpose()?
        .map(Arc::new);
    let demo_listener = config.demo_upstream.map(later).transpose()?;

    let conf = ServerConf {
        threads: config.threads,
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(2),
        upstream_keepalive_pool_size: 256,
        // Per data directory, so two gateways on one host never swap sockets.
        upgrade_sock: config.data_dir.join("upgrade.sock").display().to_string(),
        ..ServerConf::default()
    };
    let opt = pingora::server::configuration::Opt { upgrade, ..Default::default() };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    server.bootstrap();
    let limits = Arc::new(Limiters::new(&config.limits));
    let gateway = Gateway::new(
        shared.clone(),
        audit.clone(),
        metrics.clone(),
        limits.clone(),
        config.keepalive_secs,
        config.state_max_age,
    );
    let mut app = pingora::proxy::http_proxy(&server.configuration, gateway);
    // HTTP/2 connections idle as long as HTTP/1 keep-alive ones may.
    let mut options = pingora::apps::HttpServerOptions::default();
    options.h2_idle_timeout = Some(std::time::Duration::from_secs(config.keepalive_secs));
    app.server_options = Some(options);
    let app = Admission::new(
        app,
        config.limits.connections_per_client.get(),
        std::time::Duration::from_secs(config.limits.header_timeout_secs.get().into()),
        metrics.clone(),
    );
    let mut proxy = Service::new("sekisho".to_owned(), app);
    if let Some(addr) = config.https {
        let mut tls = TlsSettings::intermediate(&path_str(&config.tls.cert), &path_str(&config.tls.key))
            .map_err(|e| StartError::Io(config.tls.cert.display().to_string(), std::io::Error::other(e.to_string())))?;
        tls.enable_h2();
        if let Some((ca, _)) = &config.tls.device_ca {
            tls.set_client_cert_verifier(crate::device::ca::verifier(ca)?);
        }
        proxy.add_listener(ListenerConfig::tcp(addr.to_string()).tls(tls).l4_buffer(l4_buffer()));
    }
    if let Some(addr) = config.http {
        proxy.add_listener(ListenerConfig::tcp(addr.to_string()).l4_buffer(l4_buffer()));
    }
    server.add_service(proxy);
    let admin = Arc::new(Admin {
        shared: shared.clone(),
        writer,
        audit: audit.clone(),
        metrics,
        limits,
        device_ca,
        tokens,
        rules_dir: config.rules_dir.clone(),
    });
    server.add_service(background_service("admin", Sidecar { admin, admin_listener, admin_tls, demo_listener }));
    announce(&config);
    server.run(RunArgs::default());
    audit.close();
    Ok(())
}

/// The admin API, the demo upstream and SIGHUP reloads, on one background runtime.
struct Sidecar {
    admin: Arc<Admin>,
    admin_listener: Listen,
    admin_tls: Option<tokio_rustls::TlsAcceptor>,
    demo_listener: Option<Listen>,
}

/// A port bound at start, or one to take over from the process being upgraded.
enum Listen {
    Bound(TcpListener),
    Later(SocketAddr),
}

impl Listen {
    async fn take(&self, shutdown: &ShutdownWatch) -> Option<tokio::net::TcpListener> {
        match self {
            Listen::Bound(l) => to_tokio(l),
            Listen::Later(addr) => loop {
                // The old process holds the port until it exits.
                if let Ok(l) = tokio::net::TcpListener::bind(addr).await {
                    return Some(l);
                }
                if *shutdown.borrow() {
                    return None;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            },
        }
    }
}

#[async_trait]
impl BackgroundService for Sidecar {
    async fn start(&self, shutdown: ShutdownWatch) {
        // First: during an upgrade it also reads in what the old process writes.
        tokio::spawn(crate::control::follower::follow(self.admin.writer.clone(), shutdown.clone()));
        let Some(admin_listener) = self.admin_listener.take(&shutdown).await else { return };
        if matches!(self.admin_listener, Listen::Later(_)) {
            // The old process is gone: read in its last writes now rather
            // than at the watcher's next tick, before serving admin writes.
            if let Err(e) = self.admin.writer.confirm().await {
                log::error!("upgrade: the state could not be confirmed against the store: {e}");
            }
        }
        let admin = tokio::spawn(crate::control::admin::serve(
            self.admin.clone(),
            admin_listener,
            self.admin_tls.clone(),
            shutdown.clone(),
        ));
        if let Some(demo) = &self.demo_listener {
            if let Some(demo) = demo.take(&shutdown).await {
                tokio::spawn(crate::demo::serve(demo, shutdown.clone()));
            }
        }
        tokio::spawn(reload_on_hangup(self.admin.clone(), shutdown.clone()));
        tokio::spawn(prune_limits(self.admin.clone(), shutdown));
        let _ = admin.await;
    }
}

async fn reload_on_hangup(admin: Arc<Admin>, mut shutdown: ShutdownWatch) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = hangups.recv() => {}
        }
        let entry = AuditEntry {
            time: chrono::Utc::now(),
            actor: "SIGHUP".into(),
            action: "rules.reload".into(),
            target: admin.rules_dir.display().to_string(),
            reason: String::new(),
            source: "local".into(),
        };
        match admin.writer.reload_rules(&admin.rules_dir, entry).await {
            Ok(n) => log::warn!("rules reloaded on SIGHUP: {n} profiles"),
            Err(e) => log::error!("rules not reloaded on SIGHUP, the running rules stay: {e}"),
        }
    }
}

/// governor's keyed maps keep every key they saw until pruned.
async fn prune_limits(admin: Arc<Admin>, mut shutdown: ShutdownWatch) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => admin.limits.prune(),
        }
    }
}

/// pingora puts a 64 KiB read buffer in front of every client socket for
/// the life of the connection, most of an idle keep-alive connection's
/// memory. Its own header and body buffers already read in large chunks,
/// so sekisho reads the socket directly (bench/README.md has the numbers).
fn l4_buffer() -> L4BufferSettings {
    L4BufferSettings::new(0, pingora::listeners::DEFAULT_L4_WRITE_BUFFER_SIZE)
}

fn to_tokio(l: &TcpListener) -> Option<tokio::net::TcpListener> {
    l.try_clone().ok().and_then(|l| tokio::net::TcpListener::from_std(l).ok())
}

fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    let l = TcpListener::bind(addr).map_err(|e| StartError::Bind(addr, e))?;
    l.set_nonblocking(true).map_err(|e| StartError::Bind(addr, e))?;
    Ok(l)
}

/// Configured token hashes, or the bootstrap token (created on first start).
fn admin_tokens(config: &Config) -> Result<Vec<AdminToken>, StartError> {
    if !config.admin.tokens.is_empty() {
        return Ok(config.admin.tokens.clone());
    }
    let Some(file) = &config.admin.bootstrap_token_file else { return Ok(Vec::new()) };
    let token = match std::fs::read_to_string(file) {
        Ok(t) => t.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let t = crate::config::hex(&rand::random::<[u8; 32]>());
            crate::tls::write(file, t.as_bytes(), 0o600)?;
            println!("created an admin token (all roles) in {}", file.display());
            t
        }
        Err(e) => return Err(StartError::Io(file.display().to_string(), e)),
    };
    let sha256: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    Ok(vec![AdminToken { name: "bootstrap".into(), roles: Role::ALL.to_vec(), sha256 }])
}

fn announce(config: &Config) {
    if let Some(a) = config.https {
        println!("sekisho: gateway on https://{a}");
    }
    if let Some(a) = config.http {
        println!("sekisho: gateway on http://{a}");
    }
    let scheme = if config.admin.tls.is_some() { "https" } else { "http" };
    println!("sekisho: admin API on {scheme}://{}", config.admin.listen);
    if let Some(a) = config.demo_upstream {
        println!("sekisho: demo upstream on http://{a} (host demo.localhost)");
    }
    println!("sekisho: audit log {}", config.audit_log.display());
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

fn display_dir(p: &Path) -> String {
    p.parent().map_or_else(|| ".".into(), |d| d.display().to_string())
}
