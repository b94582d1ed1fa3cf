//! Arc's ingest buffer as readers see it. Arc keeps accepted rows in memory,
//! one buffer per (database, measurement), and writes a buffer out as one
//! Parquet file when it is old enough (`max_buffer_age_ms`, 5000 by default)
//! or big enough (`max_buffer_size`, 50,000 rows); only flushed rows are
//! readable, and without its WAL a crash loses what was not flushed.
//!
//! Here every table tracks its open buffer ([`Chunks`]) whether or not the
//! visibility delay is on: each flush closes a chunk, which the cost model
//! charges per scan. With the delay on, the open buffer also holds the rows
//! themselves until the flush; with it off they are inserted at once and the
//! open buffer only counts them.
//!
//! When a flush happens: Arc's flusher wakes every `max_age / 2` and flushes
//! the buffers that are at least `max_age` old, so a buffer created at `c`
//! is flushed at the first tick at or after `c + max_age` — its rows become
//! readable between `max_age` and `1.5 × max_age` after the first of them
//! arrived. Ticks are counted from the stand-in's start. A buffer reaching
//! `max_rows` is flushed by the write that filled it. Flushes are applied
//! lazily, whenever the store is looked at, which is indistinguishable from
//! a background flusher to anyone asking.

use super::decode::Batch;
use std::time::{Duration, Instant};

/// When Arc flushes a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffering {
    /// Age of a buffer (since its first row) that makes it due.
    pub max_age: Duration,
    /// Rows that make a buffer flush at once.
    pub max_rows: u64,
}

impl Buffering {
    /// Arc Go's defaults: 5 s, 50,000 rows.
    pub const fn arc_default() -> Self {
        Self {
            max_age: Duration::from_millis(5000),
            max_rows: 50_000,
        }
    }
}

impl Default for Buffering {
    fn default() -> Self {
        Self::arc_default()
    }
}

/// The flush tick at which a buffer created at `created` is written out.
fn flush_at(epoch: Instant, created: Instant, policy: Buffering) -> Instant {
    let earliest = created + policy.max_age;
    let tick = (policy.max_age / 2).as_nanos().max(1);
    let since = earliest.saturating_duration_since(epoch).as_nanos();
    let ticks = since.div_ceil(tick);
    let offset = u64::try_from(ticks.saturating_mul(tick)).unwrap_or(u64::MAX);
    epoch + Duration::from_nanos(offset)
}

/// The open buffer of a table.
#[derive(Debug)]
struct Open {
    due: Instant,
    rows: u64,
    /// Rows held back until the flush (visibility delay on), else empty.
    held: Vec<Batch>,
}

/// A table's flushed chunks and its open buffer. Chunks are numbered from
/// 0 in flush order (the open buffer is the next number); a delete that
/// leaves a flushed chunk without rows removes it (Arc removes the file).
#[derive(Debug, Default)]
pub struct Chunks {
    flushed: u64,
    removed: u64,
    open: Option<Open>,
}

impl Chunks {
    /// Chunks a query of the table reads: the flushed ones, and the open
    /// buffer when its rows are already readable (visibility delay off).
    pub fn readable(&self) -> u64 {
        let open = self
            .open
            .as_ref()
            .is_some_and(|o| o.rows > 0 && o.held.is_empty());
        self.flushed - self.removed + u64::from(open)
    }

    /// The number the open buffer's chunk has (or will have when opened).
    pub fn open_chunk(&self) -> u64 {
        self.flushed
    }

    /// The number of the chunk flushed last (0 if none was).
    pub fn last_flushed(&self) -> u64 {
        self.flushed.saturating_sub(1)
    }

    /// Whether chunk `n` was flushed (is a file, not the open buffer).
    pub fn is_flushed(&self, n: u64) -> bool {
        n < self.flushed
    }

    /// Forgets `n` flushed chunks a delete emptied.
    pub fn remove_flushed(&mut self, n: u64) {
        self.removed = (self.removed + n).min(self.flushed);
    }

    /// Rows held back, not readable yet.
    pub fn held_rows(&self) -> u64 {
        self.open
            .as_ref()
            .filter(|o| !o.held.is_empty())
            .map_or(0, |o| o.rows)
    }

    /// Closes the open buffer if it is due at `now`; returns its held rows.
    pub fn take_due(&mut self, now: Instant) -> Option<Vec<Batch>> {
        if self.open.as_ref().is_some_and(|o| o.due <= now) {
            self.close()
        } else {
            None
        }
    }

    /// Closes the open buffer (a flush); returns its held rows.
    pub fn close(&mut self) -> Option<Vec<Batch>> {
        let open = self.open.take()?;
        self.flushed += 1;
        Some(open.held)
    }

    /// Adds `rows` (and, with the delay on, the batch holding them) to the
    /// open buffer, opening one if needed. Returns the held rows to write
    /// out when this write filled the buffer.
    pub fn add(
        &mut self,
        epoch: Instant,
        now: Instant,
        policy: Buffering,
        rows: u64,
        held: Option<Batch>,
    ) -> Option<Vec<Batch>> {
        let open = self.open.get_or_insert_with(|| Open {
            due: flush_at(epoch, now, policy),
            rows: 0,
            held: Vec::new(),
        });
        open.rows += rows;
        open.held.extend(held);
        if open.rows >= policy.max_rows {
            self.close()
        } else {
            None
        }
    }

    /// Drops the held rows, as a crash of Arc without WAL does; returns how
    /// many were lost. An open buffer of readable rows stays as it is.
    pub fn crash(&mut self) -> u64 {
        match &self.open {
            Some(o) if !o.held.is_empty() => {
                let lost = o.rows;
                self.open = None;
                lost
            }
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flushes_fall_on_the_first_tick_after_max_age() {
        let epoch = Instant::now();
        let p = Buffering {
            max_age: Duration::from_millis(1000),
            max_rows: 10,
        };
        let at = |ms| epoch + Duration::from_millis(ms);
        assert_eq!(flush_at(epoch, at(0), p), at(1000));
        assert_eq!(flush_at(epoch, at(1), p), at(1500));
        assert_eq!(flush_at(epoch, at(500), p), at(1500));
        assert_eq!(flush_at(epoch, at(700), p), at(2000));

        let mut c = Chunks::default();
        assert!(c.add(epoch, at(100), p, 4, None).is_none());
        assert_eq!((c.readable(), c.held_rows()), (1, 0));
        assert!(c.take_due(at(1400)).is_none());
        assert!(c.take_due(at(1500)).is_some());
        assert_eq!(c.readable(), 1, "the flushed chunk");
        assert!(c.add(epoch, at(1600), p, 10, None).is_some(), "size flush");
        assert_eq!(c.readable(), 2);
        assert_eq!(c.crash(), 0, "readable rows are never lost");
    }
}
