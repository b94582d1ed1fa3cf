//! Starts the real `memtrace-worker` binary on `127.0.0.1:0` against an etcd,
//! with JSON logs captured to a file; the bound address is read from the
//! worker's own "listening" log line.

use crate::process::{isolated_command, terminate, wait_for_listen_addr};
use anyhow::Context;
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
    child: Option<Child>,
}

impl Worker {
    /// Starts a worker named `id` watching `prefix` on `etcd_endpoint`.
    pub async fn spawn(
        dir: &Path,
        id: &str,
        etcd_endpoint: &str,
        prefix: &str,
        fleet_key: &str,
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
        for (k, v) in extra_env {
            command.env(k, v);
        }
        let mut child = command.spawn().context("spawn memtrace-worker")?;
        let addr = wait_for_listen_addr(
            &log_path,
            &mut child,
            "worker listening",
            Duration::from_secs(20),
        )
        .await?;
        Ok(Self {
            id: id.to_owned(),
            addr,
            log_path,
            child: Some(child),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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
}
