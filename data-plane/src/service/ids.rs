//! Ids and row times: time-ordered memory ids (`mem_` + 14 hex digits of
//! the µs clock + 12 random hex digits; 14 digits cover µs times until the
//! year 4253, so ids sort by creation time), `agent_<24 hex>` and
//! `sess_<24 hex>` as the original, and a per-process clock that never
//! repeats a microsecond, so a later state row of an id always wins; a row
//! that replaces one (a session update, an agent's tombstone) is stamped
//! after the row it replaces ([`next_micros_after`]), so it wins even when
//! that row came from a worker whose clock is ahead of this one's.

use crate::query::UnixMicros;
use std::sync::atomic::{AtomicI64, Ordering};

static LAST_MICROS: AtomicI64 = AtomicI64::new(0);

/// Now in µs, strictly greater than every earlier value in this process.
pub fn next_micros() -> i64 {
    next_micros_n(1)
}

/// A time for a row that replaces the row stamped `replaced`: as
/// [`next_micros`], but after `replaced` even when another worker whose
/// clock is ahead stamped it (the newest row of an id wins every read, so
/// a change stamped before the row it changes would be lost). This
/// process's own clock is not moved: its later rows keep its own time.
pub fn next_micros_after(replaced: i64) -> i64 {
    next_micros().max(replaced.saturating_add(1))
}

/// `n` consecutive µs values (n ≥ 1) with one clock reading; returns the
/// first. Every value is strictly greater than every earlier one in this
/// process, as [`next_micros`]'s.
pub fn next_micros_n(n: usize) -> i64 {
    let n = i64::try_from(n.max(1)).unwrap_or(i64::MAX);
    let now = UnixMicros::now().0;
    let mut last = LAST_MICROS.load(Ordering::Relaxed);
    loop {
        let first = now.max(last.saturating_add(1));
        let end = first.saturating_add(n - 1);
        match LAST_MICROS.compare_exchange_weak(last, end, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return first,
            Err(seen) => last = seen,
        }
    }
}

fn random_hex(bytes: usize) -> String {
    let buf: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    hex::encode(buf)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A new memory id for a memory written at `micros`: `mem_`, 14 hex digits
/// of the time, 12 random hex digits (written without `format!`: this runs
/// once per event on the ingest path).
pub fn memory_id(micros: i64) -> String {
    let mut id = String::with_capacity(30);
    id.push_str("mem_");
    let t = micros.max(0) as u64;
    for shift in (0..14).rev() {
        id.push(char::from(HEX[((t >> (shift * 4)) & 0xf) as usize]));
    }
    let r: u64 = rand::random();
    for shift in 0..12 {
        id.push(char::from(HEX[((r >> (shift * 4)) & 0xf) as usize]));
    }
    id
}

/// A new agent id (`agent_<24 hex>`).
pub fn agent_id() -> String {
    format!("agent_{}", random_hex(12))
}

/// A new session id (`sess_<24 hex>`).
pub fn session_id() -> String {
    format!("sess_{}", random_hex(12))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::MemoryId;

    #[test]
    fn ids_follow_the_rules_and_sort_by_time() {
        let a = memory_id(next_micros());
        let b = memory_id(next_micros());
        assert!(MemoryId::parse(&a).is_ok(), "{a}");
        assert_eq!(a.len(), 4 + 14 + 12);
        assert!(a[..18] < b[..18], "{a} {b}");
        assert!(agent_id().starts_with("agent_") && agent_id().len() == 30);
        assert!(session_id().starts_with("sess_") && session_id().len() == 29);
        let t1 = next_micros();
        assert!(next_micros() > t1);
        let first = next_micros_n(1000);
        assert!(first > t1);
        assert!(next_micros() >= first + 1000, "the whole range is taken");
        // a row stamped 5 minutes ahead by another worker is replaced by a
        // later one; our own clock stays ours
        let ahead = next_micros() + 300_000_000;
        assert_eq!(next_micros_after(ahead), ahead + 1);
        assert!(next_micros() < ahead);
        let behind = next_micros() - 300_000_000;
        assert!(next_micros_after(behind) > behind + 299_000_000);
    }
}
