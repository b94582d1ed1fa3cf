//! Reachability of the tenants' Arc instances, as the worker sees them: a
//! background prober calls `GET {url}/health` on every distinct Arc URL in
//! the live snapshot (bounded concurrency, one probe per URL however many
//! orgs share it) and keeps the last answer. `/health`, `/ready` and
//! `/metrics` report it as counts of orgs (`arc: {reachable, unreachable}`),
//! never org ids: the three share the API's port and need no key, so a list
//! of org ids there would tell anyone who the tenants are (the original's
//! `arc: {org_id: bool}`). It never makes the worker unready — an
//! unreachable Arc fails only its own org's requests.

use crate::arcdb::ArcClient;
use crate::snapshot::{Snapshot, SnapshotHandle};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Probes running at once.
const MAX_CONCURRENT: usize = 16;

/// How many live orgs have a route whose Arc answered its last probe, and
/// how many one whose Arc did not; orgs whose Arc was not probed yet count
/// in neither.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ArcCounts {
    pub reachable: usize,
    pub unreachable: usize,
}

/// The last probe result per Arc URL, and its counts as metrics.
#[derive(Debug, Default)]
pub struct ArcHealth {
    by_url: RwLock<HashMap<String, bool>>,
    reachable_orgs: Gauge,
    unreachable_orgs: Gauge,
}

impl ArcHealth {
    /// The reachability counts of the live orgs (see [`ArcCounts`]).
    pub fn counts(&self, snapshot: &Snapshot) -> ArcCounts {
        let by_url = self.by_url.read().unwrap_or_else(PoisonError::into_inner);
        let mut counts = ArcCounts::default();
        for org in snapshot.orgs.keys() {
            match snapshot.route(org).and_then(|r| by_url.get(&r.url)) {
                Some(true) => counts.reachable += 1,
                Some(false) => counts.unreachable += 1,
                None => {}
            }
        }
        counts
    }

    /// Adds `memtrace_arc_reachable_orgs` and `memtrace_arc_unreachable_orgs`
    /// to `registry`. Counts only: `/metrics` is as open as `/health`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("memtrace_arc");
        sub.register(
            "reachable_orgs",
            "live orgs whose arc answered its last health probe",
            self.reachable_orgs.clone(),
        );
        sub.register(
            "unreachable_orgs",
            "live orgs whose arc failed its last health probe",
            self.unreachable_orgs.clone(),
        );
    }

    /// Brings the metrics up to the counts of `snapshot`.
    pub fn refresh_metrics(&self, snapshot: &Snapshot) {
        let counts = self.counts(snapshot);
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.reachable_orgs.set(gauge(counts.reachable));
        self.unreachable_orgs.set(gauge(counts.unreachable));
    }

    fn record(&self, results: HashMap<String, bool>) {
        *self.by_url.write().unwrap_or_else(PoisonError::into_inner) = results;
    }

    /// Probes every `interval` until `stop` is cancelled.
    pub async fn run(
        self: Arc<Self>,
        client: ArcClient,
        snapshot: Arc<SnapshotHandle>,
        interval: Duration,
        stop: CancellationToken,
    ) {
        tokio::select! {
            () = self.probe_forever(client, snapshot, interval) => {}
            () = stop.cancelled() => {}
        }
    }

    async fn probe_forever(
        &self,
        client: ArcClient,
        snapshot: Arc<SnapshotHandle>,
        interval: Duration,
    ) {
        loop {
            let urls: Vec<String> = {
                let s = snapshot.load();
                let mut urls: Vec<String> = s
                    .orgs
                    .keys()
                    .filter_map(|org| s.route(org).map(|r| r.url.clone()))
                    .collect();
                urls.sort();
                urls.dedup();
                urls
            };
            let mut results = HashMap::new();
            let mut probes = JoinSet::new();
            let mut pending = urls.into_iter();
            loop {
                while probes.len() < MAX_CONCURRENT {
                    let Some(url) = pending.next() else { break };
                    let client = client.clone();
                    probes.spawn(async move {
                        let ok = client.health(&url).await;
                        if let Err(e) = &ok {
                            tracing::debug!(url, error = %e, "arc health probe failed");
                        }
                        (url, ok.is_ok())
                    });
                }
                match probes.join_next().await {
                    Some(Ok((url, ok))) => {
                        results.insert(url, ok);
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, "arc health probe task failed"),
                    None => break,
                }
            }
            self.record(results);
            tokio::time::sleep(interval).await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::snapshot::{ArcRoute, OrgEntry};

    fn route(url: &str) -> Arc<ArcRoute> {
        Arc::new(ArcRoute {
            binding_id: "arc_1".into(),
            url: url.into(),
            database: "db".into(),
            measurement: "events".into(),
            api_key: None,
        })
    }

    /// Two orgs on a reachable Arc, one on an unreachable one, and three
    /// that count in neither: no route, deleted, Arc not probed yet.
    fn snapshot() -> Snapshot {
        let mut s = Snapshot::default();
        for (org, url, deleted) in [
            ("org_up_1", Some("http://up"), false),
            ("org_up_2", Some("http://up"), false),
            ("org_down", Some("http://down"), false),
            ("org_unbound", None, false),
            ("org_deleted", Some("http://up"), true),
            ("org_unprobed", Some("http://new"), false),
        ] {
            let entry = OrgEntry {
                name: org.into(),
                deleted,
            };
            s.orgs.insert(org.into(), entry);
            if let Some(url) = url {
                s.routes.insert(org.into(), route(url));
            }
        }
        s
    }

    fn probed() -> ArcHealth {
        let health = ArcHealth::default();
        health.record(HashMap::from([
            ("http://up".to_owned(), true),
            ("http://down".to_owned(), false),
        ]));
        health
    }

    #[test]
    fn counts_live_orgs_by_their_arcs_last_answer() {
        let counts = probed().counts(&snapshot());
        assert_eq!(
            counts,
            ArcCounts {
                reachable: 2,
                unreachable: 1
            }
        );
        assert_eq!(
            serde_json::to_value(counts).unwrap(),
            serde_json::json!({"reachable": 2, "unreachable": 1})
        );
    }

    #[test]
    fn metrics_carry_counts_and_no_org_id() {
        let health = probed();
        let mut registry = Registry::default();
        health.register_metrics(&mut registry);
        health.refresh_metrics(&snapshot());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("memtrace_arc_reachable_orgs 2"), "{text}");
        assert!(text.contains("memtrace_arc_unreachable_orgs 1"), "{text}");
        assert!(!text.contains("org_"), "{text}");
    }
}
