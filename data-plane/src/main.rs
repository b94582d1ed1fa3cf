//! `memtrace-worker`: loads configuration and the fleet key, connects the
//! state bus, binds `[server] host:port` and serves until SIGTERM/SIGINT.

use anyhow::{Context, bail};
use clap::Parser;
use memtrace_common::config::Env;
use memtrace_common::fleet::{FLEET_KEY_VAR, keyring_from_env};
use memtrace_data_plane::worker::{WorkerOptions, run as run_worker};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// mimalloc: the write path allocates many small strings per event from
/// several threads; glibc malloc spent most of a profiled ingest run in
/// locks and consolidation (docs/PERFORMANCE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "memtrace-worker",
    version,
    about = "memtrace data-plane worker"
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
    memtrace_common::telemetry::traces::start_from_env(&env, "memtrace-worker")?;
    if env.get("MEMTRACE_MASTER_KEY").is_some() {
        bail!(
            "MEMTRACE_MASTER_KEY is set: the master key never leaves the control plane; remove it from the worker's environment (workers need only {FLEET_KEY_VAR})"
        );
    }
    if config.etcd.endpoint_list().is_empty() {
        bail!(
            "[etcd] endpoints is empty: a standalone worker has no published state to serve; set MEMTRACE_ETCD_ENDPOINTS (or run everything in one process with 'memtracectl dev')"
        );
    }
    let (fleet, _) = keyring_from_env(&env)?
        .with_context(|| format!("{FLEET_KEY_VAR} is required: workers open the Arc keys the control plane publishes with it"))?;
    let bus = memtrace_common::bus::connect(&config.etcd).await?;
    let listen = config.server.listen_address();
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| {
            format!("cannot listen on {listen} ([server] host/port, MEMTRACE_SERVER_HOST/PORT)")
        })?;
    run_worker(WorkerOptions {
        config,
        fleet: Arc::new(fleet),
        bus,
        listener,
        shutdown: memtrace_common::shutdown::os_signal(),
        hostname: env.get("HOSTNAME").map(str::to_owned),
    })
    .await?;
    Ok(())
}
