//! The read benchmark's data: registered agents and their sessions (made
//! through the worker's REST API, so their ids are the worker's), and N
//! memories spread over them, generated deterministically from their index
//! and streamed through `StreamMemories` in batches built on demand.
//!
//! Each memory: agent `i mod A`, one of that agent's sessions, a memory
//! type (60 % episodic, 20 % decision, 10 % entity, 10 % session), one of 5
//! event types, 0–3 of 50 tags (`t00`…`t49`), an importance, and ~100
//! bytes of content naming one of 1,000 topics (`topic-0000`…), so a topic
//! word matches ~N/1000 memories.

use anyhow::{Context, bail};
use memtrace_proto::v1 as pb;
use memtrace_tests::load::BatchSource;
use prost::bytes::Bytes;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub const TOPICS: u64 = 1_000;
pub const TAGS: u64 = 50;
const EVENT_TYPES: [&str; 5] = ["general", "tool_call", "observation", "error", "decision"];
const VERBS: [&str; 6] = [
    "read",
    "checked",
    "summarised",
    "compared",
    "retried",
    "closed",
];
const OBJECTS: [&str; 6] = [
    "ticket",
    "deploy log",
    "runbook",
    "pull request",
    "dashboard",
    "customer thread",
];

/// splitmix64: a fixed, fast mix of an index into pseudo-random bits.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

pub fn topic(t: u64) -> String {
    format!("topic-{:04}", t % TOPICS)
}

pub fn tag(t: u64) -> String {
    format!("t{:02}", t % TAGS)
}

/// The agents and sessions the memories belong to.
pub struct Dataset {
    pub memories: u64,
    pub agents: Vec<String>,
    /// `sessions[a]`: the sessions of `agents[a]`.
    pub sessions: Vec<Vec<String>>,
}

impl Dataset {
    /// Memory number `i`.
    pub fn memory(&self, i: u64) -> pb::MemoryInput {
        let a = (i % self.agents.len() as u64) as usize;
        let sessions = &self.sessions[a];
        let s = ((i / self.agents.len() as u64) % sessions.len() as u64) as usize;
        let h = mix(i);
        let memory_type = match h % 10 {
            0..=5 => "episodic",
            6 | 7 => "decision",
            8 => "entity",
            _ => "session",
        };
        let tags: BTreeSet<String> = (0..(h >> 8) % 4)
            .map(|k| tag((h >> (16 + 6 * k)) % TAGS))
            .collect();
        let content = format!(
            "step {i}: the agent {} the {} about {} and noted the outcome",
            VERBS[((h >> 40) % 6) as usize],
            OBJECTS[((h >> 44) % 6) as usize],
            topic(h >> 20),
        );
        pb::MemoryInput {
            agent_id: self.agents[a].clone(),
            session_id: sessions[s].clone(),
            memory_type: memory_type.into(),
            event_type: EVENT_TYPES[((h >> 4) % 5) as usize].into(),
            content,
            metadata_json: if h.is_multiple_of(4) {
                r#"{"source":"bench"}"#.into()
            } else {
                String::new()
            },
            tags: tags.into_iter().collect(),
            importance: ((h >> 52) % 11) as f64 / 10.0,
            ..pb::MemoryInput::default()
        }
    }
}

/// Hands out the dataset's batches to the streams, each once.
pub struct DatasetSource {
    pub data: Arc<Dataset>,
    pub next: Arc<AtomicU64>,
    pub rows: u64,
    pub deadline: Instant,
}

impl BatchSource for DatasetSource {
    fn next(&mut self, seq: u64) -> Option<Bytes> {
        if Instant::now() >= self.deadline {
            return None;
        }
        let batch = self.next.fetch_add(1, Ordering::Relaxed);
        let first = batch.checked_mul(self.rows)?;
        if first >= self.data.memories {
            return None;
        }
        let last = (first + self.rows).min(self.data.memories);
        let memories = (first..last).map(|i| self.data.memory(i)).collect();
        let encoded = prost::Message::encode_to_vec(&pb::WriteBatch {
            sequence: seq,
            memories,
        });
        Some(Bytes::from(encoded))
    }
}

/// Registers `agents` agents with `per_agent` sessions each through the
/// worker's REST API, 8 requests at a time, within `within`.
pub async fn register(
    base: &str,
    key: &str,
    agents: usize,
    per_agent: usize,
    within: Duration,
) -> anyhow::Result<(Vec<String>, Vec<Vec<String>>)> {
    let poster = Poster {
        http: reqwest::Client::new(),
        base: base.to_owned(),
        key: key.to_owned(),
        deadline: Instant::now() + within,
    };
    let names: Vec<Value> = (0..agents)
        .map(|a| json!({"name": format!("bench-agent-{a:05}")}))
        .collect();
    let ids = poster.all("/api/v1/agents", names).await?;
    let bodies: Vec<Value> = ids
        .iter()
        .flat_map(|agent| (0..per_agent).map(move |_| json!({"agent_id": agent})))
        .collect();
    let sessions = poster.all("/api/v1/sessions", bodies).await?;
    let sessions = sessions.chunks(per_agent).map(<[String]>::to_vec).collect();
    Ok((ids, sessions))
}

#[derive(Clone)]
struct Poster {
    http: reqwest::Client,
    base: String,
    key: String,
    deadline: Instant,
}

impl Poster {
    /// POSTs each body to `path` (8 at a time); the created ids, in order.
    async fn all(&self, path: &'static str, bodies: Vec<Value>) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::with_capacity(bodies.len());
        for chunk in bodies.chunks(8) {
            let mut tasks = tokio::task::JoinSet::new();
            for (i, body) in chunk.iter().cloned().enumerate() {
                let p = self.clone();
                tasks.spawn(async move { (i, p.one(path, body).await) });
            }
            let mut made = vec![String::new(); chunk.len()];
            while let Some(done) = tasks.join_next().await {
                let (i, id) = done.context("registration task panicked")?;
                made[i] = id?;
            }
            ids.extend(made);
        }
        Ok(ids)
    }

    async fn one(&self, path: &str, body: Value) -> anyhow::Result<String> {
        if Instant::now() > self.deadline {
            bail!("registration did not finish in time");
        }
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header("x-api-key", &self.key)
            .json(&body)
            .send()
            .await?;
        let (status, reply) = memtrace_tests::bench::json_reply(resp).await?;
        if status != 201 {
            bail!("POST {path}: {status} {reply}");
        }
        Ok(reply["id"]
            .as_str()
            .context("no id in the reply")?
            .to_owned())
    }
}
