//! The Arc stand-in speaks Arc's HTTP protocol: columnar MessagePack writes
//! (raw, gzip, zstd) read back with SQL, time-unit detection, Arc's 400/401/
//! 403 rules, query table-name rules and guard, and every fault switch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_tests::arc::client::{RawArcClient, gzip, msgpack, zstd};
use memtrace_tests::arc::{
    ArcStandIn, ArcStandInBuilder, Buffering, CostModel, Fault, Limits, Target, TokenGrant,
};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A stand-in builder answering instantly (`CostModel::instant()`): these
/// tests check behaviour, not time.
fn instant_builder() -> ArcStandInBuilder {
    ArcStandIn::builder().cost_model(CostModel::instant())
}

/// 2025-01-01T00:00:00Z in microseconds.
const T0: i64 = 1_735_689_600_000_000;

/// The raw client, unwrapping transport errors (none are expected here).
struct Client(RawArcClient);

impl Client {
    fn new(arc: &ArcStandIn) -> Self {
        Self(RawArcClient::new(arc.url()))
    }

    /// The same client sending `name: value` on every call.
    fn with(&self, name: &str, value: &str) -> Self {
        Self(self.0.with_auth(name, value))
    }

    async fn write(&self, db: Option<&str>, body: Vec<u8>) -> (u16, String) {
        self.0.write(db, body).await.unwrap()
    }

    async fn query(&self, db: Option<&str>, sql: &str) -> (u16, Value) {
        self.0.query(db, sql).await.unwrap()
    }
}

fn memories(agent: &str, base: i64) -> Value {
    json!({"m": "memories", "columns": {
        "time": [base, base + 1_500, base + 1_000_000],
        "agent": [agent, agent, agent],
        "score": [0.5, 1.0, 2.25],
        "n": [1, 2, 3],
        "ok": [true, false, true],
        "note": [null, "x", null],
    }})
}

#[tokio::test]
async fn columnar_writes_raw_gzip_zstd_read_back_with_sql() {
    let arc = instant_builder().start().await.unwrap();
    let c = Client::new(&arc);
    let raws: Vec<Vec<u8>> = ["a1", "a2", "a3"]
        .iter()
        .enumerate()
        .map(|(i, a)| msgpack(&memories(a, T0 + i as i64 * 10_000_000)))
        .collect();
    let wires = [raws[0].clone(), gzip(&raws[1]), zstd(&raws[2])];
    for w in &wires {
        assert_eq!(c.write(Some("acme"), w.clone()).await, (204, String::new()));
    }

    let (status, out) = c
        .query(
            Some("acme"),
            "SELECT time, agent, score, n, ok, note FROM memories \
             WHERE agent = 'a1' AND time >= '2025-01-01T00:00:00.001Z' ORDER BY time DESC LIMIT 5",
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["success"], true);
    assert_eq!(
        out["columns"],
        json!(["time", "agent", "score", "n", "ok", "note"])
    );
    assert_eq!(
        out["data"],
        json!([
            ["2025-01-01T00:00:01Z", "a1", 2.25, 3, true, null],
            ["2025-01-01T00:00:00.0015Z", "a1", 1, 2, false, "x"],
        ]),
        "integral doubles come back without a fraction, as from Go"
    );
    assert_eq!(out["row_count"], 2);
    assert!(out["execution_time_ms"].is_number());
    assert!(out["timestamp"].as_str().unwrap().ends_with('Z'));

    // Gzip and zstd rows are there too; BETWEEN and IN bounds are rewritten.
    let (_, out) = c
        .query(
            Some("acme"),
            "SELECT agent, count(*) AS rows FROM memories \
             WHERE time BETWEEN '2025-01-01T00:00:10Z' AND '2025-01-01 00:00:30' \
             GROUP BY agent ORDER BY agent",
        )
        .await;
    assert_eq!(out["data"], json!([["a2", 3], ["a3", 3]]), "{out}");
    let (_, out) = c
        .query(
            Some("acme"),
            "SELECT agent FROM memories WHERE time IN ('2025-01-01T00:00:20Z') LIMIT 1 OFFSET 0",
        )
        .await;
    assert_eq!(out["data"], json!([["a3"]]), "{out}");

    // Explicit db.m without the header; the default database otherwise.
    let (status, out) = c
        .query(None, "SELECT count(*) AS n FROM acme.memories")
        .await;
    assert_eq!((status, &out["data"]), (200, &json!([[9]])), "{out}");
    assert_eq!(c.write(None, raws[0].clone()).await.0, 204);
    let (_, out) = c.query(None, "SELECT count(*) AS n FROM memories").await;
    assert_eq!(out["data"], json!([[3]]));

    // A table that does not exist: Arc fails the query (500).
    let (status, out) = c.query(Some("acme"), "SELECT * FROM nothing_here").await;
    assert_eq!(status, 500, "{out}");
    assert_eq!(out["success"], false);
    assert!(
        out["error"]
            .as_str()
            .unwrap()
            .starts_with("Query execution failed")
    );

    // Counters, last request, and the stored rows without HTTP.
    let stats = arc.stats().db("acme");
    assert_eq!((stats.write_requests, stats.rows), (3, 9));
    assert_eq!(
        stats.wire_bytes,
        wires.iter().map(|w| w.len() as u64).sum::<u64>()
    );
    assert_eq!(
        stats.decoded_bytes,
        raws.iter().map(|w| w.len() as u64).sum::<u64>()
    );
    assert_eq!(arc.stats().db("default").rows, 3);
    let last = arc.last_request().unwrap();
    assert_eq!(last.path, "/api/v1/query");
    assert_eq!(last.headers["x-arc-database"], "acme");
    let rows = arc.rows("acme", "memories").await.unwrap();
    assert_eq!(rows.len(), 9);
    assert_eq!(rows[0]["time"], "2025-01-01T00:00:00Z");
    assert_eq!(rows[0]["note"], Value::Null);
    assert_eq!(arc.row_count("acme", "memories"), 9);
}

#[tokio::test]
async fn time_unit_is_detected_from_the_first_element() {
    let arc = instant_builder().start().await.unwrap();
    let c = Client::new(&arc);
    for (unit, t) in [
        ("1s", 1_735_689_600_i64),
        ("2ms", 1_735_689_600_123),
        ("3us", 1_735_689_600_123_456),
        ("4ns", 1_735_689_600_123_456_789),
    ] {
        let body = json!({"m": "units", "columns": {"time": [t], "unit": [unit]}});
        assert_eq!(c.write(Some("u"), msgpack(&body)).await.0, 204, "{unit}");
    }
    let (_, out) = c
        .query(Some("u"), "SELECT unit, time FROM units ORDER BY unit")
        .await;
    assert_eq!(
        out["data"],
        json!([
            ["1s", "2025-01-01T00:00:00Z"],
            ["2ms", "2025-01-01T00:00:00.123Z"],
            ["3us", "2025-01-01T00:00:00.123456Z"],
            ["4ns", "2025-01-01T00:00:00.123456Z"],
        ]),
        "{out}"
    );
    // Only the first element decides: a later ms value in a seconds column
    // is mis-scaled (×1e6), exactly as Arc does.
    let mixed =
        json!({"m": "mixed", "columns": {"time": [1_735_689_600_i64, 1_735_689_600_000_i64]}});
    assert_eq!(c.write(Some("u"), msgpack(&mixed)).await.0, 204);
    let rows = arc.rows("u", "mixed").await.unwrap();
    assert_eq!(rows[0]["time"], "2025-01-01T00:00:00Z");
    assert_ne!(rows[1]["time"], rows[0]["time"]);
    // No time column: stamped with "now".
    let body = json!({"m": "untimed", "columns": {"v": [1, 2]}});
    assert_eq!(c.write(Some("u"), msgpack(&body)).await.0, 204);
    let rows = arc.rows("u", "untimed").await.unwrap();
    assert!(rows[0]["time"].as_str().unwrap().starts_with("20"));
}

#[tokio::test]
async fn malformed_writes_are_refused_like_arc() {
    let limits = Limits {
        max_body_bytes: 64 << 10,
        max_decompressed_bytes: 16 << 10,
        ..Limits::default()
    };
    let arc = instant_builder().limits(limits).start().await.unwrap();
    let c = Client::new(&arc);
    let error = |body: &str| -> String {
        serde_json::from_str::<Value>(body).unwrap()["error"]
            .as_str()
            .unwrap()
            .to_string()
    };

    let mismatch = json!({"m": "m", "columns": {"time": [1, 2, 3], "v": [1, 2]}});
    let (status, body) = c.write(Some("acme"), msgpack(&mismatch)).await;
    assert_eq!(status, 400);
    assert!(error(&body).contains("array length mismatch"), "{body}");

    let good = msgpack(&json!({"m": "m", "columns": {"time": [T0], "v": [1]}}));
    for db in ["1acme", "ac.me", "ac me", &"a".repeat(65)] {
        let (status, body) = c.write(Some(db), good.clone()).await;
        assert_eq!(status, 400, "{db}");
        assert!(error(&body).contains("invalid database name"), "{body}");
    }
    assert_eq!(c.write(Some(&"a".repeat(64)), good.clone()).await.0, 204);
    assert_eq!(c.write(Some("a-b_c9"), good.clone()).await.0, 204);
    let bad_m = json!({"m": "9m", "columns": {"time": [T0]}});
    let (status, body) = c.write(Some("acme"), msgpack(&bad_m)).await;
    assert_eq!(status, 400);
    assert!(error(&body).contains("invalid measurement name"), "{body}");

    let (status, body) = c.write(Some("acme"), Vec::new()).await;
    assert_eq!((status, error(&body).as_str()), (400, "Empty payload"));
    for (case, bytes) in [
        ("not msgpack", b"hello".to_vec()),
        (
            "huge array header",
            vec![0xdd, 0xff, 0xff, 0xff, 0xff, 0x80],
        ),
        ("trailing bytes", [good.clone(), vec![0xc0]].concat()),
        ("truncated", good[..good.len() - 2].to_vec()),
        ("bad gzip", vec![0x1f, 0x8b, 0, 1, 2, 3]),
        ("bad zstd", vec![0x28, 0xb5, 0x2f, 0xfd, 9, 9, 9]),
        ("gzip bomb", gzip(&vec![0u8; 1 << 20])),
    ] {
        let (status, body) = c.write(Some("acme"), bytes).await;
        assert_eq!(status, 400, "{case}: {body}");
    }
    let (status, _) = c.write(Some("acme"), vec![0x90; 65 << 10]).await;
    assert_eq!(status, 413, "wire body over the cap");

    // Types are fixed by the first non-nil value.
    let ints = json!({"m": "typed", "columns": {"time": [T0], "v": [1]}});
    let text = json!({"m": "typed", "columns": {"time": [T0], "v": ["one"]}});
    assert_eq!(c.write(Some("acme"), msgpack(&ints)).await.0, 204);
    assert_eq!(c.write(Some("acme"), msgpack(&text)).await.0, 400);

    // Batch and top-level array forms: a bad item is skipped, as in Arc.
    let item = |m: &str| json!({"m": m, "columns": {"time": [T0, T0 + 1], "v": [1.5, 2.5]}});
    let batch = json!({"batch": [item("b1"), mismatch.clone(), item("b2")]});
    assert_eq!(c.write(Some("batch"), msgpack(&batch)).await.0, 204);
    let array = json!([item("b1"), {"m": "b3", "t": 1_735_689_600_000_i64,
        "fields": {"v": 7.5}, "tags": {"region": "eu", "rack": 4}, "h": "host-1"}]);
    assert_eq!(c.write(Some("batch"), msgpack(&array)).await.0, 204);
    let stats = arc.stats().db("batch");
    assert_eq!((stats.rows, stats.skipped_items), (7, 1));
    assert_eq!(arc.row_count("batch", "b1"), 4);
    let row = &arc.rows("batch", "b3").await.unwrap()[0];
    assert_eq!(
        (&row["host"], &row["region"], &row["rack"], &row["v"]),
        (&json!("host-1"), &json!("eu"), &json!("4"), &json!(7.5))
    );
    assert_eq!(row["time"], "2025-01-01T00:00:00Z");
    let all_bad = json!([mismatch]);
    assert_eq!(c.write(Some("batch"), msgpack(&all_bad)).await.0, 400);
}

#[tokio::test]
async fn tokens_are_checked_like_arc() {
    let arc = instant_builder()
        .token("tok-any", TokenGrant::any())
        .token("tok-acme", TokenGrant::databases(["acme"]))
        .token("tok-ro", TokenGrant::any().read_only())
        .start()
        .await
        .unwrap();
    let c = Client::new(&arc);
    let body = msgpack(&json!({"m": "m", "columns": {"time": [T0], "v": [1]}}));

    let (status, text) = c.write(Some("acme"), body.clone()).await;
    assert_eq!(status, 401);
    let err: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        err,
        json!({"success": false, "error": "Authentication required"})
    );
    let nope = c.with("authorization", "Bearer nope");
    let (status, text) = nope.write(Some("acme"), body.clone()).await;
    assert_eq!(status, 401);
    assert!(text.contains("Invalid or expired token"));

    for (name, value) in [
        ("authorization", "Bearer tok-any"),
        ("authorization", "Token tok-any"),
        ("authorization", "tok-any"),
        ("x-api-key", "tok-any"),
    ] {
        let (status, _) = c.with(name, value).write(Some("acme"), body.clone()).await;
        assert_eq!(status, 204, "{name}: {value}");
    }
    let acme = c.with("authorization", "Bearer tok-acme");
    assert_eq!(acme.write(Some("acme"), body.clone()).await.0, 204);
    assert_eq!(acme.write(Some("other"), body.clone()).await.0, 403);
    assert_eq!(acme.query(None, "SELECT * FROM other.m").await.0, 403);
    let ro = c.with("authorization", "Bearer tok-ro");
    assert_eq!(ro.write(Some("acme"), body.clone()).await.0, 403);
    let (status, out) = ro.query(Some("acme"), "SELECT v FROM m").await;
    assert_eq!((status, out["row_count"].as_u64()), (200, Some(5)));
    let (status, out) = c.query(Some("acme"), "SELECT v FROM m").await;
    assert_eq!(
        (status, &out["error"]),
        (401, &json!("Authentication required"))
    );

    // /health is public; revoking a token takes effect at once.
    let health =
        c.0.http
            .get(format!("{}/health", c.0.url))
            .send()
            .await
            .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.unwrap()["status"], "ok");
    arc.remove_token("tok-any");
    let any = c.with("authorization", "Bearer tok-any");
    assert_eq!(any.write(Some("acme"), body).await.0, 401);
}

#[tokio::test]
async fn query_rules_follow_arc() {
    let arc = instant_builder().start().await.unwrap();
    let c = Client::new(&arc);
    assert_eq!(
        c.write(Some("acme"), msgpack(&memories("a1", T0))).await.0,
        204
    );

    let (status, out) = c.query(Some("acme"), "SELECT * FROM acme.memories").await;
    assert_eq!(status, 400);
    assert!(
        out["error"].as_str().unwrap().contains("Cross-database"),
        "{out}"
    );
    for sql in [
        "DROP TABLE memories",
        "SELECT 1; DELETE FROM memories",
        "INSERT INTO memories VALUES (1)",
        "CREATE TABLE x (a INT)",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM glob('/*')",
        "ATTACH DATABASE ':memory:' AS x",
        "PRAGMA table_info(memories)",
        "SELECT 1; SELECT 2",
    ] {
        let (status, out) = c.query(Some("acme"), sql).await;
        assert_eq!(status, 400, "{sql}: {out}");
        assert_eq!(out["success"], false);
    }
    let (status, out) = c.query(Some("acme"), "").await;
    assert_eq!(
        (status, &out["error"]),
        (400, &json!("SQL query is required"))
    );
    let long = format!(
        "SELECT agent FROM memories WHERE agent = '{}'",
        "x".repeat(10_000)
    );
    assert_eq!(c.query(Some("acme"), &long).await.0, 400);
    // DuckDB refuses TIMESTAMP vs integer; so does the stand-in.
    let (status, _) = c
        .query(Some("acme"), "SELECT agent FROM memories WHERE time > 5")
        .await;
    assert_eq!(status, 500);
    // Literals are left alone elsewhere; CTEs, aliases and SHOW work.
    let (status, out) = c
        .query(
            Some("acme"),
            "WITH recent AS (SELECT agent, n FROM memories WHERE time > '2025-01-01T00:00:00Z') \
             SELECT r.agent AS agent, max(r.n) AS top FROM recent r \
             WHERE r.agent <> 'from x.y' GROUP BY r.agent",
        )
        .await;
    assert_eq!(
        status, 400,
        "Arc's cross-db check sees `from x.y` inside a literal: {out}"
    );
    let (status, out) = c
        .query(
            Some("acme"),
            "WITH recent AS (SELECT agent, n FROM memories WHERE time > '2025-01-01T00:00:00Z') \
             SELECT r.agent AS agent, max(r.n) AS top, min(m.time) AS first \
             FROM recent r JOIN memories m ON m.agent = r.agent GROUP BY r.agent",
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["data"], json!([["a1", 3, "2025-01-01T00:00:00Z"]]));
    let (_, out) = c.query(None, "SHOW DATABASES").await;
    assert_eq!(out["data"], json!([["acme"]]));
    let (_, out) = c.query(None, "SHOW TABLES FROM acme").await;
    assert_eq!(out["data"][0][1], "memories");
}

#[tokio::test]
async fn status_and_auth_faults() {
    let arc = instant_builder().start().await.unwrap();
    let c = Client::new(&arc);
    let faults = arc.faults();
    let body = || msgpack(&json!({"m": "m", "columns": {"time": [T0], "v": [1]}}));

    faults.inject(Fault::status(503).on(Target::Writes).times(2));
    let (status, _) = c.query(Some("acme"), "SELECT 1 AS one").await;
    assert_eq!(status, 200, "queries are not targeted");
    assert_eq!(c.write(Some("acme"), body()).await.0, 503);
    assert_eq!(c.write(Some("acme"), body()).await.0, 503);
    assert_eq!(c.write(Some("acme"), body()).await.0, 204);
    assert!(faults.active().is_empty());
    assert_eq!((faults.applied(), arc.stats().status(503)), (2, 2));

    faults.inject(Fault::status(500).on(Target::Queries));
    for _ in 0..3 {
        assert_eq!(c.query(Some("acme"), "SELECT 1 AS one").await.0, 500);
    }
    assert_eq!(c.write(Some("acme"), body()).await.0, 204);
    faults.clear();
    assert_eq!(c.query(Some("acme"), "SELECT 1 AS one").await.0, 200);

    faults.inject(Fault::unauthorized().times(1));
    let (status, text) = c.write(Some("acme"), body()).await;
    assert_eq!(status, 401);
    assert!(text.contains("Invalid or expired token"));

    // Processed, then failed: the row landed although the client saw 500.
    faults.inject(
        Fault::status_after_processing(500)
            .on(Target::Writes)
            .times(1),
    );
    assert_eq!(c.write(Some("acme"), body()).await.0, 500);
    assert_eq!(arc.row_count("acme", "m"), 3);
}

#[tokio::test]
async fn slow_stall_and_dropped_connection_faults() {
    let arc = instant_builder().start().await.unwrap();
    let c = Client::new(&arc);
    let faults = arc.faults();
    let body = || msgpack(&json!({"m": "m", "columns": {"time": [T0], "v": [1]}}));

    faults.inject(
        Fault::slow(Duration::from_millis(250))
            .on(Target::Queries)
            .times(1),
    );
    let t = Instant::now();
    assert_eq!(c.query(Some("acme"), "SELECT 1 AS one").await.0, 200);
    assert!(t.elapsed() >= Duration::from_millis(250));
    assert!(faults.active().is_empty(), "used up after one query");

    // A stalled write answers only once released, then is processed.
    faults.inject(Fault::stall().on(Target::Writes).times(1));
    let url = c.0.url.clone();
    let http = c.0.http.clone();
    let b = body();
    let pending = tokio::spawn(async move {
        let resp = http
            .post(format!("{url}/api/v1/write/msgpack"))
            .header("x-arc-database", "acme")
            .body(b)
            .send()
            .await
            .unwrap();
        resp.status().as_u16()
    });
    assert!(faults.wait_stalled(1, Duration::from_secs(5)).await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!pending.is_finished());
    faults.release_stalls();
    assert_eq!(pending.await.unwrap(), 204);
    assert_eq!(arc.row_count("acme", "m"), 1);

    // A client timeout fires while the write is stalled; unreleased, a stall
    // ends at the stand-in's stall_max with a 503.
    faults.inject(Fault::stall().on(Target::Writes).times(1));
    let err =
        c.0.http
            .post(format!("{}/api/v1/write/msgpack", c.0.url))
            .timeout(Duration::from_millis(100))
            .body(body())
            .send()
            .await
            .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let limits = Limits {
        stall_max: Duration::from_millis(200),
        ..Limits::default()
    };
    let short = instant_builder().limits(limits).start().await.unwrap();
    short.faults().inject(Fault::stall());
    let (status, _) = Client::new(&short).write(Some("acme"), body()).await;
    assert_eq!(status, 503);

    // A dropped connection: no response at all, then business as usual.
    faults.inject(Fault::drop_connection().on(Target::Queries).times(1));
    let err =
        c.0.http
            .post(format!("{}/api/v1/query", c.0.url))
            .json(&json!({"sql": "SELECT 1 AS one"}))
            .send()
            .await
            .unwrap_err();
    assert!(err.is_request() || err.is_connect(), "{err}");
    assert_eq!(c.query(Some("acme"), "SELECT 1 AS one").await.0, 200);

    arc.set_ready(false);
    let ready =
        c.0.http
            .get(format!("{}/ready", c.0.url))
            .send()
            .await
            .unwrap();
    assert_eq!(ready.status(), 503);
}

#[tokio::test]
async fn counting_only_mode_and_row_cap() {
    let arc = instant_builder().counting_only(true).start().await.unwrap();
    let c = Client::new(&arc);
    let n = 1_000;
    let times: Vec<i64> = (0..n).map(|i| T0 + i).collect();
    let body = json!({"m": "bench", "columns": {"time": times, "v": vec![1.5; n as usize]}});
    assert_eq!(c.write(Some("acme"), zstd(&msgpack(&body))).await.0, 204);
    assert_eq!(arc.stats().db("acme").rows, 1_000);
    assert_eq!(arc.row_count("acme", "bench"), 0);
    assert_eq!(c.query(Some("acme"), "SELECT * FROM bench").await.0, 500);

    let limits = Limits {
        max_rows: 5,
        ..Limits::default()
    };
    let arc = instant_builder().limits(limits).start().await.unwrap();
    let c = Client::new(&arc);
    let three = msgpack(&json!({"m": "m", "columns": {"time": [T0, T0 + 1, T0 + 2]}}));
    assert_eq!(c.write(Some("acme"), three.clone()).await.0, 204);
    let (status, text) = c.write(Some("acme"), three).await;
    assert_eq!(status, 507, "{text}");
    assert!(text.contains("row cap"));
    assert_eq!(arc.row_count("acme", "m"), 3);
}

#[tokio::test]
async fn down_refuses_connections_and_a_restart_loses_only_the_unflushed_buffer() {
    let arc = instant_builder()
        .buffering(Buffering {
            max_age: Duration::from_secs(3600),
            max_rows: 3,
        })
        .visibility_delay(true)
        .start()
        .await
        .unwrap();
    let c = Client::new(&arc);
    // three rows fill the buffer and flush; the fourth stays buffered
    let rows = |base: i64, n: i64| {
        msgpack(&json!({"m": "m", "columns": {
            "time": (0..n).map(|i| base + i).collect::<Vec<_>>(),
            "v": (0..n).collect::<Vec<_>>(),
        }}))
    };
    assert_eq!(c.write(Some("acme"), rows(T0, 3)).await.0, 204);
    assert_eq!(c.write(Some("acme"), rows(T0 + 10, 1)).await.0, 204);
    assert_eq!(arc.buffered_rows("acme", "m"), 1);

    arc.go_down();
    assert!(!arc.is_up());
    let refused = RawArcClient::new(arc.url())
        .write(Some("acme"), rows(T0 + 20, 1))
        .await;
    assert!(refused.is_err(), "nothing listens while down: {refused:?}");
    arc.come_back().await.unwrap();
    assert!(arc.is_up());
    assert_eq!(arc.row_count("acme", "m"), 3, "down keeps every row");
    assert_eq!(arc.buffered_rows("acme", "m"), 1);

    let lost = arc.restart(Duration::from_millis(50)).await.unwrap();
    assert_eq!(lost, 1, "the unflushed row is lost");
    assert_eq!(arc.stats().rows_lost, 1);
    assert_eq!(
        c.write(Some("acme"), rows(T0 + 30, 3)).await.0,
        204,
        "up again"
    );
    assert_eq!(arc.row_count("acme", "m"), 6);
}
