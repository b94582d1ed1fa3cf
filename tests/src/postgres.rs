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

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
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

/// Paths of the PostgreSQL binaries, all from one installation.
#[derive(Debug, Clone)]
struct PgBins {
    initdb: PathBuf,
    pg_ctl: PathBuf,
    psql: Option<PathBuf>,
    pg_isready: Option<PathBuf>,
}

impl PgBins {
    /// Look for `initdb`, `pg_ctl` and `postgres` side by side: first on
    /// `PATH`, then in `/usr/lib/postgresql/<newest version>/bin`.
    fn find() -> Result<PgBins> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        Self::find_in(&path, Path::new("/usr/lib/postgresql"))
    }

    /// [`PgBins::find`] with an explicit search `path` and versioned `lib_root`.
    fn find_in(path: &std::ffi::OsStr, lib_root: &Path) -> Result<PgBins> {
        let mut server_dirs: Vec<PathBuf> = Vec::new();
        if let Some(initdb) = which_in("initdb", path) {
            // Follow symlinks (e.g. /usr/local/bin/initdb -> .../15/bin/initdb)
            // so we also find client tools next to the real binaries.
            if let Ok(real) = fs::canonicalize(&initdb) {
                server_dirs.extend(real.parent().map(Path::to_path_buf));
            }
            server_dirs.extend(initdb.parent().map(Path::to_path_buf));
        }
        server_dirs.extend(versioned_bin_dirs(lib_root));

        let server_dir = server_dirs
            .iter()
            .find(|d| {
                ["initdb", "pg_ctl", "postgres"]
                    .iter()
                    .all(|b| is_executable(&d.join(b)))
            })
            .ok_or_else(|| {
                anyhow!(
                    "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH \
                     or under /usr/lib/postgresql/*/bin; install them with: {INSTALL_HINT}"
                )
            })?
            .clone();

        // Client tools: prefer the same installation, then PATH.
        let client = |name: &str| {
            server_dirs
                .iter()
                .map(|d| d.join(name))
                .find(|p| is_executable(p))
                .or_else(|| which_in(name, path))
        };
        Ok(PgBins {
            initdb: server_dir.join("initdb"),
            pg_ctl: server_dir.join("pg_ctl"),
            psql: client("psql"),
            pg_isready: client("pg_isready"),
        })
    }

    fn psql(&self) -> Result<&Path> {
        self.psql.as_deref().ok_or_else(|| {
            anyhow!("psql not found on PATH or under /usr/lib/postgresql/*/bin; install it with: {INSTALL_HINT}")
        })
    }
}

/// `<root>/<version>/bin` directories, newest version first.
fn versioned_bin_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut versions: Vec<(Vec<u32>, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let key = parse_version(&name)?;
            Some((key, e.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, p)| p).collect()
}

/// `"15"` -> `[15]`, `"9.6"` -> `[9, 6]`; anything else -> `None`.
fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|p| p.parse().ok()).collect()
}

fn which(name: &str) -> Option<PathBuf> {
    which_in(name, &std::env::var_os("PATH")?)
}

fn which_in(name: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    std::env::split_paths(path)
        .filter(|d| !d.as_os_str().is_empty())
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Effective uid is 0, read from `/proc/self/status` (fallback: `id -u`).
fn running_as_root() -> bool {
    if let Ok(status) = fs::read_to_string("/proc/self/status")
        && let Some(euid) = parse_euid(&status)
    {
        return euid == 0;
    }
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Second field of the `Uid:` line (real, effective, saved, filesystem).
fn parse_euid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// An existing non-root account to run the server as.
fn unprivileged_user() -> Result<String> {
    for user in ["postgres", "nobody"] {
        let uid = Command::new("id")
            .args(["-u", user])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .parse::<u32>()
                    .ok()
            });
        if matches!(uid, Some(u) if u != 0) {
            return Ok(user.to_string());
        }
    }
    bail!(
        "running as root and neither a `postgres` nor a `nobody` user exists to run PostgreSQL as; \
         install the server (which creates `postgres`) with: {INSTALL_HINT}"
    )
}

/// A fresh temporary directory. When the server will run as another user,
/// every ancestor must be searchable by it, so fall back to `/tmp` when the
/// default temp dir (e.g. `$TMPDIR` under `/root`) is not. The path is kept
/// short (the Unix socket path inside it is limited to ~107 bytes) and free of
/// whitespace (it is passed through `pg_ctl -o`, which a shell splits).
fn make_temp_dir(for_other_user: bool) -> Result<TempDir> {
    let mut base = std::env::temp_dir();
    let awkward =
        base.as_os_str().len() > 60 || base.to_string_lossy().contains(char::is_whitespace);
    if awkward || (for_other_user && !world_searchable(&base)) {
        base = PathBuf::from("/tmp");
    }
    tempfile::Builder::new()
        .prefix("memtrace-pg-")
        .tempdir_in(&base)
        .with_context(|| format!("creating a temporary directory in {}", base.display()))
}

fn world_searchable(dir: &Path) -> bool {
    dir.ancestors().all(|a| {
        a.as_os_str().is_empty()
            || fs::metadata(a)
                .map(|m| m.permissions().mode() & 0o001 != 0)
                .unwrap_or(false)
    })
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

/// Bind `127.0.0.1:0`, note the port the kernel picked, release it.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Run to completion; a non-zero exit is an error carrying stdout and stderr.
fn run(cmd: &mut Command, what: &str) -> Result<Output> {
    let out = cmd
        .output()
        .with_context(|| format!("{what}: failed to execute {cmd:?}"))?;
    if !out.status.success() {
        let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if stderr.len() > 8000 {
            stderr.truncate(8000);
        }
        bail!(
            "{what} failed ({}): {cmd:?}\nstdout:\n{}\nstderr:\n{stderr}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        for v in ["9.6", "15", "16", "notaversion", "13"] {
            fs::create_dir_all(dir.path().join(v).join("bin")).unwrap();
        }
        let got: Vec<String> = versioned_bin_dirs(dir.path())
            .iter()
            .map(|p| {
                p.parent()
                    .unwrap()
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(got, ["16", "15", "13", "9.6"]);
    }

    #[test]
    fn missing_binaries_say_what_to_install() {
        let empty = tempfile::tempdir().unwrap();
        let err = PgBins::find_in(empty.path().as_os_str(), empty.path()).unwrap_err();
        assert!(
            err.to_string().contains("apt-get install -y postgresql"),
            "{err}"
        );
    }

    #[test]
    fn binaries_found_under_newest_versioned_dir() {
        let root = tempfile::tempdir().unwrap();
        for v in ["13", "16"] {
            let bin = root.path().join(v).join("bin");
            fs::create_dir_all(&bin).unwrap();
            for b in ["initdb", "pg_ctl", "postgres", "psql"] {
                fs::write(bin.join(b), "#!/bin/sh\n").unwrap();
                fs::set_permissions(bin.join(b), fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        let bins = PgBins::find_in(std::ffi::OsStr::new(""), root.path()).unwrap();
        assert_eq!(bins.initdb, root.path().join("16/bin/initdb"));
        assert_eq!(bins.psql, Some(root.path().join("16/bin/psql")));
        assert_eq!(bins.pg_isready, None);
    }

    #[test]
    fn euid_is_the_second_uid_field() {
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t1\t1\t1\t1\n";
        assert_eq!(parse_euid(status), Some(0));
        assert_eq!(parse_euid("Uid:\t0\t1000\t1000\t1000\n"), Some(1000));
        assert_eq!(parse_euid("nothing"), None);
    }

    #[test]
    fn database_names_are_plain_identifiers() {
        assert!(validate_db_name("alpha_1").is_ok());
        assert!(validate_db_name("_x").is_ok());
        assert!(validate_db_name("").is_err());
        assert!(validate_db_name("1abc").is_err());
        assert!(validate_db_name("a\"; DROP").is_err());
        assert!(validate_db_name(&"a".repeat(64)).is_err());
    }
}
