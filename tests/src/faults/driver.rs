//! The clients of a fault run: REST clients posting batches
//! (`{"memories": [...]}`, here) and gRPC clients keeping a window of
//! batches unacknowledged on a `StreamMemories` stream (`stream.rs`),
//! every memory with a client-chosen id. Each attempt is recorded in the shared [`History`].
//! A batch not acknowledged (refused with a retryable error, or no answer
//! at all) is sent again, with the same ids, to the next worker that is up;
//! a refusal that is not retryable ends the batch. Every loop is bounded:
//! new batches stop at the spec's count or duration (or [`Load::stop`]),
//! retries at `max_attempts` per batch and the spec's `drain` time.

use super::history::{BatchId, History, ItemAnswer, Outcome, Transport};
use crate::load::ensure_loopback;
use memtrace_proto::v1 as pb;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// The workers' URLs by index; `None` while a worker is down (clients skip
/// it, as a load balancer would after its health check).
#[derive(Clone, Default)]
pub struct Endpoints(Arc<RwLock<Vec<Option<String>>>>);

impl Endpoints {
    pub fn new(urls: Vec<String>) -> anyhow::Result<Self> {
        for u in &urls {
            ensure_loopback(u)?;
        }
        Ok(Self(Arc::new(RwLock::new(
            urls.into_iter().map(Some).collect(),
        ))))
    }

    pub fn len(&self) -> usize {
        self.0.read().map(|v| v.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Marks worker `i` down (`None`) or up at `url`.
    pub fn set(&self, i: usize, url: Option<String>) {
        if let Some(u) = &url {
            ensure_loopback(u).expect("fault runs stay on loopback");
        }
        if let Ok(mut v) = self.0.write() {
            v[i] = url;
        }
    }

    /// The first worker that is up, from `from` on (wrapping).
    pub fn up_from(&self, from: usize) -> Option<(usize, String)> {
        let v = self.0.read().ok()?;
        (0..v.len())
            .map(|k| (from + k) % v.len())
            .find_map(|i| v[i].clone().map(|u| (i, u)))
    }
}

/// What the clients do.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Prefix of every id and agent (a letter first; letters, digits, `_`).
    pub run: String,
    pub rest_clients: usize,
    pub grpc_clients: usize,
    /// Memories per batch.
    pub batch_size: usize,
    /// Unacknowledged batches per gRPC stream.
    pub window: usize,
    /// New batches stop after this long…
    pub duration: Duration,
    /// …or after this many per client.
    pub max_batches: u64,
    /// Attempts per batch before a client gives up on it.
    pub max_attempts: u32,
    /// Longest wait for one answer (then the attempt is indeterminate).
    pub answer_timeout: Duration,
    /// After new batches stop, how long retries may go on.
    pub drain: Duration,
    /// Least time between two new batches of one client (bounds the rate,
    /// so a short run stays small enough to read back quickly).
    pub pace: Duration,
    /// The session of each client's memories (by client; none when
    /// shorter than the clients).
    pub sessions: Vec<String>,
}

impl LoadSpec {
    /// Two REST and two gRPC clients, batches of 10 at most every 20 ms
    /// per client (≤ 2,000 memories/s in all; in the long variant every
    /// 50 ms, ≤ 800/s, so minutes of load stay quick to read back), a
    /// window of 4.
    pub fn new(run: &str, duration: Duration) -> Self {
        Self {
            run: run.to_owned(),
            rest_clients: 2,
            grpc_clients: 2,
            batch_size: 10,
            window: 4,
            duration,
            max_batches: 100_000,
            max_attempts: 30,
            answer_timeout: Duration::from_secs(15),
            drain: Duration::from_secs(60),
            pace: Duration::from_millis(if super::full() { 50 } else { 20 }),
            sessions: Vec::new(),
        }
    }

    /// The agent of client `c` (every client writes as its own agent).
    pub fn agent(&self, client: usize) -> String {
        format!("{}_agent{client}", self.run)
    }

    /// Every client's agent.
    pub fn agents(&self) -> Vec<String> {
        (0..self.rest_clients + self.grpc_clients)
            .map(|c| self.agent(c))
            .collect()
    }

    fn ids(&self, client: usize, batch: u64) -> Vec<String> {
        (0..self.batch_size)
            .map(|i| format!("{}_c{client}_b{batch}_i{i}", self.run))
            .collect()
    }
}

/// The content of memory `id`: unique (so its dedup key is too) and
/// recognisable.
pub fn content_of(id: &str) -> String {
    format!("{id}: fault-run memory; the agent noted the deploy and moved on")
}

/// A running load.
pub struct Load {
    pub history: Arc<Mutex<History>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    started: Instant,
}

pub(super) struct Client {
    pub(super) spec: Arc<LoadSpec>,
    pub(super) endpoints: Endpoints,
    pub(super) key: String,
    pub(super) history: Arc<Mutex<History>>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) id: usize,
    pub(super) deadline: Instant,
    pub(super) produced: AtomicU64,
    /// When the next new batch may start.
    pub(super) next_at: Mutex<Instant>,
}

impl Load {
    /// Starts the clients against `endpoints` with API key `key`.
    pub fn start(spec: LoadSpec, endpoints: Endpoints, key: &str) -> Self {
        let history = Arc::new(Mutex::new(History::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let spec = Arc::new(spec);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for id in 0..spec.rest_clients + spec.grpc_clients {
            let client = Client {
                spec: spec.clone(),
                endpoints: endpoints.clone(),
                key: key.to_owned(),
                history: history.clone(),
                stop: stop.clone(),
                id,
                deadline: started + spec.duration,
                produced: AtomicU64::new(0),
                next_at: Mutex::new(started),
            };
            tasks.push(if id < spec.rest_clients {
                tokio::spawn(client.rest())
            } else {
                tokio::spawn(client.grpc())
            });
        }
        Self {
            history,
            stop,
            tasks,
            started,
        }
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// Items acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.history.lock().map(|h| h.acked_items()).unwrap_or(0)
    }

    /// Waits (up to `within`) until at least `n` more items are
    /// acknowledged than now.
    pub async fn wait_acked(&self, n: u64, within: Duration) -> anyhow::Result<()> {
        let target = self.acked() + n;
        let deadline = Instant::now() + within;
        while self.acked() < target {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} items acknowledged, wanted {target} within {within:?}",
                self.acked()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Stops new batches (retries of unacknowledged ones go on).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Stops new batches and waits for every client to finish.
    pub async fn finish(self) -> anyhow::Result<Arc<Mutex<History>>> {
        self.stop();
        for t in self.tasks {
            t.await?;
        }
        Ok(self.history)
    }
}

/// Waits before the next attempt: the server's `Retry-After` (capped at
/// 1 s), else a short backoff growing with the attempt.
pub(super) async fn backoff(attempt: u32, retry_after: Option<Duration>) {
    let wait =
        retry_after.unwrap_or_else(|| Duration::from_millis(25 * u64::from(attempt.min(20))));
    tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
}

impl Client {
    pub(super) fn record<R>(&self, f: impl FnOnce(&mut History) -> R) -> R {
        let mut h = self.history.lock().expect("history lock");
        f(&mut h)
    }

    /// A new batch; `NotYet` while the pace holds it back; `Over` once new
    /// batches are over.
    pub(super) fn next_batch(&self) -> Next {
        let n = self.produced.load(Ordering::SeqCst);
        let now = Instant::now();
        if self.stop.load(Ordering::SeqCst) || now >= self.deadline || n >= self.spec.max_batches {
            return Next::Over;
        }
        {
            let mut next = self.next_at.lock().expect("pace lock");
            if *next > now {
                return Next::NotYet(*next);
            }
            *next = now + self.spec.pace;
        }
        self.produced.store(n + 1, Ordering::SeqCst);
        let ids = self.spec.ids(self.id, n);
        Next::Batch(self.record(|h| h.batch(ids)))
    }

    pub(super) fn drain_deadline(&self) -> Instant {
        self.deadline.max(Instant::now()) + self.spec.drain
    }

    pub(super) fn inputs(&self, batch: BatchId) -> Vec<pb::MemoryInput> {
        let agent = self.spec.agent(self.id);
        let session = self.spec.sessions.get(self.id).cloned().unwrap_or_default();
        self.record(|h| {
            h.ids(batch)
                .iter()
                .map(|id| pb::MemoryInput {
                    id: id.clone(),
                    agent_id: agent.clone(),
                    session_id: session.clone(),
                    content: content_of(id),
                    ..pb::MemoryInput::default()
                })
                .collect()
        })
    }

    async fn rest(self) {
        let http = crate::http_client();
        let mut home = self.id;
        loop {
            let batch = match self.next_batch() {
                Next::Batch(b) => b,
                Next::NotYet(at) => {
                    tokio::time::sleep_until(at.into()).await;
                    continue;
                }
                Next::Over => break,
            };
            let body = json!({"memories": self.inputs(batch).iter().map(|m| {
                let mut item = json!({"id": m.id, "agent_id": m.agent_id, "content": m.content});
                if !m.session_id.is_empty() {
                    item["session_id"] = json!(m.session_id);
                }
                item
            }).collect::<Vec<_>>()});
            let give_up = self.drain_deadline();
            let mut worker = home;
            for attempt in 1..=self.spec.max_attempts {
                let Some((w, url)) = self.endpoints.up_from(worker) else {
                    backoff(attempt, None).await;
                    continue;
                };
                let at = self.record(|h| h.invoke(batch, w, Transport::Rest));
                let (outcome, retry_after) = self.post(&http, &url, &body, batch).await;
                let done = match &outcome {
                    Outcome::Answered(_) => true,
                    Outcome::Refused { retryable, .. } => !retryable,
                    Outcome::Indeterminate(_) => false,
                };
                self.record(|h| h.complete(at, outcome));
                if done || Instant::now() >= give_up {
                    break;
                }
                // retry on another worker, the same ids
                worker = w + 1;
                home = worker;
                backoff(attempt, retry_after).await;
            }
        }
    }

    async fn post(
        &self,
        http: &reqwest::Client,
        url: &str,
        body: &Value,
        batch: BatchId,
    ) -> (Outcome, Option<Duration>) {
        let sent = http
            .post(format!("{url}/api/v1/memories"))
            .header("x-api-key", &self.key)
            .timeout(self.spec.answer_timeout)
            .json(body)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => return (Outcome::Indeterminate(reqwest_kind(&e)), None),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = match resp.text().await {
            Ok(t) => t,
            Err(e) => return (Outcome::Indeterminate(reqwest_kind(&e)), None),
        };
        if status != 201 {
            let retryable = status == 429 || status >= 500;
            let hint = if retry_after.is_some() {
                " retry-after"
            } else {
                ""
            };
            let code = format!("rest {status}{hint}");
            return (Outcome::Refused { code, retryable }, retry_after);
        }
        let created: std::collections::HashSet<String> = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| {
                v["memories"].as_array().map(|ms| {
                    ms.iter()
                        .filter_map(|m| m["id"].as_str().map(str::to_owned))
                        .collect()
                })
            })
            .unwrap_or_default();
        let items = self.record(|h| {
            h.ids(batch)
                .iter()
                .map(|id| {
                    if created.contains(id) {
                        ItemAnswer::Created
                    } else {
                        // a batch create skips duplicates without a word
                        ItemAnswer::Duplicate
                    }
                })
                .collect()
        });
        (Outcome::Answered(items), None)
    }
}

/// What a client's next new batch is.
pub(super) enum Next {
    Batch(BatchId),
    /// Not before this instant (the pace).
    NotYet(Instant),
    Over,
}

/// A short name of a client-side failure (no URL, no key).
fn reqwest_kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else if e.is_body() || e.is_decode() {
        "body".into()
    } else {
        "request".into()
    }
}
