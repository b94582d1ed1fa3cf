//! The state bus: how the control plane publishes state and workers watch it.
//!
//! [`StateBus`] is the small slice of etcd's model memtrace relies on — a
//! revisioned key space with prefix reads at one revision, atomic multi-key
//! writes, ordered resumable watches with progress notifications and
//! compaction, and leased keys. Two implementations: [`etcd::EtcdBus`]
//! (production) and [`memory::MemoryBus`] (single node: the in-process bus of
//! `memtracectl dev`, and fast tests). [`conformance`] pins the behaviour both
//! must show.

pub mod conformance;
pub mod etcd;
pub mod memory;

use async_trait::async_trait;
use std::time::Duration;

/// One key with its value and the revision that last changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

/// Every key under a prefix at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixRead {
    pub kvs: Vec<KeyValue>,
    /// The store revision the read was served at (watch from `revision + 1`).
    pub revision: i64,
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Put(KeyValue),
    Delete { key: String, mod_revision: i64 },
}

impl Event {
    pub fn key(&self) -> &str {
        match self {
            Self::Put(kv) => &kv.key,
            Self::Delete { key, .. } => key,
        }
    }

    pub fn mod_revision(&self) -> i64 {
        match self {
            Self::Put(kv) => kv.mod_revision,
            Self::Delete { mod_revision, .. } => *mod_revision,
        }
    }
}

/// What a watch yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchMessage {
    /// Events in revision order; all events of one revision arrive together.
    /// `revision` is the response's header revision.
    Events { revision: i64, events: Vec<Event> },
    /// Every event up to `revision` has been delivered on this stream.
    Progress { revision: i64 },
}

/// One write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

/// A condition of [`StateBus::apply_guarded`]: `key` was last changed at
/// `mod_revision` (0: the key does not exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    pub key: String,
    pub mod_revision: i64,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The watch start revision is older than the oldest kept revision.
    #[error("revision {requested} has been compacted (compaction revision {compact_revision})")]
    Compacted {
        requested: i64,
        compact_revision: i64,
    },
    /// The bus cannot be reached (connection refused, timed out, no leader).
    #[error("state bus unavailable: {0}")]
    Unavailable(String),
    /// An established watch stream broke; resume from the last revision + 1.
    #[error("watch stream ended: {0}")]
    WatchEnded(String),
    /// A request the bus refused (too large, too many ops, bad argument).
    #[error("state bus refused the request: {0}")]
    Rejected(String),
}

/// A revisioned key space (see the module docs).
#[async_trait]
pub trait StateBus: Send + Sync + 'static {
    /// Reads every key under `prefix` at one revision.
    async fn load(&self, prefix: &str) -> Result<PrefixRead, BusError>;

    /// Watches every key under `prefix`, starting at `start_revision`
    /// (inclusive). A compacted start revision surfaces as
    /// `BusError::Compacted` from [`Watch::next`] (or from this call).
    async fn watch(&self, prefix: &str, start_revision: i64) -> Result<Box<dyn Watch>, BusError>;

    /// Applies all ops atomically (one etcd transaction); returns the
    /// revision it produced. An empty op list returns the current revision.
    async fn apply(&self, ops: Vec<Op>) -> Result<i64, BusError>;

    /// Applies all ops atomically only if every guard holds (one etcd
    /// transaction: compare, then write). `Ok(None)` when a guard failed
    /// (someone changed a guarded key since it was read): nothing was
    /// written. Bounded like [`apply`](Self::apply), guards counting as ops.
    async fn apply_guarded(&self, guards: &[Guard], ops: Vec<Op>) -> Result<Option<i64>, BusError>;

    /// The current revision of the key space.
    async fn current_revision(&self) -> Result<i64, BusError>;

    /// Identity of the key space's incarnation (etcd's cluster id). A wiped
    /// and re-created etcd gets a new one, even when its revisions have
    /// caught up with the old ones; watchers reload when it changes.
    /// `0` means unknown.
    async fn incarnation(&self) -> Result<u64, BusError> {
        Ok(0)
    }

    /// Discards history up to `revision` (tests and operators).
    async fn compact(&self, revision: i64) -> Result<(), BusError>;

    /// Puts `key` under a lease of `ttl`. The key disappears when the lease
    /// is not kept alive, or at once when the handle is revoked.
    async fn lease_put(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<Box<dyn LeasedKey>, BusError>;
}

/// An open watch stream.
#[async_trait]
pub trait Watch: Send {
    /// The next message. `Err(WatchEnded)` when the stream broke (the caller
    /// re-watches from its last revision + 1); `Err(Compacted)` when the start
    /// revision was compacted (the caller reloads).
    async fn next(&mut self) -> Result<WatchMessage, BusError>;

    /// Asks for a progress notification on this stream.
    async fn request_progress(&mut self) -> Result<(), BusError>;
}

/// A key kept alive by a lease.
#[async_trait]
pub trait LeasedKey: Send + Sync {
    /// Renews the lease (call every ttl/3). If the lease expired meanwhile,
    /// grants a new one and puts the last value again.
    async fn keep_alive(&mut self) -> Result<(), BusError>;

    /// Replaces the value, keeping the lease.
    async fn update(&mut self, value: Vec<u8>) -> Result<(), BusError>;

    /// Revokes the lease; the key disappears at once.
    async fn revoke(&mut self) -> Result<(), BusError>;
}

/// What every bus answers for a use of a revoked lease of `key` (one text,
/// so callers see the same error from both).
pub(crate) fn ensure_not_revoked(revoked: bool, key: &str) -> Result<(), BusError> {
    if revoked {
        Err(BusError::Rejected(format!("lease of {key:?} was revoked")))
    } else {
        Ok(())
    }
}

/// The bus `[etcd]` names: etcd when endpoints are set, else a fresh
/// in-process bus (single-node mode).
pub async fn connect(
    config: &crate::config::EtcdConfig,
) -> Result<std::sync::Arc<dyn StateBus>, BusError> {
    use std::time::Duration;
    let endpoints = config.endpoint_list();
    if endpoints.is_empty() {
        return Ok(std::sync::Arc::new(memory::MemoryBus::new()));
    }
    let options = etcd::EtcdOptions {
        connect_timeout: Duration::from_millis(config.connect_timeout_ms.max(1)),
        request_timeout: Duration::from_millis(config.request_timeout_ms.max(1)),
        keep_alive_interval: Duration::from_millis(config.keepalive_interval_ms.max(1)),
        keep_alive_timeout: Duration::from_millis(config.keepalive_timeout_ms.max(1)),
        user: etcd_user(config)?,
        tls: etcd_tls(config, &endpoints)?,
        ..etcd::EtcdOptions::default()
    };
    Ok(std::sync::Arc::new(
        etcd::EtcdBus::connect(&endpoints, options).await?,
    ))
}

/// Reads one file a `[etcd]` setting names; the error names the setting.
fn read_setting_file(setting: &str, path: &str) -> Result<Vec<u8>, BusError> {
    std::fs::read(path).map_err(|e| {
        BusError::Rejected(format!(
            "cannot read [etcd] {setting} ({path}): {e}; set it to a readable file (MEMTRACE_ETCD_{})",
            setting.to_ascii_uppercase()
        ))
    })
}

/// `[etcd] user` with the password read from `password_file`.
fn etcd_user(config: &crate::config::EtcdConfig) -> Result<Option<(String, String)>, BusError> {
    match (config.user.is_empty(), config.password_file.is_empty()) {
        (true, true) => Ok(None),
        (false, false) => {
            let password = read_setting_file("password_file", &config.password_file)?;
            let password = String::from_utf8(password).map_err(|_| {
                BusError::Rejected("[etcd] password_file is not UTF-8 text".into())
            })?;
            Ok(Some((
                config.user.clone(),
                password.trim_end_matches(['\r', '\n']).to_owned(),
            )))
        }
        _ => Err(BusError::Rejected(
            "[etcd] user and password_file go together: set both (MEMTRACE_ETCD_USER, MEMTRACE_ETCD_PASSWORD_FILE) or neither".into(),
        )),
    }
}

/// TLS when `ca_file` is set or an endpoint is `https://`; a client
/// certificate when `cert_file` and `key_file` are set.
fn etcd_tls(
    config: &crate::config::EtcdConfig,
    endpoints: &[String],
) -> Result<Option<etcd::EtcdTls>, BusError> {
    let https = endpoints.iter().any(|e| e.starts_with("https://"));
    let identity = match (config.cert_file.is_empty(), config.key_file.is_empty()) {
        (true, true) => None,
        (false, false) => Some((
            read_setting_file("cert_file", &config.cert_file)?,
            read_setting_file("key_file", &config.key_file)?,
        )),
        _ => {
            return Err(BusError::Rejected(
                "[etcd] cert_file and key_file go together: set both (MEMTRACE_ETCD_CERT_FILE, MEMTRACE_ETCD_KEY_FILE) or neither".into(),
            ));
        }
    };
    if !https && config.ca_file.is_empty() && identity.is_none() {
        return Ok(None);
    }
    if !https {
        return Err(BusError::Rejected(
            "[etcd] ca_file, cert_file and key_file need https:// endpoints (MEMTRACE_ETCD_ENDPOINTS)".into(),
        ));
    }
    let ca_pem = if config.ca_file.is_empty() {
        None
    } else {
        Some(read_setting_file("ca_file", &config.ca_file)?)
    };
    Ok(Some(etcd::EtcdTls { ca_pem, identity }))
}
