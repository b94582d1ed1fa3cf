//! Reachability of the tenants' Arc instances, as the worker sees them: a
//! background prober calls `GET {url}/health` on every distinct Arc URL in
//! the live snapshot (bounded concurrency, one probe per URL however many
//! orgs share it) and keeps the last answer. `/health` and `/ready` report
//! it per org (the original's `arc: {org_id: bool}`); it never makes the
//! worker unready — an unreachable Arc fails only its own org's requests.

use crate::arcdb::ArcClient;
use crate::snapshot::{Snapshot, SnapshotHandle};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Probes running at once.
const MAX_CONCURRENT: usize = 16;

/// The last probe result per Arc URL.
#[derive(Debug, Default)]
pub struct ArcHealth {
    by_url: RwLock<HashMap<String, bool>>,
}

impl ArcHealth {
    /// `org_id → reachable` for every live org with a route that has been
    /// probed at least once.
    pub fn per_org(&self, snapshot: &Snapshot) -> BTreeMap<String, bool> {
        let by_url = self.by_url.read().unwrap_or_else(PoisonError::into_inner);
        snapshot
            .orgs
            .keys()
            .filter_map(|org| {
                let route = snapshot.route(org)?;
                by_url.get(&route.url).map(|ok| (org.clone(), *ok))
            })
            .collect()
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
