//! Static configuration shared by every memtrace process.
//!
//! Layers, lowest first: built-in defaults → `memtrace.toml` (the first found of
//! `./memtrace.toml`, `/etc/memtrace/memtrace.toml`, `~/.memtrace/memtrace.toml`,
//! or an explicit path) → `MEMTRACE_<SECTION>_<KEY>` variables. The same
//! sections, keys and defaults as the original memtrace, plus
//! `[control_plane]`. The environment is injected ([`Env`]), never read behind
//! the caller's back, so tests need no process-global state.
//!
//! Unknown keys in the file are errors (typos must not pass silently); a
//! variable that names a known section but an unknown key is reported back as
//! ignored so the binary can warn about it.

use crate::tls::{TlsError, TlsFiles};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why configuration could not be loaded. Every message names the key or
/// variable and the rule.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
    #[error("{var}: expected {expected}, got {value:?}")]
    EnvType {
        var: String,
        expected: &'static str,
        value: String,
    },
}

/// An injected set of environment variables.
#[derive(Debug, Clone, Default)]
pub struct Env(BTreeMap<String, String>);

impl Env {
    /// The process environment (binaries only).
    pub fn from_process() -> Self {
        Self(std::env::vars().collect())
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// A set value, with empty strings treated as unset.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.insert(name.into(), value.into());
    }

    fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub read_timeout: u64,
    pub write_timeout: u64,
    /// Seconds a process waits for in-flight work on SIGTERM.
    pub shutdown_timeout: u64,
    /// PEM certificate chain and key the worker's port serves TLS with
    /// (both or neither; empty: plaintext, e.g. behind a TLS-terminating
    /// ingress). Re-read when they change.
    pub tls_cert_file: String,
    pub tls_key_file: String,
}

impl ServerConfig {
    /// `host:port` to bind, with an IPv6 host in brackets (`[::1]:9100`).
    pub fn listen_address(&self) -> String {
        let host = self.host.trim();
        if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The worker's TLS files (`None`: plaintext); a half-set pair is an
    /// error naming both settings.
    pub fn tls_files(&self) -> Result<Option<TlsFiles>, TlsError> {
        TlsFiles::from_settings("server", &self.tls_cert_file, &self.tls_key_file)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 9100,
            read_timeout: 30,
            write_timeout: 30,
            shutdown_timeout: 30,
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (`text` is accepted as another name).
    #[serde(alias = "text")]
    Console,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Console,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ArcConfig {
    /// Legacy single-instance binding, migrated into `org_default` on first start.
    pub url: String,
    pub api_key: String,
    pub database: String,
    pub measurement: String,
    pub connect_timeout: u64,
    pub query_timeout: u64,
    pub write_batch_size: u64,
    pub write_flush_interval_ms: u64,
}

impl Default for ArcConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            api_key: String::new(),
            database: String::new(),
            measurement: "events".into(),
            connect_timeout: 5,
            query_timeout: 30,
            write_batch_size: 100,
            write_flush_interval_ms: 1000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub enabled: bool,
    pub db_path: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            db_path: "./data/memtrace.db".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DedupConfig {
    pub enabled: bool,
    pub window_hours: u64,
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window_hours: 24,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ControlPlaneConfig {
    /// gRPC admin API and HTTP `/health`, `/ready` on one port.
    pub listen: String,
    /// Runtime settings that refuse changes through the admin API (see
    /// [`crate::settings`]). Replaces the registry's locked-by-default list;
    /// `MEMTRACE_CONTROL_PLANE_LOCKED_SETTINGS` takes a comma-separated list.
    pub locked_settings: Vec<String>,
    /// PEM certificate chain and key the admin port serves TLS with (both
    /// or neither; empty: plaintext). Re-read when they change.
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// Erasure jobs: how long after a job's first delete it deletes again
    /// and verifies (Arc deletes only rows flushed from its ingest buffer,
    /// so rows buffered during the first delete are caught by the second).
    pub erasure_recheck_delay_ms: u64,
    /// Erasure jobs: how long a job Arc refused (403: deletes disabled, the
    /// token lacks the delete permission) or that has no Arc waits before
    /// it is tried again.
    pub erasure_blocked_retry_ms: u64,
    /// Erasure jobs: how long a replica's claim on a job lasts beyond the
    /// step it is running (renewed at every step); a job whose replica
    /// stopped is resumed by any replica once its claim lapsed.
    pub erasure_claim_ttl_ms: u64,
    /// Erasure jobs: how often memories past each org's
    /// `memories.retention_days` are requested for erasure.
    pub erasure_retention_sweep_ms: u64,
}

impl ControlPlaneConfig {
    /// The control plane's TLS files (`None`: plaintext); a half-set pair
    /// is an error naming both settings.
    pub fn tls_files(&self) -> Result<Option<TlsFiles>, TlsError> {
        TlsFiles::from_settings("control_plane", &self.tls_cert_file, &self.tls_key_file)
    }
}

impl Default for ControlPlaneConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9200".into(),
            locked_settings: crate::settings::locked_by_default(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            erasure_recheck_delay_ms: 10_000,
            erasure_blocked_retry_ms: 300_000,
            erasure_claim_ttl_ms: 60_000,
            erasure_retention_sweep_ms: 3_600_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Registration id; empty means `<HOSTNAME>-<random>`.
    pub id: String,
    /// Address other components reach this worker at; empty means `host:port`.
    pub advertise_address: String,
    /// Last-known-good snapshot file; empty disables it.
    pub snapshot_cache: String,
    /// Lease TTL of the registration (renewed every TTL/3).
    pub registration_ttl_ms: u64,
    /// Directory of the embedded store (one SQLite file per org). Empty (the
    /// default, cluster mode): an org without an Arc binding gets the
    /// original's 503 "no arc instance". Set (`memtracectl dev`, single
    /// node): such an org is served by the embedded store instead.
    pub embedded_dir: String,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            id: String::new(),
            advertise_address: String::new(),
            snapshot_cache: "./data/worker-snapshot.json".into(),
            registration_ttl_ms: 10_000,
            embedded_dir: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EtcdConfig {
    /// Comma-separated endpoints; empty means single-node mode (in-process bus).
    pub endpoints: String,
    /// Key prefix of everything memtrace publishes.
    pub prefix: String,
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    /// HTTP/2 keepalive: always on; a silent etcd is detected within interval + timeout.
    pub keepalive_interval_ms: u64,
    pub keepalive_timeout_ms: u64,
    /// PEM file of the CA that signed etcd's server certificate; set (or
    /// `https://` endpoints) means TLS.
    pub ca_file: String,
    /// PEM client certificate and key, for etcd's `--client-cert-auth`.
    pub cert_file: String,
    pub key_file: String,
    /// etcd user, when etcd authentication is enabled; its password is read
    /// from `password_file` (never from the configuration itself).
    pub user: String,
    pub password_file: String,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        Self {
            endpoints: String::new(),
            prefix: "/memtrace/v1/".into(),
            connect_timeout_ms: 5000,
            request_timeout_ms: 5000,
            keepalive_interval_ms: 5000,
            keepalive_timeout_ms: 3000,
            ca_file: String::new(),
            cert_file: String::new(),
            key_file: String::new(),
            user: String::new(),
            password_file: String::new(),
        }
    }
}

impl EtcdConfig {
    /// The configured endpoints, trimmed, without empties.
    pub fn endpoint_list(&self) -> Vec<String> {
        self.endpoints
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// The whole static configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MemtraceConfig {
    pub server: ServerConfig,
    pub log: LogConfig,
    pub arc: ArcConfig,
    pub auth: AuthConfig,
    pub dedup: DedupConfig,
    pub control_plane: ControlPlaneConfig,
    pub etcd: EtcdConfig,
    pub worker: WorkerConfig,
}

/// A loaded configuration and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: MemtraceConfig,
    /// The file that was read, if any.
    pub file: Option<PathBuf>,
    /// `MEMTRACE_*` variables that look like settings but match no key.
    pub ignored_vars: Vec<String>,
}

/// Where to look for the file.
#[derive(Debug, Clone)]
pub enum FileSource {
    /// `./`, `/etc/memtrace/`, `$HOME/.memtrace/` (HOME taken from the injected env).
    Search,
    /// This file, which must exist.
    Path(PathBuf),
    /// No file at all.
    None,
}

/// Variables that are read directly by the binaries, never as settings.
const NON_SETTING_VARS: &[&str] = &[
    "MEMTRACE_MASTER_KEY",
    "MEMTRACE_MASTER_KEYS_PREVIOUS",
    "MEMTRACE_FLEET_KEY",
    "MEMTRACE_FLEET_KEYS_PREVIOUS",
    "MEMTRACE_BOOTSTRAP_ADMIN_TOKEN",
    "MEMTRACE_DATABASE_URL",
    "MEMTRACE_EXPECTED_MIGRATION",
    "MEMTRACE_CONFIG",
    "MEMTRACE_ADMIN_TOKEN",
    "MEMTRACE_CONTROL_PLANE_URL",
    "MEMTRACE_CONTROL_PLANE_CA_FILE",
];

/// Loads defaults → file → environment.
pub fn load(file: &FileSource, env: &Env) -> Result<Loaded, ConfigError> {
    let mut table = defaults_table()?;
    let path = match file {
        FileSource::Search => search_paths(env).into_iter().find(|p| p.is_file()),
        FileSource::Path(path) => Some(path.clone()),
        FileSource::None => None,
    };
    if let Some(path) = &path {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let file_table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
        merge(&mut table, file_table);
    }
    let ignored_vars = apply_env(&mut table, env)?;
    let origin = path
        .as_ref()
        .map(|p| format!("config ({})", p.display()))
        .unwrap_or_else(|| "config".to_owned());
    let config = MemtraceConfig::deserialize(toml::Value::Table(table)).map_err(|e| {
        ConfigError::Invalid {
            origin: origin.clone(),
            message: e.to_string(),
        }
    })?;
    crate::settings::validate_keys(&config.control_plane.locked_settings).map_err(|e| {
        ConfigError::Invalid {
            origin: origin.clone(),
            message: format!("[control_plane] locked_settings: {e}"),
        }
    })?;
    // A half-set TLS pair is refused before anything starts (the files are
    // read by the plane that serves them).
    for half_set in [config.server.tls_files(), config.control_plane.tls_files()] {
        half_set.map_err(|e| ConfigError::Invalid {
            origin: origin.clone(),
            message: e.to_string(),
        })?;
    }
    Ok(Loaded {
        config,
        file: path,
        ignored_vars,
    })
}

/// The built-in defaults as a TOML table, the base the file and the
/// environment are merged onto.
fn defaults_table() -> Result<toml::Table, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        origin: "built-in defaults".to_owned(),
        message,
    };
    match toml::Value::try_from(MemtraceConfig::default()) {
        Ok(toml::Value::Table(table)) => Ok(table),
        Ok(other) => Err(invalid(format!(
            "serialised to a {} instead of a table",
            other.type_str()
        ))),
        Err(e) => Err(invalid(e.to_string())),
    }
}

fn search_paths(env: &Env) -> Vec<PathBuf> {
    let mut paths = vec![
        PathBuf::from("./memtrace.toml"),
        PathBuf::from("/etc/memtrace/memtrace.toml"),
    ];
    if let Some(home) = env.get("HOME") {
        paths.push(Path::new(home).join(".memtrace").join("memtrace.toml"));
    }
    paths
}

fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base_section)), toml::Value::Table(section)) => {
                merge(base_section, section);
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn apply_env(table: &mut toml::Table, env: &Env) -> Result<Vec<String>, ConfigError> {
    let mut ignored = Vec::new();
    let mut sections: Vec<String> = table.keys().cloned().collect();
    // longest first, so `control_plane` wins over a hypothetical `control`
    sections.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for (var, value) in env.iter() {
        let Some(rest) = var.strip_prefix("MEMTRACE_") else {
            continue;
        };
        if NON_SETTING_VARS.contains(&var.as_str()) {
            continue;
        }
        let rest = rest.to_ascii_lowercase();
        let Some(section) = sections.iter().find(|s| rest.starts_with(&format!("{s}_"))) else {
            ignored.push(var.clone());
            continue;
        };
        let key = &rest[section.len() + 1..];
        let Some(toml::Value::Table(section_table)) = table.get_mut(section.as_str()) else {
            continue;
        };
        let Some(current) = section_table.get(key) else {
            ignored.push(var.clone());
            continue;
        };
        let parsed = coerce(var, current, value)?;
        section_table.insert(key.to_owned(), parsed);
    }
    Ok(ignored)
}

fn coerce(var: &str, current: &toml::Value, value: &str) -> Result<toml::Value, ConfigError> {
    let err = |expected| ConfigError::EnvType {
        var: var.to_owned(),
        expected,
        value: value.to_owned(),
    };
    let trimmed = value.trim();
    Ok(match current {
        toml::Value::Integer(_) => {
            toml::Value::Integer(trimmed.parse().map_err(|_| err("an integer"))?)
        }
        toml::Value::Float(_) => toml::Value::Float(trimmed.parse().map_err(|_| err("a number"))?),
        toml::Value::Boolean(_) => match trimmed.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => toml::Value::Boolean(true),
            "false" | "0" | "no" | "off" => toml::Value::Boolean(false),
            _ => return Err(err("a boolean (true/false)")),
        },
        toml::Value::Array(_) => toml::Value::Array(
            value
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| toml::Value::String(item.to_owned()))
                .collect(),
        ),
        _ => toml::Value::String(value.to_owned()),
    })
}

#[cfg(test)]
mod tests;
