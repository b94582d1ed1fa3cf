//! Logging setup shared by every memtrace binary: `tracing` to stderr, console
//! or JSON, level from `[log] level` (overridden by `RUST_LOG` when set).

use crate::config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log level {level:?}: {reason}")]
    Level { level: String, reason: String },
    #[error("a global logger is already installed")]
    AlreadyInstalled,
}

/// Installs the global subscriber. `rust_log` is the value of `RUST_LOG`, if any.
pub fn init(config: &LogConfig, rust_log: Option<&str>) -> Result<(), TelemetryError> {
    let directive = rust_log
        .filter(|v| !v.trim().is_empty())
        .unwrap_or(&config.level);
    let filter = EnvFilter::try_new(directive).map_err(|e| TelemetryError::Level {
        level: directive.to_owned(),
        reason: e.to_string(),
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(true);
    let result = match config.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Console => builder.try_init(),
    };
    result.map_err(|_| TelemetryError::AlreadyInstalled)
}

/// Why a process could not load its configuration and start logging.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
}

/// What every memtrace binary does first: load the configuration (an
/// explicit file, or the search path), install logging, and log which file
/// was read and which `MEMTRACE_*` variables matched no setting.
pub fn init_process(
    config_file: Option<std::path::PathBuf>,
    env: &crate::config::Env,
) -> Result<crate::config::MemtraceConfig, InitError> {
    use crate::config::FileSource;
    let file = config_file
        .map(FileSource::Path)
        .unwrap_or(FileSource::Search);
    let loaded = crate::config::load(&file, env)?;
    init(&loaded.config.log, env.get("RUST_LOG"))?;
    if let Some(path) = &loaded.file {
        tracing::info!(path = %path.display(), "config file loaded");
    }
    for var in &loaded.ignored_vars {
        tracing::warn!(variable = %var, "environment variable matches no setting; ignored");
    }
    Ok(loaded.config)
}
