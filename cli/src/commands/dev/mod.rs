//! `memtracectl dev`: all of memtrace in one process on its embedded
//! default, for development. It owns the wiring only: the control plane
//! ([`memtrace_control_plane::serve`]) and the worker
//! ([`memtrace_data_plane::worker::run`]) share one in-process state bus
//! instead of etcd; the secrets ([`keys`]), the SQLite database and the
//! embedded store live in the data directory; the first start creates a demo
//! org and api key ([`demo`]). SIGINT/SIGTERM stop both halves gracefully.
//!
//! Settings and variables are those of the separate binaries; only the
//! defaults differ: both listen on 127.0.0.1 (9200 and 9100) in plaintext
//! (`[server]` and `[control_plane]` TLS files are ignored with a warning),
//! and `[auth] db_path`, `[worker] embedded_dir` and `[worker] snapshot_cache`
//! point into the data directory unless set in the file or the environment.

mod demo;
mod keys;

use clap::Args;
use keys::DevKeys;
use memtrace_common::bus::StateBus;
use memtrace_common::bus::memory::MemoryBus;
use memtrace_common::config::{Env, MemtraceConfig};
use memtrace_common::fleet::{FLEET_KEY_VAR, PREVIOUS_FLEET_KEYS_VAR, keyring_from_env};
use memtrace_common::shutdown;
use memtrace_control_plane::secrets::{
    BOOTSTRAP_TOKEN_VAR, MASTER_KEY_VAR, PREVIOUS_MASTER_KEYS_VAR,
};
use memtrace_control_plane::{Secrets, ServeOptions, serve};
use memtrace_data_plane::worker::{WorkerOptions, run as run_worker};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpListener;

/// Where `memtracectl dev` keeps its state when `--data-dir` is not given.
pub const DEFAULT_DATA_DIR: &str = "./data";
const DEV_CONTROL_PLANE_LISTEN: &str = "127.0.0.1:9200";
const DEV_SERVER_HOST: &str = "127.0.0.1";

/// `memtracectl dev` arguments.
#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// directory for the dev keys, the SQLite database and the embedded store
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// config file [env: MEMTRACE_CONFIG] (default: search ./memtrace.toml, /etc/memtrace/, ~/.memtrace/)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Why dev mode could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: {message}")]
    KeysFile { path: PathBuf, message: String },
    #[error("cannot listen on {addr}: {cause}; change {setting}")]
    Listen {
        addr: String,
        setting: &'static str,
        cause: std::io::Error,
    },
    #[error("{0}")]
    Startup(String),
    #[error("control plane failed: {0}")]
    ControlPlane(String),
    #[error("worker failed: {0}")]
    Worker(String),
    #[error("demo setup failed: {0}")]
    Demo(String),
}

/// Runs the control plane and the worker until SIGINT/SIGTERM. The banner
/// (with the demo api key on first start) goes to `out`, logs to stderr.
pub async fn run(args: DevArgs, env: &Env, out: &mut dyn Write) -> anyhow::Result<()> {
    let config_file = args
        .config
        .or_else(|| env.get("MEMTRACE_CONFIG").map(PathBuf::from));
    let mut config = memtrace_common::telemetry::init_process(config_file, env)?;
    let data_dir = args.data_dir;
    keys::create_private_dir(&data_dir)?;
    let keys = DevKeys::load_or_create(&data_dir)?;
    tracing::warn!(
        keys_file = %keys.keys_file.display(),
        generated = keys.generated,
        "development mode: the master and fleet keys are development-only keys kept in keys_file; never use them or this data directory in production"
    );
    apply_dev_defaults(&mut config, env, &data_dir);
    if !config.worker.embedded_dir.trim().is_empty() {
        keys::create_private_dir(Path::new(config.worker.embedded_dir.trim()))?;
    }
    let secret_env = secret_env(env, &keys);
    let secrets = Secrets::from_env(&secret_env).map_err(|e| DevError::Startup(e.to_string()))?;
    let (worker_fleet, _) = keyring_from_env(&secret_env)
        .map_err(|e| DevError::Startup(e.to_string()))?
        .ok_or_else(|| DevError::Startup(format!("{FLEET_KEY_VAR} missing")))?;

    let cp_listener = bind(
        &config.control_plane.listen,
        "[control_plane] listen or MEMTRACE_CONTROL_PLANE_LISTEN",
    )
    .await?;
    let worker_listener = bind(
        &config.server.listen_address(),
        "[server] host/port or MEMTRACE_SERVER_HOST/MEMTRACE_SERVER_PORT",
    )
    .await?;
    let cp_addr = local_addr(&cp_listener)?;
    let worker_addr = local_addr(&worker_listener)?;

    let bus: Arc<dyn StateBus> = Arc::new(MemoryBus::new());
    let (cp_stop, cp_signal) = shutdown::manual();
    let (worker_stop, worker_signal) = shutdown::manual();
    let mut control_plane = tokio::spawn(serve(ServeOptions {
        config: config.clone(),
        secrets,
        listener: cp_listener,
        shutdown: cp_signal,
        bus: Some(bus.clone()),
    }));
    let mut worker = tokio::spawn(run_worker(WorkerOptions {
        config,
        fleet: Arc::new(worker_fleet),
        bus,
        listener: worker_listener,
        shutdown: worker_signal,
        hostname: Some(
            env.get("HOSTNAME")
                .map(str::to_owned)
                .unwrap_or_else(|| "dev".into()),
        ),
    }));
    tracing::info!(control_plane = %cp_addr, worker = %worker_addr, data_dir = %data_dir.display(), "memtrace dev running; stop with ctrl-c");

    let demo = demo::Demo {
        data_dir: &data_dir,
        control_plane: connectable(cp_addr),
        worker: worker_addr,
        keys: &keys,
    }
    .ensure();
    tokio::pin!(demo);
    let mut os_signal = shutdown::os_signal();
    let mut demo_pending = true;
    let mut failure: Option<DevError> = None;
    let mut cp_done = None;
    let mut worker_done = None;
    loop {
        tokio::select! {
            () = &mut os_signal => break,
            banner = &mut demo, if demo_pending => {
                demo_pending = false;
                match banner {
                    Ok(text) => {
                        out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(|cause| DevError::Io {
                            path: PathBuf::from("<stdout>"),
                            cause,
                        })?;
                    }
                    Err(error) => {
                        failure = Some(error);
                        break;
                    }
                }
            }
            result = &mut control_plane => {
                cp_done = Some(result);
                break;
            }
            result = &mut worker => {
                worker_done = Some(result);
                break;
            }
        }
    }
    tracing::info!("memtrace dev stopping");
    let _ = cp_stop.send(());
    let _ = worker_stop.send(());
    let cp_result = match cp_done {
        Some(result) => result,
        None => control_plane.await,
    };
    let worker_result = match worker_done {
        Some(result) => result,
        None => worker.await,
    };
    let cp_error = match cp_result {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(DevError::ControlPlane(error.to_string())),
        Err(join) => Some(DevError::ControlPlane(join.to_string())),
    };
    let worker_error = match worker_result {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(DevError::Worker(error.to_string())),
        Err(join) => Some(DevError::Worker(join.to_string())),
    };
    if let Some(error) = failure.or(cp_error).or(worker_error) {
        return Err(error.into());
    }
    tracing::info!("memtrace dev stopped");
    Ok(())
}

/// The dev defaults, applied only where neither the config file nor the
/// environment chose a value (a value equal to the built-in default counts
/// as not chosen).
fn apply_dev_defaults(config: &mut MemtraceConfig, env: &Env, data_dir: &Path) {
    let builtin = MemtraceConfig::default();
    let unset = |var: &str| env.get(var).is_none();
    let in_data = |name: &str| data_dir.join(name).to_string_lossy().into_owned();
    if unset("MEMTRACE_CONTROL_PLANE_LISTEN")
        && config.control_plane.listen == builtin.control_plane.listen
    {
        config.control_plane.listen = DEV_CONTROL_PLANE_LISTEN.into();
    }
    if unset("MEMTRACE_SERVER_HOST") && config.server.host == builtin.server.host {
        config.server.host = DEV_SERVER_HOST.into();
    }
    if unset("MEMTRACE_AUTH_DB_PATH") && config.auth.db_path == builtin.auth.db_path {
        config.auth.db_path = in_data("memtrace.db");
    }
    if unset("MEMTRACE_WORKER_EMBEDDED_DIR") && config.worker.embedded_dir.trim().is_empty() {
        config.worker.embedded_dir = in_data("embedded");
    }
    if unset("MEMTRACE_WORKER_SNAPSHOT_CACHE")
        && config.worker.snapshot_cache == builtin.worker.snapshot_cache
    {
        config.worker.snapshot_cache = in_data("worker-snapshot.json");
    }
    if !config.etcd.endpoint_list().is_empty() {
        tracing::warn!(
            "[etcd] endpoints ignored: memtracectl dev shares an in-process state bus between its halves"
        );
        config.etcd.endpoints.clear();
    }
    // Development on loopback: plaintext, so the demo setup and the printed
    // examples need no CA. TLS is served by the separate binaries.
    for (setting, cert, key) in [
        (
            "[server] tls_cert_file / tls_key_file",
            &mut config.server.tls_cert_file,
            &mut config.server.tls_key_file,
        ),
        (
            "[control_plane] tls_cert_file / tls_key_file",
            &mut config.control_plane.tls_cert_file,
            &mut config.control_plane.tls_key_file,
        ),
    ] {
        if !cert.trim().is_empty() || !key.trim().is_empty() {
            tracing::warn!(
                setting,
                "ignored: memtracectl dev serves plaintext on loopback; run memtrace-control-plane and memtrace-worker to serve TLS"
            );
            cert.clear();
            key.clear();
        }
    }
}

/// The environment the two halves read their secrets from: the process
/// environment with the dev keys and admin token of the data directory.
fn secret_env(env: &Env, keys: &DevKeys) -> Env {
    let mut merged = env.clone();
    for var in [
        MASTER_KEY_VAR,
        PREVIOUS_MASTER_KEYS_VAR,
        FLEET_KEY_VAR,
        PREVIOUS_FLEET_KEYS_VAR,
        BOOTSTRAP_TOKEN_VAR,
    ] {
        if env.get(var).is_some() {
            tracing::warn!(variable = var, file = %keys.keys_file.display(), "ignored in dev mode: the data directory's development keys are used");
        }
        merged.set(var, "");
    }
    merged.set(MASTER_KEY_VAR, keys.master_key.as_str());
    merged.set(FLEET_KEY_VAR, keys.fleet_key.as_str());
    merged.set(BOOTSTRAP_TOKEN_VAR, keys.admin_token.as_str());
    merged
}

async fn bind(addr: &str, setting: &'static str) -> Result<TcpListener, DevError> {
    TcpListener::bind(addr)
        .await
        .map_err(|cause| DevError::Listen {
            addr: addr.to_owned(),
            setting,
            cause,
        })
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, DevError> {
    listener
        .local_addr()
        .map_err(|e| DevError::Startup(format!("listener has no address: {e}")))
}

/// An address this process can connect to (a wildcard bind becomes loopback).
fn connectable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let ip = if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        SocketAddr::new(ip, addr.port())
    } else {
        addr
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn dev_defaults_fill_only_what_was_not_chosen() {
        let dir = Path::new("/tmp/devdata");
        let mut config = MemtraceConfig::default();
        apply_dev_defaults(&mut config, &Env::default(), dir);
        assert_eq!(config.control_plane.listen, "127.0.0.1:9200");
        assert_eq!(config.server.host, "127.0.0.1");
        assert_eq!(config.server.port, 9100);
        assert_eq!(config.auth.db_path, "/tmp/devdata/memtrace.db");
        assert_eq!(config.worker.embedded_dir, "/tmp/devdata/embedded");

        let mut chosen = MemtraceConfig::default();
        chosen.control_plane.listen = "0.0.0.0:9300".into();
        chosen.worker.embedded_dir = "/srv/embedded".into();
        chosen.server.host = "0.0.0.0".into();
        let env = Env::from_pairs([("MEMTRACE_SERVER_HOST", "0.0.0.0")]);
        apply_dev_defaults(&mut chosen, &env, dir);
        assert_eq!(chosen.control_plane.listen, "0.0.0.0:9300");
        assert_eq!(chosen.worker.embedded_dir, "/srv/embedded");
        assert_eq!(chosen.server.host, "0.0.0.0");

        let mut tls = MemtraceConfig::default();
        tls.server.tls_cert_file = "/etc/memtrace/worker.pem".into();
        tls.server.tls_key_file = "/etc/memtrace/worker.key".into();
        tls.control_plane.tls_cert_file = "/etc/memtrace/cp.pem".into();
        tls.control_plane.tls_key_file = "/etc/memtrace/cp.key".into();
        apply_dev_defaults(&mut tls, &Env::default(), dir);
        assert_eq!(tls.server.tls_files().unwrap(), None);
        assert_eq!(tls.control_plane.tls_files().unwrap(), None);
    }

    #[test]
    fn wildcard_binds_are_reached_on_loopback() {
        let addr: SocketAddr = "0.0.0.0:9200".parse().unwrap();
        assert_eq!(connectable(addr).to_string(), "127.0.0.1:9200");
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(connectable(addr), addr);
    }
}
