//! The data plane's per-tenant group-commit batcher
//! (`memtrace_data_plane::ingest`) against the in-process Arc stand-in:
//! concurrent submits share Arc requests, an ack waits for Arc's answer,
//! 4xx fail every waiter of the batch, 5xx are retried, a full queue is
//! refused at once with nothing lost, shutdown flushes (or fails what it
//! cannot), settings apply hot (the org's Arc writes in flight included), removed orgs fail their queue, idle
//! flushers exit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_common::settings::{TenantLimits, WriteCompression, WriteSettings};
use memtrace_data_plane::arcdb::{ArcClient, RetryPolicy};
use memtrace_data_plane::ingest::{Ack, Batcher, IngestError};
use memtrace_data_plane::snapshot::ArcRoute;
use memtrace_data_plane::store::MemoryRow;
use memtrace_tests::arc::{ArcStandIn, ArcStandInBuilder, CostModel, Fault, Target};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::time::timeout;

/// A stand-in builder answering instantly (`CostModel::instant()`): these
/// tests check behaviour, not time.
fn instant_builder() -> ArcStandInBuilder {
    ArcStandIn::builder().cost_model(CostModel::instant())
}

const DB: &str = "acme";
const MEASUREMENT: &str = "memories";
const ORG: &str = "org_acme";
/// 2026-11-25T12:00:00Z.
const T0: i64 = 1_795_608_000_000_000;
const WAIT: Duration = Duration::from_secs(10);

/// Settings the tests turn while the batcher runs.
struct Knobs {
    batch_size: AtomicU64,
    linger_ms: AtomicU64,
    max_queued: AtomicU64,
    compression: Mutex<WriteCompression>,
    max_inflight: AtomicU64,
}

fn knobs(batch_size: u64, linger_ms: u64, max_queued: u64) -> Arc<Knobs> {
    Arc::new(Knobs {
        batch_size: AtomicU64::new(batch_size),
        linger_ms: AtomicU64::new(linger_ms),
        max_queued: AtomicU64::new(max_queued),
        compression: Mutex::new(WriteCompression::Zstd),
        max_inflight: AtomicU64::new(2),
    })
}

fn batcher(knobs: &Arc<Knobs>) -> Batcher {
    let k = knobs.clone();
    let settings = move |_org: &str| {
        let ws = WriteSettings {
            batch_size: k.batch_size.load(Ordering::SeqCst),
            flush_interval: Duration::from_secs(1),
            linger: Duration::from_millis(k.linger_ms.load(Ordering::SeqCst)),
            max_batch_bytes: 8 << 20,
            // 3 retries: the policy's 4 attempts
            retry_max_attempts: 3,
            query_timeout: Duration::from_secs(5),
            compression: *k.compression.lock().unwrap(),
            max_inflight_writes: u32::try_from(k.max_inflight.load(Ordering::SeqCst)).unwrap(),
        };
        let limits = TenantLimits {
            requests_per_second: 0,
            burst: 0,
            max_payload_bytes: 1 << 20,
            max_queued_events: k.max_queued.load(Ordering::SeqCst),
            max_concurrent_reads: 8,
        };
        (ws, limits)
    };
    let client = ArcClient::new(Duration::from_secs(2), Duration::from_secs(20)).unwrap();
    let retry = RetryPolicy {
        max_attempts: 4,
        base: Duration::from_millis(10),
        max: Duration::from_millis(40),
        max_elapsed: Duration::from_secs(5),
    };
    Batcher::new(client, settings, retry)
}

fn route(arc: &ArcStandIn) -> Arc<ArcRoute> {
    Arc::new(ArcRoute {
        binding_id: "bind_1".into(),
        url: arc.url(),
        database: DB.into(),
        measurement: MEASUREMENT.into(),
        api_key: None,
    })
}

fn row(i: i64) -> MemoryRow {
    MemoryRow {
        time: T0 + i,
        id: format!("mem_{i}"),
        org_id: ORG.into(),
        agent_id: "agent_1".into(),
        memory_type: "episodic".into(),
        event_type: "general".into(),
        content: format!("memory number {i}"),
        metadata_json: "{}".into(),
        importance: 0.5,
        ..MemoryRow::default()
    }
}

/// Submits rows `from..to` one request each.
fn submit_each(b: &Batcher, r: &Arc<ArcRoute>, from: i64, to: i64) -> Vec<Ack> {
    (from..to)
        .map(|i| b.submit(ORG, r.clone(), vec![row(i)].into()).unwrap())
        .collect()
}

/// Awaits every ack (bounded), returning their outcomes.
async fn outcomes(acks: Vec<Ack>) -> Vec<Result<(), IngestError>> {
    let mut out = Vec::with_capacity(acks.len());
    for ack in acks {
        out.push(timeout(WAIT, ack).await.expect("ack timed out"));
    }
    out
}

#[tokio::test]
async fn concurrent_submits_share_arc_requests_and_are_stored_once() {
    let arc = instant_builder().start().await.unwrap();
    let b = batcher(&knobs(100, 20, 1_000));
    let r = route(&arc);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let (b, r) = (b.clone(), r.clone());
        tasks.spawn(async move { b.submit(ORG, r, vec![row(i)].into()).unwrap().await });
    }
    let mut acked = 0;
    while let Some(res) = timeout(WAIT, tasks.join_next()).await.unwrap() {
        res.unwrap().unwrap();
        acked += 1;
    }
    assert_eq!(acked, 200);
    let stats = arc.stats().db(DB);
    assert_eq!(stats.rows, 200);
    assert!(stats.write_requests <= 10, "{stats:?}");
    let ids: HashSet<String> = arc
        .rows(DB, MEASUREMENT)
        .await
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 200);
    let m = b.metrics();
    assert_eq!((m.rows_written, m.queued_rows), (200, 0));
    assert_eq!(m.batches, stats.write_requests);
}

#[tokio::test]
async fn ack_waits_for_arc_to_answer() {
    let arc = instant_builder().start().await.unwrap();
    let b = batcher(&knobs(100, 5, 100));
    arc.faults()
        .inject(Fault::stall().on(Target::Writes).times(1));
    let mut ack = b.submit(ORG, route(&arc), vec![row(1)].into()).unwrap();
    assert!(arc.faults().wait_stalled(1, WAIT).await);
    assert!(timeout(Duration::from_millis(300), &mut ack).await.is_err());
    assert_eq!(b.queue_depth(ORG), Some(1));
    arc.faults().release_stalls();
    timeout(WAIT, ack).await.unwrap().unwrap();
    assert_eq!(arc.row_count(DB, MEASUREMENT), 1);
}

#[tokio::test]
async fn a_refused_batch_fails_every_waiter_and_stores_nothing() {
    let arc = instant_builder().start().await.unwrap();
    let b = batcher(&knobs(100, 100, 100));
    arc.faults()
        .inject(Fault::status(400).on(Target::Writes).times(1));
    let acks = submit_each(&b, &route(&arc), 0, 5);
    for res in outcomes(acks).await {
        match res {
            Err(IngestError::Arc(e)) => assert_eq!(e.status(), Some(400), "{e}"),
            other => panic!("expected the arc 400, got {other:?}"),
        }
    }
    assert_eq!(arc.row_count(DB, MEASUREMENT), 0);
    assert_eq!(arc.stats().status(400), 1, "one request, not retried");
    let m = b.metrics();
    assert_eq!((m.arc_errors, m.rows_failed, m.rows_written), (1, 5, 0));
}

#[tokio::test]
async fn server_errors_are_retried_then_acked_once() {
    let arc = instant_builder().start().await.unwrap();
    let b = batcher(&knobs(100, 5, 100));
    arc.faults()
        .inject(Fault::status(503).on(Target::Writes).times(2));
    let ack = b
        .submit(ORG, route(&arc), (0..3).map(row).collect())
        .unwrap();
    timeout(WAIT, ack).await.unwrap().unwrap();
    let stats = arc.stats();
    assert_eq!(stats.status(503), 2);
    assert_eq!(stats.db(DB).write_requests, 1);
    assert_eq!(arc.row_count(DB, MEASUREMENT), 3);
}

#[tokio::test]
async fn a_full_queue_refuses_at_once_and_loses_nothing() {
    let arc = instant_builder().start().await.unwrap();
    let b = batcher(&knobs(4, 5, 10));
    let r = route(&arc);
    arc.faults().inject(Fault::stall().on(Target::Writes));
    let started = Instant::now();
    let (mut acks, mut full) = (Vec::new(), 0);
    for i in 0..50 {
        match b.submit(ORG, r.clone(), vec![row(i)].into()) {
            Ok(ack) => acks.push(ack),
            Err(IngestError::QueueFull { retry_after, .. }) => {
                assert!(retry_after >= Duration::from_millis(100));
                full += 1;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(1), "refusals wait");
    assert_eq!((acks.len(), full), (10, 40));
    // Two batches in flight (the per-org bound), the rest queued.
    assert!(arc.faults().wait_stalled(2, WAIT).await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(arc.faults().stalled(), 2);
    assert!(matches!(
        b.submit(ORG, r.clone(), vec![row(99)].into()),
        Err(IngestError::QueueFull { .. })
    ));
    assert!(matches!(
        b.submit(ORG, r.clone(), (100..111).map(row).collect()),
        Err(IngestError::TooLarge {
            rows: 11,
            capacity: 10
        })
    ));
    arc.faults().clear();
    assert!(outcomes(acks).await.iter().all(Result::is_ok));
    assert_eq!(arc.row_count(DB, MEASUREMENT), 10);
    assert_eq!(b.metrics().rejected_full, 41);
    // Room again once answered.
    let ack = b.submit(ORG, r, vec![row(200)].into()).unwrap();
    timeout(WAIT, ack).await.unwrap().unwrap();
}

#[tokio::test]
async fn the_orgs_writes_in_flight_follow_the_setting_hot() {
    let arc = instant_builder().start().await.unwrap();
    let k = knobs(1, 5, 100);
    k.max_inflight.store(1, Ordering::SeqCst);
    let b = batcher(&k);
    let r = route(&arc);
    arc.faults().inject(Fault::stall().on(Target::Writes));
    let mut acks = submit_each(&b, &r, 0, 6);
    assert!(arc.faults().wait_stalled(1, WAIT).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(arc.faults().stalled(), 1, "one write in flight");
    // raised: the next writes start beside the one in flight
    k.max_inflight.store(4, Ordering::SeqCst);
    acks.extend(submit_each(&b, &r, 6, 7));
    assert!(arc.faults().wait_stalled(4, WAIT).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(arc.faults().stalled(), 4, "at most four");
    // lowered: no new write starts until the running ones are below it
    k.max_inflight.store(1, Ordering::SeqCst);
    arc.faults().clear();
    arc.faults().inject(Fault::stall().on(Target::Writes));
    arc.faults().release_stalls();
    assert!(arc.faults().wait_stalled(1, WAIT).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(arc.faults().stalled(), 1, "back to one");
    arc.faults().clear();
    arc.faults().release_stalls();
    assert!(outcomes(acks).await.iter().all(Result::is_ok));
    assert_eq!(arc.row_count(DB, MEASUREMENT), 7);
}

#[tokio::test]
async fn close_flushes_queued_rows_without_waiting_for_linger() {
    let arc = instant_builder().start().await.unwrap();
    let b = batcher(&knobs(1_000, 60_000, 100));
    let r = route(&arc);
    let acks = submit_each(&b, &r, 0, 5);
    let started = Instant::now();
    assert_eq!(b.close(Duration::from_secs(5)).await, 0);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(outcomes(acks).await.iter().all(Result::is_ok));
    assert_eq!(arc.row_count(DB, MEASUREMENT), 5);
    assert!(matches!(
        b.submit(ORG, r, vec![row(9)].into()),
        Err(IngestError::ShuttingDown)
    ));
}

#[tokio::test]
async fn close_fails_what_arc_did_not_take_within_grace() {
    let arc = instant_builder().start().await.unwrap();
    let b = batcher(&knobs(2, 5, 100));
    arc.faults().inject(Fault::stall().on(Target::Writes));
    let acks = submit_each(&b, &route(&arc), 0, 7);
    assert!(arc.faults().wait_stalled(2, WAIT).await);
    let started = Instant::now();
    assert_eq!(b.close(Duration::from_millis(200)).await, 7);
    assert!(started.elapsed() < Duration::from_secs(3));
    for res in outcomes(acks).await {
        assert_eq!(res, Err(IngestError::Unflushed));
    }
    assert_eq!(b.metrics().queued_rows, 0);
    arc.faults().clear();
}

#[tokio::test]
async fn batch_size_changes_apply_to_the_next_batch() {
    let arc = instant_builder().start().await.unwrap();
    let k = knobs(5, 500, 100);
    let b = batcher(&k);
    let r = route(&arc);
    assert!(
        outcomes(submit_each(&b, &r, 0, 10))
            .await
            .iter()
            .all(Result::is_ok)
    );
    let first = arc.stats().db(DB);
    assert_eq!((first.write_requests, first.rows), (2, 10), "5 + 5");
    k.batch_size.store(2, Ordering::SeqCst);
    assert!(
        outcomes(submit_each(&b, &r, 10, 16))
            .await
            .iter()
            .all(Result::is_ok)
    );
    let second = arc.stats().db(DB);
    assert_eq!(
        (
            second.write_requests - first.write_requests,
            second.rows - first.rows
        ),
        (3, 6),
        "2 + 2 + 2"
    );
}

#[tokio::test]
async fn a_closed_org_fails_its_queue() {
    let arc = instant_builder().start().await.unwrap();
    let b = batcher(&knobs(100, 60_000, 100));
    let acks = submit_each(&b, &route(&arc), 0, 3);
    assert!(b.close_org(ORG));
    for res in outcomes(acks).await {
        assert!(matches!(res, Err(IngestError::OrgClosed { .. })), "{res:?}");
    }
    assert_eq!(arc.row_count(DB, MEASUREMENT), 0);
    assert!(!b.close_org(ORG));
}

#[tokio::test]
async fn idle_flushers_exit_and_come_back() {
    let arc = instant_builder().start().await.unwrap();
    let b = batcher(&knobs(100, 5, 100)).with_idle_timeout(Duration::from_millis(50));
    let r = route(&arc);
    timeout(WAIT, b.submit(ORG, r.clone(), vec![row(1)].into()).unwrap())
        .await
        .unwrap()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while b.active_orgs() > 0 {
        assert!(Instant::now() < deadline, "flusher never retired");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    timeout(WAIT, b.submit(ORG, r, vec![row(2)].into()).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(arc.row_count(DB, MEASUREMENT), 2);
}

#[tokio::test]
async fn an_idle_orgs_write_goes_out_at_once_and_busy_slots_gather_the_next_batch() {
    let arc = instant_builder().start().await.unwrap();
    // a linger of a minute: only the adaptive close can answer quickly
    let b = batcher(&knobs(1_000, 60_000, 1_000));
    let r = route(&arc);
    let ack = b.submit(ORG, r.clone(), vec![row(1)].into()).unwrap();
    timeout(Duration::from_secs(2), ack)
        .await
        .expect("sent without waiting for linger")
        .unwrap();
    // both write slots busy (stalled Arc): later submits gather into one batch
    arc.faults()
        .inject(Fault::stall().on(Target::Writes).times(2));
    let held: Vec<Ack> = (2..4)
        .map(|i| b.submit(ORG, r.clone(), vec![row(i)].into()).unwrap())
        .collect();
    assert!(arc.faults().wait_stalled(1, WAIT).await);
    let gathered: Vec<Ack> = (10..30)
        .map(|i| b.submit(ORG, r.clone(), vec![row(i)].into()).unwrap())
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    arc.faults().release_stalls();
    for ack in held.into_iter().chain(gathered) {
        timeout(WAIT, ack).await.unwrap().unwrap();
    }
    let stats = arc.stats().db(DB);
    assert_eq!(stats.rows, 23);
    assert!(
        stats.write_requests <= 4,
        "the 20 submits made while the slots were busy share a batch: {stats:?}"
    );
}

#[tokio::test]
async fn a_batch_stays_open_no_longer_than_the_flush_interval() {
    let arc = instant_builder().start().await.unwrap();
    // linger of a minute, flush interval 1 s (the knobs' fixed value)
    let b = batcher(&knobs(1_000, 60_000, 1_000));
    let r = route(&arc);
    arc.faults()
        .inject(Fault::stall().on(Target::Writes).times(2));
    // one at a time, so each takes a write slot of its own
    let mut held: Vec<Ack> = Vec::new();
    for i in 0..2 {
        held.push(b.submit(ORG, r.clone(), vec![row(i)].into()).unwrap());
        assert!(arc.faults().wait_stalled(i as usize + 1, WAIT).await);
    }
    // both slots busy: this opens a batch that can only close on time
    let early = b.submit(ORG, r.clone(), vec![row(10)].into()).unwrap();
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    // past the flush interval: the open batch closed, this starts the next
    let late = b.submit(ORG, r.clone(), vec![row(11)].into()).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    arc.faults().release_stalls();
    for ack in held.into_iter().chain([early, late]) {
        timeout(WAIT, ack).await.unwrap().unwrap();
    }
    let stats = arc.stats().db(DB);
    assert_eq!(stats.rows, 4);
    assert_eq!(
        stats.write_requests, 4,
        "the row queued after the flush interval went in its own batch: {stats:?}"
    );
}

#[tokio::test]
async fn orgs_whose_route_is_gone_are_closed_and_others_kept() {
    let arc = instant_builder().start().await.unwrap();
    let b = batcher(&knobs(100, 60_000, 100));
    let acks = submit_each(&b, &route(&arc), 0, 3);
    assert_eq!(
        b.close_orgs_without_route(|_| true),
        0,
        "every route present"
    );
    assert_eq!(b.close_orgs_without_route(|org| org != ORG), 1);
    for res in outcomes(acks).await {
        assert!(matches!(res, Err(IngestError::OrgClosed { .. })), "{res:?}");
    }
    assert_eq!(arc.row_count(DB, MEASUREMENT), 0);
    assert_eq!(b.active_orgs(), 0);
}

#[tokio::test]
async fn a_large_batch_is_encoded_off_the_async_threads_and_stored() {
    let arc = instant_builder().start().await.unwrap();
    let b = batcher(&knobs(1_000, 5, 1_000));
    let rows: Vec<MemoryRow> = (0..600).map(row).collect();
    let ack = b.submit(ORG, route(&arc), rows.into()).unwrap();
    timeout(WAIT, ack).await.unwrap().unwrap();
    let stats = arc.stats().db(DB);
    assert_eq!((stats.write_requests, stats.rows), (1, 600));
    assert_eq!(arc.row_count(DB, MEASUREMENT), 600);
}

#[tokio::test]
async fn a_gzip_only_arc_names_the_compression_setting_and_takes_gzip_once_set() {
    let arc = instant_builder().gzip_only(true).start().await.unwrap();
    let k = knobs(10, 1, 1_000);
    let b = batcher(&k);
    let r = route(&arc);
    // zstd (the default) is refused as not MessagePack: the error names the
    // setting and how to change it, and nothing is stored
    let refused = outcomes(submit_each(&b, &r, 0, 3)).await;
    for outcome in &refused {
        let e = outcome.as_ref().unwrap_err();
        assert!(
            matches!(
                e,
                IngestError::BodyRefused {
                    compression: "zstd",
                    ..
                }
            ),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(text.contains("arc.write_compression"), "{text}");
        assert!(text.contains("--org org_acme"), "{text}");
    }
    assert_eq!(arc.stats().db(DB).rows, 0);
    // the setting is hot: the next batch goes out gzip-compressed, with the header
    *k.compression.lock().unwrap() = WriteCompression::Gzip;
    for outcome in outcomes(submit_each(&b, &r, 3, 6)).await {
        outcome.unwrap();
    }
    // and uncompressed bodies are taken too
    *k.compression.lock().unwrap() = WriteCompression::None;
    for outcome in outcomes(submit_each(&b, &r, 6, 8)).await {
        outcome.unwrap();
    }
    assert_eq!(arc.stats().db(DB).rows, 5);
}
