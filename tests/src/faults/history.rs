//! The recorded history of a fault run and its check.
//!
//! A *batch* is a fixed list of client-chosen memory ids; every try to
//! write it (on any worker, over any transport) is an *attempt*, recorded
//! when invoked and completed with what the client saw. [`History::check`]
//! compares the history with what was read back ([`Observed`]) and
//! accounts for every id ([`Report`]).
//!
//! What counts as acknowledged: an item answered CREATED (201 and listed,
//! or a streamed CREATED), or answered DUPLICATE (the worker says a memory
//! with its dedup key is already stored; the ids here carry unique content,
//! so only an earlier attempt of the same id can be that memory). Either
//! is the worker's word that the memory is stored, so either must be found.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

/// How an attempt was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    /// `POST /api/v1/memories` with `{"memories": [...]}`.
    Rest,
    /// One `WriteBatch` of a `StreamMemories` stream.
    Grpc,
}

/// What one item of an answered attempt got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemAnswer {
    Created,
    Duplicate,
    Invalid(String),
    /// Not stored: the batch failed (a streamed FAILED).
    Failed,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The worker answered per item, in the batch's order.
    Answered(Vec<ItemAnswer>),
    /// The worker refused the whole attempt (a status or a batch error);
    /// `code` names it (`rest 503`, `grpc UNAVAILABLE`, …).
    Refused { code: String, retryable: bool },
    /// No answer (connection refused or broken, timeout): the client cannot
    /// know whether it was stored.
    Indeterminate(String),
}

#[derive(Debug, Clone)]
struct Attempt {
    worker: usize,
    transport: Transport,
    invoked: Instant,
    completed: Option<(Instant, Outcome)>,
}

#[derive(Debug, Clone)]
struct Batch {
    ids: Vec<String>,
    attempts: Vec<Attempt>,
}

/// Handle of a recorded batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BatchId(usize);

/// Handle of a recorded attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttemptId {
    batch: usize,
    attempt: usize,
}

/// Every batch and attempt of a run.
#[derive(Debug, Default)]
pub struct History {
    batches: Vec<Batch>,
    /// Items acknowledged so far (live progress for the scenarios).
    acked_items: u64,
    /// Acknowledgement times, for throughput around a fault.
    ack_times: Vec<(Instant, u32)>,
}

/// What was read back after the run.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    /// Each read through the API (a name, and the ids it returned in
    /// order; pages of one listing count as one read).
    pub api_reads: Vec<(String, Vec<String>)>,
    /// One entry per row stored in Arc (the stand-in) for the org.
    pub stored_rows: Vec<String>,
}

/// The accounting of a run.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    /// Distinct ids sent at least once.
    pub sent: usize,
    pub batches: usize,
    pub attempts: usize,
    /// Batches sent more than once.
    pub retried_batches: usize,
    /// Ids answered CREATED or DUPLICATE at least once.
    pub acknowledged: usize,
    /// Of those, ids never answered CREATED (only DUPLICATE).
    pub acknowledged_as_duplicate: usize,
    /// Acknowledged, visible through the API and stored in Arc.
    pub acknowledged_found: usize,
    /// Acknowledged but missing from the API reads or from Arc.
    pub acknowledged_lost: Vec<String>,
    /// Of the lost: missing from Arc itself.
    pub lost_in_store: usize,
    /// An id shown twice by one read: (read, id).
    pub visible_duplicates: Vec<(String, String)>,
    /// Never acknowledged, but stored (allowed: an answer was lost).
    pub unacknowledged_stored: usize,
    /// Never acknowledged and not stored.
    pub unacknowledged_absent: usize,
    /// Stored rows beyond one per id (retries that landed twice; reads
    /// must collapse them).
    pub extra_stored_copies: usize,
    /// Ids read or stored that no attempt sent.
    pub unknown_ids: Vec<String>,
    /// Batches whose last attempt was not answered per item (the client
    /// gave up or ran out of time).
    pub unfinished_batches: usize,
    /// Attempts by outcome (`created`, `rest 503`, `grpc UNAVAILABLE`,
    /// `indeterminate: …`, …).
    pub outcomes: BTreeMap<String, u64>,
    /// Refusals a client may not retry (4xx other than 429).
    pub permanent_refusals: u64,
}

impl Report {
    /// No acknowledged memory lost, none shown twice, nothing unknown.
    pub fn is_clean(&self) -> bool {
        self.acknowledged_lost.is_empty()
            && self.visible_duplicates.is_empty()
            && self.unknown_ids.is_empty()
    }

    /// Panics with the report unless [`Report::is_clean`].
    pub fn assert_clean(&self, what: &str) {
        assert!(self.is_clean(), "{what}: {self}\n{self:#?}");
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent {} in {} batches ({} attempts, {} batches retried), acknowledged {} \
             ({} only as duplicate), found {}, lost {} ({} not in Arc), visible duplicates {}, \
             unacknowledged stored {} / absent {}, extra stored copies {}, unknown {}, \
             unfinished batches {}, permanent refusals {}; outcomes {:?}",
            self.sent,
            self.batches,
            self.attempts,
            self.retried_batches,
            self.acknowledged,
            self.acknowledged_as_duplicate,
            self.acknowledged_found,
            self.acknowledged_lost.len(),
            self.lost_in_store,
            self.visible_duplicates.len(),
            self.unacknowledged_stored,
            self.unacknowledged_absent,
            self.extra_stored_copies,
            self.unknown_ids.len(),
            self.unfinished_batches,
            self.permanent_refusals,
            self.outcomes,
        )
    }
}

impl Outcome {
    /// The key this outcome is counted under in [`Report::outcomes`].
    fn label(&self) -> String {
        match self {
            Outcome::Answered(items) => {
                if items.iter().all(|i| *i == ItemAnswer::Created) {
                    "created".into()
                } else {
                    "answered (not all created)".into()
                }
            }
            Outcome::Refused { code, .. } => code.clone(),
            Outcome::Indeterminate(why) => format!("indeterminate: {why}"),
        }
    }
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a new batch of ids.
    pub fn batch(&mut self, ids: Vec<String>) -> BatchId {
        self.batches.push(Batch {
            ids,
            attempts: Vec::new(),
        });
        BatchId(self.batches.len() - 1)
    }

    /// The ids of a batch.
    pub fn ids(&self, batch: BatchId) -> &[String] {
        &self.batches[batch.0].ids
    }

    /// Records that `batch` is being sent to `worker` now.
    pub fn invoke(&mut self, batch: BatchId, worker: usize, transport: Transport) -> AttemptId {
        let attempts = &mut self.batches[batch.0].attempts;
        attempts.push(Attempt {
            worker,
            transport,
            invoked: Instant::now(),
            completed: None,
        });
        AttemptId {
            batch: batch.0,
            attempt: attempts.len() - 1,
        }
    }

    /// Records how an attempt ended (once; a second completion is a bug of
    /// the driver and panics).
    pub fn complete(&mut self, attempt: AttemptId, outcome: Outcome) {
        let now = Instant::now();
        let batch = &mut self.batches[attempt.batch];
        if let Outcome::Answered(items) = &outcome {
            assert_eq!(items.len(), batch.ids.len(), "one answer per item");
            let acked = items
                .iter()
                .filter(|i| matches!(i, ItemAnswer::Created | ItemAnswer::Duplicate))
                .count() as u32;
            self.acked_items += u64::from(acked);
            self.ack_times.push((now, acked));
        }
        let a = &mut batch.attempts[attempt.attempt];
        assert!(a.completed.is_none(), "attempt completed twice");
        a.completed = Some((now, outcome));
    }

    /// Every id acknowledged (answered CREATED or DUPLICATE) at least once.
    pub fn acked_ids(&self) -> BTreeSet<String> {
        let mut ids = BTreeSet::new();
        for b in &self.batches {
            for (_, outcome) in b.attempts.iter().filter_map(|a| a.completed.as_ref()) {
                if let Outcome::Answered(items) = outcome {
                    ids.extend(
                        b.ids
                            .iter()
                            .zip(items)
                            .filter(|(_, i)| {
                                matches!(i, ItemAnswer::Created | ItemAnswer::Duplicate)
                            })
                            .map(|(id, _)| id.clone()),
                    );
                }
            }
        }
        ids
    }

    /// Items acknowledged so far (an item acknowledged twice counts twice).
    pub fn acked_items(&self) -> u64 {
        self.acked_items
    }

    /// Items acknowledged in `[from, to)`.
    pub fn acked_between(&self, from: Instant, to: Instant) -> u64 {
        self.ack_times
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, n)| u64::from(*n))
            .sum()
    }

    /// The first acknowledgement at or after `from`: how long after `from`
    /// writes were acknowledged again.
    pub fn first_ack_after(&self, from: Instant) -> Option<Duration> {
        self.ack_times
            .iter()
            .filter(|(t, n)| *t >= from && *n > 0)
            .map(|(t, _)| *t - from)
            .min()
    }

    /// How long after `from` the batches that failed an attempt at or after
    /// `from` were all acknowledged (by a later attempt): the recovery time
    /// of a fault injected at `from`. `None` when no attempt failed then;
    /// a batch never acknowledged counts until now.
    pub fn retry_recovery(&self, from: Instant) -> Option<Duration> {
        let now = Instant::now();
        self.batches
            .iter()
            .filter_map(|b| {
                let failed = b.attempts.iter().position(|a| {
                    a.completed
                        .as_ref()
                        .is_some_and(|(t, o)| *t >= from && !matches!(o, Outcome::Answered(_)))
                })?;
                let answered = b.attempts[failed..]
                    .iter()
                    .find_map(|a| match &a.completed {
                        Some((t, Outcome::Answered(_))) => Some(*t),
                        _ => None,
                    });
                Some(answered.unwrap_or(now).saturating_duration_since(from))
            })
            .max()
    }

    /// Attempts invoked in `[from, to)`: (answered, not answered — refused,
    /// indeterminate or still open).
    pub fn attempts_between(&self, from: Instant, to: Instant) -> (usize, usize) {
        let mut answered = (0, 0);
        for a in self.batches.iter().flat_map(|b| &b.attempts) {
            if a.invoked < from || a.invoked >= to {
                continue;
            }
            match &a.completed {
                Some((_, Outcome::Answered(_))) => answered.0 += 1,
                _ => answered.1 += 1,
            }
        }
        answered
    }

    /// Attempts so far that were sent to `worker`.
    pub fn attempts_on(&self, worker: usize) -> usize {
        self.batches
            .iter()
            .flat_map(|b| &b.attempts)
            .filter(|a| a.worker == worker)
            .count()
    }

    /// Attempts invoked and not completed yet.
    pub fn open_attempts(&self) -> usize {
        self.batches
            .iter()
            .flat_map(|b| &b.attempts)
            .filter(|a| a.completed.is_none())
            .count()
    }

    /// Answered attempts' latencies (invoked → answered) over `transport`
    /// invoked in `[from, to)`.
    pub fn answered_latencies(
        &self,
        transport: Transport,
        from: Instant,
        to: Instant,
    ) -> Vec<Duration> {
        self.batches
            .iter()
            .flat_map(|b| &b.attempts)
            .filter(|a| a.transport == transport && a.invoked >= from && a.invoked < to)
            .filter_map(|a| match &a.completed {
                Some((t, Outcome::Answered(_))) => Some(*t - a.invoked),
                _ => None,
            })
            .collect()
    }

    /// Accounts for every id against what was read back.
    pub fn check(&self, observed: &Observed) -> Report {
        let mut r = Report {
            batches: self.batches.len(),
            ..Report::default()
        };
        let mut sent: BTreeSet<&str> = BTreeSet::new();
        let mut created: BTreeSet<&str> = BTreeSet::new();
        let mut duplicate: BTreeSet<&str> = BTreeSet::new();
        for b in &self.batches {
            if !b.attempts.is_empty() {
                sent.extend(b.ids.iter().map(String::as_str));
            }
            if b.attempts.len() > 1 {
                r.retried_batches += 1;
            }
            r.attempts += b.attempts.len();
            let last_answered = b
                .attempts
                .last()
                .and_then(|a| a.completed.as_ref())
                .is_some_and(|(_, o)| matches!(o, Outcome::Answered(_)));
            if !b.attempts.is_empty() && !last_answered {
                r.unfinished_batches += 1;
            }
            for a in &b.attempts {
                let Some((_, outcome)) = &a.completed else {
                    *r.outcomes.entry("never completed".into()).or_default() += 1;
                    continue;
                };
                *r.outcomes.entry(outcome.label()).or_default() += 1;
                match outcome {
                    Outcome::Answered(items) => {
                        for (id, item) in b.ids.iter().zip(items) {
                            match item {
                                ItemAnswer::Created => {
                                    created.insert(id);
                                }
                                ItemAnswer::Duplicate => {
                                    duplicate.insert(id);
                                }
                                ItemAnswer::Invalid(_) | ItemAnswer::Failed => {}
                            }
                        }
                    }
                    Outcome::Refused {
                        retryable: false, ..
                    } => r.permanent_refusals += 1,
                    Outcome::Refused { .. } | Outcome::Indeterminate(_) => {}
                }
            }
        }
        r.sent = sent.len();
        let acked: BTreeSet<&str> = created.union(&duplicate).copied().collect();
        r.acknowledged = acked.len();
        r.acknowledged_as_duplicate = duplicate.difference(&created).count();

        let mut visible: BTreeSet<&str> = BTreeSet::new();
        for (what, ids) in &observed.api_reads {
            let mut seen: BTreeSet<&str> = BTreeSet::new();
            for id in ids {
                if !seen.insert(id) {
                    r.visible_duplicates.push((what.clone(), id.clone()));
                }
            }
            visible.extend(seen);
        }
        let mut copies: HashMap<&str, usize> = HashMap::new();
        for id in &observed.stored_rows {
            *copies.entry(id).or_default() += 1;
        }
        r.extra_stored_copies = copies.values().map(|n| n - 1).sum();

        for id in &acked {
            let in_store = copies.contains_key(id);
            if in_store && visible.contains(id) {
                r.acknowledged_found += 1;
            } else {
                r.acknowledged_lost.push((*id).to_owned());
                if !in_store {
                    r.lost_in_store += 1;
                }
            }
        }
        for id in sent.difference(&acked) {
            if copies.contains_key(id) {
                r.unacknowledged_stored += 1;
            } else {
                r.unacknowledged_absent += 1;
            }
        }
        let unknown: BTreeSet<&str> = visible
            .iter()
            .copied()
            .chain(copies.keys().copied())
            .filter(|id| !sent.contains(id))
            .collect();
        r.unknown_ids = unknown.into_iter().map(str::to_owned).collect();
        r
    }
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
