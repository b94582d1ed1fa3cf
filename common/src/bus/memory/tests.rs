//! Unit tests of [`MemoryBus`](super::MemoryBus): the shared conformance
//! suite plus the memory-only behaviour (limits, lag, compaction, test
//! controls, the lease timer).

use super::*;
use crate::bus::Event;
use crate::bus::conformance;
use crate::bus::etcd::MAX_REQUEST_BYTES;

fn put(key: &str) -> Op {
    Op::Put {
        key: key.into(),
        value: b"v".to_vec(),
    }
}

#[tokio::test]
async fn conformance_suite() {
    let bus = MemoryBus::new();
    conformance::run_all(&bus, "/conf/").await;
    assert_eq!(bus.watch_count(), 0, "watches leaked");
}

#[tokio::test(start_paused = true)]
async fn lease_expiry_conformance() {
    conformance::lease_expiry(&MemoryBus::new(), "/exp/", Duration::from_secs(2)).await;
}

#[tokio::test]
async fn revisions_start_at_one_like_etcd() {
    let bus = MemoryBus::new();
    assert_eq!(bus.current_revision().await, Ok(1));
    assert_eq!(bus.apply(vec![put("/a")]).await, Ok(2));
    assert_eq!(
        bus.apply(vec![Op::Delete {
            key: "/missing".into()
        }])
        .await,
        Ok(2)
    );
    let dup = bus.apply(vec![put("/a"), put("/a")]).await;
    assert!(matches!(dup, Err(BusError::Rejected(_))), "{dup:?}");
    let big = bus
        .apply(vec![Op::Put {
            key: "/big".into(),
            value: vec![0; MAX_REQUEST_BYTES],
        }])
        .await;
    assert!(matches!(big, Err(BusError::Rejected(_))), "{big:?}");
}

#[tokio::test]
async fn a_lagging_watch_drains_then_ends() {
    let bus = MemoryBus::with_limits(MemoryLimits {
        history_events: 100,
        watch_queue: 3,
    });
    let mut watch = bus.watch("/", 2).await.expect("watch");
    for i in 0..5 {
        bus.apply(vec![put(&format!("/k{i}"))])
            .await
            .expect("apply");
    }
    let mut delivered = Vec::new();
    let error = loop {
        match watch.next().await {
            Ok(WatchMessage::Events { revision, .. }) => delivered.push(revision),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => break e,
        }
    };
    assert_eq!(
        delivered,
        vec![2, 3, 4],
        "what was queued is delivered first"
    );
    assert_eq!(error, BusError::WatchEnded("lagged".into()));
    // Resuming from the last revision + 1 loses nothing.
    let mut resumed = bus.watch("/", 5).await.expect("watch");
    for expected in [5, 6] {
        assert!(
            matches!(resumed.next().await, Ok(WatchMessage::Events { revision, .. }) if revision == expected)
        );
    }
}

#[tokio::test]
async fn history_beyond_the_cap_is_compacted() {
    let bus = MemoryBus::with_limits(MemoryLimits {
        history_events: 4,
        watch_queue: 16,
    });
    for i in 0..6 {
        bus.apply(vec![put(&format!("/k{i}"))])
            .await
            .expect("apply");
    }
    assert_eq!(bus.compacted_revision(), 3);
    let mut old = bus.watch("/", 3).await.expect("watch");
    assert_eq!(
        old.next().await,
        Err(BusError::Compacted {
            requested: 3,
            compact_revision: 3
        })
    );
    let mut kept = bus.watch("/", 4).await.expect("watch");
    assert!(matches!(
        kept.next().await,
        Ok(WatchMessage::Events { revision: 4, .. })
    ));
}

#[tokio::test]
async fn break_watches_ends_open_watches() {
    let bus = MemoryBus::new();
    let mut watch = bus.watch("/", 0).await.expect("watch");
    bus.apply(vec![put("/a")]).await.expect("apply");
    bus.break_watches();
    assert!(matches!(watch.next().await, Err(BusError::WatchEnded(_))));
    assert!(matches!(
        watch.request_progress().await,
        Err(BusError::WatchEnded(_))
    ));
    drop(watch);
    assert_eq!(bus.watch_count(), 0);
}

#[tokio::test]
async fn unavailable_fails_every_call() {
    let bus = MemoryBus::new();
    let mut leased = bus
        .lease_put("/w", b"v".to_vec(), Duration::from_secs(10))
        .await
        .expect("lease");
    let mut watch = bus.watch("/", 0).await.expect("watch");
    bus.set_unavailable(true);
    let down = |r: Result<(), BusError>| matches!(r, Err(BusError::Unavailable(_)));
    assert!(down(bus.load("/").await.map(drop)));
    assert!(down(bus.watch("/", 0).await.map(drop)));
    assert!(down(bus.apply(vec![put("/a")]).await.map(drop)));
    assert!(down(bus.current_revision().await.map(drop)));
    assert!(down(bus.compact(1).await));
    assert!(down(
        bus.lease_put("/x", Vec::new(), Duration::from_secs(1))
            .await
            .map(drop)
    ));
    assert!(down(leased.keep_alive().await));
    assert!(matches!(watch.next().await, Err(BusError::WatchEnded(_))));
    bus.set_unavailable(false);
    assert_eq!(bus.load("/").await.map(|s| s.kvs.len()), Ok(1));
}

#[tokio::test(start_paused = true)]
async fn expired_lease_is_deleted_by_the_timer() {
    let bus = MemoryBus::new();
    let _leased = bus
        .lease_put("/w", b"v".to_vec(), Duration::from_secs(2))
        .await
        .expect("lease");
    let mut watch = bus.watch("/", 0).await.expect("watch");
    // Nothing else touches the bus: only the timer task can expire it.
    let message = tokio::time::timeout(Duration::from_secs(3), watch.next()).await;
    assert!(
        matches!(&message, Ok(Ok(WatchMessage::Events { events, .. })) if matches!(&events[..], [Event::Delete { .. }])),
        "{message:?}"
    );
}
