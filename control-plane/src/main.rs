//! `memtrace-control-plane`: loads configuration and secrets, binds
//! `[control_plane] listen`, and serves until SIGTERM/SIGINT.

use anyhow::Context;
use clap::Parser;
use memtrace_common::config::{self, Env, FileSource};
use memtrace_control_plane::{Secrets, ServeOptions, serve};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "memtrace-control-plane",
    version,
    about = "memtrace control plane: orgs, Arc bindings, API keys, admin API"
)]
struct Args {
    /// Config file (default: search ./memtrace.toml, /etc/memtrace/, ~/.memtrace/).
    #[arg(long, env = "MEMTRACE_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let env = Env::from_process();
    let file = args
        .config
        .map(FileSource::Path)
        .unwrap_or(FileSource::Search);
    let loaded = config::load(&file, &env)?;
    memtrace_common::telemetry::init(&loaded.config.log, env.get("RUST_LOG"))?;
    if let Some(path) = &loaded.file {
        tracing::info!(path = %path.display(), "config file loaded");
    }
    for var in &loaded.ignored_vars {
        tracing::warn!(variable = %var, "environment variable matches no setting; ignored");
    }
    let secrets = Secrets::from_env(&env)?;
    let listen = loaded.config.control_plane.listen.clone();
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {listen} ([control_plane] listen / MEMTRACE_CONTROL_PLANE_LISTEN)"
            )
        })?;
    serve(ServeOptions {
        config: loaded.config,
        secrets,
        listener,
        shutdown: memtrace_common::shutdown::os_signal(),
        bus: None,
    })
    .await?;
    Ok(())
}
