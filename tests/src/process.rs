//! Running the workspace's binaries as real processes: an isolated command
//! (empty environment but PATH and HOME, stdin closed, killed on drop), the
//! bound address and whether it serves TLS read from the process's own JSON
//! "listening" log line (so no port or scheme is ever guessed), and SIGTERM
//! with a bounded wait.

use crate::bins::bin_path;
use anyhow::{Context, bail};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// `bin` with an empty environment but `PATH` and `HOME=dir`, run in `dir`.
pub fn isolated_command(bin: &str, dir: &Path) -> anyhow::Result<Command> {
    let mut command = Command::new(bin_path(bin)?);
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    Ok(command)
}

/// Runs a command to completion within `within`.
pub async fn output_within(
    mut command: Command,
    within: Duration,
) -> anyhow::Result<std::process::Output> {
    Ok(tokio::time::timeout(within, command.output())
        .await
        .with_context(|| format!("process did not exit within {within:?}"))??)
}

/// Sends SIGTERM and waits (at most 15 s) for the exit status.
pub async fn terminate(child: &mut Child) -> anyhow::Result<ExitStatus> {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    Ok(tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .context("process did not exit within 15s of SIGTERM")??)
}

/// Reads the log until the "listening" line names the bound address.
pub async fn wait_for_listen_addr(
    log: &Path,
    child: &mut Child,
    message: &str,
    within: Duration,
) -> anyhow::Result<std::net::SocketAddr> {
    Ok(wait_for_listening(log, child, message, within).await?.addr)
}

/// What a process's "listening" log line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    pub addr: std::net::SocketAddr,
    /// The port serves TLS only (the line's `tls` field).
    pub tls: bool,
}

impl Listening {
    /// `https://addr` when the port serves TLS, else `http://addr`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }
}

/// Reads the log until the "listening" line names the bound address and
/// whether the port serves TLS.
pub async fn wait_for_listening(
    log: &Path,
    child: &mut Child,
    message: &str,
    within: Duration,
) -> anyhow::Result<Listening> {
    let deadline = Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines() {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let listening = value["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(message));
            if let (true, Some(addr)) = (listening, value["addr"].as_str()) {
                return Ok(Listening {
                    addr: addr.parse()?,
                    tls: value["tls"].as_bool().unwrap_or(false),
                });
            }
        }
        if let Some(status) = child.try_wait()? {
            bail!("process exited with {status} before listening; log:\n{text}");
        }
        if Instant::now() > deadline {
            bail!("process did not report its address within {within:?}; log:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
