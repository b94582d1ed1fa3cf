//! The Arc adapter: memory rows encoded as Arc's columnar MessagePack
//! ([`encode`]), sent and read back over Arc's HTTP API by one pooled
//! [`ArcClient`] shared by every tenant ([`client`]), with bounded, jittered
//! retries ([`retry`]) and one error type ([`error`]); every attempt timed
//! and its failures counted by kind ([`metrics`]); the reachability prober
//! behind `/health` ([`health`]); deletes through Arc's delete API
//! ([`delete`]).
//!
//! What the adapter relies on from Arc's protocol: writes are `POST
//! /api/v1/write/msgpack` with one columnar MessagePack map `{"m", "columns"}`
//! (times in µs), the body compressed and recognised by its magic bytes
//! (gzip `1f 8b`, zstd `28 b5 2f fd`), the database in `x-arc-database`,
//! `Authorization: Bearer <token>`; success is 204 and means "buffered",
//! visible to queries only after Arc's buffer flush (seconds). Reads are
//! `POST /api/v1/query` with `{"sql"}` (at most 10,000 characters), answered
//! `{success, columns, data: [[…]], row_count, execution_time_ms}`. Arc
//! never answers 429; it retries nothing, and a retried columnar batch is
//! stored twice, so de-duplication is ours.
//!
//! ```text
//! let client = ArcClient::new(Duration::from_secs(2), Duration::from_secs(10))?;
//! let mut batch = MemoryBatch::new();
//! batch.push(row);
//! let body = compress(&batch.encode(target.measurement), Compression::Zstd)?;
//! client.write_with_retry(&target, body.into(), Compression::Zstd, &RetryPolicy::default()).await?;
//! let rows = client.query(&target, &builder.list(&q, now)).await?;
//! ```

pub mod client;
pub mod delete;
pub mod encode;
pub mod error;
pub mod health;
pub mod metrics;
mod msgpack;
pub mod retry;
pub mod state_encode;

pub use axum::body::Bytes;
pub use client::{ArcClient, ArcClientConfig};
pub use delete::{DeleteOutcome, DeleteRequest};
pub use encode::{COLUMNS, Compression, MemoryBatch, compress};
pub use error::{ArcError, DeleteBlock, Transport};
pub use metrics::ArcMetrics;
pub use retry::RetryPolicy;

use crate::snapshot::ArcRoute;

/// Where one call goes: a borrowed view of a tenant's [`ArcRoute`] (the key
/// is not copied). `Debug` hides the key.
#[derive(Clone, Copy)]
pub struct ArcTarget<'a> {
    /// Base URL, `http(s)://host:port` (a trailing `/` is ignored).
    pub url: &'a str,
    /// Arc database (`x-arc-database` on writes).
    pub database: &'a str,
    /// Measurement the tenant's memories go to.
    pub measurement: &'a str,
    /// Arc token, sent as `Authorization: Bearer`.
    pub api_key: Option<&'a str>,
}

impl<'a> From<&'a ArcRoute> for ArcTarget<'a> {
    fn from(r: &'a ArcRoute) -> Self {
        Self {
            url: &r.url,
            database: &r.database,
            measurement: &r.measurement,
            api_key: r.api_key.as_ref().map(|k| k.as_str()),
        }
    }
}

impl std::fmt::Debug for ArcTarget<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArcTarget")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("measurement", &self.measurement)
            .field("api_key", &self.api_key.map(|_| "***"))
            .finish()
    }
}
