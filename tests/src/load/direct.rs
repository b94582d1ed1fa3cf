//! The direct ceiling: pre-encoded columnar MessagePack batches, shaped as
//! the worker writes memories, posted straight to an Arc's write endpoint.

use super::{Bounds, Run, claim, collect, content, ensure_loopback, micros};
use memtrace_data_plane::arcdb::{Compression, MemoryBatch, compress};
use memtrace_data_plane::store::MemoryRow;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

/// Arc rows as the worker would write them.
pub fn arc_rows(task: usize, seq: u64, rows: usize, time_us: i64) -> MemoryBatch {
    let mut batch = MemoryBatch::with_capacity(rows);
    for i in 0..rows {
        batch.push(&MemoryRow {
            time: time_us + i as i64,
            id: format!("mem_{time_us:012x}{task:04x}{seq:06x}{i:04x}"),
            org_id: "org_bench".into(),
            agent_id: "agent_bench".into(),
            memory_type: "episodic".into(),
            event_type: "general".into(),
            content: content("direct", task, seq, i),
            metadata_json: "{}".into(),
            dedup_key: format!("{task:08x}{seq:016x}{i:08x}"),
            importance: 0.5,
            ..MemoryRow::default()
        });
    }
    batch
}

/// Which Arc a direct load posts to, and how.
#[derive(Debug, Clone, Copy)]
pub struct DirectTarget<'a> {
    /// `http://127.0.0.1:<port>` (loopback only).
    pub url: &'a str,
    pub database: &'a str,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub token: Option<&'a str>,
    pub compression: Compression,
}

/// The ceiling: `concurrency` tasks post pre-encoded batches of `rows` rows
/// straight to the write endpoint of `target`.
pub async fn direct_arc(
    target: DirectTarget<'_>,
    measurement: &str,
    rows: usize,
    concurrency: usize,
    bounds: Bounds,
) -> anyhow::Result<Run> {
    let url = target.url;
    ensure_loopback(url)?;
    let http = crate::http_client();
    let encoding = target.compression.content_encoding();
    let auth = target.token.map(|t| format!("Bearer {t}"));
    let now_us = memtrace_data_plane::query::UnixMicros::now().0;
    let mut bodies = Vec::new();
    for seq in 0..8u64 {
        let encoded = arc_rows(0, seq, rows, now_us).encode(measurement);
        bodies.push(memtrace_data_plane::arcdb::Bytes::from(compress(
            &encoded,
            target.compression,
        )?));
    }
    let bodies = Arc::new(bodies);
    let budget = Arc::new(AtomicU64::new(bounds.max_requests));
    let deadline = Instant::now() + bounds.duration;
    let endpoint = format!("{}/api/v1/write/msgpack", url.trim_end_matches('/'));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..concurrency {
        let (http, bodies, budget, endpoint) = (
            http.clone(),
            bodies.clone(),
            budget.clone(),
            endpoint.clone(),
        );
        let (database, auth) = (target.database.to_owned(), auth.clone());
        tasks.push(tokio::spawn(async move {
            let mut run = Run::default();
            let mut n = task;
            while claim(&budget, deadline) {
                let body = bodies[n % bodies.len()].clone();
                n += 1;
                let t = Instant::now();
                let mut req = http
                    .post(&endpoint)
                    .header("content-type", "application/msgpack")
                    .header("x-arc-database", &database)
                    .body(body);
                if let Some(e) = encoding {
                    req = req.header("content-encoding", e);
                }
                if let Some(a) = &auth {
                    req = req.header("authorization", a);
                }
                let sent = req.send().await;
                match sent {
                    Ok(r) if r.status().is_success() => {
                        run.requests += 1;
                        run.events += rows as u64;
                        run.latencies_us.push(micros(t.elapsed()));
                    }
                    Ok(r) => {
                        run.errors += 1;
                        *run.failures.entry(r.status().as_u16()).or_default() += 1;
                    }
                    Err(_) => {
                        run.errors += 1;
                        *run.failures.entry(0).or_default() += 1;
                    }
                }
            }
            run
        }));
    }
    collect(tasks, started).await
}
