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
        ..etcd::EtcdOptions::default()
    };
    Ok(std::sync::Arc::new(
        etcd::EtcdBus::connect(&endpoints, options).await?,
    ))
}
