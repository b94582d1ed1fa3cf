//! The clients of a fault run: REST clients posting batches
//! (`{"memories": [...]}`) and gRPC clients keeping a window of batches
//! unacknowledged on a `StreamMemories` stream, every memory with a
//! client-chosen id. Each attempt is recorded in the shared [`History`].
//! A batch not acknowledged (refused with a retryable error, or no answer
//! at all) is sent again, with the same ids, to the next worker that is up;
//! a refusal that is not retryable ends the batch. Every loop is bounded:
//! new batches stop at the spec's count or duration (or [`Load::stop`]),
//! retries at `max_attempts` per batch and the spec's `drain` time.

use super::history::{AttemptId, BatchId, History, ItemAnswer, Outcome, Transport};
use crate::load::ensure_loopback;
use memtrace_proto::v1 as pb;
use pb::item_result::Outcome as PbOutcome;
use pb::memory_service_client::MemoryServiceClient;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

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

struct Client {
    spec: Arc<LoadSpec>,
    endpoints: Endpoints,
    key: String,
    history: Arc<Mutex<History>>,
    stop: Arc<AtomicBool>,
    id: usize,
    deadline: Instant,
    produced: AtomicU64,
    /// When the next new batch may start.
    next_at: Mutex<Instant>,
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
async fn backoff(attempt: u32, retry_after: Option<Duration>) {
    let wait =
        retry_after.unwrap_or_else(|| Duration::from_millis(25 * u64::from(attempt.min(20))));
    tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
}

impl Client {
    fn record<R>(&self, f: impl FnOnce(&mut History) -> R) -> R {
        let mut h = self.history.lock().expect("history lock");
        f(&mut h)
    }

    /// A new batch; `NotYet` while the pace holds it back; `Over` once new
    /// batches are over.
    fn next_batch(&self) -> Next {
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

    fn drain_deadline(&self) -> Instant {
        self.deadline.max(Instant::now()) + self.spec.drain
    }

    fn inputs(&self, batch: BatchId) -> Vec<pb::MemoryInput> {
        let agent = self.spec.agent(self.id);
        self.record(|h| {
            h.ids(batch)
                .iter()
                .map(|id| pb::MemoryInput {
                    id: id.clone(),
                    agent_id: agent.clone(),
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
            let body = json!({"memories": self.inputs(batch).iter().map(|m| json!({
                "id": m.id, "agent_id": m.agent_id, "content": m.content,
            })).collect::<Vec<_>>()});
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

    async fn grpc(self) {
        let mut retries: VecDeque<BatchId> = VecDeque::new();
        let mut tries: HashMap<BatchId, u32> = HashMap::new();
        let mut worker = self.id;
        let mut producing = true;
        let give_up = self.drain_deadline();
        let mut round = 0u32;
        loop {
            producing = producing && !self.stop.load(Ordering::SeqCst);
            if (!producing && retries.is_empty()) || Instant::now() >= give_up {
                break;
            }
            round += 1;
            let Some((w, url)) = self.endpoints.up_from(worker) else {
                backoff(round, None).await;
                continue;
            };
            let end = self
                .stream(w, &url, &mut retries, &mut tries, &mut producing)
                .await;
            if let StreamEnd::Switch(retry_after) = end {
                worker = w + 1;
                backoff(round.min(4), retry_after).await;
            }
        }
    }

    /// One `StreamMemories` call on worker `w`: sends retries first, then
    /// new batches, keeping `window` unacknowledged.
    async fn stream(
        &self,
        w: usize,
        url: &str,
        retries: &mut VecDeque<BatchId>,
        tries: &mut HashMap<BatchId, u32>,
        producing: &mut bool,
    ) -> StreamEnd {
        let connect = tonic::transport::Endpoint::from_shared(url.to_owned())
            .map(|e| e.connect_timeout(Duration::from_secs(2)).tcp_nodelay(true));
        let channel = match connect {
            Ok(e) => match e.connect().await {
                Ok(c) => c,
                Err(_) => return StreamEnd::Switch(None),
            },
            Err(_) => return StreamEnd::Switch(None),
        };
        let mut grpc = MemoryServiceClient::new(channel);
        let (tx, rx) = mpsc::channel::<pb::WriteBatch>(self.spec.window.max(1));
        let request = crate::grpc::with_key(Some(&self.key), ReceiverStream::new(rx));
        // the call is answered once the worker admitted it, so it is opened
        // concurrently with the first batches
        let opening = tokio::spawn(async move { grpc.stream_memories(request).await });
        let mut in_flight: HashMap<u64, (BatchId, AttemptId)> = HashMap::new();
        let mut seq = 0u64;
        let mut switching: Option<Option<Duration>> = None;
        let fill = |in_flight: &mut HashMap<u64, (BatchId, AttemptId)>,
                    seq: &mut u64,
                    retries: &mut VecDeque<BatchId>,
                    producing: &mut bool,
                    tries: &mut HashMap<BatchId, u32>,
                    wake: &mut Option<Instant>|
         -> Vec<pb::WriteBatch> {
            let mut out = Vec::new();
            *wake = None;
            while in_flight.len() < self.spec.window.max(1) {
                let batch = match retries.pop_front() {
                    Some(b) => b,
                    None if *producing => match self.next_batch() {
                        Next::Batch(b) => b,
                        Next::NotYet(at) => {
                            *wake = Some(at);
                            break;
                        }
                        Next::Over => {
                            *producing = false;
                            break;
                        }
                    },
                    None => break,
                };
                *tries.entry(batch).or_default() += 1;
                let at = self.record(|h| h.invoke(batch, w, Transport::Grpc));
                in_flight.insert(*seq, (batch, at));
                out.push(pb::WriteBatch {
                    sequence: *seq,
                    memories: self.inputs(batch),
                });
                *seq += 1;
            }
            out
        };
        let mut wake = None;
        loop {
            for b in fill(
                &mut in_flight,
                &mut seq,
                retries,
                producing,
                tries,
                &mut wake,
            ) {
                let _ = tx.send(b).await;
            }
            match wake {
                Some(at) if in_flight.is_empty() => tokio::time::sleep_until(at.into()).await,
                _ => break,
            }
        }
        if in_flight.is_empty() {
            return StreamEnd::Done;
        }
        let mut acks = match tokio::time::timeout(self.spec.answer_timeout, opening).await {
            Ok(Ok(Ok(resp))) => resp.into_inner(),
            Ok(Ok(Err(status))) => {
                let retryable = retryable_code(status.code());
                self.fail_all(&mut in_flight, retries, tries, || Outcome::Refused {
                    code: format!("grpc {:?}", status.code()),
                    retryable,
                });
                return StreamEnd::Switch(None);
            }
            Ok(Err(_)) | Err(_) => {
                self.fail_all(&mut in_flight, retries, tries, || {
                    Outcome::Indeterminate("stream not opened".into())
                });
                return StreamEnd::Switch(None);
            }
        };
        loop {
            if switching.is_none() {
                for b in fill(
                    &mut in_flight,
                    &mut seq,
                    retries,
                    producing,
                    tries,
                    &mut wake,
                ) {
                    if tx.send(b).await.is_err() {
                        break;
                    }
                }
            } else {
                wake = None;
            }
            if in_flight.is_empty() {
                match (switching, wake) {
                    (Some(after), _) => return StreamEnd::Switch(after),
                    (None, Some(at)) => {
                        tokio::time::sleep_until(at.into()).await;
                        continue;
                    }
                    (None, None) => return StreamEnd::Done,
                }
            }
            let paced = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let next = tokio::select! {
                next = tokio::time::timeout(self.spec.answer_timeout, acks.message()) => next,
                // a new batch may go out now (the window has room)
                () = paced => continue,
            };
            let ack = match next {
                Ok(Ok(Some(ack))) => ack,
                Ok(Ok(None)) => {
                    self.fail_all(&mut in_flight, retries, tries, || {
                        Outcome::Indeterminate("stream ended".into())
                    });
                    return StreamEnd::Switch(None);
                }
                Ok(Err(status)) => {
                    let code = status.code();
                    self.fail_all(&mut in_flight, retries, tries, || {
                        Outcome::Indeterminate(format!("stream broken ({code:?})"))
                    });
                    return StreamEnd::Switch(None);
                }
                Err(_) => {
                    self.fail_all(&mut in_flight, retries, tries, || {
                        Outcome::Indeterminate("no ack in time".into())
                    });
                    return StreamEnd::Switch(None);
                }
            };
            let Some((batch, at)) = in_flight.remove(&ack.sequence) else {
                panic!("ack for a sequence never sent: {}", ack.sequence);
            };
            match ack.error {
                None => {
                    let items = ack
                        .results
                        .iter()
                        .map(|r| match PbOutcome::try_from(r.outcome) {
                            Ok(PbOutcome::Created) => ItemAnswer::Created,
                            Ok(PbOutcome::Duplicate) => ItemAnswer::Duplicate,
                            Ok(PbOutcome::Invalid) => ItemAnswer::Invalid(r.error.clone()),
                            _ => ItemAnswer::Failed,
                        })
                        .collect();
                    self.record(|h| h.complete(at, Outcome::Answered(items)));
                }
                Some(e) => {
                    let code = tonic::Code::from(e.code);
                    let retryable = retryable_code(code);
                    let hint = if e.retry_after_ms > 0 {
                        " retry-after"
                    } else {
                        ""
                    };
                    self.record(|h| {
                        h.complete(
                            at,
                            Outcome::Refused {
                                code: format!("grpc {code:?}{hint}"),
                                retryable,
                            },
                        );
                    });
                    if retryable && tries.get(&batch).copied().unwrap_or(0) < self.spec.max_attempts
                    {
                        retries.push_back(batch);
                    }
                    // finish this stream's acks, then go to another worker
                    let after =
                        (e.retry_after_ms > 0).then(|| Duration::from_millis(e.retry_after_ms));
                    switching = Some(switching.flatten().or(after));
                }
            }
        }
    }

    /// Completes every unacknowledged attempt of a stream that ended and
    /// queues its batches for a retry (in their order).
    fn fail_all(
        &self,
        in_flight: &mut HashMap<u64, (BatchId, AttemptId)>,
        retries: &mut VecDeque<BatchId>,
        tries: &HashMap<BatchId, u32>,
        outcome: impl Fn() -> Outcome,
    ) {
        let mut open: Vec<(u64, (BatchId, AttemptId))> = in_flight.drain().collect();
        open.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
        for (_, (batch, at)) in open {
            let o = outcome();
            let retry = match &o {
                Outcome::Refused { retryable, .. } => *retryable,
                _ => true,
            };
            self.record(|h| h.complete(at, o));
            if retry && tries.get(&batch).copied().unwrap_or(0) < self.spec.max_attempts {
                retries.push_front(batch);
            }
        }
    }
}

/// What a client's next new batch is.
enum Next {
    Batch(BatchId),
    /// Not before this instant (the pace).
    NotYet(Instant),
    Over,
}

enum StreamEnd {
    /// Nothing left to send.
    Done,
    /// Go on with another worker (after this wait, if the server said).
    Switch(Option<Duration>),
}

/// gRPC codes a client retries (elsewhere).
fn retryable_code(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::ResourceExhausted
            | tonic::Code::Internal
            | tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Aborted
            | tonic::Code::Cancelled
    )
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
