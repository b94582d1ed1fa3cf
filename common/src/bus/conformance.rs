//! The behaviour every [`StateBus`] must show, as one reusable suite.
//!
//! [`run_all`] runs every quick check against one bus; each check works under
//! its own sub-prefix of `prefix`, so checks (and suites of several tests) can
//! share a bus. Two checks touch the whole key space and assume no other
//! writer at the same moment: [`compaction`] compacts the bus, and
//! [`empty_apply`] compares revisions. [`lease_expiry`] waits for a ttl and is
//! therefore not part of [`run_all`]; call it separately.
//!
//! The checks are plain async functions that panic with a message naming the
//! check on the first deviation — no test framework needed, only a tokio
//! runtime (for timeouts). Every wait is bounded by [`WAIT`].

use super::{BusError, Event, Guard, KeyValue, Op, StateBus, Watch, WatchMessage};
use std::time::Duration;
use tokio::time::{Instant, timeout};

/// Longest wait for any one expected message.
pub const WAIT: Duration = Duration::from_secs(10);

/// A guarded apply writes only when every guarded key is still at the
/// revision it was read at (absent: 0), and then atomically.
pub async fn guarded_apply(bus: &dyn StateBus, p: &str) {
    let check = "guarded apply";
    let (a, b) = (format!("{p}a"), format!("{p}b"));
    let first = apply(bus, vec![put(&a, "1")], check).await;
    let guard = |key: &str, mod_revision| Guard {
        key: key.to_owned(),
        mod_revision,
    };
    // a and b as read: a at `first`, b absent
    let written = bus
        .apply_guarded(
            &[guard(&a, first), guard(&b, 0)],
            vec![put(&a, "2"), put(&b, "1")],
        )
        .await
        .unwrap_or_else(|e| panic!("{check}: {e}"));
    let Some(second) = written else {
        panic!("{check}: guards that hold must write");
    };
    assert!(second > first, "{check}: a new revision");
    // a stale guard (a changed since `first`): nothing is written
    let stale = bus
        .apply_guarded(&[guard(&a, first)], vec![put(&a, "3"), put(&b, "3")])
        .await
        .unwrap_or_else(|e| panic!("{check}: {e}"));
    assert_eq!(stale, None, "{check}: a failed guard writes nothing");
    // a key guarded as absent that exists
    let exists = bus
        .apply_guarded(&[guard(&b, 0)], vec![put(&b, "4")])
        .await
        .unwrap_or_else(|e| panic!("{check}: {e}"));
    assert_eq!(
        exists, None,
        "{check}: an absent-guard on a present key fails"
    );
    let read = bus.load(p).await.unwrap_or_else(|e| panic!("{check}: {e}"));
    let values: Vec<(&str, &[u8])> = read
        .kvs
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.as_slice()))
        .collect();
    assert_eq!(
        values,
        [(a.as_str(), &b"2"[..]), (b.as_str(), &b"1"[..])],
        "{check}: only the guarded apply that held is visible"
    );
    assert!(read.kvs.iter().all(|kv| kv.mod_revision == second));
}

/// Runs every check of this module except [`lease_expiry`].
pub async fn run_all(bus: &dyn StateBus, prefix: &str) {
    load_then_watch(bus, &format!("{prefix}load-then-watch/")).await;
    multi_op_apply_is_one_message(bus, &format!("{prefix}multi-op/")).await;
    prefix_isolation(bus, &format!("{prefix}isolation/")).await;
    delete_events(bus, &format!("{prefix}delete/")).await;
    request_progress(bus, &format!("{prefix}progress/")).await;
    empty_apply(bus).await;
    too_many_ops_rejected(bus, &format!("{prefix}too-many/")).await;
    guarded_apply(bus, &format!("{prefix}guarded/")).await;
    lease_put_update_revoke(bus, &format!("{prefix}lease/")).await;
    compaction(bus, &format!("{prefix}compaction/")).await;
}

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.to_string(),
        value: value.as_bytes().to_vec(),
    }
}

fn delete(key: &str) -> Op {
    Op::Delete {
        key: key.to_string(),
    }
}

fn kv(key: &str, value: &str, mod_revision: i64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: value.as_bytes().to_vec(),
        mod_revision,
    }
}

async fn apply(bus: &dyn StateBus, ops: Vec<Op>, check: &str) -> i64 {
    match bus.apply(ops).await {
        Ok(revision) => revision,
        Err(e) => panic!("[{check}] apply failed: {e}"),
    }
}

async fn open(bus: &dyn StateBus, prefix: &str, start: i64, check: &str) -> Box<dyn Watch> {
    match bus.watch(prefix, start).await {
        Ok(watch) => watch,
        Err(e) => panic!("[{check}] watch of {prefix:?} from {start} failed: {e}"),
    }
}

/// The next message, or a panic after [`WAIT`].
async fn next(watch: &mut dyn Watch, check: &str) -> WatchMessage {
    match timeout(WAIT, watch.next()).await {
        Ok(Ok(message)) => message,
        Ok(Err(e)) => panic!("[{check}] watch failed: {e}"),
        Err(_) => panic!("[{check}] no watch message within {WAIT:?}"),
    }
}

/// The events of the next `Events` message, skipping progress notifications.
async fn next_events(watch: &mut dyn Watch, check: &str) -> (i64, Vec<Event>) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        match next(watch, check).await {
            WatchMessage::Events { revision, events } => {
                assert!(
                    !events.is_empty(),
                    "[{check}] an Events message without events"
                );
                return (revision, events);
            }
            WatchMessage::Progress { .. } => continue,
        }
    }
    panic!("[{check}] no events within {WAIT:?}");
}

/// Collects events until `count` arrived; asserts they come in revision order.
async fn collect_events(watch: &mut dyn Watch, count: usize, check: &str) -> Vec<Event> {
    let mut all: Vec<Event> = Vec::new();
    while all.len() < count {
        let (_, events) = next_events(watch, check).await;
        all.extend(events);
    }
    let revisions: Vec<i64> = all.iter().map(Event::mod_revision).collect();
    assert!(
        revisions.is_sorted(),
        "[{check}] events out of revision order: {revisions:?}"
    );
    all
}

/// Load a prefix at revision R, watch from R + 1: later puts, overwrites and
/// deletes arrive in order with the revisions `apply` returned.
pub async fn load_then_watch(bus: &dyn StateBus, p: &str) {
    let check = "load_then_watch";
    let (a, b, c) = (format!("{p}a"), format!("{p}b"), format!("{p}c"));
    let r1 = apply(bus, vec![put(&a, "a1"), put(&b, "b1")], check).await;
    let snapshot = bus
        .load(p)
        .await
        .unwrap_or_else(|e| panic!("[{check}] load failed: {e}"));
    assert!(
        snapshot.revision >= r1,
        "[{check}] snapshot revision {} < write revision {r1}",
        snapshot.revision
    );
    assert_eq!(
        snapshot.kvs,
        vec![kv(&a, "a1", r1), kv(&b, "b1", r1)],
        "[{check}] snapshot"
    );

    let mut watch = open(bus, p, snapshot.revision + 1, check).await;
    let r2 = apply(bus, vec![put(&c, "c1")], check).await;
    let r3 = apply(bus, vec![put(&a, "a2")], check).await;
    let r4 = apply(bus, vec![delete(&b)], check).await;
    assert!(
        r1 < r2 && r2 < r3 && r3 < r4,
        "[{check}] revisions not increasing: {r1} {r2} {r3} {r4}"
    );
    let events = collect_events(watch.as_mut(), 3, check).await;
    let expected = vec![
        Event::Put(kv(&c, "c1", r2)),
        Event::Put(kv(&a, "a2", r3)),
        Event::Delete {
            key: b.clone(),
            mod_revision: r4,
        },
    ];
    assert_eq!(events, expected, "[{check}] events after the snapshot");

    let later = bus
        .load(p)
        .await
        .unwrap_or_else(|e| panic!("[{check}] second load failed: {e}"));
    assert!(
        later.revision >= r4,
        "[{check}] second load at {} < {r4}",
        later.revision
    );
    assert_eq!(
        later.kvs,
        vec![kv(&a, "a2", r3), kv(&c, "c1", r2)],
        "[{check}] state after the writes"
    );
}

/// All events of one multi-op apply arrive in one `Events` message, in op
/// order, all at the revision `apply` returned.
pub async fn multi_op_apply_is_one_message(bus: &dyn StateBus, p: &str) {
    let check = "multi_op_apply_is_one_message";
    let (x, y, z) = (format!("{p}x"), format!("{p}y"), format!("{p}z"));
    let r0 = apply(bus, vec![put(&z, "z0")], check).await;
    let mut watch = open(bus, p, r0 + 1, check).await;
    let r = apply(bus, vec![put(&y, "y1"), delete(&z), put(&x, "x1")], check).await;
    let (revision, events) = next_events(watch.as_mut(), check).await;
    assert!(
        revision >= r,
        "[{check}] message revision {revision} < apply revision {r}"
    );
    let expected = vec![
        Event::Put(kv(&y, "y1", r)),
        Event::Delete {
            key: z.clone(),
            mod_revision: r,
        },
        Event::Put(kv(&x, "x1", r)),
    ];
    assert_eq!(
        events, expected,
        "[{check}] the transaction's events in one message"
    );
}

/// Keys outside the watched prefix are neither loaded nor watched, including
/// keys that merely start with the prefix's text without its separator.
pub async fn prefix_isolation(bus: &dyn StateBus, p: &str) {
    let check = "prefix_isolation";
    let inside = format!("{p}in/");
    let r0 = apply(
        bus,
        vec![put(&format!("{p}in/k0"), "v"), put(&format!("{p}inx"), "v")],
        check,
    )
    .await;
    let mut watch = open(bus, &inside, r0 + 1, check).await;
    apply(bus, vec![put(&format!("{p}out/k"), "v")], check).await;
    apply(
        bus,
        vec![put(&format!("{p}inx"), "v2"), put(&format!("{p}i"), "v")],
        check,
    )
    .await;
    let r = apply(bus, vec![put(&format!("{p}in/k1"), "v")], check).await;
    let (_, events) = next_events(watch.as_mut(), check).await;
    assert_eq!(
        events,
        vec![Event::Put(kv(&format!("{p}in/k1"), "v", r))],
        "[{check}] only keys under {inside:?}"
    );
    let snapshot = bus
        .load(&inside)
        .await
        .unwrap_or_else(|e| panic!("[{check}] load failed: {e}"));
    let keys: Vec<&str> = snapshot.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(
        keys,
        vec![format!("{p}in/k0"), format!("{p}in/k1")],
        "[{check}] loaded keys"
    );
}

/// A delete yields a Delete event at its revision; deleting a missing key
/// changes nothing (no revision, no event).
pub async fn delete_events(bus: &dyn StateBus, p: &str) {
    let check = "delete_events";
    let (k, other) = (format!("{p}k"), format!("{p}other"));
    let r0 = apply(bus, vec![put(&k, "v")], check).await;
    let mut watch = open(bus, p, r0 + 1, check).await;
    let r1 = apply(bus, vec![delete(&k)], check).await;
    assert!(
        r1 > r0,
        "[{check}] delete did not advance the revision ({r0} -> {r1})"
    );
    let r2 = apply(bus, vec![delete(&k)], check).await;
    assert_eq!(
        r2, r1,
        "[{check}] deleting a missing key must not create a revision"
    );
    let r3 = apply(bus, vec![put(&other, "v")], check).await;
    let events = collect_events(watch.as_mut(), 2, check).await;
    let expected = vec![
        Event::Delete {
            key: k.clone(),
            mod_revision: r1,
        },
        Event::Put(kv(&other, "v", r3)),
    ];
    assert_eq!(events, expected, "[{check}] one delete event, then the put");
}

/// `request_progress` yields a `Progress` at or beyond the last applied
/// revision once the events before it were delivered.
pub async fn request_progress(bus: &dyn StateBus, p: &str) {
    let check = "request_progress";
    let start = bus
        .current_revision()
        .await
        .unwrap_or_else(|e| panic!("[{check}] current_revision: {e}"));
    let mut watch = open(bus, p, start + 1, check).await;
    let r = apply(bus, vec![put(&format!("{p}k"), "v")], check).await;
    let (_, events) = next_events(watch.as_mut(), check).await;
    assert_eq!(
        events.len(),
        1,
        "[{check}] one event before the progress request"
    );
    // etcd drops a request while the watcher is still catching up: re-ask.
    for _ in 0..5 {
        watch
            .request_progress()
            .await
            .unwrap_or_else(|e| panic!("[{check}] request_progress: {e}"));
        match timeout(Duration::from_secs(2), watch.next()).await {
            Ok(Ok(WatchMessage::Progress { revision })) => {
                assert!(
                    revision >= r,
                    "[{check}] progress revision {revision} < applied revision {r}"
                );
                return;
            }
            Ok(Ok(other)) => panic!("[{check}] expected a progress notification, got {other:?}"),
            Ok(Err(e)) => panic!("[{check}] watch failed: {e}"),
            Err(_) => continue,
        }
    }
    panic!("[{check}] no progress notification after 5 requests");
}

/// An empty apply writes nothing and returns the current revision.
pub async fn empty_apply(bus: &dyn StateBus) {
    let check = "empty_apply";
    let before = bus
        .current_revision()
        .await
        .unwrap_or_else(|e| panic!("[{check}] current_revision: {e}"));
    let r = apply(bus, Vec::new(), check).await;
    let after = bus
        .current_revision()
        .await
        .unwrap_or_else(|e| panic!("[{check}] current_revision: {e}"));
    assert!(
        before <= r && r <= after,
        "[{check}] empty apply returned {r}, current was {before}..{after}"
    );
    assert_eq!(
        before, after,
        "[{check}] an empty apply changed the revision (or another writer ran)"
    );
}

/// More than 128 ops in one apply are refused as `Rejected` (callers chunk).
pub async fn too_many_ops_rejected(bus: &dyn StateBus, p: &str) {
    let check = "too_many_ops_rejected";
    let ops: Vec<Op> = (0..129).map(|i| put(&format!("{p}{i:03}"), "v")).collect();
    match bus.apply(ops).await {
        Err(BusError::Rejected(_)) => {}
        other => panic!("[{check}] 129 ops must be Rejected, got {other:?}"),
    }
    // the same local limits on both buses: a repeated key, an empty key
    let twice = vec![
        put(&format!("{p}twice"), "a"),
        put(&format!("{p}twice"), "b"),
    ];
    match bus.apply(twice).await {
        Err(BusError::Rejected(m)) => assert!(m.contains("duplicate key"), "[{check}] {m}"),
        other => panic!("[{check}] a repeated key must be Rejected, got {other:?}"),
    }
    match bus.apply(vec![put("", "v")]).await {
        Err(BusError::Rejected(m)) => assert!(m.contains("empty key"), "[{check}] {m}"),
        other => panic!("[{check}] an empty key must be Rejected, got {other:?}"),
    }
    let snapshot = bus
        .load(p)
        .await
        .unwrap_or_else(|e| panic!("[{check}] load failed: {e}"));
    assert!(
        snapshot.kvs.is_empty(),
        "[{check}] a rejected apply wrote {} keys",
        snapshot.kvs.len()
    );
    let ops: Vec<Op> = (0..128).map(|i| put(&format!("{p}{i:03}"), "v")).collect();
    apply(bus, ops, check).await;
}

/// A leased key is visible with its value, `update` replaces it, and
/// `revoke` deletes it at once (with a Delete event).
pub async fn lease_put_update_revoke(bus: &dyn StateBus, p: &str) {
    let check = "lease_put_update_revoke";
    let key = format!("{p}worker");
    let start = bus
        .current_revision()
        .await
        .unwrap_or_else(|e| panic!("[{check}] current_revision: {e}"));
    let mut watch = open(bus, p, start + 1, check).await;
    let mut leased = bus
        .lease_put(&key, b"v1".to_vec(), Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("[{check}] lease_put failed: {e}"));
    let snapshot = bus
        .load(p)
        .await
        .unwrap_or_else(|e| panic!("[{check}] load failed: {e}"));
    assert_eq!(
        snapshot.kvs.len(),
        1,
        "[{check}] leased key not loaded: {snapshot:?}"
    );
    assert_eq!(snapshot.kvs[0].value, b"v1", "[{check}] leased value");
    let (_, events) = next_events(watch.as_mut(), check).await;
    assert!(
        matches!(&events[..], [Event::Put(kv)] if kv.key == key && kv.value == b"v1"),
        "[{check}] put event: {events:?}"
    );

    leased
        .keep_alive()
        .await
        .unwrap_or_else(|e| panic!("[{check}] keep_alive failed: {e}"));
    leased
        .update(b"v2".to_vec())
        .await
        .unwrap_or_else(|e| panic!("[{check}] update failed: {e}"));
    let (_, events) = next_events(watch.as_mut(), check).await;
    assert!(
        matches!(&events[..], [Event::Put(kv)] if kv.key == key && kv.value == b"v2"),
        "[{check}] update event: {events:?}"
    );

    leased
        .revoke()
        .await
        .unwrap_or_else(|e| panic!("[{check}] revoke failed: {e}"));
    let (_, events) = next_events(watch.as_mut(), check).await;
    assert!(
        matches!(&events[..], [Event::Delete { key: k, .. }] if *k == key),
        "[{check}] delete event: {events:?}"
    );
    let snapshot = bus
        .load(p)
        .await
        .unwrap_or_else(|e| panic!("[{check}] load failed: {e}"));
    assert!(
        snapshot.kvs.is_empty(),
        "[{check}] key still there after revoke: {snapshot:?}"
    );
}

/// After a compaction at C, a watch from a revision below C fails with
/// `Compacted` (from `watch` or its first `next`); one from C + 1 works;
/// compacting again at or below C is a no-op, at a future revision `Rejected`.
pub async fn compaction(bus: &dyn StateBus, p: &str) {
    let check = "compaction";
    let k = format!("{p}k");
    let r1 = apply(bus, vec![put(&k, "v1")], check).await;
    apply(bus, vec![put(&k, "v2")], check).await;
    let c = apply(bus, vec![put(&k, "v3")], check).await;
    bus.compact(c)
        .await
        .unwrap_or_else(|e| panic!("[{check}] compact({c}) failed: {e}"));

    let compacted = match bus.watch(p, r1).await {
        Err(e) => e,
        Ok(mut watch) => match timeout(WAIT, watch.next()).await {
            Ok(Err(e)) => e,
            Ok(Ok(message)) => panic!("[{check}] watch from compacted {r1} yielded {message:?}"),
            Err(_) => panic!("[{check}] watch from compacted {r1}: no error within {WAIT:?}"),
        },
    };
    match compacted {
        BusError::Compacted {
            requested,
            compact_revision,
        } => {
            assert_eq!(requested, r1, "[{check}] requested revision");
            assert!(
                compact_revision >= c,
                "[{check}] compact_revision {compact_revision} < {c}"
            );
        }
        other => panic!("[{check}] expected Compacted, got {other:?}"),
    }

    bus.compact(c)
        .await
        .unwrap_or_else(|e| panic!("[{check}] compacting again at {c} must be a no-op: {e}"));
    bus.compact(r1)
        .await
        .unwrap_or_else(|e| panic!("[{check}] compacting below {c} must be a no-op: {e}"));
    match bus.compact(c + 1_000_000).await {
        Err(BusError::Rejected(_)) => {}
        other => panic!("[{check}] compacting a future revision must be Rejected, got {other:?}"),
    }

    let mut watch = open(bus, p, c + 1, check).await;
    let r = apply(bus, vec![put(&k, "v4")], check).await;
    let (_, events) = next_events(watch.as_mut(), check).await;
    assert_eq!(
        events,
        vec![Event::Put(kv(&k, "v4", r))],
        "[{check}] watch from {} after compaction",
        c + 1
    );
    let snapshot = bus
        .load(p)
        .await
        .unwrap_or_else(|e| panic!("[{check}] load after compaction: {e}"));
    assert_eq!(
        snapshot.kvs,
        vec![kv(&k, "v4", r)],
        "[{check}] load after compaction"
    );
}

/// A leased key survives while kept alive every ttl/3, then vanishes (with a
/// Delete event) within a few ttls once renewals stop. Takes about
/// `ttl * 3`; `ttl` is whole seconds on etcd (use 2 s).
pub async fn lease_expiry(bus: &dyn StateBus, p: &str, ttl: Duration) {
    let check = "lease_expiry";
    let key = format!("{p}worker");
    let start = bus
        .current_revision()
        .await
        .unwrap_or_else(|e| panic!("[{check}] current_revision: {e}"));
    let mut watch = open(bus, p, start + 1, check).await;
    let mut leased = bus
        .lease_put(&key, b"alive".to_vec(), ttl)
        .await
        .unwrap_or_else(|e| panic!("[{check}] lease_put failed: {e}"));
    let (_, events) = next_events(watch.as_mut(), check).await;
    assert!(
        matches!(&events[..], [Event::Put(kv)] if kv.key == key),
        "[{check}] put event: {events:?}"
    );

    let kept_until = Instant::now() + ttl * 2;
    while Instant::now() < kept_until {
        tokio::time::sleep(ttl / 3).await;
        leased
            .keep_alive()
            .await
            .unwrap_or_else(|e| panic!("[{check}] keep_alive failed: {e}"));
    }
    let snapshot = bus
        .load(p)
        .await
        .unwrap_or_else(|e| panic!("[{check}] load failed: {e}"));
    assert_eq!(
        snapshot.kvs.len(),
        1,
        "[{check}] key lost although kept alive for {:?}",
        ttl * 2
    );

    let stopped = Instant::now();
    let bound = ttl * 3 + Duration::from_secs(2);
    let events = match timeout(bound, next_events(watch.as_mut(), check)).await {
        Ok((_, events)) => events,
        Err(_) => panic!("[{check}] key still there {bound:?} after the last keep-alive"),
    };
    assert!(
        matches!(&events[..], [Event::Delete { key: k, .. }] if *k == key),
        "[{check}] delete event: {events:?}"
    );
    let gone_after = stopped.elapsed();
    assert!(
        gone_after + Duration::from_millis(100) >= ttl / 2,
        "[{check}] key vanished too early ({gone_after:?})"
    );
    tracing::info!(
        ?gone_after,
        ?ttl,
        "lease key vanished after the last keep-alive"
    );

    // A keep-alive after expiry grants a new lease and puts the value again.
    leased
        .keep_alive()
        .await
        .unwrap_or_else(|e| panic!("[{check}] keep_alive after expiry failed: {e}"));
    let (_, events) = next_events(watch.as_mut(), check).await;
    assert!(
        matches!(&events[..], [Event::Put(kv)] if kv.key == key && kv.value == b"alive"),
        "[{check}] re-put event: {events:?}"
    );
    leased
        .revoke()
        .await
        .unwrap_or_else(|e| panic!("[{check}] revoke failed: {e}"));
}
