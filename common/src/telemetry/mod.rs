//! Logging setup shared by every memtrace binary: `tracing` to stderr, console
//! or JSON, level from `[log] level` (overridden by `RUST_LOG` when set).
//!
//! The level is live: the filter sits behind a reload handle, and
//! [`apply_level`] swaps it when the runtime setting `log.level` changes
//! (workers on each snapshot, the control plane on each change and
//! reconciliation pass). `RUST_LOG` pins the filter: an operator who set it
//! asked for exactly that, so the runtime setting is then not applied.
//!
//! Traces: [`traces`] (OTLP export, off until started).

pub mod traces;

use crate::config::{LogConfig, LogFormat};
use std::sync::{Mutex, OnceLock};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// The installed filter's handle and what it holds.
struct LiveLevel {
    handle: reload::Handle<EnvFilter, Registry>,
    /// The directive in force.
    current: Mutex<String>,
    /// `RUST_LOG` was set: runtime changes are not applied.
    pinned: bool,
}

static LIVE: OnceLock<LiveLevel> = OnceLock::new();

/// Applies `level` (a runtime `log.level` value: `trace` … `error`) to the
/// process's log filter when it differs from the one in force. Does
/// nothing before [`init`], when `RUST_LOG` pinned the filter, or for a
/// value that is not a filter (the registry validates it before).
pub fn apply_level(level: &str) {
    let Some(live) = LIVE.get() else { return };
    if live.pinned {
        return;
    }
    let level = level.trim().to_ascii_lowercase();
    let Ok(mut current) = live.current.lock() else {
        return;
    };
    if *current == level {
        return;
    }
    let Ok(filter) = EnvFilter::try_new(with_traces(&level)) else {
        tracing::warn!(level = %level, "log.level is not a log filter; the current level is kept");
        return;
    };
    if live.handle.reload(filter).is_ok() {
        let previous = std::mem::replace(&mut *current, level.clone());
        drop(current);
        // logged at warn so the change shows whichever way it went
        tracing::warn!(from = %previous, to = %level, "log level changed (log.level)");
    }
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log level {level:?}: {reason}")]
    Level { level: String, reason: String },
    #[error("a global logger is already installed")]
    AlreadyInstalled,
    #[error("trace export: {0}")]
    Traces(String),
}

/// `directive`, plus the exported spans' target at `info` while trace
/// export is on (so `log.level = warn` does not switch traces off).
fn with_traces(directive: &str) -> String {
    if traces::enabled() {
        format!("{directive},{}=info", traces::TARGET)
    } else {
        directive.to_owned()
    }
}

/// Re-applies the directive in force (after trace export started).
pub(crate) fn refresh_filter() {
    let Some(live) = LIVE.get() else { return };
    let Ok(current) = live.current.lock() else {
        return;
    };
    if let Ok(filter) = EnvFilter::try_new(with_traces(&current)) {
        let _ = live.handle.reload(filter);
    }
}

/// Installs the global subscriber. `rust_log` is the value of `RUST_LOG`, if any.
pub fn init(config: &LogConfig, rust_log: Option<&str>) -> Result<(), TelemetryError> {
    let pinned = rust_log.filter(|v| !v.trim().is_empty());
    let directive = pinned.unwrap_or(&config.level);
    let filter = EnvFilter::try_new(directive).map_err(|e| TelemetryError::Level {
        level: directive.to_owned(),
        reason: e.to_string(),
    })?;
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(true);
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(traces::layer());
    let result = match config.format {
        LogFormat::Json => registry.with(fmt.json().flatten_event(true)).try_init(),
        LogFormat::Console => registry.with(fmt).try_init(),
    };
    result.map_err(|_| TelemetryError::AlreadyInstalled)?;
    let _ = LIVE.set(LiveLevel {
        handle,
        current: Mutex::new(directive.trim().to_ascii_lowercase()),
        pinned: pinned.is_some(),
    });
    Ok(())
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
