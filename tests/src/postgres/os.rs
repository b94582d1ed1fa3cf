//! The operating-system side of [`PgServer`](super::PgServer): whether we
//! run as root and which unprivileged user to run the server as, a
//! temporary directory that user can reach, a free loopback port, and
//! running a command to completion with its output in the error.

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use super::INSTALL_HINT;

/// Effective uid is 0, read from `/proc/self/status` (fallback: `id -u`).
pub(super) fn running_as_root() -> bool {
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
pub(super) fn parse_euid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// An existing non-root account to run the server as.
pub(super) fn unprivileged_user() -> Result<String> {
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
pub(super) fn make_temp_dir(for_other_user: bool) -> Result<TempDir> {
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

/// Bind `127.0.0.1:0`, note the port the kernel picked, release it.
pub(super) fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Run to completion; a non-zero exit is an error carrying stdout and stderr.
pub(super) fn run(cmd: &mut Command, what: &str) -> Result<Output> {
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
