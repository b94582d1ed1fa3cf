//! gRPC streaming ingest into a worker (`StreamMemories`): each stream
//! keeps a window of unacknowledged pre-encoded `WriteBatch` bodies and
//! reads acks for their outcomes only.

use super::{Bounds, Run, claim, collect, ensure_loopback, micros, with_key};
use anyhow::Context;
use memtrace_proto::v1 as pb;
use prost::bytes::{BufMut, Bytes, BytesMut};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;

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
    let budget = Arc::new(AtomicU64::new(bounds.max_requests));
    let deadline = Instant::now() + bounds.duration;
    let mut sources: Vec<Box<dyn BatchSource>> = Vec::new();
    for task in 0..streams {
        sources.push(Box::new(Templated {
            template: BatchTemplate::new(phase, task, rows)?,
            budget: budget.clone(),
            deadline,
        }));
    }
    grpc_stream_from(endpoint, key, sources, window).await
}

/// Where one stream's batches come from: the encoded `WriteBatch` with
/// sequence `seq` (the stream's own count, from 0), or `None` when the
/// stream is done. A source bounds its stream (count and time).
pub trait BatchSource: Send + 'static {
    fn next(&mut self, seq: u64) -> Option<Bytes>;
}

/// A template's batches until the shared budget or the deadline is spent.
struct Templated {
    template: BatchTemplate,
    budget: Arc<AtomicU64>,
    deadline: Instant,
}

impl BatchSource for Templated {
    fn next(&mut self, seq: u64) -> Option<Bytes> {
        claim(&self.budget, self.deadline).then(|| self.template.batch(seq))
    }
}

/// One `StreamMemories` call per source, each keeping up to `window`
/// batches unacknowledged; events count when acknowledged as created.
pub async fn grpc_stream_from(
    endpoint: &str,
    key: &str,
    sources: Vec<Box<dyn BatchSource>>,
    window: usize,
) -> anyhow::Result<Run> {
    ensure_loopback(endpoint)?;
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connect to {endpoint}"))?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (task, mut source) in sources.into_iter().enumerate() {
        let (key, channel) = (key.to_owned(), channel.clone());
        tasks.push(tokio::spawn(async move {
            // what a failed stream had acknowledged still counts
            let mut run = Run::default();
            let stream = one_stream(channel, &key, source.as_mut(), window, &mut run);
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
    source: &mut dyn BatchSource,
    window: usize,
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
            let Some(batch) = source.next(seq) else {
                open = false;
                break;
            };
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use prost::Message as _;

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
