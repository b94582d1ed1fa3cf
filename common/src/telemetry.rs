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
