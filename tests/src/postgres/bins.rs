//! Finding the PostgreSQL binaries: server tools side by side on `PATH` or
//! under `/usr/lib/postgresql/<newest version>/bin`, client tools from the
//! same installation first; missing ones say what to install.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};

use super::INSTALL_HINT;

/// Paths of the PostgreSQL binaries, all from one installation.
#[derive(Debug, Clone)]
pub(super) struct PgBins {
    pub(super) initdb: PathBuf,
    pub(super) pg_ctl: PathBuf,
    pub(super) psql: Option<PathBuf>,
    pub(super) pg_isready: Option<PathBuf>,
}

impl PgBins {
    /// Look for `initdb`, `pg_ctl` and `postgres` side by side: first on
    /// `PATH`, then in `/usr/lib/postgresql/<newest version>/bin`.
    pub(super) fn find() -> Result<PgBins> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        Self::find_in(&path, Path::new("/usr/lib/postgresql"))
    }

    /// [`PgBins::find`] with an explicit search `path` and versioned `lib_root`.
    pub(super) fn find_in(path: &std::ffi::OsStr, lib_root: &Path) -> Result<PgBins> {
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

    pub(super) fn psql(&self) -> Result<&Path> {
        self.psql.as_deref().ok_or_else(|| {
            anyhow!("psql not found on PATH or under /usr/lib/postgresql/*/bin; install it with: {INSTALL_HINT}")
        })
    }
}

/// `<root>/<version>/bin` directories, newest version first.
pub(super) fn versioned_bin_dirs(root: &Path) -> Vec<PathBuf> {
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

pub(super) fn which(name: &str) -> Option<PathBuf> {
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
