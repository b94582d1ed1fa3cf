//! The Python side of the SDK contract test: the cached virtualenv holding
//! the pinned PyPI `memtrace-sdk` (built by `tests/sdk/venv.sh`, the same
//! step `scripts/test.sh` runs) and `tests/sdk/contract.py` run in it against
//! a worker, each within a bounded time. No Python, no venv module or a
//! failed `pip install` is an error saying what to install, never a skip.

use crate::process::output_within;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

/// Longest wait for the venv (the first build downloads the wheels).
pub const VENV_TIMEOUT: Duration = Duration::from_secs(600);

/// `tests/sdk/`: the requirements, the venv script and the contract script.
pub fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk")
}

/// The venv's python, building the venv first when it is missing or its
/// requirements changed. Runs with this process's environment, so pip's
/// own configuration (index, proxy) applies.
pub async fn sdk_python() -> anyhow::Result<PathBuf> {
    venv_script(&[]).await
}

/// Runs `venv.sh` with `env` added to this process's environment.
async fn venv_script(env: &[(&str, &str)]) -> anyhow::Result<PathBuf> {
    let script = sdk_dir().join("venv.sh");
    let mut command = Command::new("bash");
    command
        .arg(&script)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = output_within(command, VENV_TIMEOUT)
        .await
        .with_context(|| format!("running {}", script.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!(
            "the SDK virtualenv could not be built ({}); {}:\n{stderr}",
            out.status,
            script.display()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let python = stdout
        .lines()
        .last()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(PathBuf::from)
        .with_context(|| format!("{} printed no python path:\n{stderr}", script.display()))?;
    if !python.exists() {
        bail!(
            "{} does not exist after {}",
            python.display(),
            script.display()
        );
    }
    Ok(python)
}

/// What `contract.py` expects of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContractMode {
    /// Every SDK method works for an org with storage (Arc or embedded).
    Full,
    /// The org has no Arc binding and the worker no embedded store: every
    /// tenant call is a 503 the SDK turns into `NoArcInstanceError`.
    NoArc,
}

impl ContractMode {
    fn arg(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::NoArc => "no-arc",
        }
    }
}

/// The outcome of one `contract.py` run.
#[derive(Debug, Clone)]
pub struct ContractRun {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl ContractRun {
    /// Everything the run printed, for a failure message.
    pub fn report(&self) -> String {
        format!(
            "contract.py exited with {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `contract.py` with the sync and the async client against
/// `base_url`, the API key passed in the environment (never on the command
/// line), with only `PATH` besides. For an `https://` worker, `ca_file` is
/// the CA to trust (`SSL_CERT_FILE`, which the SDK's httpx honours).
pub async fn run_contract(
    python: &Path,
    base_url: &str,
    api_key: &str,
    ca_file: Option<&Path>,
    mode: ContractMode,
    within: Duration,
) -> anyhow::Result<ContractRun> {
    let mut command = Command::new(python);
    command
        .arg(sdk_dir().join("contract.py"))
        .args(["--base-url", base_url, "--mode", mode.arg()])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("MEMTRACE_API_KEY", api_key)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(ca) = ca_file {
        command.env("SSL_CERT_FILE", ca);
    }
    let out = output_within(command, within)
        .await
        .context("running tests/sdk/contract.py")?;
    Ok(ContractRun {
        success: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_interpreter_is_an_error_not_a_skip() {
        let err = venv_script(&[("MEMTRACE_SDK_PYTHON3", "/nonexistent/python3")])
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("could not be built") && err.contains("/nonexistent/python3 not found"),
            "{err}"
        );
    }

    #[test]
    fn the_published_sdk_is_pinned() {
        let requirements = std::fs::read_to_string(sdk_dir().join("requirements.txt")).unwrap();
        assert!(
            requirements
                .lines()
                .any(|l| l.trim() == "memtrace-sdk==0.2.0"),
            "{requirements}"
        );
    }
}
