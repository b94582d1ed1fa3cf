//! The stand-in's model of a real Arc: answers held for their modelled cost
//! (per statement, scanned row, column and chunk; per write), the counters
//! benchmarks read, writes readable only after their buffer flushed, the
//! loss of unflushed rows in a crash, and gzip-only builds refusing zstd.
//! Each test names the cost model it starts the stand-in with.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_tests::arc::client::{RawArcClient, gzip, msgpack, zstd};
use memtrace_tests::arc::{ArcStandIn, Buffering, CostModel};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// 2025-01-01T00:00:00Z in microseconds.
const T0: i64 = 1_735_689_600_000_000;
const DB: &str = "acme";

/// `n` rows of measurement `m`: `time`, `agent`, `note`, `n`.
fn rows(m: &str, n: usize, first: i64) -> Vec<u8> {
    let time: Vec<i64> = (0..n as i64).map(|i| T0 + first + i).collect();
    let agent: Vec<String> = (0..n).map(|i| format!("a{}", i % 10)).collect();
    let note: Vec<&str> = vec!["x"; n];
    let num: Vec<i64> = (0..n as i64).collect();
    msgpack(&json!({"m": m, "columns": {"time": time, "agent": agent, "note": note, "n": num}}))
}

async fn write(c: &RawArcClient, body: Vec<u8>) {
    let (status, text) = c.write(Some(DB), body).await.unwrap();
    assert_eq!(status, 204, "{text}");
}

async fn count(c: &RawArcClient, m: &str) -> (u16, Value) {
    c.query(Some(DB), &format!("SELECT COUNT(*) AS n FROM {m}"))
        .await
        .unwrap()
}

/// A model charging only what a test names.
fn only(f: impl FnOnce(&mut CostModel)) -> CostModel {
    let mut m = CostModel::instant();
    f(&mut m);
    m
}

#[tokio::test]
async fn a_query_is_held_for_its_scanned_rows() {
    // custom model: 1 µs per scanned row, nothing else
    let model = only(|m| m.row = Duration::from_micros(1));
    let arc = ArcStandIn::builder()
        .cost_model(model)
        .start()
        .await
        .unwrap();
    let c = RawArcClient::new(arc.url());
    for i in 0..10 {
        write(&c, rows("big", 10_000, i * 10_000)).await;
    }
    arc.reset_stats();

    let started = Instant::now();
    let (status, out) = count(&c, "big").await;
    let took = started.elapsed();
    assert_eq!((status, &out["data"]), (200, &json!([[100_000]])), "{out}");
    assert!(took >= Duration::from_millis(100), "held {took:?}");
    let st = arc.stats();
    assert_eq!((st.statements, st.rows_scanned), (1, 100_000));
    assert_eq!(st.modelled_query_time, Duration::from_millis(100));
    assert!(st.engine_query_time > Duration::ZERO);

    // the same query, instant: nothing modelled, answered as SQLite answers
    arc.set_cost_model(CostModel::instant());
    let started = Instant::now();
    let (status, _) = count(&c, "big").await;
    let took = started.elapsed();
    assert_eq!(status, 200);
    let st = arc.stats();
    assert_eq!(st.statements, 2);
    assert_eq!(
        st.modelled_query_time,
        Duration::from_millis(100),
        "unchanged"
    );
    assert!(
        took < Duration::from_millis(100),
        "an instant stand-in is not held ({took:?}; SQLite itself took {:?} over both)",
        st.engine_query_time
    );
}

#[tokio::test]
async fn scans_are_charged_per_reference_column_pattern_and_chunk() {
    // custom model, charged one term at a time; instant buffers are Arc's
    // flush policy with a 2-row size trigger, so each 2-row write is a chunk
    let model = only(|m| m.statement = Duration::from_millis(1));
    let arc = ArcStandIn::builder()
        .cost_model(model)
        .buffering(Buffering {
            max_age: Duration::from_secs(60),
            max_rows: 2,
        })
        .start()
        .await
        .unwrap();
    let c = RawArcClient::new(arc.url());
    for i in 0..3 {
        write(&c, rows("t", 2, i * 10)).await;
    }
    let modelled = async |sql: &str| {
        let before = arc.stats().modelled_query_time;
        let (status, out) = c.query(Some(DB), sql).await.unwrap();
        assert_eq!(status, 200, "{sql}: {out}");
        arc.stats().modelled_query_time - before
    };
    let ms = Duration::from_millis;

    assert_eq!(modelled("SELECT COUNT(*) AS n FROM t").await, ms(1));
    arc.set_cost_model(only(|m| m.chunk = ms(10)));
    assert_eq!(
        modelled("SELECT COUNT(*) AS n FROM t").await,
        ms(30),
        "3 chunks"
    );
    arc.set_cost_model(only(|m| m.row = ms(1)));
    assert_eq!(
        modelled("SELECT a.n AS n FROM t AS a JOIN t AS b ON a.time = b.time").await,
        ms(12),
        "a self-join scans 6 rows twice"
    );
    arc.set_cost_model(only(|m| m.row_column = ms(1)));
    assert_eq!(modelled("SELECT * FROM t").await, ms(6 * 4), "4 columns");
    assert_eq!(
        modelled("SELECT agent FROM t WHERE n > 0").await,
        ms(6 * 2),
        "agent, n"
    );
    arc.set_cost_model(only(|m| m.row_pattern = ms(1)));
    assert_eq!(
        modelled("SELECT n FROM t WHERE agent LIKE 'a%' AND note LIKE '%x%'").await,
        ms(6 * 2)
    );
    let st = arc.stats();
    assert_eq!(st.statements, 6);
    assert_eq!(st.rows_scanned, 6 * 7, "the join counts twice");
}

#[tokio::test]
async fn a_write_is_held_for_its_modelled_cost() {
    // custom model: 150 ms per write request, 1 ms per row
    let model = only(|m| {
        m.write_request = Duration::from_millis(150);
        m.write_row = Duration::from_millis(1);
    });
    let arc = ArcStandIn::builder()
        .cost_model(model)
        .start()
        .await
        .unwrap();
    let c = RawArcClient::new(arc.url());
    let started = Instant::now();
    write(&c, rows("w", 50, 0)).await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(200), "held {took:?}");
    assert_eq!(arc.stats().modelled_write_time, Duration::from_millis(200));
    assert_eq!(arc.row_count(DB, "w"), 50);
    // a refused write is not held
    let started = Instant::now();
    let (status, _) = c.write(Some(DB), b"\xc1".to_vec()).await.unwrap();
    assert_eq!(status, 400);
    assert!(started.elapsed() < Duration::from_millis(150));
    assert_eq!(arc.stats().modelled_write_time, Duration::from_millis(200));
}

/// Four 5-row writes to `table`, sent at once.
async fn four_writes_at_once(c: &RawArcClient, table: &'static str) {
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..4 {
        let c = c.clone();
        writes.spawn(async move { write(&c, rows(table, 5, i * 5)).await });
    }
    writes.join_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_share_the_engines_ingest_lanes() {
    // 100 ms per write, two lanes: four concurrent writes take two rounds
    let model = only(|m| {
        m.write_request = Duration::from_millis(100);
        m.write_lanes = 2;
    });
    let arc = ArcStandIn::builder()
        .cost_model(model)
        .start()
        .await
        .unwrap();
    let c = RawArcClient::new(arc.url());
    let started = Instant::now();
    four_writes_at_once(&c, "lanes").await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(200), "two rounds: {took:?}");
    assert!(took < Duration::from_millis(390), "not four: {took:?}");
    assert_eq!(arc.row_count(DB, "lanes"), 20);
    // unbounded lanes (0): the four are held side by side
    arc.set_cost_model(only(|m| m.write_request = Duration::from_millis(100)));
    let started = Instant::now();
    four_writes_at_once(&c, "side").await;
    assert!(
        started.elapsed() < Duration::from_millis(190),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn writes_become_readable_when_their_buffer_flushes() {
    // instant model; visibility delay on with a 1.5 s flush age (long
    // enough that the checks right after the write run before it passes,
    // even on a loaded machine)
    let age = Duration::from_millis(1500);
    let arc = ArcStandIn::builder()
        .buffering(Buffering {
            max_age: age,
            max_rows: 1_000,
        })
        .visibility_delay(true)
        .start()
        .await
        .unwrap();
    let c = RawArcClient::new(arc.url());
    let written = Instant::now();
    write(&c, rows("late", 3, 0)).await;

    // not readable yet: Arc has no Parquet file for the measurement
    let (status, out) = count(&c, "late").await;
    assert_eq!(status, 500, "{out}");
    assert!(
        out["error"].as_str().unwrap().contains("No files found"),
        "{out}"
    );
    assert_eq!(
        (arc.row_count(DB, "late"), arc.buffered_rows(DB, "late")),
        (0, 3)
    );
    let (_, tables) = c.query(None, "SHOW TABLES FROM acme").await.unwrap();
    assert_eq!(tables["data"], json!([]), "{tables}");

    let deadline = written + Duration::from_secs(10);
    let readable_at = loop {
        let (status, out) = count(&c, "late").await;
        if status == 200 {
            assert_eq!(out["data"], json!([[3]]), "{out}");
            break Instant::now();
        }
        assert!(Instant::now() < deadline, "never flushed: {out}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(readable_at - written >= age, "{:?}", readable_at - written);
    assert_eq!(arc.buffered_rows(DB, "late"), 0);

    // a full buffer flushes with the write that filled it
    write(&c, rows("late", 600, 100)).await;
    assert_eq!(arc.row_count(DB, "late"), 3);
    write(&c, rows("late", 400, 1_000)).await;
    assert_eq!(arc.row_count(DB, "late"), 1_003);

    // off at runtime: what is held becomes readable, new writes at once
    write(&c, rows("late", 5, 2_000)).await;
    assert_eq!(arc.set_visibility_delay(false).unwrap(), 5);
    write(&c, rows("late", 5, 3_000)).await;
    assert_eq!(arc.row_count(DB, "late"), 1_013);
}

#[tokio::test]
async fn a_crash_loses_exactly_the_unflushed_rows() {
    // instant model; visibility delay on, flushes by size (10 rows) only
    let arc = ArcStandIn::builder()
        .buffering(Buffering {
            max_age: Duration::from_secs(3600),
            max_rows: 10,
        })
        .visibility_delay(true)
        .start()
        .await
        .unwrap();
    let c = RawArcClient::new(arc.url());
    write(&c, rows("m", 10, 0)).await; // flushed
    write(&c, rows("m", 4, 100)).await; // held
    write(&c, rows("other", 3, 0)).await; // held
    assert_eq!(arc.crash_unflushed().unwrap(), 7);
    assert_eq!(arc.stats().rows_lost, 7);
    assert_eq!(
        (arc.row_count(DB, "m"), arc.buffered_rows(DB, "m")),
        (10, 0)
    );
    assert_eq!(arc.flush_buffers().unwrap(), 0, "nothing left to flush");
    let (_, out) = count(&c, "m").await;
    assert_eq!(out["data"], json!([[10]]), "{out}");
    // the stand-in goes on accepting writes
    write(&c, rows("m", 2, 200)).await;
    assert_eq!(arc.flush_buffers().unwrap(), 2);
    assert_eq!(arc.row_count(DB, "m"), 12);
}

#[tokio::test]
async fn gzip_only_builds_refuse_zstd_bodies() {
    // instant model; gzip-only on
    let arc = ArcStandIn::builder().gzip_only(true).start().await.unwrap();
    let c = RawArcClient::new(arc.url());
    let raw = rows("g", 2, 0);
    let (status, text) = c.write(Some(DB), zstd(&raw)).await.unwrap();
    assert_eq!(status, 400, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("Invalid MessagePack payload: "),
        "{body}"
    );
    assert_eq!(arc.row_count(DB, "g"), 0);
    write(&c, gzip(&raw)).await;
    write(&c, raw.clone()).await;
    assert_eq!(arc.row_count(DB, "g"), 4);
    arc.set_gzip_only(false);
    write(&c, zstd(&raw)).await;
    assert_eq!(arc.row_count(DB, "g"), 6);
}
