//! The state bus against a real etcd (a throw-away `etcd` per test, see
//! `memtrace_tests::etcd`) and in memory: both pass the same conformance
//! suite, and the etcd bus survives the failures workers meet in production —
//! etcd stopped and restarted, etcd frozen (keepalive must notice), etcd
//! wiped, leases not renewed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use memtrace_common::bus::conformance;
use memtrace_common::bus::etcd::{EtcdBus, EtcdOptions};
use memtrace_common::bus::memory::MemoryBus;
use memtrace_common::bus::{BusError, Event, LeasedKey, Op, StateBus, Watch, WatchMessage};
use memtrace_tests::etcd::EtcdServer;
use tokio::time::{Instant, sleep, timeout};

fn start_etcd() -> EtcdServer {
    let server = EtcdServer::start().expect("starting etcd");
    eprintln!("etcd healthy after {:?}", server.last_start_duration());
    server
}

async fn connect(server: &EtcdServer) -> EtcdBus {
    EtcdBus::connect(&[server.endpoint()], EtcdOptions::default())
        .await
        .expect("etcd client")
}

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.to_string(),
        value: value.as_bytes().to_vec(),
    }
}

/// Retries `apply` for up to 20 s while etcd comes back.
async fn apply_when_back(bus: &EtcdBus, ops: Vec<Op>) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match bus.apply(ops.clone()).await {
            Ok(revision) => return revision,
            Err(BusError::Unavailable(e)) if Instant::now() < deadline => {
                eprintln!("etcd not back yet: {e}");
                sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("apply after restart failed: {e}"),
        }
    }
}

/// The events of the next `Events` message within 10 s.
async fn next_events(watch: &mut dyn Watch) -> Vec<Event> {
    for _ in 0..10 {
        match timeout(Duration::from_secs(10), watch.next()).await {
            Ok(Ok(WatchMessage::Events { events, .. })) => return events,
            Ok(Ok(WatchMessage::Progress { .. })) => continue,
            Ok(Err(e)) => panic!("watch failed: {e}"),
            Err(_) => panic!("no watch message within 10 s"),
        }
    }
    panic!("only progress notifications");
}

#[tokio::test]
async fn etcd_passes_the_conformance_suite() {
    let server = start_etcd();
    let bus = connect(&server).await;
    conformance::run_all(&bus, "/memtrace-conformance/").await;
}

#[tokio::test]
async fn memory_passes_the_conformance_suite() {
    let bus = MemoryBus::new();
    conformance::run_all(&bus, "/memtrace-conformance/").await;
    conformance::lease_expiry(&bus, "/memtrace-lease/", Duration::from_secs(1)).await;
    assert_eq!(bus.watch_count(), 0, "watches leaked");
}

#[tokio::test]
async fn etcd_watch_ends_when_etcd_stops_and_resumes_after_restart() {
    let mut server = start_etcd();
    let bus = connect(&server).await;
    let r1 = bus.apply(vec![put("/r/a", "1")]).await.unwrap();
    let mut watch = bus.watch("/r/", r1 + 1).await.unwrap();
    let r2 = bus.apply(vec![put("/r/b", "2")]).await.unwrap();
    assert_eq!(next_events(watch.as_mut()).await.len(), 1);

    server.stop().unwrap();
    let stopped = Instant::now();
    match timeout(Duration::from_secs(10), watch.next()).await {
        Ok(Err(BusError::WatchEnded(reason))) => {
            eprintln!("watch ended after {:?}: {reason}", stopped.elapsed())
        }
        other => panic!("expected WatchEnded once etcd stopped, got {other:?}"),
    }
    assert!(
        matches!(watch.next().await, Err(BusError::WatchEnded(_))),
        "an ended watch stays ended"
    );
    match bus.current_revision().await {
        Err(BusError::Unavailable(_)) => {}
        other => panic!("expected Unavailable while etcd is down, got {other:?}"),
    }

    server.start_again().unwrap();
    eprintln!("etcd restarted in {:?}", server.last_start_duration());
    let r3 = apply_when_back(&bus, vec![put("/r/c", "3")]).await;
    assert!(r3 > r2, "revisions survive a restart ({r2} -> {r3})");
    let mut resumed = bus.watch("/r/", r2 + 1).await.unwrap();
    let events = next_events(resumed.as_mut()).await;
    assert_eq!(events.iter().map(Event::key).collect::<Vec<_>>(), ["/r/c"]);
    assert_eq!(events[0].mod_revision(), r3);
    let keys: Vec<String> = bus
        .load("/r/")
        .await
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(keys, ["/r/a", "/r/b", "/r/c"]);
}

#[tokio::test]
async fn a_frozen_etcd_fails_the_watch_instead_of_hanging() {
    let server = start_etcd();
    let bus = connect(&server).await;
    let start = bus.current_revision().await.unwrap();
    let mut watch = bus.watch("/f/", start + 1).await.unwrap();
    // Healthy and idle through more than one keepalive interval: no message,
    // no error (etcd must not answer the pings with GOAWAY).
    let idle = EtcdOptions::default().keep_alive_interval + Duration::from_secs(1);
    assert!(
        timeout(idle, watch.next()).await.is_err(),
        "an idle watch must stay open"
    );

    server.freeze().unwrap();
    let frozen = Instant::now();
    let result = timeout(Duration::from_secs(15), watch.next()).await;
    let noticed = frozen.elapsed();
    server.thaw().unwrap();
    match result {
        Ok(Err(BusError::WatchEnded(reason))) => {
            eprintln!("frozen etcd noticed after {noticed:?}: {reason}")
        }
        Ok(other) => panic!("expected WatchEnded from a frozen etcd, got {other:?}"),
        Err(_) => panic!("the watch hung for 15 s on a frozen etcd"),
    }
    let defaults = EtcdOptions::default();
    let bound = defaults.keep_alive_interval + defaults.keep_alive_timeout + Duration::from_secs(2);
    assert!(
        noticed <= bound,
        "noticed after {noticed:?}, expected within {bound:?}"
    );

    // Thawed: the same client works again.
    let r = apply_when_back(&bus, vec![put("/f/k", "v")]).await;
    let mut resumed = bus.watch("/f/", r).await.unwrap();
    assert_eq!(next_events(resumed.as_mut()).await.len(), 1);
}

#[tokio::test]
async fn an_etcd_lease_key_vanishes_once_renewals_stop() {
    let server = start_etcd();
    let bus = connect(&server).await;
    conformance::lease_expiry(&bus, "/lease/", Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_wiped_etcd_starts_again_from_revision_one() {
    let mut server = start_etcd();
    let bus = connect(&server).await;
    let ops: Vec<Op> = (0..10).map(|i| put(&format!("/w/{i}"), "v")).collect();
    let before = bus.apply(ops).await.unwrap();
    server.wipe_and_restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let snapshot = loop {
        match bus.load("/w/").await {
            Ok(snapshot) => break snapshot,
            Err(BusError::Unavailable(_)) if Instant::now() < deadline => {
                sleep(Duration::from_millis(250)).await
            }
            Err(e) => panic!("load after wipe failed: {e}"),
        }
    };
    assert!(
        snapshot.kvs.is_empty(),
        "wiped etcd still has {:?}",
        snapshot.kvs
    );
    assert!(
        snapshot.revision < before,
        "revision went backwards: {before} -> {}",
        snapshot.revision
    );
}

#[tokio::test]
async fn etcd_watch_latency_on_loopback() {
    let server = start_etcd();
    let bus = connect(&server).await;
    let start = bus.current_revision().await.unwrap();
    let mut watch = bus.watch("/lat/", start + 1).await.unwrap();
    let mut latencies = Vec::with_capacity(100);
    for i in 0..100 {
        let sent = Instant::now();
        bus.apply(vec![put(&format!("/lat/{i}"), "v")])
            .await
            .unwrap();
        next_events(watch.as_mut()).await;
        latencies.push(sent.elapsed());
    }
    latencies.sort();
    let (p50, p99) = (latencies[49], latencies[98]);
    eprintln!("apply -> watch event on loopback: p50 {p50:?}, p99 {p99:?}");
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");
}

/// Renews `leased` until it succeeds (etcd coming back), at most 20 s.
async fn keep_alive_when_back(leased: &mut dyn LeasedKey) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match leased.keep_alive().await {
            Ok(()) => return,
            Err(BusError::Unavailable(e)) if Instant::now() < deadline => {
                eprintln!("keep-alive while etcd comes back: {e}");
                sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("keep-alive failed: {e}"),
        }
    }
}

#[tokio::test]
async fn an_etcd_lease_survives_a_restart_and_is_recreated_after_a_wipe() {
    let mut server = start_etcd();
    let bus = connect(&server).await;
    let ttl = Duration::from_secs(10);
    let mut leased = bus
        .lease_put("/l/worker", b"w1".to_vec(), ttl)
        .await
        .unwrap();
    // Renewals over a long-lived keep-alive stream (longer than the 5 s
    // request timeout) keep working.
    for _ in 0..4 {
        sleep(Duration::from_secs(2)).await;
        leased.keep_alive().await.unwrap();
    }

    server.stop().unwrap();
    server.start_again().unwrap();
    keep_alive_when_back(leased.as_mut()).await;
    let kvs = bus.load("/l/").await.unwrap().kvs;
    assert_eq!(kvs.len(), 1, "the leased key survives a restart");
    bus.apply(vec![put("/l/marker", "before the wipe")])
        .await
        .unwrap();

    server.wipe_and_restart().unwrap();
    keep_alive_when_back(leased.as_mut()).await;
    let kvs = bus.load("/l/").await.unwrap().kvs;
    let keys: Vec<&str> = kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(
        keys,
        ["/l/worker"],
        "keep-alive puts the key again on a wiped etcd"
    );
    assert_eq!(kvs[0].value, b"w1");
    leased.revoke().await.unwrap();
    assert!(bus.load("/l/").await.unwrap().kvs.is_empty());
}
