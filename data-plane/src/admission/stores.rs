//! Store resolution: each request's store is picked from the live snapshot.
//! The org's Arc route → [`ArcStore`] (memories through the shared
//! group-commit [`Batcher`]); no route and `[worker] embedded_dir` set → the
//! org's [`EmbeddedStore`](crate::store::EmbeddedStore); else the no-Arc 503.

use crate::arcdb::{ArcClient, RetryPolicy};
use crate::ingest::Batcher;
use crate::service::ServiceError;
use crate::snapshot::Snapshot;
use crate::store::{ArcStore, EmbeddedStores, TenantStore};
use std::sync::Arc;

/// Picks the store of an org for a request.
#[async_trait::async_trait]
pub trait StoreResolver: Send + Sync + 'static {
    /// The org's store, or [`ServiceError::NoArcInstance`] when it has none.
    async fn store(
        &self,
        snapshot: &Snapshot,
        org_id: &str,
    ) -> Result<Arc<dyn TenantStore>, ServiceError>;
}

/// The worker's resolver (see the module docs).
pub struct OrgStores {
    pub client: ArcClient,
    pub batcher: Batcher,
    pub retry: RetryPolicy,
    pub embedded: Option<EmbeddedStores>,
}

#[async_trait::async_trait]
impl StoreResolver for OrgStores {
    async fn store(
        &self,
        snapshot: &Snapshot,
        org_id: &str,
    ) -> Result<Arc<dyn TenantStore>, ServiceError> {
        if let Some(route) = snapshot.route(org_id) {
            let store = ArcStore::new(
                org_id,
                route.clone(),
                self.batcher.clone(),
                self.client.clone(),
                self.retry,
            )?
            .with_query_timeout(snapshot.settings().write(Some(org_id)).query_timeout);
            return Ok(Arc::new(store));
        }
        match &self.embedded {
            Some(stores) => Ok(stores.open(org_id).await?),
            None => Err(ServiceError::NoArcInstance),
        }
    }
}
