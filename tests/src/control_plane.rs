//! Starts the real `memtrace-control-plane` binary on `127.0.0.1:0`, with its
//! data in a temp dir and JSON logs captured to a file, in plaintext or
//! with a test certificate. The address and whether it serves TLS are read
//! from the process's own "listening" log line, so no port is ever guessed.

use crate::pki::ServedTls;
use crate::process::{Listening, isolated_command, output_within, terminate, wait_for_listening};
use anyhow::{Context, bail};
use memtrace_common::credentials::generate_admin_token;
use memtrace_common::keys::generate_key_b64;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::process::Child;

/// How to start a control plane.
#[derive(Debug, Clone)]
pub struct ControlPlaneSpec {
    pub master_key: String,
    pub previous_master_keys: Vec<String>,
    /// `Some` sets MEMTRACE_BOOTSTRAP_ADMIN_TOKEN; `None` lets it generate one.
    pub admin_token: Option<String>,
    /// `None` = SQLite in the data dir.
    pub database_url: Option<String>,
    /// Serve TLS with these files (`[control_plane] tls_cert_file` /
    /// `tls_key_file`); clients trust its CA.
    pub tls: Option<ServedTls>,
    pub extra_env: BTreeMap<String, String>,
}

impl Default for ControlPlaneSpec {
    fn default() -> Self {
        Self {
            master_key: generate_key_b64(),
            previous_master_keys: Vec::new(),
            admin_token: Some(generate_admin_token().to_string()),
            database_url: None,
            tls: None,
            extra_env: BTreeMap::new(),
        }
    }
}

/// A running control plane process.
pub struct ControlPlane {
    pub spec: ControlPlaneSpec,
    pub addr: std::net::SocketAddr,
    listening: Listening,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    pub stdout_path: PathBuf,
    child: Option<Child>,
}

impl ControlPlane {
    /// Starts in a fresh temp dir (kept in `dir`, which the caller owns so
    /// restarts can reuse it) and waits until `/ready` answers 200.
    pub async fn start(dir: &Path, spec: ControlPlaneSpec) -> anyhow::Result<Self> {
        let cp = Self::spawn(dir, spec).await?;
        cp.wait_ready(Duration::from_secs(30)).await?;
        Ok(cp)
    }

    /// Starts without waiting for readiness.
    pub async fn spawn(dir: &Path, spec: ControlPlaneSpec) -> anyhow::Result<Self> {
        let data_dir = dir.join("data");
        let run = next_run(dir);
        let log_path = dir.join(format!("control-plane-{run}.log"));
        let stdout_path = dir.join(format!("control-plane-{run}.stdout"));
        let mut command = isolated_command("memtrace-control-plane", dir)?;
        command
            .env("MEMTRACE_CONTROL_PLANE_LISTEN", "127.0.0.1:0")
            .env("MEMTRACE_LOG_FORMAT", "json")
            // pinned by RUST_LOG, so the runtime `log.level` it seeds for
            // the workers stays the default (info)
            .env("RUST_LOG", "debug")
            .env("MEMTRACE_AUTH_DB_PATH", data_dir.join("memtrace.db"))
            .env("MEMTRACE_SERVER_SHUTDOWN_TIMEOUT", "5")
            .env("MEMTRACE_MASTER_KEY", &spec.master_key)
            .stdout(std::fs::File::create(&stdout_path)?)
            .stderr(std::fs::File::create(&log_path)?);
        if !spec.previous_master_keys.is_empty() {
            command.env(
                "MEMTRACE_MASTER_KEYS_PREVIOUS",
                spec.previous_master_keys.join(","),
            );
        }
        if let Some(token) = &spec.admin_token {
            command.env("MEMTRACE_BOOTSTRAP_ADMIN_TOKEN", token);
        }
        if let Some(url) = &spec.database_url {
            command.env("MEMTRACE_DATABASE_URL", url);
        }
        if let Some(tls) = &spec.tls {
            command
                .env("MEMTRACE_CONTROL_PLANE_TLS_CERT_FILE", &tls.cert_file)
                .env("MEMTRACE_CONTROL_PLANE_TLS_KEY_FILE", &tls.key_file);
        }
        for (k, v) in &spec.extra_env {
            command.env(k, v);
        }
        let mut child = command.spawn().context("spawn memtrace-control-plane")?;
        let listening = wait_for_listening(
            &log_path,
            &mut child,
            "control plane listening",
            Duration::from_secs(20),
        )
        .await?;
        if listening.tls != spec.tls.is_some() {
            bail!(
                "the control plane says tls={} but the spec asked for tls={}",
                listening.tls,
                spec.tls.is_some()
            );
        }
        Ok(Self {
            spec,
            addr: listening.addr,
            listening,
            data_dir,
            log_path,
            stdout_path,
            child: Some(child),
        })
    }

    /// `https://…` when it serves TLS, else `http://…`.
    pub fn url(&self) -> String {
        self.listening.url()
    }

    /// The CA its certificate is trusted through, when it serves TLS.
    pub fn ca_file(&self) -> Option<&Path> {
        self.spec.tls.as_ref().map(|tls| tls.ca_file.as_path())
    }

    /// An HTTP client that reaches it (trusting its CA when it serves TLS).
    pub fn client(&self) -> reqwest::Client {
        crate::client_for(self.ca_file())
    }

    /// The admin token: the bootstrap one, or the one printed on first start.
    pub fn admin_token(&self) -> anyhow::Result<String> {
        if let Some(token) = &self.spec.admin_token {
            return Ok(token.clone());
        }
        let stdout = std::fs::read_to_string(&self.stdout_path)?;
        stdout
            .split_whitespace()
            .find(|w| w.starts_with("mta_"))
            .map(str::to_owned)
            .context("no generated admin token on stdout")
    }

    pub async fn wait_ready(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let client = self.client();
        loop {
            let response = client.get(format!("{}/ready", self.url())).send().await;
            if response.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "control plane not ready within {within:?}; log:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Everything the process wrote to stderr (its log) so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn stop(mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("already stopped")?;
        terminate(&mut child).await
    }

    /// Sends SIGKILL (a crash) and waits for the exit.
    pub async fn kill(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("already stopped")?;
        child.start_kill()?;
        Ok(tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .context("control plane did not exit within 10s of SIGKILL")??)
    }

    /// SIGSTOP: the process hangs with its connections open (`thaw` ends it).
    pub fn freeze(&self) -> anyhow::Result<()> {
        self.signal("-STOP")
    }

    /// SIGCONT after [`ControlPlane::freeze`].
    pub fn thaw(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .context("not running")?;
        let status = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill {sig} {pid}: {status}");
        Ok(())
    }
}

fn next_run(dir: &Path) -> usize {
    (0..)
        .find(|i| !dir.join(format!("control-plane-{i}.log")).exists())
        .unwrap_or(0)
}

/// Runs the control-plane binary to completion (for startup-refusal tests).
pub async fn run_to_exit(dir: &Path, env: &[(&str, &str)]) -> anyhow::Result<std::process::Output> {
    let mut command = isolated_command("memtrace-control-plane", dir)?;
    command.env("MEMTRACE_CONTROL_PLANE_LISTEN", "127.0.0.1:0");
    for (k, v) in env {
        command.env(k, v);
    }
    output_within(command, Duration::from_secs(20)).await
}
