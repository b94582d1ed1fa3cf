//! A real, throw-away PostgreSQL server for tests.
//!
//! [`PgServer::start`] runs `initdb` into a fresh temporary directory and
//! starts `postgres` on `127.0.0.1` on a free port, with its Unix socket inside
//! that directory, so any number of servers can run side by side (nextest runs
//! every test in its own process). Durability is switched off for speed.
//! Authentication is `trust`: the server only listens on loopback.
//!
//! PostgreSQL refuses to run as root. When the tests run as root, `initdb` and
//! `pg_ctl` run as an existing unprivileged user (`postgres` if the Debian
//! package created it, else `nobody`) via `runuser` (or `su`), and the temporary
//! directory is handed to that user. Nothing is created system-wide.
//!
//! Missing binaries are an error that says what to install, never a skip.
//!
//! Dropping the [`PgServer`] stops the server (`pg_ctl stop -m immediate`, then
//! `kill -KILL` of the postmaster). A small watchdog shell process also stops
//! it if the test process dies without running `Drop` (e.g. a timeout kill).
//!
//! Layout: this module holds [`PgServer`] (start, URLs, `psql`, stop);
//! `bins` finds the PostgreSQL binaries, `os` holds the operating-system
//! helpers (root detection, the unprivileged user, temporary directories,
//! free ports, running commands).

mod bins;
mod os;

#[cfg(test)]
mod tests;

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bins::{PgBins, which};
use os::{free_port, make_temp_dir, run, running_as_root, unprivileged_user};
use tempfile::TempDir;

/// Superuser created by `initdb`; every URL connects as this role.
pub const SUPERUSER: &str = "memtrace";
/// Database created by [`PgServer::start`]; [`PgServer::url`] points at it.
pub const DEFAULT_DATABASE: &str = "memtrace";

const INSTALL_HINT: &str = "apt-get install -y postgresql";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const START_ATTEMPTS: usize = 5;

/// A running PostgreSQL server owned by one test; stopped on drop.
pub struct PgServer {
    bins: PgBins,
    /// `Some(user)` when the server runs as that user because we are root.
    run_as: Option<String>,
    port: u16,
    data_dir: PathBuf,
    log_file: PathBuf,
    watchdog: Option<Child>,
    /// Declared last: removed only after `Drop::drop` stopped the server.
    dir: TempDir,
}

impl std::fmt::Debug for PgServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgServer")
            .field("port", &self.port)
            .field("data_dir", &self.data_dir)
            .field("run_as", &self.run_as)
            .finish_non_exhaustive()
    }
}

impl PgServer {
    /// Initialise a cluster in a fresh temporary directory, start it on
    /// `127.0.0.1:<free port>`, wait until it accepts connections and create
    /// [`DEFAULT_DATABASE`].
    pub fn start() -> Result<PgServer> {
        let bins = PgBins::find()?;
        let run_as = if running_as_root() {
            Some(unprivileged_user()?)
        } else {
            None
        };
        let dir = make_temp_dir(run_as.is_some())?;
        if let Some(user) = &run_as {
            // The directory is 0700 and owned by root; hand it over.
            let mut chown = Command::new("chown");
            chown.arg(format!("{user}:")).arg(dir.path());
            run(&mut chown, "chown of the temporary directory")?;
        }
        let data_dir = dir.path().join("data");

        let mut server = PgServer {
            bins,
            run_as,
            port: 0,
            data_dir,
            log_file: dir.path().join("postgres.log"),
            watchdog: None,
            dir,
        };
        // From here on, `Drop` (or the watchdog) cleans up whatever failed.
        server.watchdog = Some(server.spawn_watchdog()?);
        server.initdb()?;
        server.start_postmaster()?;
        server.wait_ready()?;
        server
            .fresh_database(DEFAULT_DATABASE)
            .context("creating the default database")?;
        Ok(server)
    }

    /// URL of [`DEFAULT_DATABASE`]: `postgres://memtrace@127.0.0.1:PORT/memtrace`.
    pub fn url(&self) -> String {
        self.database_url(DEFAULT_DATABASE)
    }

    /// URL of database `name` on this server (which need not exist).
    pub fn database_url(&self, name: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{name}", self.port)
    }

    /// TCP port the server listens on (on 127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Create a new, empty database and return its URL. `name` must be a plain
    /// identifier (`[A-Za-z_][A-Za-z0-9_]*`, at most 63 bytes) and must not
    /// exist yet.
    pub fn fresh_database(&self, name: &str) -> Result<String> {
        validate_db_name(name)?;
        self.psql(
            &self.database_url("postgres"),
            &format!("CREATE DATABASE \"{name}\""),
        )
        .with_context(|| format!("creating database {name:?}"))?;
        Ok(self.database_url(name))
    }

    /// Run `sql` with `psql` against `url` and return its output, unaligned
    /// and without headers (`psql -X -A -t`): one line per row, columns
    /// separated by `|`. Fails if any statement fails.
    pub fn psql(&self, url: &str, sql: &str) -> Result<String> {
        let psql = self.bins.psql()?;
        let mut cmd = Command::new(psql);
        cmd.args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null());
        let out = run(&mut cmd, "psql")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The server log so far (for diagnostics in failing tests).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    fn initdb(&self) -> Result<()> {
        let mut cmd = self.server_command(&self.bins.initdb);
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args([
                "--username",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .env("LC_ALL", "C");
        run(&mut cmd, "initdb")?;
        Ok(())
    }

    /// Start the postmaster on a free port; retry with another port if
    /// someone grabbed ours between probing and binding.
    fn start_postmaster(&mut self) -> Result<()> {
        let mut last_err = None;
        for attempt in 1..=START_ATTEMPTS {
            self.port = free_port()?;
            self.log_file = self.dir.path().join(format!("postgres-{attempt}.log"));
            let options = format!(
                "-p {port} -c listen_addresses=127.0.0.1 -k {sock} -c fsync=off \
                 -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=16MB",
                port = self.port,
                sock = self.dir.path().display(),
            );
            let mut cmd = self.server_command(&self.bins.pg_ctl);
            cmd.arg("start")
                .arg("-D")
                .arg(&self.data_dir)
                .arg("-l")
                .arg(&self.log_file)
                .args([
                    "-w",
                    "-t",
                    &READY_TIMEOUT.as_secs().to_string(),
                    "-o",
                    &options,
                ]);
            match run(&mut cmd, "pg_ctl start") {
                Ok(_) => return Ok(()),
                Err(e) => {
                    let log = self.log();
                    if log.contains("Address already in use") && attempt < START_ATTEMPTS {
                        last_err = Some(e);
                        continue;
                    }
                    return Err(e.context(format!("server log:\n{log}")));
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("could not start postgres")))
    }

    /// Poll until the server accepts TCP connections and (when available)
    /// `pg_isready` agrees.
    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            let tcp_ok = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok();
            let ready = tcp_ok
                && match &self.bins.pg_isready {
                    None => true,
                    Some(pg_isready) => Command::new(pg_isready)
                        .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                        .args(["-U", SUPERUSER, "-d", "postgres", "-t", "2"])
                        .stdin(Stdio::null())
                        .status()
                        .map(|s| s.success())
                        .unwrap_or(false),
                };
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "postgres on 127.0.0.1:{} not ready after {:?}; server log:\n{}",
                    self.port,
                    READY_TIMEOUT,
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Background `sh` that, once this test process is gone without having
    /// run `Drop` (e.g. killed on timeout), sends SIGQUIT (immediate shutdown)
    /// to the postmaster and removes the temporary directory. `Drop` kills it.
    fn spawn_watchdog(&self) -> Result<Child> {
        let script = r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done
pid=$(head -n 1 "$2/postmaster.pid" 2>/dev/null)
if [ -n "$pid" ]; then
  kill -QUIT "$pid" 2>/dev/null && sleep 3
  kill -KILL "$pid" 2>/dev/null
fi
# initdb may still be writing into the directory: retry until it is gone.
for i in 1 2 3 4 5; do rm -rf "$3" 2>/dev/null; [ -e "$3" ] || break; sleep 1; done"#;
        let child = Command::new("sh")
            .args(["-c", script, "memtrace-pg-watchdog"])
            .arg(std::process::id().to_string())
            .arg(&self.data_dir)
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning the watchdog shell")?;
        Ok(child)
    }

    fn postmaster_pid(&self) -> Result<u32> {
        let text = fs::read_to_string(self.data_dir.join("postmaster.pid"))?;
        let first = text.lines().next().unwrap_or_default().trim();
        first
            .parse()
            .with_context(|| format!("bad postmaster.pid first line {first:?}"))
    }

    /// A command that runs `program` as the server's OS user.
    fn server_command(&self, program: &Path) -> Command {
        let mut cmd = match &self.run_as {
            None => Command::new(program),
            Some(user) if which("runuser").is_some() => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(program);
                c
            }
            Some(user) => {
                // `su -c CMD -- USER ARGS...` passes ARGS to the shell as $0, $1,
                // ...; `--` stops su from parsing ARGS as its own options.
                let mut c = Command::new("su");
                c.args(["-s", "/bin/sh", "-c", "exec \"$0\" \"$@\"", "--", user])
                    .arg(program);
                c
            }
        };
        // The unprivileged user may not be able to enter our working directory.
        cmd.current_dir(self.dir.path()).stdin(Stdio::null());
        cmd
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // No postmaster.pid: the server never started (or already stopped).
        if let Ok(pid) = self.postmaster_pid() {
            let mut stop = self.server_command(&self.bins.pg_ctl);
            stop.arg("stop")
                .arg("-D")
                .arg(&self.data_dir)
                .args(["-m", "immediate", "-w", "-t", "10"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let stopped = stop.status().map(|s| s.success()).unwrap_or(false);
            if !stopped {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
                // Let the postmaster die before its directory is removed.
                thread::sleep(Duration::from_millis(200));
            }
        }
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

fn validate_db_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !first_ok || !rest_ok || name.len() > 63 {
        bail!("invalid database name {name:?}: use [A-Za-z_][A-Za-z0-9_]*, at most 63 bytes");
    }
    Ok(())
}
