//! Runs the real `memtracectl` binary against a control plane.

use crate::bins::bin_path;
use anyhow::Context;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

/// The outcome of one `memtracectl` run.
#[derive(Debug, Clone)]
pub struct CliOutput {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// Parses stdout as one JSON document.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.stdout).with_context(|| {
            format!(
                "stdout is not json:\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// Runs `memtracectl ARGS` with only the given environment (plus PATH).
pub async fn memtracectl(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<CliOutput> {
    let mut command = Command::new(bin_path("memtracectl")?);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .context("memtracectl did not finish within 30s")??;
    Ok(CliOutput {
        success: output.status.success(),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// A CLI bound to one control plane and admin token.
pub struct Ctl {
    pub server: String,
    pub token: String,
}

impl Ctl {
    pub async fn run(&self, args: &[&str]) -> anyhow::Result<CliOutput> {
        memtracectl(
            args,
            &[
                ("MEMTRACE_CONTROL_PLANE_URL", &self.server),
                ("MEMTRACE_ADMIN_TOKEN", &self.token),
            ],
        )
        .await
    }

    /// Runs with `--output json`, requires success, returns the document.
    pub async fn json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let mut full = args.to_vec();
        full.extend(["--output", "json"]);
        let out = self.run(&full).await?;
        anyhow::ensure!(
            out.success,
            "memtracectl {} failed ({:?}):\nstdout: {}\nstderr: {}",
            full.join(" "),
            out.code,
            out.stdout,
            out.stderr
        );
        out.json()
    }
}
