//! The memory service: the domain layer between the API adapters (REST in
//! [`crate::rest`], gRPC in [`crate::grpc`]) and one org's [`TenantStore`]. It owns
//! validation of writes, memory ids, dedup, memory list/search/get, the
//! agent and session registries (append-only state rows) with a
//! read-your-writes cache, session context rendering and agent stats, and
//! one error type ([`ServiceError`]) mapped once to HTTP and gRPC.
//!
//! An [`OrgService`] is built per request for the authenticated org from
//! its store, the snapshot's runtime settings and the process-wide
//! [`ServiceShared`] (dedup index, state cache).

mod agents;
mod binding;
pub mod collapse;
mod context;
pub mod dedup;
mod erase;
mod error;
pub mod expiry;
pub mod ids;
pub mod import;
mod memories;
mod org_locks;
pub mod receipts;
mod rows;
mod sessions;
pub mod state;
pub mod types;
mod versions;

#[cfg(test)]
mod tests;

pub use erase::{DeleteRequest, Deletion, ErasureView};
pub use error::{NO_ARC_HINT, NO_ARC_INSTANCE, ServiceError};
pub use types::{
    Agent, AgentStats, ContextRequest, CreateMemoryRequest, CreateSessionRequest, ExportPage,
    Memory, MemoryList, NewAgent, NewMemory, NewSession, RegisterAgentRequest, SearchResult,
    Session, SessionContext, SessionUpdate, UpdateSessionRequest,
};
pub use versions::MemoryPatch;

use crate::query::{Ident, OrgId, QueryBuilder};
use crate::store::TenantStore;
use memtrace_common::settings::{DedupSettings, EffectiveSettings, TenantLimits};
use std::sync::Arc;

/// Process-wide state shared by every org's service.
#[derive(Debug, Default)]
pub struct ServiceShared {
    pub dedup: dedup::DedupIndex,
    pub state: state::StateCache,
    /// Serializes agent registrations of one org on this worker (unique
    /// names); other orgs' registrations never wait on it.
    pub(crate) register_locks: org_locks::OrgLocks,
    /// Orgs this worker gave the optional memory columns (`id`,
    /// `expires_at`) with one row each (bounded).
    pub column_rows: Arc<expiry::ColumnRows>,
}

/// The service of one org over its store.
pub struct OrgService {
    store: Arc<dyn TenantStore>,
    org: OrgId,
    builder: QueryBuilder,
    shared: Arc<ServiceShared>,
    dedup: DedupSettings,
    limits: TenantLimits,
    /// The org's read slot this request holds, if it is a read.
    _slot: Option<crate::admission::limits::ReadSlot>,
    /// Where deletes are recorded (none: deletes are refused, 503).
    erasure_requests: Option<Arc<crate::erasure::ErasureRequests>>,
    /// The API key acting, as erasures name who asked.
    requested_by: String,
    /// The one agent an agent-bound token acts as ([`binding`]).
    bound_agent: Option<String>,
}

/// Most memories in one batch create.
pub const MAX_BATCH: usize = 1000;

impl OrgService {
    /// The service of `org_id` over `store`, with the org's effective
    /// settings.
    pub fn new(
        store: Arc<dyn TenantStore>,
        org_id: &str,
        settings: &EffectiveSettings,
        shared: Arc<ServiceShared>,
    ) -> Result<Self, ServiceError> {
        let limits = settings.limits(Some(org_id));
        Self::with_limits(store, org_id, settings, limits, shared)
    }

    /// As [`OrgService::new`], with the org's `limits` already resolved
    /// (the adapters resolve them once per request for the rate limit).
    pub fn with_limits(
        store: Arc<dyn TenantStore>,
        org_id: &str,
        settings: &EffectiveSettings,
        limits: TenantLimits,
        shared: Arc<ServiceShared>,
    ) -> Result<Self, ServiceError> {
        let org = OrgId::parse(org_id).map_err(crate::query::QueryError::from)?;
        let memories = Ident::table(store.memories_table())
            .map_err(|e| ServiceError::Internal(format!("memories table: {e}")))?;
        let builder = QueryBuilder::new(store.dialect(), org.clone(), memories)
            .with_retention(settings.retention(Some(org_id)));
        Ok(Self {
            store,
            builder,
            shared,
            dedup: settings.dedup(Some(org_id)),
            limits,
            org,
            _slot: None,
            erasure_requests: None,
            requested_by: String::new(),
            bound_agent: None,
        })
    }

    /// This service hiding the rows of the org's erasures in progress from
    /// every read, and recording deletes by `key_id` through `requests`.
    pub fn with_erasures(
        mut self,
        in_progress: Vec<Arc<crate::erasure::Erasure>>,
        requests: Option<Arc<crate::erasure::ErasureRequests>>,
        key_id: &str,
    ) -> Self {
        self.builder = self.builder.with_erasures(in_progress);
        self.erasure_requests = requests;
        self.requested_by = key_id.to_owned();
        self
    }

    /// This service, holding `slot` until it is dropped.
    pub fn holding(mut self, slot: crate::admission::limits::ReadSlot) -> Self {
        self._slot = Some(slot);
        self
    }

    /// Runs the read `build` makes on the org's store. On Arc a statement
    /// past its length limit is refused here (429) rather than sent: only
    /// the hiding predicates of erasures in progress can push a read past
    /// it, and they are gone once those finish. A read Arc refuses because
    /// none of the memory table's files has `expires_at` or `id` (written
    /// only before expiry existed, or only by the original memtrace) is
    /// built again without that column — exact: no row there has an expiry,
    /// every row there is the original's — and the org gets one row
    /// carrying every column (see [`expiry::ColumnRows`]) so later reads
    /// need one statement again.
    async fn read(
        &self,
        build: impl Fn(&QueryBuilder) -> crate::query::Sql,
    ) -> Result<crate::store::Rows, ServiceError> {
        let mut builder = std::borrow::Cow::Borrowed(&self.builder);
        // at most once per optional column (`id`, `expires_at`)
        for _ in 0..2 {
            let sql = build(&builder);
            self.check_sql_len(&sql)?;
            match self.store.query(&sql).await {
                Err(crate::store::StoreError::MissingColumn(column)) => {
                    self.shared.column_rows.ensure(&self.store, &self.org);
                    builder = std::borrow::Cow::Owned(builder.into_owned().without_column(column));
                }
                other => return Ok(other?),
            }
        }
        let sql = build(&builder);
        self.check_sql_len(&sql)?;
        Ok(self.store.query(&sql).await?)
    }

    fn check_sql_len(&self, sql: &crate::query::Sql) -> Result<(), ServiceError> {
        if sql.as_str().len() > crate::query::ARC_MAX_SQL_LEN
            && matches!(self.store.dialect(), crate::query::Dialect::Arc { .. })
        {
            tracing::info!(org_id = %self.org, bytes = sql.as_str().len(), erasures = self.builder.erasures().len(), "read refused: with the erasures in progress it passes Arc's SQL limit");
            return Err(ServiceError::ErasuresBusy {
                retry_after: std::time::Duration::from_secs(10),
            });
        }
        Ok(())
    }

    /// The org this service acts for.
    pub fn org_id(&self) -> &str {
        self.org.as_str()
    }

    /// The org's admission limits.
    pub fn limits(&self) -> &TenantLimits {
        &self.limits
    }

    /// Refuses (413) a request of `bytes` above the org's
    /// `max_payload_bytes` (0: no limit); the REST body and every gRPC
    /// message, streamed batches included, go through it.
    pub fn check_payload(&self, bytes: usize) -> Result<(), ServiceError> {
        let max = self.limits.max_payload_bytes;
        if max > 0 && bytes as u64 > max {
            return Err(ServiceError::TooLarge(format!(
                "request of {bytes} bytes exceeds the org's max_payload_bytes of {max}"
            )));
        }
        Ok(())
    }
}
