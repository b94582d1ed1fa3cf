//! An in-process stand-in for an Arc instance (Basekick Labs' time-series
//! database: an HTTP API in front of DuckDB SQL over Parquet files), for
//! tests and benchmarks of the Arc adapter. Not Arc's code: a
//! re-implementation of the contract Arc Go shows its clients, as this
//! module describes it; the repository's adapter (`data-plane/src/arcdb/`) is
//! the other side of it.
//!
//! - `POST /api/v1/write/msgpack` — body gunzipped/unzstd'ed by magic bytes
//!   (capped), ONE MessagePack value: columnar `{"m", "columns"}`, legacy row
//!   `{"m", "t", "fields", "tags", "h"}`, a top-level array of those or
//!   `{"batch": [...]}` (a bad item there is skipped, as in Arc). `time` unit
//!   auto-detected from the first element, stored as µs. Database from
//!   `x-arc-database` (default `default`); names checked like Arc's. 204.
//! - `POST /api/v1/query` — `{"sql"}`, Arc's guard and table-name rules (see
//!   [`query`]), run for real on SQLite over the stored rows (see [`store`]),
//!   answered with Arc's JSON envelope `{"success", "columns", "data",
//!   "row_count", "execution_time_ms", "timestamp"}` (`time` as RFC 3339
//!   with `Z`). `SHOW DATABASES` / `SHOW TABLES [FROM db]` are answered from
//!   the store. Errors: `{"success": false, "error", "timestamp"}`.
//! - `POST /api/v1/delete` — `{"database", "measurement", "where",
//!   "confirm": true}`, a minimal version (see [`delete`]).
//! - `GET /health`, `GET /ready` — public, like Arc.
//! - Auth: `Authorization: Bearer|Token <t>`, a bare `Authorization`, or
//!   `x-api-key`, checked against the tokens configured here; none
//!   configured = auth off (Arc's no-auth deployment). 401 for a missing or
//!   unknown token, 403 for a token without the permission or database.
//!
//! How it behaves like a real Arc, each switchable at start
//! ([`ArcStandInBuilder`]) and at runtime ([`ArcStandIn`]):
//! - [`CostModel`]: answers held as long as Arc would take (per statement,
//!   per scanned row and column, per chunk; per write and row).
//!   [`ArcStandIn::start`] answers instantly; anything that measures uses
//!   `builder().cost_model(CostModel::arc_like())`, calibrated against a
//!   real Arc on loopback (the fit and its arithmetic are in [`cost`]):
//!   - ≈ 50 ms per statement, whatever it reads (planning, file listing);
//!   - ≈ 100 ms for a plain recall (`SELECT * … WHERE org_id, agent_id …
//!     LIMIT 20`) at ~1 M rows;
//!   - ≈ 110 ms for a `content LIKE '%…%'` search at 930 K rows;
//!   - ≈ 150 ms for one dedup lookup (`dedup_key IN (…270 keys…)`) on 6 M
//!     rows — it reads 3 columns, hence the per-column term;
//!   - ≈ 200 K rows/s of columnar MessagePack ingest from one client
//!     (1,000-row gzip batches).
//! - Visibility delay ([`buffer`]): rows readable only once Arc's buffer
//!   for their measurement flushed (~5 s: 5 s or 50,000 rows by default),
//!   and [`ArcStandIn::crash_unflushed`] loses what was not flushed. Off by
//!   default (writes readable at once).
//! - Gzip-only builds ([`ArcStandIn::set_gzip_only`]): some Arc builds do
//!   not recognise zstd and read a zstd body as raw MessagePack, answering
//!   400 `{"error":"Invalid MessagePack payload: expected a map or an array
//!   at the top level"}` (the decoder's reason after the prefix).
//! - [`Faults`]: error statuses, stalls, slowness, dropped connections.
//! - Down and back ([`ArcStandIn::go_down`], [`ArcStandIn::come_back`]):
//!   nothing listening (connections refused), then the same port again;
//!   [`ArcStandIn::restart`] also loses the unflushed buffer, as an Arc
//!   restart without its WAL does.
//! - [`Stats`]: per-database counters, statements run, rows scanned,
//!   modelled and real engine time.
//!
//! Files: `server` (accept loop with a per-connection kill switch, health,
//! fault application), `write` + `decode` (write path), `read` + `query` +
//! `scan` + `store` (query path on SQLite), `cost` and `buffer` (the Arc
//! model), `auth`, `faults`, `timefmt`, and `client` (body encoders and a
//! raw HTTP client for tests).
//!
//! ```ignore
//! let arc = ArcStandIn::builder().token("t", TokenGrant::databases(["acme"])).start().await?;
//! // … point the adapter at arc.url(), write, then:
//! assert_eq!(arc.stats().db("acme").rows, 3);
//! let rows = arc.rows("acme", "memories").await?; // column → JSON value, by time
//! arc.faults().inject(Fault::status(503).on(Target::Writes).times(2));
//! ```
//!
//! Where Arc answers differently from what one might expect:
//! - a query on a table that does not exist yet (or whose rows are all
//!   still buffered) fails: 500 `{"success":false,"error":"Query execution
//!   failed: IO Error: No files found that match the pattern
//!   \"…/db/m/**/*.parquet\""}` (DuckDB finds no Parquet files for the
//!   measurement);
//! - a decompressed body over the cap is a 400 (`Invalid gzip compression: …`),
//!   only an oversized *wire* body is a 413 — as in Arc Go's handler;
//! - a write is readable only after its buffer flush (by default up to
//!   7.5 s later); the stand-in shows it at once unless the visibility delay
//!   is on.

mod auth;
pub mod buffer;
pub mod client;
pub mod cost;
mod decode;
mod delete;
mod faults;
mod lifecycle;
pub mod query;
mod read;
pub mod scan;
mod server;
pub mod store;
mod timefmt;
mod write;

pub use buffer::Buffering;
pub use cost::CostModel;
pub use faults::{Fault, FaultKind, Faults, Target};
pub use store::QueryOutput;
pub use timefmt::{parse_timestamp, rfc3339_nano};

use axum::http::HeaderMap;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    /// `None` = any database.
    pub databases: Option<HashSet<String>>,
    pub read: bool,
    pub write: bool,
}

impl TokenGrant {
    /// Read and write on every database.
    pub fn any() -> Self {
        Self {
            databases: None,
            read: true,
            write: true,
        }
    }

    /// Read and write on these databases only (others → 403).
    pub fn databases<I: IntoIterator<Item = S>, S: Into<String>>(dbs: I) -> Self {
        Self {
            databases: Some(dbs.into_iter().map(Into::into).collect()),
            ..Self::any()
        }
    }

    pub fn read_only(mut self) -> Self {
        self.write = false;
        self
    }

    pub fn write_only(mut self) -> Self {
        self.read = false;
        self
    }

    fn allows(&self, database: &str) -> bool {
        self.databases.as_ref().is_none_or(|d| d.contains(database))
    }
}

/// Limits and modes, set before start.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body on the wire (→ 413). Default 64 MiB.
    pub max_body_bytes: usize,
    /// Largest decompressed write body (→ 400, as Arc). Default 64 MiB.
    pub max_decompressed_bytes: usize,
    /// Rows the store keeps over all tables (→ 507). Default 2,000,000.
    pub max_rows: u64,
    /// Rows one query may return (→ 500). Default 100,000.
    pub max_query_rows: usize,
    /// Longest a stalled request is held (then 503). Default 30 s.
    pub stall_max: Duration,
    /// Decode and count writes but store nothing (for ingest benchmarks).
    pub counting_only: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 << 20,
            max_decompressed_bytes: 64 << 20,
            max_rows: 2_000_000,
            max_query_rows: 100_000,
            stall_max: Duration::from_secs(30),
            counting_only: false,
        }
    }
}

/// Counters of one database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbStats {
    /// Accepted (204) write requests.
    pub write_requests: u64,
    /// Rows in accepted writes (counted in counting-only mode too).
    pub rows: u64,
    /// Request body bytes as received.
    pub wire_bytes: u64,
    /// Body bytes after decompression.
    pub decoded_bytes: u64,
    /// Batch items skipped as undecodable (the request still got 204).
    pub skipped_items: u64,
    /// Queries that read this database and succeeded.
    pub queries: u64,
}

/// A snapshot of the stand-in's counters.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub databases: BTreeMap<String, DbStats>,
    /// Responses sent, by status (dropped/stalled-away requests have none).
    pub statuses: BTreeMap<u16, u64>,
    /// Write requests received, whatever their outcome.
    pub write_requests: u64,
    /// Query requests received, whatever their outcome.
    pub query_requests: u64,
    /// Statements that reached the engine (failed ones included).
    pub statements: u64,
    /// Rows of the tables those statements scanned, per scan (a self-join
    /// counts its table twice).
    pub rows_scanned: u64,
    /// Their modelled time (each answer was held at least this long).
    pub modelled_query_time: Duration,
    /// The time SQLite actually spent on them.
    pub engine_query_time: Duration,
    /// Statements on which SQLite took longer than the model: their answer
    /// came as late as SQLite's, not the model's.
    pub engine_bound_statements: u64,
    /// Modelled time of the accepted writes.
    pub modelled_write_time: Duration,
    /// Rows lost by [`ArcStandIn::crash_unflushed`].
    pub rows_lost: u64,
}

impl Stats {
    /// The counters of `database` (zero if it was never written).
    pub fn db(&self, database: &str) -> DbStats {
        self.databases.get(database).cloned().unwrap_or_default()
    }

    /// Responses sent with `status`.
    pub fn status(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }
}

/// One request as received (the last one is kept).
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
}

/// State shared by the handlers and the [`ArcStandIn`] handle.
pub(crate) struct Shared {
    limits: Limits,
    tokens: RwLock<HashMap<String, TokenGrant>>,
    store: Arc<Mutex<store::Store>>,
    stats: Mutex<Stats>,
    faults: Faults,
    last: Mutex<Option<RecordedRequest>>,
    health_calls: Mutex<Vec<HeaderMap>>,
    ready: AtomicBool,
    started: Instant,
    cost: RwLock<CostModel>,
    gzip_only: AtomicBool,
    /// The engine's ingest lanes: [`LANE_PERMITS`] shared by writes, each
    /// taking `LANE_PERMITS / write_lanes` (so a model changed at run time
    /// applies to the next write).
    lanes: Arc<tokio::sync::Semaphore>,
}

/// Permits of [`Shared::lanes`] (divisible by every lane count up to 8).
const LANE_PERMITS: u32 = 840;

/// Health calls kept for [`ArcStandIn::health_calls`].
const MAX_HEALTH_CALLS: usize = 1024;

impl Shared {
    fn stats_mut<R>(&self, f: impl FnOnce(&mut Stats) -> R) -> Option<R> {
        self.stats.lock().ok().map(|mut s| f(&mut s))
    }

    fn cost_model(&self) -> CostModel {
        self.cost
            .read()
            .map(|c| *c)
            .unwrap_or_else(|_| CostModel::instant())
    }

    /// One of `lanes` ingest lanes (none with 0: unbounded), and whether
    /// the write had to wait for it.
    async fn write_lane(&self, lanes: u32) -> (Option<tokio::sync::OwnedSemaphorePermit>, bool) {
        if lanes == 0 {
            return (None, false);
        }
        let share = (LANE_PERMITS / lanes.min(LANE_PERMITS)).max(1);
        if let Ok(lane) = self.lanes.clone().try_acquire_many_owned(share) {
            return (Some(lane), false);
        }
        (
            self.lanes.clone().acquire_many_owned(share).await.ok(),
            true,
        )
    }
}

/// Configures and starts an [`ArcStandIn`].
#[derive(Debug, Clone)]
pub struct ArcStandInBuilder {
    tokens: HashMap<String, TokenGrant>,
    limits: Limits,
    cost: CostModel,
    buffering: Buffering,
    visibility_delay: bool,
    gzip_only: bool,
    indexes: Vec<String>,
}

impl Default for ArcStandInBuilder {
    /// Auth off, default limits, instant answers, writes readable at once,
    /// gzip and zstd accepted.
    fn default() -> Self {
        Self {
            tokens: HashMap::new(),
            limits: Limits::default(),
            cost: CostModel::instant(),
            buffering: Buffering::arc_default(),
            visibility_delay: false,
            gzip_only: false,
            indexes: Vec::new(),
        }
    }
}

impl ArcStandInBuilder {
    /// Accept `token` with `grant` (configuring any token turns auth on).
    pub fn token(mut self, token: impl Into<String>, grant: TokenGrant) -> Self {
        self.tokens.insert(token.into(), grant);
        self
    }

    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Decode and count writes without storing them.
    pub fn counting_only(mut self, on: bool) -> Self {
        self.limits.counting_only = on;
        self
    }

    /// How long answers are held ([`CostModel::instant`] by default; use
    /// [`CostModel::arc_like`] wherever something is measured).
    pub fn cost_model(mut self, model: CostModel) -> Self {
        self.cost = model;
        self
    }

    /// When buffers flush (chunking, and visibility with the delay on).
    pub fn buffering(mut self, buffering: Buffering) -> Self {
        self.buffering = buffering;
        self
    }

    /// On: rows become readable only once their buffer flushed.
    pub fn visibility_delay(mut self, on: bool) -> Self {
        self.visibility_delay = on;
        self
    }

    /// On: zstd bodies are not recognised (a gzip-only Arc build).
    pub fn gzip_only(mut self, on: bool) -> Self {
        self.gzip_only = on;
        self
    }

    /// SQLite indexes on these columns (of every table that has them), to
    /// keep the stand-in's own engine under the modelled cost on big tables.
    /// They change no answer and no modelled cost (Arc has no indexes).
    pub fn engine_indexes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, cols: I) -> Self {
        self.indexes = cols.into_iter().map(Into::into).collect();
        self
    }

    /// Binds `127.0.0.1:0` and serves.
    pub async fn start(self) -> anyhow::Result<ArcStandIn> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        self.serve(listener)
    }

    /// Serves on a listener the caller bound.
    pub fn serve(self, listener: tokio::net::TcpListener) -> anyhow::Result<ArcStandIn> {
        let addr = listener.local_addr()?;
        let store = store::Store::open(
            self.limits.max_rows,
            &self.indexes,
            self.buffering,
            self.visibility_delay,
        )
        .map_err(anyhow::Error::msg)?;
        let shared = Arc::new(Shared {
            limits: self.limits,
            tokens: RwLock::new(self.tokens),
            store: Arc::new(Mutex::new(store)),
            stats: Mutex::new(Stats::default()),
            faults: Faults::default(),
            last: Mutex::new(None),
            health_calls: Mutex::new(Vec::new()),
            ready: AtomicBool::new(true),
            started: Instant::now(),
            cost: RwLock::new(self.cost),
            gzip_only: AtomicBool::new(self.gzip_only),
            lanes: Arc::new(tokio::sync::Semaphore::new(LANE_PERMITS as usize)),
        });
        let task = tokio::spawn(server::serve(listener, server::router(shared.clone())));
        Ok(ArcStandIn {
            shared,
            addr,
            task: Mutex::new(Some(task)),
        })
    }
}

/// A running stand-in; stops (connections included) when dropped.
pub struct ArcStandIn {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// The accept loop; `None` while down ([`ArcStandIn::go_down`]).
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for ArcStandIn {
    fn drop(&mut self) {
        self.go_down();
    }
}

impl ArcStandIn {
    /// Default limits, auth off, on `127.0.0.1:0`; instant answers and
    /// writes readable at once (for tests that check behaviour only —
    /// anything that measures starts one with [`CostModel::arc_like`]).
    pub async fn start() -> anyhow::Result<Self> {
        Self::builder().start().await
    }

    pub fn builder() -> ArcStandInBuilder {
        ArcStandInBuilder::default()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The fault switchboard (shared; clone it into other tasks freely).
    pub fn faults(&self) -> Faults {
        self.shared.faults.clone()
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats_mut(|s| s.clone()).unwrap_or_default()
    }

    pub fn reset_stats(&self) {
        self.shared.stats_mut(|s| *s = Stats::default());
    }

    /// The last request received (any route), headers included.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.shared.last.lock().ok().and_then(|l| l.clone())
    }

    /// Headers of the `/health` calls received (the last 1024).
    pub fn health_calls(&self) -> Vec<HeaderMap> {
        self.shared
            .health_calls
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// `GET /ready` answers 503 `not_ready` while false.
    pub fn set_ready(&self, ready: bool) {
        self.shared.ready.store(ready, Ordering::SeqCst);
    }

    /// The cost model in force.
    pub fn cost_model(&self) -> CostModel {
        self.shared.cost_model()
    }

    /// Replaces the cost model (requests already held keep their hold).
    pub fn set_cost_model(&self, model: CostModel) {
        if let Ok(mut c) = self.shared.cost.write() {
            *c = model;
        }
    }

    /// Turns gzip-only mode on or off.
    pub fn set_gzip_only(&self, on: bool) {
        self.shared.gzip_only.store(on, Ordering::SeqCst);
    }

    /// Changes the flush policy and the visibility delay; every buffer is
    /// flushed first. Returns the rows that flush made readable.
    pub fn set_buffering(
        &self,
        buffering: Buffering,
        visibility_delay: bool,
    ) -> anyhow::Result<u64> {
        self.with_store(|s| s.set_buffering(buffering, visibility_delay))
    }

    /// Turns the visibility delay on or off (the flush policy stays).
    pub fn set_visibility_delay(&self, on: bool) -> anyhow::Result<u64> {
        self.with_store(|s| {
            let (buffering, _) = s.buffering();
            s.set_buffering(buffering, on)
        })
    }

    /// Flushes every buffer now; returns the rows made readable.
    pub fn flush_buffers(&self) -> anyhow::Result<u64> {
        self.with_store(store::Store::flush_all)
    }

    /// Loses every row not flushed yet, as Arc without its WAL does when it
    /// crashes or restarts; returns how many. Rows whose buffer was due
    /// are flushed first and survive.
    pub fn crash_unflushed(&self) -> anyhow::Result<u64> {
        let lost = self.with_store(|s| s.crash_unflushed(Instant::now()))?;
        self.shared.stats_mut(|st| st.rows_lost += lost);
        Ok(lost)
    }

    /// Rows of `database`.`measurement` accepted but not readable yet.
    pub fn buffered_rows(&self, database: &str, measurement: &str) -> u64 {
        self.shared
            .store
            .lock()
            .map(|s| s.held_rows(database, measurement))
            .unwrap_or(0)
    }

    fn with_store<R>(
        &self,
        f: impl FnOnce(&mut store::Store) -> Result<R, store::StoreError>,
    ) -> anyhow::Result<R> {
        let mut s = self
            .shared
            .store
            .lock()
            .map_err(|_| anyhow::anyhow!("stand-in store poisoned"))?;
        f(&mut s).map_err(|e| anyhow::anyhow!("stand-in store: {e:?}"))
    }

    /// Adds or replaces a token (auth turns on with the first one).
    pub fn set_token(&self, token: impl Into<String>, grant: TokenGrant) {
        if let Ok(mut t) = self.shared.tokens.write() {
            t.insert(token.into(), grant);
        }
    }

    /// Revokes a token (auth turns off when none is left).
    pub fn remove_token(&self, token: &str) {
        if let Ok(mut t) = self.shared.tokens.write() {
            t.remove(token);
        }
    }

    /// Readable rows of `database`.`measurement` (flushed, when the
    /// visibility delay is on; buffers due by now count as flushed).
    pub fn row_count(&self, database: &str, measurement: &str) -> u64 {
        self.shared
            .store
            .lock()
            .ok()
            .and_then(|mut s| {
                s.settle(Instant::now()).ok()?;
                Some(s.row_count(database, measurement))
            })
            .unwrap_or(0)
    }

    /// Every readable row of `database`.`measurement` by time, as column →
    /// value maps rendered as the query endpoint renders them.
    pub async fn rows(
        &self,
        database: &str,
        measurement: &str,
    ) -> anyhow::Result<Vec<serde_json::Map<String, serde_json::Value>>> {
        let out = self
            .query(
                database,
                &format!("SELECT * FROM {measurement} ORDER BY time"),
            )
            .await?;
        Ok(out
            .data
            .into_iter()
            .map(|row| out.columns.iter().cloned().zip(row).collect())
            .collect())
    }

    /// Runs `sql` as a query with `x-arc-database: database` would run
    /// (same guard, rewrite, rendering and visibility; no auth, faults,
    /// counters or modelled hold).
    pub async fn query(&self, database: &str, sql: &str) -> anyhow::Result<QueryOutput> {
        read::run_query(&self.shared, Some(database), sql)
            .await
            .map_err(|(status, msg)| anyhow::anyhow!("{status}: {msg}"))
    }
}
