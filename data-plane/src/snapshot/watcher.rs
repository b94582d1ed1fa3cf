//! Keeps a [`SnapshotHandle`] in step with the bus, with etcd's discipline:
//!
//! * bootstrap = one prefix read at revision R, then watch from R + 1;
//! * the resume revision advances only on events or progress notifications
//!   from the same stream; a progress request every `progress_interval` is the
//!   liveness probe (no answer within `progress_timeout` = dead stream);
//! * compaction, or a revision going backwards (etcd wiped or restored),
//!   triggers a full reload diffed into the live snapshot — unless the bus
//!   holds nothing published (no publication marker) while the snapshot
//!   does: then the last snapshot keeps serving until the control plane
//!   has republished;
//! * a broken stream is re-watched from the last revision + 1 after a
//!   jittered backoff; while the bus is unreachable the last snapshot keeps
//!   serving, indefinitely;
//! * optionally the last-known-good file lets a restarted worker serve before
//!   the bus answers.

use super::{ApplyReport, Snapshot, SnapshotBuilder, SnapshotHandle, lkg};
use memtrace_common::backoff::Backoff;
use memtrace_common::bus::{BusError, Event, StateBus, Watch, WatchMessage};
use memtrace_common::state::StateKey;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Tuning of a [`Watcher`].
#[derive(Debug, Clone)]
pub struct WatcherOptions {
    pub progress_interval: Duration,
    pub progress_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Where to keep the last-known-good snapshot, if anywhere.
    pub lkg_path: Option<PathBuf>,
}

impl Default for WatcherOptions {
    fn default() -> Self {
        Self {
            progress_interval: Duration::from_secs(5),
            progress_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            lkg_path: None,
        }
    }
}

/// Why a watch stream stopped being consumed.
enum Ended {
    Compacted,
    Backwards { seen: i64, ours: i64 },
    Broken(String),
}

/// The snapshot watcher: [`Watcher::run`] keeps the handle current until
/// its stop token is cancelled.
pub struct Watcher {
    bus: Arc<dyn StateBus>,
    builder: SnapshotBuilder,
    handle: Arc<SnapshotHandle>,
    options: WatcherOptions,
    /// Every event up to here was delivered (events or progress).
    resume: i64,
    /// The bus incarnation the snapshot was loaded from (0 = unknown).
    incarnation: u64,
    backoff: Backoff,
}

impl Watcher {
    pub fn new(
        bus: Arc<dyn StateBus>,
        builder: SnapshotBuilder,
        handle: Arc<SnapshotHandle>,
        options: WatcherOptions,
    ) -> Self {
        let backoff = Backoff::new(options.backoff_min, options.backoff_max);
        Self {
            bus,
            builder,
            handle,
            options,
            resume: 0,
            incarnation: 0,
            backoff,
        }
    }

    /// Watches until `stop` is cancelled. Stopping between two awaits is
    /// safe: the snapshot is swapped whole and the last-known-good file is
    /// replaced atomically.
    pub async fn run(self, stop: CancellationToken) {
        tokio::select! {
            () = self.watch_forever() => {}
            () = stop.cancelled() => tracing::debug!("snapshot watcher stopped"),
        }
    }

    async fn watch_forever(mut self) {
        self.load_lkg();
        let mut need_reload = true;
        loop {
            if need_reload {
                match self.reload().await {
                    Ok(()) => need_reload = false,
                    Err(error) => {
                        self.handle.count_bus_error("load");
                        tracing::warn!(%error, "snapshot load failed; serving the last snapshot and retrying");
                        self.sleep_backoff().await;
                        continue;
                    }
                }
            }
            match self.bus_replaced().await {
                Ok(false) => {}
                Ok(true) => {
                    need_reload = true;
                    continue;
                }
                Err(error) => {
                    self.handle.count_bus_error("probe");
                    tracing::warn!(%error, "state bus unreachable; serving the last snapshot");
                    self.sleep_backoff().await;
                    continue;
                }
            }
            let watch = match self
                .bus
                .watch(self.builder.keys().prefix(), self.resume + 1)
                .await
            {
                Ok(watch) => watch,
                Err(BusError::Compacted { .. }) => {
                    need_reload = true;
                    continue;
                }
                Err(error) => {
                    self.handle.count_bus_error("watch_open");
                    tracing::warn!(%error, "cannot open the watch; retrying");
                    self.sleep_backoff().await;
                    continue;
                }
            };
            match self.consume(watch).await {
                Ended::Compacted => {
                    tracing::info!(
                        resume = self.resume,
                        "watch start revision compacted; reloading"
                    );
                    need_reload = true;
                }
                Ended::Backwards { seen, ours } => {
                    tracing::warn!(seen, ours, "bus revision went backwards; reloading");
                    need_reload = true;
                }
                Ended::Broken(reason) => {
                    self.handle.count_bus_error("watch_broken");
                    tracing::warn!(%reason, resume = self.resume, "watch stream broke; re-watching");
                    self.sleep_backoff().await;
                }
            }
        }
    }

    /// Whether the bus is not the one the snapshot came from: a new
    /// incarnation (etcd wiped or restored), or a revision below ours. Either
    /// way a watch from our revision would miss what the bus holds.
    async fn bus_replaced(&self) -> Result<bool, BusError> {
        let incarnation = self.bus.incarnation().await?;
        if incarnation != 0 && self.incarnation != 0 && incarnation != self.incarnation {
            tracing::warn!(
                incarnation,
                previous = self.incarnation,
                "state bus was replaced (etcd wiped or restored); reloading"
            );
            return Ok(true);
        }
        let current = self.bus.current_revision().await?;
        if current < self.resume {
            tracing::warn!(
                current,
                ours = self.resume,
                "bus revision went backwards; reloading"
            );
            return Ok(true);
        }
        Ok(false)
    }

    fn load_lkg(&mut self) {
        let Some(path) = &self.options.lkg_path else {
            return;
        };
        let Some(saved) = lkg::read(path) else {
            return;
        };
        let (snapshot, report) =
            self.builder
                .rebuild(&Snapshot::default(), &saved.pairs, saved.revision);
        tracing::info!(
            revision = saved.revision,
            keys = saved.pairs.len(),
            "serving the last-known-good snapshot until the bus answers"
        );
        self.resume = saved.revision;
        self.handle.store(snapshot, &report, true);
    }

    async fn reload(&mut self) -> Result<(), BusError> {
        let incarnation = self.bus.incarnation().await?;
        let loaded = self.bus.load(self.builder.keys().prefix()).await?;
        let pairs: Vec<(String, Vec<u8>)> = loaded
            .kvs
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect();
        let previous = self.handle.load();
        // Only a full reconciliation pass writes this marker, in its last
        // transaction. A bus without it, after we applied published state,
        // is etcd wiped (or restored empty) before the control plane
        // republished everything — it may already hold an admin change made
        // since, but nothing else: applying it would drop every other key,
        // org and route until then. Keep serving the last snapshot instead.
        let marker = self.builder.keys().reconciled_marker();
        if !previous.raw.is_empty() && !pairs.iter().any(|(k, _)| *k == marker) {
            tracing::warn!(
                revision = loaded.revision,
                keys = pairs.len(),
                "the state bus holds nothing published (etcd wiped or restored empty); \
                 serving the last snapshot until the control plane republishes"
            );
            return Err(BusError::Unavailable(
                "nothing published on the state bus yet".into(),
            ));
        }
        let (snapshot, report) = self.builder.rebuild(&previous, &pairs, loaded.revision);
        tracing::info!(
            revision = loaded.revision,
            keys = pairs.len(),
            rejected = report.rejected,
            changed = report.published_change,
            "snapshot loaded"
        );
        self.resume = loaded.revision;
        self.incarnation = incarnation;
        self.backoff.reset();
        let changed = report.published_change || !self.handle.is_ready();
        self.handle.store(snapshot, &report, true);
        if changed {
            self.save_lkg();
        }
        Ok(())
    }

    async fn consume(&mut self, mut watch: Box<dyn Watch>) -> Ended {
        let mut tick = tokio::time::interval(self.options.progress_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut awaiting: Option<Instant> = None;
        loop {
            tokio::select! {
                message = watch.next() => {
                    awaiting = None;
                    match message {
                        Ok(WatchMessage::Events { revision, events }) => {
                            if revision < self.resume {
                                return Ended::Backwards { seen: revision, ours: self.resume };
                            }
                            self.backoff.reset();
                            self.apply_events(events);
                        }
                        Ok(WatchMessage::Progress { revision }) => {
                            if revision < self.resume {
                                return Ended::Backwards { seen: revision, ours: self.resume };
                            }
                            self.resume = revision;
                            self.handle.touch();
                        }
                        Err(BusError::Compacted { .. }) => return Ended::Compacted,
                        Err(error) => return Ended::Broken(error.to_string()),
                    }
                }
                _ = tick.tick() => {
                    if let Some(since) = awaiting {
                        if since.elapsed() >= self.options.progress_timeout {
                            return Ended::Broken(format!("no progress notification within {:?}", self.options.progress_timeout));
                        }
                        continue;
                    }
                    if let Err(error) = watch.request_progress().await {
                        return Ended::Broken(error.to_string());
                    }
                    awaiting = Some(Instant::now());
                }
            }
        }
    }

    fn apply_events(&mut self, events: Vec<Event>) {
        let Some(last) = events.iter().map(Event::mod_revision).max() else {
            return;
        };
        let keys = self.builder.keys();
        let published: Vec<&Event> = events
            .iter()
            .filter(|e| !matches!(keys.parse(e.key()), None | Some(StateKey::Worker { .. })))
            .collect();
        self.resume = self.resume.max(last);
        if published.is_empty() {
            self.handle.touch();
            return;
        }
        let current = self.handle.load();
        let mut next = (*current).clone();
        let mut report = ApplyReport::default();
        for event in &published {
            match event {
                Event::Put(kv) => self.builder.put(&mut next, &kv.key, &kv.value, &mut report),
                Event::Delete { key, .. } => self.builder.delete(&mut next, key, &mut report),
            }
        }
        next.revision = self.resume;
        next.applied_revision = published
            .iter()
            .map(|e| e.mod_revision())
            .max()
            .unwrap_or(last);
        tracing::debug!(
            revision = next.applied_revision,
            applied = report.applied,
            rejected = report.rejected,
            "snapshot updated"
        );
        self.handle.store(next, &report, false);
        self.handle.count_apply();
        self.save_lkg();
    }

    fn save_lkg(&self) {
        let Some(path) = self.options.lkg_path.clone() else {
            return;
        };
        let snapshot = self.handle.load();
        let pairs: Vec<(&String, &Vec<u8>)> = snapshot.raw.iter().collect();
        if let Err(error) = lkg::write(&path, snapshot.revision, &pairs) {
            tracing::warn!(path = %path.display(), %error, "cannot write the last-known-good snapshot");
        }
    }

    async fn sleep_backoff(&mut self) {
        tokio::time::sleep(self.backoff.next_delay()).await;
    }
}
