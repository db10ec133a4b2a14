//! Start-up: load and check everything that can be wrong (config, TLS
//! files, rules, store, ports) before serving, so a mistake stops the
//! gateway with a clear message instead of a silently missing listener;
//! then run the request path's workers, and on the main thread the admin
//! API, the demo upstream, the store watcher and the signals (SIGHUP
//! reloads the rules, SIGQUIT hands the sockets to a new process and
//! drains, SIGTERM and SIGINT drain and stop); the audit log is flushed on
//! the way out.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::config::{AdminToken, Config, Role};
use crate::control::admin::Admin;
use crate::control::audit::AuditLog;
use crate::control::store::AuditEntry;
use crate::control::writer::Writer;
use crate::gateway::{Gateway, Listeners, Settings};
use crate::handover::Sockets;
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
    #[error("graceful upgrade: {0}")]
    Handover(std::io::Error),
    #[error("`{0}`: {1}")]
    Io(String, std::io::Error),
    #[error(transparent)]
    Audit(#[from] crate::control::audit::AuditError),
    #[error("{0}")]
    Clock(String),
}

/// How long a new process waits for the running one's sockets.
const HANDOVER_WAIT: Duration = Duration::from_secs(60);

/// Runs the gateway. With `upgrade`, every listening socket comes from the
/// running process (sent when it gets SIGQUIT); without, they are bound here.
pub fn run(config_path: &Path, upgrade: bool) -> Result<(), StartError> {
    let config = Config::load(config_path)?;
    crate::control::doctor::clock_at_start(&config.clock).map_err(StartError::Clock)?;
    std::fs::create_dir_all(&config.data_dir).map_err(|e| StartError::Io(config.data_dir.display().to_string(), e))?;
    let tokens = admin_tokens(&config)?;
    let server_tls = server_tls(&config)?;
    let (rules, upstreams) = load_rules(&config.rules_dir)?;
    let (store, state, position) = crate::control::backend::start(&config.store)?;
    let audit = Arc::new(AuditLog::open(crate::control::audit::AuditSettings {
        path: config.audit_log.clone(),
        replica: config.replica_id.clone(),
        keep: config.audit.clone(),
    })?);
    let shared = Arc::new(Shared::new(rules, upstreams, state));
    let writer = Arc::new(Writer::new(store, shared.clone(), position, config.state_max_age));
    let metrics = Arc::new(Metrics::default());
    let limits = Arc::new(Limiters::new(&config.limits));
    let admin_tls = config.admin.tls.as_ref().map(|(cert, key)| crate::tls::acceptor(cert, key)).transpose()?;
    let device_ca = config
        .tls
        .device_ca
        .as_ref()
        .map(|(cert, key)| crate::device::ca::DeviceCa::load(cert, key))
        .transpose()?
        .map(Arc::new);
    let server_ca_der = config.tls.server_ca.as_deref().map(crate::tls::first_certificate_der).transpose()?;
    let handover_path = config.data_dir.join("upgrade.sock");
    let sockets = match upgrade {
        true => crate::handover::receive(&handover_path, HANDOVER_WAIT).map_err(StartError::Handover)?,
        false => bind_all(&config)?,
    };
    // Copies of every socket, kept to hand over on SIGQUIT.
    let kept = sockets.try_clone().map_err(StartError::Handover)?;
    let gateway = Arc::new(Gateway::new(
        shared.clone(),
        audit.clone(),
        metrics.clone(),
        limits.clone(),
        settings(&config),
        server_tls.map(tokio_rustls::TlsAcceptor::from),
    ));
    let listeners = Listeners { https: sockets.https, http: sockets.http };
    let running = crate::gateway::start(gateway, listeners, config.threads)
        .map_err(|e| StartError::Io("worker threads".into(), e))?;
    let admin = Arc::new(Admin {
        shared,
        writer,
        audit: audit.clone(),
        metrics,
        limits,
        device_ca,
        tokens,
        rules_dir: config.rules_dir.clone(),
        device_cert_days: config.tls.device_cert_days,
        server_ca_der,
        enrollments: std::sync::Mutex::default(),
        console: crate::control::console::Console::new(&config.admin.console, config.admin.tls.is_some()),
        health: Arc::default(),
    });
    announce(&config);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StartError::Io("runtime".into(), e))?;
    let control = Control {
        admin,
        admin_listener: sockets.admin,
        admin_tls,
        demo_listener: sockets.demo,
        doctor: config.clone(),
    };
    runtime.block_on(control.run(upgrade, &handover_path, &kept, running));
    audit.close();
    Ok(())
}

/// The request path's settings from the configuration.
fn settings(config: &Config) -> Settings {
    let header = Duration::from_secs(config.limits.header_timeout_secs.get().into());
    Settings {
        keepalive: Duration::from_secs(config.keepalive_secs),
        header_timeout: header,
        handshake_timeout: header,
        body_idle: Duration::from_secs(config.limits.body_idle_secs.get().into()),
        min_body_rate: config.limits.min_body_rate.get().into(),
        state_max_age: config.state_max_age,
        rejudge: config.rejudge,
        min_send_rate: config.limits.min_send_rate.get().into(),
        send_window: Duration::from_secs(config.limits.send_window_secs.get().into()),
        connections_per_client: config.limits.connections_per_client.get(),
        wire: crate::gateway::wire::Limits::default(),
    }
}

/// The client-facing TLS configuration (creating development certificates
/// on a first start when told to).
fn server_tls(config: &Config) -> Result<Option<Arc<rustls::ServerConfig>>, StartError> {
    if config.https.is_none() {
        return Ok(None);
    }
    if config.tls.generate_dev_certs && crate::tls::ensure_dev_certs(&config.tls.cert, &config.tls.key)? {
        println!("created a development CA and server certificate under {}", display_dir(&config.tls.cert));
    }
    if let (true, Some((cert, key))) = (config.tls.generate_dev_certs, &config.tls.device_ca) {
        if !cert.exists() && !key.exists() {
            crate::device::ca::init(cert, key)?;
            println!("created a development device CA: {}", cert.display());
        }
    }
    let device_ca = config.tls.device_ca.as_ref().map(|(cert, _)| cert.as_path());
    Ok(Some(crate::tls::server_config(&config.tls.cert, &config.tls.key, device_ca)?))
}

/// Binds every port, after checking that no other process holds one (the
/// request path's sockets share their port between workers, so a second
/// gateway on the same port must be refused here).
fn bind_all(config: &Config) -> Result<Sockets, StartError> {
    let mut exclusive = Vec::new();
    for addr in [config.https, config.http, Some(config.admin.listen), config.demo_upstream].into_iter().flatten() {
        exclusive.push(TcpListener::bind(addr).map_err(|e| StartError::Bind(addr, e))?);
    }
    drop(exclusive);
    let workers = |addr: Option<SocketAddr>| -> Result<Vec<TcpListener>, StartError> {
        addr.map_or(Ok(Vec::new()), |a| crate::gateway::bind(a, config.threads).map_err(|e| StartError::Bind(a, e)))
    };
    let plain = |addr: SocketAddr| {
        let l = TcpListener::bind(addr).map_err(|e| StartError::Bind(addr, e))?;
        l.set_nonblocking(true).map_err(|e| StartError::Bind(addr, e))?;
        Ok::<_, StartError>(l)
    };
    Ok(Sockets {
        https: workers(config.https)?,
        http: workers(config.http)?,
        admin: Some(plain(config.admin.listen)?),
        demo: config.demo_upstream.map(plain).transpose()?,
    })
}

/// The control plane's tasks on the main thread.
struct Control {
    admin: Arc<Admin>,
    admin_listener: Option<TcpListener>,
    admin_tls: Option<tokio_rustls::TlsAcceptor>,
    demo_listener: Option<TcpListener>,
    /// For the periodic health checks (`sekisho doctor` in the gateway).
    doctor: Config,
}

impl Control {
    /// Serves until a signal says to stop; returns once the request path
    /// drained and the admin API finished the requests in hand.
    async fn run(self, upgraded: bool, handover: &Path, kept: &Sockets, running: crate::gateway::Running) {
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        if upgraded {
            // The old process may have written until it handed over.
            if let Err(e) = self.admin.writer.confirm().await {
                log::error!("upgrade: the state could not be confirmed against the store: {e}");
            }
        }
        tokio::spawn(crate::control::follower::follow(self.admin.writer.clone(), shutdown.clone()));
        self.operations();
        let header_timeout = Duration::from_secs(self.doctor.limits.header_timeout_secs.get().into());
        let admin_api = self.admin_listener.and_then(to_tokio).map(|l| {
            tokio::spawn(crate::control::admin::serve(
                self.admin.clone(),
                l,
                self.admin_tls,
                header_timeout,
                shutdown.clone(),
            ))
        });
        if let Some(l) = self.demo_listener.and_then(to_tokio) {
            tokio::spawn(crate::demo::serve(l, shutdown.clone()));
        }
        tokio::spawn(reload_on_hangup(self.admin.clone(), shutdown.clone()));
        tokio::spawn(prune_limits(self.admin.clone(), shutdown));
        wait_for_stop(handover, kept).await;
        crate::notify::send("STOPPING=1");
        let _ = stop.send(true);
        let drained = tokio::task::spawn_blocking(move || running.drain(crate::gateway::conn::DRAIN_GRACE));
        let _ = drained.await;
        if let Some(api) = admin_api {
            let _ = api.await;
        }
    }
}

impl Control {
    /// What operators and systemd see: the audit log reopened on SIGUSR1,
    /// the periodic health checks, sd_notify readiness and the watchdog
    /// (pinged while requests can be judged and recorded).
    fn operations(&self) {
        tokio::spawn(crate::control::audit::reopen_on_signal(self.admin.audit.clone()));
        let every = Duration::from_secs(300);
        tokio::spawn(crate::control::doctor::watch(self.doctor.clone(), self.admin.health.clone(), every));
        // Every socket is bound and listening, and the workers run.
        crate::notify::ready();
        if let Some(every) = crate::notify::watchdog_interval() {
            let (admin, max_age) = (self.admin.clone(), self.doctor.state_max_age);
            let healthy = move || admin.audit.healthy() && admin.shared.fresh(chrono::Utc::now(), max_age);
            tokio::spawn(crate::notify::watchdog(every, healthy));
        }
    }
}

/// Waits for SIGTERM or SIGINT (stop), or SIGQUIT (hand the sockets to the
/// new process waiting at `handover`, then stop). A failed hand-over keeps
/// this process serving.
async fn wait_for_stop(handover: &Path, kept: &Sockets) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut quit)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::quit()))
    else {
        log::error!("cannot listen for signals; stopping");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = quit.recv() => match crate::handover::send(handover, kept) {
                Ok(()) => {
                    log::warn!("sockets handed to the new process; draining");
                    return;
                }
                Err(e) => log::error!("graceful upgrade failed, this process keeps serving: {e}"),
            },
        }
    }
}

async fn reload_on_hangup(admin: Arc<Admin>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
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
            // A signal carries no approver: `sekisho admin reload` records one.
            reason: "reloaded on SIGHUP (no approver recorded)".into(),
            source: "local".into(),
            approver: None,
        };
        crate::notify::reloading();
        match admin.writer.reload_rules(&admin.rules_dir, entry).await {
            Ok(n) => log::warn!("rules reloaded on SIGHUP: {n} profiles"),
            Err(e) => log::error!("rules not reloaded on SIGHUP, the running rules stay: {e}"),
        }
        crate::notify::send("READY=1");
    }
}

/// governor's keyed maps keep every key they saw until pruned.
async fn prune_limits(admin: Arc<Admin>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(Duration::from_secs(60)) => admin.limits.prune(),
        }
    }
}

fn to_tokio(l: TcpListener) -> Option<tokio::net::TcpListener> {
    l.set_nonblocking(true).ok()?;
    tokio::net::TcpListener::from_std(l).ok()
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
    Ok(vec![AdminToken { name: "bootstrap".into(), roles: Role::ALL.to_vec(), sha256, department: None }])
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

fn display_dir(p: &Path) -> String {
    p.parent().map_or_else(|| ".".into(), |d| d.display().to_string())
}
