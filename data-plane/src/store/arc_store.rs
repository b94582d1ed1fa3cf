//! [`ArcStore`]: one org's [`TenantStore`] on its Arc database. Memories go
//! through the shared group-commit [`Batcher`]; agent and session state
//! rows are written straight to their measurements (one small columnar
//! MessagePack body per row, zstd-compressed, retried per the policy);
//! reads are builder SQL sent to Arc's query endpoint.
//!
//! Arc has no table before its first row: DuckDB fails a read of a
//! measurement that was never written with "No files found that match the
//! pattern". That one failure reads as empty [`Rows`]; every other failure
//! stays an error.

use super::{MemoryRow, Rows, StateRow, StateTable, StoreError, TenantStore, VERSIONS_TABLE};
use crate::arcdb::state_encode::StringBatch;
use crate::arcdb::{
    ArcClient, ArcError, ArcTarget, Compression, MemoryBatch, RetryPolicy, compress,
};
use crate::ingest::Batcher;
use crate::query::{Dialect, Ident, Sql};
use crate::snapshot::ArcRoute;
use std::sync::Arc;
use std::time::Duration;

/// DuckDB's message for a `read_parquet` glob with no files: the
/// measurement does not exist (yet) in the database.
pub const MISSING_TABLE_MESSAGE: &str = "No files found that match the pattern";

/// Smallest `time` Arc reads as microseconds (1970-04-26).
pub const MIN_TIME_MICROS: i64 = 10_000_000_000_000;

/// One org's storage on Arc (cheap to clone).
#[derive(Clone)]
pub struct ArcStore {
    org_id: Arc<str>,
    route: Arc<ArcRoute>,
    batcher: Batcher,
    client: ArcClient,
    retry: RetryPolicy,
    dialect: Dialect,
    /// Bound on one read, retries included (`arc.query_timeout_ms`).
    query_timeout: Option<Duration>,
}

impl std::fmt::Debug for ArcStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArcStore")
            .field("org_id", &self.org_id)
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

impl ArcStore {
    /// The store of `org_id` on `route` (its database and memory
    /// measurement must be names Arc's SQL rewriter reads:
    /// `^[a-zA-Z][a-zA-Z0-9_]*$`). `batcher` and `client` are shared by
    /// every org; `retry` applies to state writes and reads (memory writes
    /// retry per the batcher's own policy).
    pub fn new(
        org_id: &str,
        route: Arc<ArcRoute>,
        batcher: Batcher,
        client: ArcClient,
        retry: RetryPolicy,
    ) -> Result<Self, StoreError> {
        let invalid = |e: crate::query::QueryError| {
            StoreError::Backend(format!("arc route of org {org_id} is unusable: {e}"))
        };
        let database = Ident::database(&route.database).map_err(invalid)?;
        Ident::table(&route.measurement).map_err(invalid)?;
        if let Err(e) = memtrace_common::names::check_memory_measurement(&route.measurement) {
            return Err(StoreError::Backend(format!(
                "arc route of org {org_id} is unusable: {e}"
            )));
        }
        Ok(Self {
            org_id: org_id.into(),
            route,
            batcher,
            client,
            retry,
            dialect: Dialect::Arc { database },
            query_timeout: None,
        })
    }

    /// Bounds every read (retries included) by `timeout`; past it the read
    /// fails as [`StoreError::Unavailable`].
    pub fn with_query_timeout(mut self, timeout: Duration) -> Self {
        self.query_timeout = Some(timeout);
        self
    }

    fn target(&self) -> ArcTarget<'_> {
        ArcTarget::from(&*self.route)
    }
}

/// The optional memory column (`id` or `expires_at`) Arc's answer to a
/// read says no file of the measurement has (DuckDB's binder error: every
/// file predates it, or only the original memtrace wrote there). The read
/// is retried without it ([`crate::query::QueryBuilder::without_column`]).
pub fn missing_column(e: &ArcError) -> Option<&'static str> {
    let message = match e {
        ArcError::Rejected { message, .. } | ArcError::Server { message, .. } => message,
        ArcError::Decode(message) => message,
        _ => return None,
    };
    if !message.contains("Binder Error") {
        return None;
    }
    ["id", crate::query::EXPIRES_AT].into_iter().find(|column| {
        message.contains(&format!("Referenced column \"{column}\" not found"))
            || message.contains(&format!("does not have a column named \"{column}\""))
    })
}

/// True for Arc's answer to a read of a measurement with no data files.
pub fn is_missing_table(e: &ArcError) -> bool {
    match e {
        ArcError::Rejected { message, .. } | ArcError::Server { message, .. } => {
            message.contains(MISSING_TABLE_MESSAGE)
        }
        ArcError::Decode(message) => message.contains(MISSING_TABLE_MESSAGE),
        ArcError::Unreachable { .. }
        | ArcError::InvalidTarget(_)
        | ArcError::ReplyTooLarge { .. }
        | ArcError::ReplyBudget
        | ArcError::DeleteBlocked { .. } => false,
    }
}

#[async_trait::async_trait]
impl TenantStore for ArcStore {
    fn dialect(&self) -> Dialect {
        self.dialect.clone()
    }

    fn memories_table(&self) -> &str {
        &self.route.measurement
    }

    async fn append_memories(&self, rows: &[MemoryRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        // encoded here, in the caller's task: the queue holds one buffer
        // per column, and the rows stay the caller's
        let batch = MemoryBatch::from_rows(rows);
        let ack = self
            .batcher
            .submit(&self.org_id, self.route.clone(), batch)?;
        ack.await?;
        Ok(())
    }

    async fn append_versions(&self, rows: &[MemoryRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let body = compress(
            &MemoryBatch::from_rows(rows).encode(VERSIONS_TABLE),
            Compression::Zstd,
        )
        .map_err(|e| StoreError::Backend(format!("memory versions not compressed: {e}")))?;
        self.client
            .write_with_retry(&self.target(), body.into(), Compression::Zstd, &self.retry)
            .await?;
        tracing::debug!(
            org_id = &*self.org_id,
            rows = rows.len(),
            "arc memory versions written"
        );
        Ok(())
    }

    async fn append_state(&self, table: StateTable, row: StateRow) -> Result<(), StoreError> {
        // Arc guesses the unit of `time` from its value: anything smaller
        // would be read as milliseconds or seconds.
        if row.time < MIN_TIME_MICROS {
            return Err(StoreError::Backend(format!(
                "{} row: time must be microseconds since the epoch (>= {MIN_TIME_MICROS})",
                table.name()
            )));
        }
        let mut batch = StringBatch::new(table.columns())
            .map_err(|e| StoreError::Backend(format!("{} row: {e}", table.name())))?;
        batch
            .push(row.time, row.id, row.values)
            .map_err(|e| StoreError::Backend(format!("{} row: {e}", table.name())))?;
        let body = compress(&batch.encode(table.name()), Compression::Zstd)
            .map_err(|e| StoreError::Backend(format!("state row not compressed: {e}")))?;
        self.client
            .write_with_retry(&self.target(), body.into(), Compression::Zstd, &self.retry)
            .await?;
        tracing::debug!(
            org_id = &*self.org_id,
            table = table.name(),
            "arc state row written"
        );
        Ok(())
    }

    async fn query(&self, sql: &Sql) -> Result<Rows, StoreError> {
        let target = self.target();
        let (client, org_id) = (&self.client, &*self.org_id);
        let read = self.retry.run("query", || async move {
            match client.query(&target, sql).await {
                Err(e) if is_missing_table(&e) => {
                    tracing::debug!(org_id, "arc measurement not written yet, read as empty");
                    Ok(Rows::default())
                }
                // not retried: the same statement fails the same way
                Err(e) if missing_column(&e).is_some() => Err(ArcError::Rejected {
                    status: e.status().unwrap_or(500),
                    message: e.to_string(),
                }),
                other => other,
            }
        });
        let answer = match self.query_timeout {
            None => read.await,
            Some(limit) => tokio::time::timeout(limit, read).await.map_err(|_| {
                StoreError::Unavailable(format!(
                    "arc did not answer a read within arc.query_timeout_ms ({} ms)",
                    limit.as_millis()
                ))
            })?,
        };
        match answer {
            Ok(rows) => Ok(rows),
            Err(e) => match missing_column(&e) {
                Some(column) => Err(StoreError::MissingColumn(column)),
                None => Err(e.into()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_duckdb_no_files_is_a_missing_table() {
        let msg = "Query execution failed: IO Error: No files found that match the pattern \
                   \"./data/acme/agents/**/*.parquet\"";
        assert!(is_missing_table(&ArcError::Server {
            status: 500,
            message: msg.into()
        }));
        assert!(is_missing_table(&ArcError::Rejected {
            status: 400,
            message: msg.into()
        }));
        assert!(is_missing_table(&ArcError::Decode(msg.into())));
        assert!(!is_missing_table(&ArcError::Server {
            status: 500,
            message: "Query execution failed".into()
        }));
        assert!(!is_missing_table(&ArcError::Rejected {
            status: 401,
            message: "Invalid or expired token".into()
        }));
    }
}
