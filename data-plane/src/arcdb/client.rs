//! [`ArcClient`]: one pooled HTTP client for every tenant's Arc.
//!
//! - writes: `POST {url}/api/v1/write/msgpack`, the encoded (and maybe
//!   compressed) body, `Content-Type: application/msgpack`,
//!   `Content-Encoding` when compressed (Arc Go sniffs magic bytes, the
//!   Python build read the header: both are sent), `x-arc-database`, and
//!   `Authorization: Bearer <key>` when the target has a key; 2xx = stored.
//! - queries: `POST {url}/api/v1/query` with `{"sql"}` and Bearer auth but
//!   **no** `x-arc-database` (Arc Go refuses `db.m` in the SQL when it is
//!   set; the [`query`](crate::query) builder qualifies every table);
//!   Arc's row-major JSON envelope becomes a [`Rows`].
//! - deletes: `POST {url}/api/v1/delete` (see [`super::delete`]).
//! - `GET {url}/health`.
//!
//! The key goes out only in a header marked sensitive, and is never logged
//! or put in an error.

use super::ArcTarget;
use super::encode::Compression;
use super::error::{ArcError, arc_message};
use super::metrics::{ArcMetrics, Op};
use super::retry::RetryPolicy;
use crate::query::Sql;
use crate::store::Rows;
use axum::body::Bytes;
use memtrace_common::telemetry::traces;
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderValue};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;
use zeroize::Zeroizing;

/// The span of one Arc call (none while trace export is off): a child of
/// the request or batch it serves; its context goes to Arc as
/// `traceparent`.
fn arc_span(name: &'static str, target: &ArcTarget<'_>) -> tracing::Span {
    if !traces::enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        target: traces::TARGET,
        "arc",
        otel.name = name,
        otel.kind = "client",
        db.system = "arc",
        db.namespace = target.database,
        memtrace.rows = tracing::field::Empty,
    )
}

/// Adds the current span's `traceparent` (when exporting) to `req`.
fn with_trace_context(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    if !traces::enabled() {
        return req;
    }
    let mut headers = reqwest::header::HeaderMap::new();
    traces::inject(&tracing::Span::current(), &mut headers);
    req.headers(headers)
}

const WRITE_PATH: &str = "/api/v1/write/msgpack";
const QUERY_PATH: &str = "/api/v1/query";
const HEALTH_PATH: &str = "/health";
const DATABASE_HEADER: &str = "x-arc-database";
/// Error bodies are read up to this many bytes.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// Connection settings shared by every tenant.
#[derive(Debug, Clone)]
pub struct ArcClientConfig {
    /// TCP (and TLS) connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout (connect, send, wait, read).
    pub request_timeout: Duration,
    /// Idle connections kept per Arc host.
    pub pool_max_idle_per_host: usize,
    /// Idle connections are closed after this long.
    pub pool_idle_timeout: Duration,
    /// Largest query reply read (larger → [`ArcError::ReplyTooLarge`]).
    pub max_response_bytes: usize,
    /// Reply bytes all queries of this client may hold at once. A query
    /// whose reply finds no room fails at once with
    /// [`ArcError::ReplyBudget`] (a retryable 429 for the client) instead
    /// of waiting while it holds part of the budget, which could deadlock
    /// concurrent large reads.
    pub reply_budget_bytes: usize,
}

/// Largest reply of one read: bounds what one request can make the worker
/// hold (a page of memories at the content limit still fits 64 of them).
pub const MAX_REPLY_BYTES: usize = 16 << 20;
/// Reply bytes the worker's reads hold at once, over all orgs.
pub const REPLY_BUDGET_BYTES: usize = 64 << 20;

impl ArcClientConfig {
    pub fn new(connect_timeout: Duration, request_timeout: Duration) -> Self {
        Self {
            connect_timeout,
            request_timeout,
            pool_max_idle_per_host: 32,
            // Arc closes idle connections after 120 s; leave first.
            pool_idle_timeout: Duration::from_secs(90),
            max_response_bytes: MAX_REPLY_BYTES,
            reply_budget_bytes: REPLY_BUDGET_BYTES,
        }
    }
}

/// Arc's query envelope (Go and Python builds).
#[derive(Deserialize)]
struct QueryReply {
    #[serde(default = "yes")]
    success: bool,
    #[serde(default)]
    columns: Vec<String>,
    #[serde(default)]
    data: Vec<Vec<Value>>,
    #[serde(default)]
    row_count: Option<usize>,
    #[serde(default)]
    execution_time_ms: Option<f64>,
    #[serde(default)]
    error: Option<String>,
}

fn yes() -> bool {
    true
}

/// The shared Arc client (cheap to clone: one connection pool).
#[derive(Debug, Clone)]
pub struct ArcClient {
    http: reqwest::Client,
    max_response_bytes: usize,
    /// In KiB permits; see [`ArcClientConfig::reply_budget_bytes`].
    reply_budget: Arc<Semaphore>,
    metrics: ArcMetrics,
}

impl ArcClient {
    /// A client with default pooling and these timeouts.
    pub fn new(connect_timeout: Duration, request_timeout: Duration) -> Result<Self, ArcError> {
        Self::with_config(&ArcClientConfig::new(connect_timeout, request_timeout))
    }

    pub fn with_config(cfg: &ArcClientConfig) -> Result<Self, ArcError> {
        memtrace_common::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.request_timeout)
            .pool_max_idle_per_host(cfg.pool_max_idle_per_host)
            .pool_idle_timeout(cfg.pool_idle_timeout)
            .tcp_nodelay(true)
            .user_agent(concat!("memtrace-data-plane/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ArcError::from_reqwest)?;
        Ok(Self {
            http,
            max_response_bytes: cfg.max_response_bytes,
            reply_budget: Arc::new(Semaphore::new(kib(cfg
                .reply_budget_bytes
                .max(cfg.max_response_bytes))
                as usize)),
            metrics: ArcMetrics::default(),
        })
    }

    /// The pooled HTTP client (for the other modules' calls).
    pub(super) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The client's request metrics (shared by its clones), to register.
    pub fn metrics(&self) -> &ArcMetrics {
        &self.metrics
    }

    /// Sends one write body (already encoded, compressed per
    /// `compression`) to the target's database. One attempt.
    pub async fn write(
        &self,
        target: &ArcTarget<'_>,
        body: Bytes,
        compression: Compression,
    ) -> Result<(), ArcError> {
        let span = arc_span("arc.write", target);
        self.write_once(target, body, compression)
            .instrument(span)
            .await
    }

    async fn write_once(
        &self,
        target: &ArcTarget<'_>,
        body: Bytes,
        compression: Compression,
    ) -> Result<(), ArcError> {
        let started = Instant::now();
        let bytes = body.len();
        let mut req = self
            .http
            .post(endpoint(target.url, WRITE_PATH))
            .header(CONTENT_TYPE, "application/msgpack")
            .header(DATABASE_HEADER, header_value(target.database, "database")?);
        if let Some(enc) = compression.content_encoding() {
            req = req.header(CONTENT_ENCODING, enc);
        }
        if let Some(auth) = bearer(target.api_key)? {
            req = req.header(AUTHORIZATION, auth);
        }
        req = with_trace_context(req);
        self.metrics.write_body(bytes);
        let result = match req.body(body).send().await {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => Err(failure(resp).await),
            Err(e) => Err(ArcError::from_reqwest(e)),
        };
        self.metrics.observe(Op::Write, started.elapsed(), &result);
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(()) => tracing::debug!(
                database = target.database,
                bytes,
                elapsed_ms,
                "arc write ok"
            ),
            Err(e) => tracing::debug!(
                database = target.database,
                bytes,
                elapsed_ms,
                error = %e,
                "arc write failed"
            ),
        }
        result
    }

    /// [`write`](Self::write), retried per `policy` on retryable errors
    /// (the body is shared, not copied, between attempts). A retried write
    /// that had landed is stored twice: reads de-duplicate by `id`.
    pub async fn write_with_retry(
        &self,
        target: &ArcTarget<'_>,
        body: Bytes,
        compression: Compression,
        policy: &RetryPolicy,
    ) -> Result<(), ArcError> {
        policy
            .run("write", || self.write(target, body.clone(), compression))
            .await
    }

    /// Runs one read. The SQL must name tables `db.measurement`.
    pub async fn query(&self, target: &ArcTarget<'_>, sql: &Sql) -> Result<Rows, ArcError> {
        let started = Instant::now();
        let span = arc_span("arc.query", target);
        let result = self.query_once(target, sql).instrument(span.clone()).await;
        if let Ok(rows) = &result {
            span.record("memtrace.rows", rows.rows.len());
        }
        self.metrics.observe(Op::Query, started.elapsed(), &result);
        match &result {
            Ok(rows) => tracing::debug!(
                database = target.database,
                rows = rows.rows.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "arc query ok"
            ),
            Err(e) => tracing::debug!(database = target.database, error = %e, "arc query failed"),
        }
        result
    }

    async fn query_once(&self, target: &ArcTarget<'_>, sql: &Sql) -> Result<Rows, ArcError> {
        let mut req = self
            .http
            .post(endpoint(target.url, QUERY_PATH))
            .json(&serde_json::json!({ "sql": sql.as_str() }));
        if let Some(auth) = bearer(target.api_key)? {
            req = req.header(AUTHORIZATION, auth);
        }
        req = with_trace_context(req);
        let resp = req.send().await.map_err(ArcError::from_reqwest)?;
        if !resp.status().is_success() {
            return Err(failure(resp).await);
        }
        // the reply's bytes count against the budget until it is parsed
        let mut held = Vec::new();
        let body = read_capped(
            resp,
            self.max_response_bytes,
            Overflow::Fail,
            Some((&self.reply_budget, &mut held)),
        )
        .await?;
        let result = parse_query_reply(&body)?;
        drop(body);
        drop(held);
        Ok(result)
    }

    /// [`query`](Self::query), retried per `policy` on retryable errors.
    pub async fn query_with_retry(
        &self,
        target: &ArcTarget<'_>,
        sql: &Sql,
        policy: &RetryPolicy,
    ) -> Result<Rows, ArcError> {
        policy.run("query", || self.query(target, sql)).await
    }

    /// `GET {url}/health` (public on Arc): Ok on 2xx.
    pub async fn health(&self, url: &str) -> Result<(), ArcError> {
        let resp = self
            .http
            .get(endpoint(url, HEALTH_PATH))
            .send()
            .await
            .map_err(ArcError::from_reqwest)?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(failure(resp).await)
        }
    }
}

pub(super) fn endpoint(url: &str, path: &str) -> String {
    format!("{}{path}", url.trim_end_matches('/'))
}

fn header_value(value: &str, what: &str) -> Result<HeaderValue, ArcError> {
    HeaderValue::from_str(value)
        .map_err(|_| ArcError::InvalidTarget(format!("{what} is not a valid header value")))
}

/// `Bearer <key>`, marked sensitive (kept out of debug output and HPACK).
pub(super) fn bearer(key: Option<&str>) -> Result<Option<HeaderValue>, ArcError> {
    let Some(key) = key.filter(|k| !k.is_empty()) else {
        return Ok(None);
    };
    let text = Zeroizing::new(format!("Bearer {key}"));
    let mut v = HeaderValue::from_str(&text)
        .map_err(|_| ArcError::InvalidTarget("api key is not a valid header value".to_string()))?;
    v.set_sensitive(true);
    Ok(Some(v))
}

/// The error for a non-2xx reply, with Arc's message.
pub(super) async fn failure(resp: reqwest::Response) -> ArcError {
    let status = resp.status().as_u16();
    let message = read_capped_error_body(resp).await;
    ArcError::from_status(status, message)
}

/// Arc's message from an error reply (its first bytes).
pub(super) async fn read_capped_error_body(resp: reqwest::Response) -> String {
    match read_capped(resp, MAX_ERROR_BODY, Overflow::Truncate, None).await {
        Ok(body) => arc_message(&body),
        Err(e) => format!("(body unreadable: {e})"),
    }
}

/// What to do with a body longer than the cap.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Overflow {
    /// Keep the first bytes (error messages).
    Truncate,
    /// Fail with [`ArcError::Decode`] (query replies).
    Fail,
}

/// The body, at most `max` bytes of it.
async fn read_capped(
    mut resp: reqwest::Response,
    max: usize,
    overflow: Overflow,
    mut budget: Option<(&Arc<Semaphore>, &mut Vec<OwnedSemaphorePermit>)>,
) -> Result<Vec<u8>, ArcError> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(ArcError::from_reqwest)? {
        let room = max.saturating_sub(out.len());
        if chunk.len() > room {
            if overflow == Overflow::Truncate {
                out.extend_from_slice(&chunk[..room]);
                return Ok(out);
            }
            return Err(ArcError::ReplyTooLarge { max });
        }
        if let Some((semaphore, held)) = budget.as_mut() {
            let permits = semaphore
                .clone()
                .try_acquire_many_owned(kib(chunk.len()))
                .map_err(|_| ArcError::ReplyBudget)?;
            held.push(permits);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Whole KiB covering `bytes` (at least one), as semaphore permits.
fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX)
}

fn parse_query_reply(body: &[u8]) -> Result<Rows, ArcError> {
    let reply: QueryReply = serde_json::from_slice(body)
        .map_err(|e| ArcError::Decode(format!("query reply is not Arc's envelope: {e}")))?;
    if !reply.success {
        let msg = reply.error.unwrap_or_else(|| "no error message".into());
        return Err(ArcError::Decode(format!(
            "query failed: {}",
            arc_message(msg.as_bytes())
        )));
    }
    let width = reply.columns.len();
    if let Some(bad) = reply.data.iter().position(|r| r.len() != width) {
        return Err(ArcError::Decode(format!(
            "row {bad} has {} values for {width} columns",
            reply.data[bad].len()
        )));
    }
    if let Some(n) = reply.row_count.filter(|n| *n != reply.data.len()) {
        tracing::debug!(
            row_count = n,
            rows = reply.data.len(),
            "arc row_count differs from data"
        );
    }
    Ok(Rows {
        columns: reply.columns,
        rows: reply.data,
        execution_time_ms: reply.execution_time_ms,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_the_envelope_and_refuses_ragged_rows() {
        let ok = br#"{"success":true,"columns":["a","b"],"data":[[1,"x"],[2,null]],
            "row_count":2,"execution_time_ms":3,"timestamp":"2026-01-01T00:00:00Z"}"#;
        let r = parse_query_reply(ok).unwrap();
        assert_eq!(r.columns, ["a", "b"]);
        assert_eq!(r.rows[1][1], Value::Null);
        assert_eq!(r.column("b"), Some(1));
        let ragged = br#"{"success":true,"columns":["a","b"],"data":[[1]]}"#;
        assert!(matches!(
            parse_query_reply(ragged),
            Err(ArcError::Decode(_))
        ));
        let failed = br#"{"success":false,"error":"Query execution failed"}"#;
        let e = parse_query_reply(failed).unwrap_err();
        assert!(e.to_string().contains("Query execution failed"), "{e}");
    }

    #[test]
    fn bearer_is_sensitive_and_never_echoed() {
        let v = bearer(Some("s3cret")).unwrap().unwrap();
        assert!(v.is_sensitive());
        assert_eq!(bearer(Some("")).unwrap(), None);
        let e = bearer(Some("bad\nkey")).unwrap_err();
        assert!(!e.to_string().contains("bad"), "{e}");
    }
}
