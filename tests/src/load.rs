//! Bounded load loops for the ingest benchmark (`ingest-bench`): the direct
//! ceiling (pre-encoded Arc batches posted straight to an Arc stand-in),
//! gRPC streaming writes into a worker, and REST single-memory writes shaped
//! like the SDK's `remember`. Every loop stops at a request count or a
//! duration, whichever comes first, and only ever targets the address it is
//! given (the benchmark passes 127.0.0.1 addresses only).

use anyhow::Context;
use memtrace_data_plane::arcdb::{Compression, MemoryBatch, MemoryRow, compress};
use memtrace_proto::v1 as pb;
use prost::bytes::{BufMut, Bytes, BytesMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;

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

/// Refuses a load target that is not on this machine's loopback interface
/// (load and fault tests may only ever aim at 127.0.0.1 / ::1).
pub fn ensure_loopback(url: &str) -> anyhow::Result<()> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("load target {url:?}"))?;
    let loopback = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    };
    anyhow::ensure!(loopback, "load target {url} is not a loopback address");
    Ok(())
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
    ensure_loopback(url)?;
    let http = crate::http_client();
    let now_us = memtrace_data_plane::query::UnixMicros::now().0;
    let mut bodies = Vec::new();
    for seq in 0..8u64 {
        let encoded = arc_rows(0, seq, rows, now_us).encode(measurement);
        bodies.push(memtrace_data_plane::arcdb::Bytes::from(compress(
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
/// Like the direct phase's pre-encoded Arc bodies, each stream's
/// `WriteBatch` is encoded once ([`BatchTemplate`]) and only each event's
/// counter and the sequence are rewritten per batch, so the figure is the
/// worker's cost, not the generator's.
pub async fn grpc_stream(
    phase: &'static str,
    endpoint: &str,
    key: &str,
    rows: usize,
    streams: usize,
    window: usize,
    bounds: Bounds,
) -> anyhow::Result<Run> {
    ensure_loopback(endpoint)?;
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
        let template = BatchTemplate::new(phase, task, rows)?;
        let (budget, key, channel) = (budget.clone(), key.to_owned(), channel.clone());
        tasks.push(tokio::spawn(async move {
            // what a failed stream had acknowledged still counts
            let mut run = Run::default();
            let stream = one_stream(
                channel, &key, &template, window, &budget, deadline, &mut run,
            );
            if let Err(e) = stream.await {
                eprintln!("stream {task} failed: {e:#}");
                run.errors += 1;
            }
            run
        }));
    }
    collect(tasks, started).await
}

/// One stream's `WriteBatch` encoded once: every memory's content carries a
/// 16-hex-digit slot, rewritten per batch so each event stays unique (dedup
/// never collapses benchmark events); the sequence (field 1) is appended
/// after the memories (protobuf fields may come in any order).
pub struct BatchTemplate {
    encoded: Vec<u8>,
    slots: Vec<usize>,
    task: usize,
}

const SLOT: &[u8] = b"0000000000000000";

impl BatchTemplate {
    pub fn new(phase: &str, task: usize, rows: usize) -> anyhow::Result<Self> {
        let marker = format!("{phase} observation ");
        let memories = (0..rows)
            .map(|i| pb::MemoryInput {
                agent_id: "agent_bench".into(),
                memory_type: "episodic".into(),
                event_type: "general".into(),
                content: format!(
                    "{marker}{}-{i:05}: the agent read the ticket, checked the deploy log and decided to roll back",
                    std::str::from_utf8(SLOT).unwrap_or_default()
                ),
                ..pb::MemoryInput::default()
            })
            .collect();
        let encoded = prost::Message::encode_to_vec(&pb::WriteBatch {
            sequence: 0,
            memories,
        });
        let needle = [marker.as_bytes(), SLOT].concat();
        let slots: Vec<usize> = encoded
            .windows(needle.len())
            .enumerate()
            .filter(|(_, w)| *w == needle.as_slice())
            .map(|(at, _)| at + marker.len())
            .collect();
        anyhow::ensure!(
            slots.len() == rows,
            "template: {} slots for {rows} rows",
            slots.len()
        );
        Ok(Self {
            encoded,
            slots,
            task,
        })
    }

    /// The encoded `WriteBatch` number `seq` of this stream.
    pub fn batch(&self, seq: u64) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.encoded.len() + 11);
        buf.extend_from_slice(&self.encoded);
        let slot = format!("{:06x}{seq:010x}", self.task);
        for &at in &self.slots {
            buf[at..at + SLOT.len()].copy_from_slice(slot.as_bytes());
        }
        // field 1 (sequence), varint
        buf.put_u8(0x08);
        prost::encoding::encode_varint(seq, &mut buf);
        buf.freeze()
    }
}

/// What the generator reads of a `WriteAck`: per item only the outcome
/// (the ids are skipped by the decoder, not allocated).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AckSummary {
    #[prost(uint64, tag = "1")]
    pub sequence: u64,
    #[prost(message, repeated, tag = "2")]
    pub results: Vec<OutcomeOnly>,
    #[prost(message, optional, tag = "3")]
    pub error: Option<pb::BatchError>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OutcomeOnly {
    #[prost(int32, tag = "2")]
    pub outcome: i32,
}

/// Sends pre-encoded `WriteBatch` bodies as they are; reads acks as
/// [`AckSummary`].
#[derive(Debug, Clone, Copy, Default)]
struct RawBatchCodec;

impl Codec for RawBatchCodec {
    type Encode = Bytes;
    type Decode = AckSummary;
    type Encoder = RawBatchCodec;
    type Decoder = RawBatchCodec;

    fn encoder(&mut self) -> Self::Encoder {
        *self
    }

    fn decoder(&mut self) -> Self::Decoder {
        *self
    }
}

impl Encoder for RawBatchCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawBatchCodec {
    type Item = AckSummary;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<AckSummary>, tonic::Status> {
        prost::Message::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("undecodable ack: {e}")))
    }
}

async fn one_stream(
    channel: tonic::transport::Channel,
    key: &str,
    template: &BatchTemplate,
    window: usize,
    budget: &AtomicU64,
    deadline: Instant,
    run: &mut Run,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel::<Bytes>(window.max(1));
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    grpc.ready().await.context("channel ready")?;
    let path = PathAndQuery::from_static("/memtrace.v1.MemoryService/StreamMemories");
    let mut acks = grpc
        .streaming(with_key(key, ReceiverStream::new(rx))?, path, RawBatchCodec)
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
            let batch = template.batch(seq);
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
    ensure_loopback(base)?;
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

/// CPU time (user + system) process `pid` has used so far (Linux `/proc`,
/// in USER_HZ ticks of 10 ms).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the command name (field 2) may hold spaces: count from its `)`
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields 14 and 15 of the line are the 12th and 13th after `)`
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Resident set size of process `pid` in KiB (Linux `/proc`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use prost::Message as _;

    #[test]
    fn loads_only_aim_at_loopback() {
        for ok in [
            "http://127.0.0.1:9100",
            "http://[::1]:80/x",
            "http://localhost:1",
        ] {
            assert!(ensure_loopback(ok).is_ok(), "{ok}");
        }
        for bad in ["http://10.0.0.1:9100", "http://example.com", "not a url"] {
            assert!(ensure_loopback(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn template_batches_decode_as_unique_write_batches() {
        let t = BatchTemplate::new("grpc", 3, 20).unwrap();
        let a = pb::WriteBatch::decode(t.batch(7)).unwrap();
        let b = pb::WriteBatch::decode(t.batch(300)).unwrap();
        assert_eq!((a.sequence, b.sequence), (7, 300));
        assert_eq!(a.memories.len(), 20);
        let contents: std::collections::HashSet<String> = a
            .memories
            .iter()
            .chain(&b.memories)
            .map(|m| m.content.clone())
            .collect();
        assert_eq!(contents.len(), 40, "every event unique");
        assert!(a.memories[0].content.starts_with("grpc observation 000003"));
        assert_eq!(a.memories[5].agent_id, "agent_bench");
        let other = BatchTemplate::new("grpc", 4, 20).unwrap();
        let c = pb::WriteBatch::decode(other.batch(7)).unwrap();
        assert_ne!(c.memories[0].content, a.memories[0].content, "per task");
    }

    #[test]
    fn ack_summary_reads_outcomes_of_a_full_ack() {
        let ack = pb::WriteAck {
            sequence: 9,
            results: vec![
                pb::ItemResult {
                    index: 0,
                    outcome: pb::item_result::Outcome::Created as i32,
                    id: "mem_1".into(),
                    error: String::new(),
                },
                pb::ItemResult {
                    index: 1,
                    outcome: pb::item_result::Outcome::Duplicate as i32,
                    ..pb::ItemResult::default()
                },
            ],
            error: None,
        };
        let s = AckSummary::decode(ack.encode_to_vec().as_slice()).unwrap();
        assert_eq!(s.sequence, 9);
        let outcomes: Vec<i32> = s.results.iter().map(|r| r.outcome).collect();
        assert_eq!(outcomes, [1, 2]);
        assert!(s.error.is_none());
    }
}
