//! The worker's view of published state: an immutable [`Snapshot`] swapped
//! atomically behind a [`SnapshotHandle`] (readers never lock), built from
//! the bus records by [`SnapshotBuilder`] and kept current by the
//! [`watcher`]. Records must authenticate under the fleet key; refused
//! records are counted, never fatal: the previous good value of that key
//! stays (an API key whose record cannot be read is refused instead).

pub mod lkg;
mod records;
pub mod watcher;

pub use records::{ApiKeyEntry, ArcRoute, OrgEntry, Record, Rejected};

use crate::erasure::Erasure;
use arc_swap::ArcSwap;
use memtrace_common::fleet::FleetKeyring;
use memtrace_common::settings::EffectiveSettings;
use memtrace_common::state::{StateKey, StateKeys, open_record};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

/// One consistent view of published state.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every bus revision up to this one is reflected.
    pub revision: i64,
    /// Revision of the newest published change applied (what the worker reports).
    pub applied_revision: i64,
    pub orgs: HashMap<String, OrgEntry>,
    pub routes: HashMap<String, Arc<ArcRoute>>,
    pub api_keys: HashMap<String, Arc<ApiKeyEntry>>,
    /// The agent-token public keys, by key id: the control plane's (`tk_N`)
    /// and the workers' (`wk_…`, derived from the fleet key).
    pub token_keys: HashMap<String, [u8; 32]>,
    /// The erasure-receipt public keys (`rk_N`), by key id.
    pub receipt_keys: std::collections::BTreeMap<String, records::ReceiptKeyEntry>,
    /// Runtime settings: validated global values and per-org overrides.
    pub settings: EffectiveSettings,
    /// Erasures in progress, per org by erasure id: the rows they cover
    /// are hidden from every read until the control plane removes them.
    pub erasures: HashMap<String, BTreeMap<String, Arc<Erasure>>>,
    /// Ids of the workers with a live registration (their leases hold), for
    /// splitting per-org limits across the fleet. Not persisted.
    pub live_workers: BTreeSet<String>,
    /// The bus pairs this snapshot was built from (values still sealed), for
    /// the last-known-good file and for diffing reloads.
    pub raw: BTreeMap<String, Vec<u8>>,
}

impl Snapshot {
    /// The API key entry for `key_id`, if published.
    pub fn api_key(&self, key_id: &str) -> Option<&Arc<ApiKeyEntry>> {
        self.api_keys.get(key_id)
    }

    /// The Arc route of a live org.
    pub fn route(&self, org_id: &str) -> Option<&Arc<ArcRoute>> {
        match self.orgs.get(org_id) {
            Some(org) if !org.deleted => self.routes.get(org_id),
            _ => None,
        }
    }

    /// The org's erasures in progress, oldest first (ids are time-ordered).
    pub fn erasures(&self, org_id: &str) -> Vec<Arc<Erasure>> {
        self.erasures
            .get(org_id)
            .map(|e| e.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The runtime settings in force (defaults < global < per-org).
    pub fn settings(&self) -> &EffectiveSettings {
        &self.settings
    }

    /// Live workers sharing the fleet's per-org limits (at least 1: this
    /// worker counts before its own registration is seen).
    pub fn worker_count(&self) -> u64 {
        (self.live_workers.len() as u64).max(1)
    }
}

/// Applies bus pairs to a snapshot, decoding and validating each record.
pub struct SnapshotBuilder {
    keys: StateKeys,
    fleet: Arc<FleetKeyring>,
}

/// What applying a batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub applied: usize,
    /// Records not applied (unauthenticated ones included).
    pub rejected: usize,
    /// Records that failed authentication under the fleet key.
    pub unauthenticated: usize,
    /// Whether any published (non-worker) key changed.
    pub published_change: bool,
}

impl SnapshotBuilder {
    pub fn new(keys: StateKeys, fleet: Arc<FleetKeyring>) -> Self {
        Self { keys, fleet }
    }

    pub fn keys(&self) -> &StateKeys {
        &self.keys
    }

    /// Puts one pair. A record that does not authenticate under the fleet
    /// key is refused and counted, and the previous good value of its key
    /// stays; an authentic record this worker cannot read is counted too and
    /// keeps the previous value — except an API key's, which fails closed:
    /// the key is dropped (refused) until a record this worker can read
    /// arrives, since its previous entry may be the one that record revoked.
    pub fn put(&self, snapshot: &mut Snapshot, key: &str, value: &[u8], report: &mut ApplyReport) {
        self.put_pair(snapshot, key, value, report);
    }

    fn put_pair(
        &self,
        snapshot: &mut Snapshot,
        key: &str,
        value: &[u8],
        report: &mut ApplyReport,
    ) -> Put {
        let Some(parsed) = self.keys.parse(key) else {
            return Put::Applied;
        };
        if let StateKey::Worker { worker_id } = parsed {
            snapshot.live_workers.insert(worker_id);
            return Put::Applied;
        }
        report.published_change = true;
        let path = self.keys.relative(key).unwrap_or(key);
        match records::decode(&parsed, path, value, &self.fleet) {
            Ok(record) => {
                snapshot.raw.insert(key.to_owned(), value.to_vec());
                apply_record(snapshot, parsed, record);
                report.applied += 1;
                Put::Applied
            }
            Err(Rejected::Invalid(reason)) if matches!(parsed, StateKey::ApiKey { .. }) => {
                tracing::warn!(key, %reason, "unreadable api key record: the key is refused until a readable record arrives");
                if let StateKey::ApiKey { key_id } = &parsed {
                    snapshot.api_keys.remove(key_id);
                }
                snapshot.raw.remove(key);
                report.rejected += 1;
                Put::Dropped
            }
            Err(rejected) => {
                tracing::warn!(key, reason = %rejected, "published record refused; keeping the previous value");
                report.rejected += 1;
                if matches!(rejected, Rejected::Unauthenticated(_)) {
                    report.unauthenticated += 1;
                }
                Put::KeptPrevious
            }
        }
    }

    /// Deletes one key.
    pub fn delete(&self, snapshot: &mut Snapshot, key: &str, report: &mut ApplyReport) {
        let Some(parsed) = self.keys.parse(key) else {
            return;
        };
        if let StateKey::Worker { worker_id } = parsed {
            snapshot.live_workers.remove(&worker_id);
            return;
        }
        report.published_change = true;
        snapshot.raw.remove(key);
        match parsed {
            StateKey::Org { org_id } => {
                snapshot.orgs.remove(&org_id);
            }
            StateKey::ArcRoute { org_id } => {
                snapshot.routes.remove(&org_id);
            }
            StateKey::ApiKey { key_id } => {
                snapshot.api_keys.remove(&key_id);
            }
            StateKey::TokenKey { key_id } => {
                snapshot.token_keys.remove(&key_id);
            }
            StateKey::ReceiptKey { key_id } => {
                snapshot.receipt_keys.remove(&key_id);
            }
            StateKey::GlobalSetting { key } => {
                snapshot.settings.remove(None, &key);
            }
            StateKey::OrgSetting { org_id, key } => {
                snapshot.settings.remove(Some(&org_id), &key);
            }
            StateKey::Erasure { org_id, erasure_id } => {
                if let Some(org) = snapshot.erasures.get_mut(&org_id) {
                    org.remove(&erasure_id);
                    if org.is_empty() {
                        snapshot.erasures.remove(&org_id);
                    }
                }
            }
            StateKey::Worker { .. } | StateKey::PublishedMarker | StateKey::ReconciledMarker => {}
        }
        report.applied += 1;
    }

    /// Builds a snapshot from a full load, reusing the records of `previous`
    /// whose bytes did not change (a reload is diffed into the live snapshot).
    pub fn rebuild(
        &self,
        previous: &Snapshot,
        pairs: &[(String, Vec<u8>)],
        revision: i64,
    ) -> (Snapshot, ApplyReport) {
        let mut next = Snapshot {
            revision,
            applied_revision: previous.applied_revision,
            ..Snapshot::default()
        };
        let mut report = ApplyReport::default();
        for (key, value) in pairs {
            if previous.raw.get(key) == Some(value) {
                self.copy_entry(previous, &mut next, key);
                continue;
            }
            if self.put_pair(&mut next, key, value, &mut report) == Put::KeptPrevious {
                // a refused new record: keep the last good value of that key
                self.copy_entry(previous, &mut next, key);
            }
        }
        report.published_change = previous.raw != next.raw;
        if report.published_change {
            next.applied_revision = revision;
        }
        (next, report)
    }
}

fn apply_record(snapshot: &mut Snapshot, key: StateKey, record: Record) {
    match (key, record) {
        (StateKey::Org { org_id }, Record::Org(org)) => {
            snapshot.orgs.insert(org_id, org);
        }
        (StateKey::ArcRoute { org_id }, Record::Route(route)) => {
            snapshot.routes.insert(org_id, Arc::new(route));
        }
        (StateKey::ApiKey { key_id }, Record::ApiKey(entry)) => {
            snapshot.api_keys.insert(key_id, Arc::new(entry));
        }
        (StateKey::TokenKey { key_id }, Record::TokenKey(public_key)) => {
            snapshot.token_keys.insert(key_id, public_key);
        }
        (StateKey::ReceiptKey { key_id }, Record::ReceiptKey(entry)) => {
            snapshot.receipt_keys.insert(key_id, entry);
        }
        // decode() validated the value against the registry already
        (StateKey::GlobalSetting { key }, Record::Setting(json)) => {
            let _ = snapshot.settings.apply_json(None, &key, &json);
        }
        (StateKey::OrgSetting { org_id, key }, Record::Setting(json)) => {
            let _ = snapshot.settings.apply_json(Some(&org_id), &key, &json);
        }
        (StateKey::Erasure { org_id, erasure_id }, Record::Erasure(erasure)) => {
            snapshot
                .erasures
                .entry(org_id)
                .or_default()
                .insert(erasure_id, Arc::new(erasure));
        }
        _ => {}
    }
}

/// What [`SnapshotBuilder::put`] did with a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Put {
    Applied,
    /// Refused; the key's previous good value stands.
    KeptPrevious,
    /// Refused and the key's entry removed (fail closed).
    Dropped,
}

impl SnapshotBuilder {
    /// Copies the decoded entry for `key` from `from` (when it has one).
    fn copy_entry(&self, from: &Snapshot, to: &mut Snapshot, key: &str) {
        let Some(raw) = from.raw.get(key) else {
            return;
        };
        let copied = match self.keys.parse(key) {
            Some(StateKey::Org { org_id }) => from.orgs.get(&org_id).map(|o| {
                to.orgs.insert(org_id, o.clone());
            }),
            Some(StateKey::ArcRoute { org_id }) => from.routes.get(&org_id).map(|r| {
                to.routes.insert(org_id, r.clone());
            }),
            Some(StateKey::ApiKey { key_id }) => from.api_keys.get(&key_id).map(|k| {
                to.api_keys.insert(key_id, k.clone());
            }),
            Some(StateKey::TokenKey { key_id }) => from.token_keys.get(&key_id).map(|k| {
                to.token_keys.insert(key_id, *k);
            }),
            Some(StateKey::ReceiptKey { key_id }) => from.receipt_keys.get(&key_id).map(|k| {
                to.receipt_keys.insert(key_id, k.clone());
            }),
            Some(StateKey::GlobalSetting { key: name }) => {
                self.copy_setting(to, None, key, &name, raw)
            }
            Some(StateKey::OrgSetting { org_id, key: name }) => {
                self.copy_setting(to, Some(&org_id), key, &name, raw)
            }
            Some(StateKey::Erasure { org_id, erasure_id }) => from
                .erasures
                .get(&org_id)
                .and_then(|org| org.get(&erasure_id))
                .map(|e| {
                    to.erasures
                        .entry(org_id)
                        .or_default()
                        .insert(erasure_id, e.clone());
                }),
            Some(StateKey::PublishedMarker | StateKey::ReconciledMarker) => Some(()),
            _ => None,
        };
        if copied.is_some() {
            to.raw.insert(key.to_owned(), raw.clone());
        }
    }

    /// Re-applies a setting from its (previously verified and validated)
    /// stored bytes.
    fn copy_setting(
        &self,
        to: &mut Snapshot,
        org_id: Option<&str>,
        key: &str,
        name: &str,
        raw: &[u8],
    ) -> Option<()> {
        use prost::Message;
        let path = self.keys.relative(key).unwrap_or(key);
        let record = open_record(&self.fleet, path, raw).ok()?;
        let record = memtrace_proto::state::v1::SettingRecord::decode(record).ok()?;
        to.settings
            .apply_json(org_id, name, &record.value_json)
            .ok()
    }
}

/// The live snapshot plus the freshness figures health and metrics report.
#[derive(Debug)]
pub struct SnapshotHandle {
    current: ArcSwap<Snapshot>,
    ready: AtomicBool,
    metrics: SnapshotMetrics,
    last_apply_ms: AtomicI64,
    started: Instant,
}

/// The watcher's metrics (registered by [`SnapshotHandle::register_metrics`]).
#[derive(Debug, Clone, Default)]
struct SnapshotMetrics {
    /// Incremental applies of published changes (hot reloads).
    config_reloads: Counter,
    /// Full loads (bootstrap, compaction, bus replaced, last-known-good).
    snapshot_reloads: Counter,
    /// Published records skipped as invalid.
    rejected_records: Counter,
    /// Of those, records that failed authentication under the fleet key.
    unauthenticated_records: Counter,
    /// Revision of the newest published change applied.
    applied_revision: Gauge,
    /// Seconds since the last change or progress notification was applied.
    staleness_seconds: Gauge<f64, AtomicU64>,
    /// 1 once the first full snapshot is applied.
    ready: Gauge,
    /// Failed calls to the state bus, by what the watcher was doing.
    bus_errors: Family<BusOpLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BusOpLabels {
    op: &'static str,
}

impl Default for SnapshotHandle {
    fn default() -> Self {
        Self {
            current: ArcSwap::from_pointee(Snapshot::default()),
            ready: AtomicBool::new(false),
            metrics: SnapshotMetrics::default(),
            last_apply_ms: AtomicI64::new(0),
            started: Instant::now(),
        }
    }
}

impl SnapshotHandle {
    /// The current snapshot (lock-free).
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// True once a full snapshot (from the bus or the last-known-good file) is applied.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn rejected_total(&self) -> u64 {
        self.metrics.rejected_records.get()
    }

    /// Records refused because they did not authenticate.
    pub fn unauthenticated_total(&self) -> u64 {
        self.metrics.unauthenticated_records.get()
    }

    pub fn reloads_total(&self) -> u64 {
        self.metrics.snapshot_reloads.get()
    }

    /// Incremental applies of published changes (`config_reloads_total`).
    pub fn applies_total(&self) -> u64 {
        self.metrics.config_reloads.get()
    }

    /// Adds the watcher's metrics to `registry` (names prefixed `memtrace_`).
    pub fn register_metrics(&self, registry: &mut Registry) {
        let m = &self.metrics;
        let sub = registry.sub_registry_with_prefix("memtrace");
        sub.register(
            "config_reloads",
            "published changes applied without restart",
            m.config_reloads.clone(),
        );
        sub.register(
            "snapshot_reloads",
            "full snapshot loads (bootstrap, compaction, bus replaced)",
            m.snapshot_reloads.clone(),
        );
        sub.register(
            "snapshot_rejected_records",
            "published records skipped as invalid",
            m.rejected_records.clone(),
        );
        sub.register(
            "snapshot_unauthenticated_records",
            "published records refused because they did not authenticate under the fleet key",
            m.unauthenticated_records.clone(),
        );
        sub.register(
            "snapshot_applied_revision",
            "revision of the newest published change applied",
            m.applied_revision.clone(),
        );
        sub.register(
            "snapshot_staleness_seconds",
            "seconds since the last change or progress notification",
            m.staleness_seconds.clone(),
        );
        sub.register(
            "snapshot_ready",
            "1 once the first full snapshot is applied",
            m.ready.clone(),
        );
        sub.register(
            "snapshot_bus_errors",
            "failed state bus calls of the snapshot watcher, by operation \
             (load, probe, watch_open, watch_broken); the last snapshot keeps serving",
            m.bus_errors.clone(),
        );
        // exported at 0 from the start, so a rate over them is defined
        for op in ["load", "probe", "watch_open", "watch_broken"] {
            let _ = m.bus_errors.get_or_create(&BusOpLabels { op });
        }
    }

    /// Counts a failed bus call of the watcher (`op`: `load`, `probe`,
    /// `watch_open`, `watch_broken`).
    pub(crate) fn count_bus_error(&self, op: &'static str) {
        self.metrics
            .bus_errors
            .get_or_create(&BusOpLabels { op })
            .inc();
    }

    /// Refreshes the gauges that are computed at scrape time.
    pub fn refresh_metrics(&self) {
        let staleness = self.staleness_ms().map_or(-1.0, |ms| ms as f64 / 1000.0);
        self.metrics.staleness_seconds.set(staleness);
    }

    /// Milliseconds since the last applied change or progress, `None` before any.
    pub fn staleness_ms(&self) -> Option<u64> {
        let last = self.last_apply_ms.load(Ordering::Relaxed);
        (last > 0).then(|| {
            let now = i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX);
            u64::try_from(now.saturating_sub(last)).unwrap_or(0)
        })
    }

    pub(crate) fn store(&self, snapshot: Snapshot, report: &ApplyReport, full: bool) {
        self.metrics.rejected_records.inc_by(report.rejected as u64);
        self.metrics
            .unauthenticated_records
            .inc_by(report.unauthenticated as u64);
        if full {
            self.metrics.snapshot_reloads.inc();
        }
        self.metrics.applied_revision.set(snapshot.applied_revision);
        // `log.level` is hot: the process's filter follows the snapshot
        memtrace_common::telemetry::apply_level(&snapshot.settings().log_level());
        // trace export is restart-required: started by the first snapshot
        // that names an endpoint (unless OTEL_EXPORTER_OTLP_ENDPOINT did)
        let (endpoint, headers) = snapshot.settings().otlp();
        memtrace_common::telemetry::traces::apply_settings(&endpoint, &headers, "memtrace-worker");
        self.current.store(Arc::new(snapshot));
        self.touch();
        if full {
            self.ready.store(true, Ordering::Release);
            self.metrics.ready.set(1);
        }
    }

    pub(crate) fn count_apply(&self) {
        self.metrics.config_reloads.inc();
    }

    /// Records liveness without a change (a progress notification).
    pub(crate) fn touch(&self) {
        let now = i64::try_from(self.started.elapsed().as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        self.last_apply_ms.store(now, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_exposed_in_prometheus_text() {
        let handle = SnapshotHandle::default();
        let mut registry = Registry::default();
        handle.register_metrics(&mut registry);
        let snapshot = Snapshot {
            applied_revision: 42,
            ..Snapshot::default()
        };
        let report = ApplyReport {
            applied: 1,
            rejected: 2,
            unauthenticated: 1,
            published_change: true,
        };
        handle.store(snapshot, &report, true);
        handle.count_apply();
        handle.refresh_metrics();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for line in [
            "memtrace_config_reloads_total 1",
            "memtrace_snapshot_reloads_total 1",
            "memtrace_snapshot_rejected_records_total 2",
            "memtrace_snapshot_unauthenticated_records_total 1",
            "memtrace_snapshot_applied_revision 42",
            "memtrace_snapshot_ready 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        assert!(
            text.contains("memtrace_snapshot_staleness_seconds "),
            "{text}"
        );
    }

    #[test]
    fn worker_registrations_count_live_workers_without_publishing() {
        let keys = StateKeys::new("/m/v1/");
        let builder = SnapshotBuilder::new(
            keys.clone(),
            Arc::new(memtrace_common::fleet::ephemeral_keyring()),
        );
        let mut snapshot = Snapshot::default();
        assert_eq!(snapshot.worker_count(), 1, "a lone worker counts itself");
        let mut report = ApplyReport::default();
        builder.put(&mut snapshot, &keys.worker("w-a"), b"x", &mut report);
        builder.put(&mut snapshot, &keys.worker("w-b"), b"x", &mut report);
        builder.put(&mut snapshot, &keys.worker("w-a"), b"y", &mut report);
        assert_eq!(snapshot.worker_count(), 2);
        builder.delete(&mut snapshot, &keys.worker("w-a"), &mut report);
        assert_eq!(snapshot.worker_count(), 1);
        assert!(
            !report.published_change,
            "registrations are not published state"
        );
        assert!(
            snapshot.raw.is_empty(),
            "registrations stay out of the lkg file"
        );
        let pairs = vec![
            (keys.worker("w-c"), b"x".to_vec()),
            (keys.worker("w-d"), b"x".to_vec()),
        ];
        let (rebuilt, _) = builder.rebuild(&snapshot, &pairs, 9);
        assert_eq!(
            rebuilt
                .live_workers
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            ["w-c", "w-d"]
        );
    }
}
