//! Bounded load loops for the ingest benchmark (`ingest-bench`): the direct
//! ceiling (pre-encoded Arc batches posted straight to an Arc stand-in),
//! gRPC streaming writes into a worker, and REST single-memory writes shaped
//! like the SDK's `remember`. Every loop stops at a request count or a
//! duration, whichever comes first, and only ever targets the address it is
//! given (the benchmark passes 127.0.0.1 addresses only).

use anyhow::Context;
use memtrace_data_plane::arc::{Compression, MemoryBatch, MemoryRow, compress};
use memtrace_proto::v1 as pb;
use pb::memory_service_client::MemoryServiceClient;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// The outcome of one load phase.
#[derive(Debug, Default, Clone)]
pub struct Run {
    /// Events acknowledged as stored.
    pub events: u64,
    /// Requests (or batches) acknowledged.
    pub requests: u64,
    /// Requests refused or failed (429s included).
    pub errors: u64,
    /// Of `errors`, how many were 429 / RESOURCE_EXHAUSTED.
    pub throttled: u64,
    pub elapsed: Duration,
    /// Per-request latency in µs (REST) or per-batch ack latency (gRPC).
    pub latencies_us: Vec<u32>,
    /// Failed requests by HTTP status (0: no response).
    pub failures: std::collections::BTreeMap<u16, u64>,
}

impl Run {
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn requests_per_sec(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `p`-th percentile latency (0..=100) in milliseconds.
    pub fn percentile_ms(&mut self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        self.latencies_us.sort_unstable();
        let rank = ((p / 100.0) * (self.latencies_us.len() - 1) as f64).round() as usize;
        f64::from(self.latencies_us[rank.min(self.latencies_us.len() - 1)]) / 1000.0
    }

    fn merge(&mut self, other: Run) {
        self.events += other.events;
        self.requests += other.requests;
        self.errors += other.errors;
        self.throttled += other.throttled;
        self.latencies_us.extend(other.latencies_us);
        for (status, n) in other.failures {
            *self.failures.entry(status).or_default() += n;
        }
    }
}

/// Bounds of one phase.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub duration: Duration,
    /// Most requests (or batches) over all tasks.
    pub max_requests: u64,
}

/// Claims one request of the shared budget; false when spent or late.
fn claim(budget: &AtomicU64, deadline: Instant) -> bool {
    Instant::now() < deadline
        && budget
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// A memory's content: unique per (phase, task, seq, i) so dedup never
/// collapses benchmark events, about 120 bytes like a short agent
/// observation.
pub fn content(phase: &str, task: usize, seq: u64, i: usize) -> String {
    format!(
        "{phase} observation {task}-{seq}-{i}: the agent read the ticket, checked the deploy log and decided to roll back"
    )
}

/// Arc rows as the worker would write them.
pub fn arc_rows(task: usize, seq: u64, rows: usize, time_us: i64) -> MemoryBatch {
    let mut batch = MemoryBatch::with_capacity(rows);
    for i in 0..rows {
        batch.push(MemoryRow {
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

/// The ceiling: `concurrency` tasks post pre-encoded zstd batches of
/// `rows` rows straight to Arc's write endpoint at `url`.
pub async fn direct_arc(
    url: &str,
    database: &str,
    measurement: &str,
    rows: usize,
    concurrency: usize,
    bounds: Bounds,
) -> anyhow::Result<Run> {
    let http = crate::http_client();
    let now_us = memtrace_data_plane::query::UnixMicros::now().0;
    let mut bodies = Vec::new();
    for seq in 0..8u64 {
        let encoded = arc_rows(0, seq, rows, now_us).encode(measurement);
        bodies.push(memtrace_data_plane::arc::Bytes::from(compress(
            &encoded,
            Compression::Zstd,
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
        let database = database.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut run = Run::default();
            let mut n = task;
            while claim(&budget, deadline) {
                let body = bodies[n % bodies.len()].clone();
                n += 1;
                let t = Instant::now();
                let sent = http
                    .post(&endpoint)
                    .header("content-type", "application/msgpack")
                    .header("content-encoding", "zstd")
                    .header("x-arc-database", &database)
                    .body(body)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => {
                        run.requests += 1;
                        run.events += rows as u64;
                        run.latencies_us.push(micros(t.elapsed()));
                    }
                    _ => run.errors += 1,
                }
            }
            run
        }));
    }
    collect(tasks, started).await
}

async fn collect(
    tasks: Vec<tokio::task::JoinHandle<Run>>,
    started: Instant,
) -> anyhow::Result<Run> {
    let mut total = Run::default();
    for t in tasks {
        total.merge(t.await.context("load task panicked")?);
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

fn with_key<T>(key: &str, message: T) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-api-key", key.parse().context("api key as metadata")?);
    Ok(request)
}

/// gRPC streaming ingest: `streams` bidirectional `StreamMemories` calls,
/// each keeping up to `window` unacknowledged batches of `rows` memories.
pub async fn grpc_stream(
    phase: &'static str,
    endpoint: &str,
    key: &str,
    rows: usize,
    streams: usize,
    window: usize,
    bounds: Bounds,
) -> anyhow::Result<Run> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connect to {endpoint}"))?;
    let budget = Arc::new(AtomicU64::new(bounds.max_requests));
    let deadline = Instant::now() + bounds.duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..streams {
        let client = MemoryServiceClient::new(channel.clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let (budget, key) = (budget.clone(), key.to_owned());
        tasks.push(tokio::spawn(async move {
            // what a failed stream had acknowledged still counts
            let mut run = Run::default();
            let shape = Stream {
                phase,
                task,
                rows,
                window,
            };
            if let Err(e) = one_stream(client, &key, shape, &budget, deadline, &mut run).await {
                eprintln!("stream {task} failed: {e:#}");
                run.errors += 1;
            }
            run
        }));
    }
    collect(tasks, started).await
}

fn write_batch(phase: &str, task: usize, seq: u64, rows: usize) -> pb::WriteBatch {
    let memories = (0..rows)
        .map(|i| pb::MemoryInput {
            agent_id: "agent_bench".into(),
            memory_type: "episodic".into(),
            event_type: "general".into(),
            content: content(phase, task, seq, i),
            ..pb::MemoryInput::default()
        })
        .collect();
    pb::WriteBatch {
        sequence: seq,
        memories,
    }
}

/// One stream's shape: which events it writes and how many it keeps open.
struct Stream<'a> {
    phase: &'a str,
    task: usize,
    rows: usize,
    window: usize,
}

async fn one_stream(
    mut client: MemoryServiceClient<tonic::transport::Channel>,
    key: &str,
    stream: Stream<'_>,
    budget: &AtomicU64,
    deadline: Instant,
    run: &mut Run,
) -> anyhow::Result<()> {
    let Stream {
        phase,
        task,
        rows,
        window,
    } = stream;
    let (tx, rx) = mpsc::channel::<pb::WriteBatch>(window.max(1));
    let mut acks = client
        .stream_memories(with_key(key, ReceiverStream::new(rx))?)
        .await
        .context("open StreamMemories")?
        .into_inner();
    let mut sent_at = std::collections::HashMap::new();
    let mut seq = 0u64;
    let mut open = true;
    loop {
        while open && sent_at.len() < window.max(1) {
            if !claim(budget, deadline) {
                open = false;
                break;
            }
            let batch = write_batch(phase, task, seq, rows);
            sent_at.insert(seq, Instant::now());
            seq += 1;
            if tx.send(batch).await.is_err() {
                open = false;
            }
        }
        if sent_at.is_empty() {
            break;
        }
        let Some(ack) = acks.message().await.context("read ack")? else {
            anyhow::bail!("stream ended with {} batches unacknowledged", sent_at.len());
        };
        let Some(t) = sent_at.remove(&ack.sequence) else {
            anyhow::bail!("ack for unknown sequence {}", ack.sequence);
        };
        match ack.error {
            None => {
                run.requests += 1;
                run.events += ack
                    .results
                    .iter()
                    .filter(|r| r.outcome == pb::item_result::Outcome::Created as i32)
                    .count() as u64;
                run.latencies_us.push(micros(t.elapsed()));
            }
            Some(e) => {
                run.errors += 1;
                if e.code == tonic::Code::ResourceExhausted as i32 {
                    run.throttled += 1;
                    tokio::time::sleep(Duration::from_millis(e.retry_after_ms.clamp(1, 1000)))
                        .await;
                }
            }
        }
    }
    drop(tx);
    Ok(())
}

/// REST single-memory writes shaped like the SDK's `remember`, from
/// `concurrency` tasks.
pub async fn rest_single(
    base: &str,
    key: &str,
    concurrency: usize,
    bounds: Bounds,
) -> anyhow::Result<Run> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .build()?;
    let url = format!("{}/api/v1/memories", base.trim_end_matches('/'));
    let budget = Arc::new(AtomicU64::new(bounds.max_requests));
    let deadline = Instant::now() + bounds.duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..concurrency {
        let (http, url, budget, key) = (http.clone(), url.clone(), budget.clone(), key.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut run = Run::default();
            let mut seq = 0u64;
            while claim(&budget, deadline) {
                let body = serde_json::json!({
                    "agent_id": "agent_bench",
                    "memory_type": "episodic",
                    "event_type": "general",
                    "content": content("rest", task, seq, 0),
                });
                seq += 1;
                let t = Instant::now();
                let sent = http
                    .post(&url)
                    .header("x-api-key", &key)
                    .json(&body)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => {
                        run.requests += 1;
                        run.events += 1;
                        run.latencies_us.push(micros(t.elapsed()));
                    }
                    Ok(r) if r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS => {
                        run.errors += 1;
                        run.throttled += 1;
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

/// Resident set size of process `pid` in KiB (Linux `/proc`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
