//! `memtracectl org export ORG_ID`: an org's memories as JSONL (one memory
//! per line, oldest first, newest version only, deleted and expired ones
//! left out) — the data API's export (`GET /api/v1/export`, keyset pages)
//! driven for an operator. Tenant content never passes through the control
//! plane: the command mints a read-only API key of the org for one hour
//! (audited, named `org-export-<time>`), pages the export from the worker at
//! `MEMTRACE_URL` (`MEMTRACE_CA_FILE` for a private CA) with it, and revokes
//! the key when it ends, whether the export finished or not. The output
//! (stdout, or `--out FILE` created with mode 0600) holds only complete
//! lines; a summary goes to stderr.

use crate::client::Admin;
use crate::error::{CliError, Subject};
use crate::worker::{Method, Worker, WorkerRequest};
use clap::Args;
use memtrace_common::config::Env;
use memtrace_proto::admin::v1 as pb;
use reqwest::header::HeaderValue;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The header carrying the next page's cursor.
const NEXT_CURSOR: &str = "x-memtrace-next-cursor";
/// How long a freshly minted key may take to reach the worker.
const KEY_PROPAGATION: Duration = Duration::from_secs(20);
/// Lifetime of the export's key (revoked at the end anyway).
const KEY_LIFETIME_SECONDS: u64 = 3600;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// id of the org (see 'memtracectl org list')
    #[arg(value_name = "ORG_ID")]
    pub org_id: String,
    /// only this agent's memories
    #[arg(long, value_name = "AGENT_ID")]
    pub agent: Option<String>,
    /// only this session's memories
    #[arg(long, value_name = "SESSION_ID")]
    pub session: Option<String>,
    /// write to this file (created, mode 0600; must not exist) instead of stdout
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// memories per page (1 to 1000)
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub page_size: u32,
}

/// Runs the export; the summary goes to `diag`.
pub async fn run(
    args: ExportArgs,
    admin: &Admin,
    env: &Env,
    timeout: Duration,
    stdout: &mut dyn Write,
    diag: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut file = match &args.out {
        Some(path) => Some(create_private(path)?),
        None => None,
    };
    let created = admin
        .api_keys()
        .create_api_key(admin.request(pb::CreateApiKeyRequest {
            org_id: args.org_id.clone(),
            name: format!("org-export-{}", jiff::Timestamp::now().as_second()),
            scopes: vec!["read".into()],
            expires_in_seconds: KEY_LIFETIME_SECONDS,
        }))
        .await
        .map_err(|s| admin.fail(s, Subject::Org))?
        .into_inner();
    let key_id = created
        .key
        .as_ref()
        .map(|k| k.id.clone())
        .unwrap_or_default();
    let secret = zeroize::Zeroizing::new(created.secret);
    let out: &mut dyn Write = match file.as_mut() {
        Some(f) => f,
        None => stdout,
    };
    let exported = match HeaderValue::from_str(&secret) {
        Ok(key) => match Worker::with_key(env, key, timeout) {
            Ok(worker) => export(&worker, &args, out).await,
            Err(e) => Err(e.into()),
        },
        Err(_) => Err(CliError::new("the control plane answered an unusable key").into()),
    };
    // the key goes whatever happened
    let revoked = admin
        .api_keys()
        .revoke_api_key(admin.request(pb::RevokeApiKeyRequest {
            key_id: key_id.clone(),
        }))
        .await;
    if let Err(status) = revoked {
        writeln!(
            diag,
            "warning: the export's key {key_id} was not revoked ({}); revoke it with 'memtracectl key revoke {key_id}' (it expires within an hour anyway)",
            status.message()
        )?;
    }
    let (memories, pages) = exported?;
    out.flush()?;
    writeln!(
        diag,
        "exported {memories} memories of {} in {pages} pages{}",
        args.org_id,
        args.out
            .as_ref()
            .map(|p| format!(" to {}", p.display()))
            .unwrap_or_default()
    )?;
    Ok(())
}

/// Pages the export into `out`: (memories, pages).
async fn export(
    worker: &Worker,
    args: &ExportArgs,
    out: &mut dyn Write,
) -> anyhow::Result<(u64, u64)> {
    let mut cursor: Option<String> = None;
    let (mut memories, mut pages) = (0u64, 0u64);
    let started = Instant::now();
    loop {
        let mut query = vec![("limit".to_owned(), args.page_size.to_string())];
        if let Some(agent) = &args.agent {
            query.push(("agent_id".into(), agent.clone()));
        }
        if let Some(session) = &args.session {
            query.push(("session_id".into(), session.clone()));
        }
        if let Some(c) = &cursor {
            query.push(("cursor".into(), c.clone()));
        }
        let request = WorkerRequest {
            method: Method::Get,
            segments: vec!["export".into()],
            query,
            body: None,
        };
        let (body, next) = match worker.call_raw(&request, NEXT_CURSOR).await {
            Ok(page) => page,
            // the new key may not have reached the worker yet
            Err(e)
                if pages == 0
                    && e.to_string().contains("401")
                    && started.elapsed() < KEY_PROPAGATION =>
            {
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        // the page's last line is its cursor record when more follow
        for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if line.starts_with(b"{\"next_cursor\"") {
                continue;
            }
            out.write_all(line)?;
            out.write_all(b"\n")?;
            memories += 1;
        }
        pages += 1;
        match next.filter(|c| !c.is_empty()) {
            Some(next) => cursor = Some(next),
            None => return Ok((memories, pages)),
        }
    }
}

/// `path`, created for writing with mode 0600; an existing file is refused.
fn create_private(path: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map_err(|e| {
        CliError::new(format!("cannot create --out {}: {e}", path.display()))
            .with_hint("name a new file: the export never overwrites one")
            .into()
    })
}
