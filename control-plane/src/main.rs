//! `memtrace-control-plane`: loads configuration and secrets, binds
//! `[control_plane] listen`, and serves until SIGTERM/SIGINT.

use anyhow::Context;
use clap::Parser;
use memtrace_common::config::Env;
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
    let result = run(args).await;
    // what trace export buffered goes out before the process ends
    tokio::task::block_in_place(memtrace_common::telemetry::traces::shutdown);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let env = Env::from_process();
    let config = memtrace_common::telemetry::init_process(args.config, &env)?;
    memtrace_common::telemetry::traces::start_from_env(&env, "memtrace-control-plane")?;
    let secrets = Secrets::from_env(&env)?;
    let listen = config.control_plane.listen.clone();
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {listen} ([control_plane] listen / MEMTRACE_CONTROL_PLANE_LISTEN)"
            )
        })?;
    serve(ServeOptions {
        config,
        secrets,
        listener,
        shutdown: memtrace_common::shutdown::os_signal(),
        bus: None,
    })
    .await?;
    Ok(())
}
