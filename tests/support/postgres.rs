//! A throwaway PostgreSQL cluster per test: Debian's `initdb` into a temp
//! directory and `pg_ctl` on a free loopback port, run as `nobody` when the
//! tests run as root (PostgreSQL refuses root), with password (SCRAM)
//! authentication so the gateway's password file is exercised. A test can
//! kill it (`pg_ctl stop -m immediate`), start it again, and terminate
//! backends. Where PostgreSQL cannot be started the test fails with a
//! clear message; `SEKISHO_SKIP_POSTGRES=1` at build time marks these
//! tests ignored instead (see `build.rs`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const USER: &str = "sekisho";
pub const PASSWORD: &str = "pg-test-password-0123456789";

pub struct Cluster {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// `nobody` when running as root.
    as_user: Option<&'static str>,
    tls: bool,
}

impl Cluster {
    /// A new cluster, started. Panics (fails the test) with the reason when
    /// PostgreSQL is missing or does not start.
    pub fn start() -> Cluster {
        Cluster::create(false)
    }

    /// A cluster that also accepts TLS, with a certificate for 127.0.0.1
    /// signed by the CA at [`Cluster::ca_path`].
    pub fn start_with_tls() -> Cluster {
        Cluster::create(true)
    }

    fn create(tls: bool) -> Cluster {
        let bin = find_bin();
        let as_user = is_root().then_some("nobody");
        let dir = tempfile::Builder::new().prefix("sekisho-pg").tempdir().unwrap();
        let port = super::free_port();
        let cluster = Cluster { port, dir, bin, as_user, tls };
        std::fs::write(cluster.path("pwfile"), PASSWORD).unwrap();
        std::fs::write(cluster.password_file(), format!("{PASSWORD}\n")).unwrap();
        cluster.give_away(cluster.dir.path());
        let data = cluster.path("data");
        let init = cluster.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                USER,
                "--pwfile",
                cluster.path("pwfile").to_str().unwrap(),
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
            ],
        );
        assert!(init.status.success(), "initdb failed: {}", String::from_utf8_lossy(&init.stderr));
        if tls {
            cluster.write_tls();
        }
        cluster.restart();
        cluster
    }

    /// Starts the (stopped) cluster and waits until it accepts connections.
    pub fn restart(&self) {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        if self.tls {
            options.push_str(" -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key");
        }
        let log = self.path("postgres.log");
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                self.path("data").to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "-o",
                &options,
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "PostgreSQL did not start: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// `pg_ctl stop -m immediate`: every backend is killed at once, as in a crash.
    pub fn kill(&self) {
        self.stop("immediate");
    }

    /// The signal `pg_ctl stop -m immediate` sends (SIGQUIT to the
    /// postmaster), sent at once; then waits until the cluster is down.
    pub fn kill_quick(&self) {
        let pid = std::fs::read_to_string(self.path("data/postmaster.pid")).unwrap();
        let pid = pid.lines().next().unwrap().trim().to_owned();
        assert!(Command::new("kill").args(["-QUIT", &pid]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.path("data/postmaster.pid").exists() {
            assert!(Instant::now() < deadline, "PostgreSQL did not stop");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn stop(&self, mode: &str) {
        let out = self.run("pg_ctl", &["-D", self.path("data").to_str().unwrap(), "-m", mode, "-w", "stop"]);
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The connection URL (no password: the gateway reads it from a file).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{database}", self.port)
    }

    pub fn password_file(&self) -> PathBuf {
        self.path("password")
    }

    /// The CA that signed the server's certificate (a TLS cluster).
    pub fn ca_path(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// The `[store]` section for a gateway on `database` of this cluster.
    pub fn store_section(&self, database: &str) -> String {
        format!(
            "\n[store]\nbackend = \"postgres\"\nurl = \"{}\"\npassword_file = \"{}\"\ntimeout_secs = 2\n",
            self.url(database),
            self.password_file().display()
        )
    }

    /// A client of the test's own (superuser) on `database`.
    pub async fn client(&self, database: &str) -> tokio_postgres::Client {
        let url = format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{database}", self.port);
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client
    }

    pub async fn create_database(&self, name: &str) {
        self.client("postgres").await.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    }

    /// Kills, from the database side, every connection whose
    /// `application_name` ends with `suffix`; returns how many.
    pub async fn terminate(&self, suffix: &str) -> usize {
        let rows = self
            .client("postgres")
            .await
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE '%' || $1",
                &[&suffix],
            )
            .await
            .unwrap();
        rows.len()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("postgres.log")).unwrap_or_default()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Runs a PostgreSQL program, as `nobody` when root.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(program);
        let mut cmd = match self.as_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(args).current_dir(self.dir.path());
        cmd.output().unwrap_or_else(|e| panic!("cannot run `{}`: {e}", exe.display()))
    }

    /// Hands a path to the unprivileged user that runs PostgreSQL.
    fn give_away(&self, path: &Path) {
        if let Some(user) = self.as_user {
            let out = Command::new("chown").args(["-R", &format!("{user}:")]).arg(path).output().unwrap();
            assert!(out.status.success(), "chown: {}", String::from_utf8_lossy(&out.stderr));
        }
    }

    fn write_tls(&self) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca_cert, &ca_key)
            .unwrap();
        std::fs::write(self.ca_path(), ca_cert.pem()).unwrap();
        let data = self.path("data");
        std::fs::write(data.join("server.crt"), cert.pem()).unwrap();
        std::fs::write(data.join("server.key"), key.serialize_pem()).unwrap();
        let chmod = Command::new("chmod").arg("0600").arg(data.join("server.key")).status().unwrap();
        assert!(chmod.success());
        self.give_away(&data);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.path("data");
        if data.join("postmaster.pid").exists() {
            let _ = self.run("pg_ctl", &["-D", data.to_str().unwrap_or_default(), "-m", "immediate", "stop"]);
        }
    }
}

/// Waits until `check` holds, for at most `limit`.
pub async fn eventually(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The newest installed PostgreSQL's programs.
fn find_bin() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL could not be started: no /usr/lib/postgresql/*/bin/initdb. \
             Install Debian's `postgresql` package (`scripts/test` does), or build the tests with \
             SEKISHO_SKIP_POSTGRES=1 to mark them ignored"
        ),
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}
