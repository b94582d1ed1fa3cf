//! A real, throw-away etcd server for tests.
//!
//! [`EtcdServer::start`] runs a single-member etcd (the `etcd` binary on
//! `PATH`; Debian's `etcd-server` package ships 3.4.23) on `127.0.0.1`, with
//! free client and peer ports and its data in a fresh temporary directory, so
//! any number of servers can run side by side. Readiness is etcd's own
//! `/health` endpoint answering `"health":"true"`, polled for at most
//! [`READY_TIMEOUT`].
//!
//! Failure scenarios: [`EtcdServer::stop`] (SIGTERM) and
//! [`EtcdServer::start_again`] restart on the same data and ports,
//! [`EtcdServer::wipe_and_restart`] restarts empty on the same ports (the
//! "etcd wiped" case: revisions go backwards), [`EtcdServer::freeze`] /
//! [`EtcdServer::thaw`] (SIGSTOP/SIGCONT) make etcd hang without closing any
//! connection, as a black-holed peer does.
//!
//! [`EtcdServer::start_tls`] runs it with TLS on the client port and
//! `--client-cert-auth` (certificates from [`crate::pki`]); its health is
//! then polled on a plain-HTTP metrics port.
//!
//! A missing `etcd` binary is an error that says what to install, never a
//! skip. Dropping the server kills it and removes the directory; a small
//! watchdog shell process does the same if the test process dies without
//! running `Drop` (e.g. a timeout kill), reading the current pid from a file
//! since restarts change it. etcd runs fine as root.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::pki::TestPki;
use anyhow::{Context, Result, anyhow, bail};
use tempfile::TempDir;

const INSTALL_HINT: &str = "apt-get install -y etcd-server";
/// Longest wait for a started etcd to report healthy.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for etcd to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const START_ATTEMPTS: usize = 5;

/// A running etcd owned by one test; killed on drop.
pub struct EtcdServer {
    bin: PathBuf,
    client_port: u16,
    peer_port: u16,
    /// Plain-HTTP `/health` and `/metrics` (TLS servers only).
    metrics_port: u16,
    tls: Option<TestPki>,
    data_dir: PathBuf,
    pid_file: PathBuf,
    log_file: PathBuf,
    child: Option<Child>,
    starts: usize,
    last_start: Duration,
    watchdog: Option<Child>,
    /// Declared last: removed only after `Drop::drop` killed the server.
    dir: TempDir,
}

impl std::fmt::Debug for EtcdServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdServer")
            .field("client_port", &self.client_port)
            .field("peer_port", &self.peer_port)
            .field("data_dir", &self.data_dir)
            .field("pid", &self.pid())
            .finish_non_exhaustive()
    }
}

impl EtcdServer {
    /// Start a fresh etcd on free loopback ports and wait until it is healthy.
    pub fn start() -> Result<EtcdServer> {
        Self::start_with(false)
    }

    /// [`start`](Self::start) with TLS on the client port: etcd presents a
    /// certificate for 127.0.0.1 from a fresh test CA and accepts only
    /// clients with a certificate from that CA ([`tls`](Self::tls)).
    pub fn start_tls() -> Result<EtcdServer> {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Result<EtcdServer> {
        let bin = find_etcd(&std::env::var_os("PATH").unwrap_or_default())?;
        let dir = tempfile::Builder::new()
            .prefix("memtrace-etcd-")
            .tempdir()
            .context("creating a temporary directory for etcd")?;
        let tls = if tls {
            Some(TestPki::create(dir.path(), "root")?)
        } else {
            None
        };
        let mut server = EtcdServer {
            bin,
            client_port: 0,
            peer_port: 0,
            metrics_port: 0,
            tls,
            data_dir: dir.path().join("data"),
            pid_file: dir.path().join("etcd.pid"),
            log_file: dir.path().join("etcd-0.log"),
            child: None,
            starts: 0,
            last_start: Duration::ZERO,
            watchdog: None,
            dir,
        };
        // From here on, `Drop` (or the watchdog) cleans up whatever failed.
        server.watchdog = Some(server.spawn_watchdog()?);
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            [server.client_port, server.peer_port, server.metrics_port] = free_ports()?;
            match server.launch() {
                Ok(()) => return Ok(server),
                // Someone took a port between probing and binding: new ports.
                Err(e) if server.log().contains("address already in use") => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("could not start etcd")))
    }

    /// `http://127.0.0.1:<client port>` (`https://` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The CA and client certificate of a TLS server.
    pub fn tls(&self) -> Option<&TestPki> {
        self.tls.as_ref()
    }

    /// The client port (on 127.0.0.1 only).
    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// The pid of the running etcd, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How long the last (re)start took until etcd was healthy.
    pub fn last_start_duration(&self) -> Duration {
        self.last_start
    }

    /// The log of the current (or last) run, for diagnostics.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// SIGTERM (and SIGCONT, in case it is frozen), wait until it exited;
    /// SIGKILL after [`STOP_TIMEOUT`]. A no-op when it is not running.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        signal(child.id(), "TERM")?;
        signal(child.id(), "CONT")?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if child.try_wait()?.is_some() {
                break;
            }
            if Instant::now() >= deadline {
                child
                    .kill()
                    .context("killing etcd after SIGTERM timed out")?;
                child.wait()?;
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = fs::remove_file(&self.pid_file);
        Ok(())
    }

    /// Start the stopped server again on the same data directory and ports.
    pub fn start_again(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("etcd is still running; stop() it first");
        }
        self.launch()
    }

    /// Stop, delete all data, start empty on the same ports.
    pub fn wipe_and_restart(&mut self) -> Result<()> {
        self.stop()?;
        if self.data_dir.exists() {
            fs::remove_dir_all(&self.data_dir)
                .with_context(|| format!("removing {}", self.data_dir.display()))?;
        }
        self.launch()
    }

    /// SIGSTOP: etcd keeps its sockets open but answers nothing.
    pub fn freeze(&self) -> Result<()> {
        signal(self.running_pid()?, "STOP")
    }

    /// SIGCONT: undo [`EtcdServer::freeze`].
    pub fn thaw(&self) -> Result<()> {
        signal(self.running_pid()?, "CONT")
    }

    fn running_pid(&self) -> Result<u32> {
        self.pid().ok_or_else(|| anyhow!("etcd is not running"))
    }

    /// Spawn etcd on the current ports and wait until it is healthy.
    fn launch(&mut self) -> Result<()> {
        self.log_file = self.dir.path().join(format!("etcd-{}.log", self.starts));
        self.starts += 1;
        let log = File::create(&self.log_file).context("creating the etcd log file")?;
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--name")
            .arg("t")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("t={peer}")]);
        if let Some(pki) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&pki.server_cert)
                .arg("--key-file")
                .arg(&pki.server_key)
                .arg("--trusted-ca-file")
                .arg(&pki.ca)
                .arg("--client-cert-auth")
                .args([
                    "--listen-metrics-urls",
                    &format!("http://127.0.0.1:{}", self.metrics_port),
                ]);
        }
        cmd.current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(arch) = unsupported_arch() {
            cmd.env("ETCD_UNSUPPORTED_ARCH", arch);
        }
        let started = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        fs::write(&self.pid_file, child.id().to_string()).context("writing the etcd pid file")?;
        self.child = Some(child);
        if let Err(e) = self.wait_ready() {
            let _ = self.stop();
            return Err(e.context(format!("etcd log:\n{}", self.log())));
        }
        self.last_start = started.elapsed();
        Ok(())
    }

    /// Poll `/health` until it says `"health":"true"`, failing early if etcd
    /// exits.
    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let health_port = if self.tls.is_some() {
            self.metrics_port
        } else {
            self.client_port
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, health_port));
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!("etcd exited during startup ({status})");
            }
            if health_ok(&addr) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("etcd on {addr} not healthy after {READY_TIMEOUT:?}");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Background `sh` that, once this test process is gone without having
    /// run `Drop`, kills the etcd named in the pid file and removes the
    /// temporary directory. `Drop` kills it.
    fn spawn_watchdog(&self) -> Result<Child> {
        let script = r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done
pid=$(cat "$2" 2>/dev/null)
if [ -n "$pid" ]; then kill -KILL "$pid" 2>/dev/null; sleep 1; fi
for i in 1 2 3 4 5; do rm -rf "$3" 2>/dev/null; [ -e "$3" ] || break; sleep 1; done"#;
        Command::new("sh")
            .args(["-c", script, "memtrace-etcd-watchdog"])
            .arg(std::process::id().to_string())
            .arg(&self.pid_file)
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning the watchdog shell")
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL also ends a frozen (SIGSTOPped) process.
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

/// GET /health over plain HTTP/1.1 (etcd serves it on the client port, and
/// on the metrics port).
fn health_ok(addr: &SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let request = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.take(64 * 1024).read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200") && response.contains(r#""health":"true""#)
}

/// Send `SIG<name>` to `pid` with `kill(1)`.
fn signal(pid: u32, name: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -{name} {pid} failed ({status})");
    }
    Ok(())
}

/// `etcd` on `path`, or an error saying how to install it.
fn find_etcd(path: &std::ffi::OsStr) -> Result<PathBuf> {
    std::env::split_paths(path)
        .filter(|d| !d.as_os_str().is_empty())
        .map(|d| d.join("etcd"))
        .find(|p| is_executable(p))
        .ok_or_else(|| {
            anyhow!("the etcd binary was not found on PATH; install it with: {INSTALL_HINT}")
        })
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// etcd refuses architectures other than amd64, arm64 and ppc64le unless
/// `ETCD_UNSUPPORTED_ARCH` names the running one.
fn unsupported_arch() -> Option<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" | "aarch64" | "powerpc64" => None,
        "x86" => Some("386"),
        other => Some(other),
    }
}

/// Distinct free loopback ports (bind `127.0.0.1:0` N times, release).
fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0"))
        .collect::<Result<Vec<_>>>()?;
    let mut ports = [0u16; N];
    for (port, l) in ports.iter_mut().zip(&listeners) {
        *port = l.local_addr()?.port();
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_etcd_says_what_to_install() {
        let empty = tempfile::tempdir().unwrap();
        let err = find_etcd(empty.path().as_os_str()).unwrap_err();
        assert!(err.to_string().contains(INSTALL_HINT), "{err}");
    }

    #[test]
    fn port_pairs_are_distinct() {
        let [a, b, c] = free_ports::<3>().unwrap();
        assert!(a != b && b != c && a != c);
        assert!(a > 0 && b > 0 && c > 0);
    }
}
