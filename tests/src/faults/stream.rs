//! The gRPC client of a fault run: one `StreamMemories` call at a time on
//! the current worker, retries first, then new batches, keeping `window`
//! batches unacknowledged; a batch error or a broken stream sends what was
//! not acknowledged to the next worker that is up, with the same ids.

use super::driver::{Client, Next, backoff};
use super::history::{AttemptId, BatchId, ItemAnswer, Outcome, Transport};
use memtrace_proto::v1 as pb;
use pb::item_result::Outcome as PbOutcome;
use pb::memory_service_client::MemoryServiceClient;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

impl Client {
    pub(super) async fn grpc(self) {
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
