//! Erasure jobs: the physical erasure of memories a tenant deleted, and of
//! a whole org when it is deleted.
//!
//! A worker requests an erasure by writing a signed `ErasureRecord`
//! (state REQUESTED) under `erasures/<org>/<id>` on the state bus; while a
//! record is there, workers hide the rows it covers. The control plane
//! ([`run_erasures_until`], every [`POLL_INTERVAL`]):
//!
//! 1. **adopts** ([`adopt`]): authenticates each record with the fleet
//!    keyring (refused ones are logged and counted, never adopted), inserts
//!    unknown ones into the `erasures` table (state `requested`;
//!    idempotent) and republishes the record as RUNNING (guarded on its
//!    mod_revision); jobs of the database whose record is missing (etcd
//!    wiped) are republished, since the database is the truth once adopted;
//! 2. **runs** ([`run`]) due jobs (at most [`MAX_RUNNING`] at once), each under a claim in the
//!    database (so replicas sharing a PostgreSQL never run one job at once):
//!    delete in the org's Arc, wait `[control_plane]
//!    erasure_recheck_delay_ms`, delete again (rows buffered in Arc's ingest
//!    buffer during the first delete are caught), verify with a count (0
//!    expected; else another round, at most [`MAX_ROUNDS`]); then store the
//!    rows removed, the verification and the receipt
//!    ([`receipt::ReportSigner`]), audit `erasure.done` and remove the bus
//!    record.
//!
//! Two sweeps request jobs themselves: [`retention`] (memories past their
//! org's retention) and [`expiry`] (memories past their own expiry).
//!
//! Arc refusing (403/401) blocks the job with Arc's message (published on
//! the record: the rows stay hidden), retried after `[control_plane]
//! erasure_blocked_retry_ms`; Arc unreachable or 5xx retries with jittered
//! backoff; other failures mark it `failed` with the detail and retry with
//! a longer backoff. Nothing is dropped: only `done` ends a job.

mod adopt;
pub(crate) mod arc;
mod deliver;
mod embedded;
pub mod expiry;
mod literals;
pub mod metrics;
pub mod receipt;
pub mod retention;
mod run;
pub(crate) mod scope;
#[cfg(test)]
mod tests;

pub use metrics::ErasureMetrics;
pub use receipt::{
    ErasureReport, ErasureTarget, ReportSigner, TableVerification, UnsignedReceipts,
};

use super::ControlPlane;
use crate::error::{ControlPlaneError, Result};
use crate::store::{ErasureFilter, ErasureJobRow};
use memtrace_common::config::MemtraceConfig;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often the runner reads the bus and looks for due jobs.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Delete-wait-delete-verify rounds in one run before it is `failed`.
pub const MAX_ROUNDS: u32 = 3;
/// Jobs one replica runs at once (each mostly waits: for Arc, and for
/// the re-check delay).
pub const MAX_RUNNING: usize = 4;
/// How often `memtrace_erasures{state}` is recounted.
const COUNT_INTERVAL: Duration = Duration::from_secs(10);

/// The runner's timing, from `[control_plane]`, and where the embedded
/// store is when this process can see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasureSettings {
    pub recheck_delay: Duration,
    pub blocked_retry: Duration,
    pub claim_ttl: Duration,
    /// How often memories past their org's retention are swept.
    pub retention_sweep: Duration,
    pub max_rounds: u32,
    /// `[worker] embedded_dir` when set (single node: the control plane
    /// runs with the worker's config): orgs without an Arc binding are
    /// erased there.
    pub embedded_dir: Option<PathBuf>,
    /// The embedded memory table (`[arc] measurement`).
    pub embedded_measurement: String,
}

impl Default for ErasureSettings {
    fn default() -> Self {
        Self::from_config(&MemtraceConfig::default())
    }
}

impl ErasureSettings {
    pub fn from_config(config: &MemtraceConfig) -> Self {
        let cp = &config.control_plane;
        let dir = config.worker.embedded_dir.trim();
        Self {
            recheck_delay: Duration::from_millis(cp.erasure_recheck_delay_ms),
            blocked_retry: Duration::from_millis(cp.erasure_blocked_retry_ms.max(1000)),
            claim_ttl: Duration::from_millis(cp.erasure_claim_ttl_ms.max(1000)),
            retention_sweep: Duration::from_millis(cp.erasure_retention_sweep_ms.max(100)),
            max_rounds: MAX_ROUNDS,
            embedded_dir: (!dir.is_empty()).then(|| PathBuf::from(dir)),
            embedded_measurement: config.arc.measurement.clone(),
        }
    }
}

/// What the runner needs besides the domain service.
pub struct ErasureRuntime {
    pub(crate) settings: ErasureSettings,
    pub(crate) signer: Arc<dyn ReportSigner>,
    pub(crate) metrics: ErasureMetrics,
    /// This replica's claim name.
    pub(crate) owner: String,
    pub(crate) http: reqwest::Client,
    /// Refused bus records (key, mod_revision) already logged and counted.
    pub(crate) refused_seen: std::sync::Mutex<std::collections::HashSet<(String, i64)>>,
}

impl Default for ErasureRuntime {
    fn default() -> Self {
        Self::new(
            ErasureSettings::default(),
            Arc::new(UnsignedReceipts),
            ErasureMetrics::default(),
        )
    }
}

impl ErasureRuntime {
    /// `signer` turns a done job's report into its receipt: the one place
    /// the receipt signer is wired.
    pub fn new(
        settings: ErasureSettings,
        signer: Arc<dyn ReportSigner>,
        metrics: ErasureMetrics,
    ) -> Self {
        memtrace_common::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(300))
            .build()
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "cannot build the erasure client with timeouts; using defaults");
                reqwest::Client::new()
            });
        let host = std::env::var("HOSTNAME").unwrap_or_default();
        let owner = format!(
            "{}{}{}",
            host,
            if host.is_empty() { "" } else { "/" },
            memtrace_common::ids::new_id("cp")
        );
        Self {
            settings,
            signer,
            metrics,
            owner,
            http,
            refused_seen: std::sync::Mutex::default(),
        }
    }
}

/// A fresh erasure id: `era_` + 26 lowercase hex, time-ordered (13 hex
/// digits of milliseconds, 13 random).
pub fn new_erasure_id() -> String {
    use rand::Rng as _;
    let ms = u64::try_from(memtrace_common::clock::now_ms()).unwrap_or_default();
    let random: u64 = rand::rng().random_range(0..(1u64 << 52));
    format!("era_{:013x}{random:013x}", ms & ((1u64 << 52) - 1))
}

impl ControlPlane {
    /// Uses `runtime` for erasure jobs (settings, receipt signer, metrics).
    pub fn with_erasure(mut self, runtime: ErasureRuntime) -> Self {
        self.erasure = Arc::new(runtime);
        self
    }

    /// Jobs, newest first, optionally of one org and in one state.
    pub async fn list_erasures(
        &self,
        org_id: Option<String>,
        state: Option<String>,
    ) -> Result<Vec<ErasureJobRow>> {
        if let Some(s) = &state
            && !metrics::STATES.contains(&s.as_str())
        {
            return Err(ControlPlaneError::invalid(
                "state",
                "must be requested, running, blocked, done or failed",
            ));
        }
        Ok(self
            .store
            .list_erasures(&ErasureFilter { org_id, state })
            .await?)
    }

    pub async fn get_erasure(&self, id: &str) -> Result<ErasureJobRow> {
        self.store
            .get_erasure(id)
            .await?
            .ok_or_else(|| ControlPlaneError::ErasureNotFound(id.to_owned()))
    }

    async fn count_erasures(&self) {
        match self.store.count_erasures().await {
            Ok(found) => {
                let counts: Vec<(&'static str, i64)> = metrics::STATES
                    .iter()
                    .map(|s| {
                        let n = found
                            .iter()
                            .find(|(state, _)| state == s)
                            .map_or(0, |(_, n)| *n);
                        (*s, n)
                    })
                    .collect();
                self.erasure.metrics.set_counts(&counts);
            }
            Err(error) => tracing::warn!(%error, "cannot count erasure jobs"),
        }
    }
}

/// Adopts and runs erasure jobs until `stop` is cancelled, at most
/// [`MAX_RUNNING`] at once (a job in the middle of its re-check wait
/// releases its claim, so the next start resumes it at once).
pub async fn run_erasures_until(service: Arc<ControlPlane>, stop: CancellationToken) {
    let mut counted: Option<Instant> = None;
    let mut swept: Option<Instant> = None;
    let mut running = tokio::task::JoinSet::new();
    loop {
        if let Err(error) = service.adopt_erasures().await {
            tracing::warn!(%error, "erasure records not read; retrying");
        }
        while running.try_join_next().is_some() {}
        let free = MAX_RUNNING.saturating_sub(running.len());
        if free > 0 && !stop.is_cancelled() {
            for job in service.claim_due_erasures(free).await {
                let (service, stop) = (service.clone(), stop.clone());
                running.spawn(async move { service.run_erasure(job, &stop).await });
            }
        }
        let sweep_every = service.erasure.settings.retention_sweep;
        if !stop.is_cancelled() && swept.is_none_or(|at| at.elapsed() >= sweep_every) {
            service.sweep_retention().await;
            service.sweep_expiry().await;
            swept = Some(Instant::now());
        }
        if counted.is_none_or(|at| at.elapsed() >= COUNT_INTERVAL) {
            service.count_erasures().await;
            counted = Some(Instant::now());
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
    while running.join_next().await.is_some() {}
    tracing::debug!("erasure runner stopped");
}
