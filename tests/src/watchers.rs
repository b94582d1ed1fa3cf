//! In-test snapshot watchers: the data-plane library watching a real etcd
//! (or any bus), as workers do, with helpers to wait for a condition.

use memtrace_common::bus::StateBus;
use memtrace_common::bus::etcd::{EtcdBus, EtcdOptions};
use memtrace_common::fleet::{FleetKey, FleetKeyring};
use memtrace_common::state::StateKeys;
use memtrace_data_plane::snapshot::watcher::{Watcher, WatcherOptions};
use memtrace_data_plane::snapshot::{Snapshot, SnapshotBuilder, SnapshotHandle};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A running watcher; aborted on drop.
pub struct TestWatcher {
    pub handle: Arc<SnapshotHandle>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Fast settings so failure tests run in seconds.
pub fn fast_options() -> WatcherOptions {
    WatcherOptions {
        progress_interval: Duration::from_millis(500),
        progress_timeout: Duration::from_secs(2),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        lkg_path: None,
    }
}

/// An etcd bus with short timeouts (keepalive stays at the default: etcd
/// breaks streams that ping more often than its 5 s minimum).
pub async fn etcd_bus(endpoint: &str) -> anyhow::Result<Arc<dyn StateBus>> {
    let options = EtcdOptions {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(2),
        ..EtcdOptions::default()
    };
    Ok(Arc::new(
        EtcdBus::connect(&[endpoint.to_owned()], options).await?,
    ))
}

/// The fleet keyring for a base64 fleet key.
pub fn fleet(key_b64: &str) -> anyhow::Result<Arc<FleetKeyring>> {
    let key = memtrace_common::keys::parse_key("fleet", Some(key_b64))?;
    Ok(Arc::new(FleetKeyring::new(FleetKey::new(&key), Vec::new())))
}

impl TestWatcher {
    pub fn start(
        bus: Arc<dyn StateBus>,
        prefix: &str,
        fleet: Arc<FleetKeyring>,
        options: WatcherOptions,
    ) -> Self {
        let handle = Arc::new(SnapshotHandle::default());
        let watcher = Watcher::new(
            bus,
            SnapshotBuilder::new(StateKeys::new(prefix), fleet),
            handle.clone(),
            options,
        );
        Self {
            handle,
            task: tokio::spawn(watcher.run(tokio_util::sync::CancellationToken::new())),
        }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.handle.load()
    }

    /// Waits (bounded) until `condition` holds on the current snapshot.
    pub async fn wait_for(
        &self,
        what: &str,
        within: Duration,
        condition: impl Fn(&Snapshot) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if self.handle.is_ready() && condition(&self.handle.load()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "watcher never saw: {what} (within {within:?}); applied revision {}",
                    self.handle.load().applied_revision
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
