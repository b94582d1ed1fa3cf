//! Runs the real `memtracectl` binary against a control plane.

use crate::bins::bin_path;
use anyhow::Context;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
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
    memtracectl_with_stdin(args, env, None).await
}

/// [`memtracectl`] with `stdin` written to its standard input (closed
/// after), or no standard input at all.
pub async fn memtracectl_with_stdin(
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&[u8]>,
) -> anyhow::Result<CliOutput> {
    let mut command = Command::new(bin_path("memtracectl")?);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().context("spawn memtracectl")?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input)
            .await
            .context("writing memtracectl's stdin")?;
        // dropped here: memtracectl sees the end of its input
    }
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .context("memtracectl did not finish within 30s")??;
    Ok(CliOutput {
        success: output.status.success(),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// A CLI bound to one control plane and admin token (and the CA of an
/// `https://` control plane).
pub struct Ctl {
    pub server: String,
    pub token: String,
    pub ca_file: Option<PathBuf>,
}

impl Ctl {
    /// Runs with the server, token and CA in the environment.
    pub async fn run(&self, args: &[&str]) -> anyhow::Result<CliOutput> {
        self.run_with_env(args, &[]).await
    }

    /// [`Self::run`] with `extra` variables in the environment too.
    pub async fn run_with_env(
        &self,
        args: &[&str],
        extra: &[(&str, &str)],
    ) -> anyhow::Result<CliOutput> {
        let mut env = vec![
            ("MEMTRACE_CONTROL_PLANE_URL", self.server.clone()),
            ("MEMTRACE_ADMIN_TOKEN", self.token.clone()),
        ];
        if let Some(ca) = &self.ca_file {
            env.push((
                "MEMTRACE_CONTROL_PLANE_CA_FILE",
                ca.to_str().context("a UTF-8 CA path")?.to_owned(),
            ));
        }
        let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.extend_from_slice(extra);
        memtracectl(args, &env).await
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
