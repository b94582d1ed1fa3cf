//! Starts the real `memtrace-worker` binary on `127.0.0.1:0` against an etcd,
//! with JSON logs captured to a file, in plaintext or with a test
//! certificate; the bound address and whether it serves TLS are read from
//! the worker's own "listening" log line.

use crate::pki::ServedTls;
use crate::process::{Listening, isolated_command, terminate, wait_for_listening};
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Child;

/// A running worker process.
pub struct Worker {
    /// The worker id it registers under.
    pub id: String,
    pub addr: std::net::SocketAddr,
    pub log_path: PathBuf,
    listening: Listening,
    /// The CA its certificate is trusted through, when it serves TLS.
    ca_file: Option<PathBuf>,
    child: Option<Child>,
}

impl Worker {
    /// Starts a worker named `id` watching `prefix` on `etcd_endpoint`,
    /// serving TLS with `tls` if given.
    pub async fn spawn(
        dir: &Path,
        id: &str,
        etcd_endpoint: &str,
        prefix: &str,
        fleet_key: &str,
        tls: Option<&ServedTls>,
        extra_env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let log_path = dir.join(format!("worker-{id}.log"));
        let mut command = isolated_command("memtrace-worker", dir)?;
        command
            .env("MEMTRACE_SERVER_HOST", "127.0.0.1")
            .env("MEMTRACE_SERVER_PORT", "0")
            .env("MEMTRACE_SERVER_SHUTDOWN_TIMEOUT", "5")
            .env("MEMTRACE_LOG_FORMAT", "json")
            .env("MEMTRACE_LOG_LEVEL", "info")
            .env("MEMTRACE_WORKER_ID", id)
            .env(
                "MEMTRACE_WORKER_SNAPSHOT_CACHE",
                dir.join(format!("{id}-snapshot.json")),
            )
            .env("MEMTRACE_ETCD_ENDPOINTS", etcd_endpoint)
            .env("MEMTRACE_ETCD_PREFIX", prefix)
            .env("MEMTRACE_FLEET_KEY", fleet_key)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path)?);
        if let Some(tls) = tls {
            command
                .env("MEMTRACE_SERVER_TLS_CERT_FILE", &tls.cert_file)
                .env("MEMTRACE_SERVER_TLS_KEY_FILE", &tls.key_file);
        }
        for (k, v) in extra_env {
            command.env(k, v);
        }
        let mut child = command.spawn().context("spawn memtrace-worker")?;
        let listening = wait_for_listening(
            &log_path,
            &mut child,
            "worker listening",
            Duration::from_secs(20),
        )
        .await?;
        if listening.tls != tls.is_some() {
            bail!(
                "worker {id} says tls={} but was asked for tls={}",
                listening.tls,
                tls.is_some()
            );
        }
        Ok(Self {
            id: id.to_owned(),
            addr: listening.addr,
            log_path,
            listening,
            ca_file: tls.map(|tls| tls.ca_file.clone()),
            child: Some(child),
        })
    }

    /// `https://…` when it serves TLS, else `http://…`.
    pub fn url(&self) -> String {
        self.listening.url()
    }

    /// The CA its certificate is trusted through, when it serves TLS.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// An HTTP client that reaches it (trusting its CA when it serves TLS).
    pub fn client(&self) -> reqwest::Client {
        crate::client_for(self.ca_file())
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn stop(mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("already stopped")?;
        terminate(&mut child).await
    }

    /// Sends SIGKILL (no flush, no goodbye: a crash) and waits for the exit.
    pub async fn kill(mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("already stopped")?;
        child.start_kill()?;
        Ok(tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .context("worker did not exit within 10s of SIGKILL")??)
    }
}
