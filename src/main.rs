//! The `sekisho` command: serve (the default), check-config, the admin
//! client, the device agent helpers, and token hashing. Each subcommand
//! prints a clear error and exits non-zero on failure; none panics.

use sekisho::device::{agent, ca};
use sekisho::{admin_client, audit_cli, config, serve, shared};

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// glibc malloc was 18% of the proxy's CPU under load (bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use sha2::{Digest, Sha256};

#[derive(Parser)]
#[command(name = "sekisho", version, about = "An access gateway that enforces municipal cloud-use rules")]
struct Cli {
    /// Gateway configuration file.
    #[arg(long, global = true, default_value = "sekisho.toml", env = "SEKISHO_CONFIG")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Serve {
        /// Take the listening sockets over from a running sekisho (graceful
        /// upgrade): start this, then send the old process SIGQUIT.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate the configuration and every rules file without serving.
    CheckConfig,
    /// Check this gateway host: configuration, certificates, store, audit
    /// log, upstreams, clock. Exits non-zero when any check fails.
    Doctor {
        /// The findings as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the SHA-256 of an admin token read from standard input, for `sekisho.toml`.
    HashToken,
    /// Administer a running gateway through its admin API.
    Admin(admin_client::AdminArgs),
    /// The device agent: key, registration, attestation, loopback forward proxy.
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// The device CA for client certificates.
    #[command(subcommand)]
    Ca(CaCommand),
    /// The audit trail: verify it, query it, export the signing public key.
    #[command(subcommand)]
    Audit(audit_cli::AuditCommand),
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create the device CA named by `[tls] device_ca_cert` and `device_ca_key`.
    Init,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Serve { upgrade: false }) {
        Command::Serve { upgrade } => serve::run(&cli.config, upgrade).map_err(|e| e.to_string()),
        Command::CheckConfig => check_config(&cli.config),
        Command::Doctor { json } => doctor(&cli.config, json),
        Command::HashToken => hash_token(),
        Command::Admin(args) => admin_client::run(args, &cli.config),
        Command::Agent(cmd) => agent::run(cmd),
        Command::Ca(CaCommand::Init) => ca_init(&cli.config),
        Command::Audit(cmd) => audit_cli::run(cmd, &cli.config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sekisho: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: &std::path::Path) -> Result<(), String> {
    let config = config::Config::load(path).map_err(|e| e.to_string())?;
    let (rules, _) = shared::load_rules(&config.rules_dir).map_err(|e| e.to_string())?;
    for p in rules.profiles() {
        let hosts: Vec<_> = p.routes.iter().map(|r| r.host.as_str()).collect();
        println!("ok: profile `{}` ({}) routes {}", p.name, p.title, hosts.join(", "));
    }
    println!("ok: {} is valid", path.display());
    Ok(())
}

fn doctor(path: &std::path::Path, json: bool) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let report = runtime.block_on(sekisho::control::doctor::run(path));
    match json {
        true => println!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?),
        false => print!("{}", report.render()),
    }
    match report.worst() {
        sekisho::control::doctor::Level::Error => Err("doctor found errors (FAIL above)".into()),
        _ => Ok(()),
    }
}

fn ca_init(path: &std::path::Path) -> Result<(), String> {
    let config = config::Config::load(path).map_err(|e| e.to_string())?;
    let (cert, key) = config.tls.device_ca.ok_or("set `device_ca_cert` and `device_ca_key` under [tls] first")?;
    ca::init(&cert, &key).map_err(|e| e.to_string())?;
    println!("created the device CA: {} (key {}, mode 0600)", cert.display(), key.display());
    Ok(())
}

fn hash_token() -> Result<(), String> {
    let mut token = String::new();
    std::io::stdin().read_to_string(&mut token).map_err(|e| e.to_string())?;
    let token = token.trim();
    if token.len() < 16 {
        return Err("an admin token must be at least 16 characters".into());
    }
    println!("{}", config::hex(&Sha256::digest(token.as_bytes())));
    Ok(())
}
