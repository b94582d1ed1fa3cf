//! Keeping the state bus in step with the database: connecting the bus
//! (etcd from `[etcd] endpoints`, else the in-process bus), and the loop
//! that runs reconciliation passes after missed writes, an empty or wiped
//! etcd, or a revision that went backwards.

use crate::domain::ControlPlane;
use crate::error::ControlPlaneError;
use memtrace_common::backoff::Backoff;
use memtrace_common::bus::StateBus;
use memtrace_common::config::EtcdConfig;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often the reconciler probes the bus revision.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How often a full pass runs even when nothing looked wrong.
const FULL_PASS_INTERVAL: Duration = Duration::from_secs(30);

/// Connects the configured bus, retrying while etcd is unreachable.
pub async fn connect_bus(config: &EtcdConfig) -> Result<Arc<dyn StateBus>, ControlPlaneError> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        match memtrace_common::bus::connect(config).await {
            Ok(bus) => return Ok(bus),
            Err(memtrace_common::bus::BusError::Rejected(reason)) => {
                return Err(ControlPlaneError::Startup(format!(
                    "[etcd] settings refused: {reason}"
                )));
            }
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::warn!(endpoints = %config.endpoints, %error, retry_in_ms = delay.as_millis() as u64, "etcd unreachable; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Runs until `stop` is cancelled: a full pass at start, then whenever a
/// publication was deferred, the bus looks wiped or was unreachable, or a
/// pass failed, and every [`FULL_PASS_INTERVAL`] regardless.
pub async fn reconcile_until(service: Arc<ControlPlane>, stop: CancellationToken) {
    tokio::select! {
        () = reconcile_forever(service) => {}
        () = stop.cancelled() => tracing::debug!("reconciler stopped"),
    }
}

async fn reconcile_forever(service: Arc<ControlPlane>) {
    let bus = service.publisher().bus().clone();
    let mut dirty = true;
    let mut last_pass = Instant::now();
    let mut last_revision = 0i64;
    let mut last_incarnation = 0u64;
    let mut unreachable_logged = false;
    loop {
        if service.publisher().take_deferred() {
            dirty = true;
        }
        if dirty || last_pass.elapsed() >= FULL_PASS_INTERVAL {
            let metrics = service.publisher().metrics();
            match service.reconcile().await {
                Ok(report) => {
                    metrics.pass(Ok((report.puts, report.deletes)));
                    dirty = false;
                }
                Err(error) => {
                    metrics.pass(Err(()));
                    tracing::warn!(%error, "reconciliation failed; will retry");
                    dirty = true;
                }
            }
            last_pass = Instant::now();
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
        match bus.incarnation().await {
            Ok(incarnation) => {
                if last_incarnation != 0 && incarnation != 0 && incarnation != last_incarnation {
                    tracing::warn!(
                        incarnation,
                        previous = last_incarnation,
                        "state bus was replaced (etcd wiped or restored); republishing"
                    );
                    dirty = true;
                }
                last_incarnation = incarnation;
            }
            Err(_) => {
                service.publisher().metrics().bus_error();
                dirty = true;
            }
        }
        match bus.current_revision().await {
            Ok(revision) => {
                if revision < last_revision {
                    tracing::warn!(
                        revision,
                        last_revision,
                        "state bus revision went backwards (etcd wiped or restored); republishing"
                    );
                    dirty = true;
                }
                if unreachable_logged {
                    tracing::info!(revision, "state bus reachable again; reconciling");
                    unreachable_logged = false;
                    dirty = true;
                }
                last_revision = revision;
            }
            Err(error) => {
                service.publisher().metrics().bus_error();
                if !unreachable_logged {
                    tracing::warn!(%error, "state bus unreachable; publications are deferred");
                    unreachable_logged = true;
                }
                dirty = true;
            }
        }
    }
}
